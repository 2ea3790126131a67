//! TEST SUPPORT, shared by the database integration tests (`mod support;`).
//!
//! The servers come from `tests/db/up.sh` (see `tests/db/README.md`); `tests/db/run-tests.sh`
//! starts them, points `LFU_TEST_DB_ENV` at the env file up.sh wrote, runs the tests and stops
//! them. Without that variable, or when a server does not answer, a test FAILS with a message
//! saying how to start them: no test is ever skipped.
//!
//! Each test gets its own Postgres database and its own ClickHouse database with the fixtures
//! of `tests/db/fixtures` loaded, so tests run in parallel. A test's databases are dropped when
//! it calls [`TestDb::finish`] at its end; a failed test leaves them behind for inspection
//! (down.sh throws everything away).

pub mod events_data;
pub mod faults;
pub mod langfuse_data;
pub mod process;
pub mod standin_worker;
pub mod v4_worker;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use langfuse_upgrade_operator::databases::{ClickHouseConnection, SecretString};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, Row};

const HOW_TO: &str = "start the test servers first: `tests/db/run-tests.sh` does everything, or \
                      `tests/db/up.sh /tmp/lfu-db && LFU_TEST_DB_ENV=/tmp/lfu-db/env cargo test --test postgres -- --include-ignored`";

pub const PG_FIXTURE: &str = include_str!("../../../../tests/db/fixtures/postgres_v2.sql");
pub const CH_FIXTURE: &str = include_str!("../../../../tests/db/fixtures/clickhouse_v3.sql");
/// v4's events tables (migrations 38-42), loaded where a test plays a v4 release.
pub const CH_V4_EVENTS: &str = include_str!("../../../../tests/db/fixtures/clickhouse_v4_events.sql");
pub const PROJECT: &str = "lfu-test-project";

pub const TRACES: &str = "20241024_1730_migrate_traces_from_pg_to_ch";
pub const OBSERVATIONS: &str = "20241024_1737_migrate_observations_from_pg_to_ch";
pub const SCORES: &str = "20241024_1738_migrate_scores_from_pg_to_ch";
pub const COST_BACKFILL: &str = "20241024_1216_add_generations_cost_backfill";

/// The test servers, as tests/db/up.sh wrote them to its env file.
#[derive(Debug)]
pub struct Env {
    pub database_url: String,
    pub clickhouse_url: String,
    pub clickhouse_user: String,
    pub clickhouse_password: String,
    /// Redis (`requirepass`), plain and TLS (a throwaway CA the system does not trust).
    pub redis_url: String,
    pub redis_host: String,
    pub redis_port: String,
    pub redis_password: String,
    pub redis_tls_port: String,
    /// S3 (SeaweedFS, or VersityGW in the e2e tier and the demo): one full and one read-only
    /// identity, bucket pre-created.
    pub s3_endpoint: String,
    pub s3_region: String,
    pub s3_bucket: String,
    pub s3_access_key_id: String,
    pub s3_secret_access_key: String,
    pub s3_ro_access_key_id: String,
    pub s3_ro_secret_access_key: String,
}

/// Reads `$LFU_TEST_DB_ENV` once; panics (fails the test) with instructions when it is missing.
pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = std::env::var("LFU_TEST_DB_ENV")
            .unwrap_or_else(|_| panic!("LFU_TEST_DB_ENV is not set, so there are no test databases; {HOW_TO}"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read LFU_TEST_DB_ENV={path}: {e}; {HOW_TO}"));
        let var = |name: &str| -> String {
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("export "))
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.trim().trim_matches('\'').trim_matches('"').to_string())
                .unwrap_or_else(|| panic!("{path} has no {name}; was it written by tests/db/up.sh?"))
        };
        Env {
            database_url: var("LFU_TEST_DATABASE_URL"),
            clickhouse_url: var("LFU_TEST_CLICKHOUSE_URL"),
            clickhouse_user: var("LFU_TEST_CLICKHOUSE_USER"),
            clickhouse_password: var("LFU_TEST_CLICKHOUSE_PASSWORD"),
            redis_url: var("LFU_TEST_REDIS_URL"),
            redis_host: var("LFU_TEST_REDIS_HOST"),
            redis_port: var("LFU_TEST_REDIS_PORT"),
            redis_password: var("LFU_TEST_REDIS_PASSWORD"),
            redis_tls_port: var("LFU_TEST_REDIS_TLS_PORT"),
            s3_endpoint: var("LFU_TEST_S3_ENDPOINT"),
            s3_region: var("LFU_TEST_S3_REGION"),
            s3_bucket: var("LFU_TEST_S3_BUCKET"),
            s3_access_key_id: var("LFU_TEST_S3_ACCESS_KEY_ID"),
            s3_secret_access_key: var("LFU_TEST_S3_SECRET_ACCESS_KEY"),
            s3_ro_access_key_id: var("LFU_TEST_S3_RO_ACCESS_KEY_ID"),
            s3_ro_secret_access_key: var("LFU_TEST_S3_RO_SECRET_ACCESS_KEY"),
        }
    })
}

/// `url` with its database (path) replaced.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

