//! The boundary to Postgres and ClickHouse (and to Redis and S3, which preflight reaches). The controller asks for plain facts through
//! [`Databases`]; the real sqlx / clickhouse implementations plug in behind it.

use std::fmt;
use std::future::Future;

use crate::migrations::PostgresFacts;
use crate::verify::ClickHouseFacts;

pub mod live;
pub mod stores;
pub use live::{Live, LiveConfig};
pub use stores::{RedisFacts, RedisProblem, RedisTarget, S3Facts, S3Problem, S3Target};
// What is asked of each database lives with its facts; named here too, at the boundary.
pub use crate::migrations::query::{LateWindow, PostgresQuery, Remedy};
pub use crate::verify::query::ClickHouseQuery;

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
    /// The dual write's propagation job's cursor and heartbeat keys (v4's data-model road).
    fn propagation_keys(
        &self,
        target: &RedisTarget,
    ) -> impl Future<Output = Result<crate::data_model::PropagationKeys, RedisProblem>> + Send;
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
