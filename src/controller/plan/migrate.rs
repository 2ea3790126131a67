//! Migrating: the background migrations are turned on (a worker restart) and watched to the
//! end, with the documented remedies (`remedies.rs`), each bounded, before a person is asked.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::reading::postgres;
use super::remedies::{bump, remedied, remedy_failure, remedy_stuck, restart_worker, stuck_row};
use super::workloads::Readiness;
use super::{Action, Gate, Hold, Planner, Stage, wait};
use crate::api::conditions::{self as cond, reason};
use crate::api::{MigrationStatus, Phase, RemedyKind};
use crate::controller::plan::facts::Fact;
use crate::controller::validate::Settings;
use crate::databases::Remedy;
use crate::migrations::{EstimatedRows, MigrationRow, OpenGates, RowState, V3_MIGRATIONS, table_for_migration};
use crate::precision::bound_after;
use crate::resources::deployments::views::{Role, langfuse_container, running_version};

/// Restarts of a stalled worker before a person is asked.
const MAX_WORKER_RESTARTS: i32 = 2;
/// A started worker picks a migration within seconds and a lock goes stale after 60 s: judge
/// "nothing runs" only after this long since the worker (re)started.
const IDLE_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

/// Turn the background migrations on (worker restart) and watch them to the end, applying the
/// documented remedies, each bounded, before asking a person.
pub(super) fn migrate(p: &mut Planner, settings: &Settings, ready: &Readiness) -> Gate {
    if p.stage() > Stage::Migrating {
        return Ok(());
    }
    if p.status.migrations_enabled_at.is_none() {
        return enable(p, settings);
    }
    if !ready.worker {
        return Err(Hold::new(
            Phase::Migrating,
            reason::MIGRATING,
            "waiting for the v3 worker to restart with background migrations on",
            wait::ROLLOUT,
        ));
    }
    let pg = postgres(p, Phase::Migrating)?;
    let (rows, estimates) = (pg.migrations.clone(), pg.estimated_rows.clone().unwrap_or_default());
    report_progress(p, &rows, &estimates);
    let now = p.now;
    let state = |name: &str| rows.iter().find(|r| r.name == name).map(|r| r.state(now));
    if V3_MIGRATIONS.iter().all(|n| state(n) == Some(RowState::Finished)) {
        p.record_now(Fact::MigrationsFinished);
        p.condition(
            cond::MIGRATIONS_COMPLETE,
            true,
            reason::MIGRATIONS_FINISHED,
            "all four background migrations finished",
        );
        return Ok(());
    }
    if let Some(failed) = rows.iter().find(|r| r.state(now) == RowState::Failed) {
        return remedy_failure(p, settings, failed, super::remedies::Site::BesideV2);
    }
    if let Some(stuck) = stuck_row(p, settings, &rows) {
        return remedy_stuck(p, settings, &stuck);
    }
    if let Some(hold) = idle(p, settings, &rows) {
        return Err(hold);
    }
    let progress = p.status.migration_progress.clone().unwrap_or_default();
    let message = format!("background migrations running: {progress}");
    let every = poll_interval(p);
    Err(p.hold_step(
        cond::MIGRATIONS_COMPLETE,
        Phase::Migrating,
        reason::MIGRATING,
        message,
        every,
    ))
}

/// At `DB_WATCH` while some copy's cursor moved within the last minute (its end is seen within
/// a poll); back to `POLL` while nothing moves (a stuck copy is judged in minutes).
pub(super) fn poll_interval(p: &Planner) -> std::time::Duration {
    let moving = p.status.migrations.iter().any(|m| {
        m.state != "finished"
            && m.state != "dormant"
            && p.since(&m.cursor_since).is_none_or(|d| d < wait::DB_WATCH_QUIET)
    });
    if moving { wait::DB_WATCH } else { wait::POLL }
}

/// Invariant 2: the migrations go on only once the Service points to v3 and v2 has stopped
/// writing; the batch sizes the preflight scan planned go in before the worker starts.
fn enable(p: &mut Planner, settings: &Settings) -> Gate {
    p.require(
        "turn the background migrations on",
        &[
            ("the traffic shift", p.status.traffic_shifted_at.is_some()),
            ("the drain's cut-off", p.status.cutoff.is_some()),
        ],
    )?;
    for (name, size) in p.status.planned_batch_sizes.clone() {
        p.act(Action::Remedy(Remedy::SetBatchSize { name, size }));
    }
    p.record_now(Fact::MigrationsEnabled);
    super::workloads::ensure(p, settings)?;
    p.condition(
        cond::MIGRATIONS_COMPLETE,
        false,
        reason::MIGRATING,
        "background migrations enabled; the worker restarts to start them",
    );
    Err(Hold::new(
        Phase::Migrating,
        reason::MIGRATING,
        "enabled background migrations on v3",
        wait::ROLLOUT,
    ))
}

