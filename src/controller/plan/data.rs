//! Draining, migrating and verifying: the data half of the upgrade, decided from Postgres and
//! ClickHouse facts the observation brought.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::Action;
use super::workloads::Readiness;
use super::{Gate, Hold, Planner, Stage, wait};
use crate::api::conditions::{self as cond, reason};
use crate::api::{LangfuseUpgradeStatus, MigrationStatus, Phase, RemedyKind, TableVerification};
use crate::controller::validate::Settings;
use crate::databases::{LateWindow, Remedy};
use crate::migrations::{
    DEFAULT_BATCH_SIZE, EstimatedRows, MigrationRow, OpenGates, PostgresFacts, RowState, Table, V3_MIGRATIONS,
    migration_for_table, table_for_migration,
};
use crate::precision::{bound_after, newest_seen};
use crate::verify::Verdict;

/// Restarts of a stalled worker before a person is asked.
const MAX_WORKER_RESTARTS: i32 = 2;
/// A started worker picks a migration within seconds and a lock goes stale after 60 s: judge
/// "nothing runs" only after this long since the worker (re)started.
const IDLE_GRACE: std::time::Duration = std::time::Duration::from_secs(120);
const MAX_LATE_WRITE_RERUNS: i32 = 2;
/// Automatic resumes of a migration that failed for a reason without a specific remedy.
const MAX_RESUMES: i32 = 1;
/// Batch-size raises for a migration stuck on one `created_at`.
const MAX_STUCK_RAISES: i32 = 3;

/// Per table, the instant after which a Postgres row may not be in ClickHouse: after a re-copy,
/// the instant it covered; before, the later of the moment the migrations were enabled and the
/// highest cursor seen while the copy ran. Both are no later than the copy's true start (its
/// first `maxDate`), so no late row is missed; the later one spares rows that v2 wrote before a
/// copy that started late (observations start only after traces finish) from false alarms.
pub fn late_window(s: &LangfuseUpgradeStatus) -> Option<LateWindow> {
    if let Some(covered) = &s.late_writes_covered_until {
        return Some(LateWindow::uniform(covered.0));
    }
    let enabled = s.migrations_enabled_at.as_ref()?.0;
    let table = |t: Table| {
        let name = migration_for_table(t);
        s.migrations
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.start_cursor.as_ref())
            .map_or(enabled, |c| c.0.max(enabled))
    };
    Some(LateWindow {
        traces: table(Table::Traces),
        observations: table(Table::Observations),
        scores: table(Table::Scores),
    })
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
        // The facts that call for Postgres were recorded this very reconcile: read it next.
        None => Err(Hold::new(phase, reason::PENDING, "reading Postgres next", wait::NOW)),
    }
}

/// Table names for a message, e.g. `traces, scores`.
pub(super) fn names(tables: &[Table]) -> String {
    tables.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
}

/// Wait until v2 has stopped writing: the newest `created_at` has not moved for `drainPeriod`.
pub(super) fn drain(p: &mut Planner, settings: &Settings) -> Gate {
    if p.stage() > Stage::Draining {
        return Ok(());
    }
    let newest = postgres(p, Phase::Draining)?.newest_write;
    // Compared and recorded at status precision, rounded up: the same row read again is never
    // "newer", and the quiet period never starts before the write (see `crate::precision`).
    let seen = newest.map(newest_seen);
    let moved = seen.is_some() && seen.map(Time) != p.status.last_source_write_at;
    if moved || p.status.drain_quiet_since.is_none() {
        p.status.last_source_write_at = seen.map(Time);
        p.status.drain_quiet_since = Some(Time(seen.map_or(p.now, |s| s.max(p.now))));
    }
    let quiet_for = p.since(&p.status.drain_quiet_since).unwrap_or_default();
    if quiet_for < settings.drain_period {
        let left = settings.drain_period - quiet_for;
        return Err(Hold::new(
            Phase::Draining,
            reason::DRAINING,
            // No countdown in the words, so the status is not rewritten on every poll.
            format!(
                "waiting for v2 to stop writing: newest row {}, none newer seen since {}; needs {} of quiet",
                newest.map(|t| t.to_string()).unwrap_or_else(|| "none".into()),
                p.status
                    .drain_quiet_since
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default(),
                p.spec.strategy.drain_period
            ),
            left.min(wait::POLL),
        ));
    }
    p.status.cutoff = Some(p.now_time());
    Ok(())
}

