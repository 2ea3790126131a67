//! Langfuse data shaped like production, for every test tier and the demo: millisecond
//! `created_at` (Prisma's `TIMESTAMP(3)`), observations far more numerous than traces, a burst
//! of rows sharing one `created_at` (a batch import), some large `input`/`output` bodies, and
//! rows updated after creation (`updated_at` moves, `created_at` does not). [`Ingest`] plays a
//! v2 that keeps writing while it receives traffic. Tests that probe one exact boundary use
//! [`super::TestDb::insert_rows`] instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use sqlx::AssertSqlSafe;

use super::{PROJECT, TestDb};

/// The shape of v2's history.
#[derive(Clone, Debug)]
pub struct History {
    pub traces: i64,
    pub observations_per_trace: i64,
    /// A score on every n-th trace.
    pub score_every: i64,
    /// How far back the history reaches from its end.
    pub span: Duration,
    /// Traces sharing one `created_at` (with their observations), mid-history.
    pub burst: i64,
    /// Every n-th trace and observation carries a 64 KiB input and output.
    pub large_every: i64,
    /// Every n-th row was updated after creation.
    pub updated_every: i64,
}

impl Default for History {
    fn default() -> Self {
        Self {
            traces: 300,
            observations_per_trace: 5,
            score_every: 2,
            span: Duration::from_secs(3600),
            burst: 40,
            large_every: 25,
            updated_every: 7,
        }
    }
}

/// What [`TestDb::seed`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seeded {
    pub traces: i64,
    pub observations: i64,
    pub scores: i64,
}

const LARGE_BODY: i64 = 64 * 1024;

impl TestDb {
    /// v2's history, ending at `end` (every row at or before it, none in the future).
    pub async fn seed(&self, h: &History, end: Timestamp) -> Seeded {
        let span_ms = h.span.as_millis() as i64;
        let start_ms = end.as_millisecond() - span_ms;
        // Trace i at an even spread plus a millisecond jitter; the burst shares trace mid's time.
        let trace_ts = "timestamp 'epoch' + (CASE WHEN i BETWEEN $6 AND $6 + $7 - 1 THEN $2 + $6 * $3 / $1 + 123
                                              ELSE $2 + i * $3 / $1 + (i * 7919) % 997 END) * interval '1 millisecond'";
        let body = |key: &str, every: &str, n: &str| {
            format!(
                "CASE WHEN {n} % {every} = 0 THEN jsonb_build_object('{key}', repeat('x', {LARGE_BODY})) ELSE jsonb_build_object('{key}', {n}) END"
            )
        };
        let traces = format!(
            r#"INSERT INTO traces (id, project_id, "timestamp", name, user_id, input, output, tags, created_at, updated_at)
               SELECT 'tr-' || i, $4, t.ts, 'trace ' || i, 'user-' || (i % 7), {input}, {output}, ARRAY['t' || (i % 3)],
                      t.ts, CASE WHEN i % $5 = 0 THEN least(t.ts + interval '17 minutes 3.217 seconds', $8::timestamp) ELSE t.ts END
               FROM generate_series(0, $1 - 1) AS i, LATERAL (SELECT {trace_ts} AS ts) AS t
               WHERE $10::bigint > 0 AND $11::bigint > 0"#,
            input = body("prompt", "$9", "i"),
            output = body("completion", "$9", "i"),
        );
        let observations = format!(
            r#"INSERT INTO observations (id, trace_id, project_id, type, name, start_time, end_time, model, input, output,
                                         prompt_tokens, completion_tokens, total_tokens,
                                         calculated_input_cost, calculated_output_cost, calculated_total_cost,
                                         created_at, updated_at)
               SELECT 'ob-' || i || '-' || j, 'tr-' || i, $4, CASE WHEN j = 0 THEN 'SPAN' ELSE 'GENERATION' END::"ObservationType",
                      'step ' || j, o.ts, o.ts + interval '1.25 seconds', 'gpt-4o', {input}, {output},
                      10 + j, 20 + j, 30 + 2 * j, 0.0001, 0.0002, 0.0003,
                      o.ts, CASE WHEN (i + j) % $5 = 0 THEN least(o.ts + interval '2.5 seconds', $8::timestamp) ELSE o.ts END
               FROM generate_series(0, $1 - 1) AS i, generate_series(0, $10 - 1) AS j,
                    LATERAL (SELECT {trace_ts} AS ts) AS t,
                    LATERAL (SELECT least(t.ts + (CASE WHEN i BETWEEN $6 AND $6 + $7 - 1 THEN 0 ELSE j * 41 END) * interval '1 millisecond', $8::timestamp) AS ts) AS o
               WHERE $11::bigint > 0"#,
            input = body("input", "$9", "(i * $10 + j)"),
            output = body("output", "$9", "(i * $10 + j)"),
        );
        let scores = format!(
            r#"INSERT INTO scores (id, project_id, trace_id, "timestamp", name, value, source, created_at, updated_at)
               SELECT 'sc-' || i, $4, 'tr-' || i, s.ts, 'quality', (i % 5)::float8, 'API', s.ts,
                      CASE WHEN i % $5 = 0 THEN least(s.ts + interval '1 minute', $8::timestamp) ELSE s.ts END
               FROM generate_series(0, $1 - 1) AS i, LATERAL (SELECT {trace_ts} AS ts) AS t,
                    LATERAL (SELECT least(t.ts + (2500 + i % 13) * interval '1 millisecond', $8::timestamp) AS ts) AS s
               WHERE i % $11 = 0 AND $9::bigint > 0 AND $10::bigint > 0"#
        );
        let end_ts = jiff::tz::Offset::UTC.to_datetime(end).to_string();
        for (what, sql) in [("traces", traces), ("observations", observations), ("scores", scores)] {
            sqlx::query(AssertSqlSafe(sql))
                .bind(h.traces)
                .bind(start_ms)
                .bind(span_ms)
                .bind(PROJECT)
                .bind(h.updated_every)
                .bind(h.traces / 2)
                .bind(h.burst)
                .bind(&end_ts)
                .bind(h.large_every)
                .bind(h.observations_per_trace)
                .bind(h.score_every)
                .execute(&self.pool)
                .await
                .unwrap_or_else(|e| panic!("seeding {what}: {e}"));
        }
        Seeded {
            traces: self.pg_count("traces").await,
            observations: self.pg_count("observations").await,
            scores: self.pg_count("scores").await,
        }
    }
}

