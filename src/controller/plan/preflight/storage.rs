//! The database checks: Postgres and ClickHouse as v3 will find them.

use crate::api::{CheckId, CheckResult, WaivableCheck};
use crate::controller::observed::PostgresError;
use crate::migrations::{DEFAULT_BATCH_SIZE, PostgresFacts, V3_MIGRATIONS};
use crate::verify::SCHEMA_VERSION_3_29;

use super::MIN_SOURCE;
use super::{Ctx, Report};
use crate::controller::observed::Reading;

const MIN_POSTGRES_NUM: i64 = 120000;
const LISTED_POSTGRES: (i64, i64) = (14, 16);
const MIN_CLICKHOUSE: (u64, u64) = (24, 3);
/// 26.8 changed how numeric DateTime64 input is read, which 3.29.0 relies on.
const CLICKHOUSE_BREAKS_3_29: (u64, u64) = (26, 8);

/// Postgres: reachable, the four v3 rows, its version, the same-`created_at` scan.
pub(super) fn postgres(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { obs, .. } = *c;
    match &obs.postgres {
        Reading::NotAsked => r.line(CheckId::Postgres, Fail, "Postgres was not observed"),
        Reading::Failed(PostgresError::Settings(e)) => r.line(
            CheckId::Postgres,
            Fail,
            format!("Postgres connection settings missing: {e}"),
        ),
        Reading::Failed(PostgresError::Unreachable(e)) => {
            r.line(CheckId::Postgres, Fail, format!("Postgres unreachable: {e}"))
        }
        Reading::Answered(pg) => {
            let missing: Vec<&str> = V3_MIGRATIONS
                .iter()
                .copied()
                .filter(|n| !pg.migrations.iter().any(|m| m.name == *n))
                .collect();
            if missing.is_empty() {
                r.line(CheckId::Postgres, Pass, "background_migrations holds the four v3 rows");
            } else {
                r.line(CheckId::Postgres, Fail, format!("background_migrations lacks {}; only v2 >= {MIN_SOURCE}'s Prisma migrations insert them (upgrade v2, do not insert by hand)", missing.join(", ")));
            }
            postgres_version(r, pg.server_version_num);
            same_created_at(r, pg);
        }
    }
}

/// The Postgres major against what v3 runs on.
fn postgres_version(r: &mut Report, server_version_num: Option<i64>) {
    use CheckResult::*;
    match server_version_num {
        Some(n) if n < MIN_POSTGRES_NUM => r.waivable(
            WaivableCheck::PostgresVersion,
            Fail,
            format!("Postgres {} is older than 12", n / 10000),
        ),
        // The compatibility matrix users follow lists 14 to 16 for v3 (v4 needs 15+,
        // checked on the road).
        Some(n) if !(LISTED_POSTGRES.0..=LISTED_POSTGRES.1).contains(&(n / 10000)) => r.waivable(
            WaivableCheck::PostgresVersion,
            Warn,
            format!(
                "Postgres {}: outside {}-{}, the majors Langfuse v3's compatibility matrix lists",
                n / 10000,
                LISTED_POSTGRES.0,
                LISTED_POSTGRES.1
            ),
        ),
        Some(n) => r.waivable(WaivableCheck::PostgresVersion, Pass, format!("Postgres {}", n / 10000)),
        None => r.waivable(WaivableCheck::PostgresVersion, Warn, "server version unknown"),
    }
}

/// Groups of rows sharing one `created_at` that would stall 3.29.0's copies.
fn same_created_at(r: &mut Report, pg: &PostgresFacts) {
    use CheckResult::*;
    let groups: Vec<String> = pg
        .same_created_at_groups
        .iter()
        .map(|(t, n)| format!("{t}: {n} rows"))
        .collect();
    if groups.is_empty() {
        r.waivable(
            WaivableCheck::StuckCursorScan,
            Pass,
            format!("no {DEFAULT_BATCH_SIZE}+ rows share one created_at"),
        );
    } else {
        let largest = pg.same_created_at_groups.iter().map(|(_, n)| *n).max().unwrap_or(0);
        r.waivable(WaivableCheck::StuckCursorScan,
            Warn,
            format!("rows sharing one created_at ({}) would stall a {DEFAULT_BATCH_SIZE}-row batch; planned args.batchSize {}", groups.join(", "), largest + 1),
        );
    }
}

