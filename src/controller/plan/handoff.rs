//! `spec.handoff`: after completion, Langfuse moves to a release of the official chart installed
//! beside the operator's Deployments (the sibling-release pattern Langfuse's own chart v1 → v2
//! guide uses: its Deployments have other names, so nothing is deleted before its pods serve).
//! Each step recorded in `status.chartHandoff`: protect what the old release must not take with
//! it → the chart's web and worker run what runs and are Available → the Service moves (its old
//! selector recorded first) → its EndpointSlices list only the chart's pods → the operator's
//! Deployments are deleted → what is left is said.

use k8s_openapi::api::apps::v1::Deployment;

use super::{Action, Hold, Planner, wait};
use crate::api::conditions::{self as cond, reason};
use crate::api::{ChartHandoffStatus, HandoffSpec, Phase};
use crate::handoff::{chart, differences, keep};
use crate::resources::labels::Role;
use crate::resources::service::selector_of;

/// What the handoff decides once the upgrade is completed; `None` when there is none to drive.
pub(super) fn gate(p: &mut Planner) -> Option<Hold> {
    let under_way = match &p.status.chart_handoff {
        Some(h) => h.retired_at.is_none(),
        None => p.spec.handoff.is_some(),
    };
    if p.spec.paused && under_way {
        let message = "spec.paused is true: the handoff changes nothing until it is false".to_string();
        return Some(Hold::new(Phase::Paused, reason::PAUSED, message, wait::IDLE));
    }
    let Some(spec) = p.spec.handoff.clone() else {
        return withdraw(p);
    };
    if p.road().is_in_place() {
        return Some(in_place(p, &spec));
    }
    let earlier = p.status.chart_handoff.clone();
    if let Some(h) = earlier.as_ref().filter(|h| h.release != spec.release) {
        // Another release asked for mid-way: the first is undone before the second starts.
        if h.retired_at.is_some() {
            return Some(done(p, h));
        }
        return withdraw(p);
    }
    let mut h = earlier.unwrap_or_else(|| ChartHandoffStatus {
        release: spec.release.clone(),
        ..ChartHandoffStatus::default()
    });
    let hold = steps(p, &spec, &mut h);
    p.status.chart_handoff = Some(h);
    Some(hold)
}

fn handing_off(p: &mut Planner, reason: cond::Reason, message: String, requeue: std::time::Duration) -> Hold {
    p.condition(cond::HANDED_OFF, false, reason, message.clone());
    Hold::new(Phase::HandingOff, reason, message, requeue)
}

fn steps(p: &mut Planner, spec: &HandoffSpec, h: &mut ChartHandoffStatus) -> Hold {
    if h.retired_at.is_some() {
        return done(p, h);
    }
    let name = |role| chart::deployment(&spec.release, spec.fullname_override.as_deref(), role);
    let ours_web = crate::resources::deployments::deployment_name(&p.spec.source.deployment, Role::Web);
    if name(Role::Web) == ours_web {
        let message = format!(
            "spec.handoff.release {}: the chart would name its web Deployment {ours_web}, the operator's own; hand over to another release (e.g. {}-v{})",
            spec.release,
            spec.release,
            p.status
                .target_version
                .as_deref()
                .unwrap_or("3")
                .split('.')
                .next()
                .unwrap_or("3")
        );
        p.condition(cond::HANDED_OFF, false, reason::INVALID_SPEC, message.clone());
        return Hold::new(Phase::Blocked, reason::INVALID_SPEC, message, wait::IDLE);
    }
    protect(p, h);
    let (Some(cw), Some(ck)) = (
        p.obs.chart_web.as_deref().cloned(),
        p.obs.chart_worker.as_deref().cloned(),
    ) else {
        return waiting_for_release(p, spec);
    };
    let (Some(web), Some(worker)) = (p.obs.web.clone(), p.obs.worker.clone()) else {
        return ours_gone(p, spec, h);
    };
    let found: Vec<String> = [(Role::Web, &web, &cw), (Role::Worker, &worker, &ck)]
        .into_iter()
        .flat_map(|(role, ours, theirs)| differences(role, ours, theirs))
        .collect();
    if !found.is_empty() {
        return refuse(p, h, &found);
    }
    if let Some(hold) = chart_ready(p, h, &cw, &ck) {
        return hold;
    }
    if let Some(hold) = switch(p, spec, h, &cw) {
        return hold;
    }
    retire(p, spec, h, &[web, worker])
}

