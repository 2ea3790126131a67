//! Plan tests of v4's data-model road on a chart-installed Langfuse 4.16.0: the stages in
//! order, each gate holding with nothing written, the cutover only with its evidence and a
//! person's acknowledgement, the back-out before it and forward only after it.

use super::tests_hops::{Chart, chart_spec, env_of};
use super::*;
use crate::api::conditions as c;
use crate::api::{DataModel, DataModelStage, HistoricData, IrreversibleStep};
use crate::data_model::counts::MonthCounts;
use crate::data_model::producers::ProducerRow;
use crate::data_model::progress::BackfillRow;
use crate::data_model::{EventsFacts, EventsQuery, PropagationKeys, StagingPartition};
use crate::reading::Reading;
use crate::resources::deployments::FlagChange;
use crate::resources::v4_env::{HISTORIC_BACKFILL, WRITE_MODE};
use crate::testing::t;

/// What ClickHouse, Redis and the v4 worker's runner answer on the data-model road.
#[derive(Default)]
pub(super) struct DmWorld {
    pub rows: Vec<BackfillRow>,
    pub keys: PropagationKeys,
    pub partitions: Vec<StagingPartition>,
    pub producers: Vec<ProducerRow>,
    pub counts: Vec<MonthCounts>,
    /// The propagation job runs at every step (its cursor follows the newest partition).
    pub propagating: bool,
    /// Every flag write: (Deployment, WRITE_MODE, backfill flag).
    pub writes: Vec<(String, String, String)>,
    /// M3 fails at the worker's next starts this many times.
    pub m3_failures: u32,
    pub m3_reason: String,
    pub resets: Vec<(String, bool)>,
}

impl DmWorld {
    pub fn events(&self, q: &EventsQuery) -> Reading<EventsFacts> {
        if *q == EventsQuery::default() {
            return Reading::NotAsked;
        }
        Reading::Answered(EventsFacts {
            staging_partitions: if q.staging { self.partitions.clone() } else { Vec::new() },
            producers: q.producers_since.map(|_| self.producers.clone()),
            counts: q.counts.map(|_| self.counts.clone()),
        })
    }

    pub fn reset(&mut self, name: &str, reload: bool) {
        let row = self.rows.iter_mut().find(|r| r.name == name).expect("a backfill row");
        assert!(row.failed_at.is_some(), "{name} reset while not failed");
        (row.failed_at, row.failed_reason, row.finished_at) = (None, None, None);
        self.resets.push((name.to_string(), reload));
    }

    /// The v4 worker's start: with the backfill gate open, M1-M4 run in name order (M3 fails
    /// while failures are left); with the drop gate open and M4 finished, M5 runs.
    fn worker_started(&mut self, backfill: bool, drop: bool, now: i64) {
        let mut blocked = false;
        for row in &mut self.rows {
            let step = row.step().unwrap_or(0);
            let gate = if step == 5 { drop } else { backfill };
            if !gate || row.finished_at.is_some() || row.failed_at.is_some() || blocked {
                continue;
            }
            row.taken = true;
            if step == 3 && self.m3_failures > 0 {
                self.m3_failures -= 1;
                row.failed_at = Some(t(now));
                row.failed_reason = Some(self.m3_reason.clone());
                blocked = true;
                continue;
            }
            row.finished_at = Some(t(now));
            row.state = serde_json::json!({"phase": "completed", "todos": [{"status": "completed"}]});
        }
    }
}

