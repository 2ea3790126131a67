//! Every statement the operator runs against Langfuse's Postgres, in one place: the poll
//! queries, the one-off reads, and the only writes (to `background_migrations`).

use crate::migrations::Table;

pub const SERVER_VERSION_SQL: &str = "SHOW server_version_num";

/// Postgres's planner estimate per table: no scan, one catalog lookup. `reltuples` is -1 (15+)
/// for a table never vacuumed or analyzed.
pub const ESTIMATES_SQL: &str = r#"
SELECT (SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass('traces')),
       (SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass('observations')),
       (SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass('scores'))
"#;

/// The rows (with their env gate and whether a worker took them) plus each copied table's
/// oldest `created_at` (three index-backed `min`s, evaluated once as init plans). The
/// observations script keys its cursor by `'maxDate' || args.stateSuffix`.
pub const MIGRATIONS_SQL: &str = r#"
SELECT bm.name,
       bm.script,
       (extract(epoch FROM bm.finished_at) * 1000)::bigint AS finished_ms,
       (extract(epoch FROM bm.failed_at) * 1000)::bigint AS failed_ms,
       bm.failed_reason,
       (extract(epoch FROM bm.locked_at) * 1000)::bigint AS locked_ms,
       bm.state ->> ('maxDate' || CASE WHEN bm.script = 'migrateObservationsFromPostgresToClickhouse'
                                       THEN coalesce(bm.args ->> 'stateSuffix', '') ELSE '' END) AS max_date,
       bm.args ->> 'batchSize' AS batch_size,
       bm.args ->> 'envGate' AS env_gate,
       bm.worker_id IS NOT NULL AS taken,
       oldest.traces_ms,
       oldest.observations_ms,
       oldest.scores_ms
FROM background_migrations bm
CROSS JOIN (
    SELECT (extract(epoch FROM (SELECT min(created_at) FROM traces)) * 1000)::bigint AS traces_ms,
           (extract(epoch FROM (SELECT min(created_at) FROM observations)) * 1000)::bigint AS observations_ms,
           (extract(epoch FROM (SELECT min(created_at) FROM scores)) * 1000)::bigint AS scores_ms
) AS oldest
ORDER BY bm.name
"#;

/// Which tables exist: `background_migrations`, then the three tracing tables (v4.0.0 drops
/// those three).
pub const TABLES_PRESENT_SQL: &str = "SELECT to_regclass('background_migrations') IS NOT NULL, \
     to_regclass('traces') IS NOT NULL, to_regclass('observations') IS NOT NULL, to_regclass('scores') IS NOT NULL";

/// [`MIGRATIONS_SQL`] for a database that lacks some tracing tables: their oldest row reads as
/// none (no progress estimate for a copy whose source is gone), the rest as before.
pub fn migrations_sql_without(missing: &[Table]) -> String {
    missing.iter().fold(MIGRATIONS_SQL.to_string(), |sql, t| {
        sql.replace(&format!("(SELECT min(created_at) FROM {t})"), "NULL::timestamp")
    })
}

/// Newest `created_at` over the three tables: three index-backed `max`es.
pub const NEWEST_WRITE_SQL: &str = r#"
SELECT (extract(epoch FROM greatest((SELECT max(created_at) FROM traces),
                                    (SELECT max(created_at) FROM observations),
                                    (SELECT max(created_at) FROM scores))) * 1000)::bigint
"#;

/// Largest group of rows sharing one `created_at`, if at least `$1` rows: one pass over the
/// `created_at` index (sorted, so a streaming group-by), run once at preflight.
pub const SAME_CREATED_AT_SQL: [&str; 3] = [
    "SELECT count(*) AS n FROM traces GROUP BY created_at HAVING count(*) >= $1 ORDER BY n DESC LIMIT 1",
    "SELECT count(*) AS n FROM observations GROUP BY created_at HAVING count(*) >= $1 ORDER BY n DESC LIMIT 1",
    "SELECT count(*) AS n FROM scores GROUP BY created_at HAVING count(*) >= $1 ORDER BY n DESC LIMIT 1",
];

/// `$1` is epoch milliseconds; `timestamp 'epoch' + ms` is the UTC wall time Prisma stores.
pub const COUNTS_UNTIL_SQL: &str = r#"
SELECT (SELECT count(*) FROM traces WHERE created_at <= timestamp 'epoch' + $1::bigint * interval '1 millisecond'),
       (SELECT count(*) FROM observations WHERE created_at <= timestamp 'epoch' + $1::bigint * interval '1 millisecond'),
       (SELECT count(*) FROM scores WHERE created_at <= timestamp 'epoch' + $1::bigint * interval '1 millisecond')
"#;

/// Index range scans over the rows after `$1` (epoch milliseconds) only.
pub const LATE_WRITES_SQL: &str = r#"
SELECT (SELECT count(*) FROM traces WHERE created_at > timestamp 'epoch' + $1::bigint * interval '1 millisecond'
                                    AND created_at <= timestamp 'epoch' + $4::bigint * interval '1 millisecond'),
       (SELECT count(*) FROM observations WHERE created_at > timestamp 'epoch' + $2::bigint * interval '1 millisecond'
                                          AND created_at <= timestamp 'epoch' + $4::bigint * interval '1 millisecond'),
       (SELECT count(*) FROM scores WHERE created_at > timestamp 'epoch' + $3::bigint * interval '1 millisecond'
                                    AND created_at <= timestamp 'epoch' + $4::bigint * interval '1 millisecond')
"#;

pub const SET_BATCH_SIZE_SQL: &str =
    "UPDATE background_migrations SET args = jsonb_set(args, '{batchSize}', to_jsonb($2::bigint)) WHERE name = $1";
/// Only a failed row: a reset repeated after the worker took the row again changes nothing.
pub const RESET_BACKFILL_ROW_SQL: &str = "UPDATE background_migrations SET failed_at = NULL, failed_reason = NULL, \
     finished_at = NULL, args = coalesce(args, '{}'::jsonb) || '{\"retryFailed\": true}'::jsonb, \
     state = CASE WHEN $2 THEN jsonb_set(coalesce(state, '{}'::jsonb), '{chunksLoaded}', 'false'::jsonb) ELSE state END \
     WHERE name = $1 AND failed_at IS NOT NULL";
pub const CLEAR_FAILURE_SQL: &str =
    "UPDATE background_migrations SET failed_at = NULL, failed_reason = NULL WHERE name = $1";
/// Idempotent: a row already finished keeps its time; one running another script is not touched.
pub const FINISH_ORPHAN_SQL: &str = "UPDATE background_migrations SET finished_at = coalesce(finished_at, now()) \
WHERE name = $1 AND script = $2";
pub const RERUN_WINDOW_SQL: &str = r#"
UPDATE background_migrations
SET state = '{}'::jsonb,
    args = jsonb_set(jsonb_set(args, '{maxDate}', to_jsonb($2::text)), '{maxRowsToProcess}', to_jsonb($3::bigint)),
    finished_at = NULL,
    failed_at = NULL,
    failed_reason = NULL
WHERE name = $1
"#;
