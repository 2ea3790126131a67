//! Deleting an upgrade, an invalid spec, preflight failures and waivers.

use super::*;
use crate::controller::observed::Reading;

#[test]
fn deleting_an_unfinished_upgrade_rolls_back_then_lets_go() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    w.upgrade.metadata.deletion_timestamp = Some(time(w.now));
    for _ in 0..40 {
        let d = w.step();
        if d.actions.contains(&Action::RemoveFinalizer) {
            assert_eq!(selector_of(w.cluster.service.as_ref().unwrap()), chart_selector());
            assert!(w.cluster.web.is_none() && w.cluster.worker.is_none());
            return;
        }
    }
    panic!("finalizer never removed");
}

#[test]
fn deleting_a_completed_upgrade_touches_nothing() {
    let mut w = World::new(spec());
    w.run_until(Phase::Completed, 400);
    w.upgrade.metadata.deletion_timestamp = Some(time(w.now));
    let d = w.step();
    assert_eq!(d.actions, vec![Action::RemoveFinalizer]);
}

#[test]
fn deleting_after_retirement_releases_v3_instead_of_rolling_back() {
    let mut s = spec();
    s.target.final_version = Some("3.40.0".into());
    let mut w = World::new(s);
    w.run_until(Phase::Finalizing, 400);
    w.upgrade.metadata.deletion_timestamp = Some(time(w.now));
    let d = w.step();
    assert!(
        d.actions
            .iter()
            .all(|a| matches!(a, Action::ReleaseDeployment(_) | Action::RemoveFinalizer)),
        "{:?}",
        d.actions
    );
    assert!(d.actions.contains(&Action::RemoveFinalizer));
    assert!(w.cluster.web.as_ref().unwrap().metadata.owner_references.is_none());
}