impl Chart {
    pub(super) fn dm_flags(&mut self, change: &FlagChange) {
        let is_web = change.deployment == "langfuse-web";
        let value = |name: &str| {
            change
                .env
                .iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
                .unwrap_or_default()
        };
        let stored = self
            .upgrade
            .status
            .clone()
            .unwrap_or_default()
            .data_model
            .unwrap_or_default();
        // Invariants: the cutover's start and the backfill's are durable before their writes.
        if value(WRITE_MODE) == "events_only" {
            assert!(
                stored.cutover_started_at.is_some(),
                "events_only written before its fact"
            );
        }
        if value(HISTORIC_BACKFILL) == "true" {
            assert!(stored.backfill_started_at.is_some(), "backfill on before its fact");
        }
        if !is_web {
            let web_mode = env_of(&self.web, WRITE_MODE).unwrap_or_default();
            assert_eq!(web_mode, value(WRITE_MODE), "the worker moved before web");
        }
        self.dm
            .writes
            .push((change.deployment.clone(), value(WRITE_MODE), value(HISTORIC_BACKFILL)));
        let d = if is_web { &mut self.web } else { &mut self.worker };
        let pod = d.spec.as_mut().unwrap();
        let c = &mut pod.template.spec.as_mut().unwrap().containers[0];
        assert_eq!(c.name, change.container);
        let env = c.env.get_or_insert_with(Vec::new);
        for var in &change.env {
            env.retain(|e| e.name != var.name);
            env.push(var.clone());
        }
        if let Some(n) = change.restart {
            let meta = pod.template.metadata.get_or_insert_with(Default::default);
            let annotations = meta.annotations.get_or_insert_with(Default::default);
            annotations.insert(
                crate::resources::deployments::DATA_MODEL_RESTART_ANNOTATION.into(),
                n.to_string(),
            );
        }
        d.metadata.generation = Some(d.metadata.generation.unwrap_or(1) + 1);
        if !is_web {
            let drop = value(crate::data_model::flags::DROP_SCRATCH) == "true";
            self.dm
                .worker_started(value(HISTORIC_BACKFILL) == "true", drop, self.now);
        }
    }

    /// One step, the propagation job running first where it does.
    fn dm_step(&mut self) -> Decision {
        if self.dm.propagating {
            let name = format!("p{:08}", self.now);
            self.dm.partitions.push(StagingPartition {
                name: name.clone(),
                start: t(self.now - 60),
            });
            self.dm.keys = PropagationKeys {
                cursor: Some(name),
                heartbeat_ms: Some(t(self.now).as_millisecond()),
            };
        }
        self.step()
    }

    fn dm_until(&mut self, reason: c::Reason, max: usize) -> Decision {
        for _ in 0..max {
            let d = self.dm_step();
            if d.conditions
                .iter()
                .any(|k| k.type_ == c::DATA_MODEL && k.reason == reason)
            {
                return d;
            }
        }
        panic!(
            "never said {reason}; last: {:?}",
            self.history
                .last()
                .map(|d| (d.phase, d.conditions.iter().find(|k| k.type_ == c::DATA_MODEL).cloned()))
        );
    }

    fn dm_status(&self) -> crate::api::DataModelStatus {
        self.status().data_model.unwrap_or_default()
    }
}

fn data_model_message(d: &Decision) -> String {
    d.conditions
        .iter()
        .find(|k| k.type_ == c::DATA_MODEL)
        .map(|k| k.message.clone())
        .unwrap_or_default()
}

/// 4.16.0 installed by the chart, its upgrade completed in `legacy`, M1-M5 registered; the
/// data-model road's periods short (a test walks minutes, not days).
fn completed_on_v4(target: DataModel) -> Chart {
    let mut w = Chart::new(chart_spec("4.16.0"), "4.16.0");
    w.run_until(Phase::Completed, 20);
    for (i, name) in [
        "20260701_v4_step_1_create_root_spans_from_traces",
        "20260701_v4_step_2_rewrite_observations_to_pid_tid_sorting",
        "20260701_v4_step_3_backfill_events_full_from_observations",
        "20260701_v4_step_4_backfill_events_full_from_dataset_run_items",
        "20260701_v4_step_5_drop_pid_tid_sorting_tables",
    ]
    .into_iter()
    .enumerate()
    {
        w.dm.rows.push(BackfillRow {
            name: name.into(),
            state: serde_json::json!({}),
            ..Default::default()
        });
        assert_eq!(w.dm.rows[i].step(), Some(i as u8 + 1));
    }
    w.dm.counts = vec![MonthCounts {
        project: "proj-a".into(),
        month: 202611,
        traces: 1_000,
        root_spans: 1_000,
        observations: 9_000,
        child_spans: 9_000,
    }];
    w.dm.propagating = true;
    let spec = &mut w.upgrade.spec;
    spec.target.data_model = Some(target);
    spec.data_model.dual_write_healthy_for = "2m".into();
    spec.data_model.producer_window = "3m".into();
    spec.data_model.lag_alert = "10m".into();
    w
}

