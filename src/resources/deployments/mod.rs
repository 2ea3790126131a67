//! The v3 web and worker Deployments, built from the v2 pod so that everything v2 was given
//! (env as written, pull secrets, service account, scheduling) carries over unchanged.

pub mod views;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, PodSpec, PodTemplateSpec, Probe, SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{Labels, MANAGED_BY_LABEL, Role, VERSION_LABEL, v3_pod_labels, v3_selector};
use super::service::WebPort;
use crate::api::{DOMAIN, FIELD_MANAGER, LangfuseUpgradeSpec, V3Images};

pub const MIGRATIONS_ENV: &str = "LANGFUSE_ENABLE_BACKGROUND_MIGRATIONS";
pub const WORKER_PORT: i32 = 3030;

/// Annotation holding a hash of what the operator applied: equal hash, nothing to write.
pub fn applied_hash_annotation() -> String {
    format!("{DOMAIN}/applied-hash")
}
/// Pod-template annotation bumped to restart the worker (a rollout restart).
pub fn restart_annotation() -> String {
    format!("{DOMAIN}/restart")
}

/// Everything the builders need; all of it is already observed or decided.
#[derive(Clone, Debug)]
pub struct BuildInput<'a> {
    pub upgrade_name: &'a str,
    pub namespace: &'a str,
    /// Owner reference to the `LangfuseUpgrade`; `None` once released at completion.
    pub owner: Option<OwnerReference>,
    pub spec: &'a LangfuseUpgradeSpec,
    /// The v2 Deployment's name; v3 names derive from it as the official chart would.
    pub source_name: &'a str,
    pub source_selector: &'a Labels,
    pub source_pod: &'a PodSpec,
    pub source_container: &'a Container,
    pub web_port: &'a WebPort,
    /// Repositories of both images; the tag is `version`.
    pub images: &'a V3Images,
    pub version: &'a str,
    pub replicas: i32,
    pub migrations_enabled: bool,
    /// Bumped to roll the pods without any other change.
    pub restarts: i32,
}

pub fn deployment_name(source_name: &str, role: Role) -> String {
    format!("{source_name}-{}", role.as_str())
}

pub fn web_deployment(input: &BuildInput) -> Deployment {
    let port = input.web_port;
    let overrides = [plain("HOSTNAME", "0.0.0.0"), plain("PORT", &port.number.to_string())];
    let mut container = base_container(input, Role::Web, &overrides);
    container.ports = Some(vec![ContainerPort {
        name: Some(port.name.clone()),
        container_port: port.number,
        protocol: Some("TCP".into()),
        ..Default::default()
    }]);
    let named = IntOrString::String(port.name.clone());
    // Served under a sub-path, Langfuse answers its health endpoints there too.
    let base = health_base_path(input.source_container);
    let (ready, health) = (format!("{base}{READY_PATH}"), format!("{base}{HEALTH_PATH}"));
    container.readiness_probe = Some(http_probe(&ready, named.clone(), 10, 3));
    container.liveness_probe = Some(http_probe(&health, named.clone(), 20, 3));
    // The first pod runs the Prisma and ClickHouse migrations before it answers.
    container.startup_probe = Some(http_probe(&health, named, 10, 90));
    assemble(input, Role::Web, container)
}

pub fn worker_deployment(input: &BuildInput) -> Deployment {
    let overrides = [plain("PORT", &WORKER_PORT.to_string())];
    let mut container = base_container(input, Role::Worker, &overrides);
    container.ports = Some(vec![ContainerPort {
        name: Some("http".into()),
        container_port: WORKER_PORT,
        protocol: Some("TCP".into()),
        ..Default::default()
    }]);
    let port = IntOrString::Int(WORKER_PORT);
    container.readiness_probe = Some(http_probe("/api/health", port.clone(), 10, 3));
    container.liveness_probe = Some(http_probe("/api/health", port, 20, 3));
    assemble(input, Role::Worker, container)
}

const READY_PATH: &str = "/api/public/ready";
const HEALTH_PATH: &str = "/api/public/health";

