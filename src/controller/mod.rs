//! The controller: observe → plan → execute → report, once per reconcile.

pub mod cache;
pub mod catalog_watch;
pub mod coalesce;
pub mod decide;
pub mod dispatch;
pub mod events;
pub mod execute;
pub mod fence;
pub mod fetched;
pub mod memo;
pub mod objects;
pub mod observe;
pub mod observed;
pub mod plan;
pub mod reconcile;
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
use kube::api::ListParams;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::api::LangfuseUpgrade;
use crate::databases::Databases;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use timing::{TRANSPORT_RETRY_MAX, WatchBackoff};

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
    /// Read-your-writes: the version of each upgrade this operator last wrote or read fresh.
    memo: memo::WriteMemo,
    /// When each upgrade's status was last written: progress at most once a second.
    coalescer: coalesce::Coalescer,
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
            memo: memo::WriteMemo::default(),
            coalescer: coalesce::Coalescer::default(),
        }
    }
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
                match reconcile::reconcile(upgrade.clone(), ctx.clone(), woken).await {
                    Ok(next) => next,
                    Err(e) => reconcile::error_policy(upgrade, &e, ctx),
                }
            }
        },
        dispatch::shutdown_signal(),
    )
    .await;
    info!("controller stopped");
    Ok(())
}
