//! Rolling back to v2 (abort, an unhealthy v3 web after the shift, or deleting an unfinished
//! upgrade), and what a rollback would cost right now.

use super::retire::owned_v3;
use super::shift::endpoint_split;
use super::workloads::{Desire, Readiness, build, version_now};
use super::{Action, Gate, Hold, Planner, wait};
use crate::api::conditions::reason;
use crate::api::{FINALIZER, Phase, RollbackStatus};
use crate::controller::observed::Reading;
use crate::controller::plan::facts::Fact;
use crate::controller::validate::Settings;
use crate::resources::deployments::applied_hash;
use crate::resources::labels::{Role, v3_selector};
use crate::resources::service::selector_of;

/// `spec.abort`: a person asked to go back to v2.
pub(super) fn abort(p: &mut Planner) -> Gate {
    if let Some(at) = &p.status.source_retired_at {
        return Err(Hold::new(
            Phase::Blocked,
            reason::ABORT_TOO_LATE,
            format!(
                "abort requested, but v2 was retired at {}: events v3 ingested since the shift exist only in ClickHouse and S3, so a rollback would hide them. Set spec.abort: false to continue",
                at.0
            ),
            wait::IDLE,
        ));
    }
    if p.status.provisioning_started_at.is_none() && p.obs.web.is_none() && p.obs.worker.is_none() {
        p.status.rollback = Some(RollbackStatus {
            reason: Some("aborted before anything was changed".into()),
            started_at: Some(p.now_time()),
            ..Default::default()
        });
        p.record_now(Fact::RolledBack);
        return Err(Hold::new(
            Phase::RolledBack,
            reason::ROLLED_BACK,
            "aborted before anything was changed",
            wait::IDLE,
        ));
    }
    if p.status.rollback.as_ref().and_then(|r| r.started_at.as_ref()).is_none() {
        p.status.rollback = Some(RollbackStatus {
            reason: Some("spec.abort is true".into()),
            started_at: Some(p.now_time()),
            ..Default::default()
        });
    }
    roll_back(p, V3After::Delete)
}

/// What a rollback does with v3: delete it when a person asked for the rollback (abort,
/// deletion), else scale it to 0 and keep it for its logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum V3After {
    Delete,
    KeepAtZero,
}

/// Drive the rollback one step; v3 deleted when a person asked for it (abort, deletion),
/// otherwise v3 is scaled to 0 and kept for its logs.
pub(super) fn roll_back(p: &mut Planner, v3: V3After) -> Gate {
    restore(p, v3)?;
    p.record_now(Fact::RolledBack);
    let why = p
        .status
        .rollback
        .as_ref()
        .and_then(|r| r.reason.clone())
        .unwrap_or_default();
    Err(Hold::new(
        Phase::RolledBack,
        reason::ROLLED_BACK,
        format!("rolled back to v2: {why}"),
        wait::IDLE,
    ))
}

/// v2 scaled back and serving, the old selector back, the endpoints on v2, then v3 removed.
fn restore(p: &mut Planner, v3: V3After) -> Result<(), Hold> {
    v2_serves_again(p)?;
    v3_out_of_the_way(p, v3)
}

