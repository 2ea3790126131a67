//! The controller: observe → plan → execute → report, once per reconcile.

pub mod cache;
pub mod dispatch;
pub mod events;
pub mod execute;
pub mod fence;
pub mod fetched;
pub mod objects;
pub mod observe;
pub mod observed;
pub mod plan;
pub mod relist;
pub mod report;
pub mod secrets;
pub mod slim;
pub mod timing;
pub mod triggers;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use rand::Rng;
use tracing::{Instrument, info, info_span, warn};

use crate::api::LangfuseUpgrade;
use crate::controller::plan::Action as Write;
use crate::databases::Databases;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use dispatch::Requeue;
use timing::{CONFLICT_RETRY, TRANSPORT_RETRY_MAX, WatchBackoff, backoff, spread};

/// Shared by every reconcile.
pub struct Context<D> {
    pub client: Client,
    pub events: events::EventSink,
    pub databases: D,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object, for backoff.
    failures: Mutex<HashMap<ObjectRef<LangfuseUpgrade>, u32>>,
    /// Whether this replica may still write (its Lease renewed recently enough).
    pub fence: fence::Fence,
    /// The watch caches, once `run` has started the watches.
    caches: std::sync::OnceLock<cache::Caches>,
    /// Per object, the resourceVersion this operator last wrote or read fresh. A cached object
    /// at exactly that version misses nothing of ours, so it is planned from without a GET.
    latest: Mutex<HashMap<ObjectRef<LangfuseUpgrade>, Known>>,
}

/// The version of an upgrade this operator last wrote or read, and, until the watch shows it,
/// what its own last status write returned.
#[derive(Clone)]
struct Known {
    version: String,
    /// The version the writing reconcile planned from, and the object its writes (each a
    /// compare-and-swap onto the one before) ended at. A cached copy still at `from` has missed
    /// only those writes: `object` is then the current object, without a GET.
    written: Option<(String, Arc<LangfuseUpgrade>)>,
}

impl<D> Context<D> {
    /// Writes only while `fence` holds (leader election).
    pub fn with_fence(mut self, fence: fence::Fence) -> Self {
        self.events.fence_with(fence.clone());
        self.fence = fence;
        self
    }

    pub fn new(client: Client, reporter: Reporter, databases: D, metrics: Arc<Metrics>) -> Self {
        Self {
            events: events::EventSink::start(Recorder::new(client.clone(), reporter)),
            client,
            databases,
            metrics,
            failures: Mutex::default(),
            fence: fence::Fence::none(),
            caches: std::sync::OnceLock::new(),
            latest: Mutex::default(),
        }
    }
}

