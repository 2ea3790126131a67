//! Pause, the drain and its cut-off, retirement timing, verification: counts, late writes, the recent window.

use super::migrations::remedies_applied;
use super::*;
use crate::controller::observed::Reading;

#[test]
fn paused_makes_no_writes() {
    let mut w = World::new(spec());
    w.run_until(Phase::Provisioning, 5);
    w.upgrade.spec.paused = true;
    for _ in 0..3 {
        let d = w.step();
        assert_eq!(d.phase, Phase::Paused);
        assert!(d.actions.is_empty());
    }
    assert_eq!(condition(&w, c::STALLED).status, "False");
    w.upgrade.spec.paused = false;
    w.run_until(Phase::Completed, 400);
}

#[test]
fn draining_waits_for_v2_to_stop_writing() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    // v2 keeps writing: the newest row moves every step.
    for _ in 0..20 {
        w.newest_write = Some(w.now);
        assert_eq!(w.step().phase, Phase::Draining);
    }
    assert!(w.status().cutoff.is_none());
    let quiet_from = w.now;
    w.run_until(Phase::Migrating, 200);
    assert!(w.now - quiet_from >= 120, "drainPeriod 2m not honoured");
    assert!(w.status().cutoff.is_some());
}

/// The drain counts from the newest row to the read's own clock in milliseconds, not from the
/// row's second rounded up: it ends within one poll of drainPeriod, never before it.
#[test]
fn the_drain_ends_to_the_millisecond_after_the_newest_row() {
    let mut s = spec();
    s.strategy.drain_period = "5s".into();
    let mut w = World::new(s);
    w.run_until(Phase::Draining, 40);
    let row = s_to_ms(w.now) + 300;
    let at = |ms: i64| Timestamp::from_millisecond(ms).unwrap();
    let read = |w: &World, read_ms: i64| {
        let mut obs = w.cluster.clone();
        obs.postgres = Reading::Answered(PostgresFacts {
            newest_write: Some(at(row)),
            newest_write_read_at: Some(at(read_ms)),
            ..Default::default()
        });
        let now = crate::precision::bound_after(at(read_ms));
        (plan(&w.upgrade, &obs, now), now)
    };
    // First sight of the row, in its own second: the quiet period starts at the row.
    let (d, now) = read(&w, row + 40);
    w.upgrade.status = Some(api_round_trip(&next_status(&w.upgrade, &d, now)));
    assert_eq!(d.phase, Phase::Draining);
    // 4.9 s after the row: not yet, and the next look is due when the 5 s are up.
    let (d, _) = read(&w, row + 4_900);
    assert_eq!(d.phase, Phase::Draining);
    assert!(d.requeue <= std::time::Duration::from_millis(100), "{:?}", d.requeue);
    // 5.01 s after the row (the status's whole seconds would still say 4 s): over.
    let (d, now) = read(&w, row + 5_010);
    let status = next_status(&w.upgrade, &d, now);
    assert!(status.cutoff.is_some(), "{:?}", d.phase);
}

/// `retireSourceAfter` counts from the verification's reads to this reconcile's reads, both to
/// the millisecond: never early (whole seconds read before the observation ended it up to a
/// second early), and due within one poll.
#[test]
fn retire_source_after_ends_to_the_millisecond_after_the_verification() {
    let mut s = spec();
    s.strategy.retire_source_after = "5s".into();
    let mut w = World::new(s);
    w.look_ahead = false;
    w.run_until(Phase::Verifying, 400);
    let at = |ms: i64| Timestamp::from_millisecond(ms).unwrap();
    // The counts come back 900 ms into a second (the plan's `now` is that second, read before).
    let verified = s_to_ms(w.now) + 900;
    let read = |w: &World, read_ms: i64| {
        let mut obs = w.observe();
        obs.read_at = Some(at(read_ms) + jiff::SignedDuration::from_micros(250));
        let now = crate::precision::bound_after(at(read_ms - 30));
        (plan(&w.upgrade, &obs, now), now)
    };
    let (d, now) = read(&w, verified);
    let status = api_round_trip(&next_status(&w.upgrade, &d, now));
    assert_eq!(
        status.verified_at.as_ref().map(|t| t.0),
        Some(at(verified)),
        "{:?}",
        d.phase
    );
    w.upgrade.status = Some(status);
    let scales = |d: &Decision| d.actions.contains(&Action::ScaleSource(0));
    // 4.15 s later the whole seconds would say 5 (from X.000 to X+5.000): not yet.
    let (d, _) = read(&w, verified + 4_150);
    assert!(!scales(&d), "retired 4.15 s after verification: {:?}", d.actions);
    assert_eq!(d.phase, Phase::RetiringSource);
    let (d, _) = read(&w, verified + 4_999);
    assert!(!scales(&d), "retired 4.999 s after verification");
    assert!(d.requeue <= std::time::Duration::from_millis(1), "{:?}", d.requeue);
    let (d, _) = read(&w, verified + 5_000);
    assert!(
        scales(&d),
        "not retired 5 s after verification: {:?} {:?}",
        d.phase,
        d.actions
    );
}

