//! Retiring v2, moving to the final version, and completing (releasing the v3 Deployments).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::workloads::v2_counts;
use super::{Action, Gate, Hold, Planner, Stage, wait};
use crate::api::Phase;
use crate::api::conditions::{self as cond, reason};
use crate::controller::plan::facts::Fact;
use crate::controller::validate::Settings;

/// Invariant 4: only after the shift, the migrations, the verification and `retireSourceAfter`.
pub(super) fn retire(p: &mut Planner, settings: &Settings) -> Gate {
    if p.stage() > Stage::Retiring {
        return not_scaled_back_up(p);
    }
    // Invariant 4, stated here and not left to the order of the gates.
    p.require(
        "retire v2",
        &[
            ("the traffic shift", p.status.traffic_shifted_at.is_some()),
            (
                "the end of the background migrations",
                p.status.migrations_finished_at.is_some(),
            ),
            ("verification", p.status.verified_at.is_some()),
        ],
    )?;
    // Both ends to the millisecond: from the end of the verification's reads to the end of this
    // reconcile's, so the wait never ends early (at worst it ends one observation late).
    let waited = p.since_read(&p.status.verified_at).unwrap_or_default();
    if waited < settings.retire_source_after {
        let left = settings.retire_source_after - waited;
        // An instant, not a countdown: the status stays the same between polls.
        let from = p.status.verified_at.as_ref().map_or(p.now, |t| t.0);
        let at =
            jiff::Timestamp::from_millisecond(from.as_millisecond() + settings.retire_source_after.as_millis() as i64)
                .unwrap_or(p.now);
        p.condition(
            cond::SOURCE_RETIRED,
            false,
            reason::WAITING_TO_RETIRE,
            format!("v2 is scaled to 0 at {at} (retireSourceAfter)"),
        );
        return Err(Hold::new(
            Phase::RetiringSource,
            reason::WAITING_TO_RETIRE,
            format!(
                "verified; v2 is kept until {at} (retireSourceAfter {})",
                p.spec.strategy.retire_source_after
            ),
            left.min(wait::IDLE),
        ));
    }
    scale_to_zero(p)
}

/// After retirement: v2 scaled back up (by a person, Helm, an HPA) is reported, not fought.
fn not_scaled_back_up(p: &mut Planner) -> Gate {
    let (asked, pods) = v2_counts(p);
    if p.obs.source.is_none() || (asked == 0 && pods == 0) {
        return Ok(());
    }
    let hpa = hpa_note(p, |names| format!(" (HorizontalPodAutoscaler {names} targets it)"));
    let message = format!(
        "the v2 Deployment was scaled back to {asked} after retirement{hpa}; the operator does not fight over it. Scale it to 0, or remove whatever scales it, to continue"
    );
    Err(p.hold_step(
        cond::SOURCE_RETIRED,
        Phase::Blocked,
        reason::SOURCE_SCALED_UP,
        message,
        wait::POLL,
    ))
}

/// The words about HorizontalPodAutoscalers on v2, if any.
fn hpa_note(p: &Planner, words: impl Fn(&str) -> String) -> String {
    match p.obs.hpas_on_source.as_slice() {
        [] => String::new(),
        names => words(&names.join(", ")),
    }
}

/// Never before `verifiedAt` (to the millisecond, where `now` is a whole second read before the
/// observation): the history lists the verification first.
fn retired_at(p: &Planner) -> Time {
    let now = p.now_time();
    match &p.status.verified_at {
        // Rounded up: status times other than verifiedAt are whole seconds.
        Some(v) if v.0 > now.0 => Time(crate::precision::newest_seen(v.0)),
        _ => now,
    }
}

/// Scale v2 to 0 (never delete it here) and record the retirement once no v2 pod is left.
fn scale_to_zero(p: &mut Planner) -> Gate {
    let (asked, pods) = v2_counts(p);
    if p.obs.source.is_none() {
        p.record(Fact::SourceRetired, retired_at(p));
        return Ok(());
    }
    if asked > 0 {
        p.act(Action::ScaleSource(0));
    }
    if asked > 0 || pods > 0 {
        let hpa = hpa_note(p, |names| {
            format!(
                "; HorizontalPodAutoscaler {names} targets v2 and may scale it back: the operator reports that and leaves the HPA to you"
            )
        });
        let message = format!("scaling v2 to 0: {pods} pods left{hpa}");
        return Err(p.hold_step(
            cond::SOURCE_RETIRED,
            Phase::RetiringSource,
            reason::RETIRING,
            message,
            wait::ROLLOUT,
        ));
    }
    p.record(Fact::SourceRetired, retired_at(p));
    p.condition(
        cond::SOURCE_RETIRED,
        true,
        reason::RETIRED,
        "v2 has no pods; its Deployment is kept at 0 replicas",
    );
    Ok(())
}