/// The worker only looks for work when it starts: a stale lock, or rows nobody picked up, need
/// a restart, bounded so a crash-looping worker reaches a person. `None`: something runs, or
/// the worker (re)started too recently to tell.
fn idle(p: &mut Planner, settings: &Settings, rows: &[MigrationRow]) -> Option<Hold> {
    let now = p.now;
    let idle = rows.iter().any(|r| r.state(now) == RowState::Stalled)
        || !rows.iter().any(|r| r.state(now) == RowState::Running);
    let last_start = p
        .status
        .worker_restarted_at
        .clone()
        .or(p.status.migrations_enabled_at.clone());
    let settled = p.since(&last_start).is_some_and(|d| d >= IDLE_GRACE);
    if !(idle && settled) {
        return None;
    }
    if bump(p, RemedyKind::IdleRestart, MAX_WORKER_RESTARTS) && p.spec.migrations.remediation {
        if let Err(hold) = restart_worker(p, settings) {
            return Some(hold);
        }
        return remedied(
            p,
            "no background migration was running (stale lock or never picked up); restarted the v3 worker",
        )
        .err();
    }
    let message =
        "no background migration is running and the worker restarts are used up; check the v3 worker logs".to_string();
    Some(p.hold_step(
        cond::MIGRATIONS_COMPLETE,
        Phase::Blocked,
        reason::MIGRATION_STALLED,
        message,
        wait::POLL,
    ))
}

/// The env gates open in the worker as it runs: its Langfuse container's env (the official
/// chart puts extra containers first), an unset gate at the running release's default.
pub(super) fn open_gates(p: &Planner) -> OpenGates {
    let worker = p.obs.worker.as_ref();
    let env = worker
        .and_then(|d| langfuse_container(d, Role::Worker))
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    let release = running_version(worker, Role::Worker);
    let catalog = p.catalog;
    let gates = catalog.background_migrations.iter().filter_map(|m| m.gate.as_deref());
    OpenGates::from_env_or_default(&env, gates, |gate| catalog.env_default(gate, release?))
}

pub(super) fn report_progress(p: &mut Planner, rows: &[MigrationRow], estimates: &EstimatedRows) {
    let gates = open_gates(p);
    // Progress runs from when the migrations were enabled (no later copy starts earlier).
    let start = p.status.migrations_enabled_at.as_ref().map(|t| t.0);
    let now = p.now;
    let previous = p.status.migrations.clone();
    p.status.migrations = rows
        .iter()
        .map(|r| {
            let before = previous.iter().find(|m| m.name == r.name);
            row_status(r, before, r.state_with(now, &gates), start, now, estimates)
        })
        .collect();
    // Dormant rows are not part of the work: neither counted nor averaged.
    let live: Vec<&MigrationRow> = rows
        .iter()
        .filter(|r| r.state_with(now, &gates) != RowState::Dormant)
        .collect();
    let finished = live.iter().filter(|r| r.state(now) == RowState::Finished).count();
    // From the percentages shown, so the summary moves no more often than they do.
    let shown = |r: &MigrationRow| {
        p.status
            .migrations
            .iter()
            .find(|m| m.name == r.name)
            .and_then(|m| m.progress_percent)
            .unwrap_or(0)
    };
    let mean = match live.len() {
        0 => 0,
        n => live.iter().map(|r| i64::from(shown(r))).sum::<i64>() / n as i64,
    };
    p.status.migration_progress = Some(format!("{finished}/{} ({mean}%)", live.len()));
}

/// One row as status shows it, from the row read now and what status showed `before`.
fn row_status(
    r: &MigrationRow,
    before: Option<&MigrationStatus>,
    state: RowState,
    start: Option<Timestamp>,
    now: Timestamp,
    estimates: &EstimatedRows,
) -> MigrationStatus {
    // A running copy's cursor and percentage are shown once a second at most: polled ten
    // times a second, a copy of quick batches would otherwise rewrite the status at each
    // poll. Its state (finished, failed) and its start cursor below are never held back.
    let shown_this_second = before.filter(|b| {
        state == RowState::Running && b.state == state.as_str() && b.cursor_since.as_ref().is_some_and(|t| t.0 == now)
    });
    let (cursor, progress_percent) = match shown_this_second {
        Some(b) => (b.cursor.clone(), b.progress_percent),
        None => (
            r.cursor.map(|c| c.to_string()),
            r.progress(start).map(|x| (x * 100.0).floor() as i32),
        ),
    };
    let cursor_since = match before {
        Some(b) if b.cursor == cursor && b.cursor_since.is_some() => b.cursor_since.clone(),
        _ => cursor.as_ref().map(|_| Time(now)),
    };
    // Only a cursor seen while the copy runs bounds its start; a finished copy's cursor
    // is its oldest row.
    // Recorded at status precision, rounded down: a row in that second counts as
    // possibly uncopied (a bounded re-copy), never as copied (`crate::precision`).
    let seen = (r.state(now) == RowState::Running)
        .then_some(r.cursor)
        .flatten()
        .map(bound_after);
    let start_cursor = match (before.and_then(|b| b.start_cursor.clone()), seen) {
        (Some(prev), Some(c)) if prev.0 >= c => Some(prev),
        (_, Some(c)) => Some(Time(c)),
        (prev, None) => prev,
    };
    MigrationStatus {
        name: r.name.clone(),
        state: state.as_str().into(),
        start_cursor,
        estimated_rows: table_for_migration(&r.name).and_then(|t| estimates.for_table(t)),
        cursor,
        progress_percent,
        failed_reason: r.failed_reason.clone(),
        cursor_since,
        batch_size: r.batch_size,
    }
}
