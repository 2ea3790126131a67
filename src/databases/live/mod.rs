//! The real [`Databases`]: sqlx for Postgres, the `clickhouse` crate for ClickHouse.
//!
//! Connections are cached per distinct URL / ClickHouse login (keyed by a keyed hash and then
//! compared in full, so a collision can never hand out another database's pool). Pools are
//! small (two connections), open lazily, and carry a statement timeout, so the operator can
//! never hold more than a couple of backends of Langfuse's database or run away with one.
//!
//! Every error becomes a [`DbError`] that says which database, what was being read and why,
//! and never contains a password or a URL with credentials (the text is scrubbed of both as a
//! last line of defence).

mod errors;
pub mod prometheus;
pub mod redis;
pub mod s3;
mod secrets;
mod url;

use errors::*;
use secrets::*;
use url::*;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgPool, pool::PoolConnection};

use super::{ClickHouseConnection, ClickHouseQuery, Databases, DbError, PostgresQuery, Remedy, SecretString};
use crate::migrations::PostgresFacts;
use crate::migrations::postgres::{self as pg, LONG_STATEMENT_TIMEOUT};
use crate::verify::ClickHouseFacts;
use crate::verify::clickhouse as ch;

/// Limits of the live connections.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    /// Connections per Postgres pool.
    pub max_connections: u32,
    /// Time to open (or wait for) a Postgres connection.
    pub connect_timeout: Duration,
    /// `statement_timeout` of every operator session (the preflight scan and the verification
    /// counts use [`LONG_STATEMENT_TIMEOUT`] instead).
    pub statement_timeout: Duration,
    /// Idle Postgres connections are closed after this long.
    pub idle_timeout: Duration,
    /// Budget of one ClickHouse observation (every query of it); the verification counts get
    /// at least [`LONG_STATEMENT_TIMEOUT`].
    pub clickhouse_timeout: Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            max_connections: 2,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            clickhouse_timeout: Duration::from_secs(30),
        }
    }
}

/// At most this many cached pools / clients; beyond it an arbitrary one is dropped (a changed
/// Secret leaves its old pool behind otherwise).
const MAX_CACHED: usize = 32;

/// How long a pooled connection may take before a direct attempt runs beside it: above a
/// loopback or in-cluster connect (a few ms), below anything a person would notice.
const PROBE_AFTER: Duration = Duration::from_millis(250);

/// Refusals the pool rides out within its timeout: too many clients (53300), the server
/// starting up or shutting down (57P03, 57P01), a failover's brief "cannot connect now".
fn transient(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("53300" | "57P03" | "57P01")))
}

#[derive(Clone)]
struct PgEntry {
    url: SecretString,
    pool: PgPool,
    options: PgConnectOptions,
    target: String,
    secrets: Vec<String>,
    /// One probe at a time per database: slow acquires during an overload must not each open
    /// a connection of their own (the server may be at `max_connections`).
    probe: Arc<tokio::sync::Semaphore>,
}

#[derive(Clone)]
struct ChEntry {
    url: String,
    user: SecretString,
    password: SecretString,
    database: Option<String>,
    client: clickhouse::Client,
    target: String,
}

/// Databases reached for real. Cheap to share: wrap it in the controller's `Arc` context.
pub struct Live {
    config: LiveConfig,
    hasher: RandomState,
    pg: Mutex<HashMap<u64, PgEntry>>,
    ch: Mutex<HashMap<u64, ChEntry>>,
    /// One HTTP client (its connection pool) for Prometheus.
    http: reqwest::Client,
    /// One ClickHouse HTTP client (TLS settings and connection pool) under every target's
    /// client: a target's own is only its URL and credentials.
    clickhouse: clickhouse::Client,
}

impl Default for Live {
    fn default() -> Self {
        Self::new(LiveConfig::default())
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("config", &self.config)
            .field("postgres_pools", &self.cached_pools())
            .finish_non_exhaustive()
    }
}

impl Live {
    pub fn new(config: LiveConfig) -> Self {
        Self {
            config,
            hasher: RandomState::new(),
            pg: Mutex::new(HashMap::new()),
            ch: Mutex::new(HashMap::new()),
            http: reqwest::Client::new(),
            clickhouse: clickhouse::Client::default(),
        }
    }