/// The prefix v2's own probes put before Langfuse's health endpoints (the chart's
/// `langfuse.next.healthcheckBasePath`); empty when v2 has no such probe.
pub fn health_base_path(v2: &Container) -> String {
    [&v2.readiness_probe, &v2.liveness_probe, &v2.startup_probe]
        .into_iter()
        .flatten()
        .filter_map(|p| p.http_get.as_ref()?.path.as_deref())
        .find_map(|path| {
            let path = path.split('?').next().unwrap_or(path);
            path.strip_suffix(READY_PATH).or_else(|| path.strip_suffix(HEALTH_PATH))
        })
        .map(|base| base.trim_end_matches('/').to_string())
        .unwrap_or_default()
}

fn base_container(input: &BuildInput, role: Role, role_env: &[EnvVar]) -> Container {
    let v2 = input.source_container;
    let (component, repository) = match role {
        Role::Web => (&input.spec.target.web, &input.images.web),
        Role::Worker => (&input.spec.target.worker, &input.images.worker),
    };
    let mut env = v2.env.clone().unwrap_or_default();
    for var in v3_settings(input.spec).into_iter().chain(role_env.iter().cloned()) {
        upsert(&mut env, var);
    }
    // On v4, v3 behaviour unless extraEnv (below) opts into the new data model.
    if crate::version::Version::parse(input.version).is_some_and(|v| v.major >= 4) {
        for var in crate::resources::v4_env::as_env(&crate::resources::v4_env::effective(|_| None)) {
            upsert(&mut env, var);
        }
    }
    for var in input.spec.target.extra_env.iter().cloned() {
        upsert(&mut env, var);
    }
    // Last, so nothing inherited or extra can turn the migrations on early (invariant 2).
    upsert(
        &mut env,
        plain(MIGRATIONS_ENV, if input.migrations_enabled { "true" } else { "false" }),
    );
    Container {
        name: format!("langfuse-{}", role.as_str()),
        image: Some(format!("{repository}:{}", input.version)),
        image_pull_policy: v2.image_pull_policy.clone(),
        env: Some(env),
        env_from: v2.env_from.clone(),
        resources: component.resources.clone().or_else(|| v2.resources.clone()),
        security_context: v2.security_context.clone(),
        volume_mounts: v2.volume_mounts.clone(),
        ..Default::default()
    }
}

/// The v3-only settings, as env. Secrets stay `secretKeyRef`s (invariant 7).
fn v3_settings(spec: &LangfuseUpgradeSpec) -> Vec<EnvVar> {
    let ch = &spec.clickhouse;
    let mut env = vec![
        plain("CLICKHOUSE_URL", &ch.url),
        plain("CLICKHOUSE_MIGRATION_URL", &ch.migration_url),
        secret("CLICKHOUSE_USER", &ch.user_secret_ref),
        secret("CLICKHOUSE_PASSWORD", &ch.password_secret_ref),
        plain("CLICKHOUSE_CLUSTER_ENABLED", bool_str(ch.cluster_enabled)),
        plain("CLICKHOUSE_MIGRATION_SSL", bool_str(ch.migration_ssl)),
    ];
    if let Some(db) = &ch.database {
        env.push(plain("CLICKHOUSE_DB", db));
    }
    let redis = &spec.redis;
    if let Some(conn) = &redis.connection_string_secret_ref {
        env.push(secret("REDIS_CONNECTION_STRING", conn));
    }
    if let Some(host) = &redis.host {
        env.push(plain("REDIS_HOST", host));
        env.push(plain("REDIS_PORT", &redis.port.unwrap_or(6379).to_string()));
    }
    if let Some(auth) = &redis.auth_secret_ref {
        env.push(secret("REDIS_AUTH", auth));
    }
    if redis.tls_enabled {
        env.push(plain("REDIS_TLS_ENABLED", "true"));
    }
    let s3 = &spec.s3;
    env.push(plain("LANGFUSE_S3_EVENT_UPLOAD_BUCKET", &s3.bucket));
    let optional = [
        ("LANGFUSE_S3_EVENT_UPLOAD_REGION", &s3.region),
        ("LANGFUSE_S3_EVENT_UPLOAD_ENDPOINT", &s3.endpoint),
        ("LANGFUSE_S3_EVENT_UPLOAD_PREFIX", &s3.prefix),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            env.push(plain(name, value));
        }
    }
    env.push(plain(
        "LANGFUSE_S3_EVENT_UPLOAD_FORCE_PATH_STYLE",
        bool_str(s3.force_path_style),
    ));
    if let Some(r) = &s3.access_key_id_secret_ref {
        env.push(secret("LANGFUSE_S3_EVENT_UPLOAD_ACCESS_KEY_ID", r));
    }
    if let Some(r) = &s3.secret_access_key_secret_ref {
        env.push(secret("LANGFUSE_S3_EVENT_UPLOAD_SECRET_ACCESS_KEY", r));
    }
    env
}

