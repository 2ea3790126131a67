//! Back to `legacy` before the cutover: the old tables never stopped being written, so Langfuse
//! keeps working; what the events tables received stays there, no longer kept current.

use super::{Planner, roll};
use crate::api::DataModelStatus;
use crate::api::conditions::{self as cond, reason};
use crate::controller::plan::Gate;
use crate::data_model::flags::Setting;

pub(super) fn to_legacy(p: &mut Planner, dm: &mut DataModelStatus) -> Gate {
    if dm.dual_since.is_none() && roll::written(p, Setting::Legacy) {
        let message = match &dm.backed_out_at {
            Some(t) => format!("legacy (backed out at {}): Langfuse writes only the old tables", t.0),
            None => "legacy: Langfuse writes only the old tables (v3 behaviour)".to_string(),
        };
        p.condition(cond::DATA_MODEL, true, reason::DATA_MODEL_REACHED, message);
        return Ok(());
    }
    roll::apply(p, Setting::Legacy, None)?;
    let what = left_behind(dm);
    *dm = DataModelStatus {
        backed_out_at: Some(p.now_time()),
        ..DataModelStatus::default()
    };
    p.condition(
        cond::DATA_MODEL,
        true,
        reason::BACKED_OUT,
        format!("back on legacy: {what}"),
    );
    Ok(())
}

/// What a back-out leaves, said plainly.
fn left_behind(dm: &DataModelStatus) -> String {
    let mut said = vec![
        "the old tables were written all along, so nothing ingested is lost".to_string(),
        "events_full and events_core keep what the dual write put there, no longer kept current (a later dual write adds to them; ReplacingMergeTree de-duplicates)".to_string(),
        "staging rows not yet propagated expire by the staging table's 48-hour TTL".to_string(),
    ];
    if dm.backfill_started_at.is_some() {
        said.push("the backfill rows keep their state and stop (the backfill flag is off): a later backfill resumes them; their copies in events_full stay".to_string());
    }
    said.join("; ")
}
