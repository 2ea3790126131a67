//! The Postgres side of the background-migration facts: every query the operator runs against
//! Langfuse's database, and the only writes it ever makes (to `background_migrations`).
//!
//! Cost, on purpose (see `benches/db_poll.rs` for measurements):
//! - every *poll* query (`background_migrations` with each table's oldest row, the newest write)
//!   is an index-backed `min`/`max` on `created_at` (Prisma's `@@index(createdAt)`) plus a read
//!   of a four-row table: constant cost whatever the size of the tracing tables;
//! - `late_writes_after` is an index range scan over the late rows only;
//! - the one-off queries (`same_created_at_scan` at preflight, `counts_until` at verification)
//!   read the whole `created_at` index once; they run under [`LONG_STATEMENT_TIMEOUT`].
//!
//! Timestamps: Prisma writes `TIMESTAMP(3)` without time zone, in UTC. They are read as epoch
//! milliseconds computed by Postgres (sqlx has no jiff support) and bound the same way.

use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, Row};

use super::query::{LateWindow, PostgresQuery, Remedy};
use super::{EstimatedRows, MigrationRow, PostgresFacts, TableCounts};
use crate::migrations::Table;

/// Statement timeout for the one-off full-index reads (preflight scan, verification counts).
pub const LONG_STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);

mod backfill;
mod copies;
mod sql;

pub use sql::*;

/// A query that failed, with what it was reading, for a message a person can act on.
#[derive(Debug)]
pub struct QueryError {
    /// What was being read or written, e.g. "reading background_migrations".
    pub what: String,
    pub kind: QueryErrorKind,
}

#[derive(Debug)]
pub enum QueryErrorKind {
    Sql(sqlx::Error),
    /// The database answered something the operator cannot interpret.
    Data(String),
    /// A remedy named a row that does not exist, or an impossible value.
    Refused(String),
}

