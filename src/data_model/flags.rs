//! The five variables each data-model stage runs with, written explicitly and identically on
//! web and worker (the image defaults flip between v3 and v4, and one missing variable can make
//! the v4 worker exit at start).

use crate::api::{DataModel, HistoricData};
use crate::resources::v4_env::{HISTORIC_BACKFILL, NATIVE_OTEL, PREVIEW_OPT_IN, WRITE_MODE};

pub const DROP_SCRATCH: &str = "LANGFUSE_BACKGROUND_MIGRATION_V4_DROP_PID_TID_SORTING_TABLES";

/// Every variable the data-model road owns.
pub const OWNED: [&str; 5] = [WRITE_MODE, NATIVE_OTEL, PREVIEW_OPT_IN, HISTORIC_BACKFILL, DROP_SCRATCH];

/// A stage's settings, the step of the road that writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    Legacy,
    Dual,
    /// `dual`, the historic backfill on (rows M1-M4 run at the worker's start).
    DualBackfill,
    Events,
    /// `events_only` and row M5 allowed to drop the scratch table.
    EventsCleanup,
}

impl Setting {
    /// The values, in [`OWNED`]'s order. The backfill gate stays on after the backfill ran (a
    /// row started and then gated off would show ACTIVE forever) and off where the user chose
    /// the retention window.
    pub fn values(self, historic: HistoricData) -> [(&'static str, &'static str); 5] {
        let backfill = match (self, historic) {
            (Setting::Legacy | Setting::Dual, _) => "false",
            (_, HistoricData::RetentionWindow) => "false",
            (_, HistoricData::Backfill) => "true",
        };
        let (mode, otel, preview) = match self {
            Setting::Legacy => ("legacy", "dual_write", "false"),
            Setting::Dual | Setting::DualBackfill => ("dual", "dual_write", "false"),
            Setting::Events | Setting::EventsCleanup => ("events_only", "direct", "true"),
        };
        let drop = match self {
            Setting::EventsCleanup => "true",
            _ => "false",
        };
        [
            (WRITE_MODE, mode),
            (NATIVE_OTEL, otel),
            (PREVIEW_OPT_IN, preview),
            (HISTORIC_BACKFILL, backfill),
            (DROP_SCRATCH, drop),
        ]
    }

    /// As a person names it.
    pub fn label(self) -> &'static str {
        match self {
            Setting::Legacy => "legacy",
            Setting::Dual => "dual",
            Setting::DualBackfill => "dual + historic backfill",
            Setting::Events => "events_only",
            Setting::EventsCleanup => "events_only + scratch-table drop",
        }
    }

    /// The data model these settings write into.
    pub fn model(self) -> DataModel {
        match self {
            Setting::Legacy => DataModel::Legacy,
            Setting::Dual | Setting::DualBackfill => DataModel::Dual,
            Setting::Events | Setting::EventsCleanup => DataModel::Events,
        }
    }
}

/// Whether a container's env already runs `setting` (every owned variable by literal value).
/// The scratch-table drop unset counts as `false`: its default in every v3 and v4 image, so a
/// container a v4 hop wrote runs `Legacy` without it.
pub fn runs(env: &[k8s_openapi::api::core::v1::EnvVar], setting: Setting, historic: HistoricData) -> bool {
    setting.values(historic).iter().all(|(name, value)| {
        let found = env.iter().rev().find(|e| e.name == *name);
        match found {
            Some(e) => e.value_from.is_none() && e.value.as_deref() == Some(*value),
            None => *name == DROP_SCRATCH && *value == "false",
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::v4_env::worker_exit_reason;

    #[test]
    fn every_setting_starts_the_v4_worker() {
        for setting in [
            Setting::Legacy,
            Setting::Dual,
            Setting::DualBackfill,
            Setting::Events,
            Setting::EventsCleanup,
        ] {
            for historic in [HistoricData::Backfill, HistoricData::RetentionWindow] {
                let values: Vec<(&'static str, String)> = setting
                    .values(historic)
                    .iter()
                    .map(|(n, v)| (*n, v.to_string()))
                    .collect();
                assert_eq!(worker_exit_reason(&values), None, "{setting:?} {historic:?}");
            }
        }
    }

    #[test]
    fn the_backfill_runs_only_when_chosen_and_never_from_legacy() {
        let backfill = |s: Setting, h| s.values(h)[3].1;
        assert_eq!(backfill(Setting::Legacy, HistoricData::Backfill), "false");
        assert_eq!(backfill(Setting::Dual, HistoricData::Backfill), "false");
        assert_eq!(backfill(Setting::DualBackfill, HistoricData::Backfill), "true");
        assert_eq!(backfill(Setting::Events, HistoricData::RetentionWindow), "false");
        assert_eq!(Setting::EventsCleanup.values(HistoricData::Backfill)[4].1, "true");
        assert_eq!(Setting::Events.values(HistoricData::Backfill)[4].1, "false");
    }
}
