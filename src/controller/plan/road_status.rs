//! The road in status: each stop of the catalog's road with its recorded times, done, current or
//! next.

use super::in_place::{planned, recorded, stop_of};
use super::{Planner, Stage};
use crate::api::{RoadStop, StopState};
use crate::catalog::road::HopMode;

/// The stops from the source release to the final one; empty while the source version is
/// unknown (a floating tag).
pub(super) fn road_status(p: &Planner) -> Vec<RoadStop> {
    // No road (a catalog replaced at run time that no longer knows a release): the recorded
    // stops and their times are kept, never dropped.
    let Ok(hops) = planned(p) else {
        return p.status.road.clone();
    };
    let stage = p.stage();
    let rolled_back = matches!(stage, Stage::RollingBack | Stage::RolledBack);
    let mut current_seen = false;
    let mut stops: Vec<RoadStop> = hops
        .iter()
        .map(|hop| {
            let before = recorded(&p.status, hop);
            let done = match hop.mode {
                // The first hop ends when v2 is retired.
                HopMode::BesideV2 => stage > Stage::Retiring && !rolled_back,
                HopMode::InPlace => before.is_some_and(|s| s.finished_at.is_some()),
            };
            let state = match (done, rolled_back, current_seen) {
                (true, ..) => StopState::Done,
                (_, true, _) => StopState::RolledBack,
                (_, _, false) => {
                    current_seen = true;
                    StopState::Current
                }
                _ => StopState::Next,
            };
            let mut stop = stop_of(hop, state);
            stop.backup = crate::controller::plan::in_place::backup::note(p, hop);
            if hop.mode == HopMode::BesideV2 {
                stop.started_at = p.status.provisioning_started_at.clone();
                stop.finished_at = p.status.source_retired_at.clone();
            } else if let Some(b) = before {
                stop.started_at = b.started_at.clone();
                stop.finished_at = b.finished_at.clone();
                stop.catalog = b.catalog.clone();
                // A hop taken under an older catalog keeps the gates it was judged by.
                if hop.gates.is_empty() {
                    stop.gates = b.gates.clone();
                }
                if !b.copies.is_empty() {
                    stop.copies = b.copies.clone();
                }
            }
            stop
        })
        .collect();
    // A hop that started is a fact even when the road no longer has it (finalVersion or the
    // catalog changed): kept, so what ran is never forgotten.
    for old in &p.status.road {
        let kept = stops.iter().any(|s| s.from == old.from && s.version == old.version);
        if old.started_at.is_some() && !kept {
            stops.push(old.clone());
        }
    }
    stops
}
