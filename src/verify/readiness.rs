//! What ClickHouse must offer Langfuse v4 beyond its own database: the server time zone, the
//! system tables v4 reads (tried as the user, as Langfuse will), the user's grants, and the free
//! disk against the size of `observations` (the historic backfill rewrites it).

use clickhouse::Client;

use super::grants::Grants;
use super::query_error::{QueryError, err};

/// The system tables Langfuse v4 reads (its ClickHouse guide grants each to the user).
pub const V4_SYSTEM_TABLES: [&str; 5] = ["parts", "mutations", "tables", "processes", "query_log"];

/// ClickHouse's error code for a privilege the user lacks.
const ACCESS_DENIED: &str = "Code: 497";
/// A system log table (`query_log`) exists only once the server first flushed it.
const UNKNOWN_TABLE: &str = "Code: 60";

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct V4Readiness {
    /// `timezone()`: the server's time zone.
    pub timezone: String,
    /// The system tables of [`V4_SYSTEM_TABLES`] a `SELECT` was refused on.
    pub denied_tables: Vec<String>,
    /// `SHOW GRANTS FINAL`: the cluster and backfill grants are judged from it.
    pub grants: Grants,
    /// Free bytes on the `default` disk (`None`: `system.disks` not readable).
    pub free_bytes: Option<u64>,
    /// Active parts of `observations` in the database, in bytes on disk.
    pub observations_bytes: Option<u64>,
}

/// Every read at once: each is one small query.
pub async fn read(client: &Client) -> Result<V4Readiness, QueryError> {
    let timezone = async {
        client
            .query("SELECT timezone()")
            .fetch_one::<String>()
            .await
            .map_err(err("reading ClickHouse's time zone"))
    };
    let grants = async {
        client
            .query(super::grants::GRANTS_SQL)
            .fetch_all::<String>()
            .await
            .map_err(err("reading the ClickHouse user's grants"))
    };
    let probes = futures::future::join_all(V4_SYSTEM_TABLES.iter().map(|t| probe(client, t)));
    let free = async {
        client
            .query("SELECT free_space FROM system.disks WHERE name = 'default'")
            .fetch_optional::<u64>()
            .await
            .ok()
            .flatten()
    };
    let observations = async {
        client
            .query(
                "SELECT toUInt64(sum(bytes_on_disk)) FROM system.parts \
                 WHERE active AND database = currentDatabase() AND table = 'observations'",
            )
            .fetch_one::<u64>()
            .await
            .ok()
    };
    let (timezone, grants, probes, free_bytes, observations_bytes) =
        tokio::join!(timezone, grants, probes, free, observations);
    let mut denied_tables = Vec::new();
    for (table, probe) in V4_SYSTEM_TABLES.iter().zip(probes) {
        if !probe? {
            denied_tables.push(table.to_string());
        }
    }
    Ok(V4Readiness {
        timezone: timezone?,
        denied_tables,
        grants: Grants::parse(&grants?),
        free_bytes,
        observations_bytes,
    })
}

/// Whether the user may read `system.<table>`: `false` on ACCESS_DENIED, `true` for a log table
/// not created yet (nothing to refuse), an error on anything else (the server did not answer).
async fn probe(client: &Client, table: &str) -> Result<bool, QueryError> {
    let sql = format!("SELECT count() FROM system.{table} WHERE 0");
    match client.query(&sql).fetch_one::<u64>().await {
        Ok(_) => Ok(true),
        Err(e) if e.to_string().contains(ACCESS_DENIED) => Ok(false),
        Err(e) if e.to_string().contains(UNKNOWN_TABLE) => Ok(true),
        Err(e) => Err(err("reading the system tables Langfuse v4 reads")(e)),
    }
}
