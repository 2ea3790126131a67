//! The backfill rows M1-M5 (`background_migrations`, names `20260701_v4_step_N_...`): their
//! progress read from `state` as the scripts write it (§3 of the reference).

use jiff::Timestamp;

use crate::api::BackfillRowStatus;

/// One backfill row as read from Postgres.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct BackfillRow {
    pub name: String,
    pub state: serde_json::Value,
    pub finished_at: Option<Timestamp>,
    pub failed_at: Option<Timestamp>,
    pub failed_reason: Option<String>,
    /// `worker_id` set: a worker took the row at least once.
    pub taken: bool,
}

impl BackfillRow {
    /// 1-5 from the name (`..._v4_step_3_...`), `None` for any other row.
    pub fn step(&self) -> Option<u8> {
        let rest = self.name.split("_v4_step_").nth(1)?;
        let n: u8 = rest.split('_').next()?.parse().ok()?;
        (1..=5).contains(&n).then_some(n)
    }

    pub fn finished(&self) -> bool {
        self.finished_at.is_some() && self.failed_at.is_none()
    }

    /// What `status.dataModel.rows` shows of it (`resets` kept from the last status).
    pub fn status(&self, resets: u32) -> BackfillRowStatus {
        let todos = self.state.get("todos").and_then(|t| t.as_array());
        let count = |status: &str| {
            todos.map_or(0, |t| {
                t.iter()
                    .filter(|c| c.get("status").and_then(|s| s.as_str()) == Some(status))
                    .count()
            })
        };
        let retries: u64 = todos.map_or(0, |t| {
            t.iter()
                .filter_map(|c| c.get("retryCount").and_then(|r| r.as_u64()))
                .sum()
        });
        let (done, total) = match self.step() {
            Some(4) => (self.state.get("processedDris").and_then(|v| v.as_u64()).unwrap_or(0), 0),
            _ => (count("completed") as u64, todos.map_or(0, |t| t.len()) as u64),
        };
        let phase = if self.finished() {
            "finished".to_string()
        } else if self.failed_at.is_some() {
            "failed".to_string()
        } else {
            self.state
                .get("phase")
                .and_then(|p| p.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| if self.taken { "init" } else { "waiting" }.to_string())
        };
        BackfillRowStatus {
            step: self.step().map(|n| format!("M{n}")).unwrap_or_default(),
            name: self.name.clone(),
            phase,
            done,
            total,
            failed_chunks: count("failed") as u32,
            retries: retries.min(u64::from(u32::MAX)) as u32,
            failed_reason: self.failed_reason.as_ref().map(|r| r.chars().take(300).collect()),
            resets,
        }
    }
}

/// The documented remedy for a failed row: clear `failed_at` and re-run with `retryFailed`;
/// for M3 whose processed part was merged away, also `chunksLoaded = false` (the script's own
/// hint). The worker picks the row up at its next start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowReset {
    RetryFailed,
    ReloadChunks,
}

pub fn reset_for(row: &BackfillRow) -> RowReset {
    let merged = row
        .failed_reason
        .as_deref()
        .is_some_and(|r| r.contains("chunksLoaded") || r.to_lowercase().contains("merged"));
    match (row.step(), merged) {
        (Some(3), true) => RowReset::ReloadChunks,
        _ => RowReset::RetryFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(name: &str, state: serde_json::Value) -> BackfillRow {
        BackfillRow {
            name: name.into(),
            state,
            taken: true,
            ..BackfillRow::default()
        }
    }

    #[test]
    fn chunks_retries_and_phase_come_from_state() {
        let r = row(
            "20260701_v4_step_3_backfill_events_full_from_observations",
            json!({"phase": "backfill", "chunksLoaded": true, "todos": [
                {"status": "completed", "retryCount": 0},
                {"status": "completed", "retryCount": 2},
                {"status": "failed", "retryCount": 3, "error": "Memory limit"},
                {"status": "pending"}
            ]}),
        );
        let s = r.status(1);
        assert_eq!((s.step.as_str(), s.phase.as_str()), ("M3", "backfill"));
        assert_eq!((s.done, s.total, s.failed_chunks, s.retries, s.resets), (2, 4, 1, 5, 1));
    }

    #[test]
    fn m4_counts_processed_items_and_columns_outrank_state() {
        let mut r = row(
            "20260701_v4_step_4_backfill_events_full_from_dataset_run_items",
            json!({"phase": "processing", "processedDris": 600, "cursor": "x"}),
        );
        assert_eq!((r.status(0).done, r.status(0).total), (600, 0));
        r.failed_at = Some(Timestamp::UNIX_EPOCH);
        assert_eq!(r.status(0).phase, "failed");
        let waiting = BackfillRow {
            name: "20260701_v4_step_1_create_root_spans_from_traces".into(),
            ..BackfillRow::default()
        };
        assert_eq!(waiting.status(0).phase, "waiting");
        assert_eq!(waiting.step(), Some(1));
        assert_eq!(row("20251027_backfill_events_historic", json!({})).step(), None);
    }

    #[test]
    fn a_merged_part_reloads_the_chunks_anything_else_retries_the_failed_ones() {
        let mut r = row("20260701_v4_step_3_backfill_events_full_from_observations", json!({}));
        r.failed_reason = Some("part all_1_1_0 was merged away; re-run with state.chunksLoaded = false".into());
        assert_eq!(reset_for(&r), RowReset::ReloadChunks);
        r.failed_reason = Some("3 chunks failed after retries".into());
        assert_eq!(reset_for(&r), RowReset::RetryFailed);
        let mut m1 = row("20260701_v4_step_1_create_root_spans_from_traces", json!({}));
        m1.failed_reason = Some("merged".into());
        assert_eq!(reset_for(&m1), RowReset::RetryFailed);
    }
}