/// `helm.sh/resource-policy: keep` on what the chart's pods will still use, once.
fn protect(p: &mut Planner, h: &mut ChartHandoffStatus) {
    if h.protected_at.is_some() {
        return;
    }
    let running: Vec<&Deployment> = [&p.obs.web, &p.obs.worker].into_iter().flatten().collect();
    let host = running
        .first()
        .and_then(|d| crate::resources::deployments::views::langfuse_container(d, Role::Web))
        .and_then(|c| {
            let env = c.env.as_deref().unwrap_or_default();
            let literal = |n: &str| env.iter().rev().find(|e| e.name == n).and_then(|e| e.value.clone());
            literal("DATABASE_HOST")
                .or_else(|| literal("DATABASE_URL").and_then(|u| keep::url_host(&u).map(String::from)))
        });
    let targets = keep::targets(&p.spec.source.service, &running, host.as_deref());
    h.protected = targets.iter().map(ToString::to_string).collect();
    h.protected_at = Some(p.now_time());
    for kept in targets {
        p.act(Action::Protect(kept));
    }
}

fn waiting_for_release(p: &mut Planner, spec: &HandoffSpec) -> Hold {
    let chart_version = match p
        .status
        .target_version
        .as_deref()
        .and_then(crate::version::Version::parse)
    {
        Some(v) if v.major >= 4 => "2.0.0",
        _ => "1.5.41",
    };
    let message = format!(
        "waiting for the chart's release {r}: kubectl lfu handoff {n} --chart {c} > values.yaml && helm install {r} langfuse/langfuse --version {c} -n {ns} -f values.yaml (Ingress off; the Service {s} moves to it once its web and worker run what runs and are Available)",
        r = spec.release,
        n = p.name(),
        c = chart_version,
        ns = p.namespace(),
        s = p.spec.source.service,
    );
    handing_off(p, reason::WAITING_FOR_CHART, message, wait::IDLE)
}

/// The operator's Deployments are missing: after the switch that is the retirement finishing;
/// before it there is nothing to compare the chart's pods with.
fn ours_gone(p: &mut Planner, spec: &HandoffSpec, h: &mut ChartHandoffStatus) -> Hold {
    if h.switched_at.is_some() {
        return retire(p, spec, h, &[]);
    }
    let message = "the operator's web or worker Deployment is gone before the switch: nothing to compare the chart's pods with; check what runs before handing over".to_string();
    p.condition(cond::HANDED_OFF, false, reason::CHART_DIFFERS, message.clone());
    Hold::new(Phase::Blocked, reason::CHART_DIFFERS, message, wait::POLL)
}

/// The chart's pods would run something else: refused, each difference named; a switch already
/// made is taken back (the operator's pods still run what ran).
fn refuse(p: &mut Planner, h: &mut ChartHandoffStatus, found: &[String]) -> Hold {
    if let Some(previous) = h.previous_selector.clone() {
        if p.obs.service.as_ref().map(selector_of).as_ref() != Some(&previous) {
            p.act(Action::ApplySelector { selector: previous });
        }
        h.switched_at = None;
    }
    let message = format!(
        "the chart's release does not run what runs; refused, nothing moved: {}. Fix the values (kubectl lfu handoff {} prints them) and helm upgrade that release",
        found.join("; "),
        p.name()
    );
    p.condition(cond::HANDED_OFF, false, reason::CHART_DIFFERS, message.clone());
    Hold::new(Phase::Blocked, reason::CHART_DIFFERS, message, wait::POLL)
}

fn chart_ready(p: &mut Planner, h: &mut ChartHandoffStatus, cw: &Deployment, ck: &Deployment) -> Option<Hold> {
    use crate::controller::plan::workloads::settled;
    use crate::resources::deployments::views::availability;
    if settled(cw) && settled(ck) {
        h.chart_ready_at.get_or_insert_with(|| p.now_time());
        return None;
    }
    let shown = |d: &Deployment| {
        let (a, w) = availability(d);
        format!("{} {a}/{w}", d.metadata.name.clone().unwrap_or_default())
    };
    let message = format!(
        "waiting for the chart's Deployments to be Available: {}, {}",
        shown(cw),
        shown(ck)
    );
    Some(handing_off(p, reason::WAITING_FOR_CHART, message, wait::ROLLOUT))
}

