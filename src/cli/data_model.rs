//! The data-model road in `kubectl lfu status`: a second road of stages, the propagation's lag,
//! the backfill's progress per row, the producers `events_only` would reject and the counts
//! that disagree. Pure: from the object alone.

use serde::Serialize;

use crate::api::{BackfillRowStatus, CountMismatch, DataModel, DataModelStage, LangfuseUpgrade, ProducerStatus};

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataModelView {
    pub target: DataModel,
    /// Each stage with where it is: `done`, `now` or `ahead`.
    pub stages: Vec<(String, String)>,
    pub propagation: Option<String>,
    pub rows: Vec<BackfillRowStatus>,
    pub producers: Vec<ProducerStatus>,
    pub mismatches: Vec<CountMismatch>,
}

/// The stages a target walks through, in order.
fn stages(target: DataModel) -> Vec<(DataModelStage, &'static str)> {
    let all = [
        (DataModelStage::Legacy, "legacy"),
        (DataModelStage::Dual, "dual"),
        (DataModelStage::HistoricDone, "historic data"),
        (DataModelStage::EventsOnly, "events_only"),
        (DataModelStage::CleanedUp, "cleanup"),
    ];
    let last = match target {
        DataModel::Legacy => 1,
        DataModel::Dual => 2,
        DataModel::Events => all.len(),
    };
    all[..last].to_vec()
}

pub fn data_model_view(u: &LangfuseUpgrade) -> Option<DataModelView> {
    let target = u.spec.target.data_model?;
    let dm = u.status.as_ref()?.data_model.clone().unwrap_or_default();
    let reached = |stage: DataModelStage| match stage {
        DataModelStage::HistoricDone => dm.stage >= DataModelStage::HistoricDone,
        other => dm.stage >= other,
    };
    let mut now_marked = false;
    let stages = stages(target)
        .into_iter()
        .map(|(stage, word)| {
            let state = match (reached(stage), now_marked) {
                (true, _) => "done",
                (false, false) => {
                    now_marked = true;
                    "now"
                }
                (false, true) => "ahead",
            };
            (word.to_string(), state.to_string())
        })
        .collect();
    let propagation = dm.propagation.as_ref().filter(|_| dm.cutover_at.is_none()).map(|p| {
        let loss = p
            .hours_before_loss
            .map(|h| format!(", {h}h before the staging TTL drops the oldest"))
            .unwrap_or_default();
        format!(
            "cursor {}, {} partitions waiting, lag {}s{loss}",
            p.cursor.as_deref().unwrap_or("(none yet)"),
            p.backlog,
            p.lag_seconds
        )
    });
    Some(DataModelView {
        target,
        stages,
        propagation,
        rows: dm.rows,
        producers: dm.producers,
        mismatches: dm.count_mismatches,
    })
}

/// The section's lines (no colour: the stage marks carry the state).
pub fn data_model_lines(v: &DataModelView, terminal: bool) -> Vec<String> {
    let mark = |state: &str| match (state, terminal) {
        ("done", true) => " ✓",
        ("now", true) => " …",
        ("done", false) => " (done)",
        ("now", false) => " (now)",
        _ => "",
    };
    let road: Vec<String> = v.stages.iter().map(|(w, s)| format!("{w}{}", mark(s))).collect();
    let mut out = vec![format!("Data model  {}   (target {:?})", road.join("  ->  "), v.target)];
    if let Some(p) = &v.propagation {
        out.push(format!("  propagation  {p}"));
    }
    for r in &v.rows {
        let work = match (r.step.as_str(), r.total) {
            ("M4", _) => format!("{} items", r.done),
            (_, 0) => String::new(),
            (_, total) => format!("{}/{total} chunks", r.done),
        };
        let trouble = match (r.failed_chunks, r.retries, r.resets) {
            (0, 0, 0) => String::new(),
            (f, n, resets) => format!("  ({f} failed, {n} retries, {resets} resets)"),
        };
        let failed = r.failed_reason.as_ref().map(|f| format!("  {f}")).unwrap_or_default();
        out.push(format!("  {:<3} {:<15} {work}{trouble}{failed}", r.step, r.phase));
    }
    if !v.producers.is_empty() {
        out.push("  producers events_only would reject:".into());
        for p in &v.producers {
            out.push(format!(
                "    {}  {} {}  {}  {} events ({}): {}",
                p.project, p.sdk_name, p.sdk_version, p.public_key, p.events, p.source, p.remedy
            ));
        }
    }
    if !v.mismatches.is_empty() {
        out.push("  counts that disagree (old -> events):".into());
        for m in &v.mismatches {
            out.push(format!(
                "    {} {} {}: {} -> {}",
                m.project, m.month, m.table, m.old, m.events
            ));
        }
    }
    out
}
