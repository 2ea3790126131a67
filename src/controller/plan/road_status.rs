//! The road in status: each stop of the catalog's road, done, current or next, from the stage.

use super::{Planner, Stage};
use crate::api::{RoadStop, StopMode, StopState};
use crate::catalog::Catalog;
use crate::catalog::road::{HopMode, road};
use crate::version::Version;

/// The stops from the release v2 runs to the final one; empty while v2's version is unknown
/// (a floating tag) or when no road leads there (preflight and validation say why).
pub(super) fn road_status(p: &Planner) -> Vec<RoadStop> {
    let from = p.status.source_version.as_deref().and_then(Version::parse);
    let to = p.spec.target.final_version.as_deref().unwrap_or(&p.spec.target.version);
    let (Some(from), Some(to)) = (from, Version::parse(to)) else {
        return Vec::new();
    };
    let Ok(hops) = road(Catalog::current(), from, to, p.spec.target.accept_unknown_release) else {
        return Vec::new();
    };
    let stage = p.stage();
    let rolled_back = matches!(stage, Stage::RollingBack | Stage::RolledBack);
    hops.iter()
        .map(|hop| {
            // The first hop ends when v2 is retired; the in-place one when v3 runs the final version.
            let (done, current) = match hop.mode {
                HopMode::BesideV2 => (stage > Stage::Retiring && !rolled_back, stage <= Stage::Retiring),
                HopMode::InPlace => (
                    matches!(stage, Stage::Completing | Stage::Completed),
                    stage == Stage::Finalizing,
                ),
            };
            let state = match (done, current, rolled_back) {
                (true, ..) => StopState::Done,
                (_, _, true) => StopState::RolledBack,
                (_, true, _) => StopState::Current,
                _ => StopState::Next,
            };
            RoadStop {
                version: hop.to.to_string(),
                mode: match hop.mode {
                    HopMode::BesideV2 => StopMode::BesideV2,
                    HopMode::InPlace => StopMode::InPlace,
                },
                state,
                required_because: hop.required_because.clone(),
            }
        })
        .collect()
}
