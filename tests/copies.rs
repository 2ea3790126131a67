//! The copy check before a hop that drops the copies' source (v4.0.0 drops PostgreSQL traces,
//! observations, scores and dataset_run_items), on real PostgreSQL and the real ClickHouse
//! engine: both sides counted over the same window, `FINAL` and without deleted rows in
//! ClickHouse, rows older than the shortest data retention left out on both sides.

use lfu_testkit::support;

use jiff::{SignedDuration, Timestamp};
use langfuse_upgrade_operator::databases::{ClickHouseQuery, Databases, Live, PostgresQuery};
use langfuse_upgrade_operator::migrations::copies::{CopiedTable, CopySources, CopyWindow, SourceCount};
use support::{PROJECT, TestDb, t_ms};

const T0: i64 = 1_709_251_200_000; // 2024-03-01T00:00:00Z

async fn sources(live: &Live, db: &TestDb) -> CopySources {
    let query = PostgresQuery {
        copy_sources: CopiedTable::ALL.to_vec(),
        ..Default::default()
    };
    let facts = live
        .postgres(&db.pg_url, &query)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    facts.copy_sources.expect("asked for")
}

async fn clickhouse_counts(live: &Live, db: &TestDb, pg: &CopySources) -> Vec<(CopiedTable, i64)> {
    let query = ClickHouseQuery {
        copy_counts: pg
            .tables
            .iter()
            .filter_map(|s| {
                Some(CopyWindow {
                    table: s.table,
                    since: pg.since,
                    until: s.newest?,
                })
            })
            .collect(),
        ..Default::default()
    };
    let facts = live.clickhouse(&db.ch, &query).await.unwrap_or_else(|e| panic!("{e}"));
    facts.copy_counts.expect("asked for")
}

/// `n` rows copied into ClickHouse's table for `table`, created `step_ms` apart from `first`
/// (as the background migrations write them: same ids, same created_at).
async fn copied(db: &TestDb, table: CopiedTable, prefix: &str, n: u64, first: i64, step_ms: i64) {
    let at = format!("fromUnixTimestamp64Milli(toInt64({first} + number * {step_ms}))");
    let sql = match table {
        CopiedTable::Traces => format!(
            "INSERT INTO traces (id, project_id, timestamp, name, public, bookmarked, created_at, updated_at, event_ts, is_deleted) \
             SELECT concat('{prefix}-', toString(number)), '{PROJECT}', {at}, 'trace', false, false, {at}, {at}, {at}, 0 FROM numbers({n})"
        ),
        CopiedTable::Observations => format!(
            "INSERT INTO observations (id, trace_id, project_id, type, start_time, name, level, created_at, updated_at, event_ts, is_deleted) \
             SELECT concat('{prefix}-', toString(number)), 't', '{PROJECT}', 'GENERATION', {at}, 'g', 'DEFAULT', {at}, {at}, {at}, 0 FROM numbers({n})"
        ),
        CopiedTable::Scores => format!(
            "INSERT INTO scores (id, project_id, trace_id, timestamp, name, value, data_type, source, created_at, updated_at, event_ts, is_deleted) \
             SELECT concat('{prefix}-', toString(number)), '{PROJECT}', 't', {at}, 'q', 1, 'NUMERIC', 'API', {at}, {at}, {at}, 0 FROM numbers({n})"
        ),
        CopiedTable::DatasetRunItems => format!(
            "INSERT INTO dataset_run_items_rmt (id, project_id, dataset_run_id, dataset_item_id, dataset_id, trace_id, created_at, updated_at, event_ts, is_deleted) \
             SELECT concat('{prefix}-', toString(number)), '{PROJECT}', 'run', 'item', 'ds', 't', {at}, {at}, {at}, 0 FROM numbers({n})"
        ),
    };
    db.ch_exec(&sql).await;
}

