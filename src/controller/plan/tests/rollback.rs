//! Abort, rollback after the shift, the error-ratio analysis, a reverted selector, v2 scaled back up.

use super::*;

#[test]
fn abort_before_retirement_rolls_back_everything() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    assert_eq!(
        selector_of(w.cluster.service.as_ref().unwrap()),
        v3_selector(UPGRADE, Role::Web)
    );
    w.upgrade.spec.abort = true;
    w.run_until(Phase::RolledBack, 40);
    assert_eq!(
        selector_of(w.cluster.service.as_ref().unwrap()),
        chart_selector(),
        "old selector back"
    );
    assert_eq!(
        w.cluster.source.as_ref().unwrap().spec.as_ref().unwrap().replicas,
        Some(2)
    );
    assert!(w.cluster.web.is_none() && w.cluster.worker.is_none(), "v3 gone");
    assert!(
        w.cluster
            .endpoints
            .iter()
            .all(|e| e.pod.as_deref().unwrap().starts_with("v2-"))
    );
    assert_eq!(condition(&w, c::STALLED).status, "True");
    // Terminal: stays rolled back with no writes.
    let d = w.step();
    assert_eq!(d.phase, Phase::RolledBack);
    assert!(d.actions.is_empty());
}

/// Safety review #1 (interleaving A): a replica frozen with the switch to v3 on the wire lands
/// it after the other replica rolled back and deleted v3. The Service must not stay on pods
/// that are gone: the previous selector goes back, and then nothing more is written.
#[test]
fn a_switch_that_lands_after_the_rollback_is_undone() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    w.upgrade.spec.abort = true;
    w.run_until(Phase::RolledBack, 40);
    let service = w.cluster.service.as_mut().unwrap();
    service.spec.as_mut().unwrap().selector = Some(v3_selector(UPGRADE, Role::Web));
    let d = w.step();
    assert_eq!(d.phase, Phase::RolledBack);
    assert_eq!(
        d.actions,
        [Action::ApplySelector {
            selector: chart_selector()
        }]
    );
    assert_eq!(condition(&w, c::READY).reason, "SelectorReverted");
    assert_eq!(selector_of(w.cluster.service.as_ref().unwrap()), chart_selector());
    let d = w.step();
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(condition(&w, c::READY).reason, "RolledBack");
}

#[test]
fn abort_after_retirement_is_refused_and_changes_nothing() {
    let mut s = spec();
    s.target.final_version = Some("3.40.0".into());
    let mut w = World::new(s);
    w.run_until(Phase::Finalizing, 400);
    w.upgrade.spec.abort = true;
    let d = w.step();
    assert_eq!(d.phase, Phase::Blocked);
    assert!(d.actions.is_empty());
    assert_eq!(condition(&w, c::READY).reason, "AbortTooLate");
}

#[test]
fn a_web_that_never_becomes_ready_is_never_shifted_to() {
    let mut w = World::new(spec());
    w.web_broken = true;
    for _ in 0..30 {
        let d = w.step();
        assert_eq!(d.phase, Phase::Provisioning);
        assert!(d.actions.iter().all(|a| !matches!(a, Action::ApplySelector { .. })));
    }
    let ready = condition(&w, c::READY);
    assert_eq!(ready.reason, "WebNotAvailable");
    assert!(ready.message.contains("0/1 available"), "{}", ready.message);
    assert!(ready.message.contains("kubectl logs deploy/prod-langfuse-web"));
    assert!(w.cluster.worker.is_none(), "worker waits for web");
}

#[test]
fn web_down_after_the_shift_rolls_back_after_rollback_after() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    // v3 web loses every ready pod.
    w.break_web();
    let d = w.step();
    assert_eq!(d.phase, Phase::Degraded);
    assert!(w.status().web_unavailable_since.is_some());
    w.run_until(Phase::RolledBack, 200);
    assert!(w.now >= 300, "rolled back before rollbackAfter: {}", w.now);
    assert_eq!(selector_of(w.cluster.service.as_ref().unwrap()), chart_selector());
    // Not asked to delete: v3 is scaled to 0 and kept for its logs.
    assert_eq!(w.cluster.web.as_ref().unwrap().spec.as_ref().unwrap().replicas, Some(0));
    assert!(w.status().rollback.unwrap().reason.unwrap().contains("rollbackAfter"));
}

