//! What each stage reads, requeues, late windows and start cursors, ClickHouse faults.

use super::order_of_facts::verified_status;
use super::*;

/// After v2, a hop under way reads its Postgres rows alone; ClickHouse and the server versions
/// are read for a hop's gates, before it starts. A v3 source reads ClickHouse throughout: its
/// rollback outlook depends on the schema height.
#[test]
fn a_hop_under_way_reads_clickhouse_only_when_its_rollback_depends_on_it() {
    let mut sp = spec();
    sp.target.final_version = Some("3.40.0".into());
    let mut status = verified_status();
    status.source_retired_at = Some(time(50));
    let stop = |started: Option<i64>, finished: Option<i64>| crate::api::RoadStop {
        from: "3.29.0".into(),
        version: "3.40.0".into(),
        mode: crate::api::StopMode::InPlace,
        state: crate::api::StopState::Current,
        required_because: None,
        gates: Vec::new(),
        irreversible: None,
        started_at: started.map(time),
        finished_at: finished.map(time),
        backup: None,
        copies: Vec::new(),
        catalog: None,
    };
    let needs_with = |source: Option<&str>, road: crate::api::RoadStop| {
        let mut st = status.clone();
        st.source_version = source.map(String::from);
        st.road = vec![road];
        needs(&upgrade(sp.clone(), st), t(60))
    };
    for (road, what) in [
        (stop(None, None), "before the hop"),
        (stop(Some(55), Some(58)), "after it"),
    ] {
        let n = needs_with(None, road);
        assert!(
            n.clickhouse.server && n.postgres.server_version && n.postgres.migrations,
            "{what}: {n:?}"
        );
    }
    let n = needs_with(None, stop(Some(55), None));
    assert!(!n.clickhouse.server && !n.postgres.server_version, "{n:?}");
    assert!(n.postgres.migrations, "the hop's rows are read: {n:?}");
    let n = needs_with(Some("3.29.0"), stop(Some(55), None));
    assert!(
        n.clickhouse.server && n.postgres.migrations,
        "a v3 source's outlook: {n:?}"
    );
    // What v4 needs beyond versions (eight ClickHouse queries, Redis) only before a v4 hop.
    let n = needs_with(None, stop(None, None));
    assert!(!n.clickhouse.v4_readiness && !n.redis, "a v3 hop: {n:?}");
    let v4 = crate::api::RoadStop {
        from: "3.40.0".into(),
        version: "4.16.0".into(),
        ..stop(None, None)
    };
    let n = needs_with(None, v4.clone());
    assert!(n.clickhouse.v4_readiness && n.redis, "before the v4 hop: {n:?}");
    let n = needs_with(
        None,
        crate::api::RoadStop {
            started_at: Some(time(55)),
            ..v4
        },
    );
    assert!(!n.clickhouse.v4_readiness, "the v4 hop under way: {n:?}");
}

#[test]
fn needs_follow_the_facts() {
    let mut u = upgrade(spec(), Default::default());
    let n = needs(&u, t(0));
    assert!(n.secrets && n.hpas && n.postgres.migrations && n.clickhouse.server && n.clickhouse.objects);
    u.status = Some(LangfuseUpgradeStatus {
        provisioning_started_at: Some(time(0)),
        ..Default::default()
    });
    assert_eq!(needs(&u, t(0)), Needs::default(), "provisioning needs no database");
    u.status.as_mut().unwrap().traffic_shifted_at = Some(time(1));
    assert!(needs(&u, t(0)).postgres.newest_write);
    u.status.as_mut().unwrap().completed_at = Some(time(2));
    assert_eq!(needs(&u, t(0)), Needs::default());
}

#[test]
fn requeue_is_never_a_busy_loop_when_waiting() {
    let mut w = World::new(spec());
    w.web_broken = true;
    let d = w.step();
    assert!(d.requeue >= Duration::from_secs(5));
}

#[test]
fn long_failure_reasons_are_clipped_to_their_first_line() {
    let long = format!("insert failed: schema mismatch\n{}", "- column\n".repeat(500));
    assert_eq!(remedies::short_reason(Some(&long)), "insert failed: schema mismatch");
    let wide = "x".repeat(1000);
    assert_eq!(remedies::short_reason(Some(&wide)).len(), 303);
    assert_eq!(remedies::short_reason(None), "no reason recorded");
}