fn rows(pg: &CopySources, table: CopiedTable) -> &SourceCount {
    pg.tables.iter().find(|s| s.table == table).expect("counted")
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn both_sides_are_counted_over_one_window_and_a_shortfall_shows() {
    let db = TestDb::new("copies").await;
    let live = Live::default();
    let sizes = [
        (CopiedTable::Traces, 1_000i64),
        (CopiedTable::Observations, 3_000),
        (CopiedTable::Scores, 500),
        (CopiedTable::DatasetRunItems, 200),
    ];
    for (table, n) in sizes {
        db.insert_rows(table.name(), "pg", n, t_ms(T0), 37).await;
        // A few thousand observations lost from ClickHouse; every other copy complete.
        let in_ch = if table == CopiedTable::Observations {
            n - 2_400
        } else {
            n
        };
        copied(&db, table, "pg", in_ch as u64, T0, 37).await;
    }
    // v3's own rows, written to ClickHouse after the copy's newest source row: not counted.
    copied(&db, CopiedTable::Observations, "v3", 5_000, T0 + 3_000 * 37 + 1_000, 11).await;
    // A deleted version in ClickHouse does not count.
    db.ch_exec(&format!(
        "INSERT INTO scores (id, project_id, trace_id, timestamp, name, value, data_type, source, created_at, updated_at, event_ts, is_deleted) \
         VALUES ('pg-0', '{PROJECT}', 't', fromUnixTimestamp64Milli(toInt64({T0})), 'q', 1, 'NUMERIC', 'API', fromUnixTimestamp64Milli(toInt64({T0})), fromUnixTimestamp64Milli(toInt64({T0})), fromUnixTimestamp64Milli(toInt64({})), 1)",
        T0 + 1
    ))
    .await;

    let pg = sources(&live, &db).await;
    assert_eq!(pg.since, None, "no project has a data retention");
    for (table, n) in sizes {
        let s = rows(&pg, table);
        assert_eq!(s.rows, n, "{table}");
        assert_eq!(s.newest, Some(t_ms(T0 + (n - 1) * 37)), "{table}");
    }
    let ch = clickhouse_counts(&live, &db, &pg).await;
    assert_eq!(
        ch,
        vec![
            (CopiedTable::Traces, 1_000),
            (CopiedTable::Observations, 600),
            (CopiedTable::Scores, 499),
            (CopiedTable::DatasetRunItems, 200),
        ]
    );
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn rows_older_than_the_shortest_retention_and_dropped_tables_are_left_out() {
    let db = TestDb::new("copies_retention").await;
    let live = Live::default();
    // A release without the column: no horizon.
    let pg = sources(&live, &db).await;
    assert_eq!(pg.since, None);
    db.pg_exec("ALTER TABLE projects ADD COLUMN retention_days INTEGER")
        .await;
    db.pg_exec(&format!(
        "UPDATE projects SET retention_days = 30 WHERE id = '{PROJECT}'"
    ))
    .await;
    let now = Timestamp::now();
    let old = now - SignedDuration::from_hours(24 * 90);
    let recent = now - SignedDuration::from_hours(24);
    db.insert_rows("traces", "old", 400, old, 10).await;
    db.insert_rows("traces", "recent", 70, recent, 10).await;
    // Retention already deleted the old rows from ClickHouse; the recent ones are there.
    copied(&db, CopiedTable::Traces, "recent", 70, recent.as_millisecond(), 10).await;
    // v4.0.0 already ran its drop of dataset_run_items: that table is left out.
    db.pg_exec("DROP TABLE dataset_run_items").await;
    let pg = sources(&live, &db).await;
    let since = pg.since.expect("a project keeps 30 days");
    // 30 days, less the two days of slack that keep retention out of the window meanwhile.
    let expected = now - SignedDuration::from_hours(24 * 28);
    assert!((since.as_second() - expected.as_second()).abs() < 60, "{since}");
    assert_eq!(rows(&pg, CopiedTable::Traces).rows, 70, "only rows inside the horizon");
    assert!(pg.tables.iter().all(|s| s.table != CopiedTable::DatasetRunItems));
    let ch = clickhouse_counts(&live, &db, &pg).await;
    assert_eq!(ch[0], (CopiedTable::Traces, 70));
    db.finish().await;
}
