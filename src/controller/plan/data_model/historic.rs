//! The data written before the dual write began: copied by rows M1-M4 (the historic backfill,
//! started only after the dual write was healthy for `dualWriteHealthyFor` and with the disk
//! for it), or left to age out over one retention window of dual write.

use super::{Planner, backfill_setting, moving, roll};
use crate::api::conditions::{self as cond, reason};
use crate::api::{BackfillRowStatus, DataModelStatus, HistoricData, Phase};
use crate::controller::plan::{Action, Gate, wait};
use crate::controller::validate::DataModelSettings;
use crate::data_model::progress::{BackfillRow, RowReset, reset_for};
use crate::data_model::propagation::human;
use crate::databases::Remedy;

/// Resets of one failed row (the documented remedy) before a person is asked.
pub(super) const MAX_RESETS: u32 = 2;

pub(super) fn historic(p: &mut Planner, s: &DataModelSettings, dm: &mut DataModelStatus) -> Gate {
    if dm.historic_done_at.is_some() {
        return Ok(());
    }
    match p.spec.data_model.historic_data {
        HistoricData::RetentionWindow => window(p, s, dm),
        HistoricData::Backfill => backfill(p, s, dm),
    }
}

fn window(p: &mut Planner, s: &DataModelSettings, dm: &mut DataModelStatus) -> Gate {
    let window = s.retention_window.unwrap_or_default();
    let dual = p.since(&dm.dual_since).unwrap_or_default();
    if dual >= window {
        dm.historic_done_at = Some(p.now_time());
        return Ok(());
    }
    let message = format!(
        "historicData RetentionWindow: dual for {} of {}; data older than the dual write leaves the old tables by retention before the cutover",
        human(dual),
        human(window)
    );
    p.requeue_at_most(window - dual);
    Err(moving(p, reason::RETENTION_WINDOW, message, wait::IDLE))
}

fn backfill(p: &mut Planner, s: &DataModelSettings, dm: &mut DataModelStatus) -> Gate {
    if dm.backfill_started_at.is_none() {
        let healthy = p.since(&dm.healthy_since).unwrap_or_default();
        if healthy < s.healthy_for {
            let message = format!(
                "the dual write has been healthy for {} of the {} the backfill waits for (spec.dataModel.dualWriteHealthyFor)",
                human(healthy),
                human(s.healthy_for)
            );
            p.requeue_at_most(s.healthy_for - healthy);
            return Err(moving(p, reason::WAITING_FOR_HEALTHY_DUAL_WRITE, message, wait::POLL));
        }
        disk(p, dm)?;
        // The fact before the flag: a backfill turned on that status does not know would be
        // missed by a back-out's account of what it leaves.
        dm.backfill_started_at = Some(p.now_time());
        p.act(Action::RecordFacts);
    }
    let resets: u32 = dm.rows.iter().map(|r| r.resets).sum();
    roll::apply(
        p,
        backfill_setting(HistoricData::Backfill),
        (resets > 0).then_some(resets),
    )?;
    rows(p, dm)
}

fn disk(p: &mut Planner, dm: &mut DataModelStatus) -> Gate {
    if let Some(r) = p.obs.clickhouse.answered().and_then(|c| c.v4.answered()) {
        dm.free_bytes = r.free_bytes;
        dm.data_bytes = r.observations_bytes;
    }
    match crate::controller::plan::in_place::v4_infra::disk_headroom(p) {
        Some((true, _)) => Ok(()),
        Some((false, text)) => {
            let message = format!("{text}: free disk on ClickHouse before the backfill starts");
            Err(p.hold_step(
                cond::DATA_MODEL,
                Phase::Blocked,
                reason::DISK_HEADROOM,
                message,
                wait::PERSON,
            ))
        }
        None => {
            let message = "ClickHouse's free disk and the size of observations could not be read (system.disks, system.parts): the backfill needs about three times observations free".to_string();
            Err(p.hold_step(
                cond::DATA_MODEL,
                Phase::Blocked,
                reason::DISK_HEADROOM,
                message,
                wait::PERSON,
            ))
        }
    }
}

