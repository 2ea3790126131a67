//! The documented remedies for background migrations that fail or stall, each bounded in
//! attempts and counted in `status.remedies`.

use super::{Action, Gate, Hold, Planner, wait};
use crate::api::conditions::{self as cond, reason};
use crate::api::{Phase, RemedyKind};
use crate::controller::plan::facts::Fact;
use crate::controller::validate::Settings;
use crate::databases::Remedy;
use crate::migrations::{DEFAULT_BATCH_SIZE, MigrationRow, RowState};

/// Automatic resumes of a migration that failed for a reason without a specific remedy.
const MAX_RESUMES: i32 = 1;
/// Batch-size raises for a migration stuck on one `created_at`.
const MAX_STUCK_RAISES: i32 = 3;

/// Count one more use of a bounded remedy; false when its attempts are used up.
pub(super) fn bump(p: &mut Planner, kind: RemedyKind, max: i32) -> bool {
    if p.status.remedies_used(kind) >= max {
        return false;
    }
    p.status.count_remedy(kind);
    true
}

/// Where a remedy applies: the copies beside v2, or a hop's rows in place, on the operator's own
/// Deployments or on a source's (whose worker it does not restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Site {
    BesideV2,
    InPlaceOwned,
    InPlaceSource,
}

impl Site {
    fn condition(self) -> &'static str {
        match self {
            Site::BesideV2 => cond::MIGRATIONS_COMPLETE,
            _ => cond::ROAD_FOLLOWED,
        }
    }

    fn phase(self) -> Phase {
        match self {
            Site::BesideV2 => Phase::Migrating,
            _ => Phase::Finalizing,
        }
    }
}

/// The worker restarted where the operator owns it; on a source's, what a person runs (the
/// manager only looks for work at start).
fn restart(p: &mut Planner, settings: &Settings, site: Site) -> Result<String, Hold> {
    if site == Site::InPlaceSource {
        return Ok(format!(
            "; restart the worker so it picks the row up: kubectl -n {} rollout restart deployment/{}",
            p.namespace(),
            worker_name(p)
        ));
    }
    restart_worker(p, settings)?;
    Ok(String::new())
}

/// The worker Deployment's name, for the command a person runs: the one observed, else the
/// one the spec names (the chart's `<fullname>-worker`).
pub(crate) fn worker_name(p: &Planner) -> String {
    p.obs
        .worker
        .as_ref()
        .and_then(|d| d.metadata.name.clone())
        .or_else(|| crate::resources::deployments::views::worker_name(p.spec))
        .unwrap_or_else(|| "<worker>".into())
}

/// A rollout restart of the v3 worker: the manager only looks for work at start.
pub(super) fn restart_worker(p: &mut Planner, settings: &Settings) -> Result<(), Hold> {
    p.status.count_remedy(RemedyKind::WorkerRestart);
    p.record_now(Fact::WorkerRestarted);
    super::workloads::ensure(p, settings).map(|_| ())
}

pub(super) fn remedied(p: &mut Planner, what: &str) -> Gate {
    remedied_at(p, Site::BesideV2, what)
}

fn remedied_at(p: &mut Planner, site: Site, what: &str) -> Gate {
    p.condition(site.condition(), false, reason::REMEDY_APPLIED, what.to_string());
    Err(Hold::new(
        site.phase(),
        reason::REMEDY_APPLIED,
        what.to_string(),
        wait::ROLLOUT,
    ))
}

fn give_up(p: &mut Planner, site: Site, reason: crate::api::conditions::Reason, message: String) -> Gate {
    p.condition(site.condition(), false, reason, message.clone());
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

pub(crate) fn remedy_failure(p: &mut Planner, settings: &Settings, row: &MigrationRow, site: Site) -> Gate {
    let why = short_reason(row.failed_reason.as_deref());
    let name = row.name.clone();
    let manual = format!(
        "background migration {name} failed: {why}. Fix the cause, then clear failed_at and failed_reason on that row (keep state, so it resumes from its cursor); the operator restarts the worker"
    );
    if !p.spec.migrations.remediation {
        return give_up(p, site, reason::MIGRATION_FAILED, manual);
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
                let then = restart(p, settings, site)?;
                remedied_at(
                    p,
                    site,
                    &format!(
                        "{name} hit the Node string limit at batch size {current}; lowered args.batchSize to {size} and resumed from the cursor{then}"
                    ),
                )
            }
            None => give_up(
                p,
                site,
                reason::MIGRATION_FAILED,
                format!(
                    "{manual}. The batch size is already {current}, at the floor spec.migrations.minBatchSize {floor}"
                ),
            ),
        };
    }
    if bump(p, RemedyKind::Resume(&name), MAX_RESUMES) {
        p.act(Action::Remedy(Remedy::ClearFailure { name: name.clone() }));
        let then = restart(p, settings, site)?;
        return remedied_at(
            p,
            site,
            &format!("{name} failed ({why}); resumed it once from its cursor{then}"),
        );
    }
    give_up(
        p,
        site,
        reason::MIGRATION_FAILED,
        format!("{manual}. One automatic resume was already tried"),
    )
}

/// A running migration whose cursor has not moved for `stuckAfter` while its lock stays fresh:
/// more rows share one `created_at` than the batch holds.
pub(super) fn stuck_row(p: &Planner, settings: &Settings, rows: &[MigrationRow]) -> Option<MigrationRow> {
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

pub(super) fn remedy_stuck(p: &mut Planner, settings: &Settings, row: &MigrationRow) -> Gate {
    let name = row.name.clone();
    let current = row.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
    let planned = p.status.planned_batch_sizes.get(&name).copied().unwrap_or(0);
    // A batch size read from the row can be anything (found by fuzzing: `* 2` overflowed, and
    // a zero or negative one doubled to itself): doubling starts from Langfuse's default then.
    let base = if current >= 1 { current } else { DEFAULT_BATCH_SIZE };
    let size = base.saturating_mul(2).max(planned);
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
        Site::BesideV2,
        reason::MIGRATION_STUCK,
        format!(
            "{name} is stuck at {cursor} for {} with a fresh lock: more rows share that created_at than args.batchSize {current}; raise it above that group (UPDATE background_migrations SET args = jsonb_set(args, '{{batchSize}}', '<n>') WHERE name = '{name}') and restart the worker",
            p.spec.migrations.stuck_after
        ),
    )
}
