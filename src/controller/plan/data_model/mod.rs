//! v4's data-model road (`spec.target.dataModel`), walked once the release road is completed:
//! `legacy` → `dual` (its propagation watched) → the historic data (backfill rows M1-M4, or
//! one retention window) → the cutover to `events_only` (counts, producers, a person's
//! acknowledgement: the point of commitment) → the scratch table's cleanup. Each stage's
//! flags go on web, then the worker, by a field manager of their own; each stage's fact is
//! recorded in `status.dataModel`. Before the cutover it can go back to `legacy`; after it,
//! only forward.

mod back_out;
mod cutover;
pub(crate) use cutover::count_window;
mod dual;
mod historic;
mod roll;

use super::{Gate, Hold, Planner, wait};
use crate::api::conditions::{self as cond, reason};
use crate::api::{DataModel, DataModelStage, DataModelStatus, HistoricData, Phase};
use crate::controller::validate::DataModelSettings;
use crate::data_model::flags::Setting;

/// What the data-model road decides once the upgrade is completed; `None` when there is
/// nothing to drive (no target, or the target reached with nothing left to watch).
pub(super) fn gate(p: &mut Planner) -> Option<Hold> {
    let target = p.spec.target.data_model?;
    if p.spec.paused {
        let message = "spec.paused is true: the data-model road changes nothing until it is false";
        return Some(Hold::new(Phase::Paused, reason::PAUSED, message, wait::IDLE));
    }
    let settings = match crate::controller::validate::validate(p.upgrade) {
        Ok(s) => s.data_model,
        Err(e) => {
            let message = format!("invalid spec: {e}");
            return Some(Hold::new(Phase::Pending, reason::INVALID_SPEC, message, wait::IDLE));
        }
    };
    let mut dm = p.status.data_model.clone().unwrap_or_default();
    let walked = walk(p, target, &settings, &mut dm);
    dm.stage = stage_of(&dm);
    p.status.data_model = Some(dm);
    match walked {
        Err(hold) => Some(hold),
        Ok(None) => None,
        Ok(Some(watch)) => Some(watch),
    }
}

/// The stage the recorded facts say.
pub(crate) fn stage_of(dm: &DataModelStatus) -> DataModelStage {
    match () {
        _ if dm.cleaned_up_at.is_some() => DataModelStage::CleanedUp,
        _ if dm.cutover_at.is_some() => DataModelStage::EventsOnly,
        _ if dm.historic_done_at.is_some() => DataModelStage::HistoricDone,
        _ if dm.backfill_started_at.is_some() => DataModelStage::Backfilling,
        _ if dm.dual_since.is_some() => DataModelStage::Dual,
        _ => DataModelStage::Legacy,
    }
}

/// Through every gate to `target`: `Ok(None)` reached, `Ok(Some)` reached and watched (the
/// dual write), `Err` held on the way.
fn walk(
    p: &mut Planner,
    target: DataModel,
    s: &DataModelSettings,
    dm: &mut DataModelStatus,
) -> Result<Option<Hold>, Hold> {
    can_walk(p)?;
    let committed = dm.cutover_started_at.is_some();
    if committed && target < DataModel::Events {
        let message = format!(
            "spec.target.dataModel {target:?}: the cutover to events_only started at {}; it cannot be undone (data ingested since exists only in the events tables): set it back to Events",
            dm.cutover_started_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default()
        );
        return Err(blocked(p, reason::FORWARD_ONLY, message));
    }
    if target == DataModel::Legacy {
        return back_out::to_legacy(p, dm).map(|()| None);
    }
    if !committed {
        dual::enter(p, dm)?;
        let watched = dual::watch(p, s, dm);
        if target == DataModel::Dual {
            return dual::stay(p, s, dm, watched).map(Some);
        }
        watched?;
        historic::historic(p, s, dm)?;
        cutover::gates(p, s, dm)?;
    }
    cutover::cut_over(p, dm)?;
    cutover::cleanup(p, dm)?;
    let message = match dm.cleaned_up_at {
        Some(_) => "events_only, the backfill's scratch table dropped: the data-model road is done".to_string(),
        None => "events_only: Langfuse writes only the events tables (add Cleanup to spec.dataModel.acknowledge to drop the backfill's scratch table)".to_string(),
    };
    p.condition(cond::DATA_MODEL, true, reason::DATA_MODEL_REACHED, message);
    Ok(None)
}

/// The road needs v4 running, and Deployments the operator still writes.
fn can_walk(p: &mut Planner) -> Gate {
    let version = p
        .status
        .target_version
        .as_deref()
        .and_then(crate::version::Version::parse);
    if version.is_none_or(|v| v.major < 4) {
        let message = format!(
            "spec.target.dataModel needs Langfuse v4; this upgrade reached {}",
            p.status
                .target_version
                .clone()
                .unwrap_or_else(|| "no release yet".into())
        );
        return Err(blocked(p, reason::DATA_MODEL_BLOCKED, message));
    }
    if p.status.chart_handoff.as_ref().is_some_and(|h| h.switched_at.is_some()) {
        let message = "Langfuse was handed to the official chart: walk the data model with its values (the four LANGFUSE_*V4* variables), or create a LangfuseUpgrade naming its Deployments".to_string();
        return Err(blocked(p, reason::DATA_MODEL_BLOCKED, message));
    }
    Ok(())
}

fn blocked(p: &mut Planner, why: cond::Reason, message: String) -> Hold {
    p.hold_step(cond::DATA_MODEL, Phase::Blocked, why, message, wait::IDLE)
}

/// A step of the road under way.
fn moving(p: &mut Planner, why: cond::Reason, message: String, requeue: std::time::Duration) -> Hold {
    p.hold_step(cond::DATA_MODEL, Phase::MigratingDataModel, why, message, requeue)
}

/// One part of this reconcile's read of the events tables, or the hold that says why it is not
/// there (not asked this look: at once; failed: after a poll).
fn events_part<T>(
    p: &mut Planner,
    what: &str,
    pick: impl FnOnce(&crate::data_model::EventsFacts) -> Option<T>,
) -> Result<T, Hold> {
    use crate::reading::Reading;
    let read = p.obs.clickhouse.answered().map(|c| &c.events);
    let failed = match read {
        Some(Reading::Answered(e)) => match pick(e) {
            Some(part) => return Ok(part),
            None => None,
        },
        Some(Reading::Failed(e)) => Some(e.clone()),
        _ => None,
    };
    Err(match failed {
        Some(e) => moving(
            p,
            reason::CLICKHOUSE_UNAVAILABLE,
            format!("{what} could not be read: {e}"),
            wait::POLL,
        ),
        None => moving(p, reason::MOVING_DATA_MODEL, format!("reading {what}"), wait::NOW),
    })
}

/// The flags the stage after the dual write runs with.
fn backfill_setting(historic: HistoricData) -> Setting {
    match historic {
        HistoricData::Backfill => Setting::DualBackfill,
        HistoricData::RetentionWindow => Setting::Dual,
    }
}
