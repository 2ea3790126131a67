//! ClickHouse's side of the copies before a hop that drops their source: each copied table
//! counted over the window PostgreSQL was counted over, `FINAL` and without deleted rows, as
//! the verification from v2 counts.

use clickhouse::Client;

use super::query_error::{QueryError, err};
use crate::migrations::copies::{CopiedTable, CopyWindow};
use crate::precision::millis_floor;

/// Safe for Langfuse's tables: each partition key (the month of `timestamp` / `start_time`) is a
/// function of the sorting key's `toDate(...)`, so the versions of one row never span
/// partitions; FINAL then merges partitions independently. Written in the statement (a
/// query-level setting, as an HTTP parameter would be): no session state for it to change.
pub const FINAL_SETTING: &str = "SETTINGS do_not_merge_across_partitions_select_final = 1";

/// Rows in (`since`, `until`] of one table, tagged with its place in the request; a `since` of 0
/// counts from the start.
fn count_sql(place: usize, table: CopiedTable) -> String {
    format!(
        "SELECT toUInt8({place}) AS place, count() AS rows FROM {} FINAL WHERE is_deleted = 0 \
         AND created_at > fromUnixTimestamp64Milli(toInt64(?)) AND created_at <= fromUnixTimestamp64Milli(toInt64(?))",
        table.clickhouse_table()
    )
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct Counted {
    place: u8,
    rows: u64,
}

/// Every window in one statement (`UNION ALL`, each count tagged with its window) with the
/// verification's setting: one round trip for the lot, where a statement per table cost one each. The server
/// shares the query's threads between the branches, so the load stays that of one count.
pub async fn copy_counts(client: &Client, windows: &[CopyWindow]) -> Result<Vec<(CopiedTable, i64)>, QueryError> {
    const WHAT: &str = "counting the copied tables in ClickHouse";
    if windows.is_empty() {
        return Ok(Vec::new());
    }
    let branches = (0..windows.len())
        .map(|i| count_sql(i, windows[i].table))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    // The setting on the outer statement holds for every branch.
    let sql = format!("SELECT place, rows FROM ({branches}) {}", FINAL_SETTING);
    let mut query = client.query(&sql);
    for w in windows {
        query = query.bind(w.since.map_or(0, millis_floor)).bind(millis_floor(w.until));
    }
    let rows = query.fetch_all::<Counted>().await.map_err(err(WHAT))?;
    windows
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let n = rows.iter().find(|r| usize::from(r.place) == i).ok_or_else(|| {
                err(WHAT)(clickhouse::error::Error::Custom(format!(
                    "no count came back for {}",
                    w.table
                )))
            })?;
            Ok((w.table, i64::try_from(n.rows).unwrap_or(i64::MAX)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_branch_is_tagged_with_its_place_and_binds_two_bounds() {
        let sql = count_sql(3, CopiedTable::DatasetRunItems);
        assert!(sql.starts_with("SELECT toUInt8(3) AS place, count() AS rows FROM dataset_run_items_rmt FINAL"));
        assert_eq!(sql.matches('?').count(), 2);
    }
}
