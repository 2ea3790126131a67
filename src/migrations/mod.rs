//! Langfuse's background migrations as the operator sees them in Postgres: plain data behind
//! the [`crate::databases::Databases`] boundary, so the plan is tested without a database.

use jiff::Timestamp;

pub mod copies;
pub mod postgres;
pub mod query;
pub mod table;

pub use table::Table;

/// The four v3.29.0 background migrations, in the order the worker runs them (by name).
pub const V3_MIGRATIONS: [&str; 4] = [
    "20241024_1216_add_generations_cost_backfill",
    "20241024_1730_migrate_traces_from_pg_to_ch",
    "20241024_1737_migrate_observations_from_pg_to_ch",
    "20241024_1738_migrate_scores_from_pg_to_ch",
];

/// The copy migration of a table.
pub fn migration_for_table(table: Table) -> &'static str {
    match table {
        Table::Traces => V3_MIGRATIONS[1],
        Table::Observations => V3_MIGRATIONS[2],
        Table::Scores => V3_MIGRATIONS[3],
    }
}

/// The table a copy migration fills, by the migration's name.
pub fn table_for_migration(name: &str) -> Option<Table> {
    Table::ALL.into_iter().find(|t| migration_for_table(*t) == name)
}

/// A lock older than this is stale: the worker heartbeats every 15 s.
pub const LOCK_STALE_AFTER_SECS: i64 = 60;

/// The batch size of the v3.29.0 copy scripts when `args.batchSize` is unset.
pub const DEFAULT_BATCH_SIZE: i64 = 5000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowState {
    Queued,
    Running,
    Stalled,
    Finished,
    Failed,
    /// Gated by an env var (`args.envGate`) that is not `"true"` in the worker, and no worker
    /// took it: the worker never runs it, so nothing waits on it (Langfuse's own UI agrees).
    Dormant,
}

impl RowState {
    pub fn as_str(self) -> &'static str {
        match self {
            RowState::Queued => "queued",
            RowState::Running => "running",
            RowState::Stalled => "stalled",
            RowState::Finished => "finished",
            RowState::Failed => "failed",
            RowState::Dormant => "dormant",
        }
    }
}

/// One `background_migrations` row, reduced to what the operator decides on.
#[derive(Clone, Debug, PartialEq)]
pub struct MigrationRow {
    pub name: String,
    pub finished_at: Option<Timestamp>,
    pub failed_at: Option<Timestamp>,
    pub failed_reason: Option<String>,
    pub locked_at: Option<Timestamp>,
    /// `state.maxDate`: everything newer has been copied.
    pub cursor: Option<Timestamp>,
    /// Oldest `created_at` of the table the row copies, for a cheap progress estimate.
    pub oldest_row: Option<Timestamp>,
    /// `args.batchSize` when set; the script's default otherwise.
    pub batch_size: Option<i64>,
    /// `args.envGate`: the worker runs the row only while this env var is `"true"` (3.203.0+).
    pub env_gate: Option<String>,
    /// `worker_id IS NOT NULL`: some worker took the row at least once.
    pub taken: bool,
}

/// The `LANGFUSE_BACKGROUND_MIGRATION_*` gates open in the worker: set to `"true"`, or not set
/// at all where the running release defaults them to `"true"` (the manager reads the validated
/// env). A var set from a Secret or ConfigMap is not known here and counts as closed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenGates(std::collections::BTreeSet<String>);

impl OpenGates {
    pub fn from_env(env: &[k8s_openapi::api::core::v1::EnvVar]) -> Self {
        Self(
            env.iter()
                .filter(|e| e.name.starts_with("LANGFUSE_BACKGROUND_MIGRATION_") && e.value.as_deref() == Some("true"))
                .map(|e| e.name.clone())
                .collect(),
        )
    }

    /// As [`Self::from_env`], and each of `gates` the container does not name open when
    /// `default` (the running release's) says `"true"`.
    pub fn from_env_or_default<'a>(
        env: &[k8s_openapi::api::core::v1::EnvVar],
        gates: impl IntoIterator<Item = &'a str>,
        default: impl Fn(&str) -> Option<&'a str>,
    ) -> Self {
        let mut open = Self::from_env(env);
        for gate in gates {
            if !env.iter().any(|e| e.name == gate) && default(gate) == Some("true") {
                open.0.insert(gate.to_string());
            }
        }
        open
    }

    pub fn is_open(&self, gate: &str) -> bool {
        self.0.contains(gate)
    }
}

