//! Benchmark (measured, not asserted): what one watcher poll and the preflight scan cost on
//! Postgres as the `traces` table grows from 100 thousand to 10 million rows.
//!
//!   benches/run-db-bench.sh                 # starts the test servers, runs this, stops them
//!   LFU_TEST_DB_ENV=/tmp/lfu-db/env cargo bench --bench db_poll   # reuse servers from up.sh
//!
//! Knobs: LFU_BENCH_SIZES (comma-separated row counts, default "100000,10000000"),
//! LFU_BENCH_POLLS (poll samples, default 200).
//!
//! Per size it prints the median / p90 of: one poll as the controller makes it while migrating
//! (`background_migrations` with each table's oldest row, plus the newest write), the late-write
//! count, the preflight same-created_at scan, the verification counts and the copy check
//! before the v4 hop (PostgreSQL, then ClickHouse with the same rows); and `EXPLAIN
//! (ANALYZE, BUFFERS)` of the poll queries to show they are index-backed. What a poll costs
//! Postgres: statements and execution time from pg_stat_statements, the serving backend's CPU
//! from /proc. Last, a Markdown table with the date and commit, for the README.

use lfu_testkit::support;
use support::process;

use std::time::{Duration, Instant};

use jiff::Timestamp;
use langfuse_upgrade_operator::databases::{ClickHouseQuery, Databases, LateWindow, Live, PostgresQuery};
use langfuse_upgrade_operator::migrations::copies::{CopiedTable, CopyWindow};
use langfuse_upgrade_operator::migrations::postgres::{
    LATE_WRITES_SQL, MIGRATIONS_SQL, NEWEST_WRITE_SQL, SAME_CREATED_AT_SQL, millis_floor,
};
use sqlx::{AssertSqlSafe, Row};
use support::TestDb;

/// 2024-01-01T00:00:00Z; rows spread over one year after it.
const START_MS: i64 = 1_704_067_200_000;
const YEAR_MS: i64 = 365 * 24 * 3600 * 1000;
/// Rows sharing one created_at (the pre-2024-05-03 default), so the scan has a hit.
const LEGACY_GROUP: i64 = 12_000;

