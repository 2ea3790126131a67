//! v4's data-model road (`langfuse-v4-data-model.md`): what is read of the propagation job,
//! the staging table, the backfill rows, the producers in `events_core` and the counts, and
//! the pure judgements on it. The plan decides from these; `databases::live` reads them.

pub mod counts;
pub mod flags;
pub mod producers;
pub mod progress;
pub mod propagation;
pub mod read;
pub mod sql;

use jiff::Timestamp;

/// What the data-model road asks of ClickHouse this reconcile.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EventsQuery {
    /// The staging table's partitions (every reconcile of the dual write).
    pub staging: bool,
    /// Producers seen in `events_core` since this instant.
    pub producers_since: Option<Timestamp>,
    /// The cutover's counts, per project and month.
    pub counts: Option<CountWindow>,
}

/// Old rows counted in (`from`, `until`] by their own time (`traces.timestamp`,
/// `observations.start_time`), against the events tables over the same window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountWindow {
    pub from: Option<Timestamp>,
    pub until: Timestamp,
}

/// What ClickHouse said about the events tables.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EventsFacts {
    /// Partitions of `observations_batch_staging` with active parts.
    pub staging_partitions: Vec<StagingPartition>,
    pub producers: Option<Vec<producers::ProducerRow>>,
    pub counts: Option<Vec<counts::MonthCounts>>,
}

/// One 3-minute partition of the staging table: its value as `system.parts` names it (what the
/// job's cursor holds, e.g. `2026-12-06 10:03:00`, in the server's time zone) and its start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagingPartition {
    pub name: String,
    pub start: Timestamp,
}

/// The propagation job's two Redis keys.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PropagationKeys {
    /// `langfuse:event-propagation:last-processed-partition`.
    pub cursor: Option<String>,
    /// `langfuse:event-propagation:last-run-started-at` (epoch milliseconds).
    pub heartbeat_ms: Option<i64>,
}

pub const CURSOR_KEY: &str = "langfuse:event-propagation:last-processed-partition";
pub const HEARTBEAT_KEY: &str = "langfuse:event-propagation:last-run-started-at";
