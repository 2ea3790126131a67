//! End-to-end on v4's data-model road: a chart-laid-out Langfuse 4.16.0 in `legacy`, the
//! operator as its own process, the real control plane, PostgreSQL, ClickHouse and a Redis of
//! the test's own, the v4 worker played by the stand-in (rows M1-M5, the propagation job).

use std::sync::atomic::Ordering;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use langfuse_upgrade_operator::api::{DataModelStage, LangfuseUpgrade, Phase};
use lfu_testkit::e2e_support::own_redis::OwnRedis;
use lfu_testkit::e2e_support::v4_player::{V4Knobs, play_v4_worker};
use lfu_testkit::support::events_data::{Producer, ingest_dual, seed_history};

use super::*;

const FLAGS: [(&str, &str); 4] = [
    ("LANGFUSE_MIGRATION_V4_WRITE_MODE", "legacy"),
    ("LANGFUSE_MIGRATION_V4_NATIVE_OTEL_BEHAVIOUR", "dual_write"),
    ("LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN", "false"),
    ("LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL", "false"),
];

/// 4.16.0 in `legacy` (as after our v4 hop, or chart 2.0.0 with the legacy values), two months
/// of history in the old tables, its own Redis; the v4 worker played.
async fn on_v4(label: &str, knobs: &V4Knobs) -> (Road, OwnRedis, tokio::task::JoinHandle<()>) {
    let w = Road::new(label, "4.16.0").await;
    w.db.load_v4_events().await;
    let redis = OwnRedis::start("noeviction");
    let url = format!("redis://127.0.0.1:{}", redis.port);
    w.ns.secret("langfuse-redis", "url", &url);
    let pairs: Vec<String> = FLAGS.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for d in ["deploy/langfuse-web", "deploy/langfuse-worker"] {
        let mut args = vec!["-n", w.ns.name.as_str(), "set", "env", d];
        args.extend(pairs.iter().map(String::as_str));
        kubectl(&args, None);
        kubectl(&["-n", &w.ns.name, "rollout", "status", d, "--timeout=60s"], None);
    }
    let now = Timestamp::now();
    seed_history(
        &w.db.ch_client,
        "proj-prod",
        "h",
        3_000,
        4,
        now - SignedDuration::from_hours(24 * 50),
        now,
    )
    .await;
    let worker = play_v4_worker(&w.ns, &w.db, &url, "langfuse-worker", knobs.clone());
    (w, redis, worker)
}

fn data_model_condition(u: &LangfuseUpgrade) -> Option<(String, String)> {
    let c = u.status.as_ref()?.conditions.iter().find(|c| c.type_ == "DataModel")?;
    Some((c.reason.clone(), c.message.clone()))
}