/// A v2 that keeps ingesting: every tick one trace with its observations and a score, all at
/// the current millisecond, and now and then a burst sharing one `created_at`.
pub struct Ingest {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicI64>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Ingest {
    pub fn start(db: &TestDb, every: Duration) -> Ingest {
        let (stop, written) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicI64::new(0)));
        let (pool, s, w) = (db.pool.clone(), stop.clone(), written.clone());
        let handle = tokio::spawn(async move {
            let mut n: i64 = 0;
            while !s.load(Ordering::SeqCst) {
                let now = Timestamp::now().as_millisecond();
                let observations = if n % 10 == 9 { 20 } else { 4 };
                let sql = r#"
                    WITH t AS (INSERT INTO traces (id, project_id, "timestamp", name, input, output, created_at, updated_at)
                               VALUES ($1, $2, timestamp 'epoch' + $3 * interval '1 millisecond', 'live',
                                       jsonb_build_object('q', $1), jsonb_build_object('a', $1),
                                       timestamp 'epoch' + $3 * interval '1 millisecond', timestamp 'epoch' + $3 * interval '1 millisecond')
                               RETURNING id),
                         o AS (INSERT INTO observations (id, trace_id, project_id, type, name, start_time, created_at, updated_at)
                               SELECT $1 || '-ob-' || j, $1, $2, 'GENERATION', 'live', timestamp 'epoch' + $3 * interval '1 millisecond',
                                      timestamp 'epoch' + $3 * interval '1 millisecond', timestamp 'epoch' + $3 * interval '1 millisecond'
                               FROM generate_series(1, $4) AS j RETURNING id)
                    INSERT INTO scores (id, project_id, trace_id, "timestamp", name, value, source, created_at, updated_at)
                    VALUES ($1 || '-sc', $2, $1, timestamp 'epoch' + $3 * interval '1 millisecond', 'live', 1, 'API',
                            timestamp 'epoch' + $3 * interval '1 millisecond', timestamp 'epoch' + $3 * interval '1 millisecond')"#;
                let id = format!("live-{}-{n}", std::process::id());
                if sqlx::query(sql)
                    .bind(&id)
                    .bind(PROJECT)
                    .bind(now)
                    .bind(observations)
                    .execute(&pool)
                    .await
                    .is_ok()
                {
                    w.fetch_add(2 + observations, Ordering::SeqCst);
                }
                n += 1;
                tokio::time::sleep(every).await;
            }
        });
        Ingest {
            stop,
            written,
            handle: Some(handle),
        }
    }

    /// Rows written so far.
    pub fn written(&self) -> i64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Stop writing; returns the rows written.
    pub async fn stop(mut self) -> i64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
        self.written()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
