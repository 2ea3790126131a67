//! The writes a decision asks for, and how each reads in an Event.

use k8s_openapi::api::apps::v1::Deployment;

use crate::databases::Remedy;
pub use crate::resources::deployments::ImageChange;
use crate::resources::labels::Labels;

/// A write the executor makes. Each is idempotent (server-side apply or a guarded delete).
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Write the status facts recorded so far in this decision before the writes after it: a
    /// write that must be undoable (the selector, an image) never precedes its fact.
    RecordFacts,
    AddFinalizer,
    RemoveFinalizer,
    ApplyDeployment(Box<Deployment>),
    DeleteDeployment(String),
    /// Drop this upgrade's owner reference from a v3 Deployment (a merge patch, not an apply).
    ReleaseDeployment(String),
    /// Set only `spec.selector` of the source Service.
    ApplySelector {
        selector: Labels,
    },
    ScaleSource(i32),
    DeleteSource,
    /// A documented write to `background_migrations` (DESIGN §4), through the database boundary.
    Remedy(Remedy),
    /// An in-place hop on Deployments the operator does not own (a source already on v3/v4):
    /// only the container's image and the env the operator owns, by server-side apply.
    SetImage(Box<ImageChange>),
    /// The data-model road: a stage's flags on web or worker, by a field manager of its own.
    SetFlags(Box<crate::resources::deployments::FlagChange>),
    /// `spec.handoff`: mark an object `helm.sh/resource-policy: keep` (a merge patch: one that
    /// is not there is not created).
    Protect(crate::handoff::keep::Kept),
    /// `spec.handoff`: delete a Deployment this upgrade made (by its upgrade label, not an
    /// owner reference: completion released those), the very object seen (uid precondition).
    RetireDeployment(String),
}

impl Action {
    /// A write that cannot be taken back by the operator (or that moves data): planned only
    /// from a view of the object that is known to be current (a fresh read).
    pub fn needs_current_object(&self) -> bool {
        match self {
            Action::RecordFacts | Action::AddFinalizer | Action::ApplyDeployment(_) | Action::ApplySelector { .. } => {
                false
            }
            Action::RemoveFinalizer
            | Action::DeleteDeployment(_)
            | Action::ReleaseDeployment(_)
            | Action::ScaleSource(_)
            | Action::DeleteSource
            | Action::Remedy(_)
            | Action::SetImage(_)
            | Action::SetFlags(_)
            | Action::RetireDeployment(_) => true,
            Action::Protect(_) => false,
        }
    }

    /// Event reason and note for the audit trail.
    pub fn describe(&self) -> (&'static str, String) {
        match self {
            Action::RecordFacts => ("FactsRecorded", "recorded the facts the next write depends on".into()),
            Action::AddFinalizer => ("FinalizerAdded", "added the rollback finalizer".into()),
            Action::RemoveFinalizer => ("FinalizerRemoved", "removed the rollback finalizer".into()),
            Action::ApplyDeployment(d) => ("DeploymentApplied", applied_text(d)),
            Action::DeleteDeployment(name) => ("DeploymentDeleted", format!("deleted v3 Deployment {name}")),
            Action::ReleaseDeployment(name) => (
                "DeploymentReleased",
                format!("released v3 Deployment {name}: it no longer belongs to this object"),
            ),
            Action::ApplySelector { selector } => (
                "SelectorApplied",
                format!("set the Service selector to {}", labels_text(selector)),
            ),
            Action::Protect(kept) => (
                "Protected",
                format!("marked {kept} helm.sh/resource-policy: keep: uninstalling the old release leaves it"),
            ),
            Action::RetireDeployment(name) => (
                "DeploymentRetired",
                format!("deleted Deployment {name}: the chart's release runs Langfuse now"),
            ),
            Action::ScaleSource(n) => ("SourceScaled", format!("scaled the v2 Deployment to {n} replicas")),
            Action::DeleteSource => (
                "SourceDeleted",
                "deleted the v2 Deployment (spec.strategy.deleteSource)".into(),
            ),
            Action::SetImage(c) => ("ImageSet", image_text(c)),
            Action::SetFlags(c) => ("FlagsSet", flags_text(c)),
            Action::Remedy(r) => ("RemedyApplied", remedy_text(r)),
        }
    }
}

fn applied_text(d: &Deployment) -> String {
    let name = d.metadata.name.clone().unwrap_or_default();
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or_default();
    let image = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let migrations = match crate::resources::deployments::migrations_enabled(d) {
        true => "on",
        false => "off",
    };
    format!("applied Deployment {name}: {image}, {replicas} replicas, background migrations {migrations}")
}

fn image_text(c: &ImageChange) -> String {
    let env = match c.env.len() {
        0 => String::new(),
        _ => {
            let pairs: Vec<String> = c
                .env
                .iter()
                .map(|e| format!("{}={}", e.name, e.value.clone().unwrap_or_default()))
                .collect();
            format!(" with {}", pairs.join(", "))
        }
    };
    format!(
        "set Deployment {} container {} to {}{env}",
        c.deployment, c.container, c.image
    )
}

fn flags_text(c: &crate::resources::deployments::FlagChange) -> String {
    let pairs: Vec<String> = c
        .env
        .iter()
        .map(|e| format!("{}={}", e.name, e.value.clone().unwrap_or_default()))
        .collect();
    let restart = match c.restart {
        Some(n) => format!(" and restarted its pods (reset {n})"),
        None => String::new(),
    };
    format!(
        "set {} on Deployment {} container {}{restart}",
        pairs.join(", "),
        c.deployment,
        c.container
    )
}

fn remedy_text(r: &Remedy) -> String {
    match r {
        Remedy::SetBatchSize { name, size } => format!("set args.batchSize = {size} on background migration {name}"),
        Remedy::ClearFailure { name } => {
            format!("cleared failed_at and failed_reason on background migration {name}: it resumes from its cursor")
        }
        Remedy::RerunWindow {
            name,
            max_date,
            max_rows,
        } => format!(
            "re-running background migration {name} for the {max_rows} rows v2 wrote after the migrations started (up to {max_date})"
        ),
        Remedy::ResetBackfillRow { name, reload_chunks } => format!(
            "reset failed backfill row {name} (failed_at cleared, args.retryFailed = true{}); the worker re-runs its failed chunks at its next start",
            if *reload_chunks {
                ", state.chunksLoaded = false"
            } else {
                ""
            }
        ),
        Remedy::FinishOrphan { name, script } => format!(
            "marked orphan background migration {name} finished: the running worker has no {script} script, and the rows after it can run"
        ),
    }
}

pub fn labels_text(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