/// Polls the object until `pred` holds; its last state in the panic otherwise.
async fn until(
    w: &Road,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&LangfuseUpgrade) -> bool,
) -> LangfuseUpgrade {
    let start = Instant::now();
    loop {
        let u = w.ns.upgrade(name).await;
        if pred(&u) {
            return u;
        }
        if start.elapsed() > timeout {
            panic!(
                "{what}: not within {timeout:?}; phase {:?}, DataModel {:?}",
                u.status.as_ref().and_then(|s| s.phase),
                data_model_condition(&u)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn said(reason: &'static str) -> impl Fn(&LangfuseUpgrade) -> bool {
    move |u| data_model_condition(u).is_some_and(|(r, _)| r == reason)
}

fn mode(d: &Deployment) -> String {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
        .env
        .as_ref()
        .and_then(|e| e.iter().find(|v| v.name == "LANGFUSE_MIGRATION_V4_WRITE_MODE"))
        .and_then(|v| v.value.clone())
        .unwrap_or_default()
}

fn patch(w: &Road, name: &str, body: Value) {
    kubectl(
        &[
            "-n",
            &w.ns.name,
            "patch",
            "lfu",
            name,
            "--type",
            "merge",
            "-p",
            &body.to_string(),
        ],
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane and databases: run `make e2e` (tests/e2e/run.sh), which starts them and passes --include-ignored"]
async fn a_v4_installation_in_legacy_is_walked_to_events_held_on_counts_producers_and_the_acknowledgement() {
    let knobs = V4Knobs::default();
    knobs.m3_chunk_failures.store(2, Ordering::SeqCst);
    let (w, _redis, worker) = on_v4("dm-events", &knobs).await;
    let observer = w.observe("to-events");
    let _op = Operator::start(&w.ns.name, "a");
    let mut u = w.upgrade("to-events", "4.16.0");
    u["spec"]["target"]["dataModel"] = json!("Events");
    u["spec"]["dataModel"] = json!({ "dualWriteHealthyFor": "5s", "lagAlert": "2h", "producerWindow": "20s" });
    let started = Instant::now();
    w.apply(&u);

    // Dual on web and worker.
    until(&w, "to-events", "dual", FLOW, |u| {
        u.status
            .as_ref()
            .and_then(|s| s.data_model.as_ref())
            .is_some_and(|d| d.dual_since.is_some())
    })
    .await;
    let t_dual = started.elapsed();
    assert_eq!(mode(&w.deployment("langfuse-web").await), "dual");
    assert_eq!(mode(&w.deployment("langfuse-worker").await), "dual");
    let now = Timestamp::now();

    // An observation written after M2 read its partition, dated before the backfill began: the
    // events tables miss it, and the cutover is held on the counts of its project and month.
    let m2 = "20260701_v4_step_2_rewrite_observations_to_pid_tid_sorting";
    let t0 = Instant::now();
    while w.db.migration_row(m2).await["finished_at"].is_null() {
        assert!(t0.elapsed() < FLOW, "M2 never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late_at = now - SignedDuration::from_hours(30);
    seed_history(
        &w.db.ch_client,
        "proj-late",
        "missed",
        1,
        1,
        late_at - SignedDuration::from_secs(1),
        late_at,
    )
    .await;
    let held = until(&w, "to-events", "the counts' hold", FLOW, said("CountsMismatch")).await;
    let t_backfill = started.elapsed();
    let dm = held.status.as_ref().unwrap().data_model.clone().unwrap();
    assert_eq!(dm.count_mismatches.len(), 2, "{:?}", dm.count_mismatches);
    assert!(
        dm.count_mismatches
            .iter()
            .all(|m| m.project == "proj-late" && m.old == 1 && m.events == 0)
    );
    let m3 = dm.rows.iter().find(|r| r.step == "M3").unwrap();
    assert_eq!(
        (m3.phase.as_str(), m3.retries),
        ("finished", 2),
        "the worker retried M3's chunk: {m3:?}"
    );
    assert!(mode(&w.deployment("langfuse-web").await) == "dual", "nothing cut over");
    // Meanwhile an old SDK's events arrive through the staging table (first seen in S3 minutes
    // ago: a queue backlog), propagated into events_core.
    let old_sdk = Producer {
        project: "proj-prod",
        sdk: "python",
        version: "2.60.3",
        key: "pk-lf-batch",
    };
    let at = Timestamp::now();
    ingest_dual(
        &w.db.ch_client,
        &old_sdk,
        "late",
        40,
        at,
        at - SignedDuration::from_mins(7),
    )
    .await;
    let t0 = Instant::now();
    while w
        .db
        .ch_u64("SELECT count() FROM events_core WHERE ingestion_api_key = 'pk-lf-batch'")
        .await
        < 120
    {
        assert!(t0.elapsed() < FLOW, "the old SDK's events were never propagated");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What a re-run of the backfill gives: the missed rows copied. The next count agrees.
    w.db.ch_exec(
        "INSERT INTO events_full (project_id, trace_id, span_id, parent_span_id, start_time, name, type, source, event_ts, is_deleted) \
         SELECT project_id, id, concat('t-', id), '', timestamp, name, 'SPAN', 'backfill', now64(3), 0 FROM traces WHERE startsWith(id, 'missed-')",
    )
    .await;
    w.db.ch_exec(
        "INSERT INTO events_full (project_id, trace_id, span_id, parent_span_id, start_time, name, type, source, event_ts, is_deleted) \
         SELECT project_id, trace_id, id, '', start_time, name, type, 'backfill', now64(3), 0 FROM observations WHERE startsWith(id, 'missed-')",
    )
    .await;
    patch(
        &w,
        "to-events",
        json!({ "metadata": { "annotations": { "recount": "1" } } }),
    );

    // The old SDK seen in events_core: held until it is out of the window.
    let held = until(&w, "to-events", "the producers' hold", FLOW, |u| {
        data_model_condition(u).is_some_and(|(r, m)| r == "IncompatibleProducers" && m.contains("would be rejected"))
    })
    .await;
    let producers = held.status.unwrap().data_model.unwrap().producers;
    assert_eq!(producers.len(), 1, "{producers:?}");
    assert_eq!(
        (
            producers[0].sdk_version.as_str(),
            producers[0].public_key.as_str(),
            producers[0].events
        ),
        ("2.60.3", "pk-lf-batch", 120)
    );
    assert!(producers[0].remedy.contains("Python SDK to v4"));

    // Every check passed: held for a person, nothing written.
    let ready = until(
        &w,
        "to-events",
        "the acknowledgement's hold",
        FLOW,
        said("AwaitingAcknowledgement"),
    )
    .await;
    let t_checks = started.elapsed();
    assert_eq!(ready.status.as_ref().unwrap().phase, Some(Phase::MigratingDataModel));
    assert_eq!(mode(&w.deployment("langfuse-worker").await), "dual");
    patch(
        &w,
        "to-events",
        json!({ "spec": { "dataModel": { "acknowledge": ["Cutover"] } } }),
    );
    let done = w.ns.wait_phase("to-events", Phase::Completed, FLOW).await;
    let t_cutover = started.elapsed();
    let dm = done.status.unwrap().data_model.unwrap();
    assert_eq!(dm.stage, DataModelStage::EventsOnly);
    assert!(dm.cutover_started_at.is_some() && dm.cutover_at.is_some());
    for d in ["langfuse-web", "langfuse-worker"] {
        assert_eq!(mode(&w.deployment(d).await), "events_only");
    }
    let reasons: Vec<String> = w.events().await.into_iter().filter_map(|e| e.reason).collect();
    assert!(reasons.iter().any(|r| r == "FlagsSet"), "{reasons:?}");
    // The flags by a field manager of their own; Helm keeps every field it set.
    for d in ["langfuse-web", "langfuse-worker"] {
        let m = managers(&w.deployment(d).await);
        assert!(
            m.contains("langfuse-upgrade-operator-data-model") && m.contains("helm"),
            "{d}: {m:?}"
        );
    }
    eprintln!(
        "data-model road: dual after {} ms, backfill done and counted after {} ms, checks passed after {} ms, events_only after {} ms",
        t_dual.as_millis(),
        t_backfill.as_millis(),
        t_checks.as_millis(),
        t_cutover.as_millis()
    );
    w.assert_clean(&observer);
    worker.abort();
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane and databases: run `make e2e` (tests/e2e/run.sh), which starts them and passes --include-ignored"]
async fn a_frozen_propagation_cursor_is_reported_before_the_ttl_and_dual_backs_out_to_legacy() {
    let knobs = V4Knobs::default();
    let (w, _redis, worker) = on_v4("dm-dual", &knobs).await;
    let _op = Operator::start(&w.ns.name, "a");
    let mut u = w.upgrade("to-dual", "4.16.0");
    u["spec"]["target"]["dataModel"] = json!("Dual");
    u["spec"]["dataModel"] = json!({ "lagAlert": "5m" });
    w.apply(&u);
    until(&w, "to-dual", "dual reached", FLOW, said("DataModelReached")).await;

    // The job keeps starting, its cursor does not move; late rows wait in the staging table.
    knobs.frozen.store(true, Ordering::SeqCst);
    let producer = Producer {
        project: "proj-prod",
        sdk: "python",
        version: "4.7.1",
        key: "pk-lf-new",
    };
    let now = Timestamp::now();
    ingest_dual(
        &w.db.ch_client,
        &producer,
        "waiting",
        10,
        now,
        now - SignedDuration::from_mins(12),
    )
    .await;
    let lagging = until(&w, "to-dual", "the lag reported", FLOW, said("PropagationLagging")).await;
    let s = lagging.status.unwrap();
    assert_eq!(s.phase, Some(Phase::Degraded));
    let p = s.data_model.unwrap().propagation.unwrap();
    assert!(p.backlog >= 1 && p.lag_seconds >= 12 * 60, "{p:?}");
    assert_eq!(p.hours_before_loss, Some(47));
    assert!(p.heartbeat_at.is_some());

    // Back out: legacy on both, what the events tables keep said plainly.
    patch(
        &w,
        "to-dual",
        json!({ "spec": { "target": { "dataModel": "Legacy" } } }),
    );
    let back = until(&w, "to-dual", "backed out", FLOW, |u| {
        u.status
            .as_ref()
            .and_then(|s| s.data_model.as_ref())
            .is_some_and(|d| d.backed_out_at.is_some())
    })
    .await;
    let dm = back.status.clone().unwrap().data_model.unwrap();
    assert_eq!(dm.stage, DataModelStage::Legacy);
    for d in ["langfuse-web", "langfuse-worker"] {
        assert_eq!(mode(&w.deployment(d).await), "legacy");
    }
    let done = w.ns.wait_phase("to-dual", Phase::Completed, FLOW).await;
    let (_, message) = data_model_condition(&done).unwrap();
    assert!(
        message.contains("back on legacy") || message.contains("backed out"),
        "{message}"
    );
    worker.abort();
    w.finish().await;
}
