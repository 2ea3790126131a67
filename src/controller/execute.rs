//! Execute: make the plan's writes, in order, stopping at the first failure (the next
//! reconcile re-plans from what is then observed). Every write is idempotent.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::plan::Action;
use crate::api::{FIELD_MANAGER, FINALIZER, LangfuseUpgrade};
use crate::controller::observed::Observed;
use crate::databases::Databases;
use crate::error::{Error, Result};
use crate::resources::service::selector_apply_body;

fn apply_params() -> PatchParams {
    // force: these fields are the operator's to set (the Service selector and v2 replicas are
    // taken over deliberately; a later revert is detected and reported, not fought).
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Invariant 11: a Deployment write lands only on the version the decision saw (a change
/// since, by another replica or a person, fails it with a conflict and it is planned again).
/// One the decision saw absent is created without a precondition.
fn onto_observed(body: &mut serde_json::Value, observed: &Observed, name: &str) {
    let seen = [&observed.web, &observed.worker, &observed.source]
        .into_iter()
        .flatten()
        .find(|d| d.metadata.name.as_deref() == Some(name));
    if let Some(version) = seen.and_then(|d| d.resource_version()) {
        body["metadata"]["resourceVersion"] = json!(version);
    }
}

/// What every write is checked against.
pub struct Guards<'a> {
    pub caches: Option<&'a super::cache::Caches>,
    pub fence: &'a super::fence::Fence,
}

/// Drops the kept API answer of the object an action writes, when dropped itself (after the
/// write, whether it succeeded or not): our own create must not leave "absent" behind.
struct Forget<'a> {
    caches: Option<&'a super::cache::Caches>,
    ns: &'a str,
    deployment: Option<&'a str>,
    service: Option<&'a str>,
}

impl<'a> Forget<'a> {
    fn of(
        caches: Option<&'a super::cache::Caches>,
        ns: &'a str,
        action: &'a Action,
        upgrade: &'a LangfuseUpgrade,
    ) -> Self {
        let source = upgrade.spec.source.deployment.as_str();
        let deployment = match action {
            Action::ApplyDeployment(d) => d.metadata.name.as_deref(),
            Action::DeleteDeployment(name) | Action::ReleaseDeployment(name) | Action::RetireDeployment(name) => {
                Some(name.as_str())
            }
            Action::SetImage(change) => Some(change.deployment.as_str()),
            Action::SetFlags(change) => Some(change.deployment.as_str()),
            Action::ScaleSource(_) | Action::DeleteSource => Some(source),
            _ => None,
        };
        let service = matches!(action, Action::ApplySelector { .. }).then_some(upgrade.spec.source.service.as_str());
        Forget {
            caches,
            ns,
            deployment,
            service,
        }
    }
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let Some(c) = self.caches else { return };
        if let Some(d) = self.deployment {
            c.wrote_deployment(self.ns, d);
        }
        if let Some(s) = self.service {
            c.wrote_service(self.ns, s);
        }
    }
}

/// What ran, for the audit trail, and the upgrade object's version after the executor's own
/// writes to it (the report's status write is a compare-and-swap onto that version).
pub struct Executed {
    pub actions: Vec<Action>,
    pub resource_version: Option<String>,
}

