//! TEST SUPPORT: a stand-in for the Langfuse 3.29.0 worker's background-migration runner.
//!
//! Langfuse containers cannot run on the test machines, so this reproduces, against the real
//! test Postgres and ClickHouse, the behaviour documented in
//! `/work/shared/reference/langfuse-internals.md` §1-§2 (it is written from those facts, not
//! from Langfuse's code):
//!
//! - it runs only when enabled (`LANGFUSE_ENABLE_BACKGROUND_MIGRATIONS=true`), once, at start;
//! - in a SERIALIZABLE transaction it picks the first row by `name` with `finished_at` and
//!   `failed_at` NULL; no such row, or that row locked less than the stale window ago: it logs
//!   and stops for good (no retry later);
//! - it acquires the row (`worker_id`, `locked_at`) and heartbeats `locked_at` while it runs;
//! - a copy script reads `created_at <= maxDate ORDER BY created_at DESC LIMIT batchSize` from
//!   Postgres, inserts the batch into the ClickHouse table of the same name (`is_deleted = 0`,
//!   `event_ts` = `timestamp` for traces and scores, `start_time` for observations), sets
//!   `state.maxDate` to the batch's oldest `created_at`, and stops after a short batch (or after
//!   `args.maxRowsToProcess` rows). `maxDate` starts at `state.maxDate`, else `args.maxDate`,
//!   else now, and is written to `state` before the first batch. Hence the documented trap:
//!   more than `batchSize` rows sharing one `created_at` never advance the cursor;
//! - success: `finished_at = now, locked_at = NULL`; an exception: `failed_at = now,
//!   failed_reason = message, locked_at = NULL`; the loop then picks the next row;
//! - the cost backfill keeps no state and is simply marked finished here.
//!
//! Test knobs: the heartbeat interval and stale window, an injectable "napi string" failure,
//! [`Standin::kill`] (SIGKILL: no more heartbeats, nothing cleaned up) and
//! [`Standin::shutdown`] (SIGTERM: stop after the current batch, `locked_at = NULL`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, Row};
use tokio::task::JoinHandle;

/// The message Prisma gives when a batch's result string exceeds Node's string limit.
pub const NAPI_MESSAGE: &str = "Failed to convert rust String into napi string";
const DEFAULT_BATCH_SIZE: i64 = 5000;

#[derive(Clone, Debug)]
pub struct StandinConfig {
    /// `LANGFUSE_ENABLE_BACKGROUND_MIGRATIONS`.
    pub enabled: bool,
    /// 15 s in 3.29.0.
    pub heartbeat: Duration,
    /// 60 s in 3.29.0: a fresher lock makes the worker give up.
    pub stale_after: Duration,
    /// Fail like Prisma's "napi string" error on large batches.
    pub napi: Option<NapiFailure>,
    /// Pause between batches (keeps a trapped loop from hammering the test servers).
    pub batch_pause: Duration,
    /// `LANGFUSE_BACKGROUND_MIGRATION_*` env vars that are `"true"` (3.203.0+): a row whose
    /// `args.envGate` is not among them is invisible to the manager.
    pub open_gates: Vec<String>,
}

impl Default for StandinConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            heartbeat: Duration::from_millis(200),
            stale_after: Duration::from_secs(2),
            napi: None,
            batch_pause: Duration::from_millis(20),
            open_gates: Vec::new(),
        }
    }
}

/// A batch larger than `max_batch` rows that holds a row created before `heavy_before` (the
/// rows with large blobs; `None`: every row) fails with [`NAPI_MESSAGE`].
#[derive(Clone, Debug)]
pub struct NapiFailure {
    pub max_batch: i64,
    pub heavy_before: Option<Timestamp>,
}

/// What one worker process did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub worker_id: String,
    /// Rows picked and run, in order.
    pub picked: Vec<String>,
    /// The row this worker found freshly locked by another worker, if it gave up on one.
    pub gave_up_on_lock: Option<String>,
    /// Per copy run: the `state.maxDate` it resumed from (`None`: a fresh start).
    pub resumed_from: Vec<(String, Option<String>)>,
    pub batches: u64,
    pub rows_inserted: u64,
    /// Killed before it finished (SIGKILL).
    pub killed: bool,
}

#[derive(Default)]
struct Shared {
    killed: AtomicBool,
    aborted: AtomicBool,
    batches: AtomicU64,
    rows_inserted: AtomicU64,
}

