//! The v3 Deployments: build what they should be, write only on drift, and read their rollout.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use super::{Action, Hold, Planner, wait};
use crate::api::conditions::reason;
use crate::api::{LangfuseUpgrade, Phase, RemedyKind};
use crate::controller::validate::Settings;
use crate::resources::deployments::views::{Role, running_version, source_container};
use crate::resources::deployments::{BuildInput, applied_hash, web_deployment, worker_deployment};
use crate::resources::images::v3_images;
use crate::resources::labels::Labels;
use crate::resources::service::resolve_web_port;

/// What the rollout of the v3 Deployments looks like right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Rolled out at what the operator last applied, all replicas available.
    pub web: bool,
    pub worker: bool,
    /// At least one web pod serves.
    pub web_serving: bool,
}

pub fn source_selector(d: &Deployment) -> Labels {
    d.spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default()
}

pub fn owner_reference(upgrade: &LangfuseUpgrade) -> Option<OwnerReference> {
    upgrade.controller_owner_ref(&())
}

/// How the operator wants the v3 Deployments this reconcile.
#[derive(Clone, Debug)]
pub struct Desire {
    pub version: String,
    pub web_replicas: i32,
    pub worker_replicas: i32,
    pub owned: bool,
    pub migrations: bool,
}

/// Build both Deployments as `desire` says; `None` when v2 is gone and nothing can be built.
pub fn build(p: &Planner, desire: &Desire) -> Result<(Deployment, Deployment), String> {
    let source = p
        .obs
        .source
        .as_ref()
        .ok_or_else(|| format!("the v2 Deployment {:?} is gone", p.spec.source.deployment))?;
    let container = source_container(p.spec, source)?;
    let pod = source
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or("the v2 Deployment has no pod template")?;
    let service = p
        .obs
        .service
        .as_ref()
        .ok_or_else(|| format!("the Service {:?} is gone", p.spec.source.service))?;
    let port = resolve_web_port(service, container)?;
    let selector = source_selector(source);
    let restarts = p.status.remedies_used(RemedyKind::WorkerRestart);
    // Recorded at preflight, so a later change to v2's image cannot move v3's registry.
    let images = p
        .status
        .images
        .clone()
        .unwrap_or_else(|| v3_images(p.spec, Some(container)).0);
    let input = BuildInput {
        upgrade_name: p.name(),
        namespace: p.namespace(),
        owner: if desire.owned { owner_reference(p.upgrade) } else { None },
        spec: p.spec,
        source_name: &p.spec.source.deployment,
        source_selector: &selector,
        source_pod: pod,
        source_container: container,
        web_port: &port,
        images: &images,
        version: &desire.version,
        replicas: desire.web_replicas,
        migrations_enabled: desire.migrations,
        restarts: 0,
    };
    let web = web_deployment(&input);
    let worker = worker_deployment(&BuildInput {
        replicas: desire.worker_replicas,
        restarts,
        ..input
    });
    Ok((web, worker))
}

/// Rolled out at exactly what was built, every replica available.
pub fn rolled_out(observed: Option<&Deployment>, desired: &Deployment) -> bool {
    observed.is_some_and(|d| applied_hash(d) == applied_hash(desired) && settled(d))
}

/// The Deployment controller has acted on the newest spec: every replica updated and available,
/// none of an older ReplicaSet left.
pub fn settled(d: &Deployment) -> bool {
    let (Some(spec), Some(status)) = (d.spec.as_ref(), d.status.as_ref()) else {
        return false;
    };
    let want = spec.replicas.unwrap_or(1);
    status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && status.updated_replicas.unwrap_or(0) == want
        && status.available_replicas.unwrap_or(0) >= want
        && status.replicas.unwrap_or(0) == want
}

