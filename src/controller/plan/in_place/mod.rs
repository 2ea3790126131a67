//! The in-place part of the road: v3 → v3 and v3 → v4 hops on the same Deployments (v3 and v4
//! must never run side by side on one database). Each hop: its gates, web rolled first, then the
//! worker, both Available at the new release, then every background migration it runs finished.
//! The operator writes the images, or (`imageChanges: User`) a person does and the operator
//! says when it is safe and flags what leaves the road.

mod abort;
pub(crate) mod backup;
mod by_person;
pub(crate) mod copies;
mod flags;
mod gates;
mod idle;
mod probe;
pub(crate) mod road;
mod roll;
mod rows;
mod unmet;
pub(crate) mod v4_infra;

pub(crate) use abort::{abort, reversible};
pub(crate) use gates::{Unmet, release_ran, unmet_gates, words};
pub(crate) use road::{Road, destination, planned, recorded, release_now, stop_of};
pub(crate) use rows::{Unsettled, orphan_fix, rows_settled};

use crate::api::conditions::{self as cond, reason};
use crate::api::{ImageChanges, Phase};
use crate::catalog::road::HopMode;
use crate::controller::plan::facts::Fact;
use crate::controller::plan::{Action, Gate, Hold, Planner, Stage, wait};
use crate::controller::validate::Settings;

/// Whose Deployments the hops move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Walker {
    /// The v3 Deployments this upgrade created beside v2 (v2 now retired).
    Owned,
    /// A source already on v3 or v4: its own web and worker Deployments (the official chart's
    /// `<fullname>-web` and `<fullname>-worker`), never owned by the operator.
    Source,
}

/// Walk the in-place hops that are not finished; through all of them, record `finalizedAt`.
pub(crate) fn walk(p: &mut Planner, settings: &Settings, walker: Walker) -> Gate {
    if p.stage() != Stage::Finalizing {
        return Ok(());
    }
    let hops =
        planned(p).map_err(|e| Hold::new(Phase::Failed, reason::HOP_BLOCKED, format!("no road: {e}"), wait::IDLE))?;
    road::off_the_recorded_road(p, &hops)?;
    for hop in hops.iter().filter(|h| h.mode == HopMode::InPlace) {
        if recorded(&p.status, hop).is_some_and(|s| s.finished_at.is_some()) {
            continue;
        }
        if walker == Walker::Source {
            by_person::flag_off_road(p, hop)?;
        }
        if walker == Walker::Source && p.spec.strategy.image_changes == ImageChanges::User {
            by_person::v4_defaults_in_effect(p)?;
        }
        if recorded(&p.status, hop).is_none_or(|s| s.started_at.is_none()) {
            gates::start(p, hop, walker)?;
            // The hop's start is durable before its first image write (the executor writes the
            // status first): a write whose fact was lost would leave a release running that
            // status does not know.
            let by_user = walker == Walker::Source && p.spec.strategy.image_changes == ImageChanges::User;
            if !by_user {
                p.act(Action::RecordFacts);
            }
        }
        roll::roll(p, settings, hop, walker)?;
        roll::settled(p, settings, hop, walker)?;
        let now = p.now_time();
        road::record(p, hop).finished_at = Some(now);
        p.condition(
            cond::ROAD_FOLLOWED,
            true,
            reason::HOPPING,
            format!(
                "{} reached: web and worker Available, its background migrations finished",
                hop.to
            ),
        );
    }
    if walker == Walker::Source && p.spec.strategy.image_changes != ImageChanges::User {
        probe::removed(p)?;
    }
    p.record_now(Fact::Finalized);
    p.condition(
        cond::ROAD_FOLLOWED,
        true,
        reason::HOPS_DONE,
        format!("every stop reached: Langfuse runs {}", destination(p.spec)),
    );
    Ok(())
}
