//! Benchmark (measured, not asserted): what the data-model road's ClickHouse reads cost as the
//! old tables grow, and how long the stand-in's backfill rows take to copy them.
//!
//!   benches/run-db-bench.sh                 # starts the test servers, runs both benches, stops them
//!   LFU_TEST_DB_ENV=/tmp/lfu-db/env cargo bench --bench data_model_counts
//!
//! Knob: LFU_BENCH_DM_ROWS (observations, comma-separated; default "100000,10000000"; four per
//! trace, over 90 days, 1% of the traces in dataset runs). Per size: the load, rows M1-M4 of
//! the stand-in (what `events_full` then holds), and the median of 3 of: the cutover's counts
//! per project and month (`COUNTS_SQL`, both sides `FINAL`), the producers in `events_core`
//! over a day, the staging partitions. Last, a Markdown table with the date and commit.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use langfuse_upgrade_operator::data_model::{CountWindow, EventsQuery};
use langfuse_upgrade_operator::databases::{ClickHouseQuery, Databases, Live};
use lfu_testkit::support::events_data::{reference_by_dataset_run, seed_history};
use lfu_testkit::support::v4_worker::{V4Config, run_rows};
use lfu_testkit::support::{self, TestDb};

struct Row {
    observations: u64,
    load: Duration,
    backfill: Duration,
    events_rows: u64,
    counts: Duration,
    producers: Duration,
    staging: Duration,
}

fn main() {
    let sizes: Vec<u64> = std::env::var("LFU_BENCH_DM_ROWS")
        .unwrap_or_else(|_| "100000,10000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("LFU_BENCH_DM_ROWS: comma-separated counts"))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut rows = Vec::new();
        for n in sizes {
            rows.push(size(n).await);
        }
        let commit = std::env::var("LFU_BENCH_COMMIT").unwrap_or_else(|_| "unknown".into());
        println!(
            "\n| observations | load | rows M1-M4 | events_full rows | counts (p50 of 3) | producers | staging |  \n|---|---|---|---|---|---|---|"
        );
        for r in &rows {
            println!(
                "| {} | {:.1} s | {:.1} s | {} | {:.0} ms | {:.0} ms | {:.0} ms |",
                r.observations,
                r.load.as_secs_f64(),
                r.backfill.as_secs_f64(),
                r.events_rows,
                r.counts.as_secs_f64() * 1e3,
                r.producers.as_secs_f64() * 1e3,
                r.staging.as_secs_f64() * 1e3
            );
        }
        println!("\n{} at {commit}, test ClickHouse (chdb) on this machine", Timestamp::now());
    });
}

async fn size(observations: u64) -> Row {
    let db = TestDb::new(&format!("bench_dm_{observations}")).await;
    // As 4.16.0 left it: M1-M5 registered with their gates, the events tables created.
    lfu_testkit::e2e_support::as_if_ran(&db, "4.16.0").await;
    let now = Timestamp::now();
    let traces = observations / 4;
    let started = Instant::now();
    seed_history(
        &db.ch_client,
        "proj-prod",
        "h",
        traces,
        4,
        now - SignedDuration::from_hours(24 * 90),
        now,
    )
    .await;
    reference_by_dataset_run(&db.ch_client, "proj-prod", "h", traces / 100).await;
    let load = started.elapsed();
    let started = Instant::now();
    let report = run_rows(
        &db.pool,
        &db.ch_client,
        &V4Config {
            backfill: true,
            ..Default::default()
        },
    )
    .await
    .expect("the stand-in's backfill");
    assert_eq!(report.finished.len(), 4, "M1-M4: {report:?}");
    let backfill = started.elapsed();
    let events_rows = db.ch_raw_count("events_full").await;
    let live = Live::default();
    let time = |q: EventsQuery| {
        let (live, db) = (&live, &db);
        async move {
            let mut samples = Vec::new();
            for _ in 0..3 {
                let started = Instant::now();
                let facts = live
                    .clickhouse(
                        &db.ch,
                        &ClickHouseQuery {
                            events: q.clone(),
                            ..Default::default()
                        },
                    )
                    .await
                    .expect("ClickHouse read");
                assert!(facts.events.answered().is_some(), "{:?}", facts.events);
                samples.push(started.elapsed());
            }
            samples.sort();
            samples[1]
        }
    };
    let counts = time(EventsQuery {
        counts: Some(CountWindow { from: None, until: now }),
        ..Default::default()
    })
    .await;
    let producers = time(EventsQuery {
        producers_since: Some(now - SignedDuration::from_hours(24)),
        ..Default::default()
    })
    .await;
    let staging = time(EventsQuery {
        staging: true,
        ..Default::default()
    })
    .await;
    eprintln!("{observations} observations: load {load:?}, M1-M4 {backfill:?}, counts {counts:?}");
    db.finish().await;
    let _ = support::env();
    Row {
        observations,
        load,
        backfill,
        events_rows,
        counts,
        producers,
        staging,
    }
}
