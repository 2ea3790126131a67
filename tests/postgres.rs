//! The Postgres side of [`Live`] against a real PostgreSQL 15 (tests/db/up.sh), on the v2
//! fixture schema: every query, the states the operator derives from them, and the remedies,
//! each of which must write exactly the columns it names.

use lfu_testkit::support;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use langfuse_upgrade_operator::databases::{
    Databases, DbError, LateWindow, Live, LiveConfig, PostgresQuery, Remedy, SecretString,
};
use langfuse_upgrade_operator::migrations::{MigrationRow, PostgresFacts, RowState, Table, TableCounts, V3_MIGRATIONS};
use serde_json::{Value, json};
use support::{COST_BACKFILL, OBSERVATIONS, SCORES, TRACES, TestDb, now_ms, t_ms};

/// 2024-03-01T00:00:00Z: before 2024-05-03, when v2 instances got identical `created_at`s.
const T0: i64 = 1_709_251_200_000;

async fn read(live: &Live, db: &TestDb, query: PostgresQuery) -> PostgresFacts {
    live.postgres(&db.pg_url, &query)
        .await
        .unwrap_or_else(|e| panic!("postgres read failed: {e}"))
}

async fn migrations(live: &Live, db: &TestDb) -> Vec<MigrationRow> {
    read(
        live,
        db,
        PostgresQuery {
            migrations: true,
            ..Default::default()
        },
    )
    .await
    .migrations
}

fn row<'a>(rows: &'a [MigrationRow], name: &str) -> &'a MigrationRow {
    rows.iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {name}"))
}

