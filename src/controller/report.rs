//! Report: one status write per reconcile (only when something changed) and an Event per
//! transition and per write made.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::events::EventSink;
use super::plan::{Action, Decision};
use crate::api::conditions::{self as cond};
use crate::api::{FIELD_MANAGER, LangfuseUpgrade, LangfuseUpgradeStatus, Phase};
use crate::error::Result;

/// The status to write: the decision's, with conditions merged so transition times hold.
pub fn next_status(upgrade: &LangfuseUpgrade, decision: &Decision, now: Timestamp) -> LangfuseUpgradeStatus {
    let old = upgrade.status.clone().unwrap_or_default();
    let mut status = decision.status.clone();
    status.conditions = cond::merge(
        &old.conditions,
        &decision.conditions,
        upgrade.metadata.generation,
        &Time(now),
    );
    status
}

/// A notable change between two statuses, as an Event.
pub fn transitions(old: &LangfuseUpgradeStatus, new: &LangfuseUpgradeStatus) -> Vec<(EventType, String, String)> {
    let mut out = Vec::new();
    if old.phase != new.phase
        && let Some(phase) = new.phase
    {
        let ready = new.condition(cond::READY);
        let note = format!(
            "{} -> {phase}: {}",
            old.phase.map(|p| p.to_string()).unwrap_or_else(|| "new".into()),
            ready.map(|c| c.message.clone()).unwrap_or_default()
        );
        out.push((severity(phase), phase.to_string(), note));
    }
    for stop in &new.road {
        let before = old
            .road
            .iter()
            .find(|o| o.from == stop.from && o.version == stop.version);
        if stop.started_at.is_some() && before.is_none_or(|b| b.started_at.is_none()) {
            let how = match stop.mode {
                crate::api::StopMode::BesideV2 => "beside v2, which keeps serving until the shift",
                crate::api::StopMode::InPlace => "in place, web first, then the worker",
            };
            out.push((
                EventType::Normal,
                "HopStarted".to_string(),
                format!("{} -> {}: {how}", stop.from, stop.version),
            ));
        }
        if stop.finished_at.is_some() && before.is_none_or(|b| b.finished_at.is_none()) {
            out.push((
                EventType::Normal,
                "HopFinished".to_string(),
                format!(
                    "{} reached: web and worker Available, its background migrations finished",
                    stop.version
                ),
            ));
        }
    }
    for c in &new.conditions {
        if [cond::READY, cond::RECONCILING, cond::STALLED].contains(&c.type_.as_str()) {
            continue;
        }
        let before = old.conditions.iter().find(|o| o.type_ == c.type_);
        let changed = before.is_none_or(|o| o.status != c.status || o.reason != c.reason);
        if changed && (before.is_some() || c.status == "True") {
            // A step condition False while its step simply goes on is news, not a warning.
            let progressing = [
                cond::reason::SHIFTING,
                cond::reason::MIGRATING,
                cond::reason::WAITING_TO_RETIRE,
                cond::reason::RETIRING,
                cond::reason::HOPPING,
                cond::reason::AWAITING_IMAGE_CHANGE,
            ]
            .map(|r| r.as_str());
            let kind = if c.status == "True" || progressing.contains(&c.reason.as_str()) {
                EventType::Normal
            } else {
                EventType::Warning
            };
            out.push((
                kind,
                c.reason.clone(),
                format!("{}={}: {}", c.type_, c.status, c.message),
            ));
        }
    }
    out
}

fn severity(phase: Phase) -> EventType {
    match phase {
        Phase::Blocked | Phase::Degraded | Phase::Failed | Phase::RollingBack | Phase::RolledBack => EventType::Warning,
        _ => EventType::Normal,
    }
}

/// Events must fit: reason <= 128 characters, note <= 1 kB.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The status (a compare-and-swap onto `resource_version`, the version the decision was made
/// from or the executor's own last write to it); Events for the writes made (whether or not the
/// status won), then for the transitions: a decision that lost the race to another writer
/// announces no transition. Events are handed to the sink, not waited for.
pub async fn report(
    client: &Client,
    events: &EventSink,
    upgrade: &LangfuseUpgrade,
    status: &LangfuseUpgradeStatus,
    executed: &[Action],
    resource_version: Option<String>,
) -> Result<Reported> {
    let old = upgrade.status.clone().unwrap_or_default();
    let reference = upgrade.object_ref(&());
    let writes: Vec<(EventType, String, String)> = executed
        .iter()
        .filter(|a| !matches!(a, Action::AddFinalizer | Action::RecordFacts))
        .map(|a| {
            let (reason, note) = a.describe();
            (EventType::Normal, reason.to_string(), note)
        })
        .collect();
    let written = executed.contains(&Action::RecordFacts);
    let gone = upgrade.metadata.deletion_timestamp.is_some() && executed.contains(&Action::RemoveFinalizer);
    let latest = match written || *status == old || gone {
        true => Ok(Reported {
            version: resource_version.clone(),
            object: None,
        }),
        false => {
            let api: Api<LangfuseUpgrade> = Api::namespaced(client.clone(), &upgrade.namespace().unwrap_or_default());
            apply_status(&api, &upgrade.name_any(), status, resource_version)
                .await
                .map(|object| Reported {
                    version: object.as_ref().and_then(|o| o.resource_version()),
                    object,
                })
        }
    };
    publish(events, &reference, writes);
    let latest = latest?;
    publish(events, &reference, transitions(&old, status));
    Ok(latest)
}

