//! The checks of the cluster side: versions, the v2 Deployment and Service, names, Secrets,
//! settings, HorizontalPodAutoscalers and the backup.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;

use crate::controller::plan::workloads::source_selector;
use crate::resources::deployments::views::source_container;
use crate::resources::labels::Labels;

use crate::api::{CheckId, CheckResult, PARALLEL_VERSION, WaivableCheck};
use crate::resources::deployments::{applied_hash, deployment_name};
use crate::resources::images::{Origin, v3_images};
use crate::resources::labels::{Role, UPGRADE_LABEL, selector_matches, v3_pod_labels};
use crate::resources::service::{resolve_web_port, selector_of};
use crate::version::{ImageVersion, image_version};

use super::MIN_SOURCE;
use super::{Ctx, Report};

/// The target runs next to v2 only at the parallel version (invariant 3).
pub(super) fn target_version(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { spec, .. } = *c;
    let target_ok = spec.target.version == PARALLEL_VERSION;
    r.line(CheckId::TargetVersion,
        if target_ok { Pass } else { Fail },
        if target_ok {
            format!("v3 runs {PARALLEL_VERSION} next to v2")
        } else {
            format!(
                "spec.target.version is {}, but only {PARALLEL_VERSION} runs safely next to v2 (3.29.1+ drops views v2 reads); set target.version: {PARALLEL_VERSION} and finalVersion: {}",
                spec.target.version, spec.target.version
            )
        },
    );
}

/// The v2 Deployment and its Langfuse container exist.
pub(super) fn source_deployment(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { spec, obs, .. } = *c;
    let source = obs.source.as_ref();
    match source {
        None => r.line(
            CheckId::SourceDeployment,
            Fail,
            format!("Deployment {:?} not found in this namespace", spec.source.deployment),
        ),
        Some(d) => match source_container(spec, d) {
            Ok(c) => r.line(CheckId::SourceDeployment, Pass, format!("container {:?} found", c.name)),
            Err(e) => r.line(CheckId::SourceDeployment, Fail, e),
        },
    }
}

/// Which images v3 will run, and from where.
pub(super) fn images(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { spec, container, .. } = *c;
    let (images, origin) = v3_images(spec, container);
    let from = match origin {
        Origin::Spec => "as spec.target names them".to_string(),
        Origin::SourceRegistry => "from v2's registry".to_string(),
        Origin::DockerHub => format!(
            "Docker Hub's names: v2's image {:?} is not named langfuse; set spec.target.web.image and worker.image if the cluster pulls from elsewhere",
            container.and_then(|c| c.image.clone()).unwrap_or_default()
        ),
    };
    r.line(
        CheckId::Images,
        if origin == Origin::DockerHub { Warn } else { Pass },
        format!(
            "v3 web {}:{}, worker {}:{} ({from})",
            images.web, spec.target.version, images.worker, spec.target.version
        ),
    );
}

/// v2 is at least the release whose Prisma migrations register the v3 rows.
pub(super) fn source_version(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { container, .. } = *c;
    if let Some(c) = container {
        let image = c.image.clone().unwrap_or_default();
        let (result, message) = match image_version(&image) {
            ImageVersion::Exact(v) if v.major == 2 && v >= MIN_SOURCE => (Pass, format!("v2 runs {v}")),
            ImageVersion::Exact(v) if v.major == 2 => (
                Fail,
                format!("v2 runs {v}; upgrade v2 to {MIN_SOURCE} or newer (ideally 2.95.x) first"),
            ),
            ImageVersion::Exact(v) => (Fail, format!("the source runs {v}, which is not Langfuse v2")),
            ImageVersion::Floating(tag) => (
                Warn,
                format!("image tag {tag:?} does not pin a version; cannot confirm v2 is at least {MIN_SOURCE}"),
            ),
            ImageVersion::Untagged => (
                Warn,
                format!("image {image:?} has no tag; cannot confirm v2 is at least {MIN_SOURCE}"),
            ),
        };
        r.waivable(WaivableCheck::SourceVersion, result, message);
    }
}

/// The Service selects v2 by a selector, targets a port v3 web will serve, and selects no v3 pod.
pub(super) fn service(r: &mut Report, c: &Ctx) {
    let Some(svc) = &c.obs.service else {
        let missing = format!("Service {:?} not found in this namespace", c.spec.source.service);
        r.line(CheckId::Service, CheckResult::Fail, missing);
        return;
    };
    let selector = selector_of(svc);
    selects_v2(r, c, svc, &selector);
    if let Some(d) = c.source {
        selects_no_v3(r, c.upgrade, &selector, d);
    }
}