/// A Postgres literal for a UTC timestamp (as Prisma stores it).
fn lit(t: Timestamp) -> String {
    format!("'{}'::timestamp(3)", t.strftime("%Y-%m-%d %H:%M:%S%.3f"))
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn server_version_and_the_four_fixture_rows() {
    let db = TestDb::new("pg_fixture_rows").await;
    let live = Live::default();
    let facts = read(
        &live,
        &db,
        PostgresQuery {
            server_version: true,
            migrations: true,
            ..Default::default()
        },
    )
    .await;
    let version = facts.server_version_num.expect("server_version_num asked for");
    assert!(
        (150000..160000).contains(&version),
        "PostgreSQL 15 expected, got {version}"
    );
    let names: Vec<&str> = facts.migrations.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, V3_MIGRATIONS, "rows in the worker's order (by name)");
    let now = Timestamp::now();
    for r in &facts.migrations {
        assert_eq!(r.state(now), RowState::Queued, "{r:?}");
        assert_eq!(
            (r.cursor, r.oldest_row, r.batch_size, r.failed_reason.as_deref()),
            (None, None, None, None)
        );
    }
    // Nothing not asked for is filled.
    assert_eq!(facts.newest_write, None);
    assert!(facts.same_created_at_groups.is_empty());
    assert_eq!((facts.counts, facts.late_writes), (None, None));
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn row_states_cursor_batch_size_and_progress() {
    let db = TestDb::new("pg_row_states").await;
    let live = Live::default();
    // 100 traces one second apart from T0; observations and scores from later.
    db.insert_rows("traces", "t", 100, t_ms(T0), 1000).await;
    db.insert_rows("observations", "o", 10, t_ms(T0 + 5_000), 1000).await;
    db.insert_rows("scores", "s", 10, t_ms(T0 + 7_000), 1000).await;
    let now = now_ms();
    let cursor = t_ms(T0 + 50_000);

    // traces: running (fresh lock), cursor with Z, batch size as a number.
    db.pg_exec(&format!(
        "UPDATE background_migrations SET worker_id = 'w1', locked_at = {}, state = '{{\"maxDate\": \"{}\"}}',
                args = '{{\"batchSize\": 2500}}' WHERE name = '{TRACES}'",
        lit(now - SignedDuration::from_secs(5)),
        support::standin_worker::iso(cursor.as_millisecond()),
    ))
    .await;
    // observations: stalled (stale lock), cursor without Z under args.stateSuffix, batch size as a string.
    db.pg_exec(&format!(
        "UPDATE background_migrations SET worker_id = 'w0', locked_at = {},
                state = '{{\"maxDate_x\": \"2024-03-01T00:00:08.250\", \"maxDate\": \"1999-01-01T00:00:00Z\"}}',
                args = '{{\"batchSize\": \"1000\", \"stateSuffix\": \"_x\"}}' WHERE name = '{OBSERVATIONS}'",
        lit(now - SignedDuration::from_secs(120)),
    ))
    .await;
    // scores: failed; cost backfill: finished.
    db.pg_exec(&format!(
        "UPDATE background_migrations SET failed_at = {}, failed_reason = 'boom', locked_at = NULL WHERE name = '{SCORES}'",
        lit(now)
    ))
    .await;
    db.pg_exec(&format!(
        "UPDATE background_migrations SET finished_at = {} WHERE name = '{COST_BACKFILL}'",
        lit(now)
    ))
    .await;

    let rows = migrations(&live, &db).await;
    let check_now = Timestamp::now();
    let traces = row(&rows, TRACES);
    assert_eq!(traces.state(check_now), RowState::Running);
    assert_eq!(traces.cursor, Some(cursor));
    assert_eq!(traces.batch_size, Some(2500));
    assert_eq!(
        traces.oldest_row,
        Some(t_ms(T0)),
        "index-backed min(created_at) of traces"
    );
    assert_eq!(traces.locked_at, Some(now - SignedDuration::from_secs(5)));
    // Started at T0+100s, at T0+50s, oldest T0: half done.
    let progress = traces.progress(Some(t_ms(T0 + 100_000))).unwrap();
    assert!((progress - 0.5).abs() < 1e-9, "{progress}");

    let observations = row(&rows, OBSERVATIONS);
    assert_eq!(observations.state(check_now), RowState::Stalled);
    assert_eq!(
        observations.cursor,
        Some(t_ms(T0 + 8_250)),
        "maxDate + stateSuffix, no Z = UTC"
    );
    assert_eq!(observations.batch_size, Some(1000));
    assert_eq!(observations.oldest_row, Some(t_ms(T0 + 5_000)));

    let scores = row(&rows, SCORES);
    assert_eq!(scores.state(check_now), RowState::Failed);
    assert_eq!(scores.failed_reason.as_deref(), Some("boom"));
    assert_eq!(scores.failed_at, Some(now));
    assert_eq!(scores.oldest_row, Some(t_ms(T0 + 7_000)));

    let cost = row(&rows, COST_BACKFILL);
    assert_eq!(cost.state(check_now), RowState::Finished);
    assert_eq!(cost.oldest_row, None, "the cost backfill copies no table");
    assert_eq!(cost.progress(None), Some(1.0));

    // A worker that dropped its lock mid-run (SIGTERM) keeps its cursor: stalled, not queued.
    db.pg_exec(&format!(
        "UPDATE background_migrations SET locked_at = NULL WHERE name = '{TRACES}'"
    ))
    .await;
    let rows = migrations(&live, &db).await;
    assert_eq!(row(&rows, TRACES).state(Timestamp::now()), RowState::Stalled);
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn newest_write_is_the_max_over_three_tables() {
    let db = TestDb::new("pg_newest_write").await;
    let live = Live::default();
    let q = PostgresQuery {
        newest_write: true,
        ..Default::default()
    };
    assert_eq!(read(&live, &db, q.clone()).await.newest_write, None, "empty tables");
    db.insert_rows("traces", "t", 50, t_ms(T0), 1000).await; // newest T0+49s
    db.insert_rows("observations", "o", 1, t_ms(T0 + 60_123), 0).await;
    db.insert_rows("scores", "s", 3, t_ms(T0 + 10_000), 1).await;
    assert_eq!(read(&live, &db, q.clone()).await.newest_write, Some(t_ms(T0 + 60_123)));
    db.insert_rows("scores", "s2", 1, t_ms(T0 + 60_124), 0).await;
    assert_eq!(read(&live, &db, q).await.newest_write, Some(t_ms(T0 + 60_124)));
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn counts_until_the_cutoff_and_late_writes_after_it() {
    let db = TestDb::new("pg_counts").await;
    let live = Live::default();
    db.insert_rows("traces", "t", 10, t_ms(T0), 1000).await; // T0 .. T0+9s
    db.insert_rows("observations", "o", 6, t_ms(T0 + 2_000), 1000).await; // T0+2s .. T0+7s
    db.insert_rows("scores", "s", 3, t_ms(T0 + 8_000), 1000).await; // T0+8s .. T0+10s
    let cutoff = t_ms(T0 + 4_000);
    let facts = read(
        &live,
        &db,
        PostgresQuery {
            counts_until: Some(cutoff),
            late_writes_after: Some(LateWindow::uniform(cutoff)),
            ..Default::default()
        },
    )
    .await;
    // A row exactly at the cut-off counts as before it.
    assert_eq!(
        facts.counts,
        Some(TableCounts {
            traces: 5,
            observations: 3,
            scores: 0
        })
    );
    assert_eq!(
        facts.late_writes,
        Some(TableCounts {
            traces: 5,
            observations: 3,
            scores: 3
        })
    );
    // Sub-millisecond precision cannot move a millisecond row across the boundary.
    let just_after = cutoff + SignedDuration::from_micros(999);
    let facts = read(
        &live,
        &db,
        PostgresQuery {
            counts_until: Some(just_after),
            late_writes_after: Some(LateWindow::uniform(just_after)),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(facts.counts.unwrap().traces, 5);
    assert_eq!(facts.late_writes.unwrap().traces, 5);
    assert_eq!(facts.recent_counts, None, "not asked for");
    // The recent window: after T0 + 1 s (exclusive), up to the cut-off (inclusive).
    let facts = read(
        &live,
        &db,
        PostgresQuery {
            counts_until: Some(cutoff),
            recent_after: Some(t_ms(T0 + 1_000)),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        facts.recent_counts,
        Some(TableCounts {
            traces: 3,
            observations: 3,
            scores: 0
        })
    );
    // Nothing after the newest row.
    let late = read(
        &live,
        &db,
        PostgresQuery {
            late_writes_after: Some(LateWindow::uniform(t_ms(T0 + 10_000))),
            ..Default::default()
        },
    )
    .await
    .late_writes
    .unwrap();
    assert_eq!(late, TableCounts::default());
    // Bounded above by the decision's instant: rows written after it wait for the next count,
    // and one written at that very millisecond is in this one.
    let late = read(
        &live,
        &db,
        PostgresQuery {
            late_writes_after: Some(LateWindow::uniform(cutoff)),
            late_writes_until: Some(t_ms(T0 + 6_000)),
            ..Default::default()
        },
    )
    .await
    .late_writes
    .unwrap();
    assert_eq!(
        late,
        TableCounts {
            traces: 2,
            observations: 2,
            scores: 0
        }
    );
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn the_scan_finds_a_12000_row_created_at_group() {
    let db = TestDb::new("pg_scan").await;
    let live = Live::default();
    // The pre-2024-05-03 pattern: 12,000 traces got one created_at, later ones are spread.
    db.insert_rows("traces", "legacy", 12_000, t_ms(T0), 0).await;
    db.insert_rows("traces", "new", 3_000, t_ms(T0 + 1), 7).await;
    // Just under the batch size, in another table: not a trap.
    db.insert_rows("scores", "s", 4_999, t_ms(T0 + 5), 0).await;
    db.insert_rows("observations", "o", 6_000, t_ms(T0), 1).await;
    let scan = |batch| {
        let (live, db) = (&live, &db);
        async move {
            read(
                live,
                db,
                PostgresQuery {
                    same_created_at_scan: Some(batch),
                    ..Default::default()
                },
            )
            .await
            .same_created_at_groups
        }
    };
    assert_eq!(scan(5000).await, vec![(Table::Traces, 12_000)]);
    assert_eq!(scan(4999).await, vec![(Table::Traces, 12_000), (Table::Scores, 4_999)]);
    assert_eq!(scan(12_001).await, vec![], "a batch above the group clears it");
    db.finish().await;
}

/// Columns of `after` that differ from `before` (JSON objects of whole rows).
fn changed(before: &Value, after: &Value) -> Vec<String> {
    let (b, a) = (before.as_object().unwrap(), after.as_object().unwrap());
    assert_eq!(
        b.keys().collect::<Vec<_>>(),
        a.keys().collect::<Vec<_>>(),
        "columns appeared or vanished"
    );
    let mut cols: Vec<String> = b.keys().filter(|k| b[*k] != a[*k]).cloned().collect();
    cols.sort();
    cols
}

/// Apply `remedy` and return (row before, row after); every other row must be untouched.
async fn apply(live: &Live, db: &TestDb, name: &str, remedy: Remedy) -> (Value, Value) {
    let all_before = db.migration_rows().await;
    let before = db.migration_row(name).await;
    live.remedy(&db.pg_url, &remedy)
        .await
        .unwrap_or_else(|e| panic!("{remedy:?}: {e}"));
    let after = db.migration_row(name).await;
    let all_after = db.migration_rows().await;
    for (b, a) in all_before.iter().zip(&all_after) {
        if b["name"] != json!(name) {
            assert_eq!(b, a, "a remedy for {name} touched another row");
        }
    }
    // Idempotent: a second application changes nothing.
    live.remedy(&db.pg_url, &remedy).await.unwrap();
    assert_eq!(db.migration_row(name).await, after, "{remedy:?} is not idempotent");
    (before, after)
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn each_remedy_writes_exactly_its_columns() {
    let db = TestDb::new("pg_remedies").await;
    let live = Live::default();
    let now = now_ms();
    // A realistic mid-run failure on every copy row: lock history, cursor, extra args.
    db.pg_exec(&format!(
        "UPDATE background_migrations SET worker_id = 'w-old', locked_at = NULL, failed_at = {},
                failed_reason = 'Failed to convert rust String into napi string',
                state = '{{\"maxDate\": \"2024-03-01T00:00:00.000Z\"}}',
                args = '{{\"batchSize\": 5000, \"maxRowsToProcess\": 1e9, \"custom\": [1, 2]}}'
         WHERE name <> '{COST_BACKFILL}'",
        lit(now)
    ))
    .await;

    // SetBatchSize: only args.batchSize.
    let (before, after) = apply(
        &live,
        &db,
        TRACES,
        Remedy::SetBatchSize {
            name: TRACES.into(),
            size: 2500,
        },
    )
    .await;
    assert_eq!(changed(&before, &after), ["args"]);
    let mut expected_args = before["args"].clone();
    expected_args["batchSize"] = json!(2500);
    assert_eq!(after["args"], expected_args, "other args keys kept");

    // ClearFailure: failed_at and failed_reason only (state, lock, worker kept).
    let (before, after) = apply(
        &live,
        &db,
        OBSERVATIONS,
        Remedy::ClearFailure {
            name: OBSERVATIONS.into(),
        },
    )
    .await;
    assert_eq!(changed(&before, &after), ["failed_at", "failed_reason"]);
    assert_eq!(
        (&after["failed_at"], &after["failed_reason"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(after["state"], before["state"]);

    // RerunWindow on a finished row: state, args.maxDate/maxRowsToProcess, finished_at
    // (failed_* are already NULL there, so they do not show as changes).
    db.pg_exec(&format!(
        "UPDATE background_migrations SET failed_at = NULL, failed_reason = NULL, finished_at = {}, locked_at = {}
         WHERE name = '{SCORES}'",
        lit(now),
        lit(now)
    ))
    .await;
    let max_date = Timestamp::from_nanosecond(1_730_718_960_123_456_789).unwrap();
    let (before, after) = apply(
        &live,
        &db,
        SCORES,
        Remedy::RerunWindow {
            name: SCORES.into(),
            max_date,
            max_rows: 42,
        },
    )
    .await;
    assert_eq!(changed(&before, &after), ["args", "finished_at", "state"]);
    assert_eq!(after["state"], json!({}));
    assert_eq!(after["finished_at"], Value::Null);
    let mut expected_args = before["args"].clone();
    expected_args["maxDate"] = json!("2024-11-04T11:16:00.123Z");
    expected_args["maxRowsToProcess"] = json!(42);
    assert_eq!(after["args"], expected_args);
    assert_eq!(
        after["locked_at"], before["locked_at"],
        "the lock is not the operator's to touch"
    );

    // RerunWindow on a failed row also clears the failure.
    let (before, after) = apply(
        &live,
        &db,
        TRACES,
        Remedy::RerunWindow {
            name: TRACES.into(),
            max_date,
            max_rows: 7,
        },
    )
    .await;
    assert_eq!(
        changed(&before, &after),
        ["args", "failed_at", "failed_reason", "state"]
    );

    // FinishOrphan: a hand-run v4-preview script's row, unfinished and locked by a worker that
    // died on it: finished_at only.
    db.pg_exec(&format!(
        "INSERT INTO background_migrations (id, name, script, args, state, worker_id, locked_at)
         VALUES ('orphan-1', '20251027_backfill_events_historic', 'backfillEventsHistoric', '{{}}', '{{}}', 'w-dead', {})",
        lit(now)
    ))
    .await;
    let (before, after) = apply(
        &live,
        &db,
        "20251027_backfill_events_historic",
        Remedy::FinishOrphan {
            name: "20251027_backfill_events_historic".into(),
            script: "backfillEventsHistoric".into(),
        },
    )
    .await;
    assert_eq!(changed(&before, &after), ["finished_at"]);
    // Not that row's script: refused, nothing written.
    let all = db.migration_rows().await;
    let err = live
        .remedy(
            &db.pg_url,
            &Remedy::FinishOrphan {
                name: TRACES.into(),
                script: "backfillEventsHistoric".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains(TRACES), "{err}");
    assert_eq!(db.migration_rows().await, all);

    // Unknown rows and impossible values are refused, and nothing is written.
    let all = db.migration_rows().await;
    let err = live
        .remedy(
            &db.pg_url,
            &Remedy::ClearFailure {
                name: "20991231_nope".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no row named 20991231_nope"), "{err}");
    let err = live
        .remedy(
            &db.pg_url,
            &Remedy::SetBatchSize {
                name: TRACES.into(),
                size: 0,
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at least 1"), "{err}");
    assert_eq!(db.migration_rows().await, all);
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn a_database_without_background_migrations_reads_as_no_rows() {
    let db = TestDb::empty("pg_no_table").await;
    let live = Live::default();
    let facts = read(
        &live,
        &db,
        PostgresQuery {
            server_version: true,
            migrations: true,
            ..Default::default()
        },
    )
    .await;
    assert!(facts.migrations.is_empty());
    // The tracing tables are missing too: asking for them is an error that says so.
    let err = live
        .postgres(
            &db.pg_url,
            &PostgresQuery {
                newest_write: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("does not exist") && text.contains("42P01"), "{text}");
    db.finish().await;
}

fn assert_no_secret(err: &DbError, password: &str, url: &str) {
    let text = err.to_string();
    eprintln!("error message: {text}");
    assert!(!text.contains(password), "password leaked: {text}");
    assert!(!text.contains(url), "URL leaked: {text}");
    assert!(!format!("{err:?}").contains(password), "password leaked in Debug");
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn errors_name_the_server_and_never_the_password() {
    let db = TestDb::new("pg_errors").await;
    let live = Live::default();
    let url = db.pg_url.expose().to_string();
    let (prefix, rest) = url.split_once("://").unwrap();
    let (userinfo, host_db) = rest.split_once('@').unwrap();
    let (user, password) = userinfo.split_once(':').unwrap();
    let q = PostgresQuery {
        migrations: true,
        ..Default::default()
    };

    // Wrong password.
    let wrong = format!("{prefix}://{user}:{password}x@{host_db}");
    let err = live.postgres(&SecretString::new(wrong.clone()), &q).await.unwrap_err();
    assert_no_secret(&err, password, &wrong);
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1:") && text.contains("password authentication failed") && text.contains("Secret"),
        "{text}"
    );

    // Nothing listening.
    let closed = format!("{prefix}://{userinfo}@127.0.0.1:9/{}", db.name);
    let err = live.postgres(&SecretString::new(closed.clone()), &q).await.unwrap_err();
    assert_no_secret(&err, password, &closed);
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
    assert!(err.to_string().contains("cannot reach"), "{err}");
    // A refusal is reported when it is met, not once the pool's acquire timeout has run out
    // (a blocked upgrade re-checks in moments): with a one-minute timeout, well within it.
    let patient = Live::new(LiveConfig {
        connect_timeout: Duration::from_secs(60),
        ..LiveConfig::default()
    });
    let started = std::time::Instant::now();
    let err = patient
        .postgres(&SecretString::new(closed.clone()), &q)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot reach"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a refused connection was reported after {:?}, as if the pool's timeout were waited out",
        started.elapsed()
    );

    // No such database.
    let missing = support::with_database(&url, "lfu_does_not_exist");
    let err = live
        .postgres(&SecretString::new(missing.clone()), &q)
        .await
        .unwrap_err();
    assert_no_secret(&err, password, &missing);
    assert!(err.to_string().contains("3D000"), "{err}");
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn pools_are_cached_per_url() {
    let a = TestDb::new("pg_pool_a").await;
    let b = TestDb::new("pg_pool_b").await;
    let live = Live::default();
    let q = PostgresQuery {
        server_version: true,
        ..Default::default()
    };
    for _ in 0..3 {
        read(&live, &a, q.clone()).await;
    }
    assert_eq!(live.cached_pools(), 1);
    read(&live, &b, q.clone()).await;
    assert_eq!(live.cached_pools(), 2);
    // Many polls in parallel never need more than the pool's two connections.
    let poll = PostgresQuery {
        migrations: true,
        newest_write: true,
        ..Default::default()
    };
    let polls = (0..20).map(|_| live.postgres(&a.pg_url, &poll));
    for r in futures::future::join_all(polls).await {
        r.unwrap();
    }
    let backends: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'langfuse-upgrade-operator'",
    )
    .fetch_one(&a.pool)
    .await
    .unwrap();
    assert!(backends <= 2, "{backends} operator connections");
    a.finish().await;
    b.finish().await;
}

/// A server that takes `delay` to answer each new connection (as one under load does): a
/// loopback forwarder to Postgres that holds each connection's first bytes back that long and
/// counts the connections made to it.
async fn slow_server(pg_port: u16, delay: Duration) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", pg_port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (port, accepted)
}

/// Safety review #8: when the pool is slow to hand out connections, each slow acquire used to
/// open a probe connection of its own beside it: 20 polls at once made 20 extra connections
/// to a server that was slow because it was overloaded (484524e: 22 connections here). One
/// probe per database at a time: the pool's two and one probe.
#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn slow_acquires_share_one_probe() {
    use std::sync::atomic::Ordering;
    let db = TestDb::new("pg_probe_bound").await;
    let url = db.pg_url.expose().to_string();
    let (prefix, rest) = url.split_once("://").unwrap();
    let (userinfo, host_db) = rest.split_once('@').unwrap();
    let (host, dbname) = host_db.split_once('/').unwrap();
    let pg_port: u16 = host.rsplit_once(':').unwrap().1.parse().unwrap();
    let (port, accepted) = slow_server(pg_port, Duration::from_millis(1500)).await;
    let slow = SecretString::new(format!("{prefix}://{userinfo}@127.0.0.1:{port}/{dbname}"));
    let live = Live::new(LiveConfig {
        connect_timeout: Duration::from_secs(30),
        ..LiveConfig::default()
    });
    let poll = PostgresQuery {
        migrations: true,
        newest_write: true,
        ..Default::default()
    };
    let polls = (0..20).map(|_| live.postgres(&slow, &poll));
    for r in futures::future::join_all(polls).await {
        r.unwrap();
    }
    let made = accepted.load(Ordering::SeqCst);
    let pool = LiveConfig::default().max_connections as usize;
    assert!(
        made <= pool + 1,
        "{made} connections for 20 slow acquires: the pool's {pool} and one probe at most"
    );
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn prisma_url_parameters_are_honoured() {
    // Langfuse's tables in a non-public schema, as `DATABASE_URL=...?schema=lf` puts them.
    let db = TestDb::empty("pg_prisma_schema").await;
    db.pg_exec("CREATE SCHEMA lf").await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET search_path TO lf;\n{}\nRESET search_path;",
        support::PG_FIXTURE
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let live = Live::default();
    let q = PostgresQuery {
        migrations: true,
        newest_write: true,
        ..Default::default()
    };
    let url = db.pg_url.expose();
    // Prisma-only parameters (and one with a secret value) are neither sent nor logged.
    let with_schema = SecretString::new(format!(
        "{url}?schema=lf&connection_limit=5&pool_timeout=10&sslpassword=hush"
    ));
    let facts = live.postgres(&with_schema, &q).await.unwrap();
    assert_eq!(facts.migrations.len(), 4, "found through search_path = lf");
    // Behind PgBouncer (no named prepared statements, no session SET of statement_timeout).
    let bouncer = SecretString::new(format!("{url}?schema=lf&pgbouncer=true"));
    for _ in 0..3 {
        assert_eq!(live.postgres(&bouncer, &q).await.unwrap().migrations.len(), 4);
    }
    // Without the schema the operator looks in public, where nothing is.
    let plain = live
        .postgres(
            &db.pg_url,
            &PostgresQuery {
                migrations: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(plain.migrations.is_empty());
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn env_gate_and_worker_are_read_and_an_untaken_gated_row_is_dormant() {
    let db = TestDb::new("pg_gates").await;
    let live = Live::default();
    // What 3.203.0's Prisma migration inserts, and one row a worker already took.
    db.pg_exec(
        r#"INSERT INTO background_migrations (id, name, script, args) VALUES
           ('v4s1', '20260701_v4_step_1_create_root_spans_from_traces', 'createRootSpansFromTraces',
            '{"envGate":"LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL"}'),
           ('v4s5', '20260701_v4_step_5_drop_pid_tid_sorting_tables', 'dropPidTidSortingTables',
            '{"envGate":"LANGFUSE_BACKGROUND_MIGRATION_V4_DROP_PID_TID_SORTING_TABLES"}')"#,
    )
    .await;
    db.pg_exec("UPDATE background_migrations SET worker_id = 'w-1' WHERE id = 'v4s5'")
        .await;
    let rows = migrations(&live, &db).await;
    let step1 = row(&rows, "20260701_v4_step_1_create_root_spans_from_traces");
    assert_eq!(
        step1.env_gate.as_deref(),
        Some("LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL")
    );
    assert!(!step1.taken);
    let closed = langfuse_upgrade_operator::migrations::OpenGates::default();
    assert_eq!(step1.state_with(now_ms(), &closed), RowState::Dormant);
    let step5 = row(&rows, "20260701_v4_step_5_drop_pid_tid_sorting_tables");
    assert!(step5.taken);
    assert_eq!(step5.state_with(now_ms(), &closed), RowState::Queued);
    let traces = row(&rows, TRACES);
    assert_eq!((traces.env_gate.as_deref(), traces.taken), (None, false));
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn realistic_history_has_the_shapes_production_has() {
    let db = TestDb::new("pg_history").await;
    let end = now_ms();
    let history = support::langfuse_data::History::default();
    let seeded = db.seed(&history, end).await;
    assert_eq!(seeded.traces, history.traces);
    assert_eq!(seeded.observations, history.traces * history.observations_per_trace);
    assert_eq!(seeded.scores, history.traces / history.score_every);
    let one = |sql: &'static str| {
        let pool = db.pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() }
    };
    // Milliseconds, as Prisma writes them.
    assert!(
        one("SELECT count(*) FROM traces WHERE extract(milliseconds FROM created_at)::bigint % 1000 <> 0").await > 200
    );
    // A batch import: many rows share one created_at.
    assert!(one("SELECT max(n) FROM (SELECT count(*) AS n FROM observations GROUP BY created_at) g").await >= 40 * 5);
    // Rows updated after creation; large bodies; nothing in the future.
    assert!(one("SELECT count(*) FROM traces WHERE updated_at > created_at").await > 10);
    assert!(one("SELECT max(length(input::text))::bigint FROM observations").await >= 64 * 1024);
    let newest = db.newest_created_ms().await;
    assert!(newest <= end.as_millisecond(), "{newest} after {end}");
    // A v2 that keeps ingesting writes at the current millisecond.
    let ingest = support::langfuse_data::Ingest::start(&db, std::time::Duration::from_millis(20));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let written = ingest.stop().await;
    assert!(written > 0);
    assert_eq!(
        db.pg_count("traces").await + db.pg_count("observations").await + db.pg_count("scores").await,
        seeded.traces + seeded.observations + seeded.scores + written
    );
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn the_poll_keeps_working_after_v4_drops_the_tracing_tables() {
    let db = TestDb::new("pg_after_v4").await;
    let live = Live::default();
    db.insert_rows("traces", "t", 10, t_ms(T0), 1000).await;
    // What v4.0.0's Prisma migrations do: drop the legacy tracing tables and the rows that
    // copied them; the gated backfill rows stay.
    db.pg_exec("DROP TABLE scores").await;
    db.pg_exec("DROP TABLE observations").await;
    db.pg_exec(
        r#"INSERT INTO background_migrations (id, name, script, args) VALUES
           ('v4s1', '20260701_v4_step_1_create_root_spans_from_traces', 'createRootSpansFromTraces',
            '{"envGate":"LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL"}')"#,
    )
    .await;
    // One table left: its copy still has a progress estimate.
    let rows = migrations(&live, &db).await;
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(row(&rows, TRACES).oldest_row.is_some());
    assert!(row(&rows, SCORES).oldest_row.is_none());
    db.pg_exec("DROP TABLE traces").await;
    db.pg_exec("DELETE FROM background_migrations WHERE name LIKE '20241024%'")
        .await;
    let rows = migrations(&live, &db).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0].env_gate.as_deref(),
        Some("LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL")
    );
    // Preflight of a source already on v4 reads its server version and rows; the scan for
    // same-created_at groups finds nothing to stall in tables that are gone.
    let facts = read(
        &live,
        &db,
        PostgresQuery {
            server_version: true,
            migrations: true,
            same_created_at_scan: Some(10),
            ..Default::default()
        },
    )
    .await;
    assert!(facts.same_created_at_groups.is_empty());
    assert!(facts.server_version_num.is_some_and(|n| n >= 150000));
    db.finish().await;
}
