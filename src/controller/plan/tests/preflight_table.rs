//! Each preflight check as a table.

use super::*;
use crate::controller::observed::Reading;

/// One row per preflight finding: a change to the spec or the observation, and the line it
/// must produce (check, result, words of the message). Every other line stays as it was.
#[test]
fn each_preflight_check_as_a_table() {
    use crate::api::CheckResult::{Fail, Pass, Skipped, Warn};
    use crate::databases::{RedisFacts, RedisProblem, S3Problem};
    use crate::verify::grants::Grants;
    type Change = fn(&mut LangfuseUpgradeSpec, &mut Observed);
    fn v2_image(o: &mut Observed, image: &str) {
        let pod = o
            .source
            .as_mut()
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap();
        pod.containers[0].image = Some(image.into());
    }
    fn pg(o: &mut Observed) -> &mut PostgresFacts {
        o.postgres.answered_mut().unwrap()
    }
    fn ch(o: &mut Observed) -> &mut ClickHouseFacts {
        o.clickhouse.answered_mut().unwrap()
    }
    let cases: Vec<(&str, Change, &str, CheckResult, &str)> = vec![
        (
            "parallel target",
            |s, _| s.target.version = "3.30.0".into(),
            "targetVersion",
            Fail,
            "only 3.29.0",
        ),
        ("no v2", |_, o| o.source = None, "sourceDeployment", Fail, "not found"),
        (
            "old v2",
            |_, o| v2_image(o, "ghcr.io/langfuse/langfuse:2.60.3"),
            "sourceVersion",
            Fail,
            "upgrade v2 to 2.92.0",
        ),
        (
            "floating tag",
            |_, o| v2_image(o, "ghcr.io/langfuse/langfuse:2"),
            "sourceVersion",
            Warn,
            "does not pin",
        ),
        (
            "unknown registry",
            |_, o| v2_image(o, "registry.corp/obs/tracing:2.95.9"),
            "images",
            Warn,
            "Docker Hub",
        ),
        (
            "no selector",
            |_, o| o.service = Some(v2_service(Default::default())),
            "service",
            Fail,
            "no selector",
        ),
        (
            "missing key",
            |_, o| o.missing_secret_keys = vec!["langfuse-redis/url".into()],
            "secrets",
            Fail,
            "langfuse-redis/url",
        ),
        (
            "cluster mode",
            |s, _| s.clickhouse.cluster_enabled = true,
            "clusterMode",
            Pass,
            "=true",
        ),
        (
            "no database settings",
            |_, o| {
                o.postgres = Reading::Failed(crate::controller::observed::PostgresError::Settings(
                    "DATABASE_HOST".into(),
                ))
            },
            "postgres",
            Fail,
            "connection settings missing: DATABASE_HOST",
        ),
        (
            "old Postgres",
            |_, o| pg(o).server_version_num = Some(110_000),
            "postgresVersion",
            Fail,
            "older than 12",
        ),
        (
            "shared created_at",
            |_, o| pg(o).same_created_at_groups = vec![(crate::migrations::Table::Traces, 12_000)],
            "stuckCursorScan",
            Warn,
            "planned args.batchSize 12001",
        ),
        (
            "dirty schema",
            |_, o| ch(o).schema = Some((8, true)),
            "clickhouse",
            Fail,
            "dirty",
        ),
        (
            "newer schema",
            |_, o| ch(o).schema = Some((37, false)),
            "clickhouse",
            Fail,
            "past 8",
        ),
        (
            "old ClickHouse",
            |_, o| ch(o).version = Some("23.8.1".into()),
            "clickhouseVersion",
            Fail,
            "older than 24.3",
        ),
        (
            "ClickHouse 26.9",
            |_, o| ch(o).version = Some("26.9.1".into()),
            "clickhouseVersion",
            Warn,
            "26.8+",
        ),
        (
            "Postgres 13",
            |_, o| pg(o).server_version_num = Some(130_012),
            "postgresVersion",
            Warn,
            "outside 14-16",
        ),
        (
            "wrong Redis password",
            |s, o| {
                s.redis.connection_string_secret_ref = None;
                s.redis.host = Some("redis".into());
                s.redis.auth_secret_ref = Some(crate::testing::secret_ref("redis", "auth"));
                o.redis = Reading::Failed(RedisProblem::Auth {
                    target: "redis:6379".into(),
                    detail: "wrong user or password".into(),
                })
            },
            "redis",
            Fail,
            "spec.redis.authSecretRef",
        ),
        (
            "Redis host unreachable",
            |_, o| {
                // spec() names a connection string: its Secret is what to fix.
                o.redis = Reading::Failed(RedisProblem::Unreachable {
                    target: "redis:6379".into(),
                    detail: "connection refused".into(),
                })
            },
            "redis",
            Fail,
            "host and port in the Secret of spec.redis.connectionStringSecretRef",
        ),
        (
            "Redis 6.2",
            |_, o| {
                o.redis = Reading::Answered(RedisFacts {
                    version: "6.2.14".into(),
                    tls: false,
                    eviction_policy: Some("noeviction".into()),
                })
            },
            "redis",
            Fail,
            "older than 7.0",
        ),
        (
            "a Redis that evicts keys",
            |_, o| {
                o.redis = Reading::Answered(RedisFacts {
                    version: "7.2.4".into(),
                    tls: false,
                    eviction_policy: Some("allkeys-lru".into()),
                })
            },
            "redis",
            Fail,
            "maxmemory-policy allkeys-lru: Langfuse needs noeviction",
        ),
        (
            "Redis 8.0",
            |_, o| {
                o.redis = Reading::Answered(RedisFacts {
                    version: "8.0.2".into(),
                    tls: true,
                    eviction_policy: Some("noeviction".into()),
                })
            },
            "redis",
            Warn,
            "newer than 7.4",
        ),
        (
            "a ClickHouse user that may only read",
            |_, o| ch(o).grants = Reading::Answered(Grants::parse(&["GRANT SELECT ON default.* TO ro".into()])),
            "clickhouseGrants",
            Fail,
            "lacks INSERT, ALTER, CREATE TABLE, ALTER DELETE on default.*",
        ),
        (
            "grants on another database than spec.clickhouse.database",
            |s, o| {
                s.clickhouse.database = Some("langfuse".into());
                ch(o).grants = Reading::Answered(Grants::parse(&["GRANT ALL ON default.* TO lf".into()]));
            },
            "clickhouseGrants",
            Fail,
            "GRANT SELECT, INSERT, ALTER, CREATE TABLE, ALTER DELETE ON langfuse.*",
        ),
        (
            "grants unreadable",
            |_, o| ch(o).grants = Reading::Failed("reading the ClickHouse user's grants: Code: 62".into()),
            "clickhouseGrants",
            Warn,
            "check by hand",
        ),
        (
            "grants lacking, waived",
            |s, o| {
                s.preflight.skip = vec![WaivableCheck::ClickHouseGrants];
                ch(o).grants = Reading::Answered(Grants::default());
            },
            "clickhouseGrants",
            Skipped,
            "waived",
        ),
        (
            "Redis unreachable, waived",
            |s, o| {
                s.preflight.skip = vec![WaivableCheck::Redis];
                o.redis = Reading::Failed(RedisProblem::Unreachable {
                    target: "redis:6379".into(),
                    detail: "timed out".into(),
                })
            },
            "redis",
            Skipped,
            "waived",
        ),
        (
            "no bucket",
            |_, o| {
                o.s3 = Reading::Failed(S3Problem::NoSuchBucket {
                    bucket: "langfuse-events".into(),
                    endpoint: "http://s3".into(),
                })
            },
            "s3",
            Fail,
            "create the bucket or fix spec.s3.bucket",
        ),
        (
            "read-only key",
            |_, o| {
                o.s3 = Reading::Failed(S3Problem::Denied {
                    bucket: "langfuse-events".into(),
                    prefix: "events/".into(),
                    action: "write",
                    code: "AccessDenied".into(),
                })
            },
            "s3",
            Fail,
            "s3:PutObject",
        ),
        (
            "ambient identity",
            |s, o| {
                s.s3.access_key_id_secret_ref = None;
                s.s3.secret_access_key_secret_ref = None;
                o.s3 = Reading::NotAsked;
            },
            "s3",
            Warn,
            "ambient identity",
        ),
        (
            "HPA on v2",
            |_, o| o.hpas_on_source = vec!["prod-langfuse".into()],
            "horizontalPodAutoscaler",
            Warn,
            "prod-langfuse",
        ),
        (
            "no backup",
            |s, _| s.backup.acknowledged = false,
            "backup",
            Fail,
            "spec.backup.acknowledged",
        ),
        (
            "backup waived",
            |s, _| {
                s.backup.acknowledged = false;
                s.preflight.skip = vec![WaivableCheck::Backup];
            },
            "backup",
            Skipped,
            "waived",
        ),
    ];
    let baseline = preflight_checks(UPGRADE, &spec(), &untouched(), &crate::catalog::Catalog::builtin());
    assert!(baseline.iter().all(|c| c.result == Pass), "{baseline:#?}");
    for (what, change, check, result, words) in cases {
        let (mut s, mut o) = (spec(), untouched());
        change(&mut s, &mut o);
        let lines = preflight_checks(UPGRADE, &s, &o, &crate::catalog::Catalog::builtin());
        let line = lines
            .iter()
            .find(|c| c.name == check)
            .unwrap_or_else(|| panic!("{what}: no {check} line in {lines:#?}"));
        assert_eq!(line.result, result, "{what}: {}", line.message);
        assert!(line.message.contains(words), "{what}: {:?}", line.message);
    }
}
