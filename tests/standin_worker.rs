//! The background migrations end to end on real servers: the stand-in for the 3.29.0 worker
//! (crates/lfu-testkit/src/support/standin_worker.rs) copies Postgres into ClickHouse while [`Live`] watches it
//! the way the controller does, and applies the remedies the plan would choose.

use lfu_testkit::support;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use langfuse_upgrade_operator::databases::{ClickHouseQuery, Databases, LateWindow, Live, PostgresQuery, Remedy};
use langfuse_upgrade_operator::migrations::{MigrationRow, RowState, TableCounts, V3_MIGRATIONS};
use support::standin_worker::{NAPI_MESSAGE, NapiFailure, Standin, StandinConfig, iso};
use support::{TRACES, TestDb, eventually, now_ms, t_ms};

const T0: i64 = 1_709_251_200_000; // 2024-03-01T00:00:00Z
const RUN: Duration = Duration::from_secs(120);

async fn rows(live: &Live, db: &TestDb) -> Vec<MigrationRow> {
    live.postgres(
        &db.pg_url,
        &PostgresQuery {
            migrations: true,
            ..Default::default()
        },
    )
    .await
    .expect("read background_migrations")
    .migrations
}

async fn traces_row(live: &Live, db: &TestDb) -> MigrationRow {
    rows(live, db)
        .await
        .into_iter()
        .find(|r| r.name == TRACES)
        .expect("traces row")
}

/// Postgres and ClickHouse counts up to `cutoff`, as verification reads them.
async fn counts(live: &Live, db: &TestDb, cutoff: Timestamp) -> (TableCounts, TableCounts) {
    let pg = live
        .postgres(
            &db.pg_url,
            &PostgresQuery {
                counts_until: Some(cutoff),
                ..Default::default()
            },
        )
        .await
        .expect("postgres counts")
        .counts
        .unwrap();
    let ch = live
        .clickhouse(
            &db.ch,
            &ClickHouseQuery {
                counts_until: Some(cutoff),
                ..Default::default()
            },
        )
        .await
        .expect("clickhouse counts")
        .counts
        .unwrap();
    (pg, ch)
}

async fn start(db: &TestDb, config: StandinConfig) -> Standin {
    Standin::start(db.pg_url.expose(), db.ch_client.clone(), config).await
}

