//! TEST SUPPORT: a stand-in for the Langfuse v4 worker's data-model work, against the real test
//! PostgreSQL, ClickHouse and Redis. Written from `/work/shared/reference/langfuse-v4-data-model.md`
//! §3-§4 (not from Langfuse's code):
//!
//! - the dual write's propagation job: each run sets its heartbeat key, lists the staging
//!   table's partitions after its cursor whose start is older than the partition delay
//!   (`system.parts`), copies the oldest one into `events_full` and moves the cursor to it.
//!   Langfuse's delay (10 minutes) exceeds the 3-minute partition, so only complete partitions
//!   are taken; the stand-in never waits less than the partition's width, to keep that;
//! - the background rows M1-M5, picked as the runner picks them (by name, unfinished and not
//!   failed, gate open), each writing `state` as the scripts do: M1 one root span `t-<trace id>`
//!   per trace not referenced by a dataset run item, one `traces` partition per chunk; M2 the
//!   scratch table `observations_pid_tid_sorting`, one `observations` partition per chunk, then
//!   `SYSTEM STOP MERGES` on it; M3 `events_full` from the scratch table, one part per chunk, a
//!   chunk retried up to 3 times before the row fails; M4 the dataset run items; M5 drops the
//!   scratch table.
//!
//! Knobs: chunk failures to inject into M3, and a frozen cursor (the job starts, its cursor
//! never moves: langfuse/langfuse#17452).

use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgPool;

pub const CURSOR_KEY: &str = "langfuse:event-propagation:last-processed-partition";
pub const HEARTBEAT_KEY: &str = "langfuse:event-propagation:last-run-started-at";

/// What one worker start runs.
#[derive(Clone, Debug, Default)]
pub struct V4Config {
    /// `LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL`.
    pub backfill: bool,
    /// `LANGFUSE_BACKGROUND_MIGRATION_V4_DROP_PID_TID_SORTING_TABLES`.
    pub drop_scratch: bool,
    /// M3's first chunk fails this many times (3 or more: the row fails).
    pub m3_chunk_failures: u32,
}

/// The propagation job, once. Returns the partition it propagated, if any.
pub async fn propagate_once(
    ch: &clickhouse::Client,
    redis: &mut redis::aio::MultiplexedConnection,
    delay: Duration,
    frozen: bool,
) -> Result<Option<String>, String> {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let _: () = redis::cmd("SET")
        .arg(HEARTBEAT_KEY)
        .arg(now_ms.to_string())
        .query_async(redis)
        .await
        .map_err(|e| format!("heartbeat: {e}"))?;
    if frozen {
        return Ok(None);
    }
    let cursor: Option<String> = redis::cmd("GET")
        .arg(CURSOR_KEY)
        .query_async(redis)
        .await
        .map_err(|e| format!("cursor: {e}"))?;
    let partitions: Vec<String> = ch
        .query(
            "SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() \
             AND table = 'observations_batch_staging' AND active \
             AND toDateTime(partition) < now() - toIntervalSecond(?) AND partition > ? ORDER BY partition",
        )
        .bind(delay.as_secs().max(180))
        .bind(cursor.unwrap_or_default())
        .fetch_all()
        .await
        .map_err(|e| format!("list staging partitions: {e}"))?;
    let Some(p) = partitions.into_iter().next() else {
        return Ok(None);
    };
    ch.query(
        "INSERT INTO events_full (project_id, trace_id, span_id, parent_span_id, start_time, name, type, \
         environment, source, ingestion_api_key, ingestion_sdk_name, ingestion_sdk_version, event_ts, is_deleted) \
         SELECT project_id, trace_id, id, ifNull(parent_observation_id, ''), start_time, name, type, environment, \
         'ingestion-api-dual-write', ingestion_api_key, ingestion_sdk_name, ingestion_sdk_version, now64(3), 0 \
         FROM observations_batch_staging FINAL \
         WHERE toStartOfInterval(s3_first_seen_timestamp, INTERVAL 3 MINUTE) = toDateTime(?) AND is_deleted = 0",
    )
    .bind(&p)
    .execute()
    .await
    .map_err(|e| format!("propagate {p}: {e}"))?;
    let _: () = redis::cmd("SET")
        .arg(CURSOR_KEY)
        .arg(&p)
        .query_async(redis)
        .await
        .map_err(|e| format!("move the cursor: {e}"))?;
    Ok(Some(p))
}

