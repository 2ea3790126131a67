//! `spec.handoff` and `status.chartHandoff`: handing a completed upgrade to a release of the
//! official chart installed beside it (facts: `official-chart-v3-v4-layout.md` §8.3 A).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Hand what the upgrade runs to a release of the official chart, installed beside it as a
/// sibling (Langfuse's own pattern for its chart v1 → v2): once the chart's web and worker run
/// the same release, flags and settings and are Available, the Service moves to them, and the
/// operator's Deployments are deleted. A field of this object, not an object of its own: the
/// switch undoes with the same recorded selector, and the road's status stays in one place.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandoffSpec {
    /// The Helm release that will own Langfuse (`helm install RELEASE langfuse/langfuse ...`),
    /// in this namespace. Not the release that installed v2: the chart's Deployments would take
    /// the names of the operator's own.
    #[schemars(length(min = 1, max = 53))]
    pub release: String,
    /// The chart's `fullnameOverride`, if the values set one (its Deployments are
    /// `<fullname>-web` and `<fullname>-worker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fullname_override: Option<String>,
}

/// Where the handoff to the official chart is, fact by fact.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChartHandoffStatus {
    /// The Helm release handed to.
    pub release: String,
    /// Objects marked `helm.sh/resource-policy: keep` so that uninstalling the old release
    /// cannot delete what the chart's pods still use (`Kind/name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_at: Option<Time>,
    /// When the chart's web and worker first ran what runs and were Available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_ready_at: Option<Time>,
    /// The Service's selector before the switch: put back if the handoff is withdrawn before
    /// the operator's Deployments are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_selector: Option<BTreeMap<String, String>>,
    /// When the Service's EndpointSlices listed only the chart's web pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at: Option<Time>,
    /// When the operator's web and worker Deployments were gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<Time>,
    /// What is left of the old release: what a person may now delete, and what must stay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leftovers: Vec<String>,
}