fn main() {
    let sizes: Vec<i64> = std::env::var("LFU_BENCH_SIZES")
        .unwrap_or_else(|_| "100000,10000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("LFU_BENCH_SIZES: comma-separated row counts"))
        .collect();
    let polls: usize = std::env::var("LFU_BENCH_POLLS")
        .ok()
        .map(|s| s.parse().expect("LFU_BENCH_POLLS"))
        .unwrap_or(200);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let commit = commit();
    runtime.block_on(async {
        let mut summary = Vec::new();
        for n in sizes {
            summary.push(bench_size(n, polls).await);
        }
        print_summary(&summary, &commit);
    });
}

/// How many polls a second the operator makes while a copy moves (4 while the drain waits).
fn polls_per_second() -> f64 {
    1.0 / langfuse_upgrade_operator::controller::plan::DB_POLL_INTERVAL.as_secs_f64()
}

struct Summary {
    rows: i64,
    load: Duration,
    poll: (Duration, Duration),
    cost: PollCost,
    late: (Duration, Duration),
    scan: (Duration, Duration),
    counts: Duration,
    /// The copy check before the v4 hop: PostgreSQL, ClickHouse.
    copies: (Duration, Duration),
}

/// What one poll costs Postgres, averaged over the timed polls.
struct PollCost {
    /// Statements executed (pg_stat_statements `calls`).
    queries: f64,
    /// Their execution time inside Postgres, ms.
    exec_ms: f64,
    /// CPU of the backend serving the operator's pool (/proc, 10 ms ticks), ms.
    cpu_ms: f64,
}

/// The commit built: run-db-bench.sh reads it before building (the tree can move while this
/// runs), else it is read now.
fn commit() -> String {
    if let Ok(c) = std::env::var("LFU_BENCH_COMMIT") {
        return c;
    }
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=7"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn print_summary(summary: &[Summary], commit: &str) {
    println!(
        "\n== summary: {}, commit {commit}, bench profile, p50 / p90 ==",
        Timestamp::now().strftime("%Y-%m-%d")
    );
    println!(
        "| traces rows | load | poll | queries / poll | PG exec / poll | backend CPU / poll \
         | at {:.0} polls/s: queries/s, CPU | late writes | preflight scan | verification counts | copy check PG / CH |",
        polls_per_second()
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for s in summary {
        println!(
            "| {} | {:.0} s | {:.2} / {:.2} ms | {:.1} | {:.3} ms | {:.2} ms | {:.0}/s, {:.1} ms/s | {:.2} / {:.2} ms \
             | {:.0} / {:.0} ms | {:.0} ms | {:.0} / {:.0} ms |",
            s.rows,
            s.load.as_secs_f64(),
            ms(s.poll.0),
            ms(s.poll.1),
            s.cost.queries,
            s.cost.exec_ms,
            s.cost.cpu_ms,
            s.cost.queries * polls_per_second(),
            s.cost.cpu_ms * polls_per_second(),
            ms(s.late.0),
            ms(s.late.1),
            ms(s.scan.0),
            ms(s.scan.1),
            ms(s.counts),
            ms(s.copies.0),
            ms(s.copies.1)
        );
    }
}

/// The statements run in one database so far and the time they took (pg_stat_statements,
/// read from the main test database so the reading does not count itself).
async fn statements(stats: &sqlx::PgPool, database: &str) -> (f64, f64) {
    sqlx::query_as::<_, (f64, f64)>(
        "SELECT coalesce(sum(calls), 0)::float8, coalesce(sum(total_exec_time), 0)::float8
         FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)",
    )
    .bind(database)
    .fetch_one(stats)
    .await
    .expect("pg_stat_statements (tests/db/up.sh preloads it)")
}

/// CPU seconds of the backends serving the operator's pool in one database.
async fn operator_backend_cpu(stats: &sqlx::PgPool, database: &str) -> f64 {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'langfuse-upgrade-operator' AND datname = $1",
    )
    .bind(database)
    .fetch_all(stats)
    .await
    .expect("pg_stat_activity");
    assert!(!pids.is_empty(), "no backend serves the operator's pool in {database}");
    pids.iter()
        .map(|p| process::cpu_seconds(*p).expect("the test Postgres runs on this machine"))
        .sum()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p90 = samples[(samples.len() * 9 / 10).min(samples.len() - 1)];
    (median, p90)
}

async fn time<F, Fut>(n: usize, mut f: F) -> (Duration, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        f().await;
        samples.push(start.elapsed());
    }
    stats(samples)
}

async fn load(db: &TestDb, n: i64) -> Duration {
    let started = Instant::now();
    // Build the indexes after the rows, as a restore would: same end state, much faster.
    for idx in [
        "traces_created_at_idx",
        "traces_timestamp_idx",
        "traces_project_id_timestamp_idx",
        "traces_session_id_idx",
    ] {
        db.pg_exec(&format!("DROP INDEX {idx}")).await;
    }
    db.insert_rows(
        "traces",
        "legacy",
        LEGACY_GROUP.min(n),
        Timestamp::from_millisecond(START_MS).unwrap(),
        0,
    )
    .await;
    let rest = n - LEGACY_GROUP.min(n);
    let chunk = 1_000_000;
    let mut done = 0;
    while done < rest {
        let m = chunk.min(rest - done);
        sqlx::query(
            r#"INSERT INTO traces (id, project_id, "timestamp", name, session_id, created_at, updated_at)
               SELECT 'b-' || i, 'lfu-test-project', t.ts, 'trace', 's-' || (i % 100000), t.ts, t.ts
               FROM generate_series($1::bigint, $2::bigint - 1) AS i,
                    LATERAL (SELECT timestamp 'epoch' + ($3::bigint + 1 + i * $4::bigint / $5::bigint)
                                    * interval '1 millisecond' AS ts) AS t"#,
        )
        .bind(done)
        .bind(done + m)
        .bind(START_MS)
        .bind(YEAR_MS)
        .bind(rest)
        .execute(&db.pool)
        .await
        .expect("generate rows");
        done += m;
        eprintln!("  {n}: {done}/{rest} rows ({:.0}s)", started.elapsed().as_secs_f64());
    }
    for sql in [
        "CREATE INDEX traces_created_at_idx ON traces (created_at)",
        r#"CREATE INDEX traces_timestamp_idx ON traces ("timestamp")"#,
        r#"CREATE INDEX traces_project_id_timestamp_idx ON traces (project_id, "timestamp")"#,
        "CREATE INDEX traces_session_id_idx ON traces (session_id)",
        "VACUUM (ANALYZE) traces",
    ] {
        db.pg_exec(sql).await;
    }
    started.elapsed()
}

