//! The traffic shift: record the old selector, switch it, and call it done only when the
//! Service's EndpointSlices list ready v3 web pods and nothing else.

use super::workloads::Readiness;
use super::{Action, Gate, Hold, Planner, labels_text, wait};
use crate::api::Phase;
use crate::api::conditions::{self as cond, reason};
use crate::controller::observe::Observed;
use crate::resources::labels::{Labels, Role, v3_selector};
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

pub(super) fn gate(p: &mut Planner, _ready: &Readiness) -> Gate {
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
    p.status.traffic_shifted_at = Some(p.now_time());
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

/// Record the selector before touching the Service (its status write made first, by the
/// executor), so a crash after the switch still knows what to restore; then switch.
fn record_then_switch(p: &mut Planner, current: &Labels, want: &Labels) -> Gate {
    // 1. Record the selector before touching the Service.
    if p.status.previous_selector.is_none() {
        // Already switched with the status lost since: the old selector is unknown (empty), and
        // a rollback will say to restore it by hand.
        let previous = if current == want {
            Labels::new()
        } else {
            current.clone()
        };
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
