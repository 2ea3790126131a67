//! Test fixtures: a Langfuse v2 laid out as the v2-era official chart does (reference §7), an
//! upgrade for it, and observations of the cluster in each state. Used by unit tests only.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, LocalObjectReference, PodSpec, PodTemplateSpec, SecretKeySelector,
    Service, ServicePort, ServiceSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::*;
use crate::controller::observed::Reading;
use crate::controller::observed::{Endpoint, Observed};
use crate::migrations::{MigrationRow, PostgresFacts, TableCounts, V3_MIGRATIONS};
use crate::resources::labels::Labels;
use crate::verify::ClickHouseFacts;

pub const NS: &str = "langfuse";
pub const RELEASE: &str = "prod";
pub const V2_NAME: &str = "prod-langfuse";
pub const UPGRADE: &str = "to-v3";
pub const UID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}
pub fn time(secs: i64) -> Time {
    Time(t(secs))
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub fn chart_selector() -> Labels {
    labels(&[
        ("app.kubernetes.io/name", "langfuse"),
        ("app.kubernetes.io/instance", RELEASE),
    ])
}

pub(crate) fn secret_ref(name: &str, key: &str) -> SecretKeySelector {
    SecretKeySelector {
        name: name.into(),
        key: key.into(),
        optional: None,
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(secret_ref(secret, key)),
            ..Default::default()
        }),
    }
}

