//! The road from v2: sidecars, env-gated rows, every stop to v4, the look ahead.

use super::*;

/// The official chart puts `extraContainers` before `langfuse` (a Cloud SQL proxy, say).
fn with_sidecar_first(mut d: Deployment) -> Deployment {
    let pod = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    pod.containers.insert(
        0,
        k8s_openapi::api::core::v1::Container {
            name: "cloud-sql-proxy".into(),
            image: Some("gcr.io/cloudsql-docker/gce-proxy:1.30.1".into()),
            ..Default::default()
        },
    );
    d
}

#[test]
fn a_sidecar_before_the_langfuse_container_is_not_read_as_v2() {
    let mut w = World::new(spec());
    w.cluster.source = w.cluster.source.take().map(with_sidecar_first);
    w.run_until(Phase::Completed, 400);
    let s = w.status();
    assert_eq!(s.source_version.as_deref(), Some("2.95.9"));
    assert!(
        s.checks
            .iter()
            .any(|c| c.name == "sourceVersion" && c.result == CheckResult::Pass)
    );
    // v3 pods keep the sidecar (v3 reaches the database through it, as v2 did), after Langfuse.
    let web = w.cluster.web.as_ref().unwrap();
    let names: Vec<&str> = web
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["langfuse-web", "cloud-sql-proxy"]);
}

#[test]
fn env_gated_rows_a_v3_worker_never_runs_are_not_waited_on() {
    let mut s = spec();
    s.target.final_version = Some("3.225.4".into());
    let mut w = World::new(s);
    // What 3.203.0+ registers: four backfill steps and a drop, each behind an env gate that is
    // off in a v3 worker.
    for (step, gate) in [
        (
            "20260701_v4_step_1_create_root_spans_from_traces",
            "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL",
        ),
        (
            "20260701_v4_step_2_rewrite_observations_to_pid_tid_sorting",
            "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL",
        ),
        (
            "20260701_v4_step_3_backfill_events_full_from_observations",
            "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL",
        ),
        (
            "20260701_v4_step_4_backfill_events_full_from_dataset_run_items",
            "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL",
        ),
        (
            "20260701_v4_step_5_drop_pid_tid_sorting_tables",
            "LANGFUSE_BACKGROUND_MIGRATION_V4_DROP_PID_TID_SORTING_TABLES",
        ),
    ] {
        let mut row = w.runner.rows[0].clone();
        row.name = step;
        row.table = None;
        row.gate = Some(gate);
        w.runner.rows.push(row);
    }
    w.run_until(Phase::Completed, 400);
    let s = w.status();
    let dormant = s.migrations.iter().filter(|m| m.state == "dormant").count();
    assert_eq!(dormant, 5, "{:?}", s.migrations);
    assert!(s.finalized_at.is_some());
    // Every row 3.225.4 registers that its worker runs (the v2 four and the six later ones).
    assert_eq!(s.migration_progress.as_deref(), Some("10/10 (100%)"));
}

/// v2 on its way to 4.16.0 (its backup acknowledged, ClickHouse new enough for v4), walked
/// to the end.
fn v2_to_v4_completed() -> World {
    let mut s = spec();
    s.target.final_version = Some("4.16.0".into());
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = World::new(s);
    w.ch_version = "25.12.1.1".into();
    w.run_until(Phase::Completed, 400);
    w
}