#[test]
fn the_rollback_starts_when_rollback_after_runs_out_not_at_the_next_poll() {
    let mut sp = spec();
    sp.strategy.rollback_after = "25s".into();
    let mut w = World::new(sp);
    w.run_until(Phase::Draining, 40);
    w.break_web();
    let d = w.step();
    assert_eq!(d.phase, Phase::Degraded);
    assert_eq!(d.requeue, Duration::from_secs(10), "at most a poll while far from it");
    let since = w.status().web_unavailable_since.unwrap().0;
    let d = w.step();
    assert_eq!(d.requeue, Duration::from_secs(10));
    let d = w.step();
    // `since` is a whole second at or before the outage was seen: the wait is rollbackAfter
    // plus that second, so it never ends before rollbackAfter has passed since the fault.
    assert_eq!(d.requeue, Duration::from_secs(6), "woken exactly when it runs out");
    w.run_until(Phase::RolledBack, 50);
    let started = w.status().rollback.unwrap().started_at.unwrap().0;
    assert_eq!(started.as_second() - since.as_second(), 26);
}

fn with_analysis() -> LangfuseUpgradeSpec {
    let mut sp = spec();
    sp.strategy.analysis = Some(crate::api::AnalysisSpec {
        prometheus_url: "http://prometheus:9090".into(),
        error_ratio_query: "sum(rate(errors[1m])) / sum(rate(requests[1m]))".into(),
        threshold: "0.05".into(),
        window: "60s".into(),
    });
    sp
}

fn ratio(now: f64, lowest: f64, points: f64) -> Result<crate::analysis::ErrorRatioFacts, String> {
    Ok(crate::analysis::ErrorRatioFacts {
        now: Some(now),
        window_min: Some(lowest),
        window_points: Some(points),
    })
}

fn error_condition(w: &World) -> (String, String, String) {
    let c = w
        .status()
        .condition("ErrorRatioHealthy")
        .cloned()
        .expect("an ErrorRatioHealthy condition");
    (c.status, c.reason, c.message)
}

#[test]
fn a_sustained_error_ratio_rolls_back_with_the_measured_value() {
    let mut w = World::new(with_analysis());
    w.run_until(Phase::Draining, 40);
    w.error_ratio = ratio(0.30, 0.12, 20.0);
    let d = w.step();
    // Younger than the window: above now, not judged over it yet.
    assert_eq!(error_condition(&w).1, "ErrorRatioHigh");
    assert!(d.requeue <= Duration::from_secs(3), "{:?}", d.requeue);
    w.run_until(Phase::RolledBack, 200);
    let s = w.status();
    let why = s.rollback.unwrap().reason.unwrap();
    assert!(why.contains("above 0.05 for 60s") && why.contains("0.1200"), "{why}");
    assert_eq!(error_condition(&w).1, "ErrorRatioSustained");
    assert_eq!(selector_of(w.cluster.service.as_ref().unwrap()), chart_selector());
}

#[test]
fn a_spike_and_missing_data_never_roll_back() {
    let mut w = World::new(with_analysis());
    w.run_until(Phase::Draining, 40);
    // High now, but the window's lowest point is healthy: a spike.
    w.error_ratio = ratio(0.30, 0.01, 20.0);
    for _ in 0..30 {
        w.step();
    }
    assert_eq!(error_condition(&w).1, "ErrorRatioHigh");
    // Sustained but sparse (targets down most of the window): no rollback either.
    w.error_ratio = ratio(0.30, 0.30, 3.0);
    for _ in 0..10 {
        w.step();
    }
    w.error_ratio = Err("cannot reach Prometheus at http://prometheus:9090: connection refused".into());
    let d = w.step();
    let (status, reason, message) = error_condition(&w);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "AnalysisUnavailable"));
    assert!(message.contains("no rollback on missing data"), "{message}");
    assert_ne!(d.phase, Phase::RollingBack);
    assert!(w.status().rollback.unwrap().started_at.is_none());
    w.error_ratio = ratio(0.0, 0.0, 20.0);
    // Judged every 3 s (the window's step) until retirement: many short reconciles.
    w.run_until(Phase::Completed, 2000);
}