/// What one worker start did to the rows.
#[derive(Clone, Debug, Default)]
pub struct RowsReport {
    pub finished: Vec<String>,
    pub failed: Vec<String>,
    pub chunk_retries: u32,
}

/// The runner at a worker's start: every runnable row in name order, until none is left.
pub async fn run_rows(pool: &PgPool, ch: &clickhouse::Client, config: &V4Config) -> Result<RowsReport, String> {
    let mut report = RowsReport::default();
    let mut failures = config.m3_chunk_failures;
    loop {
        let mut gates = Vec::new();
        if config.backfill {
            gates.push("LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL");
        }
        if config.drop_scratch {
            gates.push("LANGFUSE_BACKGROUND_MIGRATION_V4_DROP_PID_TID_SORTING_TABLES");
        }
        let row = sqlx::query(
            "SELECT id, name FROM background_migrations WHERE finished_at IS NULL AND failed_at IS NULL \
             AND (args ->> 'envGate' IS NULL OR args ->> 'envGate' = ANY($1)) ORDER BY name LIMIT 1",
        )
        .bind(&gates)
        .fetch_optional(pool)
        .await
        .map_err(|e| format!("pick: {e}"))?;
        let Some(row) = row else {
            return Ok(report);
        };
        let (id, name): (String, String) = (row.get("id"), row.get("name"));
        sqlx::query("UPDATE background_migrations SET worker_id = 'v4-standin', locked_at = now() WHERE id = $1")
            .bind(&id)
            .execute(pool)
            .await
            .map_err(|e| format!("lock {name}: {e}"))?;
        let step = name
            .split("_v4_step_")
            .nth(1)
            .and_then(|r| r.split('_').next())
            .and_then(|n| n.parse::<u8>().ok());
        let outcome = match predecessor_finished(pool, step).await? {
            false => Err(format!(
                "validation failed: step {} of the v4 backfill has not finished",
                step.unwrap_or(0) - 1
            )),
            true => run_step(pool, ch, &id, step, &mut failures, &mut report).await,
        };
        let end = match &outcome {
            Ok(()) => sqlx::query("UPDATE background_migrations SET finished_at = now(), locked_at = NULL WHERE id = $1"),
            Err(e) => sqlx::query(
                "UPDATE background_migrations SET failed_at = now(), failed_reason = $1, locked_at = NULL WHERE id = $2",
            )
            .bind(e.clone()),
        };
        end.bind(&id)
            .execute(pool)
            .await
            .map_err(|e| format!("end {name}: {e}"))?;
        match outcome {
            Ok(()) => report.finished.push(name),
            Err(_) => report.failed.push(name),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    RootSpans,
    Scratch,
    Children,
}

/// Steps 3, 4 and 5 validate that the step before them finished (and did not fail).
async fn predecessor_finished(pool: &PgPool, step: Option<u8>) -> Result<bool, String> {
    let Some(before) = step.filter(|n| *n >= 3).map(|n| n - 1) else {
        return Ok(true);
    };
    let finished: Option<bool> = sqlx::query_scalar(
        "SELECT finished_at IS NOT NULL AND failed_at IS NULL FROM background_migrations WHERE name LIKE $1",
    )
    .bind(format!("20260701\\_v4\\_step\\_{before}\\_%"))
    .fetch_optional(pool)
    .await
    .map_err(|e| format!("validate: {e}"))?;
    Ok(finished.unwrap_or(false))
}

async fn run_step(
    pool: &PgPool,
    ch: &clickhouse::Client,
    id: &str,
    step: Option<u8>,
    failures: &mut u32,
    report: &mut RowsReport,
) -> Result<(), String> {
    match step {
        Some(1) => chunked(pool, ch, id, Step::RootSpans, failures, report).await,
        Some(2) => chunked(pool, ch, id, Step::Scratch, failures, report).await,
        Some(3) => chunked(pool, ch, id, Step::Children, failures, report).await,
        Some(4) => dataset_run_items(pool, ch, id).await,
        Some(5) => ch
            .query("DROP TABLE IF EXISTS observations_pid_tid_sorting")
            .execute()
            .await
            .map_err(|e| format!("drop the scratch table: {e}")),
        _ => Ok(()),
    }
}

async fn set_state(pool: &PgPool, id: &str, state: &serde_json::Value) -> Result<(), String> {
    sqlx::query("UPDATE background_migrations SET state = $2 WHERE id = $1")
        .bind(id)
        .bind(state)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(|e| format!("write state: {e}"))
}

/// M1-M3: `init` → `loading_chunks` (one todo per partition or part) → `backfill` → `completed`.
async fn chunked(
    pool: &PgPool,
    ch: &clickhouse::Client,
    id: &str,
    step: Step,
    failures: &mut u32,
    report: &mut RowsReport,
) -> Result<(), String> {
    let row = sqlx::query(
        "SELECT coalesce(state, '{}'::jsonb) AS state, coalesce((args ->> 'retryFailed')::boolean, false) AS retry \
         FROM background_migrations WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .map_err(|e| format!("read state: {e}"))?;
    let (stored, retry_failed): (serde_json::Value, bool) = (row.get("state"), row.get("retry"));
    let loaded = stored.get("chunksLoaded").and_then(|v| v.as_bool()).unwrap_or(false);
    let mut todos: Vec<serde_json::Value> = match (loaded, stored.get("todos").and_then(|t| t.as_array())) {
        (true, Some(t)) => t.clone(),
        _ => {
            set_state(pool, id, &serde_json::json!({"phase": "loading_chunks"})).await?;
            chunks(ch, step)
                .await?
                .into_iter()
                .map(|c| serde_json::json!({"id": c, "status": "pending", "retryCount": 0}))
                .collect()
        }
    };
    if step == Step::Scratch {
        ch.query(
            "CREATE TABLE IF NOT EXISTS observations_pid_tid_sorting AS observations \
             ENGINE = ReplacingMergeTree(event_ts, is_deleted) ORDER BY (project_id, trace_id, id)",
        )
        .execute()
        .await
        .map_err(|e| format!("create the scratch table: {e}"))?;
    }
    for i in 0..todos.len() {
        let status = todos[i]["status"].as_str().unwrap_or("pending").to_string();
        if status == "completed" || (status == "failed" && !retry_failed) {
            continue;
        }
        if status == "failed" {
            // `retryFailed`: the failed chunk starts its retries over.
            todos[i]["retryCount"] = 0.into();
        }
        let chunk = todos[i]["id"].as_str().unwrap_or_default().to_string();
        loop {
            let injected = step == Step::Children && *failures > 0;
            let result = match injected {
                true => {
                    *failures -= 1;
                    Err("Code: 241. DB::Exception: Memory limit (total) exceeded".to_string())
                }
                false => copy_chunk(ch, step, &chunk).await,
            };
            match result {
                Ok(()) => {
                    todos[i]["status"] = "completed".into();
                    break;
                }
                Err(e) => {
                    let retries = todos[i]["retryCount"].as_u64().unwrap_or(0);
                    todos[i]["error"] = e.into();
                    if retries >= 3 {
                        todos[i]["status"] = "failed".into();
                        break;
                    }
                    todos[i]["retryCount"] = (retries + 1).into();
                    report.chunk_retries += 1;
                }
            }
        }
        let state = serde_json::json!({"phase": "backfill", "chunksLoaded": true, "todos": todos});
        set_state(pool, id, &state).await?;
    }
    if step == Step::Scratch {
        ch.query("SYSTEM STOP MERGES observations_pid_tid_sorting")
            .execute()
            .await
            .map_err(|e| format!("stop merges on the scratch table: {e}"))?;
    }
    let failed = todos.iter().filter(|t| t["status"] == "failed").count();
    let phase = if failed == 0 { "completed" } else { "backfill" };
    let state = serde_json::json!({"phase": phase, "chunksLoaded": true, "todos": todos});
    set_state(pool, id, &state).await?;
    match failed {
        0 => Ok(()),
        n => Err(format!(
            "{n} chunks failed after 3 retries; clear failed_at and re-run with args.retryFailed"
        )),
    }
}

/// The unit of work: `traces`' or `observations`' partitions, or the scratch table's parts.
async fn chunks(ch: &clickhouse::Client, step: Step) -> Result<Vec<String>, String> {
    let (table, column) = match step {
        Step::RootSpans => ("traces", "partition"),
        Step::Scratch => ("observations", "partition"),
        Step::Children => ("observations_pid_tid_sorting", "name"),
    };
    ch.query(&format!(
        "SELECT DISTINCT {column} FROM system.parts WHERE database = currentDatabase() AND table = '{table}' AND active ORDER BY {column}"
    ))
    .fetch_all()
    .await
    .map_err(|e| format!("load chunks of {table}: {e}"))
}

/// Traces a dataset run item references: M1 and M3 leave them to M4.
const DRI_TRACES: &str = "SELECT trace_id FROM dataset_run_items_rmt FINAL WHERE is_deleted = 0";

async fn copy_chunk(ch: &clickhouse::Client, step: Step, chunk: &str) -> Result<(), String> {
    let sql = match step {
        Step::RootSpans => format!(
            "INSERT INTO events_full (project_id, trace_id, span_id, parent_span_id, start_time, name, type, environment, \
             user_id, session_id, source, event_ts, is_deleted) \
             SELECT project_id, id, concat('t-', id), '', timestamp, name, 'SPAN', environment, ifNull(user_id, ''), \
             ifNull(session_id, ''), 'backfill', now64(3), 0 FROM traces FINAL \
             WHERE toYYYYMM(timestamp) = toUInt32(?) AND is_deleted = 0 AND id NOT IN ({DRI_TRACES})"
        ),
        Step::Scratch => "INSERT INTO observations_pid_tid_sorting SELECT * FROM observations FINAL \
             WHERE toYYYYMM(start_time) = toUInt32(?) AND is_deleted = 0"
            .to_string(),
        Step::Children => format!(
            "INSERT INTO events_full (project_id, trace_id, span_id, parent_span_id, start_time, name, type, environment, \
             source, event_ts, is_deleted) \
             SELECT project_id, trace_id, id, ifNull(parent_observation_id, concat('t-', trace_id)), start_time, name, type, \
             environment, 'backfill', now64(3), 0 FROM observations_pid_tid_sorting WHERE _part = ? AND trace_id NOT IN ({DRI_TRACES})"
        ),
    };
    ch.query(&sql)
        .bind(chunk)
        .execute()
        .await
        .map_err(|e| format!("chunk {chunk}: {e}"))
}

/// M4: each dataset run item's trace tree into `events_full` with its experiment, newest first.
async fn dataset_run_items(pool: &PgPool, ch: &clickhouse::Client, id: &str) -> Result<(), String> {
    set_state(
        pool,
        id,
        &serde_json::json!({"phase": "processing", "processedDris": 0}),
    )
    .await?;
    ch.query(
        "INSERT INTO events_full (project_id, trace_id, span_id, parent_span_id, start_time, name, type, environment, \
         experiment_id, experiment_item_root_span_id, source, event_ts, is_deleted) \
         SELECT o.project_id, o.trace_id, o.id, ifNull(o.parent_observation_id, ''), o.start_time, o.name, o.type, \
         o.environment, d.dataset_run_id, concat('t-', o.trace_id), 'backfill', now64(3), 0 \
         FROM observations AS o FINAL INNER JOIN dataset_run_items_rmt AS d FINAL ON o.trace_id = d.trace_id \
         WHERE o.is_deleted = 0 AND d.is_deleted = 0",
    )
    .execute()
    .await
    .map_err(|e| format!("copy the dataset run items' traces: {e}"))?;
    let n: u64 = ch
        .query("SELECT count() FROM dataset_run_items_rmt FINAL WHERE is_deleted = 0")
        .fetch_one()
        .await
        .map_err(|e| format!("count the dataset run items: {e}"))?;
    set_state(pool, id, &serde_json::json!({"phase": "completed", "processedDris": n})).await
}
