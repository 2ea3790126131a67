//! v4's data-model road against the real servers: the operator's reads (staging partitions,
//! producers, per-month counts, backfill rows, the propagation keys) through [`Live`], and the
//! v4 stand-in worker playing the dual write and rows M1-M5 on real PostgreSQL, ClickHouse and
//! Redis with production-shaped data.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use langfuse_upgrade_operator::data_model::counts::mismatches;
use langfuse_upgrade_operator::data_model::producers::incompatible;
use langfuse_upgrade_operator::data_model::progress::BackfillRow;
use langfuse_upgrade_operator::data_model::propagation::{Health, judge};
use langfuse_upgrade_operator::data_model::{CountWindow, EventsFacts, EventsQuery};
use langfuse_upgrade_operator::databases::{
    ClickHouseQuery, Databases, Live, PostgresQuery, RedisTarget, Remedy, SecretString,
};
use lfu_testkit::support::events_data::{Producer, ingest_direct, ingest_dual, reference_by_dataset_run, seed_history};
use lfu_testkit::support::v4_worker::{CURSOR_KEY, HEARTBEAT_KEY, V4Config, propagate_once, run_rows};
use lfu_testkit::support::{self, TestDb};

const PROJECT: &str = "proj-prod";
const ROWS: [&str; 5] = [
    "20260701_v4_step_1_create_root_spans_from_traces",
    "20260701_v4_step_2_rewrite_observations_to_pid_tid_sorting",
    "20260701_v4_step_3_backfill_events_full_from_observations",
    "20260701_v4_step_4_backfill_events_full_from_dataset_run_items",
    "20260701_v4_step_5_drop_pid_tid_sorting_tables",
];

/// A database 4.16.0 ran on: the catalog's rows registered (M1-M5 with their gates, unfinished;
/// every other row finished), its ClickHouse schema and events tables.
async fn v4_db(label: &str) -> TestDb {
    let db = TestDb::new(label).await;
    lfu_testkit::e2e_support::as_if_ran(&db, "4.16.0").await;
    db
}

async fn events(live: &Live, db: &TestDb, q: EventsQuery) -> EventsFacts {
    let facts = live
        .clickhouse(
            &db.ch,
            &ClickHouseQuery {
                events: q,
                ..Default::default()
            },
        )
        .await
        .expect("ClickHouse read");
    match facts.events {
        langfuse_upgrade_operator::reading::Reading::Answered(e) => e,
        other => panic!("the events read failed: {other:?}"),
    }
}

async fn backfill_rows(live: &Live, db: &TestDb) -> Vec<BackfillRow> {
    let q = PostgresQuery {
        backfill_rows: true,
        ..Default::default()
    };
    live.postgres(&db.pg_url, &q)
        .await
        .expect("Postgres read")
        .backfill_rows
        .expect("asked for")
}

