//! Status: what a person reads, and the durable facts the plan derives the phase from.
//! Every `*At` field is a fact recorded once; the phase is only a summary of them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::phase::Phase;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CheckResult {
    Pass,
    Warn,
    Fail,
    Skipped,
}

/// Every preflight check, by the name its line carries in `status.checks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckId {
    TargetVersion,
    SourceDeployment,
    Images,
    SourceVersion,
    Service,
    SelectorIsolation,
    Names,
    Secrets,
    ClusterMode,
    Postgres,
    PostgresVersion,
    StuckCursorScan,
    Clickhouse,
    ClickhouseVersion,
    HorizontalPodAutoscaler,
    Backup,
    /// The road from the source release to the destination (stops, no downgrade).
    Road,
    /// The infrastructure each major on the road needs.
    Infrastructure,
    /// Backups acknowledged for the hops that drop data.
    HopBackups,
    /// A source on v3/v4: its worker Deployment, at the web's release.
    SourceWorker,
    /// A source on v3/v4: every background migration it runs has finished.
    SourceMigrations,
    /// Redis reached and authenticated with v3's settings; its version.
    Redis,
    /// The S3 event bucket reached with v3's settings; a marker written and deleted.
    S3,
    /// The ClickHouse user holds the privileges Langfuse needs on its database.
    ClickhouseGrants,
    /// Before a v4 hop: ClickHouse's free disk against the backfill's writes, and Redis read.
    V4Headroom,
}

impl CheckId {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::TargetVersion => "targetVersion",
            CheckId::SourceDeployment => "sourceDeployment",
            CheckId::Images => "images",
            CheckId::SourceVersion => "sourceVersion",
            CheckId::Service => "service",
            CheckId::SelectorIsolation => "selectorIsolation",
            CheckId::Names => "names",
            CheckId::Secrets => "secrets",
            CheckId::ClusterMode => "clusterMode",
            CheckId::Postgres => "postgres",
            CheckId::PostgresVersion => "postgresVersion",
            CheckId::StuckCursorScan => "stuckCursorScan",
            CheckId::Clickhouse => "clickhouse",
            CheckId::ClickhouseVersion => "clickhouseVersion",
            CheckId::HorizontalPodAutoscaler => "horizontalPodAutoscaler",
            CheckId::Backup => "backup",
            CheckId::Road => "road",
            CheckId::Infrastructure => "infrastructure",
            CheckId::HopBackups => "hopBackups",
            CheckId::SourceWorker => "sourceWorker",
            CheckId::SourceMigrations => "sourceMigrations",
            CheckId::Redis => "redis",
            CheckId::S3 => "s3",
            CheckId::ClickhouseGrants => "clickhouseGrants",
            CheckId::V4Headroom => "v4Headroom",
        }
    }
}

/// One line of the preflight report.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreflightCheck {
    pub name: String,
    pub result: CheckResult,
    pub message: String,
}

/// What the operator knows of one background migration row.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    pub name: String,
    /// queued, running, stalled, finished or failed.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_reason: Option<String>,
    /// When the operator first saw the cursor at its current value (stuck detection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_since: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<i64>,
    /// The highest cursor seen while the copy ran: no later than where it started, so rows
    /// created after it may not have been copied (the late-write guard's bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_cursor: Option<Time>,
    /// Rows of the table it copies, by Postgres's estimate (for rows/s and ETA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_rows: Option<i64>,
}

/// Postgres vs ClickHouse row counts for one table, both at or before the cut-off.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableVerification {
    pub table: String,
    pub postgres: i64,
    pub clickhouse: i64,
    pub verdict: String,
}

/// What rolling back would mean right now.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatus {
    pub possible: bool,
    /// What a rollback would hide from v2, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_if_rolled_back: Option<String>,
    /// Why a rollback started, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LangfuseUpgradeStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    /// Once completed: whether what runs can be handed to the official chart (`kubectl lfu
    /// handoff NAME --chart VERSION` prints its values), or what blocks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<String>,
    /// The handoff to the official chart asked for by `spec.handoff`, fact by fact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_handoff: Option<super::ChartHandoffStatus>,
    /// v4's data-model road (`spec.target.dataModel`), fact by fact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_model: Option<super::DataModelStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// The road from the release v2 runs to the one asked for, stop by stop (from the release
    /// catalog); empty while the source version is unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub road: Vec<RoadStop>,
    /// The v3 image repositories, recorded when preflight passes (the tag is the version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<V3Images>,
    /// e.g. `2/4 (63%)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_progress: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<PreflightCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<MigrationStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verification: Vec<TableVerification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackStatus>,

    // Facts, recorded once each.
    /// v2 Deployment replicas when provisioning started: restored on rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_started_at: Option<Time>,
    /// The Service selector before the shift, recorded before the Service is touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_shifted_at: Option<Time>,
    /// Since when v3 web has been unavailable after the shift (drives `rollbackAfter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_unavailable_since: Option<Time>,
    /// Newest Postgres write seen while draining; v2 is quiet when it stops moving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_source_write_at: Option<Time>,
    /// When the operator last saw the newest write move (its own clock, immune to DB clock skew).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_quiet_since: Option<Time>,
    /// v2 quiet: rows at or before this instant are what the migrations must carry over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutoff: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations_enabled_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations_finished_at: Option<Time>,
    /// When the counts that agreed were read, to the millisecond (the one time not in whole
    /// seconds): `retireSourceAfter` counts from it, never from a second before it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "millis_time")]
    #[schemars(with = "Option<Time>")]
    pub verified_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_retired_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_at: Option<Time>,
    /// `args.batchSize` to set before the migrations start, from the preflight scan (by migration).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub planned_batch_sizes: BTreeMap<String, i64>,
    /// Late writes re-copied up to this instant; verification counts up to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_writes_covered_until: Option<Time>,
    /// Last time the operator restarted the worker (grace before judging the migrations idle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_restarted_at: Option<Time>,
    /// Remedies applied so far, by kind, to bound them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub remedies: BTreeMap<String, i32>,
}

