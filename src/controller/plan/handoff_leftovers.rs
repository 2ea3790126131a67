//! What the old release leaves once the chart's release serves: what a person may delete now,
//! and what must stay because the chart's pods or the entry point still use it.

use super::Planner;
use crate::api::{ChartHandoffStatus, HandoffSpec};
use crate::handoff::chart;
use crate::resources::labels::Role;

const HELM_RELEASE: &str = "meta.helm.sh/release-name";

pub(super) fn leftovers(p: &Planner, spec: &HandoffSpec, h: &ChartHandoffStatus) -> Vec<String> {
    let mut out = Vec::new();
    let old_release = p
        .obs
        .service
        .as_ref()
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(HELM_RELEASE))
        .cloned();
    if let Some(source) = &p.obs.source {
        let name = source.metadata.name.clone().unwrap_or_default();
        out.push(format!("Deployment {name} (v2, 0 replicas): may be deleted"));
    }
    for hpa in &p.obs.hpas_on_source {
        out.push(format!("HorizontalPodAutoscaler {hpa} (on v2): may be deleted"));
    }
    let web_service = chart::deployment(&spec.release, spec.fullname_override.as_deref(), Role::Web);
    out.push(format!(
        "Service {} serves Langfuse through release {}'s web pods and is kept: point your Ingress or clients at the release's Service {web_service} (or enable langfuse.ingress in its values with the same hosts), then delete it",
        p.spec.source.service, spec.release
    ));
    let used: Vec<&str> = h
        .protected
        .iter()
        .map(String::as_str)
        .filter(|k| !k.starts_with("Service/"))
        .collect();
    if !used.is_empty() {
        out.push(format!(
            "{}: used by release {}'s pods, kept (helm.sh/resource-policy: keep): do not delete",
            used.join(", "),
            spec.release
        ));
    }
    out.push(match old_release {
        Some(old) => format!(
            "helm uninstall {old} now removes only what release {} does not use (the objects above are kept)",
            spec.release
        ),
        None => "the old release's objects above are kept; what else it owns is not used by Langfuse any more".into(),
    });
    out
}
