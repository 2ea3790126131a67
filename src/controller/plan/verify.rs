//! Verifying: every Postgres row up to the cut-off is in ClickHouse, and no v2 row was written
//! after the copies started (the late-write guard re-copies exactly those rows first).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::reading::{names, postgres};
use super::remedies::bump;
use super::{Action, Gate, Hold, Planner, Stage, wait};
use crate::api::conditions::{self as cond, reason};
use crate::api::{LangfuseUpgradeStatus, Phase, RemedyKind, TableVerification};
use crate::databases::{LateWindow, Remedy};
use crate::migrations::{Table, TableCounts, migration_for_table};
use crate::verify::Verdict;

const MAX_LATE_WRITE_RERUNS: i32 = 2;

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

/// Every Postgres row at or before the cut-off must be in ClickHouse, and no v2 row may have
/// been written after the migrations' start cursor (the late-write guard).
pub(super) fn verify(p: &mut Planner) -> Gate {
    if p.stage() > Stage::Verifying {
        return Ok(());
    }
    let (pg_counts, late) = postgres_counts(p)?;
    let ch_counts = clickhouse_counts(p)?;
    let verdicts: Vec<(Table, i64, i64, Verdict)> = pg_counts
        .iter()
        .into_iter()
        .zip(ch_counts.iter())
        .map(|((table, pg), (_, ch))| (table, pg, ch, Verdict::of(pg, ch)))
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
        return late_write_guard(p, &late);
    }
    let missing: Vec<String> = verdicts
        .iter()
        .filter(|(.., v)| *v != Verdict::Match)
        .map(|(table, .., v)| format!("{table} {}", v.to_string().to_lowercase()))
        .collect();
    if !missing.is_empty() {
        let message = format!(
            "ClickHouse lacks rows Postgres has up to the cut-off ({}); v2 is kept",
            missing.join(", ")
        );
        return Err(p.hold_step(
            cond::VERIFIED,
            Phase::Degraded,
            reason::COUNTS_MISMATCH,
            message,
            wait::POLL,
        ));
    }
    // When the counts were read, to the millisecond: `retireSourceAfter` counts from it.
    // Kept to the millisecond it is written with, so it reads back equal.
    let read_at = p.obs.read_at.map_or(p.now, |t| {
        jiff::Timestamp::from_millisecond(crate::precision::millis_floor(t)).unwrap_or(p.now)
    });
    p.status.verified_at = Some(Time(read_at));
    p.condition(
        cond::VERIFIED,
        true,
        reason::COUNTS_MATCH,
        "every Postgres row up to the cut-off is in ClickHouse",
    );
    Ok(())
}

/// Postgres's counts up to the cut-off and its rows written after each copy's start.
fn postgres_counts(p: &Planner) -> Result<(TableCounts, Option<TableCounts>), Hold> {
    let pg = postgres(p, Phase::Verifying)?;
    match (pg.counts.clone(), pg.late_writes.clone()) {
        (Some(counts), late) => Ok((counts, late)),
        (None, _) => Err(Hold::new(
            Phase::Verifying,
            reason::VERIFYING,
            "reading the Postgres counts next",
            wait::POLL,
        )),
    }
}

/// ClickHouse's counts up to the cut-off; a missing table keeps v2 (the schema is not v3's).
fn clickhouse_counts(p: &mut Planner) -> Result<TableCounts, Hold> {
    let ch = match &p.obs.clickhouse {
        Some(Ok(ch)) => ch.clone(),
        Some(Err(e)) => {
            return Err(Hold::new(
                Phase::Verifying,
                reason::CLICKHOUSE_UNAVAILABLE,
                format!("cannot read ClickHouse: {e}"),
                wait::DB_RETRY,
            ));
        }
        None => Default::default(),
    };
    if !ch.missing_tables.is_empty() {
        let message = format!(
            "ClickHouse has no {} table: did v3 web run its ClickHouse migrations against database {}? v2 is kept",
            names(&ch.missing_tables),
            p.spec.clickhouse.database.as_deref().unwrap_or("default")
        );
        return Err(p.hold_step(
            cond::VERIFIED,
            Phase::Degraded,
            reason::CLICKHOUSE_UNAVAILABLE,
            message,
            wait::POLL,
        ));
    }
    ch.counts.ok_or_else(|| {
        Hold::new(
            Phase::Verifying,
            reason::VERIFYING,
            "reading the ClickHouse counts next",
            wait::POLL,
        )
    })
}

/// v2 wrote rows after the copies started: re-run each affected copy bounded to exactly those
/// rows (newest first, that many), then migrate and verify again; bounded, then a person.
fn late_write_guard(p: &mut Planner, late: &TableCounts) -> Gate {
    let text = late
        .iter()
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| format!("{t}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    if !(p.spec.migrations.remediation && bump(p, RemedyKind::LateWriteRerun, MAX_LATE_WRITE_RERUNS)) {
        let message = format!(
            "v2 keeps writing rows after the migrations started ({text}); v2 is kept. Find what still writes to v2 (clients pinned to its pods?)"
        );
        return Err(p.hold_step(
            cond::VERIFIED,
            Phase::Degraded,
            reason::LATE_WRITES,
            message,
            wait::POLL,
        ));
    }
    // Bounded above by now, the upper bound of the count (`needs`): exactly the counted rows
    // are re-copied even if more arrive meanwhile (the next check catches those).
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
    let message =
        format!("v2 wrote rows after the migrations started ({text}); re-running the copies for exactly those rows");
    Err(p.hold_step(
        cond::VERIFIED,
        Phase::Migrating,
        reason::LATE_WRITES,
        message,
        wait::ROLLOUT,
    ))
}
