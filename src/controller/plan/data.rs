//! Draining, migrating and verifying: the data half of the upgrade, decided from Postgres and
//! ClickHouse facts the observation brought.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::workloads::{Readiness, WORKER_RESTARTS};
use super::{Gate, Hold, Planner, wait};
use crate::api::conditions::{self as cond, reason};
use crate::api::{LangfuseUpgradeStatus, MigrationStatus, Phase, TableVerification};
use crate::controller::validate::Settings;
use crate::migrations::{MigrationRow, PostgresFacts, RowState, V3_MIGRATIONS};

/// Restarts of a stalled worker before a person is asked.
const MAX_WORKER_RESTARTS: i32 = 2;
/// A started worker picks a migration within seconds and a lock goes stale after 60 s: judge
/// "nothing runs" only after this long since the worker (re)started.
const IDLE_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

/// The migrations' start cursor: the newest `state.maxDate` seen while migrating is no later
/// than the worker start; the enable time bounds it when none was seen.
pub fn start_cursor(s: &LangfuseUpgradeStatus) -> Option<Timestamp> {
    s.migrations_enabled_at.as_ref().map(|t| t.0)
}

fn postgres<'a>(p: &'a Planner, phase: Phase) -> Result<&'a PostgresFacts, Hold> {
    match &p.obs.postgres {
        Some(Ok(pg)) => Ok(pg),
        Some(Err(e)) => Err(Hold::new(
            phase,
            reason::POSTGRES_UNAVAILABLE,
            format!("cannot read Postgres: {e}"),
            wait::POLL,
        )),
        None => Err(Hold::new(
            phase,
            reason::POSTGRES_UNAVAILABLE,
            "Postgres was not observed",
            wait::POLL,
        )),
    }
}

/// Wait until v2 has stopped writing: the newest `created_at` has not moved for `drainPeriod`.
pub(super) fn drain(p: &mut Planner, settings: &Settings) -> Gate {
    if p.status.cutoff.is_some() {
        return Ok(());
    }
    let newest = postgres(p, Phase::Draining)?.newest_write;
    let moved = newest.map(Time) != p.status.last_source_write_at && newest.is_some();
    if moved || p.status.drain_quiet_since.is_none() {
        p.status.last_source_write_at = newest.map(Time);
        p.status.drain_quiet_since = Some(p.now_time());
    }
    let quiet_for = p.since(&p.status.drain_quiet_since).unwrap_or_default();
    if quiet_for < settings.drain_period {
        let left = settings.drain_period - quiet_for;
        return Err(Hold::new(
            Phase::Draining,
            reason::DRAINING,
            format!(
                "waiting for v2 to stop writing: newest row {}, quiet for {}s of {}",
                newest.map(|t| t.to_string()).unwrap_or_else(|| "none".into()),
                quiet_for.as_secs(),
                p.spec.strategy.drain_period
            ),
            left.min(wait::POLL),
        ));
    }
    p.status.cutoff = Some(p.now_time());
    Ok(())
}

