//! A ClickHouse query that failed, with what it was reading, for a message a person can act on.

#[derive(Debug)]
pub struct QueryError {
    pub what: &'static str,
    pub source: clickhouse::error::Error,
}

pub(super) fn err(what: &'static str) -> impl FnOnce(clickhouse::error::Error) -> QueryError {
    move |source| QueryError { what, source }
}