/// Turn the background migrations on (worker restart) and watch them to the end, applying the
/// documented remedies, each bounded, before asking a person.
pub(super) fn migrate(p: &mut Planner, settings: &Settings, ready: &Readiness) -> Gate {
    if p.stage() > Stage::Migrating {
        return Ok(());
    }
    if p.status.migrations_enabled_at.is_none() {
        // Invariant 2: on only once the Service points to v3 and v2 has stopped writing.
        p.require(
            "turn the background migrations on",
            &[
                ("the traffic shift", p.status.traffic_shifted_at.is_some()),
                ("the drain's cut-off", p.status.cutoff.is_some()),
            ],
        )?;
        // Batch sizes planned by the preflight scan go in before the worker starts.
        for (name, size) in p.status.planned_batch_sizes.clone() {
            p.act(Action::Remedy(Remedy::SetBatchSize { name, size }));
        }
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
    let pg = postgres(p, Phase::Migrating)?;
    let (rows, estimates) = (pg.migrations.clone(), pg.estimated_rows.clone().unwrap_or_default());
    report_progress(p, &rows, &estimates);
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
        return remedy_failure(p, settings, failed);
    }
    if let Some(stuck) = stuck_row(p, settings, &rows) {
        return remedy_stuck(p, settings, &stuck);
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
        if bump(p, RemedyKind::IdleRestart, MAX_WORKER_RESTARTS) && p.spec.migrations.remediation {
            restart_worker(p, settings)?;
            return remedied(
                p,
                "no background migration was running (stale lock or never picked up); restarted the v3 worker",
            );
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

/// Count one more use of a bounded remedy; false when its attempts are used up.
fn bump(p: &mut Planner, kind: RemedyKind, max: i32) -> bool {
    if p.status.remedies_used(kind) >= max {
        return false;
    }
    p.status.count_remedy(kind);
    true
}

/// A rollout restart of the v3 worker: the manager only looks for work at start.
fn restart_worker(p: &mut Planner, settings: &Settings) -> Result<(), Hold> {
    p.status.count_remedy(RemedyKind::WorkerRestart);
    p.status.worker_restarted_at = Some(p.now_time());
    super::workloads::ensure(p, settings).map(|_| ())
}

fn remedied(p: &mut Planner, what: &str) -> Gate {
    p.condition(
        cond::MIGRATIONS_COMPLETE,
        false,
        reason::REMEDY_APPLIED,
        what.to_string(),
    );
    Err(Hold::new(
        Phase::Migrating,
        reason::REMEDY_APPLIED,
        what.to_string(),
        wait::ROLLOUT,
    ))
}

fn give_up(p: &mut Planner, reason: &'static str, message: String) -> Gate {
    p.condition(cond::MIGRATIONS_COMPLETE, false, reason, message.clone());
    Err(Hold::new(Phase::Failed, reason, message, wait::POLL))
}

/// The batch size a "napi string" failure calls for: 2500, then halving, never below the floor.
pub fn smaller_batch(current: i64, floor: i64) -> Option<i64> {
    let next = if current > 2500 { 2500 } else { current / 2 };
    (next >= floor && next < current).then_some(next)
}

/// A failure reason fit for a condition message: its first line, at most 300 characters
/// (the whole text stays in `status.migrations[].failedReason`).
pub fn short_reason(reason: Option<&str>) -> String {
    let first = reason
        .unwrap_or("no reason recorded")
        .lines()
        .next()
        .unwrap_or_default()
        .trim();
    match first.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &first[..i]),
        None => first.to_string(),
    }
}

fn remedy_failure(p: &mut Planner, settings: &Settings, row: &MigrationRow) -> Gate {
    let why = short_reason(row.failed_reason.as_deref());
    let name = row.name.clone();
    let manual = format!(
        "background migration {name} failed: {why}. Fix the cause, then clear failed_at and failed_reason on that row (keep state, so it resumes from its cursor); the operator restarts the worker"
    );
    if !p.spec.migrations.remediation {
        return give_up(p, reason::MIGRATION_FAILED, manual);
    }
    if why.contains("napi string") {
        let current = row.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        // Never below the configured floor, nor back into a same-created_at group the preflight
        // scan found for this row (that would trade this failure for a stuck cursor).
        let group = p.status.planned_batch_sizes.get(&name).copied().unwrap_or(0);
        let floor = i64::from(p.spec.migrations.min_batch_size).max(group);
        return match smaller_batch(current, floor) {
            Some(size) => {
                p.act(Action::Remedy(Remedy::SetBatchSize {
                    name: name.clone(),
                    size,
                }));
                p.act(Action::Remedy(Remedy::ClearFailure { name: name.clone() }));
                bump(p, RemedyKind::Napi(&name), i32::MAX);
                restart_worker(p, settings)?;
                remedied(
                    p,
                    &format!(
                        "{name} hit the Node string limit at batch size {current}; lowered args.batchSize to {size} and resumed from the cursor"
                    ),
                )
            }
            None => give_up(
                p,
                reason::MIGRATION_FAILED,
                format!(
                    "{manual}. The batch size is already {current}, at the floor spec.migrations.minBatchSize {floor}"
                ),
            ),
        };
    }
    if bump(p, RemedyKind::Resume(&name), MAX_RESUMES) {
        p.act(Action::Remedy(Remedy::ClearFailure { name: name.clone() }));
        restart_worker(p, settings)?;
        return remedied(p, &format!("{name} failed ({why}); resumed it once from its cursor"));
    }
    give_up(
        p,
        reason::MIGRATION_FAILED,
        format!("{manual}. One automatic resume was already tried"),
    )
}

/// A running migration whose cursor has not moved for `stuckAfter` while its lock stays fresh:
/// more rows share one `created_at` than the batch holds.
fn stuck_row(p: &Planner, settings: &Settings, rows: &[MigrationRow]) -> Option<MigrationRow> {
    rows.iter()
        .filter(|r| r.state(p.now) == RowState::Running && r.cursor.is_some())
        .find(|r| {
            let since = p
                .status
                .migrations
                .iter()
                .find(|m| m.name == r.name)
                .and_then(|m| m.cursor_since.clone());
            p.since(&since).is_some_and(|d| d >= settings.stuck_after)
        })
        .cloned()
}

fn remedy_stuck(p: &mut Planner, settings: &Settings, row: &MigrationRow) -> Gate {
    let name = row.name.clone();
    let current = row.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
    let planned = p.status.planned_batch_sizes.get(&name).copied().unwrap_or(0);
    let size = (current * 2).max(planned);
    let cursor = row.cursor.map(|c| c.to_string()).unwrap_or_default();
    if p.spec.migrations.remediation && bump(p, RemedyKind::Stuck(&name), MAX_STUCK_RAISES) {
        p.act(Action::Remedy(Remedy::SetBatchSize {
            name: name.clone(),
            size,
        }));
        restart_worker(p, settings)?;
        return remedied(
            p,
            &format!(
                "{name} is stuck at {cursor} (more rows share that created_at than batch size {current}); set args.batchSize to {size} and restarted the worker"
            ),
        );
    }
    give_up(
        p,
        reason::MIGRATION_STUCK,
        format!(
            "{name} is stuck at {cursor} for {} with a fresh lock: more rows share that created_at than args.batchSize {current}; raise it above that group (UPDATE background_migrations SET args = jsonb_set(args, '{{batchSize}}', '<n>') WHERE name = '{name}') and restart the worker",
            p.spec.migrations.stuck_after
        ),
    )
}

/// The env gates open in the v3 worker as it runs (its Langfuse container's env).
pub(super) fn open_gates(p: &Planner) -> OpenGates {
    let env = p
        .obs
        .worker
        .as_ref()
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|pod| pod.containers.first())
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    OpenGates::from_env(&env)
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
            let cursor = r.cursor.map(|c| c.to_string());
            let before = previous.iter().find(|m| m.name == r.name);
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
                state: r.state_with(now, &gates).as_str().into(),
                start_cursor,
                estimated_rows: table_for_migration(&r.name).and_then(|t| estimates.for_table(t)),
                cursor,
                progress_percent: r.progress(start).map(|x| (x * 100.0).floor() as i32),
                failed_reason: r.failed_reason.clone(),
                cursor_since,
                batch_size: r.batch_size,
            }
        })
        .collect();
    // Dormant rows are not part of the work: neither counted nor averaged.
    let live: Vec<&MigrationRow> = rows
        .iter()
        .filter(|r| r.state_with(now, &gates) != RowState::Dormant)
        .collect();
    let finished = live.iter().filter(|r| r.state(now) == RowState::Finished).count();
    let mean = if live.is_empty() {
        0.0
    } else {
        live.iter().map(|r| r.progress(start).unwrap_or(0.0)).sum::<f64>() / live.len() as f64
    };
    p.status.migration_progress = Some(format!(
        "{finished}/{} ({}%)",
        live.len(),
        (mean * 100.0).floor() as i32
    ));
}