/// `woken`: when a watch event first asked for this run (for the log).
async fn reconcile<D: Databases>(
    upgrade: Arc<LangfuseUpgrade>,
    ctx: Arc<Context<D>>,
    woken: Option<std::time::Instant>,
) -> Result<Requeue> {
    let result = reconcile_once(upgrade.clone(), ctx.clone(), woken).await;
    if let Err(error) = &result
        && error.is_conflict()
    {
        // Another writer changed the object after this decision read it: nothing after the
        // conflicting write was made. Plan again at once from a fresh read; not an error.
        ctx.latest
            .lock()
            .expect("latest lock")
            .remove(&ObjectRef::from(upgrade.as_ref()));
        tracing::debug!(error = %error, "the object changed under this decision; planning again");
        return Ok(Requeue::After(CONFLICT_RETRY));
    }
    if result.is_err() {
        // A write may have landed before the failure (and report_error writes too): plan
        // the next one from a fresh read.
        ctx.latest
            .lock()
            .expect("latest lock")
            .remove(&ObjectRef::from(upgrade.as_ref()));
    }
    if let Err(error) = &result
        && ctx.fence.holds()
    {
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
    woken: Option<std::time::Instant>,
) -> Result<Requeue> {
    let span = info_span!("reconcile", namespace = %upgrade.namespace().unwrap_or_default(), name = %upgrade.name_any(), generation = upgrade.metadata.generation);
    async move {
        let started = std::time::Instant::now();
        // The cached object can predate this operator's own last status write; planning from it
        // would repeat a decision with a later `now` (moving recorded times, repeating Events).
        // It is used only when it is exactly the version this operator last wrote or read, or
        // the version its last write started from (then that write's answer is the object);
        // otherwise one fresh GET gives read-your-writes. Either way every write is a
        // compare-and-swap on the version planned from.
        let key = ObjectRef::from(upgrade.as_ref());
        let api: Api<LangfuseUpgrade> = Api::namespaced(ctx.client.clone(), &upgrade.namespace().unwrap_or_default());
        let known = {
            let mut latest = ctx.latest.lock().expect("latest lock");
            // The watch has caught up with the write: the object kept from it is not needed.
            if let Some(k) = latest.get_mut(&key)
                && upgrade.resource_version().as_ref() == Some(&k.version)
            {
                k.written = None;
            }
            latest.get(&key).cloned()
        };
        let cached = upgrade.resource_version();
        let mut from_cache = known.as_ref().is_some_and(|k| cached.as_ref() == Some(&k.version));
        let mut upgrade = upgrade;
        if let Some((from, written)) = known.and_then(|k| k.written)
            && !from_cache
            && cached.as_ref() == Some(&from)
        {
            upgrade = written;
            from_cache = true;
        }
        if !from_cache {
            let Some(fresh) = api.get_opt(&upgrade.name_any()).await? else {
                return Ok(Requeue::OnChange);
            };
            upgrade = Arc::new(fresh);
        }
        let read_at = started.elapsed();
        let mut looked_ahead = false;
        let (observed, decision, status) = loop {
            // Whole seconds (status times round-trip through the API at that precision), and
            // read before observing: every time the plan records is at or before the facts it
            // read (`crate::precision`).
            let now = crate::precision::bound_after(Timestamp::now());
            let mut needs = plan::needs(&upgrade, now);
            let caches = ctx.caches.get().filter(|c| c.synced());
            let mut observed = observe::observe(&ctx.client, &ctx.databases, &upgrade, &needs, caches).await?;
            let mut decision = plan::plan(&upgrade, &observed, now);
            // Once at most: the step after a look ahead waits (retirement, rollouts) or writes.
            // A look the apiserver refused leaves the first decision, as `second_look` does
            // for a database read that failed.
            if let Some(wider) = plan::look_ahead(&upgrade, &decision, &needs, now) {
                match observe::observe(&ctx.client, &ctx.databases, &upgrade, &wider, caches).await {
                    Ok(more) => match plan::second_look(&upgrade, &observed, more, now) {
                        Some((more, second)) => {
                            (observed, decision) = (more, second);
                            looked_ahead = true;
                            needs = wider;
                        }
                        None => tracing::debug!("a read of the look ahead failed; the first decision stands"),
                    },
                    Err(e) => tracing::debug!(error = %e, "the look ahead could not read; the first decision stands"),
                }
            }
            // A write that cannot be taken back is made only on a view of the object known to
            // be current: a `paused` or `abort` set a moment ago must stop it.
            let irreversible = decision.irreversible(&upgrade);
            if from_cache && irreversible {
                let Some(fresh) = api.get_opt(&upgrade.name_any()).await? else {
                    return Ok(Requeue::OnChange);
                };
                from_cache = false;
                if fresh.resource_version() != upgrade.resource_version() {
                    upgrade = Arc::new(fresh);
                    continue;
                }
            }
            // And on the cluster as the API has it: a cache that resumed after a watch error
            // may not have replayed a revert yet (the Service back on v2 before v2 goes to 0).
            if irreversible && caches.is_some() {
                let fresh =
                    observe::observe(&ctx.client, &ctx.databases, &upgrade, &needs.cluster_only(), None).await?;
                observed = observed.with_cluster_of(fresh);
                decision = plan::plan(&upgrade, &observed, now);
            }
            let status = report::next_status(&upgrade, &decision, now);
            break (observed, decision, status);
        };
        let observed_at = started.elapsed();
        // On the heap: a reconcile waiting on a read holds no room for the writes.
        let executed = Box::pin(execute::execute(
            &ctx.client,
            &ctx.databases,
            &upgrade,
            &observed,
            &decision.actions,
            &status,
            execute::Guards {
                caches: ctx.caches.get(),
                fence: &ctx.fence,
            },
        ))
        .await?;
        let execute::Executed {
            actions: executed,
            resource_version,
        } = executed;
        let executed_at = started.elapsed();
        ctx.fence.check()?;
        let reported = report::report(&ctx.client, &ctx.events, &upgrade, &status, &executed, resource_version).await?;
        {
            let mut known = ctx.latest.lock().expect("latest lock");
            match reported.version {
                Some(version) if !executed.contains(&Write::RemoveFinalizer) => {
                    let written = reported.object.zip(upgrade.resource_version()).map(|(mut o, from)| {
                        slim::slim(&mut o);
                        (from, Arc::new(o))
                    });
                    known.insert(key, Known { version, written })
                }
                _ => known.remove(&key),
            };
        }
        let (ns, name) = (upgrade.namespace().unwrap_or_default(), upgrade.name_any());
        let restarts = |s: Option<&crate::api::LangfuseUpgradeStatus>| {
            s.map_or(0, |s| s.remedies_used(crate::api::RemedyKind::WorkerRestart))
        };
        let remedies = executed.iter().filter_map(|a| match a {
            Write::Remedy(r) => Some(r),
            _ => None,
        });
        ctx.metrics.remedies_applied(
            &ns,
            &name,
            remedies,
            restarts(upgrade.status.as_ref()),
            restarts(Some(&status)),
        );
        if executed.contains(&Write::RemoveFinalizer) {
            ctx.metrics.forget(&ns, &name);
        } else {
            ctx.metrics
                .observe_status(&ns, &name, &status, std::time::Instant::now());
        }
        ctx.metrics.reconciled(started.elapsed());
        if !executed.is_empty() || upgrade.status.as_ref().and_then(|s| s.phase) != Some(decision.phase) {
            // Where a reconcile's time goes (the shift's latency is mostly this sum).
            let ms = |d: Duration| (d.as_secs_f64() * 10_000.0).round() / 10.0;
            info!(
                phase = %decision.phase,
                writes = executed.len(),
                looked_ahead,
                wake_ms = woken.map(|w| ms(started.saturating_duration_since(w))),
                get_ms = ms(read_at),
                observe_ms = ms(observed_at - read_at),
                postgres_ms = ms(observed.took.postgres),
                clickhouse_ms = ms(observed.took.clickhouse),
                stores_ms = ms(observed.took.stores),
                execute_ms = ms(executed_at - observed_at),
                report_ms = ms(started.elapsed() - executed_at),
                "reconciled"
            );
        }
        ctx.failures
            .lock()
            .expect("failures lock")
            .remove(&ObjectRef::from(upgrade.as_ref()));
        Ok(Requeue::After(spread(
            decision.requeue.max(plan::wait::FLOOR),
            rand::rng().random(),
        )))
    }
    .instrument(span)
    .await
}

fn error_policy<D: Databases>(upgrade: Arc<LangfuseUpgrade>, error: &Error, ctx: Arc<Context<D>>) -> Requeue {
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

/// Run the controller until SIGTERM/SIGINT. `client` serves the watches (no answer timeout: a
/// quiet watch sends nothing for minutes); reconciles use the context's. `namespace`: watch
/// one namespace only.
pub async fn run<D: Databases>(client: Client, namespace: Option<String>, ctx: Arc<Context<D>>) -> Result<()> {
    let api = |c: &Client| -> Api<LangfuseUpgrade> {
        match &namespace {
            Some(ns) => Api::namespaced(c.clone(), ns),
            None => Api::all(c.clone()),
        }
    };
    let upgrades = api(&client);
    // Only the apiserver's "no such resource" means the CRD is missing; an apiserver that
    // does not answer yet (restarting, a network blip at start) is waited for.
    let mut wait = Duration::from_millis(250);
    loop {
        match upgrades.list(&ListParams::default().limit(1)).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 404 => {
                warn!(error = %s, "cannot list LangfuseUpgrades");
                return Err(Error::CrdMissing);
            }
            Err(e) => {
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot list LangfuseUpgrades yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(TRANSPORT_RETRY_MAX);
            }
        }
    }
    // The upgrades' own watch, with the fields no decision reads dropped before caching: the
    // store holds every upgrade in scope, and their managedFields were 4.6 MB of a 25.6 MB heap
    // with 200 upgrades (heaptrack, 2026-12-02).
    let (store, writer) = reflector::store();
    let own = watcher(upgrades, watcher::Config::default().any_semantic())
        .backoff(WatchBackoff::default())
        .modify(slim::slim);
    // Triggered after the store applied each event, a list's objects at its end.
    let own = {
        let mut hold = relist::ListHold::default();
        reflector::reflector(writer, own).map(move |event| event.map(|e| hold.after(&e)))
    };
    // One watch per related kind, cached (observe reads from it) and a trigger: a change to
    // an object wakes the upgrades that name it.
    let (caches, feeds) = cache::Caches::new(&client, namespace.as_deref(), store.clone());
    if ctx.caches.set(caches).is_err() {
        warn!("the watch caches were already set; observe keeps the first ones");
    }
    let triggers = triggers::of(own, feeds, &store);
    dispatch::run(
        triggers,
        store,
        move |upgrade, asked| {
            let ctx = ctx.clone();
            let woken = asked.map(tokio::time::Instant::into_std);
            async move {
                match reconcile(upgrade.clone(), ctx.clone(), woken).await {
                    Ok(next) => next,
                    Err(e) => error_policy(upgrade, &e, ctx),
                }
            }
        },
        dispatch::shutdown_signal(),
    )
    .await;
    info!("controller stopped");
    Ok(())
}