/// Turn the background migrations on (worker restart) and watch them to the end.
pub(super) fn migrate(p: &mut Planner, settings: &Settings, ready: &Readiness) -> Gate {
    if p.status.migrations_finished_at.is_some() {
        return Ok(());
    }
    if p.status.migrations_enabled_at.is_none() {
        p.status.migrations_enabled_at = Some(p.now_time());
        super::workloads::ensure(p, settings)?;
        p.condition(
            cond::MIGRATIONS_COMPLETE,
            false,
            reason::MIGRATING,
            "background migrations enabled; the worker restarts to start them",
        );
        return Err(Hold::new(
            Phase::Migrating,
            reason::MIGRATING,
            "enabled background migrations on v3",
            wait::ROLLOUT,
        ));
    }
    if !ready.worker {
        return Err(Hold::new(
            Phase::Migrating,
            reason::MIGRATING,
            "waiting for the v3 worker to restart with background migrations on",
            wait::ROLLOUT,
        ));
    }
    let rows = postgres(p, Phase::Migrating)?.migrations.clone();
    report_progress(p, &rows);
    let now = p.now;
    let state = |name: &str| rows.iter().find(|r| r.name == name).map(|r| r.state(now));
    if V3_MIGRATIONS.iter().all(|n| state(n) == Some(RowState::Finished)) {
        p.status.migrations_finished_at = Some(p.now_time());
        p.condition(
            cond::MIGRATIONS_COMPLETE,
            true,
            reason::MIGRATIONS_FINISHED,
            "all four background migrations finished",
        );
        return Ok(());
    }
    if let Some(failed) = rows.iter().find(|r| r.state(now) == RowState::Failed) {
        let message = format!(
            "background migration {} failed: {}. Fix the cause, then clear failed_at and failed_reason on that row (keep state, so it resumes from its cursor) and the operator restarts the worker",
            failed.name,
            failed
                .failed_reason
                .clone()
                .unwrap_or_else(|| "no reason recorded".into())
        );
        p.condition(
            cond::MIGRATIONS_COMPLETE,
            false,
            reason::MIGRATION_FAILED,
            message.clone(),
        );
        return Err(Hold::new(Phase::Failed, reason::MIGRATION_FAILED, message, wait::POLL));
    }
    // The worker only looks for work when it starts: a stale lock, or rows nobody picked up,
    // need a restart, bounded so a crash-looping worker reaches a person.
    let idle = rows.iter().any(|r| r.state(now) == RowState::Stalled)
        || !rows.iter().any(|r| r.state(now) == RowState::Running);
    let last_start = p
        .status
        .worker_restarted_at
        .clone()
        .or(p.status.migrations_enabled_at.clone());
    let settled = p.since(&last_start).is_some_and(|d| d >= IDLE_GRACE);
    if idle && settled {
        let restarts = p.status.remedies.get(WORKER_RESTARTS).copied().unwrap_or(0);
        if restarts < MAX_WORKER_RESTARTS && settings_allow_remedy(p) {
            p.status.remedies.insert(WORKER_RESTARTS.into(), restarts + 1);
            p.status.worker_restarted_at = Some(p.now_time());
            super::workloads::ensure(p, settings)?;
            p.condition(
                cond::MIGRATIONS_COMPLETE,
                false,
                reason::MIGRATION_STALLED,
                format!(
                    "no migration is running; restarted the worker ({} of {MAX_WORKER_RESTARTS})",
                    restarts + 1
                ),
            );
            return Err(Hold::new(
                Phase::Migrating,
                reason::MIGRATION_STALLED,
                "restarting the v3 worker to resume the background migrations",
                wait::ROLLOUT,
            ));
        }
        let message =
            "no background migration is running and the worker restarts are used up; check the v3 worker logs"
                .to_string();
        p.condition(
            cond::MIGRATIONS_COMPLETE,
            false,
            reason::MIGRATION_STALLED,
            message.clone(),
        );
        return Err(Hold::new(
            Phase::Blocked,
            reason::MIGRATION_STALLED,
            message,
            wait::POLL,
        ));
    }
    let progress = p.status.migration_progress.clone().unwrap_or_default();
    p.condition(
        cond::MIGRATIONS_COMPLETE,
        false,
        reason::MIGRATING,
        format!("background migrations running: {progress}"),
    );
    Err(Hold::new(
        Phase::Migrating,
        reason::MIGRATING,
        format!("background migrations running: {progress}"),
        wait::POLL,
    ))
}

fn settings_allow_remedy(p: &Planner) -> bool {
    p.spec.migrations.remediation
}

