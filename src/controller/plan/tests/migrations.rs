//! Background migrations: failures, remedies, the same-created_at trap, a killed worker.

use super::*;

pub(super) fn remedies_applied(w: &World) -> Vec<crate::databases::Remedy> {
    w.history
        .iter()
        .flat_map(|d| d.actions.iter())
        .filter_map(|a| {
            if let Action::Remedy(r) = a {
                Some(r.clone())
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn napi_failure_lowers_the_batch_and_resumes() {
    use crate::databases::Remedy;
    let mut w = World::new(spec());
    w.runner.napi = Some((2, 2500));
    w.run_until(Phase::Completed, 600);
    let name = "20241024_1737_migrate_observations_from_pg_to_ch".to_string();
    assert_eq!(
        remedies_applied(&w),
        vec![
            Remedy::SetBatchSize {
                name: name.clone(),
                size: 2500
            },
            Remedy::ClearFailure { name }
        ]
    );
    assert!(
        w.runner.starts >= 2,
        "the worker must be restarted to pick the row up again"
    );
}

#[test]
fn napi_failure_halves_down_to_the_floor_then_asks_a_person() {
    let mut w = World::new(spec());
    w.runner.napi = Some((1, 100));
    w.upgrade.spec.migrations.min_batch_size = 600;
    let d = w.run_until(Phase::Failed, 600);
    let sizes: Vec<i64> = remedies_applied(&w)
        .into_iter()
        .filter_map(|r| {
            if let crate::databases::Remedy::SetBatchSize { size, .. } = r {
                Some(size)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(sizes, vec![2500, 1250, 625]);
    let ready = d.conditions.iter().find(|x| x.type_ == c::READY).unwrap();
    assert!(
        ready.message.contains("napi string") && ready.message.contains("floor"),
        "{}",
        ready.message
    );
    assert_eq!(condition(&w, c::STALLED).status, "True");
}

#[test]
fn another_failure_is_resumed_once_then_reported() {
    let mut w = World::new(spec());
    w.runner.flaky = Some((3, 1));
    w.run_until(Phase::Completed, 600);
    assert_eq!(
        remedies_applied(&w),
        vec![crate::databases::Remedy::ClearFailure {
            name: "20241024_1738_migrate_scores_from_pg_to_ch".into()
        }]
    );

    let mut w = World::new(spec());
    w.runner.flaky = Some((3, 2));
    let d = w.run_until(Phase::Failed, 600);
    let ready = d.conditions.iter().find(|x| x.type_ == c::READY).unwrap();
    assert!(
        ready.message.contains("Connection terminated unexpectedly") && ready.message.contains("clear failed_at"),
        "{}",
        ready.message
    );
}

#[test]
fn remediation_off_reports_the_failure_and_the_manual_fix() {
    let mut w = World::new(spec());
    w.upgrade.spec.migrations.remediation = false;
    w.runner.napi = Some((1, 2500));
    let d = w.run_until(Phase::Failed, 600);
    assert!(remedies_applied(&w).is_empty());
    let ready = d.conditions.iter().find(|x| x.type_ == c::READY).unwrap();
    assert!(
        ready.message.contains("napi string") && ready.message.contains("clear failed_at"),
        "{}",
        ready.message
    );
}

#[test]
fn same_created_at_trap_found_by_preflight_is_fixed_before_the_start() {
    let mut w = World::new(spec());
    w.scan_groups = vec![(crate::migrations::Table::Traces, 12_000)];
    w.runner.trap = Some((1, 12_000));
    w.run_until(Phase::Completed, 600);
    let name = "20241024_1730_migrate_traces_from_pg_to_ch".to_string();
    assert_eq!(
        remedies_applied(&w),
        vec![crate::databases::Remedy::SetBatchSize { name, size: 12_001 }]
    );
    let line = w
        .status()
        .checks
        .into_iter()
        .find(|l| l.name == "stuckCursorScan")
        .unwrap();
    assert_eq!(line.result, CheckResult::Warn);
    assert!(line.message.contains("12001"));
}

#[test]
fn same_created_at_trap_at_runtime_is_detected_after_stuck_after_and_remedied() {
    let mut w = World::new(spec());
    w.runner.trap = Some((1, 12_000));
    w.run_until(Phase::Completed, 900);
    let sizes: Vec<i64> = remedies_applied(&w)
        .into_iter()
        .filter_map(|r| {
            if let crate::databases::Remedy::SetBatchSize { size, .. } = r {
                Some(size)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(sizes, vec![10_000, 20_000], "doubling until the group fits");
    let stuck_at = w
        .history
        .iter()
        .position(|d| d.actions.iter().any(|a| matches!(a, Action::Remedy(_))))
        .unwrap();
    let enabled = w.history.iter().position(|d| d.phase == Phase::Migrating).unwrap();
    let waited: u64 = w.history[enabled..stuck_at]
        .iter()
        .map(|d| d.requeue.as_secs().clamp(1, 60))
        .sum();
    assert!(waited >= 600, "remedied after {waited}s, before stuckAfter (10m)");
}

#[test]
fn a_stuck_copy_with_a_zero_batch_size_in_its_row_is_raised_from_the_default() {
    let mut w = World::new(spec());
    w.runner.trap = Some((1, 12_000));
    w.runner.rows[1].batch = Some(0);
    w.run_until(Phase::Completed, 900);
    let sizes: Vec<i64> = remedies_applied(&w)
        .into_iter()
        .filter_map(|r| match r {
            crate::databases::Remedy::SetBatchSize { size, .. } => Some(size),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, vec![10_000, 20_000], "doubled from the default, not from 0");
}

#[test]
fn a_killed_worker_is_restarted_after_its_lock_goes_stale() {
    let mut w = World::new(spec());
    w.run_until(Phase::Migrating, 200);
    w.step();
    w.step();
    w.runner.killed = true;
    let starts = w.runner.starts;
    w.run_until(Phase::Completed, 600);
    assert!(w.runner.starts > starts, "never restarted");
    assert_eq!(w.status().remedies.get("idleRestart"), Some(&1));
}
