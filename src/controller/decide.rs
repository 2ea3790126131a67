//! One decision: observe what the plan needs, plan, look ahead once, and make an irreversible
//! step only on the object and the cluster as the API has them.

use std::sync::Arc;

use jiff::Timestamp;
use kube::{Api, ResourceExt};

use super::{Context, observe, plan, report};
use crate::api::{LangfuseUpgrade, LangfuseUpgradeStatus};
use crate::controller::observed::Observed;
use crate::controller::plan::Decision;
use crate::databases::Databases;
use crate::error::Result;

/// What one decision read and chose.
pub struct Decided {
    /// The object planned from (read again when an irreversible step asked for it).
    pub upgrade: Arc<LangfuseUpgrade>,
    pub observed: Observed,
    pub decision: Decision,
    pub status: LangfuseUpgradeStatus,
    pub looked_ahead: bool,
}

/// Decide from `upgrade`; `known_current`: it is the object's current version (`memo`).
/// `None`: the object is gone.
pub async fn decide<D: Databases>(
    ctx: &Context<D>,
    api: &Api<LangfuseUpgrade>,
    mut upgrade: Arc<LangfuseUpgrade>,
    mut known_current: bool,
) -> Result<Option<Decided>> {
    loop {
        let caches = ctx.caches.get().filter(|c| c.synced());
        // Whole seconds (status times round-trip through the API at that precision), and read
        // before observing: every time the plan records is at or before the facts it read
        // (`crate::precision`).
        let now = crate::precision::bound_after(Timestamp::now());
        let needs = plan::needs(&upgrade, now);
        // Each observe on the heap: see `reconcile`'s test of its future's size.
        let observed = Box::pin(observe::observe(&ctx.client, &ctx.databases, &upgrade, &needs, caches)).await?;
        let decision = plan::plan(&upgrade, &observed, now);
        let (mut observed, mut decision, needs, looked_ahead) =
            Box::pin(look_ahead(ctx, &upgrade, observed, decision, needs, now, caches)).await;
        // A write that cannot be taken back is made only on a view of the object known to be
        // current: a `paused` or `abort` set a moment ago must stop it.
        let irreversible = decision.irreversible(&upgrade);
        if known_current && irreversible {
            let Some(fresh) = Box::pin(api.get_opt(&upgrade.name_any())).await? else {
                return Ok(None);
            };
            known_current = false;
            if fresh.resource_version() != upgrade.resource_version() {
                upgrade = Arc::new(fresh);
                continue;
            }
        }
        // And on the cluster as the API has it: a cache that resumed after a watch error may
        // not have replayed a revert yet (the Service back on v2 before v2 goes to 0).
        if irreversible && caches.is_some() {
            let cluster = needs.cluster_only();
            let fresh = Box::pin(observe::observe(&ctx.client, &ctx.databases, &upgrade, &cluster, None)).await?;
            observed = observed.with_cluster_of(fresh);
            decision = plan::plan(&upgrade, &observed, now);
        }
        let status = report::next_status(&upgrade, &decision, now);
        return Ok(Some(Decided {
            upgrade,
            observed,
            decision,
            status,
            looked_ahead,
        }));
    }
}

/// Once at most: the step after a look ahead waits (retirement, rollouts) or writes. A look
/// the apiserver refused leaves the first decision, as `second_look` does for a database
/// read that failed.
async fn look_ahead<D: Databases>(
    ctx: &Context<D>,
    upgrade: &LangfuseUpgrade,
    observed: Observed,
    decision: Decision,
    needs: plan::Needs,
    now: Timestamp,
    caches: Option<&super::cache::Caches>,
) -> (Observed, Decision, plan::Needs, bool) {
    let Some(wider) = plan::look_ahead(upgrade, &decision, &needs, now) else {
        return (observed, decision, needs, false);
    };
    match Box::pin(observe::observe(&ctx.client, &ctx.databases, upgrade, &wider, caches)).await {
        Ok(more) => match plan::second_look(upgrade, &observed, more, now) {
            Some((more, second)) => (more, second, wider, true),
            None => {
                tracing::debug!("a read of the look ahead failed; the first decision stands");
                (observed, decision, needs, false)
            }
        },
        Err(e) => {
            tracing::debug!(error = %e, "the look ahead could not read; the first decision stands");
            (observed, decision, needs, false)
        }
    }
}
