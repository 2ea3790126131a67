//! `spec.target.dataModel`, `spec.dataModel` and `status.dataModel`: v4's second road, from v3
//! behaviour (`legacy` writes) to the events tables, stage by stage
//! (`langfuse-v4-data-model.md` §2), each gated and watched, the cutover only with evidence and
//! a person's acknowledgement.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a v4 installation's writes go.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum DataModel {
    /// v3 behaviour: only the old `traces`/`observations`/`scores` tables (the v4 hop's mode).
    Legacy,
    /// Both the old tables and the events tables (the propagation job fills them).
    Dual,
    /// The end state: `events_only`, the historic data in the events tables first. The cutover
    /// cannot be undone.
    Events,
}

/// How the events tables get the data written before the dual write began.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum HistoricData {
    /// Background rows M1-M4 copy it (needs about 3x the ClickHouse data on disk).
    #[default]
    Backfill,
    /// Nothing copied: stay in `Dual` for one whole retention window (`retentionWindow`).
    RetentionWindow,
}

/// A step of the data-model road that cannot be undone, named to acknowledge it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum IrreversibleStep {
    /// `events_only`: data ingested afterwards exists only in the events tables.
    Cutover,
    /// Row M5 drops the backfill's scratch table `observations_pid_tid_sorting`.
    Cleanup,
}

/// How the data-model road is walked (`spec.target.dataModel` says where to).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataModelSpec {
    #[serde(default)]
    pub historic_data: HistoricData,
    /// With `historicData: RetentionWindow`: the longest data retention of any project (e.g.
    /// `720h`); the cutover waits this long after the dual write began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub retention_window: Option<String>,
    /// How long the dual write must be healthy (propagation lag under `lagAlert`, heartbeat
    /// fresh) before the backfill starts. Default `1h`: four of the worker's own 15-minute
    /// stuck windows, six of its 10-minute partition delays.
    #[serde(default = "default_healthy_for")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub dual_write_healthy_for: String,
    /// Propagation lag (age of the oldest staging partition not yet propagated) that makes the
    /// dual write unhealthy and raises `DataModel=False, PropagationLagging`. Default `2h`:
    /// 46 hours before the staging table's 48-hour TTL drops rows never propagated.
    #[serde(default = "default_lag_alert")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub lag_alert: String,
    /// The window over which `events_core` is read for producers `events_only` would reject
    /// (nothing incompatible seen in it), and the cutover's counts' recent edge. Default `24h`:
    /// one day covers daily batch jobs.
    #[serde(default = "default_producer_window")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub producer_window: String,
    /// The irreversible steps a person agreed to: `Cutover` before `events_only`, `Cleanup`
    /// before the scratch table is dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub acknowledge: Vec<IrreversibleStep>,
}

impl Default for DataModelSpec {
    fn default() -> Self {
        Self {
            historic_data: HistoricData::default(),
            retention_window: None,
            dual_write_healthy_for: default_healthy_for(),
            lag_alert: default_lag_alert(),
            producer_window: default_producer_window(),
            acknowledge: Vec::new(),
        }
    }
}

fn default_healthy_for() -> String {
    "1h".into()
}
fn default_lag_alert() -> String {
    "2h".into()
}
fn default_producer_window() -> String {
    "24h".into()
}

/// The data-model road's stage, from the facts recorded below.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum DataModelStage {
    Legacy,
    Dual,
    Backfilling,
    /// The historic data is in the events tables (M1-M4 finished, or the window elapsed).
    HistoricDone,
    EventsOnly,
    CleanedUp,
}

/// The dual write's propagation job, as last read (Redis and `system.parts`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PropagationStatus {
    /// The last staging partition propagated (Redis cursor), e.g. `2026-12-06 10:03:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// The job's last start (Redis heartbeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<Time>,
    /// Staging partitions waiting, and the oldest one's start.
    pub backlog: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_waiting: Option<Time>,
    /// Lag in seconds: how old the oldest waiting partition is (0 when none waits).
    pub lag_seconds: i64,
    /// Hours before the staging table's 48-hour TTL drops the oldest waiting rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours_before_loss: Option<i64>,
}

/// One background row of the backfill (M1-M5), from its `state`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackfillRowStatus {
    /// `M1`..`M5`.
    pub step: String,
    pub name: String,
    /// `state.phase` (`init`, `loading_chunks`, `backfill`, `processing`, `completed`), or
    /// `finished` / `failed` / `waiting` from the row's columns.
    pub phase: String,
    /// Chunks done of those known (M1-M3), or dataset run items processed (M4).
    pub done: u64,
    pub total: u64,
    pub failed_chunks: u32,
    /// Retries the worker made on its chunks (each up to 3, with smaller settings).
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_reason: Option<String>,
    /// Times the operator reset this failed row and restarted the worker.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resets: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A producer seen in `events_core` that `events_only` would break, as Langfuse's own v4
/// migration page classifies it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProducerStatus {
    pub project: String,
    pub sdk_name: String,
    pub sdk_version: String,
    /// The public key it sent with (`pk-lf-...`; not a secret).
    pub public_key: String,
    /// `ingestion-api-dual-write`, `otel-dual-write` or `otel`.
    pub source: String,
    /// Events in `producerWindow`.
    pub events: u64,
    /// What to do: update the SDK, or the instrumentation.
    pub remedy: String,
}

/// One mismatch of the cutover's counts (events tables against the old ones).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountMismatch {
    pub project: String,
    /// `YYYY-MM`.
    pub month: String,
    /// `traces` (root spans) or `observations`.
    pub table: String,
    pub old: u64,
    pub events: u64,
}

/// Where the data-model road is, fact by fact.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataModelStatus {
    pub stage: DataModelStage,
    /// When web and worker first ran `dual` (both Available).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual_since: Option<Time>,
    /// Since when the dual write has been healthy without a break.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill_started_at: Option<Time>,
    /// M1-M4 finished, or the retention window elapsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub historic_done_at: Option<Time>,
    /// The fixed instant the cutover's counts are taken up to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts_until: Option<Time>,
    /// When the counts matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts_matched_at: Option<Time>,
    /// Recorded before the first `events_only` write: from here on, forward only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover_started_at: Option<Time>,
    /// The point of commitment: web and worker Available at `events_only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover_at: Option<Time>,
    /// Recorded before the first write of the scratch table's drop: from here on the cleanup
    /// goes on, whatever `acknowledge` says later (M5 may already be dropping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleaned_up_at: Option<Time>,
    /// The last back-out to `legacy`, and what it left behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backed_out_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<PropagationStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<BackfillRowStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub producers: Vec<ProducerStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub count_mismatches: Vec<CountMismatch>,
    /// ClickHouse disk: bytes the Langfuse tables hold, and bytes free (the backfill needs
    /// about twice the former free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
}

impl Default for DataModelStatus {
    fn default() -> Self {
        Self {
            stage: DataModelStage::Legacy,
            dual_since: None,
            healthy_since: None,
            backfill_started_at: None,
            historic_done_at: None,
            counts_until: None,
            counts_matched_at: None,
            cutover_started_at: None,
            cutover_at: None,
            cleanup_started_at: None,
            cleaned_up_at: None,
            backed_out_at: None,
            propagation: None,
            rows: Vec::new(),
            producers: Vec::new(),
            count_mismatches: Vec::new(),
            data_bytes: None,
            free_bytes: None,
        }
    }
}
