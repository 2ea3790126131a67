//! ClickHouse's side of the copies before a hop that drops their source: each copied table
//! counted over the window PostgreSQL was counted over, `FINAL` and without deleted rows, as
//! the verification from v2 counts.

use clickhouse::Client;

use super::query_error::{QueryError, err};
use crate::migrations::copies::{CopiedTable, CopyWindow};
use crate::precision::millis_floor;

/// Rows in (`since`, `until`]; a `since` of 0 counts from the start.
fn count_sql(table: CopiedTable) -> String {
    format!(
        "SELECT count() FROM {} FINAL WHERE is_deleted = 0 \
         AND created_at > fromUnixTimestamp64Milli(toInt64(?)) AND created_at <= fromUnixTimestamp64Milli(toInt64(?))",
        table.clickhouse_table()
    )
}

/// One count per window, one after the other (each reads a whole table).
pub async fn copy_counts(client: &Client, windows: &[CopyWindow]) -> Result<Vec<(CopiedTable, i64)>, QueryError> {
    let mut out = Vec::new();
    for w in windows {
        let since = w.since.map_or(0, millis_floor);
        let n = client
            .query(&count_sql(w.table))
            .bind(since)
            .bind(millis_floor(w.until))
            // As the verification's counts: versions of one row never span partitions.
            .with_setting("do_not_merge_across_partitions_select_final", "1")
            .fetch_one::<u64>()
            .await
            .map_err(err("counting a copied table in ClickHouse"))?;
        out.push((w.table, i64::try_from(n).unwrap_or(i64::MAX)));
    }
    Ok(out)
}
