//! The ClickHouse queries behind [`crate::databases::Databases::clickhouse`]: server version,
//! the golang-migrate ledger, and the verification counts. Plain ClickHouse HTTP through the
//! `clickhouse` crate, so it works unchanged against a real server.

use clickhouse::Client;
use jiff::Timestamp;

use super::ClickHouseFacts;
use super::query::ClickHouseQuery;
use crate::migrations::{Table, TableCounts};
use crate::precision::millis_floor;

pub const VERSION_SQL: &str = "SELECT version()";
pub use super::grants::GRANTS_SQL;

pub const HAS_SCHEMA_MIGRATIONS_SQL: &str =
    "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'schema_migrations'";

pub const TABLES_SQL: &str = "SELECT name FROM system.tables WHERE database = currentDatabase() \
     AND name IN ('traces', 'observations', 'scores')";

/// Which of the three tables the migrations copy into are absent.
pub async fn missing_tables(client: &Client) -> Result<Vec<Table>> {
    let present: Vec<String> = client
        .query(TABLES_SQL)
        .fetch_all::<String>()
        .await
        .map_err(err("listing the tables"))?;
    Ok(Table::ALL
        .into_iter()
        .filter(|t| !present.iter().any(|p| p == t.name()))
        .collect())
}

/// golang-migrate's current version is the row with the highest `sequence` (it appends a row
/// per change); ties, which it never writes, go to the higher version.
pub const SCHEMA_VERSION_SQL: &str = "SELECT toInt64(version) AS version, toUInt8(dirty) AS dirty \
     FROM schema_migrations ORDER BY sequence DESC, version DESC LIMIT 1";

/// Deduplicated (`FINAL`), not deleted, created up to the cut-off (epoch milliseconds bound as
/// `?`, once per table; `created_at` is `DateTime64(3)` and compares by instant whatever the
/// server time zone). One statement: the server runs the three scalar subqueries one after
/// another, as three statements would, in one round trip. A scalar subquery is typed Nullable
/// (it could return no row); a `count()` without `GROUP BY` always returns one. The setting is
/// part of the statement (see [`super::copies::FINAL_SETTING`]).
pub const COUNT_SQL: &str = "SELECT \
     assumeNotNull((SELECT count() FROM traces FINAL WHERE is_deleted = 0 AND created_at <= fromUnixTimestamp64Milli(toInt64(?)))) AS traces, \
     assumeNotNull((SELECT count() FROM observations FINAL WHERE is_deleted = 0 AND created_at <= fromUnixTimestamp64Milli(toInt64(?)))) AS observations, \
     assumeNotNull((SELECT count() FROM scores FINAL WHERE is_deleted = 0 AND created_at <= fromUnixTimestamp64Milli(toInt64(?)))) AS scores \
     SETTINGS do_not_merge_across_partitions_select_final = 1";

/// As [`COUNT_SQL`], over (first `?`, second `?`] per table: the recent rows only.
pub const COUNT_BETWEEN_SQL: &str = "SELECT \
     assumeNotNull((SELECT count() FROM traces FINAL WHERE is_deleted = 0 AND created_at > fromUnixTimestamp64Milli(toInt64(?)) AND created_at <= fromUnixTimestamp64Milli(toInt64(?)))) AS traces, \
     assumeNotNull((SELECT count() FROM observations FINAL WHERE is_deleted = 0 AND created_at > fromUnixTimestamp64Milli(toInt64(?)) AND created_at <= fromUnixTimestamp64Milli(toInt64(?)))) AS observations, \
     assumeNotNull((SELECT count() FROM scores FINAL WHERE is_deleted = 0 AND created_at > fromUnixTimestamp64Milli(toInt64(?)) AND created_at <= fromUnixTimestamp64Milli(toInt64(?)))) AS scores \
     SETTINGS do_not_merge_across_partitions_select_final = 1";

pub use super::query_error::QueryError;
use super::query_error::err;

type Result<T> = std::result::Result<T, QueryError>;

#[derive(clickhouse::Row, serde::Deserialize)]
struct SchemaRow {
    version: i64,
    dirty: u8,
}

/// `SELECT version()`, e.g. `24.8.4.13`.
pub async fn server_version(client: &Client) -> Result<String> {
    client
        .query(VERSION_SQL)
        .fetch_one::<String>()
        .await
        .map_err(err("reading the ClickHouse server version"))
}

