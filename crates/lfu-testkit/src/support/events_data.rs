//! v3/v4 ClickHouse data shaped like production, generated on the server (`numbers()`), for
//! the data-model road's tests and benchmarks: traces spread over months at millisecond times,
//! several observations per trace (the first a generation, the others spans under it), a few
//! traces referenced by dataset run items, and dual-write ingestion that also lands in the
//! staging table with the producing SDK's attribution.

use jiff::Timestamp;

/// `traces` and `observations` of one project: `traces` traces with `per_trace` observations
/// each, evenly spread over (`from`, `until`], ids prefixed by `prefix`.
pub async fn seed_history(
    ch: &clickhouse::Client,
    project: &str,
    prefix: &str,
    traces: u64,
    per_trace: u64,
    from: Timestamp,
    until: Timestamp,
) {
    let span = (until.as_millisecond() - from.as_millisecond()).max(1);
    let step = (span / traces.max(1) as i64).max(1);
    let start = from.as_millisecond() + step;
    run(
        ch,
        &format!(
            "INSERT INTO traces (id, project_id, timestamp, name, user_id, session_id, metadata, public, bookmarked, tags, \
             environment, created_at, updated_at, event_ts, is_deleted) \
             SELECT concat('{prefix}-t-', toString(number)), '{project}', fromUnixTimestamp64Milli(toInt64({start} + number * {step})), \
             concat('chat-', toString(number % 7)), concat('user-', toString(number % 97)), concat('session-', toString(intDiv(number, 5))), \
             map('sdk', 'python'), false, false, ['prod'], 'default', \
             fromUnixTimestamp64Milli(toInt64({start} + number * {step} + 40)), fromUnixTimestamp64Milli(toInt64({start} + number * {step} + 900)), \
             fromUnixTimestamp64Milli(toInt64({start} + number * {step} + 900)), 0 \
             FROM numbers({traces})"
        ),
    )
    .await;
    run(
        ch,
        &format!(
            "INSERT INTO observations (id, trace_id, project_id, type, parent_observation_id, start_time, end_time, name, metadata, \
             level, environment, created_at, updated_at, event_ts, is_deleted) \
             SELECT concat('{prefix}-o-', toString(number)), concat('{prefix}-t-', toString(intDiv(number, {per_trace}))), '{project}', \
             if(number % {per_trace} = 0, 'GENERATION', 'SPAN'), \
             if(number % {per_trace} = 0, NULL, concat('{prefix}-o-', toString(number - number % {per_trace}))), \
             fromUnixTimestamp64Milli(toInt64({start} + intDiv(number, {per_trace}) * {step} + (number % {per_trace}) * 150)), \
             fromUnixTimestamp64Milli(toInt64({start} + intDiv(number, {per_trace}) * {step} + (number % {per_trace}) * 150 + 120)), \
             concat('step-', toString(number % {per_trace})), map('model', 'gpt-4o'), 'DEFAULT', 'default', \
             fromUnixTimestamp64Milli(toInt64({start} + intDiv(number, {per_trace}) * {step} + 40)), \
             fromUnixTimestamp64Milli(toInt64({start} + intDiv(number, {per_trace}) * {step} + 900)), \
             fromUnixTimestamp64Milli(toInt64({start} + intDiv(number, {per_trace}) * {step} + 900)), 0 \
             FROM numbers({})",
            traces * per_trace
        ),
    )
    .await;
}

/// The first `n` traces of `prefix` referenced by dataset run items (one run).
pub async fn reference_by_dataset_run(ch: &clickhouse::Client, project: &str, prefix: &str, n: u64) {
    run(
        ch,
        &format!(
            "INSERT INTO dataset_run_items_rmt (id, project_id, dataset_run_id, dataset_item_id, dataset_id, trace_id, event_ts, is_deleted) \
             SELECT concat('{prefix}-dri-', toString(number)), '{project}', 'run-1', concat('item-', toString(number)), 'dataset-1', \
             concat('{prefix}-t-', toString(number)), now64(3), 0 FROM numbers({n})"
        ),
    )
    .await;
}

/// A producer's ingestion during `dual`: the trace and its observations in the old tables, and
/// the observations in the staging table (first seen `seen`), attributed to `sdk`/`version`/`key`.
pub struct Producer<'a> {
    pub project: &'a str,
    pub sdk: &'a str,
    pub version: &'a str,
    pub key: &'a str,
}

pub async fn ingest_dual(
    ch: &clickhouse::Client,
    p: &Producer<'_>,
    prefix: &str,
    traces: u64,
    at: Timestamp,
    seen: Timestamp,
) {
    seed_history(
        ch,
        p.project,
        prefix,
        traces,
        3,
        at - jiff::SignedDuration::from_secs(1),
        at,
    )
    .await;
    let seen = seen.as_millisecond();
    run(
        ch,
        &format!(
            "INSERT INTO observations_batch_staging (id, trace_id, project_id, type, parent_observation_id, start_time, name, \
             environment, ingestion_api_key, ingestion_sdk_name, ingestion_sdk_version, s3_first_seen_timestamp, event_ts, is_deleted) \
             SELECT id, trace_id, project_id, type, parent_observation_id, start_time, name, environment, '{}', '{}', '{}', \
             fromUnixTimestamp64Milli(toInt64({seen})), now64(3), 0 FROM observations FINAL WHERE startsWith(id, '{prefix}-o-')",
            p.key, p.sdk, p.version
        ),
    )
    .await;
}

/// A producer on a v4 SDK writing the events tables directly (OpenTelemetry, real time).
pub async fn ingest_direct(ch: &clickhouse::Client, p: &Producer<'_>, prefix: &str, spans: u64, at: Timestamp) {
    let at = at.as_millisecond();
    run(
        ch,
        &format!(
            "INSERT INTO events_full (project_id, trace_id, span_id, parent_span_id, start_time, name, type, source, \
             ingestion_api_key, ingestion_sdk_name, ingestion_sdk_version, event_ts, is_deleted) \
             SELECT '{}', concat('{prefix}-t-', toString(intDiv(number, 3))), concat('{prefix}-s-', toString(number)), '', \
             fromUnixTimestamp64Milli(toInt64({at} + number)), 'llm-call', 'GENERATION', 'otel', '{}', '{}', '{}', now64(3), 0 \
             FROM numbers({spans})",
            p.project, p.key, p.sdk, p.version
        ),
    )
    .await;
}

async fn run(ch: &clickhouse::Client, sql: &str) {
    ch.query(sql).execute().await.unwrap_or_else(|e| panic!("{e}\n{sql}"));
}