pub fn clickhouse_client(database: Option<&str>) -> clickhouse::Client {
    let env = env();
    let client = clickhouse::Client::default()
        .with_url(env.clickhouse_url.clone())
        .with_user(env.clickhouse_user.clone())
        .with_password(env.clickhouse_password.clone());
    match database {
        Some(db) => client.with_database(db),
        None => client,
    }
}

/// The statements of a ClickHouse SQL file: a statement ends at a line ending in `;`; blank
/// and comment-only lines are skipped (the fixture's documented splitting rule).
pub fn clickhouse_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("--") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            out.push(std::mem::take(&mut current));
        }
    }
    assert!(current.trim().is_empty(), "trailing ClickHouse statement without ';'");
    out
}

/// One test's databases.
pub struct TestDb {
    pub name: String,
    /// The test database's URL, as the operator would get it from a Secret.
    pub pg_url: SecretString,
    /// A pool of the test's own, for setting up and inspecting rows.
    pub pool: PgPool,
    pub ch: ClickHouseConnection,
    pub ch_client: clickhouse::Client,
}

impl TestDb {
    /// Fresh Postgres and ClickHouse databases named after `label`, fixtures loaded.
    pub async fn new(label: &str) -> TestDb {
        Self::create(label, true).await
    }

    /// Fresh, empty databases (no fixtures).
    pub async fn empty(label: &str) -> TestDb {
        Self::create(label, false).await
    }

    async fn create(label: &str, fixtures: bool) -> TestDb {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let env = env();
        let clean: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let name = format!(
            "lfu_{clean}_{}_{}_{:04x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            rand::random::<u16>()
        );

        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&env.database_url)
            .await
            .unwrap_or_else(|e| panic!("test Postgres (LFU_TEST_DATABASE_URL) does not answer: {e}; {HOW_TO}"));
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        admin.close().await;

        let url = with_database(&env.database_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connect to test database {name}: {e}"));
        if fixtures {
            sqlx::raw_sql(PG_FIXTURE)
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("loading postgres_v2.sql into {name}: {e}"));
        }

