//! The ClickHouse side of [`Live`] against the real ClickHouse engine (chdb behind
//! tests/db/chdb_http.py), on the v3.29.0 fixture tables: server version, the golang-migrate
//! ledger, and the `FINAL` verification counts.

use lfu_testkit::support;

use jiff::Timestamp;
use langfuse_upgrade_operator::databases::{ClickHouseConnection, ClickHouseQuery, Databases, Live, SecretString};
use langfuse_upgrade_operator::migrations::{Table, TableCounts};
use langfuse_upgrade_operator::verify::{ClickHouseFacts, SCHEMA_VERSION_3_29};
use support::{TestDb, t_ms};

const T0: i64 = 1_709_251_200_000; // 2024-03-01T00:00:00Z

async fn read(live: &Live, db: &TestDb, query: ClickHouseQuery) -> ClickHouseFacts {
    live.clickhouse(&db.ch, &query)
        .await
        .unwrap_or_else(|e| panic!("clickhouse read failed: {e}"))
}

async fn schema(live: &Live, db: &TestDb) -> Option<(i64, bool)> {
    read(
        live,
        db,
        ClickHouseQuery {
            server: true,
            ..Default::default()
        },
    )
    .await
    .schema
}

/// A ClickHouse DateTime64(3) literal for epoch milliseconds.
fn dt(ms: i64) -> String {
    format!("fromUnixTimestamp64Milli(toInt64({ms}))")
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn server_version_and_the_fixture_schema() {
    let db = TestDb::new("ch_version").await;
    let live = Live::default();
    let facts = read(
        &live,
        &db,
        ClickHouseQuery {
            server: true,
            objects: true,
            ..Default::default()
        },
    )
    .await;
    let version = facts.version.expect("version asked for");
    let major: u32 = version.split('.').next().unwrap().parse().unwrap();
    assert!(major >= 24, "{version}");
    assert_eq!(facts.schema, Some((SCHEMA_VERSION_3_29, false)));
    assert_eq!(facts.counts, None, "counts not asked for");
    // The test server's user is an admin: `SHOW GRANTS FINAL` read and nothing lacking on the
    // test's own database (an unparsed answer would lack everything).
    let grants = facts
        .grants
        .answered()
        .cloned()
        .expect("grants read with the server facts, and readable");
    let database = db.ch.database.clone().unwrap_or_else(|| "default".into());
    assert_eq!(grants.missing_on(&database), vec![]);
    // The test endpoint's knob: this database alone plays an older ClickHouse.
    lfu_testkit::e2e_support::report_clickhouse_version(&db, "25.3.6.56").await;
    let server = ClickHouseQuery {
        server: true,
        ..Default::default()
    };
    let older = read(&live, &db, server.clone()).await;
    assert_eq!(older.version.as_deref(), Some("25.3.6.56"));
    // A hop reads the server alone: no tables, no grants.
    assert_eq!(
        (!older.grants.is_asked(), older.missing_tables.is_empty()),
        (true, true)
    );
    let other = TestDb::new("ch_version_other").await;
    assert_eq!(read(&live, &other, server).await.version, Some(version));
    other.finish().await;
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn schema_version_follows_golang_migrate() {
    let db = TestDb::new("ch_schema").await;
    let live = Live::default();
    let seq = 1_740_139_200_000_000_000u64;
    // A newer v3 ran migration 9 (langfuse-k8s#109's trap).
    db.ch_exec(&format!(
        "INSERT INTO schema_migrations (version, dirty, sequence) VALUES (9, 1, {}), (9, 0, {})",
        seq + 1,
        seq + 2
    ))
    .await;
    assert_eq!(schema(&live, &db).await, Some((9, false)));
    // A failed migration leaves the newest row dirty.
    db.ch_exec(&format!(
        "INSERT INTO schema_migrations (version, dirty, sequence) VALUES (10, 1, {})",
        seq + 3
    ))
    .await;
    assert_eq!(schema(&live, &db).await, Some((10, true)));
    // golang-migrate reads the highest sequence, not the highest version (a forced down).
    db.ch_exec(&format!(
        "INSERT INTO schema_migrations (version, dirty, sequence) VALUES (8, 0, {})",
        seq + 4
    ))
    .await;
    assert_eq!(schema(&live, &db).await, Some((8, false)));
    // No ledger at all: no v3 has migrated this ClickHouse.
    db.ch_exec("DROP TABLE schema_migrations").await;
    assert_eq!(schema(&live, &db).await, None);
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn an_empty_database_has_no_schema_and_no_tables() {
    let db = TestDb::empty("ch_empty").await;
    let live = Live::default();
    assert_eq!(schema(&live, &db).await, None);
    // Counting is not attempted on tables that do not exist; which ones are missing is said.
    let facts = live
        .clickhouse(
            &db.ch,
            &ClickHouseQuery {
                counts_until: Some(Timestamp::now()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(facts.missing_tables, Table::ALL);
    assert_eq!(facts.counts, None);
    db.finish().await;

    // The tables are read with the grants (preflight's `objects`), not with the server facts.
    let db = TestDb::new("ch_tables").await;
    let facts = live
        .clickhouse(
            &db.ch,
            &ClickHouseQuery {
                objects: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(facts.missing_tables.is_empty(), "{:?}", facts.missing_tables);
    assert!(facts.grants.is_asked(), "grants read with the tables");
    db.ch_exec("DROP TABLE scores").await;
    let facts = live
        .clickhouse(
            &db.ch,
            &ClickHouseQuery {
                objects: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(facts.missing_tables, [Table::Scores]);
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn final_counts_honour_is_deleted_the_cutoff_and_replacements() {
    let db = TestDb::new("ch_counts").await;
    let live = Live::default();
    let cutoff = T0 + 10_000;
    // traces: a, b, c, e before or at the cut-off; d after it.
    //  - a is written twice (migrated copy, then a newer v3 version): one row;
    //  - b is soft-deleted by a newer version: not counted;
    //  - e sits exactly at the cut-off: counted.
    // Separate INSERTs land in separate parts; with merges stopped only FINAL merges them.
    let trace = |id: &str, created: i64, event: i64, deleted: u8| {
        format!(
            "INSERT INTO traces (id, project_id, timestamp, name, created_at, updated_at, event_ts, is_deleted) \
             VALUES ('{id}', 'p', {}, 'n', {}, {}, {}, {deleted})",
            dt(T0),
            dt(created),
            dt(created),
            dt(event)
        )
    };
    db.ch_exec("SYSTEM STOP MERGES traces").await;
    for sql in [
        trace("a", T0 + 1_000, T0 + 1_000, 0),
        trace("a", T0 + 1_000, T0 + 50_000, 0),
        trace("b", T0 + 2_000, T0 + 2_000, 0),
        trace("b", T0 + 2_000, T0 + 60_000, 1),
        trace("c", T0 + 3_000, T0 + 3_000, 0),
        trace("d", cutoff + 1, cutoff + 1, 0),
        trace("e", cutoff, cutoff, 0),
    ] {
        db.ch_exec(&sql).await;
    }
    // observations: two live, one deleted; scores: one live, one after the cut-off.
    let observation = |id: &str, created: i64, event: i64, deleted: u8| {
        format!(
            "INSERT INTO observations (id, trace_id, project_id, type, start_time, name, level, created_at, updated_at, event_ts, is_deleted) \
             VALUES ('{id}', 't', 'p', 'SPAN', {}, 'n', 'DEFAULT', {}, {}, {}, {deleted})",
            dt(T0),
            dt(created),
            dt(created),
            dt(event)
        )
    };
    for sql in [
        observation("o1", T0, T0, 0),
        observation("o2", T0 + 5, T0 + 5, 0),
        observation("o3", T0 + 6, T0 + 6, 0),
        observation("o3", T0 + 6, T0 + 7, 1),
    ] {
        db.ch_exec(&sql).await;
    }
    let score = |id: &str, created: i64| {
        format!(
            "INSERT INTO scores (id, project_id, trace_id, timestamp, name, value, data_type, source, created_at, updated_at, event_ts, is_deleted) \
             VALUES ('{id}', 'p', 't', {}, 'q', 1, 'NUMERIC', 'API', {}, {}, {}, 0)",
            dt(T0),
            dt(created),
            dt(created),
            dt(created)
        )
    };
    db.ch_exec(&score("s1", T0)).await;
    db.ch_exec(&score("s2", cutoff + 1_000)).await;

    // Without FINAL the duplicates would count: the raw table holds 7 trace versions.
    assert_eq!(db.ch_raw_count("traces").await, 7);
    let facts = read(
        &live,
        &db,
        ClickHouseQuery {
            counts_until: Some(t_ms(cutoff)),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        facts.counts,
        Some(TableCounts {
            traces: 3, // a, c, e
            observations: 2,
            scores: 1
        })
    );
    assert_eq!(
        (facts.version, facts.schema),
        (None, None),
        "server facts not asked for"
    );
    // Sub-millisecond cut-offs fall to the millisecond: d (cutoff + 1 ms) stays out.
    let just_after = t_ms(cutoff) + jiff::SignedDuration::from_micros(999);
    let counts = read(
        &live,
        &db,
        ClickHouseQuery {
            counts_until: Some(just_after),
            ..Default::default()
        },
    )
    .await
    .counts
    .unwrap();
    assert_eq!(counts.traces, 3);
    // A later cut-off takes d and s2 in.
    let counts = read(
        &live,
        &db,
        ClickHouseQuery {
            counts_until: Some(t_ms(cutoff + 1_000)),
            ..Default::default()
        },
    )
    .await
    .counts
    .unwrap();
    assert_eq!((counts.traces, counts.observations, counts.scores), (4, 2, 2));
    // The recent window (after T0 + 2 s, up to the cut-off), deduplicated as the whole: a and
    // b (deleted) before it, c and e in it; o1-o3 and s1 before it.
    let facts = read(
        &live,
        &db,
        ClickHouseQuery {
            counts_until: Some(t_ms(cutoff)),
            recent_after: Some(t_ms(T0 + 2_000)),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(facts.counts.map(|c| c.traces), Some(3));
    assert_eq!(
        facts.recent_counts,
        Some(TableCounts {
            traces: 2,
            observations: 0,
            scores: 0
        })
    );
    db.finish().await;
}

#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn errors_name_the_server_and_never_the_password() {
    let db = TestDb::new("ch_errors").await;
    let live = Live::default();
    let q = ClickHouseQuery {
        server: true,
        ..Default::default()
    };
    let password = db.ch.password.expose().to_string();
    let wrong = ClickHouseConnection {
        password: SecretString::new(format!("{password}x")),
        ..db.ch.clone()
    };
    let err = live.clickhouse(&wrong, &q).await.unwrap_err().to_string();
    eprintln!("error message: {err}");
    assert!(!err.contains(&password), "password leaked: {err}");
    assert!(err.contains(&db.ch.url), "{err}");
    let closed = ClickHouseConnection {
        url: "http://127.0.0.1:9".into(),
        ..db.ch.clone()
    };
    let err = live.clickhouse(&closed, &q).await.unwrap_err().to_string();
    eprintln!("error message: {err}");
    assert!(!err.contains(&password), "password leaked: {err}");
    assert!(err.contains("127.0.0.1:9") && err.contains("cannot reach"), "{err}");
    // Credentials inside the URL never show either.
    let in_url = ClickHouseConnection {
        url: format!("http://lf:{password}@127.0.0.1:9"),
        ..db.ch.clone()
    };
    let err = live.clickhouse(&in_url, &q).await.unwrap_err().to_string();
    assert!(!err.contains(&password), "password leaked: {err}");
    db.finish().await;
}

/// What v4 needs beyond its database, read as Langfuse will: the time zone, each system table
/// tried as the user (a refused one named, the others not), the grants, and the disk figures.
#[tokio::test]
#[ignore = "needs the test databases: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn what_v4_needs_of_the_server_is_read_as_the_user() {
    let db = TestDb::new("ch_v4_readiness").await;
    let live = Live::default();
    let query = ClickHouseQuery {
        v4_readiness: true,
        ..Default::default()
    };
    // Ten thousand observations, so their parts take room on disk.
    db.ch_exec(&format!(
        "INSERT INTO observations (id, trace_id, project_id, type, start_time, name, level, created_at, updated_at, event_ts, is_deleted) \
         SELECT toString(number), 't', 'p', 'SPAN', {at}, 'n', 'DEFAULT', {at}, {at}, {at}, 0 FROM numbers(10000)",
        at = dt(T0)
    ))
    .await;
    let facts = read(&live, &db, query.clone()).await;
    let r = facts
        .v4
        .answered()
        .cloned()
        .unwrap_or_else(|| panic!("read: {:?}", facts.v4));
    assert!(!r.timezone.is_empty());
    assert_eq!(
        r.denied_tables,
        Vec::<String>::new(),
        "an admin reads every system table"
    );
    assert!(r.grants.gives_on(&["CLUSTER"], None, None), "the admin holds ALL");
    assert!(r.free_bytes.is_some_and(|f| f > 0), "{:?}", r.free_bytes);
    // The observations are on disk: their parts are counted.
    assert!(
        r.observations_bytes.is_some_and(|b| b > 0),
        "{:?}",
        r.observations_bytes
    );
    // A user without two of the grants: exactly those two named, the read still answers.
    lfu_testkit::e2e_support::deny_system_tables(&db, &["parts", "query_log"]).await;
    let denied = read(&live, &db, query).await.v4.answered().cloned().expect("read");
    assert_eq!(denied.denied_tables, vec!["parts".to_string(), "query_log".to_string()]);
    // Not asked: not read.
    let plain = read(
        &live,
        &db,
        ClickHouseQuery {
            server: true,
            ..Default::default()
        },
    )
    .await;
    assert!(!plain.v4.is_asked());
}