async fn explain(db: &TestDb, title: &str, sql: &str, params: &[i64]) {
    let mut q = sqlx::query(AssertSqlSafe(format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}")));
    for p in params {
        q = q.bind(*p);
    }
    let rows = q.fetch_all(&db.pool).await.expect("explain");
    println!("  -- EXPLAIN {title}");
    for r in rows {
        println!("     {}", r.get::<String, _>(0));
    }
}

async fn bench_size(n: i64, polls: usize) -> Summary {
    println!("\n== traces: {n} rows ==");
    let db = TestDb::new(&format!("bench_{n}")).await;
    let load = load(&db, n).await;
    let size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('traces')) || ' (table + indexes)'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    println!("  loaded in {:.1}s, traces = {size}", load.as_secs_f64());
    // A migration under way: the traces copy holds a cursor half-way and a fresh lock.
    db.pg_exec(&format!(
        "UPDATE background_migrations SET worker_id = 'bench', locked_at = (now() AT TIME ZONE 'UTC')::timestamp(3),
                state = '{{\"maxDate\": \"2024-07-01T00:00:00.000Z\"}}' WHERE name = '{}'",
        support::TRACES
    ))
    .await;

    let live = Live::default();
    let poll = PostgresQuery {
        migrations: true,
        newest_write: true,
        ..Default::default()
    };
    // Warm up the pool and the caches; the poll is what the controller repeats every 250 ms
    // while a copy moves or the drain waits.
    let facts = live.postgres(&db.pg_url, &poll).await.expect("poll");
    assert_eq!(facts.migrations.len(), 4);
    let stats = sqlx::PgPool::connect(&support::env().database_url)
        .await
        .expect("main test database");
    let (calls0, exec0) = statements(&stats, &db.name).await;
    let cpu0 = operator_backend_cpu(&stats, &db.name).await;
    let (poll_median, poll_p90) = time(polls, || async {
        live.postgres(&db.pg_url, &poll).await.expect("poll");
    })
    .await;
    let (calls1, exec1) = statements(&stats, &db.name).await;
    let cpu1 = operator_backend_cpu(&stats, &db.name).await;
    stats.close().await;
    let per_poll = |x: f64| x / polls as f64;
    let cost = PollCost {
        queries: per_poll(calls1 - calls0),
        exec_ms: per_poll(exec1 - exec0),
        cpu_ms: per_poll((cpu1 - cpu0) * 1000.0),
    };
    println!(
        "  poll (migrations + oldest rows + newest write): median {:.2} ms, p90 {:.2} ms over {polls}; \
         per poll {:.1} statements, {:.3} ms executing, {:.2} ms backend CPU",
        ms(poll_median),
        ms(poll_p90),
        cost.queries,
        cost.exec_ms,
        cost.cpu_ms
    );

    let after = Timestamp::from_millisecond(START_MS + YEAR_MS - 60_000).unwrap();
    let late_q = PostgresQuery {
        late_writes_after: Some(LateWindow::uniform(after)),
        ..Default::default()
    };
    let (late_median, late_p90) = time(polls.min(50), || async {
        live.postgres(&db.pg_url, &late_q).await.expect("late writes");
    })
    .await;
    println!(
        "  late writes after the last minute: median {:.2} ms, p90 {:.2} ms",
        ms(late_median),
        ms(late_p90)
    );

    let scan_q = PostgresQuery {
        same_created_at_scan: Some(5000),
        ..Default::default()
    };
    let scan_runs = if n >= 5_000_000 { 3 } else { 7 };
    let groups = live
        .postgres(&db.pg_url, &scan_q)
        .await
        .expect("scan")
        .same_created_at_groups;
    println!("  scan result: {groups:?}");
    let (scan_median, scan_p90) = time(scan_runs, || async {
        live.postgres(&db.pg_url, &scan_q).await.expect("scan");
    })
    .await;
    println!(
        "  preflight scan (3 tables, batch 5000): median {:.0} ms, max-ish {:.0} ms over {scan_runs}",
        ms(scan_median),
        ms(scan_p90)
    );

    let counts_q = PostgresQuery {
        counts_until: Some(Timestamp::now()),
        ..Default::default()
    };
    let (counts_median, _) = time(3, || async {
        live.postgres(&db.pg_url, &counts_q).await.expect("counts");
    })
    .await;
    println!("  verification counts (3 tables): median {:.0} ms", ms(counts_median));
    let copies = copy_check(&db, &live, n).await;

    explain(&db, "migrations poll", MIGRATIONS_SQL, &[]).await;
    explain(&db, "newest write", NEWEST_WRITE_SQL, &[]).await;
    // Per table the instant after which rows are late, then the upper bound (none: far future).
    let late = millis_floor(after);
    let until = millis_floor(Timestamp::now());
    explain(&db, "late writes", LATE_WRITES_SQL, &[late, late, late, until]).await;
    explain(&db, "same created_at scan (traces)", SAME_CREATED_AT_SQL[0], &[5000]).await;

    db.finish().await;
    Summary {
        rows: n,
        load,
        poll: (poll_median, poll_p90),
        cost,
        late: (late_median, late_p90),
        scan: (scan_median, scan_p90),
        counts: counts_median,
        copies,
    }
}