        clickhouse_client(None)
            .query(&format!("CREATE DATABASE {name}"))
            .execute()
            .await
            .unwrap_or_else(|e| panic!("test ClickHouse (LFU_TEST_CLICKHOUSE_URL) does not answer: {e}; {HOW_TO}"));
        let ch_client = clickhouse_client(Some(&name));
        if fixtures {
            for stmt in clickhouse_statements(CH_FIXTURE) {
                ch_client
                    .query(&stmt)
                    .execute()
                    .await
                    .unwrap_or_else(|e| panic!("loading clickhouse_v3.sql into {name}: {e}\n{stmt}"));
            }
        }
        TestDb {
            pg_url: SecretString::new(url),
            pool,
            ch: ClickHouseConnection {
                url: env.clickhouse_url.clone(),
                user: SecretString::new(env.clickhouse_user.clone()),
                password: SecretString::new(env.clickhouse_password.clone()),
                database: Some(name.clone()),
            },
            ch_client,
            name,
        }
    }

    /// Drop both databases (call at the end of a passing test).
    pub async fn finish(self) {
        self.pool.close().await;
        let env = env();
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&env.database_url)
            .await
            .expect("admin connection");
        let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // FORCE cannot end an autovacuum worker (a superuser process) that happens to be in the
        // database (42501): it finishes within moments, so try again a few times.
        for attempt in 1.. {
            match admin.execute(AssertSqlSafe(drop.clone())).await {
                Ok(_) => break,
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") && attempt < 20 => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!("drop test database {}: {e}", self.name),
            }
        }
        admin.close().await;
        clickhouse_client(None)
            .query(&format!("DROP DATABASE IF EXISTS {}", self.name))
            .execute()
            .await
            .expect("drop ClickHouse test database");
    }

    // ---- Postgres helpers ------------------------------------------------------------------

    /// Insert `n` rows into `table` (`traces`, `observations` or `scores`) with ids
    /// `<prefix>-<i>` and `created_at = first + i * step_ms` (step 0: all share one value).
    /// Event times (`timestamp` / `start_time`) equal `created_at`.
    pub async fn insert_rows(&self, table: &str, prefix: &str, n: i64, first: Timestamp, step_ms: i64) {
        let sql = match table {
            "traces" => {
                r#"INSERT INTO traces (id, project_id, "timestamp", name, user_id, input, output, tags, created_at, updated_at)
                   SELECT $1 || '-' || i, $5, t.ts, 'trace ' || i, 'user-' || (i % 7),
                          jsonb_build_object('q', i), jsonb_build_object('a', i), ARRAY['t' || (i % 3)], t.ts, t.ts
                   FROM generate_series(0, $2::bigint - 1) AS i,
                        LATERAL (SELECT timestamp 'epoch' + ($3::bigint + i * $4::bigint) * interval '1 millisecond' AS ts) AS t"#
            }
            "observations" => {
                r#"INSERT INTO observations (id, trace_id, project_id, type, name, start_time, end_time, model,
                                             prompt_tokens, completion_tokens, total_tokens,
                                             calculated_input_cost, calculated_output_cost, calculated_total_cost,
                                             created_at, updated_at)
                   SELECT $1 || '-' || i, 'trace-' || i, $5, 'GENERATION', 'generation ' || i, t.ts,
                          t.ts + interval '1 second', 'gpt-4o', 10, 20, 30, 0.0001, 0.0002, 0.0003, t.ts, t.ts
                   FROM generate_series(0, $2::bigint - 1) AS i,
                        LATERAL (SELECT timestamp 'epoch' + ($3::bigint + i * $4::bigint) * interval '1 millisecond' AS ts) AS t"#
            }
            "scores" => {
                r#"INSERT INTO scores (id, project_id, trace_id, "timestamp", name, value, source, created_at, updated_at)
                   SELECT $1 || '-' || i, $5, 'trace-' || i, t.ts, 'quality', (i % 5)::float8, 'API', t.ts, t.ts
                   FROM generate_series(0, $2::bigint - 1) AS i,
                        LATERAL (SELECT timestamp 'epoch' + ($3::bigint + i * $4::bigint) * interval '1 millisecond' AS ts) AS t"#
            }
            "dataset_run_items" => {
                r#"INSERT INTO dataset_run_items (id, project_id, dataset_run_id, dataset_item_id, trace_id, created_at, updated_at)
                   SELECT $1 || '-' || i, $5, 'run-' || (i % 4), 'item-' || (i % 50), 'trace-' || i, t.ts, t.ts
                   FROM generate_series(0, $2::bigint - 1) AS i,
                        LATERAL (SELECT timestamp 'epoch' + ($3::bigint + i * $4::bigint) * interval '1 millisecond' AS ts) AS t"#
            }
            other => panic!("no such table {other}"),
        };
        sqlx::query(AssertSqlSafe(sql))
            .bind(prefix)
            .bind(n)
            .bind(first.as_millisecond())
            .bind(step_ms)
            .bind(PROJECT)
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("insert {n} rows into {table}: {e}"));
    }

    /// Newest `created_at` over the three tables, epoch milliseconds.
    pub async fn newest_created_ms(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT (extract(epoch FROM greatest((SELECT max(created_at) FROM traces), (SELECT max(created_at) FROM observations), (SELECT max(created_at) FROM scores))) * 1000)::bigint",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    pub async fn pg_count(&self, table: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn pg_table_exists(&self, table: &str) -> bool {
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Run a statement on the test database (setup only).
    pub async fn pg_exec(&self, sql: &str) {
        self.pool
            .execute(AssertSqlSafe(sql.to_string()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The whole `background_migrations` row as JSON (every column).
    pub async fn migration_row(&self, name: &str) -> serde_json::Value {
        sqlx::query_scalar("SELECT to_jsonb(b) FROM background_migrations b WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("read background_migrations row {name}: {e}"))
    }

    /// Every `background_migrations` row, by name.
    pub async fn migration_rows(&self) -> Vec<serde_json::Value> {
        sqlx::query("SELECT to_jsonb(b) AS row FROM background_migrations b ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("row"))
            .collect()
    }

    /// Mark the migrations before `name` (by name) finished, as a worker would have.
    pub async fn finish_migrations_before(&self, name: &str) {
        sqlx::query(
            "UPDATE background_migrations SET finished_at = (now() AT TIME ZONE 'UTC')::timestamp(3) WHERE name < $1",
        )
        .bind(name)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    // ---- ClickHouse helpers ----------------------------------------------------------------

    pub async fn ch_exec(&self, sql: &str) {
        self.ch_client
            .query(sql)
            .execute()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The tables a v4 web's ClickHouse migrations create (events, staging).
    pub async fn load_v4_events(&self) {
        load_v4_events(&self.ch_client).await;
    }

    pub async fn ch_u64(&self, sql: &str) -> u64 {
        self.ch_client
            .query(sql)
            .fetch_one::<u64>()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Live rows as verification counts them (`FINAL`, not deleted), all of them.
    pub async fn ch_final_count(&self, table: &str) -> u64 {
        self.ch_u64(&format!("SELECT count() FROM {table} FINAL WHERE is_deleted = 0"))
            .await
    }

    /// Every inserted row version, duplicates included (what a copy wrote).
    pub async fn ch_raw_count(&self, table: &str) -> u64 {
        self.ch_u64(&format!("SELECT count() FROM {table}")).await
    }
}

/// v4's events tables into the database of `client`.
pub async fn load_v4_events(client: &clickhouse::Client) {
    for stmt in clickhouse_statements(CH_V4_EVENTS) {
        client
            .query(&stmt)
            .execute()
            .await
            .unwrap_or_else(|e| panic!("loading clickhouse_v4_events.sql: {e}\n{stmt}"));
    }
}

/// A timestamp `ms` milliseconds after the epoch.
pub fn t_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap()
}

/// Now, truncated to the millisecond (what Postgres stores).
pub fn now_ms() -> Timestamp {
    t_ms(Timestamp::now().as_millisecond())
}

/// Poll `f` every 100 ms until it returns `Some`, or panic after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