/// The same rule as the v2 → v3 switch: both sets ready, the old selector recorded before the
/// one write, done when the EndpointSlices list only the chart's web pods.
fn switch(p: &mut Planner, spec: &HandoffSpec, h: &mut ChartHandoffStatus, cw: &Deployment) -> Option<Hold> {
    if h.switched_at.is_some() {
        return None;
    }
    let wanted = chart::selector(&spec.release, Role::Web);
    let current = p.obs.service.as_ref().map(selector_of).unwrap_or_default();
    if current != wanted {
        h.previous_selector.get_or_insert(current);
        p.act(Action::RecordFacts);
        p.act(Action::ApplySelector { selector: wanted });
        let message = format!("moving the Service {} to the chart's web pods", p.spec.source.service);
        return Some(handing_off(p, reason::HANDING_OFF, message, wait::ROLLOUT));
    }
    let prefix = format!("{}-", cw.metadata.name.clone().unwrap_or_default());
    let theirs = |e: &&crate::controller::observed::Endpoint| e.pod.as_ref().is_some_and(|n| n.starts_with(&prefix));
    let ready = p.obs.endpoints.iter().filter(|e| e.ready && theirs(e)).count();
    let other = p.obs.endpoints.iter().filter(|e| !theirs(e)).count();
    if ready == 0 || other > 0 {
        let message = format!("waiting for the Service endpoints: {ready} ready chart web, {other} other");
        return Some(handing_off(p, reason::HANDING_OFF, message, wait::ROLLOUT));
    }
    h.switched_at = Some(p.now_time());
    None
}

/// Delete the operator's web and worker; once both are gone the handoff is done.
fn retire(p: &mut Planner, spec: &HandoffSpec, h: &mut ChartHandoffStatus, ours: &[Deployment]) -> Hold {
    let names: Vec<String> = ours.iter().filter_map(|d| d.metadata.name.clone()).collect();
    if !names.is_empty() {
        // The confirmed switch is durable before anything is deleted.
        p.act(Action::RecordFacts);
        for name in &names {
            p.act(Action::RetireDeployment(name.clone()));
        }
        let message = format!(
            "the chart's release {} serves; deleting {}",
            spec.release,
            names.join(", ")
        );
        return handing_off(p, reason::HANDING_OFF, message, wait::ROLLOUT);
    }
    h.retired_at = Some(p.now_time());
    h.leftovers = super::handoff_leftovers::leftovers(p, spec, h);
    done(p, h)
}

/// Handed off: forward only. A Service moved off the chart's pods with no ready endpoint is an
/// outage, said (not fought over).
fn done(p: &mut Planner, h: &ChartHandoffStatus) -> Hold {
    let ready = p.obs.endpoints.iter().filter(|e| e.ready).count();
    if ready == 0 && p.obs.service.is_some() {
        let message = format!(
            "handed off to release {}, and the Service {} now has no ready endpoint: Langfuse is unreachable. Its selector should be {}",
            h.release,
            p.spec.source.service,
            super::labels_text(&chart::selector(&h.release, Role::Web))
        );
        p.condition(cond::HANDED_OFF, true, reason::SELECTOR_REVERTED, message.clone());
        return Hold::new(Phase::Completed, reason::SELECTOR_REVERTED, message, wait::POLL);
    }
    let message = format!(
        "Langfuse runs on the official chart's release {}; the operator's Deployments are gone. Left: {}",
        h.release,
        h.leftovers.join("; ")
    );
    p.condition(cond::HANDED_OFF, true, reason::HANDED_OFF, message.clone());
    Hold::new(Phase::Completed, reason::HANDED_OFF, message, wait::IDLE)
}

/// `spec.handoff` removed: before the retirement the Service goes back to the recorded selector
/// and the handoff is forgotten; after it, nothing can be undone.
fn withdraw(p: &mut Planner) -> Option<Hold> {
    let h = p.status.chart_handoff.clone()?;
    if h.retired_at.is_some() {
        return Some(done(p, &h));
    }
    if let Some(previous) = h.previous_selector.clone() {
        if p.obs.service.as_ref().map(selector_of).as_ref() != Some(&previous) {
            p.act(Action::ApplySelector { selector: previous });
            let message = format!(
                "spec.handoff withdrawn: the Service {} goes back to the operator's web pods",
                p.spec.source.service
            );
            return Some(handing_off(p, reason::HANDOFF_WITHDRAWN, message, wait::ROLLOUT));
        }
    }
    p.status.chart_handoff = None;
    let message = format!(
        "spec.handoff withdrawn before the operator's Deployments were deleted: the Service serves them again; the chart's release {} may be uninstalled (the keep annotations stay: {})",
        h.release,
        h.protected.join(", ")
    );
    p.condition(cond::HANDED_OFF, false, reason::HANDOFF_WITHDRAWN, message);
    None
}

/// A source already on the chart's own Deployments: nothing to move.
fn in_place(p: &mut Planner, spec: &HandoffSpec) -> Hold {
    let message = format!(
        "spec.handoff {}: this Langfuse was upgraded in place on its own Deployments; check values before helm upgrade with kubectl lfu plan {} --helm-values FILE --chart VERSION (kubectl lfu handoff prints values that keep what runs)",
        spec.release,
        p.name()
    );
    p.condition(cond::HANDED_OFF, false, reason::COMPLETED, message.clone());
    Hold::new(Phase::Completed, reason::COMPLETED, message, wait::IDLE)
}