impl MigrationRow {
    /// As [`Self::state`], and dormant when its gate is closed in the worker and no worker took it.
    pub fn state_with(&self, now: Timestamp, gates: &OpenGates) -> RowState {
        let state = self.state(now);
        let closed = self.env_gate.as_deref().is_some_and(|g| !gates.is_open(g));
        match state {
            RowState::Queued if closed && !self.taken => RowState::Dormant,
            other => other,
        }
    }

    /// queued / running (fresh lock) / stalled (lock stale or dropped mid-run) / finished / failed.
    pub fn state(&self, now: Timestamp) -> RowState {
        if self.finished_at.is_some() {
            return RowState::Finished;
        }
        if self.failed_at.is_some() {
            return RowState::Failed;
        }
        match self.locked_at {
            Some(locked) if now.as_second() - locked.as_second() <= LOCK_STALE_AFTER_SECS => RowState::Running,
            Some(_) => RowState::Stalled,
            None if self.cursor.is_some() => RowState::Stalled,
            None => RowState::Queued,
        }
    }

    /// Share copied so far: the copy walks from its start cursor down to the oldest row.
    pub fn progress(&self, start: Option<Timestamp>) -> Option<f64> {
        if self.finished_at.is_some() {
            return Some(1.0);
        }
        let (start, cursor, oldest) = (start?, self.cursor?, self.oldest_row?);
        let total = (start.as_millisecond() - oldest.as_millisecond()) as f64;
        if total <= 0.0 {
            return Some(1.0);
        }
        let done = (start.as_millisecond() - cursor.as_millisecond()) as f64;
        Some((done / total).clamp(0.0, 1.0))
    }
}

/// Per-table row estimates; `None` where Postgres has none yet.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EstimatedRows {
    pub traces: Option<i64>,
    pub observations: Option<i64>,
    pub scores: Option<i64>,
}

impl EstimatedRows {
    pub fn for_table(&self, table: Table) -> Option<i64> {
        match table {
            Table::Traces => self.traces,
            Table::Observations => self.observations,
            Table::Scores => self.scores,
        }
    }
}

/// Per-table row counts (traces, observations, scores).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TableCounts {
    pub traces: i64,
    pub observations: i64,
    pub scores: i64,
}

impl TableCounts {
    pub fn get(&self, table: Table) -> i64 {
        match table {
            Table::Traces => self.traces,
            Table::Observations => self.observations,
            Table::Scores => self.scores,
        }
    }

    pub fn iter(&self) -> [(Table, i64); 3] {
        [
            (Table::Traces, self.traces),
            (Table::Observations, self.observations),
            (Table::Scores, self.scores),
        ]
    }
}

/// What one Postgres observation returned; fields not asked for stay `None`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PostgresFacts {
    /// `server_version_num`, e.g. 150008.
    pub server_version_num: Option<i64>,
    pub migrations: Vec<MigrationRow>,
    /// Newest `created_at` over traces, observations and scores (index-backed max).
    pub newest_write: Option<Timestamp>,
    /// When the `newest_write` query started, to the operator's clock: no newer row was
    /// visible then, so v2 had been quiet at least this long after `newest_write`.
    pub newest_write_read_at: Option<Timestamp>,
    /// Largest group of rows sharing one `created_at`, per table, when at least the batch size.
    pub same_created_at_groups: Vec<(Table, i64)>,
    pub counts: Option<TableCounts>,
    /// Rows in (`recent_after`, `counts_until`] when asked for.
    pub recent_counts: Option<TableCounts>,
    /// Rows created after the migrations' start cursor: written by v2 after the cut-off.
    pub late_writes: Option<TableCounts>,
    /// Postgres's own row estimates (`pg_class.reltuples`, free to read), read with the
    /// migrations; `None` for a table never analyzed.
    pub estimated_rows: Option<EstimatedRows>,
    /// The copies' source tables, when asked for.
    pub copy_sources: Option<copies::CopySources>,
    /// v4's backfill rows M1-M5, when asked for.
    pub backfill_rows: Option<Vec<crate::data_model::progress::BackfillRow>>,
}
