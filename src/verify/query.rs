//! What the plan asks of ClickHouse this reconcile.

use jiff::Timestamp;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ClickHouseQuery {
    /// `version()` and the `schema_migrations` height: a hop's gates and whether it can be undone.
    pub server: bool,
    /// Langfuse's tables present and the user's grants: preflight only (two more queries, read
    /// on every reconcile of a hop otherwise).
    pub objects: bool,
    pub counts_until: Option<Timestamp>,
    /// Also count the rows in (`recent_after`, `counts_until`], as Postgres does.
    pub recent_after: Option<Timestamp>,
    /// Count these copied tables, each over its window (before a hop that drops the source).
    pub copy_counts: Vec<crate::migrations::copies::CopyWindow>,
    /// The time zone, system-table access, grants and disk v4 needs: preflight and between
    /// hops (eight small queries at once).
    pub v4_readiness: bool,
    /// The data-model road's reads (staging, producers, counts).
    pub events: crate::data_model::EventsQuery,
}

impl ClickHouseQuery {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}