fn report_progress(p: &mut Planner, rows: &[MigrationRow]) {
    let start = start_cursor(&p.status);
    let now = p.now;
    p.status.migrations = rows
        .iter()
        .map(|r| MigrationStatus {
            name: r.name.clone(),
            state: r.state(now).as_str().into(),
            cursor: r.cursor.map(|c| c.to_string()),
            progress_percent: r.progress(start).map(|x| (x * 100.0).floor() as i32),
            failed_reason: r.failed_reason.clone(),
        })
        .collect();
    let finished = rows.iter().filter(|r| r.state(now) == RowState::Finished).count();
    let mean = if rows.is_empty() {
        0.0
    } else {
        rows.iter().map(|r| r.progress(start).unwrap_or(0.0)).sum::<f64>() / rows.len() as f64
    };
    p.status.migration_progress = Some(format!(
        "{finished}/{} ({}%)",
        rows.len(),
        (mean * 100.0).floor() as i32
    ));
}

/// Every Postgres row at or before the cut-off must be in ClickHouse, and no v2 row may have
/// been written after the migrations' start cursor (the late-write guard).
pub(super) fn verify(p: &mut Planner) -> Gate {
    if p.status.verified_at.is_some() {
        return Ok(());
    }
    let pg = postgres(p, Phase::Verifying)?;
    let (Some(pg_counts), late) = (pg.counts.clone(), pg.late_writes.clone()) else {
        return Err(Hold::new(
            Phase::Verifying,
            reason::VERIFYING,
            "Postgres counts not read yet",
            wait::POLL,
        ));
    };
    let ch_counts = match &p.obs.clickhouse {
        Some(Ok(ch)) => ch.counts.clone(),
        Some(Err(e)) => {
            return Err(Hold::new(
                Phase::Verifying,
                reason::CLICKHOUSE_UNAVAILABLE,
                format!("cannot read ClickHouse: {e}"),
                wait::POLL,
            ));
        }
        None => None,
    };
    let Some(ch_counts) = ch_counts else {
        return Err(Hold::new(
            Phase::Verifying,
            reason::VERIFYING,
            "ClickHouse counts not read yet",
            wait::POLL,
        ));
    };
    // v3 ingests while v2 drains, so ClickHouse may hold more rows up to the cut-off, never fewer.
    let rows: Vec<TableVerification> = pg_counts
        .iter()
        .into_iter()
        .zip(ch_counts.iter())
        .map(|((table, pg), (_, ch))| TableVerification {
            table: table.into(),
            postgres: pg,
            clickhouse: ch,
            verdict: if ch >= pg {
                "Match".into()
            } else {
                format!("Missing {}", pg - ch)
            },
        })
        .collect();
    let missing: Vec<String> = rows
        .iter()
        .filter(|r| r.verdict != "Match")
        .map(|r| format!("{} {}", r.table, r.verdict.to_lowercase()))
        .collect();
    p.status.verification = rows;
    if let Some(late) = late.filter(|l| l.iter().iter().any(|(_, n)| *n > 0)) {
        let text = late
            .iter()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| format!("{t}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let message = format!(
            "v2 wrote rows after the migrations started ({text}); they are not in ClickHouse yet and v2 is kept"
        );
        p.condition(cond::VERIFIED, false, reason::LATE_WRITES, message.clone());
        return Err(Hold::new(Phase::Degraded, reason::LATE_WRITES, message, wait::POLL));
    }
    if !missing.is_empty() {
        let message = format!(
            "ClickHouse lacks rows Postgres has up to the cut-off ({}); v2 is kept",
            missing.join(", ")
        );
        p.condition(cond::VERIFIED, false, reason::COUNTS_MISMATCH, message.clone());
        return Err(Hold::new(Phase::Degraded, reason::COUNTS_MISMATCH, message, wait::POLL));
    }
    p.status.verified_at = Some(p.now_time());
    p.condition(
        cond::VERIFIED,
        true,
        reason::COUNTS_MATCH,
        "every Postgres row up to the cut-off is in ClickHouse",
    );
    Ok(())
}