/// One running stand-in worker process.
pub struct Standin {
    shared: Arc<Shared>,
    task: JoinHandle<Result<Report, String>>,
}

impl Standin {
    /// Start a worker against the test databases (as a worker pod start would).
    pub async fn start(pg_url: &str, ch: clickhouse::Client, config: StandinConfig) -> Standin {
        let pool = PgPoolOptions::new()
            .max_connections(3)
            .connect(pg_url)
            .await
            .expect("stand-in worker: connect to Postgres");
        let shared = Arc::new(Shared::default());
        let worker = Worker {
            pool,
            ch: ch
                .with_setting("async_insert", "1")
                .with_setting("wait_for_async_insert", "1"),
            config,
            id: format!("standin-{:016x}", rand::random::<u64>()),
            shared: shared.clone(),
        };
        let task = tokio::spawn(async move { worker.run().await });
        Standin { shared, task }
    }

    pub fn batches(&self) -> u64 {
        self.shared.batches.load(Ordering::SeqCst)
    }

    pub fn rows_inserted(&self) -> u64 {
        self.shared.rows_inserted.load(Ordering::SeqCst)
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// SIGKILL: the process is gone mid-run; the lock stays as it was and goes stale.
    pub async fn kill(self) -> Report {
        self.shared.killed.store(true, Ordering::SeqCst);
        let mut report = self.task.await.expect("stand-in task").expect("stand-in worker");
        report.killed = true;
        report
    }

    /// SIGTERM (a rollout restart): stop after the current batch, clear `locked_at`, keep
    /// `state` and `worker_id`.
    pub async fn shutdown(self) -> Report {
        self.shared.aborted.store(true, Ordering::SeqCst);
        self.task.await.expect("stand-in task").expect("stand-in worker")
    }

    /// Wait until the manager loop ends by itself (nothing left to run, or gave up).
    pub async fn wait(self, timeout: Duration) -> Report {
        tokio::time::timeout(timeout, self.task)
            .await
            .unwrap_or_else(|_| panic!("stand-in worker did not finish within {timeout:?}"))
            .expect("stand-in task")
            .expect("stand-in worker")
    }
}

struct Worker {
    pool: PgPool,
    ch: clickhouse::Client,
    config: StandinConfig,
    id: String,
    shared: Arc<Shared>,
}

struct Picked {
    id: String,
    name: String,
    script: String,
    args: serde_json::Value,
    state: serde_json::Value,
}

enum Outcome {
    Finished,
    Aborted,
    Killed,
}

/// The worker's clock, as Prisma writes `new Date()`: UTC, millisecond precision.
const NOW: &str = "(clock_timestamp() AT TIME ZONE 'UTC')::timestamp(3)";

impl Worker {
    fn killed(&self) -> bool {
        self.shared.killed.load(Ordering::SeqCst)
    }
    fn aborted(&self) -> bool {
        self.shared.aborted.load(Ordering::SeqCst)
    }

    async fn run(self) -> Result<Report, String> {
        let mut report = Report {
            worker_id: self.id.clone(),
            ..Report::default()
        };
        if self.config.enabled {
            self.manage(&mut report).await?;
        }
        report.batches = self.shared.batches.load(Ordering::SeqCst);
        report.rows_inserted = self.shared.rows_inserted.load(Ordering::SeqCst);
        self.pool.close().await;
        Ok(report)
    }

