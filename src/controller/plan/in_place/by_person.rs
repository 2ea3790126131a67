//! `imageChanges: User`: a person writes the images; what leaves the road is flagged here.

use crate::api::Phase;
use crate::api::conditions::{self as cond, reason};
use crate::catalog::road::Hop;
use crate::controller::plan::{Gate, Planner, wait};
use crate::resources::deployments::views::{Role, running_version};

/// `imageChanges: User`: images moved past the next required stop, or below the release
/// reached, are flagged (condition + Event); nothing is written either way.
pub(super) fn flag_off_road(p: &mut Planner, hop: &Hop) -> Gate {
    let running = [Role::Web, Role::Worker].map(|r| {
        let d = match r {
            Role::Web => p.obs.web.as_ref(),
            Role::Worker => p.obs.worker.as_ref(),
        };
        running_version(d, r)
    });
    for v in running.into_iter().flatten() {
        if v > hop.to {
            let why = hop
                .required_because
                .as_deref()
                .map(|w| format!(": {w}"))
                .unwrap_or_default();
            let dropped: Vec<String> = p
                .catalog
                .irreversible_between(hop.to, v)
                .map(|i| format!("{} ({})", i.drops, i.at))
                .collect();
            let what_now = match dropped.as_slice() {
                [] => format!(
                    "Set them back to {} if ClickHouse's schema is still one {} knows, finish the stop, then go on",
                    hop.to, hop.to
                ),
                d => format!(
                    "Do not set them back: {v} has dropped {}; only a restore of the backups brings {} back",
                    d.join("; "),
                    hop.to
                ),
            };
            return Err(p.hold_step(
                cond::ROAD_FOLLOWED,
                Phase::Blocked,
                reason::STOP_SKIPPED,
                format!("the images run {v}, past the stop {}{why}. {what_now}", hop.to),
                wait::POLL,
            ));
        }
        if v < hop.from {
            return Err(p.hold_step(
                cond::ROAD_FOLLOWED,
                Phase::Blocked,
                reason::DOWNGRADED,
                format!(
                    "the images run {v}, below {} which this database has already run: an older image may crash-loop on the newer schema. Set them back to {}",
                    hop.from, hop.from
                ),
                wait::POLL,
            ));
        }
    }
    Ok(())
}
