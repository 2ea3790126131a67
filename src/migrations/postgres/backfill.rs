//! v4's backfill rows M1-M5 with their `state` (the data-model road's Postgres read).

use sqlx::{PgConnection, Row};

use super::{QueryError, Result, ts};

/// v4's backfill rows M1-M5 with their `state`; none before a v4 web registered them.
pub async fn backfill_rows(conn: &mut PgConnection) -> Result<Vec<crate::data_model::progress::BackfillRow>> {
    const WHAT: &str = "reading the v4 backfill rows of background_migrations";
    let rows = sqlx::query(crate::data_model::sql::BACKFILL_ROWS_SQL)
        .fetch_all(&mut *conn)
        .await
        .map_err(QueryError::sql(WHAT))?;
    rows.iter()
        .map(|row| {
            let get_ms = |col: &str| row.try_get::<Option<i64>, _>(col).map_err(QueryError::sql(WHAT));
            let state: Option<serde_json::Value> = row.try_get("state").map_err(QueryError::sql(WHAT))?;
            Ok(crate::data_model::progress::BackfillRow {
                name: row.try_get("name").map_err(QueryError::sql(WHAT))?,
                state: state.unwrap_or(serde_json::Value::Null),
                finished_at: ts(get_ms("finished_ms")?, WHAT)?,
                failed_at: ts(get_ms("failed_ms")?, WHAT)?,
                failed_reason: row.try_get("failed_reason").map_err(QueryError::sql(WHAT))?,
                taken: row.try_get("taken").map_err(QueryError::sql(WHAT))?,
            })
        })
        .collect()
}
