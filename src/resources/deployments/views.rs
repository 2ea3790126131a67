//! What a Deployment says about the Langfuse it runs: which container is Langfuse's, which
//! release it runs, the image of another release for it, how much of it is available, and the
//! worker that goes with a web. Read by the plan (both roads), observe and the caches; pure.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;

use crate::api::LangfuseUpgradeSpec;
pub use crate::resources::labels::Role;
use crate::version::{Version, image_repository, image_tag};

/// The worker Deployment of a source on v3/v4: named, or the chart's `<fullname>-worker`.
pub fn worker_name(spec: &LangfuseUpgradeSpec) -> Option<String> {
    spec.source.worker.clone().or_else(|| {
        spec.source
            .deployment
            .strip_suffix("-web")
            .map(|base| format!("{base}-worker"))
    })
}

/// Whether a Deployment's Langfuse container runs an exact v3 or v4 release.
pub fn runs_v3_or_later(d: &Deployment) -> bool {
    running_version(Some(d), Role::Web).is_some_and(|v| v.major >= 3)
}

/// The Langfuse container of the v2 pod: the named one, else the only one, else `langfuse`.
pub fn source_container<'d>(spec: &LangfuseUpgradeSpec, d: &'d Deployment) -> Result<&'d Container, String> {
    let containers = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.as_slice())
        .unwrap_or_default();
    if let Some(name) = &spec.source.container {
        return containers
            .iter()
            .find(|c| &c.name == name)
            .ok_or_else(|| format!("the v2 pod has no container named {name:?}"));
    }
    match containers {
        [only] => Ok(only),
        // Named as the v2 chart names it, else the one running Langfuse's image (the official
        // chart's `langfuse-web` behind a sidecar injected first).
        _ => containers
            .iter()
            .find(|c| c.name == "langfuse")
            .or_else(|| langfuse_container(d, Role::Web))
            .ok_or_else(|| {
                "the pod has several containers, none named \"langfuse\" and none running a langfuse/langfuse image; set spec.source.container".into()
            }),
    }
}

/// The Langfuse container: the only one, else the one whose image is Langfuse's web or worker.
pub fn langfuse_container(d: &Deployment, role: Role) -> Option<&Container> {
    let containers = d.spec.as_ref()?.template.spec.as_ref()?.containers.as_slice();
    if let [only] = containers {
        return Some(only);
    }
    let wanted = match role {
        Role::Web => "langfuse",
        Role::Worker => "langfuse-worker",
    };
    containers.iter().find(|c| {
        c.image
            .as_deref()
            .map(image_repository)
            .is_some_and(|r| r == wanted || r.ends_with(&format!("/{wanted}")))
    })
}

/// The exact release a Deployment's Langfuse container names (`None` for a floating tag).
pub fn running_version(d: Option<&Deployment>, role: Role) -> Option<Version> {
    let image = langfuse_container(d?, role)?.image.as_deref()?;
    Version::parse(image_tag(image)?)
}

/// The image of release `v` from the repository the Deployment runs (a mirror stays a mirror).
pub fn image_for(d: Option<&Deployment>, role: Role, v: Version) -> Option<String> {
    let image = langfuse_container(d?, role)?.image.as_deref()?;
    Some(format!("{}:{v}", image_repository(image)))
}

/// (available, wanted) replicas.
pub fn availability(d: &Deployment) -> (i32, i32) {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let available = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    (available, want)
}