fn assemble(input: &BuildInput, role: Role, container: Container) -> Deployment {
    let v2 = input.source_pod;
    let selector = v3_selector(input.upgrade_name, role);
    let pod_labels = v3_pod_labels(input.upgrade_name, role, input.source_selector);
    let mut object_labels = pod_labels.clone();
    object_labels.insert(MANAGED_BY_LABEL.into(), FIELD_MANAGER.into());
    object_labels.insert(VERSION_LABEL.into(), input.version.into());
    let template_annotations =
        (input.restarts > 0).then(|| BTreeMap::from([(restart_annotation(), input.restarts.to_string())]));
    let mut deployment = Deployment {
        metadata: ObjectMeta {
            name: Some(deployment_name(input.source_name, role)),
            namespace: Some(input.namespace.to_string()),
            labels: Some(object_labels),
            owner_references: input.owner.clone().map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(input.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            // Never fewer ready pods than asked for while rolling.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: template_annotations,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    // Langfuse first; v2's sidecars (a database proxy, say) carry over unchanged.
                    containers: std::iter::once(container)
                        .chain(
                            v2.containers
                                .iter()
                                .filter(|c| c.name != input.source_container.name)
                                .cloned(),
                        )
                        .collect(),
                    init_containers: v2.init_containers.clone(),
                    volumes: v2.volumes.clone(),
                    image_pull_secrets: v2.image_pull_secrets.clone(),
                    service_account_name: v2.service_account_name.clone(),
                    automount_service_account_token: v2.automount_service_account_token,
                    node_selector: v2.node_selector.clone(),
                    tolerations: v2.tolerations.clone(),
                    security_context: v2.security_context.clone(),
                    priority_class_name: v2.priority_class_name.clone(),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    };
    let hash = spec_hash(&deployment);
    deployment.metadata.annotations = Some(BTreeMap::from([(applied_hash_annotation(), hash)]));
    deployment
}

/// FNV-1a over the serialized object (without the hash itself): stable across restarts and
/// operator versions, unlike `DefaultHasher`.
pub fn spec_hash(deployment: &Deployment) -> String {
    let bytes = serde_json::to_vec(&(
        &deployment.metadata.labels,
        &deployment.metadata.owner_references,
        &deployment.spec,
    ))
    .expect("a Deployment serializes");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

pub fn applied_hash(deployment: &Deployment) -> Option<&str> {
    deployment
        .metadata
        .annotations
        .as_ref()?
        .get(&applied_hash_annotation())
        .map(String::as_str)
}

/// Whether the pod template turns the background migrations on (read from what is applied).
pub fn migrations_enabled(deployment: &Deployment) -> bool {
    let Some(pod) = deployment.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        return false;
    };
    pod.containers.iter().any(|c| {
        c.env
            .iter()
            .flatten()
            .any(|e| e.name == MIGRATIONS_ENV && e.value.as_deref() == Some("true"))
    })
}

fn upsert(env: &mut Vec<EnvVar>, var: EnvVar) {
    match env.iter_mut().find(|e| e.name == var.name) {
        Some(existing) => *existing = var,
        None => env.push(var),
    }
}

fn plain(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn secret(name: &str, selector: &SecretKeySelector) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(selector.clone()),
            ..Default::default()
        }),
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

fn http_probe(path: &str, port: IntOrString, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port,
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;

/// An image change on a Deployment the operator does not own: the only fields it writes there.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageChange {
    pub deployment: String,
    pub container: String,
    pub image: String,
    /// Only the variables the operator owns (v4's v3-behaviour flags), never a secret.
    pub env: Vec<EnvVar>,
    /// Roll one new pod at a time (web: Prisma's migrations must not race between pods).
    pub one_pod_at_a_time: bool,
    /// A startup probe long enough for the release's migrations (web of a hop), marked as the
    /// operator's by [`STARTUP_PROBE_ANNOTATION`]; `None` leaves none of the operator's.
    pub startup_probe: Option<Probe>,
}

/// The data-model road's write: only the flags it owns on the Langfuse container (and, to
/// restart the worker after a backfill row was reset, a pod-template annotation), applied by
/// a field manager of its own ([`DATA_MODEL_MANAGER`]) so that nothing another manager (the
/// operator's whole-Deployment applies, Helm) set is touched or taken away.
#[derive(Clone, Debug, PartialEq)]
pub struct FlagChange {
    pub deployment: String,
    pub container: String,
    pub env: Vec<EnvVar>,
    /// The restart annotation's value (the resets made so far), when a restart is wanted.
    pub restart: Option<u32>,
}

pub const DATA_MODEL_MANAGER: &str = "langfuse-upgrade-operator-data-model";
pub const DATA_MODEL_RESTART_ANNOTATION: &str = "upgrades.lfu-operator.dev/data-model-restart";

pub fn flag_change_body(change: &FlagChange, namespace: &str) -> serde_json::Value {
    let container = serde_json::json!({ "name": change.container, "env": change.env });
    let mut template = serde_json::json!({ "spec": { "containers": [container] } });
    if let Some(n) = change.restart {
        template["metadata"] = serde_json::json!({ "annotations": { DATA_MODEL_RESTART_ANNOTATION: n.to_string() } });
    }
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": change.deployment, "namespace": namespace },
        "spec": { "template": template },
    })
}