/// The copy check before the v4 hop: PostgreSQL's four source tables (here `traces` holds the
/// rows), then ClickHouse's copies over the same window, the same rows loaded there.
async fn copy_check(db: &TestDb, live: &Live, n: i64) -> (Duration, Duration) {
    let pg_q = PostgresQuery {
        copy_sources: CopiedTable::ALL.to_vec(),
        ..Default::default()
    };
    let sources = live
        .postgres(&db.pg_url, &pg_q)
        .await
        .expect("copy sources")
        .copy_sources
        .expect("asked for");
    let (pg, _) = time(3, || async {
        live.postgres(&db.pg_url, &pg_q).await.expect("copy sources");
    })
    .await;
    let started = Instant::now();
    // The rows `load` gave PostgreSQL, with the same created_at: the legacy group, then the rest
    // spread over the year.
    let legacy = LEGACY_GROUP.min(n);
    let rest = n - legacy;
    for (count, first, spread) in [(legacy, START_MS, 0), (rest, START_MS + 1, YEAR_MS)] {
        let at = match spread {
            0 => format!("fromUnixTimestamp64Milli(toInt64({first}))"),
            _ => format!("fromUnixTimestamp64Milli(toInt64({first} + intDiv(number * {spread}, {count})))"),
        };
        db.ch_exec(&format!(
            "INSERT INTO traces (id, project_id, timestamp, name, public, bookmarked, created_at, updated_at, event_ts, is_deleted) \
             SELECT concat('b{first}-', toString(number)), 'lfu-test-project', {at}, 'trace', false, false, {at}, {at}, {at}, 0 \
             FROM numbers({count})"
        ))
        .await;
    }
    println!(
        "  ClickHouse: {n} traces loaded in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let ch_q = ClickHouseQuery {
        copy_counts: sources
            .tables
            .iter()
            .filter_map(|s| {
                Some(CopyWindow {
                    table: s.table,
                    since: sources.since,
                    until: s.newest?,
                })
            })
            .collect(),
        ..Default::default()
    };
    let counted = live.clickhouse(&db.ch, &ch_q).await.expect("copy counts").copy_counts;
    println!("  copy check: PostgreSQL {:?}, ClickHouse {counted:?}", sources.tables);
    let (ch, _) = time(3, || async {
        live.clickhouse(&db.ch, &ch_q).await.expect("copy counts");
    })
    .await;
    println!(
        "  copy check (4 tables): PostgreSQL median {:.0} ms, ClickHouse median {:.0} ms",
        ms(pg),
        ms(ch)
    );
    (pg, ch)
}
