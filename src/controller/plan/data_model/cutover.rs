//! The point of commitment: `events_only` only when the historic data is in, the counts agree
//! up to a fixed instant, no producer `events_only` would reject was seen over
//! `producerWindow`, and a person named the cutover in `spec.dataModel.acknowledge`. Then the
//! optional cleanup (row M5 drops the scratch table), on its own acknowledgement.

use super::{Planner, moving, roll};
use crate::api::conditions::{self as cond, reason};
use crate::api::{DataModelStatus, HistoricData, IrreversibleStep, Phase};
use crate::controller::plan::{Action, Gate, wait};
use crate::controller::validate::DataModelSettings;
use crate::data_model::CountWindow;
use crate::data_model::counts::mismatches;
use crate::data_model::flags::Setting;
use crate::data_model::producers::incompatible;
use crate::data_model::propagation::human;

/// The counts' window, fixed by recorded facts: with the backfill, every row before it
/// started; with the retention window, the rows since the dual write began, up to one alert
/// period before the window ended (what the propagation has surely carried).
pub(crate) fn count_window(historic: HistoricData, s: &DataModelSettings, dm: &DataModelStatus) -> Option<CountWindow> {
    match historic {
        HistoricData::Backfill => Some(CountWindow {
            from: None,
            until: dm.backfill_started_at.as_ref()?.0,
        }),
        HistoricData::RetentionWindow => Some(CountWindow {
            from: Some(dm.dual_since.as_ref()?.0),
            until: dm.historic_done_at.as_ref()?.0 - jiff::SignedDuration::try_from(s.lag_alert).ok()?,
        }),
    }
}

pub(super) fn gates(p: &mut Planner, s: &DataModelSettings, dm: &mut DataModelStatus) -> Gate {
    if dm.cutover_started_at.is_some() {
        return Ok(());
    }
    counts(p, s, dm)?;
    producers(p, s, dm)?;
    if !p.spec.data_model.acknowledge.contains(&IrreversibleStep::Cutover) {
        let message = format!(
            "ready for the cutover: the historic data is in, the counts agree up to {}, no incompatible producer in {}; events_only cannot be undone (ingestion after it lives only in the events tables): add Cutover to spec.dataModel.acknowledge",
            dm.counts_until.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
            human(s.producer_window)
        );
        return Err(moving(p, reason::AWAITING_ACKNOWLEDGEMENT, message, wait::IDLE));
    }
    // Forward only from here: the fact before the first events_only write.
    dm.cutover_started_at = Some(p.now_time());
    p.act(Action::RecordFacts);
    Ok(())
}

fn counts(p: &mut Planner, s: &DataModelSettings, dm: &mut DataModelStatus) -> Gate {
    if dm.counts_matched_at.is_some() {
        return Ok(());
    }
    let historic = p.spec.data_model.historic_data;
    let Some(window) = count_window(historic, s, dm) else {
        return p.require("count the events tables", &[("the window's facts", false)]);
    };
    dm.counts_until = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(window.until));
    let counted = super::events_part(p, "the counts of the old and the events tables", |e| e.counts.clone())?;
    let found = mismatches(&counted, historic == HistoricData::Backfill);
    if found.is_empty() {
        dm.count_mismatches.clear();
        dm.counts_matched_at = Some(p.now_time());
        return Ok(());
    }
    let first = &found[0];
    let message = format!(
        "the events tables hold fewer rows than the old ones in {} project-months up to {} (first: project {} {} {}: {} old, {} in events); the cutover waits: check the backfill rows and the propagation",
        found.len(),
        window.until,
        first.project,
        first.month,
        first.table,
        first.old,
        first.events
    );
    dm.count_mismatches = found.into_iter().take(50).collect();
    Err(moving(p, reason::COUNTS_MISMATCH, message, wait::PERSON))
}

fn producers(p: &mut Planner, s: &DataModelSettings, dm: &mut DataModelStatus) -> Gate {
    let dual = p.since(&dm.dual_since).unwrap_or_default();
    if dual < s.producer_window {
        let message = format!(
            "watching producers in events_core for {} of {} (spec.dataModel.producerWindow) before the cutover",
            human(dual),
            human(s.producer_window)
        );
        p.requeue_at_most(s.producer_window - dual);
        return Err(moving(p, reason::INCOMPATIBLE_PRODUCERS, message, wait::POLL));
    }
    let rows = super::events_part(p, "the producers in events_core", |e| e.producers.clone())?;
    let bad = incompatible(&rows);
    dm.producers = bad.iter().take(50).cloned().collect();
    let Some(first) = bad.first() else {
        return Ok(());
    };
    let message = format!(
        "{} producers seen in the last {} would be rejected by events_only (first: project {}, {} {} with key {}, {} events: {}); the cutover waits until none is seen",
        bad.len(),
        human(s.producer_window),
        first.project,
        first.sdk_name,
        first.sdk_version,
        first.public_key,
        first.events,
        first.remedy
    );
    Err(moving(p, reason::INCOMPATIBLE_PRODUCERS, message, wait::POLL))
}

/// `events_only` on web, then the worker; its time recorded when both are Available.
pub(super) fn cut_over(p: &mut Planner, dm: &mut DataModelStatus) -> Gate {
    if dm.cutover_at.is_some() {
        return Ok(());
    }
    p.require(
        "cut over to events_only",
        &[("the cutover's start recorded", dm.cutover_started_at.is_some())],
    )?;
    roll::apply(p, Setting::Events, None)?;
    dm.cutover_at = Some(p.now_time());
    Ok(())
}

/// Row M5 drops the scratch table, once a person named `Cleanup`; its start recorded before the
/// first write, and from then on it goes on (taking `Cleanup` back does not undo a drop).
pub(super) fn cleanup(p: &mut Planner, dm: &mut DataModelStatus) -> Gate {
    let asked = p.spec.data_model.acknowledge.contains(&IrreversibleStep::Cleanup);
    let started = dm.cleanup_started_at.is_some();
    if dm.cleaned_up_at.is_some() || !(asked || started) || p.spec.data_model.historic_data != HistoricData::Backfill {
        return Ok(());
    }
    if !started {
        dm.cleanup_started_at = Some(p.now_time());
        p.act(Action::RecordFacts);
    }
    roll::apply(p, Setting::EventsCleanup, None)?;
    let m5 = p
        .obs
        .postgres
        .answered()
        .and_then(|f| f.backfill_rows.as_ref())
        .and_then(|rows| rows.iter().find(|r| r.step() == Some(5)).cloned());
    match m5 {
        Some(r) if r.finished() => {
            dm.cleaned_up_at = Some(p.now_time());
            Ok(())
        }
        Some(r) if r.failed_at.is_some() => {
            let message = format!(
                "row M5 failed to drop observations_pid_tid_sorting: {}",
                r.failed_reason.unwrap_or_default()
            );
            Err(p.hold_step(
                cond::DATA_MODEL,
                Phase::Blocked,
                reason::BACKFILL_ROW_FAILED,
                message,
                wait::PERSON,
            ))
        }
        _ => Err(moving(
            p,
            reason::MOVING_DATA_MODEL,
            "row M5 drops the backfill's scratch table observations_pid_tid_sorting".into(),
            wait::POLL,
        )),
    }
}
