//! Status of the road, the catalog limits, the CLI fixtures, Events.

use super::*;

#[test]
fn status_shows_the_road_stop_by_stop() {
    use crate::api::{StopMode, StopState};
    let mut s = spec();
    s.target.final_version = Some("3.40.0".into());
    let mut w = World::new(s);
    let road = |w: &World| {
        w.status()
            .road
            .iter()
            .map(|r| (r.version.clone(), r.mode, r.state))
            .collect::<Vec<_>>()
    };
    w.run_until(Phase::Draining, 40);
    assert_eq!(
        road(&w),
        [
            ("3.29.0".into(), StopMode::BesideV2, StopState::Current),
            ("3.40.0".into(), StopMode::InPlace, StopState::Next)
        ]
    );
    assert!(
        w.status().road[0]
            .required_because
            .as_deref()
            .unwrap()
            .contains("beside v2")
    );
    w.run_until(Phase::Finalizing, 400);
    assert_eq!(road(&w)[0].2, StopState::Done);
    assert_eq!(road(&w)[1].2, StopState::Current);
    w.run_until(Phase::Completed, 400);
    assert!(road(&w).iter().all(|(.., state)| *state == StopState::Done));
    // Aborted mid-way: the stops not reached are marked rolled back.
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    w.upgrade.spec.abort = true;
    w.run_until(Phase::RolledBack, 100);
    assert_eq!(road(&w), [("3.29.0".into(), StopMode::BesideV2, StopState::RolledBack)]);
}

#[test]
fn a_final_version_newer_than_the_catalog_is_refused_unless_accepted() {
    let mut s = spec();
    s.target.final_version = Some("3.300.0".into());
    let mut w = World::new(s.clone());
    let d = w.step();
    assert_eq!(d.phase, Phase::Pending);
    let ready = condition(&w, c::READY);
    assert!(ready.message.contains("catalog/langfuse.yaml"), "{}", ready.message);
    assert!(ready.message.contains("acceptUnknownRelease"), "{}", ready.message);
    s.target.accept_unknown_release = true;
    let mut w = World::new(s);
    assert_ne!(w.step().phase, Phase::Pending);
}

#[test]
fn an_impossible_object_name_reads_nothing() {
    let mut s = spec();
    s.source.service = "other-ns/prod-langfuse".into();
    let u = upgrade(s, Default::default());
    let n = needs(&u, t(0));
    assert!(n.nothing && n.postgres.is_empty() && n.clickhouse.is_empty() && !n.secrets);
    assert!(!needs(&upgrade(spec(), Default::default()), t(0)).nothing);
}