/// v2 back at its replicas, ready, and the Service selector back on it with no v3 endpoint.
fn v2_serves_again(p: &mut Planner) -> Result<(), Hold> {
    let rolling = |message: String| Hold::new(Phase::RollingBack, reason::ROLLING_BACK, message, wait::ROLLOUT);
    let Some(source) = p.obs.source.as_ref() else {
        return Err(Hold::new(
            Phase::Failed,
            reason::SOURCE_MISSING,
            format!(
                "cannot roll back: the v2 Deployment {:?} is gone; v3 is left serving",
                p.spec.source.deployment
            ),
            wait::IDLE,
        ));
    };
    let want = p.status.source_replicas.unwrap_or(1).max(1);
    let asked = source.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let available = source.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    if asked < want {
        p.act(Action::ScaleSource(want));
        return Err(rolling(format!("scaling v2 back to {want} replicas")));
    }
    if available < 1 {
        return Err(rolling("waiting for a ready v2 pod before moving traffic back".into()));
    }
    if let Some(service) = p.obs.service.as_ref() {
        let current = selector_of(service);
        let v3 = v3_selector(p.name(), Role::Web);
        let previous = p.status.previous_selector.clone().filter(|s| !s.is_empty());
        if current == v3 {
            let Some(previous) = previous else {
                return Err(Hold::new(
                    Phase::Failed,
                    reason::ROLLING_BACK,
                    "the Service points to v3 and its previous selector is unknown; restore it by hand",
                    wait::IDLE,
                ));
            };
            p.act(Action::ApplySelector { selector: previous });
            return Err(rolling("moving the Service selector back to v2".into()));
        }
        let (v3_endpoints, _) = endpoint_split(p.obs);
        if v3_endpoints > 0 {
            return Err(rolling(format!(
                "waiting for {v3_endpoints} v3 endpoints to leave the Service"
            )));
        }
    }
    Ok(())
}

/// After a rollback from v2's road, as after completion: the Service must still reach v2. A
/// switch to v3 that lands late (from a replica that lost its Lease with the write on the
/// wire) would point it at pods that are gone, for good: the previous selector goes back.
/// `None`: the Service is as the rollback left it.
pub(super) fn after_rollback(p: &mut Planner) -> Option<Hold> {
    let current = selector_of(p.obs.service.as_ref()?);
    if current != v3_selector(p.name(), Role::Web) {
        return None;
    }
    let Some(previous) = p.status.previous_selector.clone().filter(|s| !s.is_empty()) else {
        return Some(Hold::new(
            Phase::RolledBack,
            reason::SELECTOR_REVERTED,
            "the Service selects v3 again after the rollback and its previous selector is unknown; restore it by hand",
            wait::IDLE,
        ));
    };
    p.act(Action::ApplySelector { selector: previous });
    Some(Hold::new(
        Phase::RolledBack,
        reason::SELECTOR_REVERTED,
        "the Service selected v3 again after the rollback (a switch from a replica that had lost its Lease?): its previous selector is put back",
        wait::POLL,
    ))
}

/// v3 deleted, or scaled to 0 and kept.
fn v3_out_of_the_way(p: &mut Planner, v3: V3After) -> Result<(), Hold> {
    let rolling = |message: String| Hold::new(Phase::RollingBack, reason::ROLLING_BACK, message, wait::ROLLOUT);
    let existing: Vec<String> = [&p.obs.web, &p.obs.worker]
        .into_iter()
        .flatten()
        .filter_map(|d| d.metadata.name.clone())
        .collect();
    if v3 == V3After::Delete {
        if existing.is_empty() {
            return Ok(());
        }
        for name in existing {
            p.act(Action::DeleteDeployment(name));
        }
        return Err(rolling("removing the v3 Deployments".into()));
    }
    let desire = Desire {
        version: version_now(p),
        web_replicas: 0,
        worker_replicas: 0,
        owned: true,
        migrations: false,
    };
    let Ok((web, worker)) = build(p, &desire) else {
        return Ok(());
    };
    let mut pods = 0;
    for (observed, desired) in [(p.obs.web.clone(), web), (p.obs.worker.clone(), worker)] {
        let Some(observed) = observed else { continue };
        if applied_hash(&observed) != applied_hash(&desired) {
            p.act(Action::ApplyDeployment(Box::new(desired)));
        }
        pods += observed.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    }
    if pods > 0 {
        return Err(rolling(format!("scaling v3 to 0: {pods} pods left")));
    }
    Ok(())
}

