use super::*;
use crate::api::{CheckResult, MigrationStatus, PreflightCheck};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

fn status(phase: Phase, reason: &str, progress: i32) -> LangfuseUpgradeStatus {
    LangfuseUpgradeStatus {
        phase: Some(phase),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: reason.into(),
            message: "m".into(),
            observed_generation: Some(1),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        }],
        checks: vec![PreflightCheck {
            name: "backup".into(),
            result: CheckResult::Pass,
            message: "ok".into(),
        }],
        migrations: vec![MigrationStatus {
            name: "20241024_1730_migrate_traces_from_pg_to_ch".into(),
            state: "running".into(),
            cursor: None,
            progress_percent: Some(progress),
            failed_reason: None,
            cursor_since: None,
            batch_size: None,
            start_cursor: None,
            estimated_rows: Some(1_000_000),
        }],
        ..Default::default()
    }
}

fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn status_becomes_series_and_stale_ones_go() {
    let m = Metrics::new();
    let t0 = Instant::now();
    m.observe_status("ns", "u", &status(Phase::Migrating, "Migrating", 10), t0);
    m.observe_status(
        "ns",
        "u",
        &status(Phase::Migrating, "Migrating", 20),
        t0 + Duration::from_secs(10),
    );
    let text = m.render();
    assert_eq!(
        sample(&text, r#"lfu_upgrade_phase{namespace="ns",name="u",phase="Migrating"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"lfu_upgrade_phase{namespace="ns",name="u",phase="Completed"}"#),
        Some(0.0)
    );
    let labels = r#"{namespace="ns",name="u",migration="20241024_1730_migrate_traces_from_pg_to_ch"}"#;
    assert_eq!(
        sample(&text, &format!("lfu_migration_progress_ratio{labels}")),
        Some(0.2)
    );
    // 10 % of a million rows in 10 s: 10 000 rows/s, 800 000 rows left: 80 s.
    assert_eq!(
        sample(&text, &format!("lfu_migration_rows_per_second{labels}")),
        Some(10_000.0)
    );
    assert_eq!(sample(&text, &format!("lfu_migration_eta_seconds{labels}")), Some(80.0));
    assert!(text.contains(
        r#"lfu_upgrade_condition{namespace="ns",name="u",type="Ready",status="False",reason="Migrating"} 1"#
    ));
    assert!(text.contains(r#"lfu_preflight_check{namespace="ns",name="u",check="backup",result="Pass"} 1"#));

    // A new reason replaces the old series instead of adding to it.
    m.observe_status(
        "ns",
        "u",
        &status(Phase::Failed, "MigrationFailed", 20),
        t0 + Duration::from_secs(20),
    );
    let text = m.render();
    assert!(!text.contains(r#"reason="Migrating""#));
    assert!(text.contains(r#"reason="MigrationFailed"} 1"#));

    m.forget("ns", "u");
    let text = m.render();
    assert!(!text.contains(r#"name="u""#), "{text}");
}

#[test]
fn reconciles_failures_and_remedies_are_counted() {
    let m = Metrics::new();
    m.reconciled(Duration::from_millis(12));
    m.failed("database");
    let executed = [
        Remedy::SetBatchSize {
            name: "x".into(),
            size: 2500,
        },
        Remedy::ClearFailure { name: "x".into() },
    ];
    m.remedies_applied("ns", "u", &executed, 1, 2);
    let text = m.render();
    assert_eq!(sample(&text, "lfu_reconciles_total"), Some(2.0));
    assert_eq!(
        sample(&text, r#"lfu_reconcile_failures_total{kind="database"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&text, "lfu_reconcile_duration_seconds_count"), Some(1.0));
    for remedy in ["batchSize", "clearFailure", "workerRestart"] {
        assert_eq!(
            sample(
                &text,
                &format!(r#"lfu_remedies_total{{namespace="ns",name="u",remedy="{remedy}"}}"#)
            ),
            Some(1.0),
            "{remedy}"
        );
    }
    assert!(text.trim_end().ends_with("# EOF"));
}
