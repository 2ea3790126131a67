//! The traffic shift: record the old selector, switch it, and call it done only when the
//! Service's EndpointSlices list ready v3 web pods and nothing else.

use super::workloads::Readiness;
use super::{Action, Gate, Hold, Planner, labels_text, wait};
use crate::api::conditions::{self as cond, reason};
use crate::api::{Phase, Promotion};
use crate::controller::observed::Observed;
use crate::controller::plan::facts::Fact;
use crate::resources::labels::{Labels, Role, UPGRADE_LABEL, v3_selector};
use crate::resources::service::selector_of;

/// Endpoints of the Service: (v3 web pods ready, anything that is not a v3 web pod).
pub fn endpoint_split(obs: &Observed) -> (usize, usize) {
    let ready_v3 = obs
        .endpoints
        .iter()
        .filter(|e| e.ready && e.pod.as_ref().is_some_and(|p| obs.v3_web_pods.contains(p)))
        .count();
    let other = obs
        .endpoints
        .iter()
        .filter(|e| !e.pod.as_ref().is_some_and(|p| obs.v3_web_pods.contains(p)))
        .count();
    (ready_v3, other)
}

pub(super) fn gate(p: &mut Planner, ready: &Readiness) -> Gate {
    let Some(service) = p.obs.service.as_ref() else {
        return Err(Hold::new(
            Phase::Blocked,
            reason::SOURCE_MISSING,
            format!("the Service {:?} is gone", p.spec.source.service),
            wait::ROLLOUT,
        ));
    };
    let want = v3_selector(p.name(), Role::Web);
    let current = selector_of(service);

    if p.status.traffic_shifted_at.is_some() {
        return still_shifted(p, &current, &want);
    }
    // Invariants 1 and 9: the Service moves only to a v3 that serves, stated here and not
    // left to the order of the gates.
    p.require(
        "switch the Service to v3",
        &[
            ("preflight", p.status.provisioning_started_at.is_some()),
            ("v3 web Available", ready.web),
            ("v3 worker Available", ready.worker),
            (
                "the promotion",
                p.spec.strategy.promotion != Promotion::Manual || p.approved(),
            ),
        ],
    )?;
    record_then_switch(p, &current, &want)?;
    // 3. Done when the endpoints say so.
    let (ready_v3, other) = endpoint_split(p.obs);
    if ready_v3 == 0 || other > 0 {
        let message = format!("waiting for the Service endpoints: {ready_v3} ready v3 web, {other} other");
        p.condition(cond::TRAFFIC_SHIFTED, false, reason::SHIFTING, message.clone());
        return Err(Hold::new(
            Phase::ShiftingTraffic,
            reason::SHIFTING,
            message,
            wait::ROLLOUT,
        ));
    }
    p.record_now(Fact::TrafficShifted);
    p.condition(
        cond::TRAFFIC_SHIFTED,
        true,
        reason::SHIFTED,
        format!("the Service lists {ready_v3} ready v3 web endpoints and no other"),
    );
    Ok(())
}

/// After the shift the selector must stay ours. Someone else changed it back: report it, do
/// not fight over it.
fn still_shifted(p: &mut Planner, current: &Labels, want: &Labels) -> Gate {
    if current == want {
        return Ok(());
    }
    let previous = p.status.previous_selector.clone().unwrap_or_default();
    let message = format!(
        "the Service {} selector was changed to {} after the shift (a GitOps sync or Helm upgrade?); v2 is kept and nothing proceeds. Stop the other writer (see gitops/README.md: ignore /spec/selector), then replace the whole selector (a merge patch would keep the other keys and match no pod): kubectl patch service {} --type json -p '[{{\"op\":\"replace\",\"path\":\"/spec/selector\",\"value\":{}}}]' (the selector before the shift was {})",
        p.spec.source.service,
        labels_text(current),
        p.spec.source.service,
        serde_json::to_string(want).unwrap_or_default(),
        labels_text(&previous),
    );
    Err(p.hold_step(
        cond::TRAFFIC_SHIFTED,
        Phase::Blocked,
        reason::SELECTOR_REVERTED,
        message,
        wait::POLL,
    ))
}

/// A selector that carries this operator's upgrade label: never one to go back to.
fn ours(selector: &Labels) -> bool {
    selector.contains_key(UPGRADE_LABEL)
}

/// Before the switch is due, the selector it will replace is recorded (and kept in step with
/// the Service while v3 rolls out), so that when v3 is ready the switch is one write: no
/// status round trip stands between "v3 Available" and the Service pointing at it.
pub(super) fn record_ahead(p: &mut Planner) {
    if p.status.traffic_shifted_at.is_some() {
        return;
    }
    let Some(service) = p.obs.service.as_ref() else {
        return;
    };
    let current = selector_of(service);
    if ours(&current) {
        // Already switched (or an edit of ours): `record_then_switch` deals with a lost record.
        return;
    }
    if p.status.previous_selector.as_ref() != Some(&current) {
        p.status.previous_selector = Some(current);
    }
}

/// The Service is switched only once the selector it replaces is durable in status: recorded
/// ahead by an earlier reconcile, or written first by the executor in this one (a crash after
/// the switch still knows what to restore).
fn record_then_switch(p: &mut Planner, current: &Labels, want: &Labels) -> Gate {
    // 1. The selector it replaces, durable before the Service is touched.
    let durable = p.upgrade.status.as_ref().and_then(|s| s.previous_selector.as_ref());
    let record = if !ours(current) {
        // Changed since it was recorded ahead (or never recorded): record what it is now.
        (durable != Some(current)).then(|| current.clone())
    } else {
        // Ours already (switched, or an edit of our selector after the switch), with the
        // status lost since: the old selector is unknown (empty), and a rollback will say to
        // restore it by hand. A selector of ours is never recorded as the one to go back to.
        durable.is_none().then(Labels::new)
    };
    if let Some(previous) = record {
        p.status.previous_selector = Some(previous);
        // Durable before the Service changes, in the same reconcile: no round trip between.
        p.act(Action::RecordFacts);
    }
    // 2. Switch.
    if current != want {
        p.act(Action::ApplySelector { selector: want.clone() });
        p.condition(
            cond::TRAFFIC_SHIFTED,
            false,
            reason::SHIFTING,
            format!("switching the Service selector to {}", labels_text(want)),
        );
        return Err(Hold::new(
            Phase::ShiftingTraffic,
            reason::SHIFTING,
            "switching the Service selector to v3 web",
            wait::ROLLOUT,
        ));
    }
    Ok(())
}