#[test]
fn legacy_is_walked_to_events_stage_by_stage_web_first_and_waits_for_the_acknowledgement() {
    let mut w = completed_on_v4(DataModel::Events);
    let d = w.dm_until(reason::WAITING_FOR_HEALTHY_DUAL_WRITE, 20);
    assert_eq!(d.phase, Phase::MigratingDataModel);
    assert!(w.dm_status().dual_since.is_some());
    let d = w.dm_until(reason::AWAITING_ACKNOWLEDGEMENT, 60);
    assert!(
        data_model_message(&d).contains("add Cutover"),
        "{}",
        data_model_message(&d)
    );
    let s = w.dm_status();
    assert_eq!(s.stage, DataModelStage::HistoricDone);
    assert!(s.counts_matched_at.is_some() && s.cutover_started_at.is_none());
    assert!(s.rows.iter().take(4).all(|r| r.phase == "finished"), "{:?}", s.rows);
    // Nothing past the checks is written without the acknowledgement.
    let before = w.dm.writes.len();
    for _ in 0..5 {
        w.dm_step();
    }
    assert_eq!(w.dm.writes.len(), before);
    w.upgrade.spec.data_model.acknowledge = vec![IrreversibleStep::Cutover];
    let d = w.dm_until(reason::DATA_MODEL_REACHED, 20);
    assert_eq!(d.phase, Phase::Completed);
    assert!(d.conditions.iter().any(|k| k.type_ == c::READY && k.status));
    let modes: Vec<(String, String, String)> = w.dm.writes.clone();
    let expect = |d: &str, m: &str, b: &str| (d.to_string(), m.to_string(), b.to_string());
    assert_eq!(
        modes,
        [
            expect("langfuse-web", "dual", "false"),
            expect("langfuse-worker", "dual", "false"),
            expect("langfuse-web", "dual", "true"),
            expect("langfuse-worker", "dual", "true"),
            expect("langfuse-web", "events_only", "true"),
            expect("langfuse-worker", "events_only", "true"),
        ]
    );
    let s = w.dm_status();
    assert_eq!(s.stage, DataModelStage::EventsOnly);
    assert!(s.cutover_at.is_some());
    // Cleanup on its own acknowledgement: M5 drops the scratch table.
    w.upgrade.spec.data_model.acknowledge.push(IrreversibleStep::Cleanup);
    for _ in 0..10 {
        w.dm_step();
    }
    assert_eq!(w.dm_status().stage, DataModelStage::CleanedUp);
    assert_eq!(w.dm.writes.len(), 8);
}

/// Invariant 11 for the cleanup: its start is recorded before the first drop flag goes out, and
/// once out, taking `Cleanup` back from the acknowledgement does not leave the drop half-rolled
/// (web with the flag, the worker without) and unwatched. Failed before `cleanupStartedAt`:
/// the worker never got the flag and the stage stayed `EventsOnly`.
#[test]
fn a_cleanup_once_started_goes_on_after_its_acknowledgement_is_taken_back() {
    let mut w = completed_on_v4(DataModel::Events);
    w.upgrade.spec.data_model.acknowledge = vec![IrreversibleStep::Cutover];
    w.dm_until(reason::DATA_MODEL_REACHED, 80);
    let cut_over = w.dm.writes.len();
    w.upgrade.spec.data_model.acknowledge.push(IrreversibleStep::Cleanup);
    let first = loop {
        let d = w.dm_step();
        if w.dm.writes.len() > cut_over {
            break d;
        }
        assert!(w.history.len() < 10_000, "no drop flag written");
    };
    let record = first.actions.iter().position(|a| matches!(a, Action::RecordFacts));
    let flags = first.actions.iter().position(|a| matches!(a, Action::SetFlags(_)));
    assert!(
        matches!((record, flags), (Some(r), Some(f)) if r < f),
        "the start before the flags: {:?}",
        first.actions
    );
    assert!(
        first
            .status
            .data_model
            .as_ref()
            .is_some_and(|d| d.cleanup_started_at.is_some())
    );
    assert_eq!(w.dm.writes.len(), cut_over + 1, "web first");
    w.upgrade.spec.data_model.acknowledge = vec![IrreversibleStep::Cutover];
    for _ in 0..10 {
        w.dm_step();
    }
    assert_eq!(w.dm.writes.len(), cut_over + 2, "the worker follows web");
    assert_eq!(w.dm_status().stage, DataModelStage::CleanedUp);
}