/// Newest `schema_migrations` version and its dirty flag; `None` when the table is absent or
/// empty (no ClickHouse migration has run yet).
pub async fn schema_version(client: &Client) -> Result<Option<(i64, bool)>> {
    const WHAT: &str = "reading schema_migrations";
    let exists = client
        .query(HAS_SCHEMA_MIGRATIONS_SQL)
        .fetch_one::<u64>()
        .await
        .map_err(err(WHAT))?;
    if exists == 0 {
        return Ok(None);
    }
    let row = client
        .query(SCHEMA_VERSION_SQL)
        .fetch_optional::<SchemaRow>()
        .await
        .map_err(err(WHAT))?;
    Ok(row.map(|r| (r.version, r.dirty != 0)))
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct CountsRow {
    traces: u64,
    observations: u64,
    scores: u64,
}

/// Per table: `count() FINAL WHERE is_deleted = 0 AND created_at <= cutoff`.
pub async fn counts_until(client: &Client, cutoff: Timestamp) -> Result<TableCounts> {
    let ms = millis_floor(cutoff);
    let query = client.query(COUNT_SQL).bind(ms).bind(ms).bind(ms);
    fetch_counts(query, "counting traces, observations and scores up to the cut-off").await
}

/// Per table: as [`counts_until`], over (`after`, `cutoff`] only.
pub async fn counts_between(client: &Client, after: Timestamp, cutoff: Timestamp) -> Result<TableCounts> {
    let (a, c) = (millis_floor(after), millis_floor(cutoff));
    let query = client
        .query(COUNT_BETWEEN_SQL)
        .bind(a)
        .bind(c)
        .bind(a)
        .bind(c)
        .bind(a)
        .bind(c);
    fetch_counts(query, "counting the recent traces, observations and scores").await
}

async fn fetch_counts(query: clickhouse::query::Query, what: &'static str) -> Result<TableCounts> {
    let row = query.fetch_one::<CountsRow>().await.map_err(err(what))?;
    let n = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    Ok(TableCounts {
        traces: n(row.traces),
        observations: n(row.observations),
        scores: n(row.scores),
    })
}

/// The user's own grants with its roles' merged in (`SHOW GRANTS FINAL`, which needs no
/// privilege).
pub async fn grants(client: &Client) -> Result<Vec<String>> {
    client
        .query(GRANTS_SQL)
        .fetch_all::<String>()
        .await
        .map_err(err("reading the ClickHouse user's grants"))
}

/// Everything the query asks for; fields not asked for stay `None`.
pub async fn read(client: &Client, query: &ClickHouseQuery) -> Result<ClickHouseFacts> {
    let mut facts = ClickHouseFacts::default();
    // The reads that do not depend on each other go out at once (one round trip, not four);
    // the counts, the heavy ones, follow one by one and only when every table is there.
    let tables = async {
        match query.objects || query.counts_until.is_some() {
            true => missing_tables(client).await,
            false => Ok(Vec::new()),
        }
    };
    let server = async {
        match query.server {
            true => tokio::try_join!(server_version(client), schema_version(client)).map(Some),
            false => Ok(None),
        }
    };
    let user_grants = async {
        match query.objects {
            // Not fatal to the observation: a server that cannot say still runs Langfuse.
            true => grants(client)
                .await
                .map(|rows| super::grants::Grants::parse(&rows))
                .map_err(|e| format!("{}: {}", e.what, e.source.to_string().trim()))
                .into(),
            false => crate::reading::Reading::NotAsked,
        }
    };
    let v4 = async {
        match query.v4_readiness {
            true => super::readiness::read(client)
                .await
                .map_err(|e| format!("{}: {}", e.what, e.source.to_string().trim()))
                .into(),
            false => crate::reading::Reading::NotAsked,
        }
    };
    let (tables, server, user_grants, v4) = tokio::join!(tables, server, user_grants, v4);
    facts.v4 = v4;
    facts.missing_tables = tables?;
    if let Some((version, schema)) = server? {
        facts.version = Some(version);
        facts.schema = schema;
    }
    facts.grants = user_grants;
    if let Some(cutoff) = query.counts_until
        && facts.missing_tables.is_empty()
    {
        facts.counts = Some(counts_until(client, cutoff).await?);
        if let Some(after) = query.recent_after {
            facts.recent_counts = Some(counts_between(client, after, cutoff).await?);
        }
    }
    if !query.copy_counts.is_empty() {
        facts.copy_counts = Some(super::copies::copy_counts(client, &query.copy_counts).await?);
    }
    if query.events != crate::data_model::EventsQuery::default() {
        facts.events = crate::data_model::read::read(client, &query.events).await.into();
    }
    Ok(facts)
}

#[cfg(test)]
mod final_setting_tests {
    use super::super::copies::FINAL_SETTING;
    use super::*;

    #[test]
    fn both_counts_carry_the_final_setting_in_the_statement() {
        assert!(COUNT_SQL.ends_with(FINAL_SETTING));
        assert!(COUNT_BETWEEN_SQL.ends_with(FINAL_SETTING));
    }
}
