//! The happy path and the switch: phases, the selector recorded ahead, crashes between a write and its status, manual promotion.

use super::*;

#[test]
fn happy_path_walks_every_phase_to_completed() {
    let mut w = World::new(spec());
    w.run_until(Phase::Completed, 400);
    assert_eq!(
        phases(&w),
        vec![
            Phase::Provisioning,
            Phase::ShiftingTraffic,
            Phase::Draining,
            // Verifying passes in the reconcile that sees the copies end (the look ahead).
            Phase::Migrating,
            Phase::RetiringSource,
            Phase::Completed
        ]
    );
    let s = w.status();
    assert!(s.verified_at.is_some() && s.source_retired_at.is_some() && s.completed_at.is_some());
    assert_eq!(condition(&w, c::READY).status, "True");
    assert_eq!(condition(&w, c::STALLED).status, "False");
    assert_eq!(condition(&w, c::RECONCILING).status, "False");
    for step in [
        c::PREFLIGHT_PASSED,
        c::TRAFFIC_SHIFTED,
        c::MIGRATIONS_COMPLETE,
        c::VERIFIED,
        c::SOURCE_RETIRED,
    ] {
        assert_eq!(condition(&w, step).status, "True", "{step}");
    }
    // v2 scaled to 0, never deleted; v3 released from the object.
    let v2 = w.cluster.source.as_ref().expect("v2 kept");
    assert_eq!(v2.spec.as_ref().unwrap().replicas, Some(0));
    assert!(w.cluster.web.as_ref().unwrap().metadata.owner_references.is_none());
    assert!(w.cluster.worker.as_ref().unwrap().metadata.owner_references.is_none());
    assert_eq!(s.previous_selector, Some(chart_selector()));
    assert_eq!(s.source_replicas, Some(2));
}

#[test]
fn completed_is_quiet() {
    let mut w = World::new(spec());
    w.run_until(Phase::Completed, 400);
    let before = w.upgrade.status.clone();
    for _ in 0..3 {
        let d = w.step();
        assert_eq!(d.phase, Phase::Completed);
        assert!(d.actions.is_empty(), "writes after completion: {:?}", d.actions);
    }
    assert_eq!(w.upgrade.status, before, "status must not change when nothing changes");
}

