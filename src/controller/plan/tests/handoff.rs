//! `spec.handoff`: protect, wait for the chart's release, refuse what differs, switch with the
//! old selector recorded first, retire the operator's Deployments only after the EndpointSlices
//! list the chart's pods alone; withdrawn before that, the Service goes back.

use super::*;
use crate::api::HandoffSpec;
use crate::handoff::chart;

const RELEASE: &str = "prod-v3";

/// The chart's Deployment of `role` as Helm would install it from the generated values: the
/// same pod as ours under the chart's name, selector and labels.
fn chart_copy(ours: &Deployment, role: Role) -> Deployment {
    let mut d = ours.clone();
    d.metadata.name = Some(chart::deployment(RELEASE, None, role));
    d.metadata.owner_references = None;
    let selector = chart::selector(RELEASE, role);
    let spec = d.spec.as_mut().unwrap();
    spec.selector.match_labels = Some(selector.clone());
    spec.template.metadata.as_mut().unwrap().labels = Some(selector);
    rolled_out(d)
}

fn completed() -> World {
    let mut w = World::new(spec());
    w.run_until(Phase::Completed, 400);
    w
}

fn hand_off(w: &mut World, release: &str) {
    w.upgrade.spec.handoff = Some(HandoffSpec {
        release: release.into(),
        fullname_override: None,
    });
}

fn install_chart(w: &mut World) {
    let c = &mut w.cluster;
    c.chart_web = Some(Box::new(chart_copy(c.web.as_ref().unwrap(), Role::Web)));
    c.chart_worker = Some(Box::new(chart_copy(c.worker.as_ref().unwrap(), Role::Worker)));
}

/// The decision's reason and message, as its Ready condition says them.
struct Said {
    phase: Phase,
    reason: crate::api::conditions::Reason,
    message: String,
    actions: Vec<Action>,
}

fn said(d: Decision) -> Said {
    let ready = d.conditions.iter().find(|x| x.type_ == c::READY).unwrap();
    Said {
        phase: d.phase,
        reason: ready.reason,
        message: ready.message.clone(),
        actions: d.actions,
    }
}

fn handoff(w: &World) -> crate::api::ChartHandoffStatus {
    w.status().chart_handoff.expect("status.chartHandoff")
}

#[test]
fn a_completed_upgrade_is_handed_to_the_charts_release_without_a_moment_unserved() {
    let mut w = completed();
    let ours = v3_selector(UPGRADE, Role::Web);
    hand_off(&mut w, RELEASE);
    let d = said(w.step());
    assert_eq!((d.phase, d.reason), (Phase::HandingOff, reason::WAITING_FOR_CHART));
    assert!(d.message.contains("helm install prod-v3"), "{}", d.message);
    assert!(
        w.protected.contains(&"Service/prod-langfuse".to_string()),
        "{:?}",
        w.protected
    );
    assert!(
        w.protected.iter().any(|k| k.starts_with("Secret/")),
        "{:?}",
        w.protected
    );
    // Nothing moves while the chart's release is not there.
    assert_eq!(w.cluster.service.as_ref().map(selector_of), Some(ours.clone()));
    install_chart(&mut w);
    let mut served = Vec::new();
    for _ in 0..20 {
        let d = said(w.step());
        served.push(w.cluster.endpoints.iter().filter(|e| e.ready).count());
        if d.reason == reason::HANDED_OFF {
            break;
        }
    }
    assert!(
        served.iter().all(|n| *n > 0),
        "a step without a ready endpoint: {served:?}"
    );
    let d = said(w.history.last().unwrap().clone());
    assert_eq!(
        (d.phase, d.reason),
        (Phase::Completed, reason::HANDED_OFF),
        "{}",
        d.message
    );
    assert_eq!(
        w.cluster.service.as_ref().map(selector_of),
        Some(chart::selector(RELEASE, Role::Web))
    );
    assert!(
        w.cluster.web.is_none() && w.cluster.worker.is_none(),
        "the operator's Deployments retired"
    );
    let h = handoff(&w);
    assert_eq!(h.previous_selector, Some(ours));
    let (ready, switched, retired) = (h.chart_ready_at.unwrap(), h.switched_at.unwrap(), h.retired_at.unwrap());
    assert!(ready <= switched && switched <= retired);
    assert!(
        h.leftovers
            .iter()
            .any(|l| l.contains("Deployment prod-langfuse (v2, 0 replicas)")),
        "{:?}",
        h.leftovers
    );
    assert_eq!(condition(&w, c::HANDED_OFF).status, "True");
    assert_eq!(condition(&w, c::READY).status, "True");
    // Forward only: withdrawing now changes nothing.
    w.upgrade.spec.handoff = None;
    let d = said(w.step());
    assert_eq!(d.reason, reason::HANDED_OFF);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
}

