//! ClickHouse as the operator sees it: plain data behind [`crate::databases::Databases`].

use crate::migrations::TableCounts;

pub mod clickhouse;

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
    /// Which of `traces`, `observations`, `scores` the database lacks (read with the server
    /// facts and before counting).
    pub missing_tables: Vec<String>,
}