#[test]
fn the_cutover_is_held_on_a_count_mismatch_then_goes_on_once_the_rows_are_there() {
    let mut w = completed_on_v4(DataModel::Events);
    w.upgrade.spec.data_model.acknowledge = vec![IrreversibleStep::Cutover];
    w.dm.counts[0].child_spans = 8_990;
    let d = w.dm_until(reason::COUNTS_MISMATCH, 80);
    let message = data_model_message(&d);
    assert!(
        message.contains("proj-a 2026-11 observations: 9000 old, 8990"),
        "{message}"
    );
    assert_eq!(w.dm_status().count_mismatches.len(), 1);
    assert!(w.dm.writes.iter().all(|(_, m, _)| m != "events_only"));
    // Counted up to the backfill's start, a fixed instant.
    let s = w.dm_status();
    assert_eq!(s.counts_until, s.backfill_started_at);
    w.dm.counts[0].child_spans = 9_000;
    w.dm_until(reason::DATA_MODEL_REACHED, 30);
    assert!(w.dm_status().count_mismatches.is_empty());
}

#[test]
fn producers_events_only_would_reject_hold_the_cutover_and_are_listed() {
    let mut w = completed_on_v4(DataModel::Events);
    w.upgrade.spec.data_model.acknowledge = vec![IrreversibleStep::Cutover];
    w.dm.producers = vec![
        ProducerRow {
            project: "proj-a".into(),
            source: "ingestion-api-dual-write".into(),
            sdk_name: "python".into(),
            sdk_version: "2.60.3".into(),
            public_key: "pk-lf-1234".into(),
            events: 420,
        },
        ProducerRow {
            project: "proj-a".into(),
            source: "otel".into(),
            sdk_name: "python".into(),
            sdk_version: "4.7.1".into(),
            public_key: "pk-lf-1234".into(),
            events: 9_000,
        },
    ];
    let d = w.dm_until(reason::INCOMPATIBLE_PRODUCERS, 80);
    // First the window itself, then the producers seen in it.
    let d = if data_model_message(&d).contains("watching") {
        w.dm_until(reason::INCOMPATIBLE_PRODUCERS, 1);
        let mut last = d;
        for _ in 0..20 {
            last = w.dm_step();
            if data_model_message(&last).contains("would be rejected") {
                break;
            }
        }
        last
    } else {
        d
    };
    let message = data_model_message(&d);
    assert!(
        message.contains("1 producers") && message.contains("2.60.3") && message.contains("pk-lf-1234"),
        "{message}"
    );
    let listed = w.dm_status().producers;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].remedy.contains("Python SDK to v4"));
    assert!(w.dm.writes.iter().all(|(_, m, _)| m != "events_only"));
    w.dm.producers.remove(0);
    w.dm_until(reason::DATA_MODEL_REACHED, 30);
}

