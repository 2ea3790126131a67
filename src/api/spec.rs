//! The `LangfuseUpgrade` spec. Types stay lenient (strings, options) so that a spec the
//! apiserver let through can always be read back and answered with `InvalidSpec`, rather than
//! failing deserialization where no condition can be written.

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, SecretKeySelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::migrations_spec::MigrationsSpec;
use super::status::{CheckId, LangfuseUpgradeStatus};

/// The only v3 version that runs safely next to v2 (invariant 3).
pub const PARALLEL_VERSION: &str = "3.29.0";

/// Go-style duration as `metav1.Duration` prints it, e.g. `90s`, `5m`, `1h30m`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$";

/// Upgrade a running self-hosted Langfuse v2 to v3 with no downtime and no lost data.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "upgrades.lfu-operator.dev",
    version = "v1alpha1",
    kind = "LangfuseUpgrade",
    plural = "langfuseupgrades",
    shortname = "lfu",
    namespaced,
    status = "LangfuseUpgradeStatus",
    derive = "PartialEq",
    doc = "Upgrades a running self-hosted Langfuse v2 to v3 with no downtime and no lost data.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Source", type_ = "string", json_path = ".status.sourceVersion"),
    printcolumn(name = "Target", type_ = "string", json_path = ".status.targetVersion"),
    printcolumn(name = "Migrations", type_ = "string", json_path = ".status.migrationProgress"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(
        "!has(oldSelf.status) || !has(oldSelf.status.provisioningStartedAt) || (self.spec.target.version == oldSelf.spec.target.version && self.spec.source.deployment == oldSelf.spec.source.deployment && self.spec.source.service == oldSelf.spec.source.service)"
    ).message("spec.target.version, spec.source.deployment and spec.source.service cannot change once provisioning has started; abort this upgrade and create a new one instead"),
)]
#[serde(rename_all = "camelCase")]
pub struct LangfuseUpgradeSpec {
    /// The running Langfuse v2 (same namespace as this object).
    pub source: SourceSpec,
    /// The v3 to provision next to it.
    #[serde(default)]
    pub target: TargetSpec,
    /// ClickHouse settings new in v3.
    pub clickhouse: ClickHouseSpec,
    /// Redis (or Valkey) settings new in v3.
    pub redis: RedisSpec,
    /// S3 event upload bucket, new in v3.
    pub s3: S3Spec,
    /// How the operator reaches Postgres to watch the background migrations. Defaults to the
    /// v2 container's `DATABASE_URL` (a Secret reference read at runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSpec>,
    /// Promotion, drain, retirement and rollback policy.
    #[serde(default)]
    pub strategy: StrategySpec,
    /// How the background migrations are watched and remedied.
    #[serde(default)]
    pub migrations: MigrationsSpec,
    /// Preflight checks a person deliberately waives.
    #[serde(default)]
    pub preflight: PreflightSpec,
    /// A backup of Postgres (and ClickHouse, if it holds data) must be acknowledged.
    #[serde(default)]
    pub backup: BackupSpec,
    /// Stop acting (observation and status continue) until set back to false.
    #[serde(default)]
    pub paused: bool,
    /// Roll back to v2 (possible until v2 is retired) and stop.
    #[serde(default)]
    pub abort: bool,
    /// Once completed: hand Langfuse to a release of the official chart installed beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<super::HandoffSpec>,
    /// How v4's data-model road (`target.dataModel`) is walked.
    #[serde(default)]
    pub data_model: super::DataModelSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// Name of the v2 Deployment (same namespace; a name, not `namespace/name`).
    #[schemars(
        length(min = 1, max = 246),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub deployment: String,
    /// Name of the Service that routes traffic to v2 web (same namespace); its selector is
    /// switched to v3.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"))]
    pub service: String,
    /// The Langfuse container in the v2 pod; default: the only container, or the one named `langfuse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub container: Option<String>,
    /// For a Langfuse that already runs v3 or v4 (then `deployment` names its web Deployment,
    /// `<fullname>-web` in the official chart): its worker Deployment. Default: the web
    /// Deployment's name with its `-web` suffix replaced by `-worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub worker: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    /// From v2: the v3 run next to v2; only 3.29.0 is safe while v2 runs. From a v3 or v4
    /// source: the destination, unless `finalVersion` names one.
    #[serde(default = "default_version")]
    #[schemars(regex(pattern = r"^[34]\.[0-9]+\.[0-9]+$"))]
    pub version: String,
    /// The release to end on (e.g. the newest v3, or a v4): reached stop by stop along the road
    /// of the release catalog (`status.road`), each hop in place, once v2 is retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[34]\.[0-9]+\.[0-9]+$"))]
    pub final_version: Option<String>,
    #[serde(default = "default_web")]
    pub web: ComponentSpec,
    #[serde(default = "default_worker")]
    pub worker: ComponentSpec,
    /// Extra environment for both v3 containers, applied after everything else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 200))]
    #[x_kube(validation = Rule::new("self.all(e, e.name != 'LANGFUSE_ENABLE_BACKGROUND_MIGRATIONS')").message("LANGFUSE_ENABLE_BACKGROUND_MIGRATIONS is managed by the operator and cannot be set in extraEnv"))]
    pub extra_env: Vec<EnvVar>,
    /// Go to a `finalVersion` newer than the operator's release catalog knows, without the
    /// catalog's checks for it (its schema height, its background migrations, what it drops).
    #[serde(default)]
    pub accept_unknown_release: bool,
    /// On v4, once the release is reached: where writes go, walked stage by stage
    /// (`Legacy` -> `Dual` -> historic data -> `Events`). Unset: the v4 hop's `Legacy`, not managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_model: Option<super::DataModel>,
}