#[test]
fn a_chart_release_running_something_else_is_refused_difference_by_difference() {
    let mut w = completed();
    hand_off(&mut w, RELEASE);
    w.step();
    install_chart(&mut w);
    let web = w.cluster.chart_web.as_mut().unwrap();
    let c = &mut web.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0];
    c.image = Some("ghcr.io/langfuse/langfuse:3.224.1".into());
    c.env.as_mut().unwrap().push(k8s_openapi::api::core::v1::EnvVar {
        name: "SALT".into(),
        value: Some("0".repeat(64)),
        value_from: None,
    });
    let before = w.cluster.service.as_ref().map(selector_of);
    let d = said(w.step());
    assert_eq!((d.phase, d.reason), (Phase::Blocked, reason::CHART_DIFFERS));
    assert!(
        d.message.contains("web: image ghcr.io/langfuse/langfuse:3.224.1"),
        "{}",
        d.message
    );
    assert!(
        d.message.contains("SALT is another literal value where Secret"),
        "{}",
        d.message
    );
    assert!(!d.message.contains(&"0".repeat(64)), "a secret in the words");
    assert_eq!(w.cluster.service.as_ref().map(selector_of), before, "nothing moved");
    assert!(w.cluster.web.is_some() && w.cluster.worker.is_some());
}

#[test]
fn withdrawn_after_the_switch_and_before_the_retirement_the_service_goes_back() {
    let mut w = completed();
    let ours = v3_selector(UPGRADE, Role::Web);
    hand_off(&mut w, RELEASE);
    install_chart(&mut w);
    for _ in 0..10 {
        w.step();
        if w.cluster.service.as_ref().map(selector_of) != Some(ours.clone()) {
            break;
        }
    }
    assert_eq!(
        w.cluster.service.as_ref().map(selector_of),
        Some(chart::selector(RELEASE, Role::Web))
    );
    w.upgrade.spec.handoff = None;
    let d = said(w.step());
    assert_eq!(d.reason, reason::HANDOFF_WITHDRAWN);
    let d = said(w.step());
    assert_eq!(w.cluster.service.as_ref().map(selector_of), Some(ours));
    assert!(w.cluster.web.is_some() && w.cluster.worker.is_some());
    assert_eq!(
        (d.phase, d.reason),
        (Phase::Completed, reason::COMPLETED),
        "{}",
        d.message
    );
    assert!(w.status().chart_handoff.is_none());
    assert_eq!(condition(&w, c::HANDED_OFF).reason, "HandoffWithdrawn");
}

#[test]
fn the_release_that_would_take_the_operators_names_is_refused() {
    let mut w = completed();
    // Release `prod` names its Deployments prod-langfuse-web: the operator's own.
    hand_off(&mut w, "prod");
    let d = said(w.step());
    assert_eq!((d.phase, d.reason), (Phase::Blocked, reason::INVALID_SPEC));
    assert!(d.message.contains("prod-langfuse-web"), "{}", d.message);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
}

#[test]
fn a_paused_handoff_changes_nothing_until_resumed() {
    let mut w = completed();
    hand_off(&mut w, RELEASE);
    install_chart(&mut w);
    w.upgrade.spec.paused = true;
    let d = said(w.step());
    assert_eq!((d.phase, d.reason), (Phase::Paused, reason::PAUSED));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    w.upgrade.spec.paused = false;
    let d = said(w.step());
    assert_eq!(d.phase, Phase::HandingOff, "{}", d.message);
}
