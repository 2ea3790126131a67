//! `spec.migrations`: how the operator watches and remedies Langfuse's background migrations.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationsSpec {
    /// A migration whose cursor has not moved this long while its lock is fresh is stuck.
    #[serde(default = "default_stuck")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub stuck_after: String,
    /// Apply the documented remedies (batch size, resume from cursor) automatically.
    #[serde(default = "default_true")]
    pub remediation: bool,
    /// The smallest `args.batchSize` a remedy may set.
    #[serde(default = "default_min_batch")]
    #[schemars(range(min = 1, max = 100000))]
    pub min_batch_size: i32,
    /// Mark an unfinished orphan row (one registered by a v4-preview script that the running
    /// worker's release no longer ships, per the catalog's `orphanRows`) finished, so the worker
    /// runs the rows after it. Off by default: it writes `finished_at` on that one row.
    #[serde(default)]
    pub finish_orphan_rows: bool,
    /// Per copied table (`traces`, `observations`, `scores`, `dataset_run_items`), how many
    /// rows ClickHouse may lack before a hop that drops the PostgreSQL source: rows deleted in
    /// Langfuse after the copy ran. Set it only after checking that is why they are missing.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub accept_copy_shortfall: std::collections::BTreeMap<String, i64>,
}

impl Default for MigrationsSpec {
    fn default() -> Self {
        Self {
            stuck_after: default_stuck(),
            remediation: true,
            min_batch_size: default_min_batch(),
            finish_orphan_rows: false,
            accept_copy_shortfall: Default::default(),
        }
    }
}

fn default_stuck() -> String {
    "10m".into()
}
fn default_true() -> bool {
    true
}
fn default_min_batch() -> i32 {
    250
}
