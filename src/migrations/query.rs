//! What the plan asks of Postgres: which facts to read this reconcile, and the one kind of write
//! the operator ever makes there (a remedy on `background_migrations`).

use jiff::Timestamp;

/// Which Postgres facts to read this reconcile; decided by the plan from the upgrade's facts.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PostgresQuery {
    pub server_version: bool,
    pub migrations: bool,
    pub newest_write: bool,
    /// Scan for groups of rows sharing one `created_at` at least this large.
    pub same_created_at_scan: Option<i64>,
    pub counts_until: Option<Timestamp>,
    /// Also count the rows in (`recent_after`, `counts_until`]: where rows that landed behind
    /// the copy's cursor are looked for when the counts disagree.
    pub recent_after: Option<Timestamp>,
    pub late_writes_after: Option<LateWindow>,
    /// Count late rows up to this instant only (the decision's `now`), so a re-copy bounded by
    /// it takes exactly the rows counted; `None`: no upper bound.
    pub late_writes_until: Option<Timestamp>,
    /// Count these copies' source tables (before a hop that drops them).
    pub copy_sources: Vec<super::copies::CopiedTable>,
    /// v4's backfill rows M1-M5 with their `state` (the data-model road).
    pub backfill_rows: bool,
}

/// Per table, the instant after which a Postgres row was not copied by the migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LateWindow {
    pub traces: Timestamp,
    pub observations: Timestamp,
    pub scores: Timestamp,
}

impl LateWindow {
    pub fn uniform(after: Timestamp) -> Self {
        Self {
            traces: after,
            observations: after,
            scores: after,
        }
    }
}

impl PostgresQuery {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A write to `background_migrations`, the only table the operator ever writes (invariant 5).
/// Each is keyed by the row's `name` and touches only the columns named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remedy {
    /// `args.batchSize = size` (other `args` keys kept).
    SetBatchSize { name: String, size: i64 },
    /// Resume from the cursor: `failed_at = NULL, failed_reason = NULL` (state kept).
    ClearFailure { name: String },
    /// Re-run a finished copy bounded to the late-write window: `state = {}`,
    /// `args.maxDate = max_date` (the instant the late rows were counted),
    /// `args.maxRowsToProcess = max_rows` (their number; the copy walks newest first, so it takes
    /// those rows, rounded up to whole batches), `finished_at = NULL`, `failed_at = NULL`,
    /// `failed_reason = NULL`.
    RerunWindow {
        name: String,
        max_date: Timestamp,
        max_rows: i64,
    },
    /// An unfinished orphan row (its script gone from the running release): `finished_at =
    /// now()` (kept where already set), only where the row runs `script`.
    FinishOrphan { name: String, script: String },
    /// A failed v4 backfill row (M1-M4) re-run as its script says: `failed_at`,
    /// `failed_reason`, `finished_at` cleared, `args.retryFailed = true`, and with
    /// `reload_chunks` also `state.chunksLoaded = false` (M3 after a part merged away). Only
    /// where the row is failed.
    ResetBackfillRow { name: String, reload_chunks: bool },
}