/// Writes `tests/cli/fixtures/*.yaml`: the object, status included, at each phase of the
/// simulated upgrades above (the `kubectl lfu` rendering tests read them). A generator, not a
/// check: `make cli-fixtures` runs it; the fixtures are committed and reviewed as text.
#[test]
#[ignore = "writes tests/cli/fixtures: run `make cli-fixtures`"]
fn generate_cli_fixtures() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cli/fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let save = |w: &World, name: &str| {
        let mut u = w.upgrade.clone();
        u.metadata.namespace = Some("langfuse".into());
        u.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("lfu.test/now".into(), t(w.now).to_string());
        u.metadata.finalizers = None;
        std::fs::write(dir.join(format!("{name}.yaml")), serde_yaml::to_string(&u).unwrap()).unwrap();
    };
    // Every phase of the happy path, and the road to v4.
    let mut s = spec();
    s.target.final_version = Some("4.16.0".into());
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = World::new(s);
    w.ch_version = "25.12.1.1".into();
    // Every phase, Verifying too: a reconcile whose counts could not be read stops there.
    w.look_ahead = false;
    let mut seen = Vec::new();
    for _ in 0..400 {
        let d = w.step();
        if !seen.contains(&d.phase) {
            seen.push(d.phase);
            save(&w, &format!("phase-{}", d.phase.to_string().to_lowercase()));
        }
        if d.phase == Phase::Completed {
            break;
        }
    }
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    w.cluster.service.as_mut().unwrap().spec.as_mut().unwrap().selector = Some(chart_selector());
    w.settle();
    w.step();
    save(&w, "selector-reverted");
    let mut s = spec();
    s.strategy.promotion = Promotion::Manual;
    let mut w = World::new(s);
    w.run_until(Phase::AwaitingPromotion, 20);
    save(&w, "phase-awaitingpromotion");
    let mut w = World::new(spec());
    w.run_until(Phase::Provisioning, 5);
    w.upgrade.spec.paused = true;
    w.step();
    save(&w, "phase-paused");
    let mut s = spec();
    s.backup.acknowledged = false;
    let mut w = World::new(s);
    w.step();
    save(&w, "preflight-failed");
    // Stuck with remediation off: reported to a person with the fix.
    let mut w = World::new(spec());
    w.runner.trap = Some((1, 12_000));
    w.upgrade.spec.migrations.remediation = false;
    for _ in 0..900 {
        let reason = w.status().condition(c::READY).map(|x| x.reason.clone());
        if reason.as_deref() == Some("MigrationStuck") {
            save(&w, "migration-stuck");
            break;
        }
        w.step();
    }
    let mut w = World::new(spec());
    w.runner.trap = Some((1, 12_000));
    for _ in 0..900 {
        let d = w.step();
        if d.actions.iter().any(|a| matches!(a, Action::Remedy(_))) {
            w.step();
            save(&w, "migration-remedied");
            break;
        }
    }
    let mut w = World::new(spec());
    w.ch.observations -= 1;
    w.run_until(Phase::Degraded, 400);
    save(&w, "phase-degraded");
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    w.break_web();
    w.run_until(Phase::RolledBack, 200);
    save(&w, "phase-rolledback");
    let mut w = World::new(spec());
    w.runner.napi = Some((1, 100));
    w.upgrade.spec.migrations.min_batch_size = 600;
    w.run_until(Phase::Failed, 600);
    save(&w, "phase-failed");
    let mut s = spec();
    s.strategy.drain_period = "two minutes".into();
    let mut w = World::new(s);
    w.step();
    save(&w, "phase-pending");
}

#[test]
fn a_final_version_changed_mid_hop_never_writes_an_older_release() {
    let mut s = spec();
    s.target.final_version = Some("3.150.0".into());
    let mut w = World::new(s);
    w.ch_version = "25.12.1.1".into();
    let image = |w: &World| {
        w.cluster
            .web
            .as_ref()
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone()
            .unwrap()
    };
    for _ in 0..400 {
        w.step();
        if image(&w).ends_with(":3.150.0") {
            break;
        }
    }
    assert!(image(&w).ends_with(":3.150.0"));
    w.upgrade.spec.target.final_version = Some("4.16.0".into());
    w.upgrade.spec.backup.acknowledged_hops = vec!["4.16.0".into()];
    for _ in 0..5 {
        let d = w.step();
        assert_eq!(d.phase, Phase::Blocked, "{:?}", d.conditions);
        for a in &d.actions {
            if let Action::ApplyDeployment(dep) = a {
                let img = dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone();
                assert!(img.unwrap().ends_with(":3.150.0"), "an older release written");
            }
        }
    }
    // Back to the destination under way: the hop finishes.
    w.upgrade.spec.target.final_version = Some("3.150.0".into());
    w.run_until(Phase::Completed, 100);
}

#[test]
fn the_happy_path_emits_no_warning_event() {
    // Every transition of the simulated happy path, as `report` turns it into Events.
    let mut w = World::new(spec());
    let mut warnings = Vec::new();
    for _ in 0..400 {
        let before = w.status();
        let d = w.step();
        for (kind, reason, note) in crate::controller::report::transitions(&before, &w.status()) {
            if kind == kube::runtime::events::EventType::Warning {
                warnings.push(format!("{reason}: {note}"));
            }
        }
        if d.phase == Phase::Completed {
            break;
        }
    }
    assert_eq!(w.status().phase, Some(Phase::Completed));
    assert!(warnings.is_empty(), "{warnings:#?}");
}