#[test]
fn invalid_spec_is_reported_with_the_field_and_nothing_is_touched() {
    type Case = (&'static str, Box<dyn Fn(&mut LangfuseUpgradeSpec)>);
    let cases: Vec<Case> = vec![
        (
            "spec.strategy.drainPeriod",
            Box::new(|s| s.strategy.drain_period = "2 minutes".into()),
        ),
        ("spec.target.version", Box::new(|s| s.target.version = "2.95.9".into())),
        (
            "spec.target.finalVersion",
            Box::new(|s| s.target.final_version = Some("3.20.0".into())),
        ),
        (
            "spec.target.web.image",
            Box::new(|s| s.target.web.image = Some("langfuse/langfuse:3".into())),
        ),
        (
            "spec.target.finalVersion",
            Box::new(|s| s.target.final_version = Some("3.300.0".into())),
        ),
        (
            "spec.source.service",
            Box::new(|s| s.source.service = "other-ns/prod-langfuse".into()),
        ),
        (
            "spec.source.deployment",
            Box::new(|s| s.source.deployment = "Prod_Langfuse".into()),
        ),
        (
            "spec.source.container",
            Box::new(|s| s.source.container = Some("langfuse web".into())),
        ),
        (
            "spec.clickhouse.userSecretRef.name",
            Box::new(|s| s.clickhouse.user_secret_ref.name = "ns/langfuse-clickhouse".into()),
        ),
        ("spec.redis", Box::new(|s| s.redis.host = Some("redis".into()))),
        ("spec.s3", Box::new(|s| s.s3.secret_access_key_secret_ref = None)),
        (
            "spec.clickhouse.url",
            Box::new(|s| s.clickhouse.url = "clickhouse:8123".into()),
        ),
        (
            "spec.backup.hopBackups",
            Box::new(|s| {
                s.backup.hop_backups = vec![crate::api::HopBackup {
                    hop: "4.16.0".into(),
                    reference: "snap-1".into(),
                    taken_at: "yesterday".into(),
                }]
            }),
        ),
        (
            "spec.migrations.acceptCopyShortfall",
            Box::new(|s| s.migrations.accept_copy_shortfall = [("events".to_string(), 10)].into()),
        ),
        (
            "spec.target.extraEnv[0]",
            Box::new(|s| {
                s.target.extra_env = vec![k8s_openapi::api::core::v1::EnvVar {
                    name: MIGRATIONS_ENV.into(),
                    value: Some("true".into()),
                    value_from: None,
                }]
            }),
        ),
    ];
    for (field, mutate) in cases {
        let mut s = spec();
        mutate(&mut s);
        let mut w = World::new(s);
        let d = w.step();
        assert_eq!(d.phase, Phase::Pending, "{field}");
        assert!(
            d.actions.iter().all(|a| matches!(a, Action::AddFinalizer)),
            "{field}: {:?}",
            d.actions
        );
        let ready = condition(&w, c::READY);
        assert_eq!(ready.reason, "InvalidSpec", "{field}");
        assert!(
            ready.message.contains(field),
            "{field} not named in {:?}",
            ready.message
        );
        assert_eq!(condition(&w, c::STALLED).status, "True");
    }
}

#[test]
fn preflight_failures_block_with_nothing_created() {
    type Case = (&'static str, Box<dyn Fn(&mut World)>);
    let cases: Vec<Case> = vec![
        ("sourceDeployment", Box::new(|w| w.cluster.source = None)),
        (
            "sourceVersion",
            Box::new(|w| {
                w.cluster
                    .source
                    .as_mut()
                    .unwrap()
                    .spec
                    .as_mut()
                    .unwrap()
                    .template
                    .spec
                    .as_mut()
                    .unwrap()
                    .containers[0]
                    .image = Some("langfuse/langfuse:2.60.3".into())
            }),
        ),
        (
            "targetVersion",
            Box::new(|w| w.upgrade.spec.target.version = "3.30.0".into()),
        ),
        ("service", Box::new(|w| w.cluster.service = None)),
        (
            "secrets",
            Box::new(|w| w.cluster.missing_secret_keys = vec!["clickhouse/password".into()]),
        ),
        ("postgres", Box::new(|w| w.postgres_down = true)),
        ("backup", Box::new(|w| w.upgrade.spec.backup.acknowledged = false)),
        (
            "selectorIsolation",
            Box::new(|w| w.cluster.service = Some(v2_service(labels(&[("app", "web")])))),
        ),
    ];
    for (check, mutate) in cases {
        let mut w = World::new(spec());
        mutate(&mut w);
        for _ in 0..3 {
            let d = w.step();
            assert_eq!(d.phase, Phase::Blocked, "{check}");
            assert!(
                d.actions.iter().all(|a| matches!(a, Action::AddFinalizer)),
                "{check} wrote {:?}",
                d.actions
            );
        }
        let line = w
            .status()
            .checks
            .into_iter()
            .find(|l| l.name == check)
            .unwrap_or_else(|| panic!("no {check} line"));
        assert_eq!(line.result, CheckResult::Fail, "{check}");
        assert_eq!(condition(&w, c::PREFLIGHT_PASSED).reason, "PreflightFailed");
        assert!(condition(&w, c::READY).message.contains(check));
    }
}

#[test]
fn a_blocked_preflight_resumes_once_fixed() {
    let mut w = World::new(spec());
    w.upgrade.spec.backup.acknowledged = false;
    assert_eq!(w.step().phase, Phase::Blocked);
    w.upgrade.spec.backup.acknowledged = true;
    w.run_until(Phase::Completed, 400);
}

#[test]
fn waivers_skip_only_waivable_checks() {
    let mut w = World::new(spec());
    w.upgrade.spec.backup.acknowledged = false;
    w.upgrade.spec.preflight.skip = vec![WaivableCheck::Backup];
    let d = w.step();
    assert_eq!(d.phase, Phase::Provisioning);
    let line = w.status().checks.into_iter().find(|l| l.name == "backup").unwrap();
    assert_eq!(line.result, CheckResult::Skipped);
    assert!(line.message.contains("waived"));
}

#[test]
fn clickhouse_schema_past_3_29_blocks() {
    let mut w = World::new(spec());
    let obs = {
        let mut o = w.observe();
        o.clickhouse = Reading::Answered(ClickHouseFacts {
            version: Some("25.3.1".into()),
            schema: Some((9, false)),
            ..ClickHouseFacts::default()
        });
        o
    };
    let d = plan(&w.upgrade, &obs, t(0));
    assert_eq!(d.phase, Phase::Blocked);
    let line = d.status.checks.iter().find(|l| l.name == "clickhouse").unwrap();
    assert!(line.message.contains("crash-loop"));
    w.step();
}

/// `langfuse:3` on a database a v3 migrated: which release runs cannot be known (`:3` served a
/// v4 in September 2026), so preflight refuses, even with the version check waived, and names
/// the releases ClickHouse's height allows and how to pin one. On a v2 the warning stays.
#[test]
fn a_floating_tag_on_a_migrated_database_is_refused_with_the_releases_it_can_be() {
    for (tag, waived) in [("3", false), ("latest", true)] {
        let mut s = spec();
        if waived {
            s.preflight.skip.push(crate::api::WaivableCheck::SourceVersion);
        }
        let mut w = World::new(s);
        let pod = w
            .cluster
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
        pod.containers[0].image = Some(format!("ghcr.io/langfuse/langfuse:{tag}"));
        w.ch_height = 37;
        let d = w.run_until(Phase::Blocked, 3);
        let line = d.status.checks.iter().find(|l| l.name == "sourceVersion").unwrap();
        assert_eq!(line.result, CheckResult::Fail, "{tag}: {}", line.message);
        for words in [
            "height 37",
            "releases 3.223.0 up to, not including, 4.0.0",
            "set image deployment/prod-langfuse",
        ] {
            assert!(line.message.contains(words), "{tag}: {words}: {}", line.message);
        }
        assert!(w.cluster.web.is_none(), "{tag}: nothing provisioned");
    }
    // A v2 on a floating tag (no ClickHouse schema yet): a warning, as before.
    let mut w = World::new(spec());
    let pod = w
        .cluster
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
    pod.containers[0].image = Some("ghcr.io/langfuse/langfuse:2".into());
    w.ch_height = 0;
    w.step();
    let line = w
        .status()
        .checks
        .into_iter()
        .find(|l| l.name == "sourceVersion")
        .unwrap();
    assert_eq!(line.result, CheckResult::Warn, "{}", line.message);
}

#[test]
fn hpa_on_v2_is_reported_not_touched() {
    let mut w = World::new(spec());
    w.cluster.hpas_on_source = vec!["prod-langfuse".into()];
    w.step();
    let line = w
        .status()
        .checks
        .into_iter()
        .find(|l| l.name == "horizontalPodAutoscaler")
        .unwrap();
    assert_eq!(line.result, CheckResult::Warn);
    w.run_until(Phase::Completed, 400);
}
