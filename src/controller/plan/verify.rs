//! Verifying: every Postgres row up to the cut-off is in ClickHouse, and no v2 row was written
//! after the copies started (the late-write guard re-copies exactly those rows first).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::reading::{names, postgres};
use super::remedies::bump;
use super::{Action, Gate, Hold, Planner, Stage, wait};
use crate::api::conditions::{self as cond, reason};
use crate::api::{LangfuseUpgradeStatus, Phase, RemedyKind, TableVerification};
use crate::controller::observed::Reading;
use crate::controller::plan::facts::Fact;
use crate::databases::{LateWindow, Remedy};
use crate::migrations::{Table, TableCounts, migration_for_table};
use crate::verify::Verdict;

const MAX_LATE_WRITE_RERUNS: i32 = 2;

/// How long before the traffic switch a v2 write may have been created and still be in flight:
/// a request held in Prisma's pool (10 s by default) across a Postgres outage, a long
/// transaction. Generous, because the window is read by an index range scan only.
const IN_FLIGHT_ALLOWANCE: std::time::Duration = std::time::Duration::from_secs(600);

/// Where rows that landed behind the copy's cursor are looked for: from shortly before the
/// traffic switch (v2 wrote nothing new after it but what was in flight) to the cut-off.
pub fn recent_window_start(s: &LangfuseUpgradeStatus) -> Option<jiff::Timestamp> {
    let shifted = s.traffic_shifted_at.as_ref()?.0;
    shifted.checked_sub(IN_FLIGHT_ALLOWANCE).ok()
}

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
        if let Some(gate) = late_arrivals(p, &pg_counts, &ch_counts) {
            return gate;
        }
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
    p.record(Fact::Verified, Time(read_at));
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
        Reading::Answered(ch) => ch.clone(),
        Reading::Failed(e) => {
            return Err(Hold::new(
                Phase::Verifying,
                reason::CLICKHOUSE_UNAVAILABLE,
                format!("cannot read ClickHouse: {e}"),
                wait::DB_RETRY,
            ));
        }
        Reading::NotAsked => Default::default(),
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

/// Rows v2 created before the cut-off that landed after the copy's cursor had passed them (a
/// write held in a client's pool across a Postgres outage, a long transaction): neither the
/// drain (their `created_at` is old) nor the late-write guard (it is before the copy's start)
/// sees them. When every missing row lies in the recent window, re-copy that window: the newest
/// rows up to the cut-off, as many as Postgres has there. Bounded with the late-write re-runs;
/// `None` when it does not apply (the mismatch is older, or the budget is spent).
fn late_arrivals(p: &mut Planner, pg: &TableCounts, ch: &TableCounts) -> Option<Gate> {
    let pg_recent = p.obs.postgres.answered()?.recent_counts.clone()?;
    let ch_recent = p.obs.clickhouse.answered()?.recent_counts.clone()?;
    let until = p
        .status
        .late_writes_covered_until
        .as_ref()
        .or(p.status.cutoff.as_ref())?
        .0;
    let since = recent_window_start(&p.status)?;
    // Per table short of rows: how many Postgres has in the window (all re-copied).
    let mut short = Vec::new();
    for (table, pg_n) in pg.iter() {
        let missing = pg_n - ch.get(table);
        if missing <= 0 {
            continue;
        }
        // Some missing rows are older than the window: a re-copy of it would not find them.
        if pg_recent.get(table) - ch_recent.get(table) < missing {
            return None;
        }
        short.push((table, pg_recent.get(table)));
    }
    if short.is_empty() {
        return None;
    }
    if !(p.spec.migrations.remediation && bump(p, RemedyKind::LateWriteRerun, MAX_LATE_WRITE_RERUNS)) {
        return None;
    }
    for (table, recent) in &short {
        p.act(Action::Remedy(Remedy::RerunWindow {
            name: migration_for_table(*table).into(),
            max_date: until,
            max_rows: *recent,
        }));
    }
    copy_again(p);
    let text = short
        .iter()
        .map(|(table, recent)| format!("{table}: {recent}"))
        .collect::<Vec<_>>()
        .join(", ");
    let message = format!(
        "ClickHouse lacks rows v2 wrote since {since} that reached Postgres after the copy had passed them (a write held across an outage?); re-copying the rows of that window up to the cut-off ({text})"
    );
    Some(Err(p.hold_step(
        cond::VERIFIED,
        Phase::Migrating,
        reason::LATE_WRITES,
        message,
        wait::ROLLOUT,
    )))
}

/// A re-run was asked for: back to Migrating, and the worker restarted (its manager looks for
/// work only at start).
fn copy_again(p: &mut Planner) {
    p.unrecord(Fact::MigrationsFinished);
    p.record_now(Fact::WorkerRestarted);
    p.status.count_remedy(RemedyKind::WorkerRestart);
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
    copy_again(p);
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
