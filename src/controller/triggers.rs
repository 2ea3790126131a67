//! What wakes an upgrade: its own watch, and a change to any object it names (its Deployments,
//! Service, EndpointSlices, v3 web pods, an HPA on its source). Each watch stream becomes the
//! keys of the upgrades it wakes; the dispatcher runs them.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use super::cache::{Feeds, SERVICE_NAME_LABEL, upgrades_naming_deployment, upgrades_naming_service};
use crate::api::LangfuseUpgrade;
use crate::resources::labels::Role;

/// Every trigger: `own` (the upgrades' watch, its keys already) and the caches' feeds.
pub fn of<S>(
    own: S,
    feeds: Feeds,
    store: &Store<LangfuseUpgrade>,
) -> BoxStream<'static, Vec<ObjectRef<LangfuseUpgrade>>>
where
    S: futures::Stream<Item = std::result::Result<Vec<ObjectRef<LangfuseUpgrade>>, watcher::Error>> + Send + 'static,
{
    let (s1, s2, s3, s4) = (store.clone(), store.clone(), store.clone(), store.clone());
    // A new release catalog wakes every upgrade: a road it refused may exist now.
    let everyone = store.clone();
    let catalog = futures::stream::unfold(crate::catalog::Catalog::changes(), |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
    .map(move |()| {
        everyone
            .state()
            .iter()
            .map(|u| ObjectRef::from(u.as_ref()))
            .collect::<Vec<_>>()
    })
    .boxed();
    let refs = |it: &mut dyn Iterator<Item = Arc<LangfuseUpgrade>>| -> Vec<ObjectRef<LangfuseUpgrade>> {
        it.map(|u| ObjectRef::from(u.as_ref())).collect()
    };
    futures::stream::select_all([
        catalog,
        triggers_of(own, |keys| keys),
        triggers_of(feeds.deployments, move |d| {
            refs(&mut upgrades_naming_deployment(&s1, d.namespace(), &d.name_any()))
        }),
        triggers_of(feeds.services, move |s| {
            refs(&mut upgrades_naming_service(&s2, s.namespace(), &s.name_any()))
        }),
        triggers_of(feeds.slices, move |s| {
            let service = s.labels().get(SERVICE_NAME_LABEL).cloned().unwrap_or_default();
            refs(&mut upgrades_naming_service(&s3, s.namespace(), &service))
        }),
        // A v3 web pod that an EndpointSlice lists before the pod's own event arrived is not
        // yet counted as v3: its event must wake the upgrade again.
        triggers_of(feeds.v3_pods, move |p| {
            use crate::resources::labels::{COMPONENT_LABEL, UPGRADE_LABEL};
            let web = p.labels().get(COMPONENT_LABEL).map(String::as_str) == Some(Role::Web.as_str());
            let upgrade = p.labels().get(UPGRADE_LABEL).filter(|_| web);
            upgrade
                .map(|u| ObjectRef::new(u).within(&p.namespace().unwrap_or_default()))
                .into_iter()
                .collect()
        }),
        // An HPA made on v2 wakes its upgrade: retirement waits for it to go.
        triggers_of(feeds.hpas, move |h| {
            let target = h.spec.as_ref().map(|s| &s.scale_target_ref);
            let deployment = target.filter(|t| t.kind == "Deployment").map(|t| t.name.clone());
            refs(&mut upgrades_naming_deployment(
                &s4,
                h.namespace(),
                deployment.as_deref().unwrap_or_default(),
            ))
        }),
    ])
    .boxed()
}

/// A watch's objects as the upgrades they wake; a watch error is logged and the watch goes on
/// (it retries with `WatchBackoff`).
fn triggers_of<K, S>(
    stream: S,
    wakes: impl Fn(K) -> Vec<ObjectRef<LangfuseUpgrade>> + Send + 'static,
) -> futures::stream::BoxStream<'static, Vec<ObjectRef<LangfuseUpgrade>>>
where
    S: futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    stream
        .map(move |event| match event {
            Ok(object) => wakes(object),
            Err(e) => {
                tracing::debug!(error = %e, "watch error; retrying");
                Vec::new()
            }
        })
        .boxed()
}