fn redis_target() -> RedisTarget {
    RedisTarget {
        url: SecretString::new(support::env().redis_url.clone()),
    }
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(support::env().redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("test Redis")
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn the_dual_write_is_read_as_the_operator_judges_it_cursor_heartbeat_and_staging() {
    let db = v4_db("dm_dual").await;
    let live = Live::default();
    let mut conn = redis().await;
    let _: () = redis::cmd("DEL")
        .arg(CURSOR_KEY)
        .arg(HEARTBEAT_KEY)
        .query_async(&mut conn)
        .await
        .unwrap();
    let old = Producer {
        project: PROJECT,
        sdk: "python",
        version: "2.60.3",
        key: "pk-lf-old",
    };
    let now = Timestamp::now();
    // Two 3-minute partitions ten minutes apart, both older than a zero partition delay.
    ingest_dual(&db.ch_client, &old, "a", 20, now, now - SignedDuration::from_mins(13)).await;
    ingest_dual(&db.ch_client, &old, "b", 10, now, now - SignedDuration::from_mins(3)).await;
    let staged = events(
        &live,
        &db,
        EventsQuery {
            staging: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(staged.staging_partitions.len(), 2, "{:?}", staged.staging_partitions);
    let oldest = &staged.staging_partitions[0];
    assert!(
        now.duration_since(oldest.start).as_secs() >= 13 * 60 - 180,
        "{oldest:?}"
    );

    // No run yet: not started.
    let keys = live.propagation_keys(&redis_target()).await.expect("Redis read");
    let (_, health) = judge(&keys, &staged.staging_partitions, Duration::from_secs(600), now);
    assert_eq!(health, Health::NotStarted);

    // One run propagates the oldest partition and moves the cursor to it.
    let done = propagate_once(&db.ch_client, &mut conn, Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(done.as_deref(), Some(oldest.name.as_str()));
    let keys = live.propagation_keys(&redis_target()).await.expect("Redis read");
    assert_eq!(keys.cursor.as_deref(), Some(oldest.name.as_str()));
    let (status, health) = judge(
        &keys,
        &staged.staging_partitions,
        Duration::from_secs(600),
        Timestamp::now(),
    );
    assert_eq!(status.backlog, 1);
    assert_eq!(health, Health::Healthy);
    assert_eq!(
        db.ch_u64("SELECT count() FROM events_full FINAL WHERE source = 'ingestion-api-dual-write'")
            .await,
        60
    );
    // events_core is filled from events_full by its materialized view: the producer is seen.
    let seen = events(
        &live,
        &db,
        EventsQuery {
            producers_since: Some(now - SignedDuration::from_hours(1)),
            ..Default::default()
        },
    )
    .await;
    let bad = incompatible(seen.producers.as_deref().unwrap());
    assert_eq!(bad.len(), 1);
    assert_eq!(
        (bad[0].sdk_version.as_str(), bad[0].public_key.as_str(), bad[0].events),
        ("2.60.3", "pk-lf-old", 60)
    );

    // Frozen: the job starts (fresh heartbeat) and moves nothing; the lag grows with the clock.
    propagate_once(&db.ch_client, &mut conn, Duration::ZERO, true)
        .await
        .unwrap();
    let keys = live.propagation_keys(&redis_target()).await.unwrap();
    let later = Timestamp::now() + SignedDuration::from_mins(14);
    let (status, health) = judge(&keys, &staged.staging_partitions, Duration::from_secs(600), later);
    // The heartbeat is fresh, so the worker's own check says "not stuck"; the lag says otherwise.
    assert!(matches!(health, Health::Lagging { .. }), "{health:?} {status:?}");
    assert_eq!(status.cursor.as_deref(), Some(oldest.name.as_str()));
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn rows_m1_to_m5_make_the_counts_agree_a_failed_chunk_is_retried_and_the_reset_reruns_it() {
    let db = v4_db("dm_backfill").await;
    let live = Live::default();
    let now = Timestamp::now();
    // Two months of history, 200 traces with 4 observations each, 10 in a dataset run.
    seed_history(
        &db.ch_client,
        PROJECT,
        "h",
        200,
        4,
        now - SignedDuration::from_hours(24 * 45),
        now,
    )
    .await;
    reference_by_dataset_run(&db.ch_client, PROJECT, "h", 10).await;
    // Up to a minute ahead: the newest trace's later spans start after it.
    let window = CountWindow {
        from: None,
        until: Timestamp::now() + SignedDuration::from_mins(1),
    };
    let counts = || async {
        events(
            &live,
            &db,
            EventsQuery {
                counts: Some(window),
                ..Default::default()
            },
        )
        .await
        .counts
        .unwrap()
    };
    let before = counts().await;
    assert!(before.len() >= 2, "two months at least: {before:?}");
    assert_eq!(
        before.iter().map(|m| m.traces).sum::<u64>(),
        190,
        "DRI traces are left out"
    );
    assert_eq!(before.iter().map(|m| m.observations).sum::<u64>(), 760);
    assert_eq!(mismatches(&before, true).len(), before.len() * 2);

    // M3's first chunk fails 4 times: 3 retries, then the row fails with the script's hint.
    let config = V4Config {
        backfill: true,
        m3_chunk_failures: 4,
        ..Default::default()
    };
    let report = run_rows(&db.pool, &db.ch_client, &config).await.unwrap();
    assert_eq!(report.finished, ROWS[..2]);
    // M4 validates that M3 finished: it fails in turn.
    assert_eq!(report.failed, ROWS[2..4]);
    assert_eq!(report.chunk_retries, 3);
    let rows = backfill_rows(&live, &db).await;
    let m3 = rows[2].status(0);
    assert_eq!((m3.phase.as_str(), m3.failed_chunks, m3.retries), ("failed", 1, 3));
    assert!(m3.failed_reason.unwrap().contains("retryFailed"));
    assert_eq!(rows[0].status(0).phase, "finished");
    assert!(
        !mismatches(&counts().await, true).is_empty(),
        "children missing until M3 runs"
    );

    // The operator's remedy on the real rows, then the worker's next start: M3 and M4 finish.
    for name in &ROWS[2..4] {
        live.remedy(
            &db.pg_url,
            &Remedy::ResetBackfillRow {
                name: name.to_string(),
                reload_chunks: false,
            },
        )
        .await
        .unwrap();
    }
    let row = db.migration_row(ROWS[2]).await;
    assert_eq!(row["args"]["retryFailed"], true);
    let config = V4Config {
        backfill: true,
        m3_chunk_failures: 2,
        ..Default::default()
    };
    let report = run_rows(&db.pool, &db.ch_client, &config).await.unwrap();
    assert_eq!(report.finished, ROWS[2..4]);
    assert_eq!(report.chunk_retries, 2);
    let after = counts().await;
    assert!(mismatches(&after, true).is_empty(), "{after:?}");
    assert_eq!(after.iter().map(|m| m.root_spans).sum::<u64>(), 190);
    let rows = backfill_rows(&live, &db).await;
    assert!(rows[..4].iter().all(|r| r.finished()), "{rows:?}");
    assert_eq!(rows[3].status(0).done, 10, "M4 processed the dataset run items");

    // A direct v4 producer adds rows: more in events is fine, never fewer.
    let direct = Producer {
        project: PROJECT,
        sdk: "python",
        version: "4.7.1",
        key: "pk-lf-new",
    };
    ingest_direct(&db.ch_client, &direct, "d", 30, now - SignedDuration::from_hours(1)).await;
    assert!(mismatches(&counts().await, true).is_empty());

    // M5 on its own gate drops the scratch table.
    let scratch = "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'observations_pid_tid_sorting'";
    assert_eq!(db.ch_u64(scratch).await, 1);
    let report = run_rows(
        &db.pool,
        &db.ch_client,
        &V4Config {
            backfill: true,
            drop_scratch: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.finished, [ROWS[4]]);
    assert_eq!(db.ch_u64(scratch).await, 0);
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn a_late_observation_the_backfill_missed_is_a_mismatch_in_its_project_and_month() {
    let db = v4_db("dm_late").await;
    let live = Live::default();
    let now = Timestamp::now();
    seed_history(
        &db.ch_client,
        PROJECT,
        "h",
        50,
        3,
        now - SignedDuration::from_hours(24 * 10),
        now,
    )
    .await;
    seed_history(
        &db.ch_client,
        "proj-other",
        "x",
        20,
        2,
        now - SignedDuration::from_hours(24 * 10),
        now,
    )
    .await;
    let report = run_rows(
        &db.pool,
        &db.ch_client,
        &V4Config {
            backfill: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.finished.len(), 4);
    // Written into the old table after M2 read its partition, dated before the backfill began.
    seed_history(
        &db.ch_client,
        "proj-other",
        "late",
        1,
        1,
        now - SignedDuration::from_hours(48),
        now - SignedDuration::from_hours(47),
    )
    .await;
    let window = CountWindow {
        from: None,
        until: now + SignedDuration::from_mins(1),
    };
    let found = mismatches(
        &events(
            &live,
            &db,
            EventsQuery {
                counts: Some(window),
                ..Default::default()
            },
        )
        .await
        .counts
        .unwrap(),
        true,
    );
    let tables: Vec<&str> = found.iter().map(|m| m.table.as_str()).collect();
    assert_eq!(tables, ["traces", "observations"], "{found:?}");
    assert!(
        found.iter().all(|m| m.project == "proj-other" && m.old == m.events + 1),
        "{found:?}"
    );
    db.finish().await;
}