fn available(d: Option<&Deployment>) -> i32 {
    d.and_then(|d| d.status.as_ref())
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// Why a Deployment is not there yet, from its own conditions, for a person to act on.
fn rollout_text(role: &str, d: Option<&Deployment>, name: &str) -> String {
    let Some(d) = d else {
        return format!("v3 {role} Deployment {name} not created yet");
    };
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let deadline = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Progressing" && c.status == "False"))
        .map(|c| {
            format!(
                " ({}: {})",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )
        })
        .unwrap_or_default();
    format!(
        "v3 {role} {name}: {}/{want} available{deadline}; see `kubectl logs deploy/{name}`",
        available(Some(d))
    )
}

/// The version v3 runs: the target while any v2 pod may exist (invariant 3), then the release
/// of the newest in-place hop started.
pub fn version_now(p: &Planner) -> String {
    match (
        &p.status.source_retired_at,
        super::in_place::road::owned_version(&p.status),
    ) {
        (Some(_), Some(v)) if v2_gone(p) => v,
        _ => p.spec.target.version.clone(),
    }
}

/// No v2 pod exists and none is asked for.
pub fn v2_gone(p: &Planner) -> bool {
    v2_counts(p) == (0, 0)
}

/// v2's replicas: (asked for, pods that exist).
pub(super) fn v2_counts(p: &Planner) -> (i32, i32) {
    let d = p.obs.source.as_ref();
    let asked = d.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas).unwrap_or(0);
    let pods = d.and_then(|d| d.status.as_ref()).and_then(|s| s.replicas).unwrap_or(0);
    (asked, pods)
}

/// Write the v3 Deployments where they drifted from what they should be, and say how far the
/// rollout is. Before the shift a v3 that is not ready holds in `Provisioning`.
pub(super) fn ensure(p: &mut Planner, _settings: &Settings) -> Result<Readiness, Hold> {
    let web_initialised = p
        .obs
        .web
        .as_ref()
        .is_some_and(|d| available(Some(d)) >= 1 || d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 1);
    let desire = Desire {
        version: version_now(p),
        // One pod runs the Prisma and ClickHouse migrations before the others start.
        web_replicas: if web_initialised { p.spec.target.web.replicas } else { 1 },
        worker_replicas: p.spec.target.worker.replicas,
        owned: true,
        migrations: p.status.migrations_enabled_at.is_some(),
    };
    let (web, worker) =
        build(p, &desire).map_err(|e| Hold::new(Phase::Blocked, reason::SOURCE_MISSING, e, wait::ROLLOUT))?;
    let web_name = web.metadata.name.clone().unwrap_or_default();
    let worker_name = worker.metadata.name.clone().unwrap_or_default();
    if applied_hash_of(p.obs.web.as_ref()) != applied_hash(&web) && !older_than_running(p, &web, Role::Web) {
        p.act(Action::ApplyDeployment(Box::new(web.clone())));
    }
    let readiness = Readiness {
        web: web_initialised && rolled_out(p.obs.web.as_ref(), &web),
        worker: rolled_out(p.obs.worker.as_ref(), &worker),
        web_serving: available(p.obs.web.as_ref()) >= 1,
    };
    // The worker validates ClickHouse tables that web creates: it starts after web served once.
    // A later version change (finalVersion) rolls web first and the worker once web runs it:
    // web's startup registers the release's background migrations, and the manager looks for
    // work only when the worker starts.
    let web_first = p.status.source_retired_at.is_none() || readiness.web;
    if web_initialised
        && web_first
        && applied_hash_of(p.obs.worker.as_ref()) != applied_hash(&worker)
        && !older_than_running(p, &worker, Role::Worker)
    {
        p.act(Action::ApplyDeployment(Box::new(worker)));
    }
    if p.status.traffic_shifted_at.is_some() {
        return Ok(readiness);
    }
    if !readiness.web {
        return Err(Hold::new(
            Phase::Provisioning,
            reason::WEB_NOT_AVAILABLE,
            rollout_text("web", p.obs.web.as_ref(), &web_name),
            wait::ROLLOUT,
        ));
    }
    if !readiness.worker {
        return Err(Hold::new(
            Phase::Provisioning,
            reason::PROVISIONING,
            rollout_text("worker", p.obs.worker.as_ref(), &worker_name),
            wait::ROLLOUT,
        ));
    }
    Ok(readiness)
}

/// Invariant 10 at the write: a Langfuse release older than the one running is never applied,
/// whatever the view says. Such a view is stale (another replica moved the road on and this
/// one has not seen its status yet), or v2 came back after v3 moved on (the gates after this
/// one say so and hold): 3.29.0 would not start on what the newer release migrated.
fn older_than_running(p: &Planner, desired: &Deployment, role: Role) -> bool {
    let observed = match role {
        Role::Web => p.obs.web.as_ref(),
        Role::Worker => p.obs.worker.as_ref(),
    };
    let running = running_version(observed, role);
    let wanted = running_version(Some(desired), role);
    matches!((running, wanted), (Some(running), Some(wanted)) if wanted < running)
}

fn applied_hash_of(d: Option<&Deployment>) -> Option<&str> {
    d.and_then(applied_hash)
}
