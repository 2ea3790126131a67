//! Database errors in words a person can act on: which server, what was being done, why.

use super::secrets::scrub;
use super::*;
use crate::migrations::postgres::{QueryError, QueryErrorKind};

pub(super) fn pg_error(entry: &PgEntry, what: &str, detail: &str) -> DbError {
    DbError::Unavailable(scrub(
        &format!("Postgres at {}: {what}: {detail}", entry.target),
        &entry.secrets,
    ))
}

pub(super) fn query_error(entry: &PgEntry, e: QueryError) -> DbError {
    let detail = match &e.kind {
        QueryErrorKind::Sql(e) => sql_detail(e),
        QueryErrorKind::Data(d) | QueryErrorKind::Refused(d) => d.clone(),
    };
    pg_error(entry, &e.what, &detail)
}

/// What went wrong, in words a person can act on.
pub(super) fn sql_detail(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let hint = match code.as_str() {
                "28P01" | "28000" => " (check the user and password in the Postgres URL Secret)",
                "3D000" => " (check the database name in the Postgres URL)",
                "42501" => {
                    " (the role needs SELECT on background_migrations, traces, observations and scores, and UPDATE on background_migrations)"
                }
                "42P01" => " (is this Langfuse's database, and did v3.29.0 web run its Prisma migrations?)",
                "57014" => " (statement timeout: the database is overloaded or the table is far larger than expected)",
                _ => "",
            };
            format!("{} (SQLSTATE {code}){hint}", db.message())
        }
        sqlx::Error::PoolTimedOut => "no connection available in time".into(),
        sqlx::Error::Io(io) => format!("cannot reach the server: {}", error_chain(io)),
        sqlx::Error::Tls(tls) => format!(
            "TLS failed: {} (check sslmode and sslrootcert in the URL)",
            error_chain(tls.as_ref())
        ),
        other => error_chain(other),
    }
}

pub(super) fn clickhouse_detail(e: &clickhouse::error::Error) -> String {
    use clickhouse::error::Error as E;
    match e {
        E::Network(_) => format!("cannot reach the server: {}", error_chain(e)),
        E::BadResponse(msg) => msg.trim().to_string(),
        E::TimedOut => "timed out".into(),
        other => error_chain(other),
    }
}

/// An error and its sources, without repeating what a Display already included.
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
