//! PostgreSQL's side of the copies before a hop that drops their source: per table, the rows
//! created after the data-retention horizon and the newest one's `created_at`. One full read of
//! each table's `created_at` index, under the long statement timeout (`benches/db_poll.rs`
//! measures it at 10 million rows).

use jiff::{SignedDuration, Timestamp};
use sqlx::PgConnection;

use super::{QueryError, Result, long_statement, ts};
use crate::migrations::copies::{CopiedTable, CopySources, SourceCount};

/// The rows after `$1` (epoch ms, NULL: all), and the newest `created_at` in epoch ms.
fn count_sql(table: CopiedTable) -> String {
    format!(
        "SELECT count(*), (extract(epoch FROM max(created_at)) * 1000)::bigint FROM {} \
         WHERE $1::bigint IS NULL OR created_at > timestamp 'epoch' + $1::bigint * interval '1 millisecond'",
        table.name()
    )
}

/// The shortest data retention of any project, in days (`None`: none has one, or this
/// release has no such column).
const SHORTEST_RETENTION_SQL: &str = "SELECT min(retention_days)::bigint FROM projects WHERE retention_days > 0";

/// Undefined table or column: a table v4.0.0 dropped, or a column an older release lacks.
fn absent(e: &QueryError) -> bool {
    matches!(&e.kind, super::QueryErrorKind::Sql(sqlx::Error::Database(d))
        if matches!(d.code().as_deref(), Some("42P01" | "42703")))
}

pub async fn copy_sources(conn: &mut PgConnection, tables: &[CopiedTable], now: Timestamp) -> Result<CopySources> {
    let days = match long_statement(conn, "reading the projects' data retention", async |tx| {
        sqlx::query_scalar::<_, Option<i64>>(SHORTEST_RETENTION_SQL)
            .fetch_one(&mut *tx)
            .await
    })
    .await
    {
        Ok(days) => days,
        Err(e) if absent(&e) => None,
        Err(e) => return Err(e),
    };
    // The window starts a little after the horizon (two days, or half the retention when it is
    // shorter): ClickHouse is counted a moment later, or again after a person fixed something,
    // and retention must not have trimmed the window in between.
    let since = days.and_then(|d| {
        let hours = d.saturating_mul(24);
        let slack = (hours / 2).min(48);
        now.checked_sub(SignedDuration::from_hours(hours - slack)).ok()
    });
    let since_ms = since.map(|t| t.as_millisecond());
    let mut out = CopySources {
        since,
        tables: Vec::new(),
    };
    for &table in tables {
        let what = format!("counting {table} for the copy check");
        let sql = count_sql(table);
        let row = long_statement(conn, &what, async |tx| {
            sqlx::query_as::<_, (i64, Option<i64>)>(sqlx::AssertSqlSafe(sql))
                .bind(since_ms)
                .fetch_one(&mut *tx)
                .await
        })
        .await;
        match row {
            Ok((rows, newest)) => out.tables.push(SourceCount {
                table,
                rows,
                newest: ts(newest, &what)?,
            }),
            Err(e) if absent(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