#[test]
fn v2_goes_to_v4_through_every_stop_of_the_road() {
    let w = v2_to_v4_completed();
    let st = w.status();
    let road: Vec<(&str, crate::api::StopState)> = st.road.iter().map(|r| (r.version.as_str(), r.state)).collect();
    use crate::api::StopState::Done;
    assert_eq!(road, [("3.29.0", Done), ("3.225.4", Done), ("4.16.0", Done)]);
    assert!(
        st.road
            .iter()
            .all(|r| r.started_at.is_some() && r.finished_at.is_some())
    );
    // Each in-place hop started only after the one before finished, and after v2 was retired.
    let retired = st.source_retired_at.clone().unwrap().0;
    assert!(st.road[1].started_at.as_ref().unwrap().0 >= retired);
    assert!(st.road[2].started_at.as_ref().unwrap().0 >= st.road[1].finished_at.as_ref().unwrap().0);
    assert_eq!(st.target_version.as_deref(), Some("4.16.0"));
    let worker = w.cluster.worker.as_ref().unwrap();
    let env = &worker.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].env;
    let write_mode = env
        .iter()
        .flatten()
        .find(|e| e.name == crate::resources::v4_env::WRITE_MODE);
    assert_eq!(write_mode.and_then(|e| e.value.as_deref()), Some("legacy"));
}

/// The reconcile that sees the last copy finished reads the counts too and records the
/// verification: no status write and no reconcile in between (the look ahead).
#[test]
fn the_reconcile_that_sees_the_copies_end_verifies_them() {
    let mut w = World::new(spec());
    w.run_until(Phase::RetiringSource, 400);
    let ended = w
        .history
        .iter()
        .find(|d| d.status.migrations_finished_at.is_some())
        .expect("the copies ended");
    assert!(ended.status.verified_at.is_some(), "verified in the same decision");
    assert!(ended.actions.is_empty(), "status only: {:?}", ended.actions);
    assert!(!phases(&w).contains(&Phase::Verifying), "{:?}", phases(&w));
}

/// v2 to v4: the reconcile that sees a hop's rows settle reads the next hop's gates too; the
/// v4 hop first counts the copies it drops the source of (PostgreSQL, then ClickHouse, each
/// read at once, no wait between), and the reconcile that has both counts starts it (its start
/// recorded before its first image).
#[test]
fn a_settled_hop_starts_the_next_as_soon_as_its_copies_are_counted() {
    let w = v2_to_v4_completed();
    let at = w
        .history
        .iter()
        .position(|d| d.status.road.get(1).is_some_and(|r| r.finished_at.is_some()))
        .expect("3.225.4 reached");
    let counting = &w.history[at..];
    let start = counting
        .iter()
        .position(|d| d.status.road[2].started_at.is_some())
        .expect("4.16.0 started");
    assert!(start <= 2, "two reads, at most: {start} decisions");
    for d in &counting[..start] {
        assert_eq!(
            d.requeue,
            std::time::Duration::ZERO,
            "counted at once: {:?}",
            d.conditions
        );
    }
    let settled = &counting[start];
    let copies = &settled.status.road[2].copies;
    assert_eq!(copies.len(), 4, "{copies:?}");
    assert!(
        copies.iter().all(|c| c.verdict.as_deref() == Some("Match")),
        "{copies:?}"
    );
    assert_eq!(
        settled.actions.first(),
        Some(&Action::RecordFacts),
        "{:?}",
        settled.actions
    );
    let web_on_4 = settled.actions.iter().any(|a| match a {
        Action::ApplyDeployment(d) => image_version_of(d).is_some_and(|v| v.to_string() == "4.16.0"),
        _ => false,
    });
    assert!(web_on_4, "{:?}", settled.actions.len());
}