/// A selector (the operator switches only selectors) that selects the v2 pods, on a port v3 web
/// will serve.
fn selects_v2(r: &mut Report, c: &Ctx, svc: &Service, selector: &Labels) {
    use CheckResult::*;
    let pod_labels = c
        .source
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if selector.is_empty() {
        r.line(
            CheckId::Service,
            Fail,
            "the Service has no selector (endpoints managed by hand); the operator can only switch a selector",
        );
    } else if c.source.is_some() && !selector_matches(selector, &pod_labels) {
        r.line(
            CheckId::Service,
            Fail,
            format!(
                "the Service selector {} does not select the v2 pods",
                crate::controller::plan::labels_text(selector)
            ),
        );
    } else if let Some(container) = c.container {
        match resolve_web_port(svc, container) {
            Ok(port) => r.line(
                CheckId::Service,
                Pass,
                format!("targets port {} ({}) which v3 web will serve", port.name, port.number),
            ),
            Err(e) => r.line(CheckId::Service, Fail, e),
        }
    }
}

/// Invariant 1 before anything runs: the v2 selector can match no v3 pod.
fn selects_no_v3(r: &mut Report, upgrade: &str, selector: &Labels, source: &Deployment) {
    let v2_selector = source_selector(source);
    let leaks: Vec<&str> = [Role::Web, Role::Worker]
        .into_iter()
        .filter(|role| selector_matches(selector, &v3_pod_labels(upgrade, *role, &v2_selector)))
        .map(|role| role.as_str())
        .collect();
    if leaks.is_empty() {
        r.line(
            CheckId::SelectorIsolation,
            CheckResult::Pass,
            "the v2 Service selector matches no v3 pod",
        );
    } else {
        r.line(
            CheckId::SelectorIsolation,
            CheckResult::Fail,
            format!(
                "the Service selector {} would also select v3 {} pods; narrow it to the v2 Deployment's selector",
                crate::controller::plan::labels_text(selector),
                leaks.join(" and ")
            ),
        );
    }
}

/// The v3 Deployment names are free (or already this upgrade's).
pub(super) fn names(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { upgrade, spec, obs, .. } = *c;
    let taken: Vec<String> = [(Role::Web, &obs.web), (Role::Worker, &obs.worker)]
        .into_iter()
        .filter_map(|(role, d)| d.as_ref().map(|d| (role, d)))
        .filter(|(_, d)| {
            let ours = d
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(UPGRADE_LABEL))
                .is_some_and(|v| v == upgrade);
            !ours || applied_hash(d).is_none()
        })
        .map(|(role, _)| deployment_name(&spec.source.deployment, role))
        .collect();
    if taken.is_empty() {
        r.line(CheckId::Names, Pass, "the v3 Deployment names are free");
    } else {
        r.line(
            CheckId::Names,
            Fail,
            format!(
                "Deployment {} already exists and was not created by this upgrade",
                taken.join(", ")
            ),
        );
    }
}

/// Every Secret key the spec refers to exists.
pub(super) fn secrets(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { obs, .. } = *c;
    if obs.missing_secret_keys.is_empty() {
        r.line(CheckId::Secrets, Pass, "every referenced Secret key exists");
    } else {
        r.line(
            CheckId::Secrets,
            Fail,
            format!("missing Secret keys: {}", obs.missing_secret_keys.join(", ")),
        );
    }
}

/// v2 and the spec agree on ClickHouse cluster mode.
pub(super) fn cluster_mode(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { spec, container, .. } = *c;
    if let Some(c) = container {
        let cluster = c
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "CLICKHOUSE_CLUSTER_ENABLED")
            .and_then(|e| e.value.clone());
        match cluster {
            Some(v) if (v == "true") != spec.clickhouse.cluster_enabled => r.line(
                CheckId::ClusterMode,
                Fail,
                format!(
                    "v2 sets CLICKHOUSE_CLUSTER_ENABLED={v} but spec.clickhouse.clusterEnabled is {}; make them agree",
                    spec.clickhouse.cluster_enabled
                ),
            ),
            _ => r.line(
                CheckId::ClusterMode,
                Pass,
                format!("CLICKHOUSE_CLUSTER_ENABLED={}", spec.clickhouse.cluster_enabled),
            ),
        }
    }
}

/// A HorizontalPodAutoscaler on v2 would scale it back up after retirement.
pub(super) fn hpa(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { obs, .. } = *c;
    if !obs.hpas_on_source.is_empty() {
        r.waivable(WaivableCheck::HorizontalPodAutoscaler,
            Warn,
            format!("HorizontalPodAutoscaler {} targets v2 and would scale it back up after retirement; the operator will report it, not delete it", obs.hpas_on_source.join(", ")),
        );
    }
}

/// A backup is acknowledged.
pub(super) fn backup(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { spec, .. } = *c;
    if spec.backup.acknowledged {
        r.waivable(
            WaivableCheck::Backup,
            Pass,
            format!(
                "acknowledged{}",
                spec.backup
                    .reference
                    .as_ref()
                    .map(|x| format!(": {x}"))
                    .unwrap_or_default()
            ),
        );
    } else {
        r.waivable(
            WaivableCheck::Backup,
            Fail,
            "take a Postgres backup, then set spec.backup.acknowledged: true",
        );
    }
}