/// Deleting the object. Unfinished and v2 still there: roll back, then let go. Completed, rolled
/// back, or v2 retired (v3 is production now): touch nothing but the owner references.
pub(super) fn cleanup(p: &mut Planner) -> Hold {
    let phase = p.status.phase.unwrap_or(Phase::Pending);
    if !p.upgrade.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER) {
        return Hold::new(phase, reason::ROLLED_BACK, "being deleted", wait::IDLE);
    }
    // A source on v3/v4 is never rolled back on deletion: its Deployments are not ours. Judged
    // from the recorded version and, should status have been lost, from what runs.
    let runs_v3 = p
        .obs
        .source
        .as_ref()
        .is_some_and(crate::resources::deployments::views::runs_v3_or_later);
    if p.road().is_in_place() || runs_v3 {
        p.act(Action::RemoveFinalizer);
        return Hold::new(
            phase,
            reason::COMPLETED,
            "deleted; Langfuse left as it runs",
            wait::IDLE,
        );
    }
    let untouched = p.status.provisioning_started_at.is_none() && p.obs.web.is_none() && p.obs.worker.is_none();
    let keep_v3 = p.status.completed_at.is_some() || p.status.source_retired_at.is_some() || p.obs.source.is_none();
    if untouched || p.status.rolled_back_at.is_some() || keep_v3 {
        for name in owned_v3(p) {
            p.act(Action::ReleaseDeployment(name));
        }
        p.act(Action::RemoveFinalizer);
        return Hold::new(
            phase,
            reason::COMPLETED,
            "deleted; v3 Deployments (if any) released and left running",
            wait::IDLE,
        );
    }
    if p.status.rollback.as_ref().and_then(|r| r.started_at.as_ref()).is_none() {
        p.status.rollback = Some(RollbackStatus {
            reason: Some("the LangfuseUpgrade is being deleted".into()),
            started_at: Some(p.now_time()),
            ..Default::default()
        });
    }
    match restore(p, V3After::Delete) {
        Ok(()) => {
            p.act(Action::RemoveFinalizer);
            Hold::new(
                Phase::RolledBack,
                reason::ROLLED_BACK,
                "rolled back to v2 on deletion",
                wait::IDLE,
            )
        }
        Err(hold) => hold,
    }
}

/// What a rollback would mean now, for status.
pub(super) fn rollback_outlook(p: &Planner) -> RollbackStatus {
    let mut out = p.status.rollback.clone().unwrap_or_default();
    if p.road().is_in_place() {
        return in_place_outlook(p, out);
    }
    out.possible = p.status.source_retired_at.is_none()
        && p.obs.source.is_some()
        && p.status.rolled_back_at.is_none()
        && p.status.completed_at.is_none();
    out.loss_if_rolled_back = p.status.traffic_shifted_at.as_ref().filter(|_| out.possible).map(|at| {
        format!(
            "events v3 ingested since {} live only in ClickHouse and S3; v2 would not show them",
            at.0
        )
    });
    out
}

/// For a source already on v3/v4: only the hop under way can be undone, while it is reversible.
fn in_place_outlook(p: &Planner, mut out: RollbackStatus) -> RollbackStatus {
    let hops = super::in_place::planned(p).unwrap_or_default();
    let current = hops.iter().find(|h| {
        super::in_place::recorded(&p.status, h).is_some_and(|s| s.started_at.is_some() && s.finished_at.is_none())
    });
    let (possible, words) = match current {
        _ if p.status.rolled_back_at.is_some() || p.status.completed_at.is_some() => (false, None),
        None => (true, Some("no hop is under way: an abort changes nothing".to_string())),
        Some(hop) => match super::in_place::reversible(p, hop) {
            Ok(()) => (
                true,
                Some(format!(
                    "web and worker go back to {}; what they wrote since stays in the database",
                    hop.from
                )),
            ),
            Err(why) => (
                false,
                Some(format!(
                    "{} -> {} cannot be undone ({why}); only a restore of the backups taken before it",
                    hop.from, hop.to
                )),
            ),
        },
    };
    out.possible = possible;
    out.loss_if_rolled_back = words;
    out
}

