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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DataModel, HistoricData};
    use k8s_openapi::api::core::v1::EnvVar;

    #[test]
    fn a_window_without_its_length_and_a_flag_left_to_extra_env_are_refused() {
        let mut spec = crate::testing::spec();
        spec.target.data_model = Some(DataModel::Events);
        assert!(data_model(&spec).is_ok());
        spec.data_model.historic_data = HistoricData::RetentionWindow;
        let e = data_model(&spec).unwrap_err();
        assert_eq!(e.field, "spec.dataModel.retentionWindow");
        spec.data_model.retention_window = Some("720h".into());
        assert_eq!(
            data_model(&spec).unwrap().retention_window,
            Some(Duration::from_secs(720 * 3600))
        );
        spec.target.extra_env.push(EnvVar {
            name: "LANGFUSE_MIGRATION_V4_WRITE_MODE".into(),
            value: Some("dual".into()),
            value_from: None,
        });
        let e = data_model(&spec).unwrap_err();
        assert!(e.message.contains("remove it from extraEnv"), "{}", e.message);
        spec.data_model.lag_alert = "soon".into();
        spec.target.extra_env.clear();
        assert_eq!(data_model(&spec).unwrap_err().field, "spec.dataModel.lagAlert");
    }
}