#[test]
fn a_frozen_cursor_is_reported_with_the_hours_before_the_ttl_and_dual_turns_degraded() {
    let mut w = completed_on_v4(DataModel::Dual);
    let d = w.dm_until(reason::DATA_MODEL_REACHED, 20);
    assert_eq!(d.phase, Phase::Completed);
    // The job keeps starting (fresh heartbeat) but its cursor stops: langfuse/langfuse#17452.
    w.dm.propagating = false;
    let frozen = w.dm.keys.cursor.clone();
    let mut last = None;
    for _ in 0..120 {
        w.dm.keys.heartbeat_ms = Some(t(w.now).as_millisecond());
        let name = format!("p{:08}", w.now);
        w.dm.partitions.push(StagingPartition {
            name,
            start: t(w.now - 60),
        });
        let d = w.step();
        if d.conditions.iter().any(|k| k.reason == reason::PROPAGATION_LAGGING) {
            last = Some(d);
            break;
        }
    }
    let d = last.expect("the lag was never reported");
    assert_eq!(d.phase, Phase::Degraded);
    let message = data_model_message(&d);
    assert!(message.contains("expire by TTL in 47h"), "{message}");
    let p = w.dm_status().propagation.unwrap();
    assert_eq!(p.cursor, frozen);
    assert!(p.backlog > 0 && p.hours_before_loss == Some(47));
}

#[test]
fn a_failed_m3_chunk_is_reset_as_its_script_says_twice_then_handed_to_a_person() {
    let mut w = completed_on_v4(DataModel::Events);
    w.dm.m3_failures = 3;
    w.dm.m3_reason = "part all_3_3_0 was merged away; re-run with state.chunksLoaded = false".into();
    let d = w.dm_until(reason::BACKFILL_ROW_FAILED, 80);
    assert_eq!(d.phase, Phase::Blocked);
    let name = "20260701_v4_step_3_backfill_events_full_from_observations".to_string();
    assert_eq!(w.dm.resets, [(name.clone(), true), (name, true)]);
    let m3 = w.dm_status().rows.into_iter().find(|r| r.step == "M3").unwrap();
    assert_eq!((m3.phase.as_str(), m3.resets), ("failed", 2));
    // Each reset restarted the worker (the annotation counts them).
    let restarts = w
        .worker
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[crate::resources::deployments::DATA_MODEL_RESTART_ANNOTATION]
        .clone();
    assert_eq!(restarts, "2");
    // Fixed by a person (the row cleared): the road goes on.
    w.dm.m3_failures = 0;
    let row = w.dm.rows.iter_mut().find(|r| r.step() == Some(3)).unwrap();
    (row.failed_at, row.failed_reason) = (None, None);
    w.worker = crate::testing::rolled_out(w.worker.clone());
    w.dm.worker_started(true, false, w.now);
    w.dm_until(reason::AWAITING_ACKNOWLEDGEMENT, 40);
}

#[test]
fn backing_out_from_dual_says_what_it_leaves_and_after_the_cutover_only_forward() {
    let mut w = completed_on_v4(DataModel::Dual);
    w.dm_until(reason::DATA_MODEL_REACHED, 20);
    w.upgrade.spec.target.data_model = Some(DataModel::Legacy);
    let d = w.dm_until(reason::BACKED_OUT, 10);
    let message = data_model_message(&d);
    assert!(
        message.contains("nothing ingested is lost") && message.contains("48-hour TTL"),
        "{message}"
    );
    for dep in [&w.web, &w.worker] {
        assert_eq!(env_of(dep, WRITE_MODE).as_deref(), Some("legacy"));
    }
    let s = w.dm_status();
    assert!(s.backed_out_at.is_some() && s.dual_since.is_none());
    assert_eq!(s.stage, DataModelStage::Legacy);
    w.dm_step();
    assert_eq!(w.run_until(Phase::Completed, 3).phase, Phase::Completed);

    // Forward to the end, then asked back: refused, nothing written.
    let mut w = completed_on_v4(DataModel::Events);
    w.upgrade.spec.data_model.acknowledge = vec![IrreversibleStep::Cutover];
    w.dm_until(reason::DATA_MODEL_REACHED, 80);
    let writes = w.dm.writes.len();
    w.upgrade.spec.target.data_model = Some(DataModel::Dual);
    let d = w.dm_until(reason::FORWARD_ONLY, 3);
    assert_eq!(d.phase, Phase::Blocked);
    assert_eq!(w.dm.writes.len(), writes);
}

