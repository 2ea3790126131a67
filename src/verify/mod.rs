//! ClickHouse as the operator sees it: plain data behind [`crate::databases::Databases`].

use crate::migrations::TableCounts;

pub mod clickhouse;
pub mod copies;
pub mod grants;
pub mod query;
pub mod query_error;
pub mod readiness;

/// The ClickHouse schema version a v3.29.0 web leaves behind; anything newer crash-loops 3.29.x.
pub const SCHEMA_VERSION_3_29: i64 = 8;

#[derive(Clone, Debug, PartialEq, Default)]
pub struct ClickHouseFacts {
    /// `SELECT version()`, e.g. `24.8.4.13`.
    pub version: Option<String>,
    /// `schema_migrations`: newest version and its dirty flag; `None` when the table is absent.
    pub schema: Option<(i64, bool)>,
    /// `count() FINAL WHERE is_deleted = 0 AND created_at <= cutoff`, per table.
    pub counts: Option<TableCounts>,
    /// The same, over (`recent_after`, cut-off] only, when asked for.
    pub recent_counts: Option<TableCounts>,
    /// Which of `traces`, `observations`, `scores` the database lacks (read with the server
    /// facts and before counting).
    pub missing_tables: Vec<crate::migrations::Table>,
    /// `SHOW GRANTS FINAL` (read with the server facts), or why it could not be read.
    pub grants: crate::reading::Reading<grants::Grants>,
    /// Each copied table counted over its window, when asked for.
    pub copy_counts: Option<Vec<(crate::migrations::copies::CopiedTable, i64)>>,
    /// What v4 needs of the server beyond its database, when asked for.
    pub v4: crate::reading::Reading<readiness::V4Readiness>,
    /// The data-model road's reads, when asked for.
    pub events: crate::reading::Reading<crate::data_model::EventsFacts>,
}

/// One table's verdict: ClickHouse holds every Postgres row up to the cut-off, or some are
/// missing. v3 ingests while v2 drains, so ClickHouse may hold more, never fewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Match,
    Missing(i64),
}

impl Verdict {
    pub fn of(postgres: i64, clickhouse: i64) -> Self {
        if clickhouse >= postgres {
            Verdict::Match
        } else {
            Verdict::Missing(postgres - clickhouse)
        }
    }
}

/// As written to `status.verification[].verdict`: `Match` or `Missing <n>`.
impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Match => f.write_str("Match"),
            Verdict::Missing(n) => write!(f, "Missing {n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Verdict;

    #[test]
    fn more_in_clickhouse_matches_fewer_is_missing() {
        assert_eq!(Verdict::of(10, 12), Verdict::Match);
        assert_eq!(Verdict::of(10, 10).to_string(), "Match");
        assert_eq!(Verdict::of(10, 7).to_string(), "Missing 3");
    }
}