#[test]
fn after_the_point_of_no_return_the_error_ratio_is_not_asked() {
    let mut w = World::new(with_analysis());
    w.run_until(Phase::RetiringSource, 2000);
    while w.status().source_retired_at.is_none() {
        w.step();
    }
    w.error_ratio = ratio(0.9, 0.9, 20.0);
    assert!(needs(&w.upgrade, t(w.now)).error_ratio.is_none());
    w.run_until(Phase::Completed, 400);
    assert!(w.status().rollback.unwrap().started_at.is_none());
}

#[test]
fn a_reverted_selector_blocks_and_is_not_fought_over() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    w.cluster.service.as_mut().unwrap().spec.as_mut().unwrap().selector = Some(chart_selector());
    w.settle();
    let d = w.step();
    assert_eq!(d.phase, Phase::Blocked);
    assert!(
        d.actions.iter().all(|a| !matches!(a, Action::ApplySelector { .. })),
        "tug of war"
    );
    let shifted = condition(&w, c::TRAFFIC_SHIFTED);
    assert_eq!(
        (shifted.status.as_str(), shifted.reason.as_str()),
        ("False", "SelectorReverted")
    );
    // A JSON-patch replace of the whole map: a merge patch would keep v2's keys and match nothing.
    assert!(
        shifted
            .message
            .contains("kubectl patch service prod-langfuse --type json"),
        "{}",
        shifted.message
    );
    assert!(
        shifted.message.contains(r#""op":"replace","path":"/spec/selector""#),
        "{}",
        shifted.message
    );
    // A person restores it: the upgrade continues.
    w.cluster.service.as_mut().unwrap().spec.as_mut().unwrap().selector = Some(v3_selector(UPGRADE, Role::Web));
    w.settle();
    w.run_until(Phase::Completed, 400);
}

#[test]
fn v2_scaled_back_up_after_retirement_blocks_without_a_fight() {
    let mut s = spec();
    s.target.final_version = Some("3.40.0".into());
    let mut w = World::new(s);
    w.run_until(Phase::Finalizing, 400);
    *w.cluster.source.as_mut().unwrap() = v2_deployment(2);
    let d = w.step();
    assert_eq!(d.phase, Phase::Blocked);
    assert!(!d.actions.contains(&Action::ScaleSource(0)));
    assert_eq!(condition(&w, c::SOURCE_RETIRED).reason, "SourceScaledUp");
    // And v3 must not move past 3.29.0 while v2 pods exist (checked by the invariants too).
    assert!(d.actions.iter().all(|a| !matches!(a, Action::ApplyDeployment(d) if d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].image.as_deref().unwrap().ends_with("3.40.0"))));
}

#[test]
fn final_version_is_rolled_out_only_after_v2_is_gone() {
    let mut s = spec();
    s.target.final_version = Some("3.40.0".into());
    let mut w = World::new(s);
    w.run_until(Phase::Completed, 400);
    let image = |d: &Option<Deployment>| {
        d.as_ref()
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
    assert_eq!(image(&w.cluster.web), "ghcr.io/langfuse/langfuse:3.40.0");
    assert_eq!(image(&w.cluster.worker), "ghcr.io/langfuse/langfuse-worker:3.40.0");
    assert!(phases(&w).contains(&Phase::Finalizing));
    assert_eq!(w.status().target_version.as_deref(), Some("3.40.0"));
}