/// ClickHouse: reachable, its schema not past 3.29.0 nor dirty nor damaged, its version.
pub(super) fn clickhouse(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { obs, .. } = *c;
    match &obs.clickhouse {
        Reading::NotAsked => r.line(CheckId::Clickhouse, Fail, "ClickHouse was not observed"),
        Reading::Failed(e) => r.line(CheckId::Clickhouse, Fail, format!("ClickHouse unreachable: {e}")),
        Reading::Answered(ch) => {
            match ch.schema {
                Some((v, true)) => r.line(
                    CheckId::Clickhouse,
                    Fail,
                    crate::controller::plan::dirty::repair(
                        c.catalog,
                        v,
                        c.spec.clickhouse.cluster_enabled,
                    ),
                ),
                Some((v, _)) if v > SCHEMA_VERSION_3_29 => r.line(CheckId::Clickhouse,
                    Fail,
                    format!("schema_migrations is at {v}, past {SCHEMA_VERSION_3_29}: a newer v3 already migrated it and 3.29.0 would crash-loop"),
                ),
                Some((v, _)) if !ch.missing_tables.is_empty() => r.line(CheckId::Clickhouse,
                    Fail,
                    format!(
                        "schema_migrations is at {v} but table {} is missing: the schema is damaged; restore it before upgrading",
                        crate::controller::plan::reading::names(&ch.missing_tables)
                    ),
                ),
                Some((v, _)) => r.line(CheckId::Clickhouse, Pass, format!("schema_migrations at {v}, clean")),
                None => r.line(CheckId::Clickhouse, Pass, "empty: v3 web will create the schema"),
            }
            let parsed = ch.version.as_deref().and_then(|v| {
                let mut it = v.split('.');
                Some((it.next()?.parse::<u64>().ok()?, it.next()?.parse::<u64>().ok()?))
            });
            let (result, message) = match parsed {
                Some(v) if v < MIN_CLICKHOUSE => (
                    Fail,
                    format!(
                        "ClickHouse {} is older than 24.3",
                        ch.version.clone().unwrap_or_default()
                    ),
                ),
                Some(v) if v >= CLICKHOUSE_BREAKS_3_29 => (
                    Warn,
                    format!(
                        "ClickHouse {} reads numeric DateTime64 input differently (26.8+); pin 24.x-25.x for 3.29.0",
                        ch.version.clone().unwrap_or_default()
                    ),
                ),
                Some(_) => (Pass, format!("ClickHouse {}", ch.version.clone().unwrap_or_default())),
                None => (Warn, "ClickHouse version unknown".to_string()),
            };
            r.waivable(WaivableCheck::ClickHouseVersion, result, message);
            clickhouse_grants(r, c, &ch.grants);
        }
    }
}

/// The ClickHouse user holds what Langfuse's docs ask for on its database; if not, the GRANT
/// that fixes it (the user is named by its Secret, never printed).
fn clickhouse_grants(r: &mut Report, c: &Ctx, grants: &Reading<crate::verify::grants::Grants>) {
    use CheckResult::*;
    let database = c.spec.clickhouse.database.as_deref().unwrap_or("default");
    let (result, message) = match grants {
        Reading::NotAsked => return,
        Reading::Failed(e) => (
            Warn,
            format!(
                "could not read the ClickHouse user's grants ({e}); check by hand that it has SELECT, INSERT, ALTER, CREATE TABLE and ALTER DELETE on {database}.*"
            ),
        ),
        Reading::Answered(g) => match g.missing_on(database).as_slice() {
            [] => (
                Pass,
                format!("the ClickHouse user has SELECT, INSERT, ALTER, CREATE TABLE and ALTER DELETE on {database}.*"),
            ),
            missing => {
                let names: Vec<&str> = missing.iter().map(|n| n.grant_name()).collect();
                (
                    Fail,
                    format!(
                        "the ClickHouse user lacks {} on {database}.*, which Langfuse needs (migrations, ingestion, deletion): as an admin, GRANT {} ON {database}.* TO the user of spec.clickhouse's Secret",
                        names.join(", "),
                        names.join(", ")
                    ),
                )
            }
        },
    };
    r.waivable(WaivableCheck::ClickHouseGrants, result, message);
}