    async fn manage(&self, report: &mut Report) -> Result<(), String> {
        loop {
            if self.killed() || self.aborted() {
                return Ok(());
            }
            let Some(row) = self.pick(report).await? else {
                return Ok(()); // "No background migrations to run" (or a fresh lock elsewhere)
            };
            report.picked.push(row.name.clone());
            let heartbeat = self.heartbeat(&row.id);
            let result = self.run_script(&row, report).await;
            heartbeat.abort();
            if self.killed() {
                return Ok(()); // SIGKILL: nothing more happens
            }
            match result {
                Ok(Outcome::Finished) => {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE background_migrations SET finished_at = {NOW}, locked_at = NULL WHERE id = $1"
                    )))
                    .bind(&row.id)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| format!("mark finished: {e}"))?;
                }
                Ok(Outcome::Aborted) => {
                    // close(): locked_at = NULL; state and worker_id kept.
                    sqlx::query("UPDATE background_migrations SET locked_at = NULL WHERE id = $1")
                        .bind(&row.id)
                        .execute(&self.pool)
                        .await
                        .map_err(|e| format!("release lock: {e}"))?;
                    return Ok(());
                }
                Ok(Outcome::Killed) => return Ok(()),
                Err(message) => {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE background_migrations SET failed_at = {NOW}, failed_reason = $2, locked_at = NULL WHERE id = $1"
                    )))
                    .bind(&row.id)
                    .bind(&message)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| format!("mark failed: {e}"))?;
                }
            }
        }
    }

    /// The pick, in a SERIALIZABLE transaction; `None` when there is nothing to do or the
    /// next row is freshly locked (then the worker gives up for good).
    async fn pick(&self, report: &mut Report) -> Result<Option<Picked>, String> {
        for _attempt in 0..5 {
            match self.try_pick(report).await {
                Ok(picked) => return Ok(picked),
                // 40001: serialization failure between competing workers; try again.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("40001") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(format!("pick: {e}")),
            }
        }
        Err("pick: too many serialization failures".into())
    }

    async fn try_pick(&self, report: &mut Report) -> Result<Option<Picked>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, name, script, args, state,
                    (extract(epoch FROM {NOW} - locked_at) * 1000)::bigint AS lock_age_ms
             FROM background_migrations
             WHERE finished_at IS NULL AND failed_at IS NULL
               AND (args ->> 'envGate' IS NULL OR args ->> 'envGate' = ANY($1))
             ORDER BY name ASC LIMIT 1"
        )))
        .bind(&self.config.open_gates)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let name: String = row.get("name");
        let lock_age: Option<i64> = row.get("lock_age_ms");
        if lock_age.is_some_and(|age| age < self.config.stale_after.as_millis() as i64) {
            tx.commit().await?;
            report.gave_up_on_lock = Some(name);
            return Ok(None);
        }
        let id: String = row.get("id");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE background_migrations SET worker_id = $2, locked_at = {NOW} WHERE id = $1"
        )))
        .bind(&id)
        .bind(&self.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(Picked {
            id,
            name,
            script: row.get("script"),
            args: row.get("args"),
            state: row.get("state"),
        }))
    }

    /// `locked_at = now` every heartbeat while this worker holds the unfinished row.
    fn heartbeat(&self, id: &str) -> JoinHandle<()> {
        let (pool, shared, every, me, id) = (
            self.pool.clone(),
            self.shared.clone(),
            self.config.heartbeat,
            self.id.clone(),
            id.to_string(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if shared.killed.load(Ordering::SeqCst) {
                    return;
                }
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE background_migrations SET locked_at = {NOW}
                     WHERE id = $1 AND worker_id = $2 AND finished_at IS NULL AND failed_at IS NULL"
                )))
                .bind(&id)
                .bind(&me)
                .execute(&pool)
                .await;
            }
        })
    }

    async fn run_script(&self, row: &Picked, report: &mut Report) -> Result<Outcome, String> {
        let table = match row.script.as_str() {
            "migrateTracesFromPostgresToClickhouse" => "traces",
            "migrateObservationsFromPostgresToClickhouse" => "observations",
            "migrateScoresFromPostgresToClickhouse" => "scores",
            // The cost backfill: no state, nothing the operator watches beyond finishing.
            _ => return Ok(Outcome::Finished),
        };
        // validate(): the ClickHouse table must exist.
        let exists = self
            .ch
            .query("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?")
            .bind(table)
            .fetch_one::<u64>()
            .await
            .map_err(|e| format!("ClickHouse: {e}"))?;
        if exists == 0 {
            return Err(format!("ClickHouse {table} table does not exist"));
        }

        let key = if table == "observations" {
            format!(
                "maxDate{}",
                row.args.get("stateSuffix").and_then(|v| v.as_str()).unwrap_or("")
            )
        } else {
            "maxDate".to_string()
        };
        let batch_size = number(row.args.get("batchSize")).unwrap_or(DEFAULT_BATCH_SIZE);
        let max_rows = number(row.args.get("maxRowsToProcess")).unwrap_or(i64::MAX);
        let from_state = row.state.get(&key).and_then(|v| v.as_str()).map(str::to_string);
        report.resumed_from.push((row.name.clone(), from_state.clone()));
        let start = from_state
            .or_else(|| row.args.get("maxDate").and_then(|v| v.as_str()).map(str::to_string))
            .map(|s| parse_iso(&s))
            .transpose()?
            .unwrap_or_else(|| Timestamp::now().as_millisecond());
        let mut max_date = start;
        self.write_cursor(&row.id, &key, max_date).await?;

        let mut processed: i64 = 0;
        loop {
            if self.killed() {
                return Ok(Outcome::Killed);
            }
            if self.aborted() {
                return Ok(Outcome::Aborted);
            }
            if processed >= max_rows {
                break;
            }
            let (len, oldest) = self.copy_batch(table, max_date, batch_size).await?;
            if len == 0 {
                break;
            }
            processed += len as i64;
            if let Some(oldest) = oldest {
                max_date = oldest;
                self.write_cursor(&row.id, &key, max_date).await?;
            }
            self.shared.batches.fetch_add(1, Ordering::SeqCst);
            if (len as i64) < batch_size {
                break;
            }
            tokio::time::sleep(self.config.batch_pause).await;
        }
        Ok(Outcome::Finished)
    }

    async fn write_cursor(&self, id: &str, key: &str, max_date_ms: i64) -> Result<(), String> {
        sqlx::query(
            "UPDATE background_migrations SET state = jsonb_set(state, ARRAY[$2], to_jsonb($3::text)) WHERE id = $1",
        )
        .bind(id)
        .bind(key)
        .bind(iso(max_date_ms))
        .execute(&self.pool)
        .await
        .map_err(|e| format!("write state.{key}: {e}"))?;
        Ok(())
    }

    /// One batch: read from Postgres, insert into ClickHouse. Returns the row count and the
    /// oldest `created_at` (epoch ms).
    async fn copy_batch(&self, table: &str, max_date: i64, batch: i64) -> Result<(usize, Option<i64>), String> {
        let select = |columns: &str| {
            format!(
                "SELECT {columns},
                        (extract(epoch FROM created_at) * 1000)::bigint AS created_ms,
                        (extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms
                 FROM {table}
                 WHERE created_at <= timestamp 'epoch' + $1::bigint * interval '1 millisecond'
                 ORDER BY created_at DESC LIMIT $2"
            )
        };
        let sql = match table {
            "traces" => select(
                r#"id, project_id, name, user_id, session_id, release, version, public, bookmarked, tags,
                   metadata::text AS metadata, input::text AS input, output::text AS output,
                   (extract(epoch FROM "timestamp") * 1000)::bigint AS ts_ms"#,
            ),
            "observations" => select(
                r#"id, trace_id, project_id, type::text AS type, parent_observation_id, name, level::text AS level,
                   status_message, version, model, internal_model_id, "modelParameters"::text AS model_parameters,
                   input::text AS input, output::text AS output, prompt_id, prompt_tokens, completion_tokens, total_tokens,
                   metadata::text AS metadata,
                   (input_cost * 1e12)::bigint AS input_cost, (output_cost * 1e12)::bigint AS output_cost,
                   (total_cost * 1e12)::bigint AS total_cost,
                   (calculated_input_cost * 1e12)::bigint AS calculated_input_cost,
                   (calculated_output_cost * 1e12)::bigint AS calculated_output_cost,
                   (calculated_total_cost * 1e12)::bigint AS calculated_total_cost,
                   (extract(epoch FROM start_time) * 1000)::bigint AS start_ms,
                   (extract(epoch FROM end_time) * 1000)::bigint AS end_ms,
                   (extract(epoch FROM completion_start_time) * 1000)::bigint AS completion_start_ms"#,
            ),
            _ => select(
                r#"id, project_id, trace_id, observation_id, name, value, string_value, data_type::text AS data_type,
                   source::text AS source, comment, author_user_id, config_id, queue_id,
                   (extract(epoch FROM "timestamp") * 1000)::bigint AS ts_ms"#,
            ),
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(max_date)
            .bind(batch)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| format!("read {table} batch: {e}"))?;
        if let Some(napi) = &self.config.napi {
            let heavy = match napi.heavy_before {
                None => !rows.is_empty(),
                Some(before) => rows
                    .iter()
                    .any(|r| r.get::<i64, _>("created_ms") < before.as_millisecond()),
            };
            if batch > napi.max_batch && heavy {
                return Err(NAPI_MESSAGE.to_string());
            }
        }
        let oldest = rows.iter().map(|r| r.get::<i64, _>("created_ms")).min();
        let n = rows.len();
        if n == 0 {
            return Ok((0, None));
        }
        let ch_err = |e: clickhouse::error::Error| format!("insert into ClickHouse {table}: {e}");
        match table {
            "traces" => {
                let mut insert = self.ch.insert::<ChTrace>("traces").await.map_err(ch_err)?;
                for r in &rows {
                    let ts: i64 = r.get("ts_ms");
                    insert
                        .write(&ChTrace {
                            id: r.get("id"),
                            project_id: r.get("project_id"),
                            timestamp: ts,
                            name: r.get::<Option<String>, _>("name").unwrap_or_default(),
                            user_id: r.get("user_id"),
                            session_id: r.get("session_id"),
                            metadata: metadata(r.get("metadata")),
                            release: r.get("release"),
                            version: r.get("version"),
                            public: r.get("public"),
                            bookmarked: r.get("bookmarked"),
                            tags: r.get("tags"),
                            input: r.get("input"),
                            output: r.get("output"),
                            created_at: r.get("created_ms"),
                            updated_at: r.get("updated_ms"),
                            event_ts: ts,
                            is_deleted: 0,
                        })
                        .await
                        .map_err(ch_err)?;
                }
                insert.end().await.map_err(ch_err)?;
            }
            "observations" => {
                let mut insert = self.ch.insert::<ChObservation>("observations").await.map_err(ch_err)?;
                for r in &rows {
                    let start: i64 = r.get("start_ms");
                    let (input, output, total): (i32, i32, i32) = (
                        r.get("prompt_tokens"),
                        r.get("completion_tokens"),
                        r.get("total_tokens"),
                    );
                    insert
                        .write(&ChObservation {
                            id: r.get("id"),
                            trace_id: r.get::<Option<String>, _>("trace_id").unwrap_or_default(),
                            project_id: r.get("project_id"),
                            kind: r.get("type"),
                            parent_observation_id: r.get("parent_observation_id"),
                            start_time: start,
                            end_time: r.get("end_ms"),
                            completion_start_time: r.get("completion_start_ms"),
                            name: r.get::<Option<String>, _>("name").unwrap_or_default(),
                            metadata: metadata(r.get("metadata")),
                            level: r.get("level"),
                            status_message: r.get("status_message"),
                            version: r.get("version"),
                            input: r.get("input"),
                            output: r.get("output"),
                            provided_model_name: r.get("model"),
                            internal_model_id: r.get("internal_model_id"),
                            model_parameters: r.get("model_parameters"),
                            usage_details: vec![
                                ("input".into(), input.max(0) as u64),
                                ("output".into(), output.max(0) as u64),
                                ("total".into(), total.max(0) as u64),
                            ],
                            provided_usage_details: Vec::new(),
                            provided_cost_details: costs(r, ""),
                            cost_details: costs(r, "calculated_"),
                            total_cost: r.get("calculated_total_cost"),
                            prompt_id: r.get("prompt_id"),
                            // The fixture has no prompts table to join for these.
                            prompt_name: None,
                            prompt_version: None,
                            created_at: r.get("created_ms"),
                            updated_at: r.get("updated_ms"),
                            event_ts: start,
                            is_deleted: 0,
                        })
                        .await
                        .map_err(ch_err)?;
                }
                insert.end().await.map_err(ch_err)?;
            }
            _ => {
                let mut insert = self.ch.insert::<ChScore>("scores").await.map_err(ch_err)?;
                for r in &rows {
                    let ts: i64 = r.get("ts_ms");
                    insert
                        .write(&ChScore {
                            id: r.get("id"),
                            project_id: r.get("project_id"),
                            trace_id: r.get("trace_id"),
                            observation_id: r.get("observation_id"),
                            timestamp: ts,
                            name: r.get("name"),
                            value: r.get::<Option<f64>, _>("value").unwrap_or_default(),
                            string_value: r.get("string_value"),
                            data_type: r.get("data_type"),
                            source: r.get("source"),
                            comment: r.get("comment"),
                            author_user_id: r.get("author_user_id"),
                            config_id: r.get("config_id"),
                            queue_id: r.get("queue_id"),
                            created_at: r.get("created_ms"),
                            updated_at: r.get("updated_ms"),
                            event_ts: ts,
                            is_deleted: 0,
                        })
                        .await
                        .map_err(ch_err)?;
                }
                insert.end().await.map_err(ch_err)?;
            }
        }
        self.shared.rows_inserted.fetch_add(n as u64, Ordering::SeqCst);
        Ok((n, oldest))
    }
}