#[test]
fn postgres_down_while_draining_holds_with_a_reason() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    w.postgres_down = true;
    let d = w.step();
    assert_eq!(d.phase, Phase::Draining);
    assert!(d.actions.is_empty());
    assert_eq!(condition(&w, c::READY).reason, "PostgresUnavailable");
}

#[test]
fn verification_mismatch_keeps_v2() {
    let mut w = World::new(spec());
    w.ch.observations -= 1;
    for _ in 0..400 {
        let d = w.step();
        assert!(!d.actions.contains(&Action::ScaleSource(0)));
        if d.phase == Phase::Degraded {
            assert_eq!(condition(&w, c::VERIFIED).reason, "CountsMismatch");
            assert!(condition(&w, c::VERIFIED).message.contains("observations missing 1"));
            assert_eq!(
                w.cluster.source.as_ref().unwrap().spec.as_ref().unwrap().replicas,
                Some(2)
            );
            return;
        }
    }
    panic!("never degraded: {:?}", phases(&w));
}

/// Safety review #1 (interleaving B): a replica whose view of the status lags sees web already
/// moved on by the replica that leads now. It must not put the older release back.
#[test]
fn a_view_older_than_the_release_running_never_writes_the_older_release() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    for d in [w.cluster.web.as_mut(), w.cluster.worker.as_mut()]
        .into_iter()
        .flatten()
    {
        let c = &mut d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0];
        let image = c.image.clone().unwrap().replace(":3.29.0", ":3.30.0");
        c.image = Some(image);
    }
    let d = plan(&w.upgrade, &w.observe(), t(w.now));
    assert!(
        !d.actions.iter().any(|a| matches!(a, Action::ApplyDeployment(_))),
        "{:?}",
        d.actions
    );
    // The drain goes on as it would: only the older write is left out.
    assert_eq!(d.phase, Phase::Draining);
}

/// Safety review #6: the decisions that retire v2, turn the copies on or create v3 are made
/// again on the API's view of the cluster (a watch cache that resumed may not have replayed a
/// revert yet); the switch, reversible and timed, stays on the caches.
#[test]
fn irreversible_decisions_are_the_ones_the_reconcile_reads_the_api_for() {
    let mut w = World::new(spec());
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..600 {
        let before = w.upgrade.clone();
        let d = w.step();
        let kind = if d.actions.contains(&Action::ScaleSource(0)) {
            "retire v2"
        } else if d.actions.iter().any(|a| matches!(a, Action::ApplySelector { .. })) {
            "switch"
        } else if d
            .actions
            .iter()
            .any(|a| matches!(a, Action::ApplyDeployment(x) if migrations_enabled(x)))
        {
            "copies on"
        } else if before
            .status
            .as_ref()
            .is_none_or(|s| s.provisioning_started_at.is_none())
            && d.actions.iter().any(|a| matches!(a, Action::ApplyDeployment(_)))
        {
            "create v3"
        } else {
            continue;
        };
        seen.insert(kind, d.irreversible(&before));
        if d.phase == Phase::Completed {
            break;
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            ("copies on", true),
            ("create v3", true),
            ("retire v2", true),
            ("switch", false)
        ]
    );
}

#[test]
fn postgres_down_while_draining_restarts_the_quiet_period() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    // v2's last row well over a drain period before the outage ends: only a read says quiet.
    w.newest_write = Some(w.now - 60);
    w.postgres_down = true;
    let down = w.now;
    while w.now < down + 10 {
        assert_eq!(w.step().phase, Phase::Draining);
    }
    assert!(
        w.status().drain_quiet_since.is_none(),
        "the unread window counted as quiet"
    );
    w.postgres_down = false;
    let back = w.now;
    let d = w.run_until(Phase::Migrating, 200);
    let cutoff = w.status().cutoff.unwrap().0.as_millisecond();
    // The drain period (3 s in `spec()`) counted from the first read that answered.
    let after = cutoff - s_to_ms(back);
    assert!(after >= 3_000, "cut-off only {after} ms after Postgres answered");
    assert_eq!(d.phase, Phase::Migrating);
}

