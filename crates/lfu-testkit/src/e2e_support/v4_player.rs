//! Plays the v4 worker of a chart-laid-out Langfuse for the data-model road: at each rollout of
//! the worker Deployment (a new pod template, every replica Available) a worker "starts" and runs
//! the background rows its env opens (rows M1-M5, [`crate::support::v4_worker::run_rows`]); while
//! its `LANGFUSE_MIGRATION_V4_WRITE_MODE` is not `legacy`, the propagation job runs every second
//! against this test's own Redis (no partition delay: a test walks seconds, not ten minutes).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use crate::support::v4_worker::{V4Config, propagate_once, run_rows};

/// Knobs a test turns while the worker plays.
#[derive(Clone, Default)]
pub struct V4Knobs {
    /// M3's chunks fail this many times at the first start that runs the backfill (the worker
    /// retries each up to 3 times).
    pub m3_chunk_failures: Arc<AtomicU32>,
    /// The job keeps starting (its heartbeat moves) but its cursor no longer does.
    pub frozen: Arc<AtomicBool>,
    /// Worker starts so far.
    pub starts: Arc<AtomicU32>,
}

fn env_value(d: &k8s_openapi::api::apps::v1::Deployment, name: &str) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
}

pub fn play_v4_worker(
    ns: &super::TestNs,
    db: &crate::support::TestDb,
    redis_url: &str,
    worker: &str,
    knobs: V4Knobs,
) -> tokio::task::JoinHandle<()> {
    let deployments = ns.deployments();
    let (worker, pool, ch) = (worker.to_string(), db.pool.clone(), db.ch_client.clone());
    let redis_url = redis_url.to_string();
    tokio::spawn(async move {
        let mut redis = redis::Client::open(redis_url.as_str())
            .expect("the test's Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("the test's own Redis");
        let mut template = String::new();
        let mut runner: Option<tokio::task::JoinHandle<()>> = None;
        let mut mode = String::from("legacy");
        loop {
            if let Ok(Some(d)) = deployments.get_opt(&worker).await {
                let spec = d.spec.clone().unwrap_or_default();
                let status = d.status.clone().unwrap_or_default();
                let rolled = status.observed_generation >= d.metadata.generation
                    && status.updated_replicas == spec.replicas
                    && status.available_replicas == spec.replicas;
                let now = serde_json::to_string(&spec.template).unwrap_or_default();
                if rolled && now != template {
                    template = now;
                    mode = env_value(&d, "LANGFUSE_MIGRATION_V4_WRITE_MODE").unwrap_or_else(|| "events_only".into());
                    let open = |name: &str| env_value(&d, name).as_deref() == Some("true");
                    let backfill = open("LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL");
                    let config = V4Config {
                        backfill,
                        drop_scratch: open("LANGFUSE_BACKGROUND_MIGRATION_V4_DROP_PID_TID_SORTING_TABLES"),
                        // Spent by the first start that runs the backfill.
                        m3_chunk_failures: match backfill {
                            true => knobs.m3_chunk_failures.swap(0, Ordering::SeqCst),
                            false => 0,
                        },
                    };
                    knobs.starts.fetch_add(1, Ordering::SeqCst);
                    if let Some(previous) = runner.take() {
                        let _ = previous.await;
                    }
                    let (pool, ch) = (pool.clone(), ch.clone());
                    runner = Some(tokio::spawn(async move {
                        match run_rows(&pool, &ch, &config).await {
                            Ok(report) => eprintln!("v4 worker start: {report:?}"),
                            Err(e) => eprintln!("v4 worker start failed: {e}"),
                        }
                    }));
                }
            }
            if mode != "legacy" {
                let frozen = knobs.frozen.load(Ordering::SeqCst);
                if let Err(e) = propagate_once(&ch, &mut redis, Duration::ZERO, frozen).await {
                    eprintln!("v4 propagation job: {e}");
                }
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    })
}