/// `metadata` as ClickHouse's `Map(String, String)`: an object's entries (values
/// JSON-stringified unless strings), anything else wrapped as `{metadata: ...}`.
fn metadata(text: Option<String>) -> Vec<(String, String)> {
    let Some(value) = text.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()) else {
        return Vec::new();
    };
    let as_string = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match value {
        serde_json::Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), as_string(v))).collect(),
        serde_json::Value::Null => Vec::new(),
        other => vec![("metadata".into(), as_string(&other))],
    }
}

/// `{input, output, total}` of the `<prefix>*_cost` columns that are set, as Decimal64(12)
/// raw values.
fn costs(r: &sqlx::postgres::PgRow, prefix: &str) -> Vec<(String, i64)> {
    ["input", "output", "total"]
        .into_iter()
        .filter_map(|k| {
            r.get::<Option<i64>, _>(format!("{prefix}{k}_cost").as_str())
                .map(|v| (k.to_string(), v))
        })
        .collect()
}

/// `Number(x)` for the `args` values the scripts read.
fn number(v: Option<&serde_json::Value>) -> Option<i64> {
    match v? {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f as i64),
        _ => None,
    }
}

fn parse_iso(s: &str) -> Result<i64, String> {
    s.parse::<Timestamp>()
        .map(|t| t.as_millisecond())
        .or_else(|_| {
            s.parse::<jiff::civil::DateTime>()
                .map_err(|e| e.to_string())
                .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).map_err(|e| e.to_string()))
                .map(|z| z.timestamp().as_millisecond())
        })
        .map_err(|e| format!("Invalid maxDate {s:?}: {e}"))
}

