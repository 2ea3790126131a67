//! One reconcile, as its table of contents: the object to plan from, the decision, the writes,
//! the report; then what is remembered of it (the memo, metrics, the log line).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use rand::Rng;
use tracing::{Instrument, info, info_span, warn};

use super::decide::{Decided, decide};
use super::dispatch::Requeue;
use super::timing::{CONFLICT_RETRY, TRANSPORT_RETRY_MAX, backoff, spread};
use super::{Context, execute, plan, report};
use crate::api::{LangfuseUpgrade, LangfuseUpgradeStatus, RemedyKind};
use crate::controller::plan::Action as Write;
use crate::databases::Databases;
use crate::error::{Error, Result};

/// `woken`: when a watch event first asked for this run (for the log).
pub async fn reconcile<D: Databases>(
    upgrade: Arc<LangfuseUpgrade>,
    ctx: Arc<Context<D>>,
    woken: Option<Instant>,
) -> Result<Requeue> {
    let key = ObjectRef::from(upgrade.as_ref());
    let result = reconcile_once(upgrade.clone(), ctx.clone(), woken).await;
    let Err(error) = &result else {
        return result;
    };
    // A write may have landed before the failure (and report_error writes too): plan the
    // next one from a fresh read.
    ctx.memo.forget(&key);
    if error.is_conflict() {
        // Another writer changed the object after this decision read it: nothing after the
        // conflicting write was made. Plan again at once from a fresh read; not an error.
        tracing::debug!(error = %error, "the object changed under this decision; planning again");
        return Ok(Requeue::After(CONFLICT_RETRY));
    }
    if ctx.fence.holds() {
        // Whatever stopped this reconcile, the object says so (best effort: the error itself
        // may be that the apiserver cannot be reached). Not once the Lease may be another's.
        if let Err(e) = report::report_error(&ctx.client, &ctx.events, &upgrade, error).await {
            tracing::debug!(error = %e, "could not report the reconcile error in status");
        }
    }
    result
}

async fn reconcile_once<D: Databases>(
    upgrade: Arc<LangfuseUpgrade>,
    ctx: Arc<Context<D>>,
    woken: Option<Instant>,
) -> Result<Requeue> {
    let span = info_span!("reconcile", namespace = %upgrade.namespace().unwrap_or_default(), name = %upgrade.name_any(), generation = upgrade.metadata.generation);
    async move {
        let mut clock = Clock::start(woken);
        let api: Api<LangfuseUpgrade> = Api::namespaced(ctx.client.clone(), &upgrade.namespace().unwrap_or_default());
        let current = ctx.memo.current(upgrade);
        let (upgrade, known_current) = match current.known_current {
            true => (current.upgrade, true),
            false => match api.get_opt(&current.upgrade.name_any()).await? {
                Some(fresh) => (Arc::new(fresh), false),
                None => return Ok(Requeue::OnChange),
            },
        };
        clock.read = clock.started.elapsed();
        // On the heap, as each read in it: see the test of this future's size below.
        let Some(decided) = Box::pin(decide(&ctx, &api, upgrade, known_current)).await? else {
            return Ok(Requeue::OnChange);
        };
        clock.observed = clock.started.elapsed();
        let Decided {
            upgrade,
            observed,
            decision,
            status,
            looked_ahead,
        } = &decided;
        // On the heap: a reconcile waiting on a read holds no room for the writes.
        let guards = execute::Guards {
            caches: ctx.caches.get(),
            fence: &ctx.fence,
        };
        let execute::Executed {
            actions: executed,
            resource_version,
        } = Box::pin(execute::execute(
            &ctx.client,
            &ctx.databases,
            upgrade,
            observed,
            &decision.actions,
            status,
            guards,
        ))
        .await?;
        clock.executed = clock.started.elapsed();
        ctx.fence.check()?;
        // Progress alone within a second of the last status write, or the switch's narration:
        // not written now (see `coalesce`), so the next watch event does not wait behind it.
        let key = ObjectRef::from(upgrade.as_ref());
        let before = upgrade.status.clone().unwrap_or_default();
        let why = super::coalesce::deferrable(&before, status, &executed);
        let deferred = ctx.coalescer.defer(&key, why, Instant::now());
        let reporting = match deferred {
            Some(_) => &before,
            None => status,
        };
        let reported = report::report(
            &ctx.client,
            &ctx.events,
            upgrade,
            reporting,
            &executed,
            resource_version,
        )
        .await?;
        let wrote_status = reported.object.is_some();
        if wrote_status || executed.contains(&Write::RecordFacts) {
            ctx.coalescer.wrote(key.clone(), Instant::now());
        }
        let removed = executed.contains(&Write::RemoveFinalizer);
        if removed {
            ctx.coalescer.forget(&key);
        }
        ctx.memo.remember(
            ObjectRef::from(upgrade.as_ref()),
            upgrade.resource_version(),
            reported.version.filter(|_| !removed),
            reported.object,
        );
        record_metrics(&ctx, upgrade, status, &executed);
        ctx.metrics.reconciled(clock.started.elapsed());
        if !executed.is_empty() || wrote_status || upgrade.status.as_ref().and_then(|s| s.phase) != Some(decision.phase) {
            clock.log(&decided, executed.len(), *looked_ahead, wrote_status);
        } else if deferred.is_some() {
            tracing::debug!(wake_ms = ?clock.woken.map(|w| clock.started.saturating_duration_since(w)), took = ?clock.started.elapsed(), "progress only: status write deferred");
        }
        ctx.failures
            .lock()
            .expect("failures lock")
            .remove(&ObjectRef::from(upgrade.as_ref()));
        let requeue = spread(decision.requeue.max(plan::wait::FLOOR), rand::rng().random());
        Ok(Requeue::After(deferred.map_or(requeue, |wait| requeue.min(wait))))
    }
    .instrument(span)
    .await
}

