//! The plan: pure and synchronous. Spec, recorded facts, observations and `now` in; the phase,
//! the writes to make, the facts to record, the conditions and the requeue out.
//!
//! The phase is never read back: every decision walks the gates below from the top, so losing
//! the `phase` field, or restarting the operator between any two writes, gives the same answer.

mod action;
pub(crate) mod data_model;
pub(crate) mod dirty;
mod drain;
mod facts;
mod handoff;
mod handoff_leftovers;
pub(crate) mod in_place;
mod migrate;
mod needs;
mod planner;
mod preflight;
pub(crate) mod reading;
mod remedies;
mod retire;
mod road_status;
mod rollback;
mod shift;
pub mod stage;
mod verify;
pub(crate) mod workloads;

use jiff::Timestamp;

use super::validate::validate;
use crate::api::conditions::reason;
use crate::api::{APPROVE_ANNOTATION, LangfuseUpgrade, Phase, Promotion};
use crate::controller::observed::Observed;
pub use action::{Action, labels_text};
use in_place::Road;
pub use needs::{Needs, look_ahead, needs, second_look, stage_of};
pub use planner::Decision;
/// How often Postgres is polled while a copy moves (for `make bench`).
pub use planner::wait::DB_WATCH as DB_POLL_INTERVAL;
pub(crate) use planner::{Gate, Hold, Planner, wait};
pub use stage::Stage;

pub use preflight::checks as preflight_checks;

/// Decide the next step for one `LangfuseUpgrade`, over the catalog the operator runs with.
pub fn plan(upgrade: &LangfuseUpgrade, obs: &Observed, now: Timestamp) -> Decision {
    plan_over(upgrade, obs, &crate::catalog::Catalog::current(), now)
}

/// [`plan`] over a given release catalog.
pub fn plan_over(
    upgrade: &LangfuseUpgrade,
    obs: &Observed,
    catalog: &crate::catalog::Catalog,
    now: Timestamp,
) -> Decision {
    let mut p = Planner::new(upgrade, obs, catalog, now);
    p.step_conditions_from_facts(false);
    if upgrade.metadata.deletion_timestamp.is_some() {
        let hold = rollback::cleanup(&mut p);
        return p.finish(hold);
    }
    let hold = walk(&mut p);
    p.finish(hold)
}

/// Every gate either holds the upgrade in a phase or lets it through; through all of them it
/// completes.
fn walk(p: &mut Planner) -> Hold {
    match gates(p) {
        Ok(()) => retire::complete(p),
        Err(hold) => hold,
    }
}

fn gates(p: &mut Planner) -> Gate {
    ended(p)?;
    if !p.has_finalizer() {
        p.act(Action::AddFinalizer);
    }
    preflight::read_source_version(p);
    match p.road() {
        Road::InPlace => in_place_gates(p),
        Road::BesideV2 => beside_v2_gates(p),
    }
}

/// Completed or rolled back: what is left to watch (the Service, what the rollback put back).
fn ended(p: &mut Planner) -> Gate {
    match p.stage() {
        Stage::Completed => return Err(retire::after_completion(p)),
        Stage::RolledBack => {}
        _ => return Ok(()),
    }
    let message = match p.road() {
        Road::InPlace => format!(
            "aborted: Langfuse runs {}; delete this object, or create a new one to try again",
            p.status.target_version.clone().unwrap_or_default()
        ),
        Road::BesideV2 => {
            if let Some(hold) = rollback::after_rollback(p) {
                return Err(hold);
            }
            let why = p.status.rollback.as_ref().and_then(|r| r.reason.clone());
            format!(
                "rolled back to v2: {}; delete this object, or create a new one to try again",
                why.unwrap_or_default()
            )
        }
    };
    Err(Hold::new(Phase::RolledBack, reason::ROLLED_BACK, message, wait::IDLE))
}

/// The road from v2: v3 beside it, the switch, the drain, the copy, its proof, v2 retired, then
/// the in-place hops on what the upgrade made.
fn beside_v2_gates(p: &mut Planner) -> Gate {
    if p.spec.abort {
        return rollback::abort(p);
    }
    if p.status.rollback.as_ref().is_some_and(|r| r.started_at.is_some()) {
        return rollback::roll_back(p, rollback::V3After::KeepAtZero);
    }
    let settings = settings(p)?;
    preflight::gate(p, &settings)?;
    shift::record_ahead(p);
    let ready = workloads::ensure(p, &settings)?;
    promotion(p)?;
    shift::gate(p, &ready)?;
    rollback::after_shift(p, &settings, &ready)?;
    drain::drain(p, &settings)?;
    migrate::migrate(p, &settings, &ready)?;
    verify::verify(p)?;
    retire::retire(p, &settings)?;
    in_place::walk(p, &settings, in_place::Walker::Owned)
}

/// `promotion: Manual`: the switch waits for a person's approval.
fn promotion(p: &Planner) -> Gate {
    if p.spec.strategy.promotion == Promotion::Manual && p.status.traffic_shifted_at.is_none() && !p.approved() {
        return Err(Hold::new(
            Phase::AwaitingPromotion,
            reason::AWAITING_APPROVAL,
            format!(
                "v3 is Available; set spec.strategy.approved: true (or annotate {APPROVE_ANNOTATION}=true) to shift traffic"
            ),
            wait::IDLE,
        ));
    }
    Ok(())
}

/// A source already on v3 or v4: preflight, then the in-place hops, nothing beside it.
fn in_place_gates(p: &mut Planner) -> Gate {
    if p.spec.abort {
        return in_place::abort(p);
    }
    let settings = settings(p)?;
    preflight::gate(p, &settings)?;
    in_place::walk(p, &settings, in_place::Walker::Source)
}

/// The spec parsed, or the hold that says why it cannot be; and `paused` honoured.
fn settings(p: &Planner) -> Result<crate::controller::validate::Settings, Hold> {
    let settings = validate(p.upgrade).map_err(|e| {
        Hold::new(
            Phase::Pending,
            reason::INVALID_SPEC,
            format!("invalid spec: {e}"),
            wait::IDLE,
        )
    })?;
    if p.spec.paused {
        return Err(Hold::new(
            Phase::Paused,
            reason::PAUSED,
            "spec.paused is true: nothing is changed until it is false",
            wait::IDLE,
        ));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_data_model;
#[cfg(test)]
mod tests_hops;