#[test]
fn missing_system_grants_block_the_dual_write_before_anything_is_written() {
    let mut w = completed_on_v4(DataModel::Dual);
    w.v4.denied_tables = vec!["parts".into(), "tables".into()];
    let d = w.dm_until(reason::DATA_MODEL_BLOCKED, 10);
    assert_eq!(d.phase, Phase::Blocked);
    assert!(data_model_message(&d).contains("GRANT SELECT ON system.parts TO <user>"));
    assert!(w.dm.writes.is_empty());
    w.v4.denied_tables.clear();
    w.dm_until(reason::DATA_MODEL_REACHED, 20);
}

#[test]
fn a_redis_that_evicts_blocks_the_dual_write_of_an_installation_never_hopped() {
    let mut w = completed_on_v4(DataModel::Dual);
    w.redis_policy = "allkeys-lru".into();
    let d = w.dm_until(reason::DATA_MODEL_BLOCKED, 10);
    assert!(
        data_model_message(&d).contains("maxmemory-policy noeviction"),
        "{}",
        data_model_message(&d)
    );
    assert!(w.dm.writes.is_empty());
    w.redis_policy = "noeviction".into();
    w.dm_until(reason::DATA_MODEL_REACHED, 20);
}

#[test]
fn the_retention_window_waits_instead_of_the_backfill_and_never_turns_it_on() {
    let mut w = completed_on_v4(DataModel::Events);
    w.upgrade.spec.data_model.historic_data = HistoricData::RetentionWindow;
    w.upgrade.spec.data_model.retention_window = Some("5m".into());
    w.upgrade.spec.data_model.acknowledge = vec![IrreversibleStep::Cutover];
    w.dm.counts[0].root_spans = 0;
    let d = w.dm_until(reason::RETENTION_WINDOW, 20);
    assert!(data_model_message(&d).contains("of 5m"));
    w.dm_until(reason::DATA_MODEL_REACHED, 80);
    assert!(w.dm.writes.iter().all(|(_, _, b)| b == "false"), "{:?}", w.dm.writes);
    assert!(w.dm.rows.iter().all(|r| !r.taken));
}

/// Writes the data-model road's `kubectl lfu status` fixtures (`make cli-fixtures`).
#[test]
#[ignore = "writes tests/cli/fixtures: run by make cli-fixtures"]
fn generate_cli_fixtures_data_model() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cli/fixtures");
    let save = |w: &Chart, name: &str| {
        let mut u = w.upgrade.clone();
        u.metadata.name = Some("to-events".into());
        u.metadata.namespace = Some("langfuse".into());
        u.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("lfu.test/now".into(), t(w.now).to_string());
        u.metadata.finalizers = None;
        std::fs::write(dir.join(format!("{name}.yaml")), serde_yaml::to_string(&u).unwrap()).unwrap();
    };
    let mut w = completed_on_v4(DataModel::Events);
    w.upgrade.spec.data_model.acknowledge = vec![IrreversibleStep::Cutover];
    w.dm.m3_failures = 1;
    w.dm.m3_reason = "1 chunks failed after 3 retries; clear failed_at and re-run with args.retryFailed".into();
    w.dm_until(reason::REMEDY_APPLIED, 80);
    save(&w, "data-model-backfill-reset");
    w.dm.producers = vec![ProducerRow {
        project: "proj-a".into(),
        source: "ingestion-api-dual-write".into(),
        sdk_name: "python".into(),
        sdk_version: "2.60.3".into(),
        public_key: "pk-lf-1234".into(),
        events: 420,
    }];
    for _ in 0..40 {
        let d = w.dm_step();
        if data_model_message(&d).contains("would be rejected") {
            break;
        }
    }
    save(&w, "data-model-producers");
}
