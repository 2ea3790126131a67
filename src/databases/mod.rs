//! The boundary to Postgres and ClickHouse (and to Redis and S3, which preflight reaches). The controller asks for plain facts through
//! [`Databases`]; the real sqlx / clickhouse implementations plug in behind it.

use std::fmt;
use std::future::Future;

use jiff::Timestamp;

use crate::migrations::PostgresFacts;
use crate::verify::ClickHouseFacts;

pub mod live;
pub mod stores;
pub use live::{Live, LiveConfig};
pub use stores::{RedisFacts, RedisProblem, RedisTarget, S3Facts, S3Problem, S3Target};

/// A connection string that may hold a password: never printed, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

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
}

impl ClickHouseQuery {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Clone, Debug)]
pub struct ClickHouseConnection {
    pub url: String,
    pub user: SecretString,
    pub password: SecretString,
    pub database: Option<String>,
}

/// Errors carry a message a person can act on and never a credential.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotSupported(String),
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
}

pub trait Databases: Send + Sync + 'static {
    fn postgres(
        &self,
        url: &SecretString,
        query: &PostgresQuery,
    ) -> impl Future<Output = Result<PostgresFacts, DbError>> + Send;
    fn clickhouse(
        &self,
        conn: &ClickHouseConnection,
        query: &ClickHouseQuery,
    ) -> impl Future<Output = Result<ClickHouseFacts, DbError>> + Send;
    fn remedy(&self, url: &SecretString, remedy: &Remedy) -> impl Future<Output = Result<(), DbError>> + Send;
    /// Connect and authenticate to Redis as v3 will, and read its version.
    fn redis(&self, target: &RedisTarget) -> impl Future<Output = Result<RedisFacts, RedisProblem>> + Send;
    /// Reach the event bucket as v3 will (and write and delete a marker when asked).
    fn s3(&self, target: &S3Target) -> impl Future<Output = Result<S3Facts, S3Problem>> + Send;
    /// v3 web's error ratio from Prometheus, now and over the analysis window.
    fn error_ratio(
        &self,
        query: &crate::analysis::ErrorRatioQuery,
    ) -> impl Future<Output = Result<crate::analysis::ErrorRatioFacts, String>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = SecretString::new("postgres://u:hunter2@db/langfuse");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
