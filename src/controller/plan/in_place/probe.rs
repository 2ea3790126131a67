//! The startup probe a hop gives the source's web (its migrations run before it answers) and
//! takes away once the road is done: one more rollout, at the release already running.

use super::roll::change_to;
use crate::api::Phase;
use crate::api::conditions::{self as cond, reason};
use crate::controller::plan::{Action, Gate, Planner, wait};
use crate::resources::deployments::startup_probe_is_ours as is_ours;
use crate::resources::deployments::views::{Role, running_version};

/// The road done: the operator's probe taken off the web (the same image and flags applied
/// without it), and the rollout that follows settled, before the road is said to be done.
pub(super) fn removed(p: &mut Planner) -> Gate {
    let Some(web) = p.obs.web.clone() else {
        return Ok(());
    };
    let Some(release) = running_version(Some(&web), Role::Web) else {
        return Ok(());
    };
    if is_ours(&web) {
        if let Some(change) = change_to(p, &web, Role::Web, release, false) {
            p.act(Action::SetImage(Box::new(change)));
        }
    } else if crate::controller::plan::workloads::settled(&web) {
        return Ok(());
    }
    Err(p.hold_step(
        cond::ROAD_FOLLOWED,
        Phase::Finalizing,
        reason::HOPPING,
        format!("{release} reached; taking away the startup probe the hops gave web (one pod at a time, same release)"),
        wait::ROLLOUT,
    ))
}