/// One stop of the road.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoadStop {
    /// The release this hop starts from.
    #[serde(default)]
    pub from: String,
    pub version: String,
    pub mode: StopMode,
    pub state: StopState,
    /// Why the road must stop here, when it must.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_because: Option<String>,
    /// What must hold before this hop starts, in words (migrations finished, infrastructure,
    /// a backup acknowledged for it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<String>,
    /// What this hop destroys for good, when it does: past it, no rollback but a restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irreversible: Option<String>,
    /// When the hop's first image change was written (or, images changed by a person, seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When web and worker ran this release, Available, and every background migration it
    /// runs had finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// The backup a hop that drops data waits for: which one, and whether it was taken after
    /// the stop it leaves finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// A hop that drops the PostgreSQL source of copies: each copy counted on both sides
    /// before it starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<CopyCount>,
    /// The release catalog revision that planned this hop, recorded when it started (a later
    /// catalog never moves a stop already taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
}

/// One copy counted before the hop that drops its source: PostgreSQL's rows created in
/// (`since`, `until`] against ClickHouse's over the same window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyCount {
    /// The PostgreSQL table (`traces`, `observations`, `scores`, `dataset_run_items`).
    pub table: String,
    /// Rows created before it are not compared: the shortest data retention of any project
    /// may have deleted them from ClickHouse. Absent: no project has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// The newest PostgreSQL row's `created_at`, rounded up to the second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Time>,
    /// Absent until PostgreSQL was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<i64>,
    /// Absent until ClickHouse was counted (again at each look before the hop starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clickhouse: Option<i64>,
    /// `Match`, `Missing <n>`, or `Accepted <n>` (within `spec.migrations.acceptCopyShortfall`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StopMode {
    /// v3 beside v2, traffic switched, v2 retired after verification.
    BesideV2,
    /// The image moves on the same Deployments.
    InPlace,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StopState {
    Done,
    Current,
    Next,
    /// The upgrade was rolled back before this stop was reached.
    RolledBack,
}

/// Image repositories (no tag) of the v3 web and worker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct V3Images {
    pub web: String,
    pub worker: String,
}

impl LangfuseUpgradeStatus {
    /// The condition of this type, if written.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// An optional `metav1.Time` written with milliseconds (the API keeps the string as written; any
/// RFC 3339 time reads back, so statuses written with whole seconds still parse).
mod millis_time {
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<Time>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => {
                // Whole seconds as the API writes them; else milliseconds (finer is dropped).
                let format = if t.0.subsec_millisecond() == 0 {
                    "%Y-%m-%dT%H:%M:%SZ"
                } else {
                    "%Y-%m-%dT%H:%M:%S%.3fZ"
                };
                let text = jiff::fmt::strtime::format(format, t.0).map_err(serde::ser::Error::custom)?;
                s.serialize_some(&text)
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Time>, D::Error> {
        Ok(Option::<Timestamp>::deserialize(d)?.map(Time))
    }
}

/// Conditions as a map keyed by `type`, so server-side apply merges them per type.
fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    let object = schema.ensure_object();
    object.insert("x-kubernetes-list-type".into(), "map".into());
    object.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}

#[cfg(test)]
mod millis_time_tests {
    use super::LangfuseUpgradeStatus;
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn verified_at_keeps_its_milliseconds_and_whole_seconds_still_read() {
        let at = Timestamp::from_millisecond(1_800_000_010_437).unwrap();
        let s = LangfuseUpgradeStatus {
            verified_at: Some(Time(at)),
            ..Default::default()
        };
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["verifiedAt"], "2027-01-15T08:00:10.437Z");
        let back: LangfuseUpgradeStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back.verified_at, Some(Time(at)));
        let old: LangfuseUpgradeStatus =
            serde_json::from_value(serde_json::json!({"verifiedAt": "2027-01-15T08:00:10Z"})).unwrap();
        assert_eq!(old.verified_at.as_ref().unwrap().0.as_millisecond(), 1_800_000_010_000);
        let whole = LangfuseUpgradeStatus {
            verified_at: old.verified_at.clone(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&whole).unwrap()["verifiedAt"],
            "2027-01-15T08:00:10Z"
        );
        let none = serde_json::to_value(LangfuseUpgradeStatus::default()).unwrap();
        assert!(none.get("verifiedAt").is_none());
    }
}

#[cfg(test)]
mod phase_tests {
    use super::Phase;

    #[test]
    fn all_lists_every_phase_once() {
        // The schema's enum is generated from the type: ALL must hold exactly those values.
        let schema = serde_json::to_value(schemars::schema_for!(Phase)).unwrap();
        let mut from_schema: Vec<String> = schema["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let mut listed: Vec<String> = Phase::ALL.iter().map(|p| p.to_string()).collect();
        from_schema.sort();
        listed.sort();
        assert_eq!(listed, from_schema);
    }
}
