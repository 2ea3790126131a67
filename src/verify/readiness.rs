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

/// The common case in one statement: the time zone, the system tables of [`V4_SYSTEM_TABLES`]
/// read (an empty count from each), the free disk and the observations' bytes. A refusal
/// anywhere fails it all: then each is read on its own, to name what failed. `query_log` is
/// probed apart: it exists only once the server first flushed it, and its absence is no refusal.
const AT_ONCE_SQL: &str = "SELECT timezone() AS timezone, \
    (SELECT toNullable(free_space) FROM system.disks WHERE name = 'default') AS free_bytes, \
    (SELECT toNullable(toUInt64(sum(bytes_on_disk))) FROM system.parts \
     WHERE active AND database = currentDatabase() AND table = 'observations') AS observations_bytes \
    WHERE (SELECT count() FROM system.parts WHERE 0) + (SELECT count() FROM system.mutations WHERE 0) \
    + (SELECT count() FROM system.tables WHERE 0) + (SELECT count() FROM system.processes WHERE 0) = 0";

/// The one table [`AT_ONCE_SQL`] leaves out.
const PROBED_APART: &str = "query_log";

#[derive(clickhouse::Row, serde::Deserialize)]
struct AtOnce {
    timezone: String,
    free_bytes: Option<u64>,
    observations_bytes: Option<u64>,
}

/// Three statements at once (the grants, `query_log`, everything else) when the user may read
/// it all, as it should; the reads one by one when not. The stand-in serves one query at a time
/// and a server pays a round trip each: nine became three on the common path.
pub async fn read(client: &Client) -> Result<V4Readiness, QueryError> {
    let grants = async {
        client
            .query(super::grants::GRANTS_SQL)
            .fetch_all::<String>()
            .await
            .map_err(err("reading the ClickHouse user's grants"))
    };
    let at_once = client.query(AT_ONCE_SQL).fetch_one::<AtOnce>();
    let (grants, at_once, apart) = tokio::join!(grants, at_once, probe(client, PROBED_APART));
    let (grants, apart) = (grants?, apart?);
    match at_once {
        Ok(r) => Ok(V4Readiness {
            timezone: r.timezone,
            denied_tables: denied(|table| table != PROBED_APART || apart),
            grants: Grants::parse(&grants),
            free_bytes: r.free_bytes,
            observations_bytes: r.observations_bytes,
        }),
        Err(_) => one_by_one(client, grants, apart).await,
    }
}

/// The tables of [`V4_SYSTEM_TABLES`] not readable, in that order.
fn denied(readable: impl Fn(&str) -> bool) -> Vec<String> {
    V4_SYSTEM_TABLES
        .iter()
        .filter(|t| !readable(t))
        .map(|t| t.to_string())
        .collect()
}

/// Every other read on its own, at once: each is one small query (`query_log`'s probe is in).
async fn one_by_one(client: &Client, grants: Vec<String>, apart: bool) -> Result<V4Readiness, QueryError> {
    let others: Vec<&str> = V4_SYSTEM_TABLES.into_iter().filter(|t| *t != PROBED_APART).collect();
    let timezone = async {
        client
            .query("SELECT timezone()")
            .fetch_one::<String>()
            .await
            .map_err(err("reading ClickHouse's time zone"))
    };
    let probes = futures::future::join_all(others.iter().map(|t| probe(client, t)));
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
    let (timezone, probes, free_bytes, observations_bytes) = tokio::join!(timezone, probes, free, observations);
    let mut readable = Vec::new();
    for (table, probe) in others.iter().zip(probes) {
        if probe? {
            readable.push(*table);
        }
    }
    Ok(V4Readiness {
        timezone: timezone?,
        denied_tables: denied(|table| {
            if table == PROBED_APART {
                apart
            } else {
                readable.contains(&table)
            }
        }),
        grants: Grants::parse(&grants),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_at_once_reads_every_system_table_v4_reads_but_the_one_apart() {
        for table in V4_SYSTEM_TABLES {
            assert_eq!(
                AT_ONCE_SQL.contains(&format!("FROM system.{table} WHERE 0")),
                table != PROBED_APART,
                "{table}"
            );
        }
    }
}
