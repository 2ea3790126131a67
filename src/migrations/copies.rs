//! The copies a later release drops the source of: v4.0.0 drops the PostgreSQL tables the v3
//! background migrations copied to ClickHouse. Before such a hop both sides are counted over the
//! same window; what Postgres has and ClickHouse lacks would be lost for good.

use std::fmt;

use jiff::Timestamp;

/// A PostgreSQL table copied to ClickHouse by a background migration (catalog `copies:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CopiedTable {
    Traces,
    Observations,
    Scores,
    DatasetRunItems,
}

impl CopiedTable {
    pub const ALL: [CopiedTable; 4] = [
        CopiedTable::Traces,
        CopiedTable::Observations,
        CopiedTable::Scores,
        CopiedTable::DatasetRunItems,
    ];

    /// The PostgreSQL table (and the catalog's `copies:` word).
    pub fn name(self) -> &'static str {
        match self {
            CopiedTable::Traces => "traces",
            CopiedTable::Observations => "observations",
            CopiedTable::Scores => "scores",
            CopiedTable::DatasetRunItems => "dataset_run_items",
        }
    }

    /// Where the copy wrote it in ClickHouse.
    pub fn clickhouse_table(self) -> &'static str {
        match self {
            CopiedTable::DatasetRunItems => "dataset_run_items_rmt",
            other => other.name(),
        }
    }

    pub fn parse(name: &str) -> Option<CopiedTable> {
        CopiedTable::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl fmt::Display for CopiedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// PostgreSQL's side of the copies: per table, the rows created after `since` and the newest
/// one's `created_at` (the window ClickHouse is then counted over).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopySources {
    /// The data-retention horizon: rows created before it may have been deleted from ClickHouse
    /// by a project's retention, so neither side counts them (`None`: no project has one).
    pub since: Option<Timestamp>,
    /// Tables that exist; one absent (dropped already, or never created) is left out.
    pub tables: Vec<SourceCount>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceCount {
    pub table: CopiedTable,
    pub rows: i64,
    /// The newest `created_at` (`None`: no row in the window).
    pub newest: Option<Timestamp>,
}

/// One table's window for ClickHouse: rows created in (`since`, `until`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyWindow {
    pub table: CopiedTable,
    pub since: Option<Timestamp>,
    pub until: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_copy_names_both_sides() {
        assert_eq!(
            CopiedTable::parse("dataset_run_items"),
            Some(CopiedTable::DatasetRunItems)
        );
        assert_eq!(CopiedTable::DatasetRunItems.clickhouse_table(), "dataset_run_items_rmt");
        assert_eq!(CopiedTable::Observations.clickhouse_table(), "observations");
        assert_eq!(CopiedTable::parse("events"), None);
    }
}