/// Polled ten times a second, a copy whose cursor moves at every poll is shown once a second:
/// its cursor and percentage are held within the second they were shown in (no status write),
/// and shown again the next second.
#[test]
fn a_moving_cursor_is_shown_once_a_second() {
    let mut w = World::new(spec());
    w.run_until(Phase::Migrating, 400);
    let (at, shown) = (0..400)
        .find_map(|_| {
            let at = w.now;
            let d = w.step();
            d.status
                .migrations
                .iter()
                .find(|m| m.state == "running" && m.cursor_since.as_ref().map(|x| x.0) == Some(t(at)))
                .map(|m| (at, m.clone()))
        })
        .expect("a copy shown running as its cursor moved");
    // The same copy, still running, its cursor moved on since.
    let moved = |w: &World| {
        let mut obs = w.observe_with(&needs(&w.upgrade, t(at)));
        if let Some(pg) = obs.postgres.answered_mut() {
            let row = pg.migrations.iter_mut().find(|r| r.name == shown.name).unwrap();
            row.finished_at = None;
            row.locked_at = Some(t(at));
            // Milliseconds, as a real worker's cursor (a row's `created_at`) has them.
            row.cursor = Some(t(at - 2_000) + jiff::SignedDuration::from_millis(417));
        }
        obs
    };
    let stored = w.status();
    let d = plan(&w.upgrade, &moved(&w), t(at));
    let held = d.status.migrations.iter().find(|m| m.name == shown.name).unwrap();
    assert_eq!(
        (&held.cursor, held.progress_percent),
        (&shown.cursor, shown.progress_percent)
    );
    assert_eq!(
        d.status.migrations, stored.migrations,
        "nothing to write within the second"
    );
    assert_eq!(d.status.migration_progress, stored.migration_progress);
    let d = plan(&w.upgrade, &moved(&w), t(at + 1));
    let next = d.status.migrations.iter().find(|m| m.name == shown.name).unwrap();
    assert_ne!(next.cursor, shown.cursor, "shown again the next second");
    assert_eq!(next.cursor_since.as_ref().map(|x| x.0), Some(t(at + 1)));
}

/// A look ahead whose read failed (ClickHouse down as the copies end) leaves the decision it
/// would have replaced: the copies' end is recorded, and the verification waits for ClickHouse.
#[test]
fn a_look_ahead_that_cannot_read_keeps_the_facts_already_decided() {
    let mut w = World::new(spec());
    w.run_until(Phase::Migrating, 400);
    w.clickhouse_down = true;
    let ended = (0..400)
        .map(|_| w.step())
        .find(|d| d.status.migrations_finished_at.is_some())
        .expect("the copies end");
    assert_eq!(ended.phase, Phase::Verifying);
    assert!(ended.status.verified_at.is_none());
    assert!(w.status().migrations_finished_at.is_some(), "recorded");
    let d = w.step();
    assert_eq!(d.phase, Phase::Verifying);
    assert_eq!(condition(&w, c::READY).reason, "ClickHouseUnavailable");
    w.clickhouse_down = false;
    w.run_until(Phase::RetiringSource, 20);
    assert!(w.status().verified_at.is_some());
}

/// From Verifying, retirement adds only an API read (the HorizontalPodAutoscalers): no second
/// look, which would repeat the counts for a message.
#[test]
fn api_reads_alone_are_not_worth_a_second_look() {
    let mut w = World::new(spec());
    w.look_ahead = false;
    w.run_until(Phase::Verifying, 400);
    let n = needs(&w.upgrade, t(w.now));
    let d = plan(&w.upgrade, &w.observe_with(&n), t(w.now));
    assert!(d.status.verified_at.is_some(), "{:?}", d.phase);
    assert!(!n.hpas && needs_after(&w, &d).hpas, "retirement reads the HPAs");
    assert_eq!(look_ahead(&w.upgrade, &d, &n, t(w.now)), None);
}

fn needs_after(w: &World, d: &Decision) -> Needs {
    let mut u = w.upgrade.clone();
    u.status = Some(d.status.clone());
    needs(&u, t(w.now))
}