/// A v2 write held across an outage lands behind the copy's cursor: Postgres has it up to the
/// cut-off, ClickHouse does not, and it lies in the recent window, so that window is re-copied.
#[test]
fn rows_that_landed_behind_the_cursor_are_recopied_then_verified() {
    let mut w = World::new(spec());
    w.pg.traces += 1;
    w.pg_recent.traces += 1;
    w.pg.observations += 4;
    w.pg_recent.observations += 4;
    w.run_until(Phase::Completed, 600);
    let reruns: Vec<(String, i64)> = remedies_applied(&w)
        .into_iter()
        .filter_map(|r| match r {
            crate::databases::Remedy::RerunWindow {
                name,
                max_rows,
                max_date,
            } => {
                assert_eq!(Some(Time(max_date)), w.status().cutoff, "bounded by the cut-off");
                Some((name, max_rows))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        reruns,
        [
            (
                "20241024_1730_migrate_traces_from_pg_to_ch".to_string(),
                counts(50).traces + 1
            ),
            (
                "20241024_1737_migrate_observations_from_pg_to_ch".to_string(),
                counts(50).observations + 4
            ),
        ]
    );
    assert!(
        w.status().late_writes_covered_until.is_none(),
        "the counts stay bounded by the cut-off"
    );
    assert!(w.status().verification.iter().all(|v| v.verdict == "Match"));
}

/// Missing rows older than the recent window are not a late arrival: v2 is kept, as before.
#[test]
fn rows_missing_outside_the_recent_window_keep_v2() {
    let mut w = World::new(spec());
    w.pg.scores += 2;
    w.pg_recent.scores += 1;
    let d = w.run_until(Phase::Degraded, 600);
    assert!(!d.actions.contains(&Action::ScaleSource(0)));
    assert!(condition(&w, c::VERIFIED).message.contains("scores missing 2"));
    assert!(remedies_applied(&w).is_empty(), "{:?}", remedies_applied(&w));
}

#[test]
fn late_writes_are_recopied_exactly_then_verified() {
    let mut w = World::new(spec());
    w.late_writes.traces = 7;
    w.run_until(Phase::Completed, 600);
    let reruns: Vec<&Action> = w
        .history
        .iter()
        .flat_map(|d| d.actions.iter())
        .filter(|a| matches!(a, Action::Remedy(crate::databases::Remedy::RerunWindow { .. })))
        .collect();
    assert_eq!(reruns.len(), 1, "{reruns:?}");
    let Action::Remedy(crate::databases::Remedy::RerunWindow { name, max_rows, .. }) = reruns[0] else {
        unreachable!()
    };
    assert_eq!(
        (name.as_str(), *max_rows),
        ("20241024_1730_migrate_traces_from_pg_to_ch", 7)
    );
    // Bounded above by the instant the late rows were counted, never beyond it: rows arriving
    // during the re-copy must not push counted rows out of the window.
    let Action::Remedy(crate::databases::Remedy::RerunWindow { max_date, .. }) = reruns[0] else {
        unreachable!()
    };
    assert_eq!(w.status().late_writes_covered_until, Some(Time(*max_date)));
    // v2 was retired only after the re-copy finished and verification passed again.
    let retire = w
        .history
        .iter()
        .position(|d| d.actions.contains(&Action::ScaleSource(0)))
        .unwrap();
    let rerun = w
        .history
        .iter()
        .position(|d| {
            d.actions
                .iter()
                .any(|a| matches!(a, Action::Remedy(crate::databases::Remedy::RerunWindow { .. })))
        })
        .unwrap();
    assert!(retire > rerun);
}

#[test]
fn v2_that_keeps_writing_after_the_cutoff_keeps_v2() {
    let mut w = World::new(spec());
    w.late_writes.scores = 3;
    w.v2_never_quiet = true;
    let d = w.run_until(Phase::Degraded, 600);
    assert!(!d.actions.contains(&Action::ScaleSource(0)));
    assert_eq!(condition(&w, c::VERIFIED).reason, "LateWrites");
    assert!(condition(&w, c::READY).message.contains("keeps writing"));
    assert_eq!(w.status().remedies.get("lateWriteRerun"), Some(&2), "bounded");
    assert!(w.history.iter().all(|d| !d.actions.contains(&Action::ScaleSource(0))));
}
