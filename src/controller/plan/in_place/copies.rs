//! The copy check before a hop that drops the copies' PostgreSQL source (v4.0.0 drops
//! traces, observations, scores and dataset_run_items): PostgreSQL counted once, ClickHouse
//! counted over the same window, one verdict per table. A shortfall holds the hop and says how
//! to re-run the copy, or how to accept rows deleted in Langfuse since it ran.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::road::{record, recorded};
use super::unmet::Unmet;
use crate::api::{CopyCount, LangfuseUpgradeStatus, StopMode, StopState};
use crate::catalog::road::Hop;
use crate::controller::plan::Planner;
use crate::migrations::copies::{CopiedTable, CopyWindow};
use jiff::Timestamp;

/// Merge this observation's counts into the hop's stop: PostgreSQL's once, ClickHouse's at
/// each look while the verdict is not settled.
pub(super) fn record_counts(p: &mut Planner, hop: &Hop) {
    let pg = p.obs.postgres.answered().and_then(|f| f.copy_sources.clone());
    let ch = p.obs.clickhouse.answered().and_then(|f| f.copy_counts.clone());
    let accepted = p.spec.migrations.accept_copy_shortfall.clone();
    let stop = record(p, hop);
    if stop.copies.is_empty() {
        stop.copies = super::road::stop_of(hop, StopState::Current).copies;
    }
    for c in &mut stop.copies {
        let Some(table) = CopiedTable::parse(&c.table) else {
            continue;
        };
        if let Some(pg) = pg.as_ref().filter(|_| c.postgres.is_none()) {
            let source = pg.tables.iter().find(|s| s.table == table);
            // A table already gone (or empty in the window) has nothing left to lose.
            c.postgres = Some(source.map_or(0, |s| s.rows));
            c.since = pg.since.map(second_below);
            c.until = source.and_then(|s| s.newest).map(second_above);
            if c.until.is_none() {
                c.verdict = Some("Match".into());
            }
        }
        if let (Some(pg_rows), Some(&(_, ch_rows))) = (c.postgres, ch.iter().flatten().find(|(t, _)| *t == table)) {
            c.clickhouse = Some(ch_rows);
            let missing = pg_rows - ch_rows;
            c.verdict = Some(match missing {
                n if n <= 0 => "Match".to_string(),
                n if accepted.get(&c.table).is_some_and(|a| *a >= n) => format!("Accepted {n}"),
                n => format!("Missing {n}"),
            });
        }
    }
}

/// What the copy check still lacks, or the shortfall that holds the hop.
pub(crate) fn unmet(p: &Planner, hop: &Hop) -> Option<Unmet> {
    let copies = recorded(&p.status, hop)
        .map(|s| s.copies.as_slice())
        .unwrap_or_default();
    if copies.is_empty() || copies.iter().any(|c| c.postgres.is_none()) {
        return Some(Unmet::CopiesPending("counting the copies in PostgreSQL next".into()));
    }
    if copies.iter().any(|c| c.verdict.is_none()) {
        return Some(Unmet::CopiesPending("counting the copies in ClickHouse next".into()));
    }
    let missing: Vec<String> = copies
        .iter()
        .filter(|c| c.verdict.as_deref().is_some_and(|v| v.starts_with("Missing")))
        .map(|c| shortfall(p, hop, c))
        .collect();
    (!missing.is_empty()).then(|| {
        Unmet::CopiesMissing(format!(
            "ClickHouse lacks rows PostgreSQL has, and {} drops the PostgreSQL tables: {}",
            hop.to,
            missing.join("; ")
        ))
    })
}

/// One table's shortfall, with the documented reset of its copy and the way to accept it.
fn shortfall(p: &Planner, hop: &Hop, c: &CopyCount) -> String {
    let (pg, ch) = (c.postgres.unwrap_or(0), c.clickhouse.unwrap_or(0));
    let window = match (&c.since, &c.until) {
        (Some(s), Some(u)) => format!("created after {} up to {}", s.0, u.0),
        (None, Some(u)) => format!("created up to {}", u.0),
        _ => String::new(),
    };
    let row = p
        .catalog
        .background_migrations
        .iter()
        .filter(|m| m.copies.as_deref() == Some(c.table.as_str()) && m.from <= hop.from)
        .max_by_key(|m| m.from)
        .map(|m| m.name.as_str())
        .unwrap_or("its copy");
    format!(
        "{table}: PostgreSQL {pg}, ClickHouse {ch}, {n} missing (rows {window}). Re-run the copy: UPDATE background_migrations SET finished_at = NULL, failed_at = NULL, failed_reason = NULL, state = '{{}}' WHERE name = '{row}'; then restart the worker. Rows deleted in Langfuse since the copy ran count as missing too: if that is why, accept them with spec.migrations.acceptCopyShortfall: {{{table}: {n}}}",
        table = c.table,
        n = pg - ch
    )
}

/// What the next hop's copy check reads this reconcile: PostgreSQL until it was counted, then
/// ClickHouse for every table whose verdict is not settled. Only for the hop about to start.
pub fn needed(s: &LangfuseUpgradeStatus) -> (Vec<CopiedTable>, Vec<CopyWindow>) {
    let Some(stop) = s
        .road
        .iter()
        .find(|r| r.mode == StopMode::InPlace && r.state == StopState::Current && r.started_at.is_none())
    else {
        return (Vec::new(), Vec::new());
    };
    let tables = |f: &dyn Fn(&CopyCount) -> bool| -> Vec<&CopyCount> { stop.copies.iter().filter(|c| f(c)).collect() };
    let uncounted = tables(&|c| c.postgres.is_none());
    if !uncounted.is_empty() {
        return (
            uncounted.iter().filter_map(|c| CopiedTable::parse(&c.table)).collect(),
            Vec::new(),
        );
    }
    let unsettled = tables(&|c| c.verdict.as_deref().is_none_or(|v| v.starts_with("Missing")));
    let windows = unsettled
        .iter()
        .filter_map(|c| {
            Some(CopyWindow {
                table: CopiedTable::parse(&c.table)?,
                since: c.since.as_ref().map(|t| t.0),
                until: c.until.as_ref()?.0,
            })
        })
        .collect();
    (Vec::new(), windows)
}

/// Status keeps whole seconds: `since` goes to the second below and `until` to the second
/// above, so ClickHouse's window holds PostgreSQL's and a complete copy never reads as short.
fn second_below(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

fn second_above(t: Timestamp) -> Time {
    let up = t.as_second() + i64::from(t.subsec_nanosecond() > 0);
    Time(Timestamp::from_second(up).unwrap_or(t))
}