/// The v2 Deployment of chart 0.8.0: container `langfuse`, port `http` 3000, env with Secret refs.
pub fn v2_deployment(replicas: i32) -> Deployment {
    let container = Container {
        name: "langfuse".into(),
        image: Some("ghcr.io/langfuse/langfuse:2.95.9".into()),
        image_pull_policy: Some("IfNotPresent".into()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: 3000,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(vec![
            env("NODE_ENV", "production"),
            env("HOSTNAME", "0.0.0.0"),
            env("PORT", "3000"),
            env_secret("DATABASE_URL", "prod-langfuse-db", "url"),
            env("NEXTAUTH_URL", "https://langfuse.example.com"),
            env_secret("NEXTAUTH_SECRET", "prod-langfuse-nextauth", "nextauth-secret"),
            env_secret("SALT", "prod-langfuse-salt", "salt"),
            env("TELEMETRY_ENABLED", "true"),
            // A v2 that had it set must not leak it into v3 before the shift.
            env("LANGFUSE_ENABLE_BACKGROUND_MIGRATIONS", "true"),
        ]),
        ..Default::default()
    };
    Deployment {
        metadata: ObjectMeta {
            name: Some(V2_NAME.into()),
            namespace: Some(NS.into()),
            generation: Some(1),
            labels: Some(labels(&[
                ("app.kubernetes.io/name", "langfuse"),
                ("app.kubernetes.io/instance", RELEASE),
                ("app.kubernetes.io/managed-by", "Helm"),
                ("helm.sh/chart", "langfuse-0.8.0"),
            ])),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(chart_selector()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(chart_selector()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    image_pull_secrets: Some(vec![LocalObjectReference { name: "regcred".into() }]),
                    service_account_name: Some("prod-langfuse".into()),
                    node_selector: Some(BTreeMap::from([("pool".to_string(), "apps".to_string())])),
                    tolerations: Some(vec![Toleration {
                        key: Some("dedicated".into()),
                        operator: Some("Exists".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(replicas),
            ready_replicas: Some(replicas),
            available_replicas: Some(replicas),
            updated_replicas: Some(replicas),
            ..Default::default()
        }),
    }
}

pub fn v2_service(selector: Labels) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(V2_NAME.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 3000,
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn spec() -> LangfuseUpgradeSpec {
    LangfuseUpgradeSpec {
        source: SourceSpec {
            deployment: V2_NAME.into(),
            service: V2_NAME.into(),
            container: None,
            worker: None,
        },
        target: TargetSpec::default(),
        clickhouse: ClickHouseSpec {
            url: "http://clickhouse:8123".into(),
            migration_url: "clickhouse://clickhouse:9000".into(),
            user_secret_ref: secret_ref("clickhouse", "user"),
            password_secret_ref: secret_ref("clickhouse", "password"),
            cluster_enabled: false,
            database: None,
            migration_ssl: false,
        },
        redis: RedisSpec {
            connection_string_secret_ref: Some(secret_ref("redis", "url")),
            host: None,
            port: None,
            auth_secret_ref: None,
            tls_enabled: false,
        },
        s3: S3Spec {
            bucket: "langfuse-events".into(),
            region: Some("eu-west-1".into()),
            endpoint: None,
            prefix: Some("events/".into()),
            force_path_style: false,
            access_key_id_secret_ref: Some(secret_ref("s3", "access-key-id")),
            secret_access_key_secret_ref: Some(secret_ref("s3", "secret-access-key")),
        },
        postgres: None,
        strategy: StrategySpec::default(),
        migrations: MigrationsSpec::default(),
        preflight: PreflightSpec::default(),
        backup: BackupSpec {
            acknowledged: true,
            reference: Some("snap-1".into()),
            acknowledged_hops: Vec::new(),
            hop_backups: Vec::new(),
        },
        paused: false,
        abort: false,
        data_model: Default::default(),
        handoff: None,
    }
}

pub fn upgrade(spec: LangfuseUpgradeSpec, status: LangfuseUpgradeStatus) -> LangfuseUpgrade {
    let mut u = LangfuseUpgrade::new(UPGRADE, spec);
    u.metadata.namespace = Some(NS.into());
    u.metadata.uid = Some(UID.into());
    u.metadata.generation = Some(1);
    u.metadata.finalizers = Some(vec![FINALIZER.into()]);
    u.status = Some(status);
    u
}

pub fn rows(finished: bool, now: Timestamp) -> Vec<MigrationRow> {
    V3_MIGRATIONS
        .iter()
        .map(|n| MigrationRow {
            finished_at: finished.then_some(now),
            ..queued_row(n)
        })
        .collect()
}

/// A registered row no worker has taken yet.
pub fn queued_row(name: &str) -> MigrationRow {
    MigrationRow {
        name: name.to_string(),
        finished_at: None,
        failed_at: None,
        failed_reason: None,
        locked_at: None,
        cursor: None,
        oldest_row: None,
        batch_size: None,
        env_gate: None,
        taken: false,
    }
}

/// Postgres as preflight sees a healthy v2.95.9 database.
pub fn healthy_postgres() -> PostgresFacts {
    PostgresFacts {
        server_version_num: Some(150008),
        migrations: rows(false, t(0)),
        ..Default::default()
    }
}

pub fn healthy_clickhouse() -> ClickHouseFacts {
    ClickHouseFacts {
        version: Some("24.8.4.13".into()),
        schema: Some((8, false)),
        counts: None,
        recent_counts: None,
        missing_tables: Vec::new(),
        // What an admin user shows.
        grants: Reading::Answered(crate::verify::grants::Grants::parse(&[
            "GRANT SELECT, INSERT, ALTER, CREATE, DROP ON *.* TO default".to_string(),
        ])),
        copy_counts: None,
        v4: Reading::NotAsked,
        events: Reading::NotAsked,
    }
}

/// The cluster before anything was touched.
pub fn untouched() -> Observed {
    Observed {
        source: Some(v2_deployment(2)),
        service: Some(v2_service(chart_selector())),
        endpoints: vec![
            Endpoint {
                pod: Some("prod-langfuse-abc".into()),
                ready: true,
            },
            Endpoint {
                pod: Some("prod-langfuse-def".into()),
                ready: true,
            },
        ],
        postgres: Reading::Answered(healthy_postgres()),
        clickhouse: Reading::Answered(healthy_clickhouse()),
        redis: Reading::Answered(crate::databases::RedisFacts {
            version: "7.2.4".into(),
            tls: false,
            eviction_policy: Some("noeviction".into()),
        }),
        s3: Reading::Answered(crate::databases::S3Facts {
            marker: Some("events/lfu-preflight-0".into()),
        }),
        ..Default::default()
    }
}

/// Mark an applied Deployment as fully rolled out, as the Deployment controller would.
pub fn rolled_out(mut d: Deployment) -> Deployment {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    d.metadata.generation = Some(1);
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(replicas),
        ready_replicas: Some(replicas),
        available_replicas: Some(replicas),
        updated_replicas: Some(replicas),
        ..Default::default()
    });
    d
}

pub fn counts(n: i64) -> TableCounts {
    TableCounts {
        traces: n,
        observations: n * 3,
        scores: n / 2,
    }
}

/// The compiled-in catalog, for tests that hold a planner over it.
pub fn catalog() -> &'static crate::catalog::Catalog {
    static BUILTIN: std::sync::LazyLock<crate::catalog::Catalog> =
        std::sync::LazyLock::new(crate::catalog::Catalog::builtin);
    &BUILTIN
}

/// The web and worker Deployments the operator builds beside the v2 of [`v2_deployment`], at
/// `version`.
pub fn v3_pair(spec: &LangfuseUpgradeSpec, version: &str, migrations: bool, owner: bool) -> (Deployment, Deployment) {
    use crate::resources::deployments::views::source_container;
    use crate::resources::deployments::{BuildInput, web_deployment, worker_deployment};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    let v2 = v2_deployment(2);
    let container = source_container(spec, &v2).unwrap().clone();
    let pod = v2.spec.as_ref().unwrap().template.spec.clone().unwrap();
    let port = crate::resources::service::resolve_web_port(&v2_service(chart_selector()), &container).unwrap();
    let selector = chart_selector();
    let owner = owner.then(|| OwnerReference {
        uid: UID.into(),
        name: UPGRADE.into(),
        ..Default::default()
    });
    let input = BuildInput {
        upgrade_name: UPGRADE,
        namespace: NS,
        owner,
        spec,
        source_name: V2_NAME,
        source_selector: &selector,
        source_pod: &pod,
        source_container: &container,
        web_port: &port,
        images: &crate::resources::images::v3_images(spec, Some(&container)).0,
        version,
        replicas: 2,
        migrations_enabled: migrations,
        restarts: 0,
    };
    (
        web_deployment(&input),
        worker_deployment(&BuildInput { replicas: 1, ..input }),
    )
}