#[test]
fn web_starts_with_one_replica_then_scales_and_worker_waits_for_web() {
    let mut w = World::new(spec());
    let first = w.step();
    let applied: Vec<&Deployment> = first
        .actions
        .iter()
        .filter_map(|a| {
            if let Action::ApplyDeployment(d) = a {
                Some(d.as_ref())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(applied.len(), 1, "only web first");
    assert_eq!(applied[0].metadata.name.as_deref(), Some("prod-langfuse-web"));
    assert_eq!(applied[0].spec.as_ref().unwrap().replicas, Some(1));
    let second = w.step();
    let names: Vec<(String, i32)> = second
        .actions
        .iter()
        .filter_map(|a| {
            if let Action::ApplyDeployment(d) = a {
                Some((
                    d.metadata.name.clone().unwrap(),
                    d.spec.as_ref().unwrap().replicas.unwrap(),
                ))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        names,
        vec![("prod-langfuse-web".into(), 2), ("prod-langfuse-worker".into(), 1)]
    );
}

/// The decision points the Service at v3 web.
fn switches_to_v3(d: &Decision) -> bool {
    d.actions
        .iter()
        .any(|a| matches!(a, Action::ApplySelector { selector } if *selector == v3_selector(UPGRADE, Role::Web)))
}

#[test]
fn the_old_selector_is_recorded_ahead_so_the_switch_is_one_write() {
    let mut w = World::new(spec());
    let d = w.run_until(Phase::ShiftingTraffic, 20);
    // Recorded while v3 rolled out: the switching reconcile writes only the Service.
    assert!(!d.actions.contains(&Action::RecordFacts), "{:?}", d.actions);
    assert!(switches_to_v3(&d), "{:?}", d.actions);
    assert_eq!(d.status.previous_selector, Some(chart_selector()));
    assert_eq!(w.status().previous_selector, Some(chart_selector()));
}

#[test]
fn a_selector_changed_after_it_was_recorded_is_recorded_again_before_the_switch() {
    let switches = |d: &Decision| d.actions.iter().any(|a| matches!(a, Action::ApplySelector { .. }));
    // The simulation is deterministic: find the reconcile that switches...
    let mut w = World::new(spec());
    let mut before = 0;
    while !switches(&w.step()) {
        before += 1;
        assert!(before < 50, "never switched");
    }
    // ...then, in a second run, change the selector (a Helm upgrade of v2) just before it.
    let mut w = World::new(spec());
    for _ in 0..before {
        w.step();
    }
    assert_eq!(w.status().previous_selector, Some(chart_selector()), "recorded ahead");
    let mut changed = chart_selector();
    changed.insert("release".into(), "langfuse-2".into());
    w.cluster.service.as_mut().unwrap().spec.as_mut().unwrap().selector = Some(changed.clone());
    let d = w.step();
    let record = d.actions.iter().position(|a| *a == Action::RecordFacts);
    let switch = d.actions.iter().position(|a| matches!(a, Action::ApplySelector { .. }));
    assert!(
        matches!((record, switch), (Some(r), Some(s)) if r < s),
        "{:?}",
        d.actions
    );
    assert_eq!(w.status().previous_selector, Some(changed));
}

#[test]
fn a_selector_of_ours_edited_after_the_switch_is_never_recorded_as_the_one_to_go_back_to() {
    let mut w = World::new(spec());
    w.run_until(Phase::ShiftingTraffic, 20);
    assert!(w.status().traffic_shifted_at.is_none());
    // Someone adds a key to our selector before the shift is recorded.
    let mut edited = v3_selector(UPGRADE, Role::Web);
    edited.insert("extra".into(), "x".into());
    w.cluster.service.as_mut().unwrap().spec.as_mut().unwrap().selector = Some(edited);
    let d = w.step();
    assert!(switches_to_v3(&d), "{:?}", d.actions);
    assert_eq!(w.status().previous_selector, Some(chart_selector()));
}

#[test]
fn every_step_decides_the_same_without_the_phase_field() {
    // Restart in every phase: drop `phase` (and run a fresh plan) and the decision is unchanged.
    let mut w = World::new(spec());
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..400 {
        let obs = w.observe();
        let with_phase = plan(&w.upgrade, &obs, t(w.now));
        let mut lost = w.upgrade.clone();
        lost.status.as_mut().unwrap().phase = None;
        let without = plan(&lost, &obs, t(w.now));
        assert_eq!(with_phase.phase, without.phase);
        assert_eq!(with_phase.actions, without.actions);
        seen.insert(with_phase.phase.as_str());
        if w.step().phase == Phase::Completed {
            break;
        }
    }
    for phase in [
        "Provisioning",
        "ShiftingTraffic",
        "Draining",
        "Migrating",
        "RetiringSource",
        "Completed",
    ] {
        assert!(seen.contains(phase), "never checked {phase}");
    }
}

#[test]
fn a_crash_between_a_write_and_its_status_repeats_nothing_wrong() {
    // Simulate the operator dying after executing a decision's writes but before its status
    // patch: the next plan sees the new cluster with the old status and must converge.
    let mut w = World::new(spec());
    for _ in 0..400 {
        let obs = w.observe();
        let d = plan(&w.upgrade, &obs, t(w.now));
        for a in &d.actions {
            // A fact the executor records before a write is durable; only the final write is lost.
            if *a == Action::RecordFacts {
                let status = next_status(&w.upgrade, &d, t(w.now));
                w.upgrade.status = Some(api_round_trip(&status));
                continue;
            }
            w.apply(a);
        }
        w.settle();
        // The final status write lost. Next reconcile:
        let d2 = w.step();
        for a in &d2.actions {
            assert!(
                !matches!(a, Action::DeleteDeployment(_) | Action::DeleteSource),
                "destructive write after a crash: {a:?}"
            );
        }
        if d2.phase == Phase::Completed {
            return;
        }
    }
    panic!(
        "did not complete with crashes between writes and status: {:?}",
        phases(&w)
    );
}

#[test]
fn manual_promotion_waits_for_approval() {
    let mut s = spec();
    s.strategy.promotion = Promotion::Manual;
    let mut w = World::new(s);
    let d = w.run_until(Phase::AwaitingPromotion, 20);
    assert!(d.actions.iter().all(|a| !matches!(a, Action::ApplySelector { .. })));
    for _ in 0..5 {
        assert_eq!(w.step().phase, Phase::AwaitingPromotion);
    }
    assert_eq!(selector_of(w.cluster.service.as_ref().unwrap()), chart_selector());
    // The annotation works as well as the field.
    w.upgrade.metadata.annotations = Some(std::collections::BTreeMap::from([(
        crate::api::APPROVE_ANNOTATION.to_string(),
        "true".to_string(),
    )]));
    w.run_until(Phase::Completed, 400);
}
