//! A hop whose background migrations nobody runs: Langfuse's worker looks for rows only when it
//! starts, so a row whose lock went stale (its worker died) or that no worker picked up waits
//! forever. On the operator's own Deployments the worker is restarted (bounded, as beside v2);
//! on a source's, the operator does not restart a Deployment it does not own: it says nothing
//! runs and how to restart it (`Stalled=True`). The same bound for a release whose web never
//! registered the rows the catalog expects.

use std::time::Duration;

use super::Walker;
use super::road::recorded;
use crate::api::conditions::{self as cond, reason};
use crate::api::{Phase, RemedyKind};
use crate::catalog::road::Hop;
use crate::controller::plan::{Hold, Planner, wait};
use crate::controller::validate::Settings;
use crate::migrations::MigrationRow;

/// How long after the hop started (or the worker last restarted) no running row means idle.
pub(super) const IDLE_GRACE: Duration = Duration::from_secs(120);
/// Bounded restarts of the operator's own worker, as beside v2.
const MAX_RESTARTS: i32 = 2;

/// Rows wait and none runs (the caller checked), the grace having passed: the hold (or the
/// restart) that says so.
pub(super) fn idle(
    p: &mut Planner,
    settings: &Settings,
    hop: &Hop,
    walker: Walker,
    waiting: &[MigrationRow],
) -> Option<Hold> {
    if waiting.is_empty() {
        return None;
    }
    let started = recorded(&p.status, hop).and_then(|s| s.started_at.clone());
    let last_start = match (&started, &p.status.worker_restarted_at) {
        (Some(a), Some(b)) => Some(if a.0 > b.0 { a.clone() } else { b.clone() }),
        (a, b) => a.clone().or(b.clone()),
    };
    if p.since(&last_start).is_none_or(|d| d < IDLE_GRACE) {
        return None;
    }
    let names: Vec<&str> = waiting.iter().map(|r| r.name.as_str()).collect();
    if walker == Walker::Owned
        && p.spec.migrations.remediation
        && p.status.remedies_used(RemedyKind::IdleRestart) < MAX_RESTARTS
    {
        p.status.count_remedy(RemedyKind::IdleRestart);
        if let Err(hold) = crate::controller::plan::remedies::restart_worker(p, settings) {
            return Some(hold);
        }
        return Some(p.hold_step(
            cond::ROAD_FOLLOWED,
            Phase::Finalizing,
            reason::REMEDY_APPLIED,
            format!(
                "no background migration of {} was running ({}: a stale lock or never picked up); restarting the worker, which looks for work only when it starts",
                hop.to,
                names.join(", ")
            ),
            wait::ROLLOUT,
        ));
    }
    let worker = crate::controller::plan::remedies::worker_name(p);
    Some(p.hold_step(
        cond::ROAD_FOLLOWED,
        Phase::Blocked,
        reason::MIGRATION_STALLED,
        format!(
            "no background migration of {} runs: {} wait(s) with no worker on them (a stale lock or never picked up), and Langfuse's worker looks for work only when it starts. Restart it: kubectl -n {} rollout restart deployment/{worker}",
            hop.to,
            names.join(", "),
            p.namespace()
        ),
        wait::POLL,
    ))
}

/// The web never registered the rows the catalog expects of its release, the grace having
/// passed since the hop started.
pub(super) fn never_registered(p: &mut Planner, hop: &Hop, missing: &[&str]) -> Option<Hold> {
    let started = recorded(&p.status, hop).and_then(|s| s.started_at.clone());
    if p.since(&started).is_none_or(|d| d < IDLE_GRACE * 5) {
        return None;
    }
    Some(p.hold_step(
        cond::ROAD_FOLLOWED,
        Phase::Blocked,
        reason::MIGRATION_STALLED,
        format!(
            "{} runs, but its web has not registered the background migrations {} in {} minutes: its Prisma migrations may have failed; check the web logs (kubectl logs deploy/<web>) and _prisma_migrations",
            hop.to,
            missing.join(", "),
            (IDLE_GRACE * 5).as_secs() / 60
        ),
        wait::POLL,
    ))
}
