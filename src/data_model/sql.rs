//! Every statement the data-model road runs: read-only, on ClickHouse, Postgres and Redis.

/// The staging table's partitions with active parts, and each one's start (read through the
/// server's time zone, as the partition values are written).
pub const STAGING_SQL: &str = "SELECT DISTINCT partition AS name, \
     toInt64(toUnixTimestamp(toDateTime(partition))) AS start \
     FROM system.parts WHERE database = currentDatabase() \
     AND table = 'observations_batch_staging' AND active ORDER BY name";

/// Producer series in `events_core` since `?` (epoch milliseconds), filtered as Langfuse's
/// migration page filters them: ingestion sources only, no internal SDKs or environments.
pub const PRODUCERS_SQL: &str = "SELECT project_id AS project, toString(source) AS source, \
     if(ingestion_sdk_name = '', 'unknown', toString(ingestion_sdk_name)) AS sdk_name, \
     if(ingestion_sdk_version = '', 'unknown', toString(ingestion_sdk_version)) AS sdk_version, \
     ingestion_api_key AS public_key, count() AS events \
     FROM events_core \
     WHERE start_time >= fromUnixTimestamp64Milli(toInt64(?)) \
     AND source IN ('ingestion-api-dual-write', 'otel-dual-write', 'otel') \
     AND NOT startsWith(environment, 'langfuse-') \
     AND ingestion_sdk_name NOT IN ('langfuse-internal-ai-sdk', 'langfuse-internal-otel-writer') \
     AND is_deleted = 0 \
     GROUP BY project, source, sdk_name, sdk_version, public_key \
     ORDER BY events DESC LIMIT 200";

/// Old rows and events rows per project and month in (`from`, `until`] (epoch milliseconds,
/// bound in that order four times), deduplicated (`FINAL`), deleted rows left out. One
/// statement: the server runs the four grouped subqueries and joins them on its side.
pub const COUNTS_SQL: &str = "WITH dri AS (SELECT DISTINCT trace_id FROM dataset_run_items_rmt FINAL WHERE is_deleted = 0) \
     SELECT project, month, \
       sumIf(n, kind = 1) AS traces, sumIf(n, kind = 2) AS root_spans, \
       sumIf(n, kind = 3) AS observations, sumIf(n, kind = 4) AS child_spans FROM ( \
       SELECT project_id AS project, toYYYYMM(timestamp) AS month, 1 AS kind, count() AS n FROM traces FINAL \
         WHERE is_deleted = 0 AND timestamp > fromUnixTimestamp64Milli(toInt64(?)) AND timestamp <= fromUnixTimestamp64Milli(toInt64(?)) \
         AND id NOT IN dri GROUP BY project, month \
       UNION ALL \
       SELECT project_id, toYYYYMM(start_time), 2, count() FROM events_full FINAL \
         WHERE is_deleted = 0 AND startsWith(span_id, 't-') AND start_time > fromUnixTimestamp64Milli(toInt64(?)) AND start_time <= fromUnixTimestamp64Milli(toInt64(?)) \
         AND trace_id NOT IN dri GROUP BY project_id, toYYYYMM(start_time) \
       UNION ALL \
       SELECT project_id, toYYYYMM(start_time), 3, count() FROM observations FINAL \
         WHERE is_deleted = 0 AND start_time > fromUnixTimestamp64Milli(toInt64(?)) AND start_time <= fromUnixTimestamp64Milli(toInt64(?)) \
         AND trace_id NOT IN dri GROUP BY project_id, toYYYYMM(start_time) \
       UNION ALL \
       SELECT project_id, toYYYYMM(start_time), 4, count() FROM events_full FINAL \
         WHERE is_deleted = 0 AND NOT startsWith(span_id, 't-') AND start_time > fromUnixTimestamp64Milli(toInt64(?)) AND start_time <= fromUnixTimestamp64Milli(toInt64(?)) \
         AND trace_id NOT IN dri GROUP BY project_id, toYYYYMM(start_time) \
     ) GROUP BY project, month ORDER BY project, month";

/// The backfill rows M1-M5 with their `state` (Postgres).
pub const BACKFILL_ROWS_SQL: &str = "SELECT name, state, \
     (extract(epoch FROM finished_at) * 1000)::bigint AS finished_ms, \
     (extract(epoch FROM failed_at) * 1000)::bigint AS failed_ms, \
     failed_reason, worker_id IS NOT NULL AS taken \
     FROM background_migrations WHERE name LIKE '20260701\\_v4\\_step\\_%' ORDER BY name";