/// `Date.toISOString()`.
pub fn iso(ms: i64) -> String {
    format!("{:.3}", Timestamp::from_millisecond(ms).expect("timestamp in range"))
}

#[derive(clickhouse::Row, serde::Serialize)]
struct ChTrace {
    id: String,
    project_id: String,
    timestamp: i64,
    name: String,
    user_id: Option<String>,
    session_id: Option<String>,
    metadata: Vec<(String, String)>,
    release: Option<String>,
    version: Option<String>,
    public: bool,
    bookmarked: bool,
    tags: Vec<String>,
    input: Option<String>,
    output: Option<String>,
    created_at: i64,
    updated_at: i64,
    event_ts: i64,
    is_deleted: u8,
}

#[derive(clickhouse::Row, serde::Serialize)]
struct ChObservation {
    id: String,
    trace_id: String,
    project_id: String,
    #[serde(rename = "type")]
    kind: String,
    parent_observation_id: Option<String>,
    start_time: i64,
    end_time: Option<i64>,
    completion_start_time: Option<i64>,
    name: String,
    metadata: Vec<(String, String)>,
    level: String,
    status_message: Option<String>,
    version: Option<String>,
    input: Option<String>,
    output: Option<String>,
    provided_model_name: Option<String>,
    internal_model_id: Option<String>,
    model_parameters: Option<String>,
    provided_usage_details: Vec<(String, u64)>,
    usage_details: Vec<(String, u64)>,
    provided_cost_details: Vec<(String, i64)>,
    cost_details: Vec<(String, i64)>,
    total_cost: Option<i64>,
    prompt_id: Option<String>,
    prompt_name: Option<String>,
    prompt_version: Option<u16>,
    created_at: i64,
    updated_at: i64,
    event_ts: i64,
    is_deleted: u8,
}

#[derive(clickhouse::Row, serde::Serialize)]
struct ChScore {
    id: String,
    project_id: String,
    trace_id: String,
    observation_id: Option<String>,
    timestamp: i64,
    name: String,
    value: f64,
    string_value: Option<String>,
    data_type: String,
    source: String,
    comment: Option<String>,
    author_user_id: Option<String>,
    config_id: Option<String>,
    queue_id: Option<String>,
    created_at: i64,
    updated_at: i64,
    event_ts: i64,
    is_deleted: u8,
}
