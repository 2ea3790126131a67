//! A started hop rolled out: web first, then the worker, each to the hop's release, then every
//! background migration the release runs settled.

use super::Walker;
use super::flags::v4_values;
use super::rows::{rows_of, settled_rows};
use crate::api::conditions::{self as cond, reason};
use crate::api::{ImageChanges, Phase};
use crate::catalog::road::Hop;
use crate::controller::plan::{Action, Gate, Hold, Planner, wait};
use crate::controller::validate::Settings;
use crate::resources::deployments::views::{Role, availability, image_for, langfuse_container, running_version};
use crate::resources::deployments::{ImageChange, migration_startup_probe};
use crate::resources::v4_env;
use crate::version::Version;
use k8s_openapi::api::apps::v1::Deployment;

/// Web, then the worker, Available at the hop's release.
pub(super) fn roll(p: &mut Planner, settings: &Settings, hop: &Hop, walker: Walker) -> Gate {
    if walker == Walker::Owned {
        let ready = crate::controller::plan::workloads::ensure(p, settings)?;
        if ready.web && ready.worker {
            return Ok(());
        }
        return Err(p.hold_step(
            cond::ROAD_FOLLOWED,
            Phase::Finalizing,
            reason::HOPPING,
            format!("rolling v3 to {}: web first, then the worker", hop.to),
            wait::ROLLOUT,
        ));
    }
    for role in [Role::Web, Role::Worker] {
        let Some(d) = p.obs.deployment(role).cloned() else {
            return Err(p.hold_step(
                cond::ROAD_FOLLOWED,
                Phase::Blocked,
                reason::SOURCE_MISSING,
                format!("the {} Deployment is gone", role.as_str()),
                wait::ROLLOUT,
            ));
        };
        set_image(p, &d, role, hop)?;
        rolled_out(p, &d, role, hop)?;
    }
    Ok(())
}

/// The image written, or (`imageChanges: User`) the person told which one to set.
fn set_image(p: &mut Planner, d: &Deployment, role: Role, hop: &Hop) -> Gate {
    let Some(change) = wanted_change(p, d, role, hop) else {
        return Ok(());
    };
    if p.spec.strategy.image_changes != ImageChanges::User {
        p.act(Action::SetImage(Box::new(change)));
        return Ok(());
    }
    let env = match change.env.as_slice() {
        [] => String::new(),
        vars => {
            let pairs: Vec<String> = vars
                .iter()
                .map(|e| format!("{}={}", e.name, e.value.clone().unwrap_or_default()))
                .collect();
            format!(
                " and its env {} (v3 behaviour on v4; set your own values in spec.target.extraEnv to opt in)",
                pairs.join(", ")
            )
        }
    };
    let name = d.metadata.name.clone().unwrap_or_default();
    Err(p.hold_step(
        cond::ROAD_FOLLOWED,
        Phase::Finalizing,
        reason::AWAITING_IMAGE_CHANGE,
        format!(
            "{} -> {}: set the {} image of Deployment {name} to {}{env}",
            hop.from,
            hop.to,
            role.as_str(),
            change.image
        ),
        wait::POLL,
    ))
}

/// Every replica Available at the hop's release.
fn rolled_out(p: &mut Planner, d: &Deployment, role: Role, hop: &Hop) -> Gate {
    if running_version(Some(d), role) == Some(hop.to) && crate::controller::plan::workloads::settled(d) {
        return Ok(());
    }
    let (available, want) = availability(d);
    let name = d.metadata.name.clone().unwrap_or_default();
    let then = match role {
        Role::Web => ", one new pod at a time; the worker follows",
        Role::Worker => "",
    };
    Err(p.hold_step(
        cond::ROAD_FOLLOWED,
        Phase::Finalizing,
        reason::HOPPING,
        format!(
            "{} -> {}: rolling {} {name} ({available}/{want} available at the new release){then}",
            hop.from,
            hop.to,
            role.as_str(),
        ),
        wait::ROLLOUT,
    ))
}

/// The write that puts `d` at the hop's release, if it is not there yet.
pub(super) fn wanted_change(p: &Planner, d: &Deployment, role: Role, hop: &Hop) -> Option<ImageChange> {
    let change = change_to(p, d, role, hop.to, true)?;
    let container = langfuse_container(d, role)?;
    let live_env = container.env.clone().unwrap_or_default();
    let env_there = change.env.iter().all(|e| live_env.contains(e));
    (container.image.as_deref() != Some(change.image.as_str()) || !env_there).then_some(change)
}

/// The whole apply that runs `d` at `release`: its image, the v4 flags (exactly the values the
/// hop's gates judged, always all four: a field the operator owns and leaves out of a later
/// apply would be removed), and for web the operator's startup probe when `probe` and the
/// container has none of its own.
pub(super) fn change_to(p: &Planner, d: &Deployment, role: Role, release: Version, probe: bool) -> Option<ImageChange> {
    let container = langfuse_container(d, role)?;
    let image = image_for(Some(d), role, release)?;
    let env = match release.major >= 4 {
        true => v4_env::as_env(&v4_values(p)),
        false => Vec::new(),
    };
    let ours = crate::resources::deployments::startup_probe_is_ours(d);
    let startup_probe = (probe && role == Role::Web && (ours || container.startup_probe.is_none()))
        .then(|| migration_startup_probe(container));
    Some(ImageChange {
        deployment: d.metadata.name.clone()?,
        container: container.name.clone(),
        image,
        env,
        one_pod_at_a_time: role == Role::Web,
        startup_probe,
    })
}

/// The hop's release's background migrations: registered (web's start does that) and every
/// row the worker runs finished.
pub(super) fn settled(p: &mut Planner, settings: &Settings, hop: &Hop, walker: Walker) -> Gate {
    let to = hop.to.to_string();
    let rows = rows_of(p).map_err(|(r, why)| Hold::new(Phase::Finalizing, r, why, wait::POLL))?;
    let catalog = p.catalog;
    if catalog.knows(hop.to) {
        let missing: Vec<&str> = catalog
            .rows_at(hop.to)
            .map(|m| m.name.as_str())
            .filter(|n| !rows.iter().any(|r| r.name == *n))
            .collect();
        if !missing.is_empty() {
            if let Some(hold) = super::idle::never_registered(p, hop, &missing) {
                return Err(hold);
            }
            return Err(p.hold_step(
                cond::ROAD_FOLLOWED,
                Phase::Finalizing,
                reason::HOPPING,
                format!(
                    "{to} runs; waiting for its web to register its background migrations ({})",
                    missing.join(", ")
                ),
                wait::POLL,
            ));
        }
    }
    // Only rows that simply wait (not a failed or an orphan row: those have their own holds).
    let running = rows
        .iter()
        .any(|r| r.state(p.now) == crate::migrations::RowState::Running);
    if let (Err(super::rows::Unsettled::Running { .. }), false) = (super::rows::rows_settled(p, &to), running) {
        let gates = crate::controller::plan::migrate::open_gates(p);
        let waiting: Vec<_> = rows
            .iter()
            .filter(|r| {
                use crate::migrations::RowState::{Queued, Stalled};
                matches!(r.state_with(p.now, &gates), Queued | Stalled)
            })
            .cloned()
            .collect();
        if let Some(hold) = super::idle::idle(p, settings, hop, walker, &waiting) {
            return Err(hold);
        }
    }
    let site = match walker {
        Walker::Owned => crate::controller::plan::remedies::Site::InPlaceOwned,
        Walker::Source => crate::controller::plan::remedies::Site::InPlaceSource,
    };
    settled_rows(p, settings, site, &to, &rows)
}