/// The metrics of one reconcile's writes and the status it reported.
fn record_metrics<D>(ctx: &Context<D>, upgrade: &LangfuseUpgrade, status: &LangfuseUpgradeStatus, executed: &[Write]) {
    let (ns, name) = (upgrade.namespace().unwrap_or_default(), upgrade.name_any());
    let restarts = |s: Option<&LangfuseUpgradeStatus>| s.map_or(0, |s| s.remedies_used(RemedyKind::WorkerRestart));
    let remedies = executed.iter().filter_map(|a| match a {
        Write::Remedy(r) => Some(r),
        _ => None,
    });
    ctx.metrics.remedies_applied(
        &ns,
        &name,
        remedies,
        restarts(upgrade.status.as_ref()),
        restarts(Some(status)),
    );
    if executed.contains(&Write::RemoveFinalizer) {
        ctx.metrics.forget(&ns, &name);
    } else {
        ctx.metrics.observe_status(&ns, &name, status, Instant::now());
    }
}

/// Where a reconcile's time goes (the shift's latency is mostly this sum).
struct Clock {
    woken: Option<Instant>,
    started: Instant,
    read: Duration,
    observed: Duration,
    executed: Duration,
}

impl Clock {
    fn start(woken: Option<Instant>) -> Self {
        Clock {
            woken,
            started: Instant::now(),
            read: Duration::ZERO,
            observed: Duration::ZERO,
            executed: Duration::ZERO,
        }
    }

    fn log(&self, decided: &Decided, writes: usize, looked_ahead: bool, status_written: bool) {
        let ms = |d: Duration| (d.as_secs_f64() * 10_000.0).round() / 10.0;
        let took = &decided.observed.took;
        info!(
            phase = %decided.decision.phase,
            writes,
            status_written,
            looked_ahead,
            wake_ms = self.woken.map(|w| ms(self.started.saturating_duration_since(w))),
            get_ms = ms(self.read),
            observe_ms = ms(self.observed - self.read),
            postgres_ms = ms(took.postgres),
            clickhouse_ms = ms(took.clickhouse),
            stores_ms = ms(took.stores),
            execute_ms = ms(self.executed - self.observed),
            report_ms = ms(self.started.elapsed() - self.executed),
            "reconciled"
        );
    }
}

pub fn error_policy<D: Databases>(upgrade: Arc<LangfuseUpgrade>, error: &Error, ctx: Arc<Context<D>>) -> Requeue {
    let key = ObjectRef::from(upgrade.as_ref());
    let failures = {
        let mut map = ctx.failures.lock().expect("failures lock");
        let n = map.entry(key).or_insert(0);
        *n += 1;
        *n
    };
    ctx.metrics.failed(error.kind());
    let mut delay = backoff(failures, rand::rng().random());
    if error.is_transport() {
        // The apiserver did not answer (a restart, a control-plane upgrade): a refused
        // connection costs it nothing, and every second it is back unseen is a second lost.
        delay = delay.min(TRANSPORT_RETRY_MAX);
    }
    warn!(namespace = %upgrade.namespace().unwrap_or_default(), name = %upgrade.name_any(), kind = error.kind(), error = %error, retry_in_s = delay.as_secs_f64(), "reconcile failed");
    Requeue::After(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::databases::Live;

    fn size<F: std::future::Future>(_: &F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A reconcile runs on a tokio worker's 2 MiB stack, and an unoptimised build keeps every
    /// future inline in its caller: after a SIGKILL mid-switch, a debug operator overflowed it
    /// (the decision's three observes and their database reads held at once). Each outside
    /// read sits on the heap, so the reconcile's own future stays small.
    #[tokio::test]
    async fn a_reconcile_future_stays_small_enough_for_a_worker_stack() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let reporter = kube::runtime::events::Reporter {
            controller: "test".into(),
            instance: None,
        };
        let ctx = Arc::new(Context::new(client, reporter, Live::default(), Default::default()));
        let upgrade = Arc::new(crate::testing::upgrade(crate::testing::spec(), Default::default()));
        let api: Api<LangfuseUpgrade> = Api::namespaced(ctx.client.clone(), "ns");
        let once = reconcile_once(upgrade.clone(), ctx.clone(), None);
        let decision = decide(&ctx, &api, upgrade.clone(), false);
        eprintln!("reconcile_once {} B, decide {} B", size(&once), size(&decision));
        // 75.5 and 64.4 KB when the overflow was seen; 14.2 and 19.6 KB with the reads boxed.
        assert!(size(&decision) <= 24 * 1024, "decide: {} B", size(&decision));
        assert!(size(&once) <= 20 * 1024, "reconcile_once: {} B", size(&once));
    }
}