    /// Number of cached Postgres pools (one per distinct URL).
    pub fn cached_pools(&self) -> usize {
        self.pg.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn key(&self, parts: &[&str]) -> u64 {
        self.hasher.hash_one(parts)
    }

    fn pg_entry(&self, url: &SecretString) -> Result<PgEntry, DbError> {
        let key = self.key(&[url.expose()]);
        let mut cache = self.pg.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = cache.get(&key).filter(|e| e.url == *url) {
            return Ok(entry.clone());
        }
        let entry = self.new_pg_entry(url)?;
        if cache.len() >= MAX_CACHED
            && let Some(&old) = cache.keys().next()
        {
            cache.remove(&old);
        }
        cache.insert(key, entry.clone());
        Ok(entry)
    }

    fn new_pg_entry(&self, url: &SecretString) -> Result<PgEntry, DbError> {
        let secrets = url_secrets(url.expose());
        let options = PgConnectOptions::from_str(&libpq_url(url.expose())).map_err(|e| {
            DbError::Unavailable(scrub(
                &format!("the Postgres URL is not valid: {}", error_chain(&e)),
                &secrets,
            ))
        })?;
        let prisma = PrismaParams::parse(url.expose());
        let mut options = options.application_name("langfuse-upgrade-operator");
        if prisma.pgbouncer {
            // Transaction pooling: no named prepared statements survive between transactions.
            options = options.statement_cache_capacity(0);
        }
        let target = format!(
            "{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("(default database)")
        );
        let mut session = Vec::new();
        if !prisma.pgbouncer {
            // Behind a transaction-pooling PgBouncer a session SET would leak to Langfuse's own
            // sessions; there the client-side timeouts alone bound the operator.
            session.push(format!(
                "SET statement_timeout = {}",
                self.config.statement_timeout.as_millis()
            ));
        }
        if let Some(schema) = prisma.schema {
            session.push(format!("SET search_path TO {}", quote_ident(&schema)));
        }
        let pool = PgPoolOptions::new()
            .max_connections(self.config.max_connections)
            .min_connections(0)
            .acquire_timeout(self.config.connect_timeout)
            .idle_timeout(self.config.idle_timeout)
            .max_lifetime(Duration::from_secs(1800))
            .after_connect(move |conn, _meta| {
                let session = session.clone();
                Box::pin(async move {
                    for sql in session {
                        conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options.clone());
        Ok(PgEntry {
            url: url.clone(),
            pool,
            options,
            target,
            secrets,
            probe: Arc::new(tokio::sync::Semaphore::new(1)),
        })
    }

    /// A pooled connection. A pool that cannot connect retries until its acquire timeout and
    /// then says only "timed out"; so when it has not answered within [`PROBE_AFTER`], one
    /// direct attempt runs beside it, and a refusal, an unknown host or a wrong password is
    /// reported as soon as that attempt meets it (a blocked upgrade re-checks in milliseconds,
    /// not in the whole timeout). A probe that connects (the pool is busy, or the server slow)
    /// leaves the outcome to the pool.
    async fn acquire(&self, entry: &PgEntry) -> Result<PoolConnection<sqlx::Postgres>, DbError> {
        let pooled = entry.pool.acquire();
        tokio::pin!(pooled);
        tokio::select! {
            got = &mut pooled => return self.pooled(entry, got).await,
            _ = tokio::time::sleep(PROBE_AFTER) => {}
        }
        // Another acquire is probing already: its answer is this one's too; wait on the pool.
        let Ok(_permit) = entry.probe.clone().try_acquire_owned() else {
            let got = pooled.await;
            return self.pooled(entry, got).await;
        };
        let probe = tokio::time::timeout(self.config.connect_timeout, entry.options.connect());
        tokio::pin!(probe);
        tokio::select! {
            got = &mut pooled => return self.pooled(entry, got).await,
            probed = &mut probe => match probed {
                // A server that is busy or starting answers the pool in a moment: not a fault.
                Ok(Err(e)) if transient(&e) => {}
                Ok(Err(e)) => return Err(pg_error(entry, "connecting", &sql_detail(&e))),
                Ok(Ok(conn)) => {
                    // A clean goodbye (one message, no reply awaited), not a dropped socket.
                    let _ = sqlx::Connection::close(conn).await;
                }
                Err(_) => {}
            },
        }
        let got = pooled.await;
        self.pooled(entry, got).await
    }

    /// The pool's answer; when it gave up, one direct attempt names the real cause instead of
    /// "timed out".
    async fn pooled(
        &self,
        entry: &PgEntry,
        got: Result<PoolConnection<sqlx::Postgres>, sqlx::Error>,
    ) -> Result<PoolConnection<sqlx::Postgres>, DbError> {
        match got {
            Ok(conn) => Ok(conn),
            Err(sqlx::Error::PoolTimedOut) => {
                let direct = tokio::time::timeout(self.config.connect_timeout, entry.options.connect()).await;
                let why = match direct {
                    Ok(Err(e)) => sql_detail(&e),
                    Ok(Ok(_)) => "the connection pool is busy; the next reconcile retries".into(),
                    Err(_) => format!("no answer within {}s", self.config.connect_timeout.as_secs()),
                };
                Err(pg_error(entry, "connecting", &why))
            }
            Err(e) => Err(pg_error(entry, "connecting", &sql_detail(&e))),
        }
    }

    fn ch_entry(&self, conn: &ClickHouseConnection) -> ChEntry {
        let database = conn.database.clone().filter(|d| !d.is_empty());
        let key = self.key(&[
            &conn.url,
            conn.user.expose(),
            conn.password.expose(),
            database.as_deref().unwrap_or(""),
        ]);
        let mut cache = self.ch.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = cache.get(&key).filter(|e| {
            e.url == conn.url && e.user == conn.user && e.password == conn.password && e.database == database
        }) {
            return entry.clone();
        }
        let mut client = self
            .clickhouse
            .clone()
            .with_url(conn.url.clone())
            .with_user(conn.user.expose())
            .with_password(conn.password.expose());
        if let Some(db) = &database {
            client = client.with_database(db.clone());
        }
        let target = format!(
            "{}{}",
            redact_url(&conn.url),
            database
                .as_deref()
                .map(|d| format!(" (database {d})"))
                .unwrap_or_default()
        );
        let entry = ChEntry {
            url: conn.url.clone(),
            user: conn.user.clone(),
            password: conn.password.clone(),
            database,
            client,
            target,
        };
        if cache.len() >= MAX_CACHED
            && let Some(&old) = cache.keys().next()
        {
            cache.remove(&old);
        }
        cache.insert(key, entry.clone());
        entry
    }
}

impl Databases for Live {
    async fn redis(&self, target: &super::RedisTarget) -> Result<super::RedisFacts, super::RedisProblem> {
        redis::probe(target, self.config.connect_timeout * 2).await
    }

    async fn propagation_keys(
        &self,
        target: &super::RedisTarget,
    ) -> Result<crate::data_model::PropagationKeys, super::RedisProblem> {
        redis::propagation_keys(target, self.config.connect_timeout * 2).await
    }

    async fn s3(&self, target: &super::S3Target) -> Result<super::S3Facts, super::S3Problem> {
        s3::probe(target, s3::BUDGET).await
    }

    async fn error_ratio(
        &self,
        query: &crate::analysis::ErrorRatioQuery,
    ) -> Result<crate::analysis::ErrorRatioFacts, String> {
        prometheus::error_ratio(&self.http, query).await
    }

    async fn postgres(&self, url: &SecretString, query: &PostgresQuery) -> Result<PostgresFacts, DbError> {
        let entry = self.pg_entry(url)?;
        let long = query.same_created_at_scan.is_some() || query.counts_until.is_some();
        let budget = self.config.connect_timeout
            + self.config.statement_timeout
            + if long { LONG_STATEMENT_TIMEOUT } else { Duration::ZERO };
        let work = async {
            let mut conn = self.acquire(&entry).await?;
            pg::read(&mut conn, query).await.map_err(|e| query_error(&entry, e))
        };
        match tokio::time::timeout(budget, work).await {
            Ok(result) => result,
            Err(_) => Err(pg_error(
                &entry,
                "reading",
                &format!("no answer within {}s", budget.as_secs()),
            )),
        }
    }

    async fn clickhouse(
        &self,
        conn: &ClickHouseConnection,
        query: &ClickHouseQuery,
    ) -> Result<ClickHouseFacts, DbError> {
        let entry = self.ch_entry(conn);
        let secrets = vec![conn.password.expose().to_string()];
        // `count() FINAL` over a large table is slow on any server: verification gets the long budget.
        let budget = if query.counts_until.is_some() || query.events.counts.is_some() {
            self.config.clickhouse_timeout.max(LONG_STATEMENT_TIMEOUT)
        } else {
            self.config.clickhouse_timeout
        };
        match tokio::time::timeout(budget, ch::read(&entry.client, query)).await {
            Ok(Ok(facts)) => Ok(facts),
            Ok(Err(e)) => Err(DbError::Unavailable(scrub(
                &format!(
                    "ClickHouse at {}: {}: {}",
                    entry.target,
                    e.what,
                    clickhouse_detail(&e.source)
                ),
                &secrets,
            ))),
            Err(_) => Err(DbError::Unavailable(format!(
                "ClickHouse at {}: no answer within {}s",
                entry.target,
                budget.as_secs()
            ))),
        }
    }

    async fn remedy(&self, url: &SecretString, remedy: &Remedy) -> Result<(), DbError> {
        let entry = self.pg_entry(url)?;
        let budget = self.config.connect_timeout + self.config.statement_timeout;
        let work = async {
            let mut conn = self.acquire(&entry).await?;
            pg::remedy(&mut conn, remedy).await.map_err(|e| query_error(&entry, e))
        };
        match tokio::time::timeout(budget, work).await {
            Ok(result) => result,
            Err(_) => Err(pg_error(
                &entry,
                "writing a remedy",
                &format!(
                    "no answer within {}s; the write may or may not have happened (it is idempotent)",
                    budget.as_secs()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_cover_raw_and_decoded_passwords() {
        let url = "postgresql://lf:p%40ss%2Fw0rd@db.example:5432/langfuse?sslmode=require";
        let s = url_secrets(url);
        assert!(s.contains(&"p%40ss%2Fw0rd".to_string()));
        assert!(s.contains(&"p@ss/w0rd".to_string()));
        let msg = scrub(&format!("failed for {url} with p@ss/w0rd"), &s);
        assert!(!msg.contains("p@ss/w0rd") && !msg.contains("p%40ss"), "{msg}");
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("https://u:pw@ch.example:8443/x?user=a"),
            "https://ch.example:8443/x"
        );
        assert_eq!(redact_url("http://ch:8123"), "http://ch:8123");
    }

    #[test]
    fn prisma_parameters() {
        let p = PrismaParams::parse("postgres://u:p@h/db?schema=lang%22fuse&pgbouncer=true&connection_limit=3");
        assert_eq!(p.schema.as_deref(), Some("lang\"fuse"));
        assert!(p.pgbouncer);
        assert_eq!(quote_ident("lang\"fuse"), "\"lang\"\"fuse\"");
        assert_eq!(PrismaParams::parse("postgres://h/db"), PrismaParams::default());
    }

    #[test]
    fn only_libpq_parameters_reach_sqlx() {
        assert_eq!(
            libpq_url("postgres://u:p@h/db?schema=lf&sslmode=require&sslpassword=x&connection_limit=3&sslcert=ca.pem"),
            "postgres://u:p@h/db?sslmode=require"
        );
        assert_eq!(
            libpq_url("postgres://u:p@h/db?sslcert=c.pem&sslkey=k.pem&options[search_path]=x"),
            "postgres://u:p@h/db?sslcert=c.pem&sslkey=k.pem&options[search_path]=x"
        );
        assert_eq!(libpq_url("postgres://u:p@h/db?pgbouncer=true"), "postgres://u:p@h/db");
        assert_eq!(libpq_url("postgres://u:p@h/db"), "postgres://u:p@h/db");
    }

    #[test]
    fn invalid_urls_do_not_echo_the_password() {
        let live = Live::default();
        let err = live
            .pg_entry(&SecretString::new("postgres://u:hunter22@[::1/db"))
            .err()
            .expect("invalid URL");
        assert!(!err.to_string().contains("hunter22"), "{err}");
    }
}