#[test]
fn late_window_uses_each_copys_start_as_seen_while_running() {
    use crate::api::MigrationStatus;
    use crate::databases::LateWindow;
    let mut s = LangfuseUpgradeStatus {
        migrations_enabled_at: Some(time(100)),
        ..Default::default()
    };
    let row = |name: &str, start: Option<i64>| MigrationStatus {
        name: name.into(),
        state: "running".into(),
        cursor: None,
        progress_percent: None,
        failed_reason: None,
        cursor_since: None,
        batch_size: None,
        start_cursor: start.map(time),
        estimated_rows: None,
    };
    s.migrations = vec![
        row("20241024_1730_migrate_traces_from_pg_to_ch", Some(130)),
        row("20241024_1737_migrate_observations_from_pg_to_ch", None),
        row("20241024_1738_migrate_scores_from_pg_to_ch", Some(190)),
    ];
    assert_eq!(
        verify::late_window(&s),
        Some(LateWindow {
            traces: t(130),
            observations: t(100),
            scores: t(190)
        })
    );
    // First seen only after a batch (the cursor already at older rows): the enable time bounds
    // it, so rows the copy took are not mistaken for late ones.
    s.migrations[0].start_cursor = Some(time(-3600));
    assert_eq!(verify::late_window(&s).unwrap().traces, t(100));
    s.late_writes_covered_until = Some(time(500));
    assert_eq!(verify::late_window(&s), Some(LateWindow::uniform(t(500))));
    assert_eq!(verify::late_window(&LangfuseUpgradeStatus::default()), None);
}

#[test]
fn the_start_cursor_is_the_highest_cursor_seen_while_running() {
    let mut w = World::new(spec());
    w.run_until(Phase::Migrating, 200);
    for _ in 0..6 {
        w.step();
    }
    let s = w.status();
    let traces = s.migrations.iter().find(|m| m.name.contains("traces")).unwrap();
    let start = traces.start_cursor.clone().expect("seen while running");
    // The runner model moves the cursor; the recorded start never goes down.
    assert!(traces.cursor.is_some());
    assert!(start.0 >= t(w.now - 2000));
}

#[test]
fn a_missing_clickhouse_table_keeps_v2_with_the_reason() {
    let mut w = World::new(spec());
    w.look_ahead = false;
    w.run_until(Phase::Verifying, 400);
    let mut obs = w.observe();
    if let Some(ch) = obs.clickhouse.answered_mut() {
        ch.missing_tables = vec![crate::migrations::Table::Scores];
        ch.counts = None;
    }
    let d = plan(&w.upgrade, &obs, t(w.now));
    assert_eq!(d.phase, Phase::Degraded);
    assert!(!d.actions.contains(&Action::ScaleSource(0)));
    let verified = d.conditions.iter().find(|x| x.type_ == c::VERIFIED).unwrap();
    assert!(verified.message.contains("no scores table"), "{}", verified.message);
}

#[test]
fn a_damaged_clickhouse_schema_blocks_preflight() {
    let w = World::new(spec());
    let mut obs = w.observe();
    if let Some(ch) = obs.clickhouse.answered_mut() {
        ch.missing_tables = vec![crate::migrations::Table::Traces];
    }
    let d = plan(&w.upgrade, &obs, t(0));
    assert_eq!(d.phase, Phase::Blocked);
    let line = d.status.checks.iter().find(|l| l.name == "clickhouse").unwrap();
    assert!(line.message.contains("traces is missing"), "{}", line.message);
}

#[test]
fn a_selector_reverted_after_completion_is_reported_not_fought() {
    let mut w = World::new(spec());
    w.run_until(Phase::Completed, 400);
    // A sync puts v2's selector back; v2 is at 0 replicas, so nothing serves.
    w.cluster.service.as_mut().unwrap().spec.as_mut().unwrap().selector = Some(chart_selector());
    w.settle();
    let d = w.step();
    assert_eq!(d.phase, Phase::Completed);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(condition(&w, c::READY).reason, "SelectorReverted");
    assert_eq!(condition(&w, c::READY).status, "False");
    assert!(condition(&w, c::TRAFFIC_SHIFTED).message.contains("--type json"));
    // Restored (or moved on to a selector that reaches the v3 web pods): Ready again.
    w.cluster.service.as_mut().unwrap().spec.as_mut().unwrap().selector = Some(v3_selector(UPGRADE, Role::Web));
    w.settle();
    w.step();
    assert_eq!(condition(&w, c::READY).status, "True");
}

#[test]
fn status_lost_after_the_switch_makes_a_rollback_ask_for_the_old_selector() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    // The whole status is gone (not just the phase): the old selector went with it.
    w.upgrade.status = None;
    w.upgrade.spec.abort = true;
    let d = w.run_until(Phase::Failed, 40);
    let ready = d.conditions.iter().find(|x| x.type_ == c::READY).unwrap();
    assert!(ready.message.contains("restore it by hand"), "{}", ready.message);
    assert!(
        d.actions.iter().all(|a| !matches!(a, Action::ApplySelector { .. })),
        "guessed a selector"
    );
    assert_eq!(
        selector_of(w.cluster.service.as_ref().unwrap()),
        v3_selector(UPGRADE, Role::Web),
        "traffic left on v3"
    );
}
