//! A stage's flags written on web, then the worker, each Available with them before the next.

use k8s_openapi::api::apps::v1::Deployment;

use super::{Planner, moving};
use crate::api::conditions::reason;
use crate::controller::plan::workloads::settled;
use crate::controller::plan::{Action, Gate, wait};
use crate::data_model::flags::{Setting, runs};
use crate::resources::deployments::FlagChange;
use crate::resources::deployments::views::{Role, availability, langfuse_container};

/// Both Deployments run `setting` and every replica is Available; `restart` (the resets made)
/// restarts the worker's pods once more.
pub(super) fn apply(p: &mut Planner, setting: Setting, restart: Option<u32>) -> Gate {
    let historic = p.spec.data_model.historic_data;
    for role in [Role::Web, Role::Worker] {
        let Some(d) = p.obs.deployment(role).cloned() else {
            let message = format!("the {} Deployment is gone", role.as_str());
            return Err(super::blocked(p, reason::SOURCE_MISSING, message));
        };
        let Some(container) = langfuse_container(&d, role).cloned() else {
            let message = format!("the {} Deployment has no Langfuse container", role.as_str());
            return Err(super::blocked(p, reason::SOURCE_MISSING, message));
        };
        let env = container.env.clone().unwrap_or_default();
        let restart = restart.filter(|_| role == Role::Worker);
        let restarted = restart.is_none_or(|n| restart_of(&d) == Some(n));
        if !runs(&env, setting, historic) || !restarted {
            let values = setting.values(historic);
            p.act(Action::SetFlags(Box::new(FlagChange {
                deployment: d.metadata.name.clone().unwrap_or_default(),
                container: container.name.clone(),
                env: crate::resources::v4_env::as_env(&values.map(|(n, v)| (n, v.to_string()))),
                restart,
            })));
            return Err(rolling(p, &d, role, setting, "writing"));
        }
        if !settled(&d) {
            return Err(rolling(p, &d, role, setting, "rolling"));
        }
    }
    Ok(())
}

fn rolling(
    p: &mut Planner,
    d: &Deployment,
    role: Role,
    setting: Setting,
    doing: &str,
) -> crate::controller::plan::Hold {
    let (available, want) = availability(d);
    let then = match role {
        Role::Web => "; the worker follows",
        Role::Worker => "",
    };
    let message = format!(
        "{doing} the {} flags on {} {} ({available}/{want} available){then}",
        setting.label(),
        role.as_str(),
        d.metadata.name.clone().unwrap_or_default(),
    );
    moving(p, reason::MOVING_DATA_MODEL, message, wait::ROLLOUT)
}

fn restart_of(d: &Deployment) -> Option<u32> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(crate::resources::deployments::DATA_MODEL_RESTART_ANNOTATION)?
        .parse()
        .ok()
}

/// Whether web and worker already run `setting` (the flags alone, not the rollout).
pub(super) fn written(p: &Planner, setting: Setting) -> bool {
    let historic = p.spec.data_model.historic_data;
    [Role::Web, Role::Worker].into_iter().all(|role| {
        p.obs
            .deployment(role)
            .and_then(|d| langfuse_container(d, role))
            .is_some_and(|c| runs(c.env.as_deref().unwrap_or_default(), setting, historic))
    })
}