/// After the shift v3 web serves production: if no web pod serves for `rollbackAfter`, and v2 is
/// still there to take traffic back, roll back.
pub(super) fn after_shift(p: &mut Planner, settings: &Settings, ready: &Readiness) -> Gate {
    if p.status.traffic_shifted_at.is_none() || p.status.source_retired_at.is_some() {
        p.status.web_unavailable_since = None;
        return Ok(());
    }
    if ready.web_serving {
        p.status.web_unavailable_since = None;
        return error_ratio(p, settings);
    }
    let now = p.now_time();
    let since = p.status.web_unavailable_since.get_or_insert(now).clone();
    let down_for = p.since(&Some(since.clone())).unwrap_or_default();
    // `since` is the plan's whole-second `now`, up to a second before the outage was seen (and
    // before the fault itself): one second more keeps the wait at least rollbackAfter (the e2e
    // saw a rollback 2.5 s after the fault with rollbackAfter 3s).
    let wait_out = settings.rollback_after + std::time::Duration::from_secs(1);
    if down_for >= wait_out {
        let why = format!(
            "v3 web served no ready pod for {}s (rollbackAfter {})",
            down_for.as_secs(),
            p.spec.strategy.rollback_after
        );
        p.status.rollback = Some(RollbackStatus {
            reason: Some(why),
            started_at: Some(p.now_time()),
            ..Default::default()
        });
        return roll_back(p, V3After::KeepAtZero);
    }
    Err(Hold::new(
        Phase::Degraded,
        reason::WEB_NOT_AVAILABLE,
        format!(
            "v3 web has no ready pod since {}; rolling back to v2 after {} unless it recovers",
            since.0, p.spec.strategy.rollback_after
        ),
        // Woken when rollbackAfter runs out, not at the next poll: every second past it is a
        // second production has no web.
        wait_out.saturating_sub(down_for).min(wait::POLL),
    ))
}

/// `strategy.analysis`: roll back when v3 web's error ratio stayed above the threshold for a
/// whole window. It never holds the upgrade: the other steps go on while it watches.
fn error_ratio(p: &mut Planner, settings: &Settings) -> Gate {
    use crate::analysis::{Verdict, judge};
    let Some(a) = &settings.analysis else {
        return Ok(());
    };
    let facts = match &p.obs.error_ratio {
        Reading::NotAsked => return Ok(()),
        Reading::Answered(f) => Ok(f.clone()),
        Reading::Failed(why) => Err(why.clone()),
    };
    // Judged again every step of the window (one status event wakes nothing when it is calm).
    p.requeue_at_most(crate::analysis::step(a.window).max(std::time::Duration::from_secs(1)));
    let window = &p
        .spec
        .strategy
        .analysis
        .as_ref()
        .map(|x| x.window.clone())
        .unwrap_or_default();
    match judge(a.threshold, a.window, &facts) {
        Verdict::Sustained { lowest, points } => {
            let why = format!(
                "v3 web's error ratio stayed above {} for {window} (lowest of {points} points: {lowest:.4})",
                a.threshold
            );
            sustained(p, why)
        }
        Verdict::Above { now } => {
            p.condition(
                crate::api::conditions::ERROR_RATIO_HEALTHY,
                false,
                reason::ERROR_RATIO_HIGH,
                format!(
                    "v3 web's error ratio is {now:.4}, above {}; rolling back to v2 if it stays above for {window}",
                    a.threshold
                ),
            );
            Ok(())
        }
        Verdict::Healthy { .. } => {
            p.condition(
                crate::api::conditions::ERROR_RATIO_HEALTHY,
                true,
                reason::ERROR_RATIO_OK,
                format!("v3 web's error ratio is at or below {}", a.threshold),
            );
            Ok(())
        }
        Verdict::Unavailable(why) => {
            p.condition(
                crate::api::conditions::ERROR_RATIO_HEALTHY,
                false,
                reason::ANALYSIS_UNAVAILABLE,
                format!("{why}; no rollback on missing data"),
            );
            Ok(())
        }
    }
}

/// The error ratio stayed high for the whole window: the rollback starts, its reason recorded.
fn sustained(p: &mut Planner, why: String) -> Gate {
    p.condition(
        crate::api::conditions::ERROR_RATIO_HEALTHY,
        false,
        reason::ERROR_RATIO_SUSTAINED,
        why.clone(),
    );
    p.status.rollback = Some(RollbackStatus {
        reason: Some(why),
        started_at: Some(p.now_time()),
        ..Default::default()
    });
    roll_back(p, V3After::KeepAtZero)
}
