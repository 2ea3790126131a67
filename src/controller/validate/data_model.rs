//! `spec.dataModel` and `spec.target.dataModel`, parsed: the data-model road's durations, a
//! retention window where it is the way chosen, and no flag it owns left to `extraEnv`.

use std::time::Duration;

use super::{InvalidSpec, duration, invalid};
use crate::api::LangfuseUpgradeSpec;

/// `spec.dataModel`, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct DataModelSettings {
    pub healthy_for: Duration,
    pub lag_alert: Duration,
    pub producer_window: Duration,
    pub retention_window: Option<Duration>,
}

/// `spec.dataModel`'s durations, a retention window where it is the way chosen, and no
/// data-model flag in `extraEnv` while the road owns them.
pub(super) fn data_model(spec: &LangfuseUpgradeSpec) -> Result<DataModelSettings, InvalidSpec> {
    let d = &spec.data_model;
    let retention_window = match (&d.retention_window, d.historic_data) {
        (Some(w), _) => Some(duration("spec.dataModel.retentionWindow", w)?),
        (None, crate::api::HistoricData::RetentionWindow) if spec.target.data_model.is_some() => {
            return Err(invalid(
                "spec.dataModel.retentionWindow",
                "historicData RetentionWindow needs the longest data retention of your projects, e.g. 720h",
            ));
        }
        (None, _) => None,
    };
    if spec.target.data_model.is_some()
        && let Some(e) = spec
            .target
            .extra_env
            .iter()
            .find(|e| crate::data_model::flags::OWNED.contains(&e.name.as_str()))
    {
        return Err(invalid(
            "spec.target.extraEnv",
            format!(
                "{} is set by the data-model road while spec.target.dataModel is set; remove it from extraEnv",
                e.name
            ),
        ));
    }
    Ok(DataModelSettings {
        healthy_for: duration("spec.dataModel.dualWriteHealthyFor", &d.dual_write_healthy_for)?,
        lag_alert: duration("spec.dataModel.lagAlert", &d.lag_alert)?,
        producer_window: duration("spec.dataModel.producerWindow", &d.producer_window)?,
        retention_window,
    })
}