/// Run `actions`. `postgres_url` is the one the observation resolved (the executor reads no
/// Secret itself); a remedy needs it. Every write to the upgrade object is a compare-and-swap
/// onto the version the decision was made from (then onto the executor's own last write): a
/// decision made on a view another writer has since changed (a replica that lost its Lease
/// while paused, a person's edit) fails with a conflict before it writes anything after it.
pub async fn execute<D: Databases>(
    client: &Client,
    db: &D,
    upgrade: &LangfuseUpgrade,
    observed: &Observed,
    actions: &[Action],
    status: &crate::api::LangfuseUpgradeStatus,
    guards: Guards<'_>,
) -> Result<Executed> {
    let ns = upgrade.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = upgrade.name_any();
    let upgrades: Api<LangfuseUpgrade> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let mut done = Vec::new();
    let mut version = upgrade.resource_version();
    for action in actions {
        // Invariant 11: a replica whose Lease may have passed to another writes nothing more.
        guards.fence.check()?;
        // Whatever the answer, a kept read of the object written is no longer to be trusted.
        let _forget = Forget::of(guards.caches, &ns, action, upgrade);
        match action {
            // The same status the report writes after; here first, so it is durable before
            // the writes that follow it in this decision.
            Action::RecordFacts => {
                version = super::report::write_status(client, upgrade, status, version).await?;
            }
            Action::AddFinalizer | Action::RemoveFinalizer => {
                let mut finalizers: Vec<String> = upgrade.finalizers().to_vec();
                finalizers.retain(|f| f != FINALIZER);
                if matches!(action, Action::AddFinalizer) {
                    finalizers.push(FINALIZER.to_string());
                }
                // resourceVersion makes this a compare-and-swap: another writer's finalizer is
                // never dropped; a conflict is retried from a fresh read.
                let patch = json!({ "metadata": { "resourceVersion": version, "finalizers": finalizers } });
                match upgrades
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    Err(kube::Error::Api(s)) if s.code == 404 && matches!(action, Action::RemoveFinalizer) => {}
                    other => {
                        version = other?.resource_version();
                    }
                }
            }
            Action::ApplyDeployment(d) => {
                let target = d.metadata.name.clone().ok_or(Error::MissingField("metadata.name"))?;
                let mut body = serde_json::to_value(d.as_ref())?;
                onto_observed(&mut body, observed, &target);
                deployments.patch(&target, &apply_params(), &Patch::Apply(body)).await?;
            }
            Action::DeleteDeployment(target) => {
                // Only a Deployment this object owns is ever deleted, and only that very object
                // (uid precondition): never one a person or Helm made under the same name.
                let Some(current) = deployments.get_opt(target).await? else {
                    continue;
                };
                let ours = current
                    .owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == upgrade.uid().as_ref());
                if !ours {
                    tracing::warn!(deployment = %target, "not deleting a Deployment this upgrade does not own");
                    continue;
                }
                let params = DeleteParams {
                    preconditions: current.uid().map(|uid| kube::api::Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                match deployments.delete(target, &params).await {
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    other => {
                        other?;
                    }
                }
            }
            Action::ReleaseDeployment(target) => {
                let Some(current) = deployments.get_opt(target).await? else {
                    continue;
                };
                let uid = upgrade.uid();
                let kept: Vec<_> = current
                    .owner_references()
                    .iter()
                    .filter(|o| Some(&o.uid) != uid.as_ref())
                    .cloned()
                    .collect();
                // resourceVersion makes this a compare-and-swap.
                let patch = json!({
                    "metadata": {
                        "resourceVersion": current.resource_version(),
                        "ownerReferences": if kept.is_empty() { serde_json::Value::Null } else { serde_json::to_value(kept)? },
                    }
                });
                deployments
                    .patch(target, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
            }
            Action::ApplySelector { selector } => {
                let mut body = selector_apply_body(&upgrade.spec.source.service, &ns, selector);
                // Onto the Service as the decision saw it: changed since (a Helm upgrade not
                // yet in the cache), the write fails with a conflict and is planned again.
                if let Some(version) = observed.service.as_ref().and_then(|s| s.resource_version()) {
                    body["metadata"]["resourceVersion"] = json!(version);
                }
                services
                    .patch(&upgrade.spec.source.service, &apply_params(), &Patch::Apply(body))
                    .await?;
            }
            Action::ScaleSource(replicas) => {
                let body = json!({
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": { "name": upgrade.spec.source.deployment, "namespace": ns },
                    "spec": { "replicas": replicas },
                });
                let mut body = body;
                onto_observed(&mut body, observed, &upgrade.spec.source.deployment);
                deployments
                    .patch(&upgrade.spec.source.deployment, &apply_params(), &Patch::Apply(body))
                    .await?;
            }
            Action::SetImage(change) => {
                let mut body = crate::resources::deployments::image_change_body(change, &ns);
                onto_observed(&mut body, observed, &change.deployment);
                deployments
                    .patch(&change.deployment, &apply_params(), &Patch::Apply(body))
                    .await?;
            }
            Action::SetFlags(change) => {
                let mut body = crate::resources::deployments::flag_change_body(change, &ns);
                onto_observed(&mut body, observed, &change.deployment);
                let params = PatchParams::apply(crate::resources::deployments::DATA_MODEL_MANAGER).force();
                deployments
                    .patch(&change.deployment, &params, &Patch::Apply(body))
                    .await?;
            }
            Action::Remedy(remedy) => {
                // Every stage that remedies reads Postgres, so the URL was resolved with it.
                let url = observed.postgres_url.as_ref().ok_or_else(|| {
                    Error::Database("the Postgres connection was not resolved this reconcile; retrying".into())
                })?;
                db.remedy(url, remedy)
                    .await
                    .map_err(|e| Error::Database(e.to_string()))?;
            }
            Action::Protect(kept) => protect(client, &ns, kept).await?,
            Action::RetireDeployment(target) => retire(&deployments, &name, target).await?,
            Action::DeleteSource => match deployments
                .delete(&upgrade.spec.source.deployment, &DeleteParams::background())
                .await
            {
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                other => {
                    other?;
                }
            },
        }
        done.push(action.clone());
    }
    Ok(Executed {
        actions: done,
        resource_version: version,
    })
}

/// `helm.sh/resource-policy: keep` on one object, by a merge patch (not an apply: an object
/// that is gone is not created again); one that is not there has nothing to keep.
async fn protect(client: &Client, ns: &str, kept: &crate::handoff::keep::Kept) -> Result<()> {
    use crate::handoff::keep::KeptKind;
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    let name = kept.name.as_str();
    let answer = match kept.kind {
        KeptKind::Service => keep::<Service>(client, ns, name).await,
        KeptKind::Secret => keep::<Secret>(client, ns, name).await,
        KeptKind::ServiceAccount => keep::<ServiceAccount>(client, ns, name).await,
        KeptKind::StatefulSet => keep::<StatefulSet>(client, ns, name).await,
    };
    match answer {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => Ok(other?),
    }
}

/// The keep annotation alone, as a metadata merge patch of one object of kind `K`.
async fn keep<K>(client: &Client, ns: &str, name: &str) -> kube::Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let patch =
        Patch::Merge(json!({ "metadata": { "annotations": { crate::handoff::keep::KEEP_ANNOTATION: "keep" } } }));
    Api::<K>::namespaced(client.clone(), ns)
        .patch_metadata(name, &PatchParams::default(), &patch)
        .await
        .map(|_| ())
}

/// Delete a Deployment this upgrade made: its selector carries the upgrade's label (owner
/// references were released at completion), and the delete names the very object (uid).
async fn retire(deployments: &Api<Deployment>, upgrade: &str, target: &str) -> Result<()> {
    let Some(current) = deployments.get_opt(target).await? else {
        return Ok(());
    };
    let ours = current
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .and_then(|l| l.get(crate::resources::labels::UPGRADE_LABEL))
        .is_some_and(|u| u == upgrade);
    if !ours {
        tracing::warn!(deployment = %target, "not retiring a Deployment this upgrade did not make");
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: current.uid().map(|uid| kube::api::Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match deployments.delete(target, &params).await {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other.map(|_| ()).map_err(Into::into),
    }
}