/// Every Postgres row at or before the cut-off must be in ClickHouse, and no v2 row may have
/// been written after the migrations' start cursor (the late-write guard).
pub(super) fn verify(p: &mut Planner) -> Gate {
    if p.stage() > Stage::Verifying {
        return Ok(());
    }
    let pg = postgres(p, Phase::Verifying)?;
    let (Some(pg_counts), late) = (pg.counts.clone(), pg.late_writes.clone()) else {
        return Err(Hold::new(
            Phase::Verifying,
            reason::VERIFYING,
            "reading the Postgres counts next",
            wait::POLL,
        ));
    };
    if let Some(Ok(ch)) = &p.obs.clickhouse
        && !ch.missing_tables.is_empty()
    {
        let message = format!(
            "ClickHouse has no {} table: did v3 web run its ClickHouse migrations against database {}? v2 is kept",
            names(&ch.missing_tables),
            p.spec.clickhouse.database.as_deref().unwrap_or("default")
        );
        p.condition(cond::VERIFIED, false, reason::CLICKHOUSE_UNAVAILABLE, message.clone());
        return Err(Hold::new(
            Phase::Degraded,
            reason::CLICKHOUSE_UNAVAILABLE,
            message,
            wait::POLL,
        ));
    }
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
            "reading the ClickHouse counts next",
            wait::POLL,
        ));
    };
    let verdicts: Vec<(Table, i64, i64, Verdict)> = pg_counts
        .iter()
        .into_iter()
        .zip(ch_counts.iter())
        .map(|((table, pg), (_, ch))| (table, pg, ch, Verdict::of(pg, ch)))
        .collect();
    let missing: Vec<String> = verdicts
        .iter()
        .filter(|(.., v)| *v != Verdict::Match)
        .map(|(table, .., v)| format!("{table} {}", v.to_string().to_lowercase()))
        .collect();
    p.status.verification = verdicts
        .iter()
        .map(|(table, pg, ch, verdict)| TableVerification {
            table: table.to_string(),
            postgres: *pg,
            clickhouse: *ch,
            verdict: verdict.to_string(),
        })
        .collect();
    if let Some(late) = late.filter(|l| l.iter().iter().any(|(_, n)| *n > 0)) {
        let text = late
            .iter()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| format!("{t}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        // The late-write guard: re-run each affected copy bounded to the rows written after its
        // start cursor (newest first, that many), then migrate and verify again.
        if p.spec.migrations.remediation && bump(p, RemedyKind::LateWriteRerun, MAX_LATE_WRITE_RERUNS) {
            // Bounded above by now, the upper bound of the count (`needs`): exactly the counted
            // rows are re-copied even if more arrive meanwhile (the next check catches those).
            let until = p.now;
            for (table, n) in late.iter() {
                if n > 0 {
                    p.act(Action::Remedy(Remedy::RerunWindow {
                        name: migration_for_table(table).into(),
                        max_date: until,
                        max_rows: n,
                    }));
                }
            }
            p.status.late_writes_covered_until = Some(Time(p.now));
            p.status.migrations_finished_at = None;
            p.status.worker_restarted_at = Some(p.now_time());
            p.status.count_remedy(RemedyKind::WorkerRestart);
            let message = format!(
                "v2 wrote rows after the migrations started ({text}); re-running the copies for exactly those rows"
            );
            p.condition(cond::VERIFIED, false, reason::LATE_WRITES, message.clone());
            return Err(Hold::new(Phase::Migrating, reason::LATE_WRITES, message, wait::ROLLOUT));
        }
        let message = format!(
            "v2 keeps writing rows after the migrations started ({text}); v2 is kept. Find what still writes to v2 (clients pinned to its pods?)"
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