/// Only a decision that writes nothing but status looks again, only for reads it lacked, and
/// never for a read of the same kind with other bounds.
#[test]
fn the_look_ahead_widens_only_a_status_only_decision() {
    let mut w = World::new(spec());
    // The first decision that sees every row finished, as planned from its own reads.
    let (n, d) = (0..400)
        .find_map(|_| {
            let n = needs(&w.upgrade, t(w.now));
            let d = plan(&w.upgrade, &w.observe_with(&n), t(w.now));
            if d.status.migrations_finished_at.is_some() {
                return Some((n, d));
            }
            w.step();
            None
        })
        .expect("the copies end");
    assert!(d.status.verified_at.is_none() && n.postgres.counts_until.is_none());
    let wider = look_ahead(&w.upgrade, &d, &n, t(w.now)).expect("the counts are read at once");
    assert!(wider.postgres.migrations && wider.postgres.counts_until.is_some());
    assert!(wider.clickhouse.counts_until.is_some());
    // The same decision with a write in it: the world it read is about to change.
    let mut writes = d.clone();
    writes.actions.push(Action::ScaleSource(0));
    assert_eq!(look_ahead(&w.upgrade, &writes, &n, t(w.now)), None);
    // Nothing more to read.
    assert_eq!(look_ahead(&w.upgrade, &d, &wider, t(w.now)), None);
    // Counts read up to another instant than the next stage's: not merged.
    let mut other = wider.clone();
    other.postgres.counts_until = Some(t(1));
    assert_eq!(look_ahead(&w.upgrade, &d, &other, t(w.now)), None);
}

#[test]
fn v2_to_v4_is_blocked_at_preflight_when_clickhouse_is_too_old_for_v4() {
    let mut s = spec();
    s.target.final_version = Some("4.16.0".into());
    let mut w = World::new(s);
    let d = w.run_until(Phase::Blocked, 3);
    let infra = d.status.checks.iter().find(|c| c.name == "infrastructure").unwrap();
    assert!(infra.message.contains("older than 25.12"), "{}", infra.message);
    // The v4 hop's backup belongs right before it: a warning at preflight, not a failure.
    let backup = d.status.checks.iter().find(|c| c.name == "hopBackups").unwrap();
    assert_eq!(backup.result, CheckResult::Warn);
    assert!(backup.message.contains("runs to the stop before"), "{}", backup.message);
    assert!(
        w.cluster.web.is_none() && w.cluster.worker.is_none(),
        "nothing provisioned"
    );
}

#[test]
fn a_gated_row_a_worker_took_is_waited_on() {
    let row = MigrationRow {
        name: "20260701_v4_step_1_create_root_spans_from_traces".into(),
        finished_at: None,
        failed_at: None,
        failed_reason: None,
        locked_at: None,
        cursor: None,
        oldest_row: None,
        batch_size: None,
        env_gate: Some("LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL".into()),
        taken: false,
    };
    let closed = crate::migrations::OpenGates::default();
    assert_eq!(row.state_with(t(0), &closed), crate::migrations::RowState::Dormant);
    let open = crate::migrations::OpenGates::from_env(&[k8s_openapi::api::core::v1::EnvVar {
        name: "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL".into(),
        value: Some("true".into()),
        value_from: None,
    }]);
    assert_eq!(row.state_with(t(0), &open), crate::migrations::RowState::Queued);
    let taken = MigrationRow { taken: true, ..row };
    assert_eq!(taken.state_with(t(0), &closed), crate::migrations::RowState::Queued);
}

#[test]
fn final_version_rolls_web_before_the_worker() {
    let mut s = spec();
    s.target.final_version = Some("3.40.0".into());
    let mut w = World::new(s);
    w.run_until(Phase::Completed, 400);
    let applied = |d: &Decision, role: &str| {
        d.actions.iter().any(|a| {
            matches!(a, Action::ApplyDeployment(d)
                if d.metadata.name.as_deref() == Some(&format!("{V2_NAME}-{role}"))
                && d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
                    .image.as_deref().unwrap().ends_with(":3.40.0"))
        })
    };
    let web_at = w
        .history
        .iter()
        .position(|d| applied(d, "web"))
        .expect("web rolled to 3.40.0");
    let worker_at = w
        .history
        .iter()
        .position(|d| applied(d, "worker"))
        .expect("worker rolled to 3.40.0");
    assert!(web_at < worker_at, "worker rolled with web ({web_at} vs {worker_at})");
}