/// What the report left the object at.
pub struct Reported {
    /// Its version after this reconcile's writes (`None`: gone).
    pub version: Option<String>,
    /// The object as the report's own status write returned it (`None`: it wrote none).
    pub object: Option<LangfuseUpgrade>,
}

fn publish(
    sink: &EventSink,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    events: Vec<(EventType, String, String)>,
) {
    for (type_, reason, note) in events {
        let event = Event {
            type_,
            reason: clip(&reason, 128),
            note: Some(clip(&note, 1000)),
            // The recorder folds Events with the same type, reason and action into one series
            // that keeps the first note: distinct notes (two hops, web and worker) need
            // distinct actions to stay distinct Events; a repeated note still folds.
            action: clip(&note, 128),
            secondary: None,
        };
        sink.send(reference, event);
    }
}

/// The decision's status, written now (for [`Action::RecordFacts`]) onto `resource_version`;
/// returns the object's new version.
pub async fn write_status(
    client: &Client,
    upgrade: &LangfuseUpgrade,
    status: &LangfuseUpgradeStatus,
    resource_version: Option<String>,
) -> Result<Option<String>> {
    let api: Api<LangfuseUpgrade> = Api::namespaced(client.clone(), &upgrade.namespace().unwrap_or_default());
    let written = apply_status(&api, &upgrade.name_any(), status, resource_version).await?;
    Ok(written.and_then(|o| o.resource_version()))
}

/// One server-side apply of the whole status (an apply that left out fields this manager owns
/// would delete them); with `resource_version`, only onto that version of the object (a 409
/// otherwise). Returns the object as written (`None` when it is gone).
async fn apply_status(
    api: &Api<LangfuseUpgrade>,
    name: &str,
    status: &LangfuseUpgradeStatus,
    resource_version: Option<String>,
) -> Result<Option<LangfuseUpgrade>> {
    let mut body = json!({
        "apiVersion": LangfuseUpgrade::api_version(&()),
        "kind": LangfuseUpgrade::kind(&()),
        "metadata": { "name": name },
        "status": status,
    });
    if let Some(version) = resource_version {
        body["metadata"]["resourceVersion"] = json!(version);
    }
    match api
        .patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body))
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        other => Ok(Some(other?)),
    }
}

/// A reconcile that failed before its decision could be reported: `Ready=False` with the
/// error (credentials never reach it: database errors are scrubbed where they are made), and
/// a Warning Event when that condition is new. Everything else in status is kept.
pub async fn report_error(
    client: &Client,
    events: &EventSink,
    upgrade: &LangfuseUpgrade,
    error: &crate::error::Error,
) -> Result<()> {
    // The cached object can predate the last status write: the condition is merged into a
    // fresh read and applied onto exactly that version, so no recorded fact is rolled back.
    let api: Api<LangfuseUpgrade> = Api::namespaced(client.clone(), &upgrade.namespace().unwrap_or_default());
    let Some(fresh) = api.get_opt(&upgrade.name_any()).await? else {
        return Ok(());
    };
    let old = fresh.status.clone().unwrap_or_default();
    let message = clip(&format!("reconcile failed, retrying with backoff: {error}"), 1000);
    let desired = [cond::Desired::new(
        cond::READY,
        false,
        cond::reason::RECONCILE_ERROR,
        message.clone(),
    )];
    let now = Time(crate::precision::bound_after(Timestamp::now()));
    let mut status = old.clone();
    status.conditions = cond::merge(&old.conditions, &desired, fresh.metadata.generation, &now);
    if status == old {
        return Ok(());
    }
    let event = Event {
        type_: EventType::Warning,
        reason: cond::reason::RECONCILE_ERROR.as_str().into(),
        note: Some(message),
        action: "Reconcile".into(),
        secondary: None,
    };
    events.send(&fresh.object_ref(&()), event);
    apply_status(&api, &fresh.name_any(), &status, fresh.resource_version())
        .await
        .map(|_| ())
}