impl QueryError {
    fn sql(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Self {
        let what = what.into();
        move |source| Self {
            what,
            kind: QueryErrorKind::Sql(source),
        }
    }
    fn data(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            kind: QueryErrorKind::Data(detail.into()),
        }
    }
    /// The SQLSTATE of a database error, e.g. `42P01` for a missing table.
    pub fn sqlstate(&self) -> Option<String> {
        match &self.kind {
            QueryErrorKind::Sql(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, QueryError>;

/// Epoch milliseconds as a timestamp (`None` stays `None`).
fn ts(ms: Option<i64>, what: &str) -> Result<Option<Timestamp>> {
    ms.map(|ms| {
        Timestamp::from_millisecond(ms).map_err(|e| QueryError::data(what, format!("timestamp out of range: {e}")))
    })
    .transpose()
}

pub use crate::precision::millis_floor;

/// `state.maxDate` as the scripts write it (`Date.toISOString()`, with `Z`), or without an
/// offset (then UTC, the time zone Langfuse containers run in).
pub fn parse_cursor(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if let Ok(t) = text.parse::<Timestamp>() {
        return Some(t);
    }
    let civil = text.parse::<DateTime>().ok()?;
    civil.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// `args.batchSize` as the script reads it (`Number(args.batchSize)`): a JSON number or a
/// numeric string.
pub fn parse_batch_size(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Some(n);
    }
    let f = text.parse::<f64>().ok()?;
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

/// The table a copy migration reads, by its script (or, failing that, its name).
pub fn copied_table(script: &str, name: &str) -> Option<Table> {
    match script {
        "migrateTracesFromPostgresToClickhouse" => Some(Table::Traces),
        "migrateObservationsFromPostgresToClickhouse" => Some(Table::Observations),
        "migrateScoresFromPostgresToClickhouse" => Some(Table::Scores),
        _ => Table::ALL
            .into_iter()
            .find(|t| name.contains(&format!("migrate_{t}_from_pg_to_ch"))),
    }
}

/// `SHOW server_version_num`, e.g. 150008.
pub async fn server_version_num(conn: &mut PgConnection) -> Result<i64> {
    const WHAT: &str = "reading server_version_num";
    let text: String = sqlx::query_scalar(SERVER_VERSION_SQL)
        .fetch_one(&mut *conn)
        .await
        .map_err(QueryError::sql(WHAT))?;
    text.trim()
        .parse()
        .map_err(|_| QueryError::data(WHAT, format!("not a number: {text:?}")))
}

/// The `background_migrations` rows, ordered by name (the worker's order). An absent table
/// reads as no rows: preflight then says which rows are missing.
pub async fn migrations(conn: &mut PgConnection) -> Result<Vec<MigrationRow>> {
    const WHAT: &str = "reading background_migrations and the oldest created_at of traces, observations and scores";
    // One query while every table is there (v2, v3); after v4.0.0 dropped the tracing tables,
    // the rows are read without their progress.
    let rows = match sqlx::query(MIGRATIONS_SQL).fetch_all(&mut *conn).await {
        Ok(rows) => rows,
        Err(e) => {
            let err = QueryError::sql(WHAT)(e);
            if err.sqlstate().as_deref() != Some("42P01") {
                return Err(err);
            }
            let (rows_table, traces, observations, scores): (bool, bool, bool, bool) =
                sqlx::query_as(TABLES_PRESENT_SQL)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(QueryError::sql(WHAT))?;
            if !rows_table {
                return Ok(Vec::new());
            }
            let missing: Vec<Table> = [
                (Table::Traces, traces),
                (Table::Observations, observations),
                (Table::Scores, scores),
            ]
            .into_iter()
            .filter(|(_, present)| !present)
            .map(|(t, _)| t)
            .collect();
            if missing.is_empty() {
                return Err(err);
            }
            sqlx::query(sqlx::AssertSqlSafe(migrations_sql_without(&missing)))
                .fetch_all(&mut *conn)
                .await
                .map_err(QueryError::sql(WHAT))?
        }
    };
    rows.iter().map(migration_row).collect()
}

fn migration_row(row: &PgRow) -> Result<MigrationRow> {
    const WHAT: &str = "decoding a background_migrations row";
    let get_ms = |col: &str| row.try_get::<Option<i64>, _>(col).map_err(QueryError::sql(WHAT));
    let name: String = row.try_get("name").map_err(QueryError::sql(WHAT))?;
    let script: String = row.try_get("script").map_err(QueryError::sql(WHAT))?;
    let max_date: Option<String> = row.try_get("max_date").map_err(QueryError::sql(WHAT))?;
    let batch_size: Option<String> = row.try_get("batch_size").map_err(QueryError::sql(WHAT))?;
    let oldest_ms = match copied_table(&script, &name) {
        Some(Table::Traces) => get_ms("traces_ms")?,
        Some(Table::Observations) => get_ms("observations_ms")?,
        Some(Table::Scores) => get_ms("scores_ms")?,
        None => None,
    };
    let cursor = max_date.as_deref().and_then(|text| {
        let parsed = parse_cursor(text);
        if parsed.is_none() {
            tracing::warn!(migration = %name, cursor = %text, "state.maxDate is not an ISO-8601 timestamp");
        }
        parsed
    });
    Ok(MigrationRow {
        finished_at: ts(get_ms("finished_ms")?, WHAT)?,
        failed_at: ts(get_ms("failed_ms")?, WHAT)?,
        failed_reason: row.try_get("failed_reason").map_err(QueryError::sql(WHAT))?,
        locked_at: ts(get_ms("locked_ms")?, WHAT)?,
        cursor,
        oldest_row: ts(oldest_ms, WHAT)?,
        batch_size: batch_size.as_deref().and_then(parse_batch_size),
        env_gate: row.try_get("env_gate").map_err(QueryError::sql(WHAT))?,
        taken: row.try_get("taken").map_err(QueryError::sql(WHAT))?,
        name,
    })
}

/// Newest `created_at` over traces, observations and scores.
pub async fn newest_write(conn: &mut PgConnection) -> Result<Option<Timestamp>> {
    const WHAT: &str = "reading the newest created_at of traces, observations and scores";
    let ms: Option<i64> = sqlx::query_scalar(NEWEST_WRITE_SQL)
        .fetch_one(&mut *conn)
        .await
        .map_err(QueryError::sql(WHAT))?;
    ts(ms, WHAT)
}

/// Per table, the size of the largest group of rows sharing one `created_at`, when it is at
/// least `batch` (the v3.29.0 copy never advances past such a group).
pub async fn same_created_at_scan(conn: &mut PgConnection, batch: i64) -> Result<Vec<(Table, i64)>> {
    let mut groups = Vec::new();
    for (table, sql) in Table::ALL.into_iter().zip(SAME_CREATED_AT_SQL) {
        let what = format!("scanning {table} for rows sharing one created_at");
        let n: Option<i64> = match long_statement(conn, &what, async |tx| {
            sqlx::query_scalar(sql).bind(batch).fetch_optional(&mut *tx).await
        })
        .await
        {
            // v4.0.0 dropped the tracing tables: nothing there can stall a copy.
            Err(e) if e.sqlstate().as_deref() == Some("42P01") => None,
            other => other?,
        };
        if let Some(n) = n {
            groups.push((table, n));
        }
    }
    Ok(groups)
}

/// Rows with `created_at <= cutoff`, per table.
pub async fn counts_until(conn: &mut PgConnection, cutoff: Timestamp) -> Result<TableCounts> {
    let ms = millis_floor(cutoff);
    let row = long_statement(
        conn,
        "counting traces, observations and scores up to the cut-off",
        async |tx| sqlx::query(COUNTS_UNTIL_SQL).bind(ms).fetch_one(&mut *tx).await,
    )
    .await?;
    table_counts(&row, "decoding the counts up to the cut-off")
}

/// The planner's row estimates of the three tables.
pub async fn estimated_rows(conn: &mut PgConnection) -> Result<EstimatedRows> {
    const WHAT: &str = "reading the row estimates";
    let row = sqlx::query(ESTIMATES_SQL)
        .fetch_one(&mut *conn)
        .await
        .map_err(QueryError::sql(WHAT))?;
    let get = |i: usize| -> Result<Option<i64>> {
        let v: Option<i64> = row.try_get(i).map_err(QueryError::sql(WHAT))?;
        Ok(v.filter(|n| *n >= 0))
    };
    Ok(EstimatedRows {
        traces: get(0)?,
        observations: get(1)?,
        scores: get(2)?,
    })
}

/// 9999-12-31T23:59:59.999Z: "no upper bound" within what a Postgres interval can add.
const NO_UPPER_BOUND_MS: i64 = 253_402_300_799_999;

/// Rows with `created_at` after each table's instant, up to `until` (unbounded when `None`).
pub async fn late_writes_after(
    conn: &mut PgConnection,
    after: &LateWindow,
    until: Option<Timestamp>,
) -> Result<TableCounts> {
    const WHAT: &str = "counting rows written after the migrations' start";
    let row = sqlx::query(LATE_WRITES_SQL)
        .bind(millis_floor(after.traces))
        .bind(millis_floor(after.observations))
        .bind(millis_floor(after.scores))
        .bind(until.map_or(NO_UPPER_BOUND_MS, millis_floor))
        .fetch_one(&mut *conn)
        .await
        .map_err(QueryError::sql(WHAT))?;
    table_counts(&row, WHAT)
}

fn table_counts(row: &PgRow, what: &str) -> Result<TableCounts> {
    let get = |i: usize| row.try_get::<i64, _>(i).map_err(QueryError::sql(what));
    Ok(TableCounts {
        traces: get(0)?,
        observations: get(1)?,
        scores: get(2)?,
    })
}

/// Run one statement in its own transaction with the long statement timeout (`SET LOCAL`
/// also works behind a transaction-pooling PgBouncer, and ends with the transaction).
async fn long_statement<T>(
    conn: &mut PgConnection,
    what: &str,
    f: impl AsyncFnOnce(&mut PgConnection) -> std::result::Result<T, sqlx::Error>,
) -> Result<T> {
    let mut tx = conn.begin().await.map_err(QueryError::sql(what))?;
    let set = format!("SET LOCAL statement_timeout = {}", LONG_STATEMENT_TIMEOUT.as_millis());
    sqlx::query(sqlx::AssertSqlSafe(set))
        .execute(&mut *tx)
        .await
        .map_err(QueryError::sql(what))?;
    let out = f(&mut *tx).await.map_err(QueryError::sql(what))?;
    tx.commit().await.map_err(QueryError::sql(what))?;
    Ok(out)
}

/// Everything the query asks for; fields not asked for stay `None` / empty.
pub async fn read(conn: &mut PgConnection, query: &PostgresQuery) -> Result<PostgresFacts> {
    let mut facts = PostgresFacts::default();
    if query.server_version {
        facts.server_version_num = Some(server_version_num(conn).await?);
    }
    if query.migrations {
        facts.migrations = migrations(conn).await?;
        facts.estimated_rows = Some(estimated_rows(conn).await?);
    }
    if query.newest_write {
        facts.newest_write_read_at = Some(Timestamp::now());
        facts.newest_write = newest_write(conn).await?;
    }
    if let Some(batch) = query.same_created_at_scan {
        facts.same_created_at_groups = same_created_at_scan(conn, batch).await?;
    }
    if let Some(cutoff) = query.counts_until {
        facts.counts = Some(counts_until(conn, cutoff).await?);
        // The same index range scan as the late rows', over the recent rows only.
        if let Some(after) = query.recent_after {
            facts.recent_counts = Some(late_writes_after(conn, &LateWindow::uniform(after), Some(cutoff)).await?);
        }
    }
    if let Some(after) = query.late_writes_after {
        facts.late_writes = Some(late_writes_after(conn, &after, query.late_writes_until).await?);
    }
    if !query.copy_sources.is_empty() {
        facts.copy_sources = Some(copies::copy_sources(conn, &query.copy_sources, Timestamp::now()).await?);
    }
    if query.backfill_rows {
        facts.backfill_rows = Some(backfill::backfill_rows(conn).await?);
    }
    Ok(facts)
}

/// `args.maxDate` as the scripts expect it: `Date.toISOString()` form, millisecond precision.
pub fn iso_millis(t: Timestamp) -> String {
    let t = Timestamp::from_millisecond(millis_floor(t)).unwrap_or(t);
    format!("{t:.3}")
}

/// Apply one remedy: a single `UPDATE ... WHERE name = $1` touching only the columns the
/// [`Remedy`] names. Fails when no row has that name.
pub async fn remedy(conn: &mut PgConnection, remedy: &Remedy) -> Result<()> {
    let (name, what, result) = match remedy {
        Remedy::SetBatchSize { name, size } => {
            let what = format!("setting args.batchSize = {size} on background migration {name}");
            if *size < 1 {
                return Err(refused(what, "a batch size must be at least 1"));
            }
            let r = sqlx::query(SET_BATCH_SIZE_SQL)
                .bind(name)
                .bind(size)
                .execute(&mut *conn)
                .await;
            (name, what, r)
        }
        Remedy::ResetBackfillRow { name, reload_chunks } => {
            let what = format!("resetting failed backfill row {name} to re-run its failed chunks");
            let r = sqlx::query(RESET_BACKFILL_ROW_SQL)
                .bind(name)
                .bind(reload_chunks)
                .execute(&mut *conn)
                .await;
            (name, what, r)
        }
        Remedy::ClearFailure { name } => {
            let what = format!("clearing failed_at and failed_reason on background migration {name}");
            let r = sqlx::query(CLEAR_FAILURE_SQL).bind(name).execute(&mut *conn).await;
            (name, what, r)
        }
        Remedy::FinishOrphan { name, script } => {
            let what = format!("marking orphan background migration {name} ({script}) finished");
            let r = sqlx::query(FINISH_ORPHAN_SQL)
                .bind(name)
                .bind(script)
                .execute(&mut *conn)
                .await;
            (name, what, r)
        }
        Remedy::RerunWindow {
            name,
            max_date,
            max_rows,
        } => {
            let max_date = iso_millis(*max_date);
            let what = format!("re-running background migration {name} from {max_date} for at most {max_rows} rows");
            if *max_rows < 1 {
                return Err(refused(what, "a bounded re-run must copy at least one row"));
            }
            let r = sqlx::query(RERUN_WINDOW_SQL)
                .bind(name)
                .bind(&max_date)
                .bind(max_rows)
                .execute(&mut *conn)
                .await;
            (name, what, r)
        }
    };
    let done = result.map_err(QueryError::sql(what.clone()))?;
    if done.rows_affected() == 0 {
        return Err(refused(what, format!("background_migrations has no row named {name}")));
    }
    Ok(())
}

fn refused(what: String, why: impl Into<String>) -> QueryError {
    QueryError {
        what,
        kind: QueryErrorKind::Refused(why.into()),
    }
}

#[cfg(test)]
mod tests;