fn all_finished(rows: &[MigrationRow]) -> bool {
    let now = Timestamp::now();
    rows.len() == 4 && rows.iter().all(|r| r.state(now) == RowState::Finished)
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn a_normal_run_copies_every_row() {
    let db = TestDb::new("sw_normal").await;
    let live = Live::default();
    db.insert_rows("traces", "t", 12_345, t_ms(T0), 250).await;
    db.insert_rows("observations", "o", 7_000, t_ms(T0 + 3), 300).await;
    db.insert_rows("scores", "s", 3_000, t_ms(T0 + 7), 900).await;

    // Not enabled (LANGFUSE_ENABLE_BACKGROUND_MIGRATIONS=false): nothing happens at all.
    let before = db.migration_rows().await;
    let idle = start(
        &db,
        StandinConfig {
            enabled: false,
            ..Default::default()
        },
    )
    .await
    .wait(RUN)
    .await;
    assert!(idle.picked.is_empty());
    assert_eq!(db.migration_rows().await, before);

    let report = start(&db, StandinConfig::default()).await.wait(RUN).await;
    assert_eq!(report.picked, V3_MIGRATIONS, "runs every row once, in name order");
    let rows = rows(&live, &db).await;
    assert!(all_finished(&rows), "{rows:#?}");
    // Each copy walked down to its table's oldest row.
    for r in rows.iter().filter(|r| r.oldest_row.is_some()) {
        assert_eq!(r.cursor, r.oldest_row, "{r:?}");
        assert_eq!(r.progress(Some(Timestamp::now())), Some(1.0));
    }
    let (pg, ch) = counts(&live, &db, Timestamp::now()).await;
    assert_eq!(
        pg,
        TableCounts {
            traces: 12_345,
            observations: 7_000,
            scores: 3_000
        }
    );
    assert_eq!(ch, pg);
    // created_at survives the copy to the millisecond: a cut-off between rows splits both
    // sides identically.
    let (pg, ch) = counts(&live, &db, t_ms(T0 + 1_234_567)).await;
    assert_eq!(
        pg,
        TableCounts {
            traces: 4_939,
            observations: 4_116,
            scores: 1_372
        }
    );
    assert_eq!(ch, pg);
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn the_same_created_at_trap_is_detected_and_cleared_by_a_larger_batch() {
    let db = TestDb::new("sw_trap").await;
    let live = Live::default();
    let shared = t_ms(T0 + 1_000_000);
    // 12,000 traces share one created_at (the pre-2024-05-03 default); 200 newer and 500 older.
    db.insert_rows("traces", "legacy", 12_000, shared, 0).await;
    db.insert_rows("traces", "new", 200, t_ms(T0 + 2_000_000), 10).await;
    db.insert_rows("traces", "old", 500, t_ms(T0), 10).await;
    let scan = live
        .postgres(
            &db.pg_url,
            &PostgresQuery {
                same_created_at_scan: Some(5000),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .same_created_at_groups;
    assert_eq!(
        scan,
        vec![(langfuse_upgrade_operator::migrations::Table::Traces, 12_000)],
        "preflight would have warned"
    );

    let worker = start(&db, StandinConfig::default()).await;
    // The cursor reaches the shared created_at ...
    eventually(RUN, "the traces cursor to reach the shared created_at", || async {
        (traces_row(&live, &db).await.cursor == Some(shared)).then_some(())
    })
    .await;
    // ... and stays there while the worker keeps busy with a fresh lock: stuck, not stalled.
    // Three more batches, however long a loaded machine takes for them (a fixed sleep flaked).
    let batches = worker.batches();
    eventually(RUN, "the worker to run three more batches", || async {
        (worker.batches() >= batches + 3).then_some(())
    })
    .await;
    let row = traces_row(&live, &db).await;
    assert_eq!(row.cursor, Some(shared), "the cursor never advances");
    assert_eq!(row.state(Timestamp::now()), RowState::Running, "the lock is fresh");
    assert!(
        row.locked_at.unwrap() > Timestamp::now() - SignedDuration::from_secs(2),
        "the heartbeat (every 200 ms) keeps the lock fresh"
    );

    // Remedy: a batch above the group, then restart the worker (SIGTERM, new pod).
    live.remedy(
        &db.pg_url,
        &Remedy::SetBatchSize {
            name: TRACES.into(),
            size: 12_001,
        },
    )
    .await
    .unwrap();
    let stopped = worker.shutdown().await;
    assert_eq!(stopped.picked.last().map(String::as_str), Some(TRACES));
    let after_stop = traces_row(&live, &db).await;
    assert_eq!(after_stop.locked_at, None, "SIGTERM releases the lock");
    assert_eq!(
        after_stop.state(Timestamp::now()),
        RowState::Stalled,
        "unfinished, nobody on it"
    );
    assert_eq!(after_stop.batch_size, Some(12_001));

    let report = start(&db, StandinConfig::default()).await.wait(RUN).await;
    assert_eq!(
        report.resumed_from.first(),
        Some(&(TRACES.to_string(), Some(iso(shared.as_millisecond())))),
        "the restart resumes from the stuck cursor"
    );
    let rows = rows(&live, &db).await;
    assert!(all_finished(&rows), "{rows:#?}");
    let (pg, ch) = counts(&live, &db, Timestamp::now()).await;
    assert_eq!(pg.traces, 12_700);
    assert_eq!(ch, pg);
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn a_napi_failure_is_remedied_by_a_smaller_batch_and_resumes_from_the_cursor() {
    let db = TestDb::new("sw_napi").await;
    let live = Live::default();
    // 20,000 traces 10 ms apart; the older half carries blobs too large for a 5000-row batch.
    db.insert_rows("traces", "t", 20_000, t_ms(T0), 10).await;
    let heavy_before = t_ms(T0 + 10_000 * 10);
    let config = StandinConfig {
        napi: Some(NapiFailure {
            max_batch: 2500,
            heavy_before: Some(heavy_before),
        }),
        ..Default::default()
    };

    let first = start(&db, config.clone()).await.wait(RUN).await;
    let row = traces_row(&live, &db).await;
    assert_eq!(row.state(Timestamp::now()), RowState::Failed);
    assert_eq!(row.failed_reason.as_deref(), Some(NAPI_MESSAGE));
    assert_eq!(row.locked_at, None);
    // Batch 1 took rows 19999..15000, batch 2 (from the boundary row) 15000..10001; batch 3
    // reached the heavy rows and failed before writing anything.
    let cursor = row.cursor.expect("two batches were copied before the failure");
    assert_eq!(
        cursor,
        t_ms(T0 + 10_001 * 10),
        "the cursor stands at the last good batch"
    );
    assert_eq!(first.rows_inserted, 10_000);
    // A failed row does not block the later ones.
    let all = rows(&live, &db).await;
    assert!(
        all.iter()
            .filter(|r| r.name != TRACES)
            .all(|r| r.state(Timestamp::now()) == RowState::Finished)
    );

    // Remedy: batchSize 2500, clear the failure (state kept), restart.
    for remedy in [
        Remedy::SetBatchSize {
            name: TRACES.into(),
            size: 2500,
        },
        Remedy::ClearFailure { name: TRACES.into() },
    ] {
        live.remedy(&db.pg_url, &remedy).await.unwrap();
    }
    let second = start(&db, config).await.wait(RUN).await;
    assert_eq!(second.picked, [TRACES]);
    assert_eq!(
        second.resumed_from,
        [(TRACES.to_string(), Some(iso(cursor.as_millisecond())))]
    );
    // Only the 10,002 rows at or below the cursor were copied (plus one boundary row per
    // batch), not the 10,000 above it again.
    assert!(
        (10_002..=10_002 + 8).contains(&second.rows_inserted),
        "{} rows re-read",
        second.rows_inserted
    );
    let row = traces_row(&live, &db).await;
    assert_eq!(row.state(Timestamp::now()), RowState::Finished);
    assert_eq!(row.cursor, Some(t_ms(T0)));
    let (pg, ch) = counts(&live, &db, Timestamp::now()).await;
    assert_eq!((pg.traces, ch.traces), (20_000, 20_000));
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn a_killed_worker_shows_as_stalled_and_a_later_start_resumes() {
    let db = TestDb::new("sw_killed").await;
    let live = Live::default();
    db.insert_rows("traces", "t", 30_000, t_ms(T0), 5).await;
    db.pg_exec(&format!(
        "UPDATE background_migrations SET args = '{{\"batchSize\": 1000}}' WHERE name = '{TRACES}'"
    ))
    .await;
    let config = StandinConfig {
        batch_pause: Duration::from_millis(100),
        stale_after: Duration::from_secs(5),
        ..Default::default()
    };
    let worker = start(&db, config.clone()).await;
    eventually(RUN, "a few traces batches", || async {
        (worker.batches() >= 3).then_some(())
    })
    .await;
    let running = traces_row(&live, &db).await;
    assert_eq!(running.state(Timestamp::now()), RowState::Running);
    let killed = worker.kill().await;
    assert!(killed.killed && killed.picked.contains(&TRACES.to_string()));

    // The heartbeat (200 ms here, 15 s in 3.29.0) has stopped: the lock no longer moves.
    let at_kill = traces_row(&live, &db).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let later = traces_row(&live, &db).await;
    assert_eq!(later.locked_at, at_kill.locked_at, "no heartbeat after the kill");
    assert_eq!(later.cursor, at_kill.cursor, "no progress after the kill");
    assert!(later.finished_at.is_none() && later.failed_at.is_none());
    // By the operator's 60 s rule the row is stalled once the lock is a minute old.
    let locked = later.locked_at.expect("a killed worker leaves its lock");
    assert_eq!(later.state(locked + SignedDuration::from_secs(59)), RowState::Running);
    assert_eq!(later.state(locked + SignedDuration::from_secs(61)), RowState::Stalled);

    // A worker starting while the lock is fresh gives up for good (3.29.0 does not retry) ...
    let early = start(&db, config.clone()).await.wait(RUN).await;
    assert_eq!(early.gave_up_on_lock.as_deref(), Some(TRACES));
    assert!(early.picked.is_empty());
    // ... one started after the stale window (5 s here, 60 s in 3.29.0) resumes from the cursor.
    let stale_window = config.stale_after;
    tokio::time::sleep(stale_window).await;
    let resumed = start(&db, config).await.wait(RUN).await;
    assert_eq!(
        resumed.resumed_from.first(),
        Some(&(TRACES.to_string(), Some(iso(later.cursor.unwrap().as_millisecond()))))
    );
    let rows = rows(&live, &db).await;
    assert!(all_finished(&rows), "{rows:#?}");
    let (pg, ch) = counts(&live, &db, Timestamp::now()).await;
    assert_eq!((pg.traces, ch.traces), (30_000, 30_000));
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn late_writes_are_caught_and_rerun_within_their_window() {
    let db = TestDb::new("sw_late").await;
    let live = Live::default();
    db.insert_rows("traces", "t", 12_000, t_ms(T0), 100).await;
    db.insert_rows("observations", "o", 2_000, t_ms(T0), 100).await;
    // The migrations start (the worker restarts with them enabled) and finish.
    let start_cursor = now_ms();
    start(&db, StandinConfig::default()).await.wait(RUN).await;
    assert!(all_finished(&rows(&live, &db).await));

    // v2 was still writing after the start: 7 traces and 3 observations nobody copied.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let late_at = now_ms();
    db.insert_rows("traces", "late", 7, late_at, 1).await;
    db.insert_rows("observations", "late", 3, late_at, 1).await;
    let cutoff = late_at + SignedDuration::from_secs(1);
    let late = live
        .postgres(
            &db.pg_url,
            &PostgresQuery {
                late_writes_after: Some(LateWindow::uniform(start_cursor)),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .late_writes
        .unwrap();
    assert_eq!(
        late,
        TableCounts {
            traces: 7,
            observations: 3,
            scores: 0
        }
    );
    let (pg, ch) = counts(&live, &db, cutoff).await;
    assert_eq!((pg.traces - ch.traces, pg.observations - ch.observations), (7, 3));

    // Re-run each affected copy bounded to the window, then restart the worker.
    for (name, n) in [(TRACES, late.traces), (support::OBSERVATIONS, late.observations)] {
        live.remedy(
            &db.pg_url,
            &Remedy::RerunWindow {
                name: name.into(),
                max_date: cutoff,
                max_rows: n,
            },
        )
        .await
        .unwrap();
    }
    let rerun = start(&db, StandinConfig::default()).await.wait(RUN).await;
    assert_eq!(rerun.picked, [TRACES, support::OBSERVATIONS]);
    // Bounded: each re-run stops after its first batch (at most batchSize rows), instead of
    // walking all 12,000 traces again.
    assert!(rerun.rows_inserted <= 5_000 + 2_003, "{}", rerun.rows_inserted);
    assert!(all_finished(&rows(&live, &db).await));
    let (pg, ch) = counts(&live, &db, cutoff).await;
    assert_eq!(ch, pg);
    assert_eq!((pg.traces, pg.observations), (12_007, 2_003));
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn a_row_missing_from_clickhouse_makes_the_counts_differ() {
    let db = TestDb::new("sw_deleted").await;
    let live = Live::default();
    db.insert_rows("traces", "t", 1_000, t_ms(T0), 1000).await;
    db.insert_rows("scores", "s", 500, t_ms(T0), 1000).await;
    start(&db, StandinConfig::default()).await.wait(RUN).await;
    let now = Timestamp::now();
    let (pg, ch) = counts(&live, &db, now).await;
    assert_eq!(ch, pg);

    // A row lost on the ClickHouse side (a hard delete) ...
    db.ch_exec("ALTER TABLE traces DELETE WHERE id = 't-17' SETTINGS mutations_sync = 2")
        .await;
    // ... and one soft-deleted by a newer version.
    db.ch_exec(
        "INSERT INTO scores (id, project_id, trace_id, timestamp, name, value, data_type, source, created_at, updated_at, event_ts, is_deleted)
         SELECT id, project_id, trace_id, timestamp, name, value, data_type, source, created_at, updated_at,
                event_ts + INTERVAL 1 SECOND, 1 FROM scores FINAL WHERE id = 's-3'",
    )
    .await;
    let (pg, ch) = counts(&live, &db, now).await;
    assert_eq!((pg.traces - ch.traces, pg.scores - ch.scores), (1, 1));
    db.finish().await;
}
