//! The status screen and the timeline, rendered from fixed objects (`tests/cli/fixtures`,
//! written by the plan simulation: `make cli-fixtures`) and compared with committed text
//! (`tests/cli/expected`). `LFU_BLESS=1` rewrites the expected text after a deliberate change.

use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::history::{EventLine, history_text, timeline};
use super::render::{Style, status_text};
use super::view::status_view;
use crate::api::LangfuseUpgrade;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cli")
}

fn fixtures() -> Vec<(String, LangfuseUpgrade, Timestamp)> {
    let mut out: Vec<_> = std::fs::read_dir(root().join("fixtures"))
        .expect("tests/cli/fixtures")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let u: LangfuseUpgrade = serde_yaml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            let now: Timestamp = u.metadata.annotations.as_ref().unwrap()["lfu.test/now"]
                .parse()
                .unwrap();
            (p.file_stem().unwrap().to_string_lossy().to_string(), u, now)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn compare(name: &str, got: &str) {
    let path = root().join("expected").join(name);
    if std::env::var_os("LFU_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with LFU_BLESS=1 once and review it", path.display()));
    assert_eq!(got, want, "{name} differs from {}", path.display());
}

#[test]
fn every_fixture_renders_as_committed_on_a_terminal_and_in_a_pipe() {
    let all = fixtures();
    assert!(all.len() >= 17, "fixtures: {}", all.len());
    for (name, u, now) in &all {
        let view = status_view(u, *now);
        compare(
            &format!("{name}.plain.txt"),
            &status_text(&view, Style { terminal: false }),
        );
        compare(
            &format!("{name}.term.txt"),
            &status_text(&view, Style { terminal: true }),
        );
    }
}

#[test]
fn plain_text_has_no_escape_codes_and_the_terminal_has_colour_and_bars() {
    for (name, u, now) in fixtures() {
        let view = status_view(&u, now);
        let plain = status_text(&view, Style { terminal: false });
        assert!(!plain.contains('\x1b') && !plain.contains('█'), "{name}");
        let term = status_text(&view, Style { terminal: true });
        assert!(term.contains("\x1b["), "{name}");
    }
}

#[test]
fn the_screen_says_what_matters_in_each_state() {
    let all = fixtures();
    let plain = |n: &str| {
        let (_, u, now) = all
            .iter()
            .find(|(x, ..)| x == n)
            .unwrap_or_else(|| panic!("no fixture {n}"));
        status_text(&status_view(u, *now), Style { terminal: false })
    };
    let awaiting = plain("phase-awaitingpromotion");
    assert!(awaiting.contains("kubectl lfu -n langfuse approve to-v3"), "{awaiting}");
    assert!(plain("phase-paused").contains("resume to-v3"));
    let failed = plain("preflight-failed");
    assert!(failed.contains("FAIL backup"), "{failed}");
    let stuck = plain("migration-stuck");
    assert!(
        stuck.contains("stuck") && stuck.contains("UPDATE background_migrations"),
        "{stuck}"
    );
    let remedied = plain("migration-remedied");
    assert!(
        remedied.contains("remedies applied: stuck/20241024_1730_migrate_traces_from_pg_to_ch x2"),
        "{remedied}"
    );
    let reverted = plain("selector-reverted");
    assert!(
        reverted.contains("kubectl patch service prod-langfuse --type json"),
        "{reverted}"
    );
    let road = plain("phase-finalizing");
    assert!(
        road.contains("done 3.29.0 (beside v2") && road.contains("current 3.225.4 (in place"),
        "{road}"
    );
    let done = plain("phase-completed");
    assert!(done.contains("verification") || done.contains("Verification"));
    assert!(
        done.contains("Match") && done.contains("Rollback  not possible"),
        "{done}"
    );
    let back = plain("phase-rolledback");
    assert!(back.contains("rolled back to v2"), "{back}");
    let producers = plain("data-model-producers");
    assert!(
        producers.contains("historic data (done)  ->  events_only (now)")
            && producers.contains("python 2.60.3  pk-lf-1234  420 events"),
        "{producers}"
    );
    let reset = plain("data-model-backfill-reset");
    assert!(
        reset.contains("M3  failed") && reset.contains("1 resets") && reset.contains("propagation  cursor"),
        "{reset}"
    );
    let draining = plain("phase-draining");
    assert!(
        draining.contains("abort to-v3      roll back (asks first)"),
        "{draining}"
    );
    assert!(
        draining.contains("Rollback  possible: events v3 ingested since"),
        "{draining}"
    );
}

#[test]
fn migration_rate_and_eta_come_from_progress_since_the_start() {
    let (_, mut u, now) = fixtures()
        .into_iter()
        .find(|(n, ..)| n == "migration-remedied")
        .unwrap();
    let s = u.status.as_mut().unwrap();
    s.migrations_enabled_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::from_second(now.as_second() - 100).unwrap(),
    ));
    let m = &mut s.migrations[1];
    m.state = "running".into();
    m.progress_percent = Some(25);
    m.estimated_rows = Some(40_000);
    let view = status_view(&u, now);
    assert_eq!(view.migrations[1].rows_per_second, Some(100));
    assert_eq!(view.migrations[1].eta_seconds, Some(300));
}

#[test]
fn the_timeline_puts_facts_and_events_in_order() {
    let (_, u, _) = fixtures().into_iter().find(|(n, ..)| n == "phase-completed").unwrap();
    let s = u.status.clone().unwrap();
    let shifted = s.traffic_shifted_at.clone().unwrap().0;
    let events = vec![
        EventLine {
            at: shifted,
            warning: false,
            reason: "SelectorApplied".into(),
            note: "set the Service selector to ...".into(),
            count: 1,
        },
        EventLine {
            at: s.provisioning_started_at.clone().unwrap().0,
            warning: true,
            reason: "PreflightFailed".into(),
            note: "backup: take a Postgres backup".into(),
            count: 3,
        },
    ];
    let entries = timeline(&u, &events);
    let text = history_text(&entries, false);
    let order: Vec<&str> = [
        "preflight passed",
        "PreflightFailed",
        "traffic shifted to v3",
        "SelectorApplied",
        "completed",
    ]
    .into_iter()
    .collect();
    let mut at = 0;
    for word in order {
        let found = text[at..]
            .find(word)
            .unwrap_or_else(|| panic!("{word} out of order in:\n{text}"));
        at += found;
    }
    assert!(text.contains("(x3)"), "{text}");
    assert!(text.contains("hop 3.29.0 -> 3.225.4 finished"), "{text}");
}
