//! The v4 flags as a hop's worker will run them (read by the gates, the rollout and the
//! infrastructure checks alike).

use crate::controller::plan::Planner;
use crate::resources::deployments::views::{Role, langfuse_container, running_version};
use crate::resources::v4_env;

/// The v4 flags as the worker will see them: `extraEnv`, else what its container already sets
/// (a chart value), else what is in effect now (the running release's default: a v4 already
/// on `events_only` by default stays there), else the v3-behaviour default.
pub(super) fn v4_values(p: &Planner) -> Vec<(&'static str, String)> {
    let worker = p.obs.worker.as_ref();
    let live: Vec<(String, String)> = worker
        .and_then(|d| langfuse_container(d, Role::Worker))
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    let running = running_version(worker, Role::Worker);
    v4_env::effective(|name| {
        p.spec
            .target
            .extra_env
            .iter()
            .rev()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
            .or_else(|| live.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()))
            .or_else(|| p.catalog.env_default(name, running?))
    })
}