/// Release the v3 Deployments so deleting this object can never delete production.
pub(super) fn complete(p: &mut Planner) -> Hold {
    if p.road().is_in_place() {
        if let Err(hold) = p.require("complete", &[("the last stop", p.status.finalized_at.is_some())]) {
            return hold;
        }
        p.record_now(Fact::Completed);
        note_handoff(p);
        return Hold::new(Phase::Completed, reason::COMPLETED, completed_message(p), wait::IDLE);
    }
    let done = [
        ("verification", p.status.verified_at.is_some()),
        ("v2's retirement", p.status.source_retired_at.is_some()),
        ("the final version", p.stage() == Stage::Completing),
    ];
    if let Err(hold) = p.require("release the v3 Deployments", &done) {
        return hold;
    }
    for name in owned_v3(p) {
        p.act(Action::ReleaseDeployment(name));
    }
    if p.spec.strategy.delete_source && p.obs.source.is_some() {
        p.act(Action::DeleteSource);
    }
    p.record_now(Fact::Completed);
    note_handoff(p);
    Hold::new(Phase::Completed, reason::COMPLETED, completed_message(p), wait::IDLE)
}

/// Whether what runs can go back to the official chart, or what blocks it (said from the
/// completing decision on, and kept current while completed).
fn note_handoff(p: &mut Planner) {
    let (Some(web), Some(worker)) = (p.obs.web.as_ref(), p.obs.worker.as_ref()) else {
        return;
    };
    let v4 = crate::resources::deployments::views::running_version(Some(web), crate::resources::labels::Role::Web)
        .is_some_and(|v| v.major >= 4);
    let (chart, version) = match v4 {
        true => (crate::handoff::ChartLine::V2, "2.0.0"),
        false => (crate::handoff::ChartLine::V1, "1.5.41"),
    };
    p.status.handoff = Some(match crate::handoff::values(chart, web, worker, p.catalog) {
        Ok(_) => format!(
            "possible: kubectl lfu handoff {} --chart {version} prints the official chart's values for what runs; spec.handoff then moves Langfuse to that release",
            p.name()
        ),
        Err(blocked) => format!("blocked: {}", blocked.join("; ")),
    });
}

/// Names of v3 Deployments that still carry this upgrade's owner reference.
pub(super) fn owned_v3(p: &Planner) -> Vec<String> {
    let uid = p.upgrade.metadata.uid.clone();
    [&p.obs.web, &p.obs.worker]
        .into_iter()
        .flatten()
        .filter(|d| {
            d.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .filter_map(|d| d.metadata.name.clone())
        .collect()
}

pub(super) fn completed_message(p: &Planner) -> String {
    if p.road().is_in_place() {
        return format!(
            "Langfuse runs {} (from {}, every stop of the road reached)",
            super::in_place::destination(p.spec),
            p.status.source_version.clone().unwrap_or_default()
        );
    }
    format!(
        "Langfuse runs {} and v2 is retired; the Deployments are released from this object",
        p.status
            .target_version
            .clone()
            .unwrap_or_else(|| p.spec.target.version.clone())
    )
}

/// Completed: nothing more is written. If the Service's selector was changed away from v3 web
/// and now reaches no ready pod (v2 is at 0), that is an outage: say so, do not fight over it.
/// A selector someone moved on to deliberately (e.g. the v3 chart's own) still has endpoints.
pub(super) fn after_completion(p: &mut Planner) -> Hold {
    note_handoff(p);
    if let Some(hold) = super::data_model::gate(p) {
        return hold;
    }
    if let Some(hold) = super::handoff::gate(p) {
        return hold;
    }
    if p.road().is_in_place() {
        return Hold::new(Phase::Completed, reason::COMPLETED, completed_message(p), wait::IDLE);
    }
    let ours = crate::resources::labels::v3_selector(p.name(), crate::resources::labels::Role::Web);
    let ready = p.obs.endpoints.iter().filter(|e| e.ready).count();
    if let Some(service) = &p.obs.service {
        let current = crate::resources::service::selector_of(service);
        if current != ours && ready == 0 {
            let message = format!(
                "the Service {} selector was changed to {} after completion and it has no ready endpoint: Langfuse is unreachable. Restore it: kubectl patch service {} --type json -p '[{{\"op\":\"replace\",\"path\":\"/spec/selector\",\"value\":{}}}]'",
                p.spec.source.service,
                super::labels_text(&current),
                p.spec.source.service,
                serde_json::to_string(&ours).unwrap_or_default(),
            );
            p.condition(cond::TRAFFIC_SHIFTED, false, reason::SELECTOR_REVERTED, message.clone());
            return Hold::new(Phase::Completed, reason::SELECTOR_REVERTED, message, wait::POLL);
        }
    }
    Hold::new(Phase::Completed, reason::COMPLETED, completed_message(p), wait::IDLE)
}