/// M1-M4 finished; a failed one reset as its script says, at most [`MAX_RESETS`] times.
fn rows(p: &mut Planner, dm: &mut DataModelStatus) -> Gate {
    let rows: Vec<BackfillRow> = match p.obs.postgres.answered().map(|f| f.backfill_rows.clone()) {
        Some(Some(rows)) => rows,
        _ => {
            let message = match p.obs.postgres.failed() {
                Some(e) => format!("the backfill rows could not be read: {e}"),
                None => "reading the backfill rows".into(),
            };
            return Err(moving(p, reason::POSTGRES_UNAVAILABLE, message, wait::POLL));
        }
    };
    let resets = |name: &str| dm.rows.iter().find(|r| r.name == name).map_or(0, |r| r.resets);
    dm.rows = rows.iter().map(|r| r.status(resets(&r.name))).collect();
    let chain: Vec<&BackfillRow> = rows.iter().filter(|r| r.step().is_some_and(|n| n <= 4)).collect();
    if chain.len() < 4 {
        let message = format!(
            "{} of the backfill rows M1-M4 registered; the v4 web registers them at its start",
            chain.len()
        );
        return Err(moving(p, reason::BACKFILLING, message, wait::POLL));
    }
    if let Some(failed) = chain.iter().find(|r| r.failed_at.is_some()) {
        return Err(reset(p, dm, failed));
    }
    if chain.iter().all(|r| r.finished()) {
        dm.historic_done_at = Some(p.now_time());
        return Ok(());
    }
    let progress: Vec<String> = dm.rows.iter().filter(|r| r.step != "M5").map(progress_text).collect();
    let message = format!("historic backfill: {}", progress.join("; "));
    // One small read of the rows: the last one finishing moves the road on without a long wait.
    Err(moving(p, reason::BACKFILLING, message, wait::DB_RETRY))
}

fn progress_text(r: &BackfillRowStatus) -> String {
    let chunks = match (r.total, r.step.as_str()) {
        (_, "M4") => format!(" {} items", r.done),
        (0, _) => String::new(),
        (total, _) => format!(" {}/{total} chunks", r.done),
    };
    let trouble = match (r.failed_chunks, r.retries) {
        (0, 0) => String::new(),
        (f, n) => format!(" ({f} failed, {n} retries)"),
    };
    format!("{} {}{chunks}{trouble}", r.step, r.phase)
}

fn reset(p: &mut Planner, dm: &mut DataModelStatus, failed: &BackfillRow) -> crate::controller::plan::Hold {
    let step = failed.step().map(|n| format!("M{n}")).unwrap_or_default();
    let why = failed.failed_reason.clone().unwrap_or_default();
    let Some(row) = dm.rows.iter_mut().find(|r| r.name == failed.name) else {
        return moving(p, reason::BACKFILLING, format!("{step} failed: {why}"), wait::POLL);
    };
    if row.resets >= MAX_RESETS {
        let message = format!(
            "backfill row {step} ({}) failed again after {MAX_RESETS} resets: {why}. Fix the cause (often ClickHouse memory or disk), then clear its failed_at and restart the worker, or use Retry in Langfuse's admin UI",
            failed.name
        );
        return p.hold_step(
            cond::DATA_MODEL,
            Phase::Blocked,
            reason::BACKFILL_ROW_FAILED,
            message,
            wait::PERSON,
        );
    }
    row.resets += 1;
    let n = row.resets;
    // The count first: a reset whose record was lost would be made again, never one too many.
    p.act(Action::RecordFacts);
    p.act(Action::Remedy(Remedy::ResetBackfillRow {
        name: failed.name.clone(),
        reload_chunks: reset_for(failed) == RowReset::ReloadChunks,
    }));
    let resets: u32 = dm.rows.iter().map(|r| r.resets).sum();
    let _ = roll::apply(p, backfill_setting(HistoricData::Backfill), Some(resets));
    let message = format!("backfill row {step} failed ({why}): reset ({n} of {MAX_RESETS}) and the worker restarted");
    moving(p, reason::REMEDY_APPLIED, message, wait::ROLLOUT)
}