/// On a Deployment the operator does not own: the web's startup probe is the operator's, given
/// for a hop's migrations and taken away when the road is done.
pub const STARTUP_PROBE_ANNOTATION: &str = "upgrades.lfu-operator.dev/startup-probe";

/// The web's startup probe is the operator's (its annotation says so; managedFields are not
/// cached).
pub fn startup_probe_is_ours(d: &Deployment) -> bool {
    d.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(STARTUP_PROBE_ANNOTATION))
}

/// The startup probe the first pods of a hop get: Langfuse's health path on the web port (the
/// container's first, else Langfuse's 3000), up to 15 minutes, as v3 web beside v2 gets. The
/// official chart's web has none, and its liveness probe kills a pod migrating for 70 s.
pub fn migration_startup_probe(web: &Container) -> Probe {
    let port = web
        .ports
        .iter()
        .flatten()
        .next()
        .map(|p| match &p.name {
            Some(name) => IntOrString::String(name.clone()),
            None => IntOrString::Int(p.container_port),
        })
        .unwrap_or(IntOrString::Int(3000));
    http_probe(&format!("{}{HEALTH_PATH}", health_base_path(web)), port, 10, 90)
}

/// The server-side apply body of an [`ImageChange`]: the fields it names and nothing else, so
/// every other field stays with its owner (Helm, a GitOps tool, a person).
pub fn image_change_body(change: &ImageChange, namespace: &str) -> serde_json::Value {
    let mut container = serde_json::json!({ "name": change.container, "image": change.image });
    if !change.env.is_empty() {
        container["env"] = serde_json::to_value(&change.env).unwrap_or_default();
    }
    let mut metadata = serde_json::json!({ "name": change.deployment, "namespace": namespace });
    if let Some(probe) = &change.startup_probe {
        container["startupProbe"] = serde_json::to_value(probe).unwrap_or_default();
        metadata["annotations"] = serde_json::json!({
            STARTUP_PROBE_ANNOTATION: "the operator's, for a hop's migrations; removed when the road is done"
        });
    }
    let mut spec = serde_json::json!({ "template": { "spec": { "containers": [container] } } });
    if change.one_pod_at_a_time {
        spec["strategy"] = serde_json::json!({
            "type": "RollingUpdate",
            "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 }
        });
    }
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": spec,
    })
}