impl Default for TargetSpec {
    fn default() -> Self {
        Self {
            version: default_version(),
            final_version: None,
            web: default_web(),
            worker: default_worker(),
            extra_env: Vec::new(),
            accept_unknown_release: false,
            data_model: None,
        }
    }
}

fn default_version() -> String {
    PARALLEL_VERSION.to_string()
}
fn default_web() -> ComponentSpec {
    ComponentSpec {
        image: None,
        replicas: 2,
        resources: None,
    }
}
fn default_worker() -> ComponentSpec {
    ComponentSpec {
        image: None,
        replicas: 1,
        resources: None,
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    /// Image repository without tag; the tag is the target version. Default: v2's own registry
    /// and path (`ghcr.io/langfuse/langfuse` for the chart's v2 gives `ghcr.io/langfuse/langfuse`
    /// and `ghcr.io/langfuse/langfuse-worker`), so a cluster that may pull only from there (or a
    /// mirror of it) still can; `status.images` says what is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// Default: the v2 container's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClickHouseSpec {
    /// HTTP(S) URL, e.g. `http://clickhouse:8123`.
    #[schemars(regex(pattern = r"^https?://.+"))]
    pub url: String,
    /// Native-protocol URL for the schema migrations, e.g. `clickhouse://clickhouse:9000`.
    #[schemars(regex(pattern = r"^clickhouse://.+"))]
    pub migration_url: String,
    pub user_secret_ref: SecretKeySelector,
    pub password_secret_ref: SecretKeySelector,
    /// Must match the ClickHouse deployment: `false` for a single node.
    #[serde(default)]
    pub cluster_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// TLS for the migration connection (`CLICKHOUSE_MIGRATION_SSL`).
    #[serde(default)]
    pub migration_ssl: bool,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.connectionStringSecretRef) != has(self.host)").message("set exactly one of redis.connectionStringSecretRef and redis.host"))]
pub struct RedisSpec {
    /// `REDIS_CONNECTION_STRING`, e.g. `redis://default:pw@redis:6379/0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_string_secret_ref: Option<SecretKeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<SecretKeySelector>,
    #[serde(default)]
    pub tls_enabled: bool,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.accessKeyIdSecretRef) == has(self.secretAccessKeySecretRef)").message("set both s3.accessKeyIdSecretRef and s3.secretAccessKeySecretRef, or neither (ambient workload identity)"))]
pub struct S3Spec {
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Path-style addressing, needed by MinIO.
    #[serde(default)]
    pub force_path_style: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_secret_ref: Option<SecretKeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_secret_ref: Option<SecretKeySelector>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSpec {
    /// A Secret key holding a `postgres://` URL for the operator's own connection.
    pub url_secret_ref: SecretKeySelector,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Promotion {
    /// Shift traffic as soon as v3 is Available.
    #[default]
    Auto,
    /// Wait for `spec.strategy.approved: true` (or the approve annotation) before shifting.
    Manual,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrategySpec {
    #[serde(default)]
    pub promotion: Promotion,
    /// Approval for `promotion: Manual`.
    #[serde(default)]
    pub approved: bool,
    /// How long Postgres must see no new traces, observations or scores after the shift
    /// before the background migrations are started.
    #[serde(default = "default_drain")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub drain_period: String,
    /// How long after verification v2 is kept running before it is scaled to 0.
    #[serde(default = "default_retire")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub retire_source_after: String,
    /// Roll back when v3 web stays unavailable this long after the shift.
    #[serde(default = "default_rollback")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub rollback_after: String,
    /// Delete the v2 Deployment at retirement instead of scaling it to 0.
    #[serde(default)]
    pub delete_source: bool,
    /// Who changes the image at each in-place hop (v3 → v3, v3 → v4).
    #[serde(default)]
    pub image_changes: ImageChanges,
    /// Roll back on v3 web's error ratio too, as runbooks do ("above 5 % for 10 minutes"):
    /// evaluated from the shift until v2 is retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSpec>,
}

/// An error-ratio analysis against Prometheus.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// Prometheus' HTTP API, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(regex(pattern = r"^https?://.+"))]
    pub prometheus_url: String,
    /// PromQL whose single value is v3 web's error ratio (0 to 1), e.g.
    /// `sum(rate(http_requests_total{code=~"5.."}[1m])) / sum(rate(http_requests_total[1m]))`.
    #[schemars(length(min = 1, max = 4096))]
    pub error_ratio_query: String,
    /// Roll back when the ratio stays above this for the whole window, e.g. `"0.05"`.
    #[schemars(regex(pattern = r"^(0(\.[0-9]+)?|1(\.0+)?)$"))]
    pub threshold: String,
    /// How long the ratio must stay above the threshold.
    #[serde(default = "default_window")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub window: String,
}

fn default_window() -> String {
    "10m".into()
}

/// Who moves the web and worker images at an in-place hop.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ImageChanges {
    /// The operator writes the image (and the env it owns) by server-side apply, web first.
    #[default]
    Operator,
    /// A person, Helm or a GitOps tool changes the images; the operator plans the road, checks
    /// each stop's gates, says which version to set next and when it is safe, and flags a
    /// skipped stop or a downgrade, writing nothing to the Deployments.
    User,
}

impl Default for StrategySpec {
    fn default() -> Self {
        Self {
            promotion: Promotion::Auto,
            approved: false,
            drain_period: default_drain(),
            retire_source_after: default_retire(),
            rollback_after: default_rollback(),
            delete_source: false,
            image_changes: ImageChanges::Operator,
            analysis: None,
        }
    }
}

fn default_drain() -> String {
    "2m".into()
}
fn default_retire() -> String {
    "1h".into()
}
fn default_rollback() -> String {
    "5m".into()
}

/// A preflight check a person may waive. Safety checks that guard an invariant cannot be waived.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum WaivableCheck {
    SourceVersion,
    PostgresVersion,
    ClickHouseVersion,
    StuckCursorScan,
    Backup,
    HorizontalPodAutoscaler,
    /// The operator cannot reach Redis (a NetworkPolicy) although v3's pods can.
    Redis,
    /// The operator cannot reach the S3 event bucket although v3's pods can.
    S3,
    /// The ClickHouse user's grants are given in a way the check cannot read (a role granted
    /// on a wildcard, say) although Langfuse has what it needs.
    ClickHouseGrants,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreflightSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<WaivableCheck>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// I have a restorable backup of the Langfuse Postgres database.
    #[serde(default)]
    pub acknowledged: bool,
    /// Where it is (a name, a snapshot id): recorded for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Hops that drop data (v4.0.0 drops the Postgres tracing tables), each named by the
    /// release it goes to, e.g. `4.16.0`, acknowledged in advance: the backup's time is not
    /// known, so status says it may predate the hop. Prefer `hopBackups`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub acknowledged_hops: Vec<String>,
    /// Backups of PostgreSQL and ClickHouse taken right before a hop that drops data, once the
    /// stop it leaves has finished: a hop that drops data waits for one (or for its name in
    /// `acknowledgedHops`). One taken before that stop finished is refused: a restore from it
    /// would lose what ran since.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub hop_backups: Vec<HopBackup>,
}

/// One backup taken for a hop.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HopBackup {
    /// The release the hop goes to, e.g. `4.16.0`.
    pub hop: String,
    /// Where the backups are (snapshot ids, a path): recorded for the audit trail.
    pub reference: String,
    /// When they were taken, RFC 3339 (e.g. `2026-12-05T10:00:00Z`).
    pub taken_at: String,
}

/// A waived check is the status line of the same name.
impl From<WaivableCheck> for CheckId {
    fn from(w: WaivableCheck) -> Self {
        match w {
            WaivableCheck::SourceVersion => CheckId::SourceVersion,
            WaivableCheck::PostgresVersion => CheckId::PostgresVersion,
            WaivableCheck::ClickHouseVersion => CheckId::ClickhouseVersion,
            WaivableCheck::StuckCursorScan => CheckId::StuckCursorScan,
            WaivableCheck::Backup => CheckId::Backup,
            WaivableCheck::HorizontalPodAutoscaler => CheckId::HorizontalPodAutoscaler,
            WaivableCheck::Redis => CheckId::Redis,
            WaivableCheck::S3 => CheckId::S3,
            WaivableCheck::ClickHouseGrants => CheckId::ClickhouseGrants,
        }
    }
}
