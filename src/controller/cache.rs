//! The controller's watches, kept as in-memory caches: the objects every reconcile reads (the
//! v2 and v3 Deployments, the Service, its EndpointSlices, the v3 web pods) come from memory
//! instead of six API round trips. That is what lets the traffic switch follow "v3 Available"
//! by one watch event and one write. The same watch streams wake the upgrades that name an
//! object.
//!
//! What is kept, and why it is safe to read:
//! - Deployments and Services only while an upgrade names them (others would cost memory in a
//!   large cluster). An update to one no upgrade names removes it, so an entry is never older
//!   than the object's last change. One not held is read from the API once and that answer is
//!   kept until the watch reports anything of the object (an object that existed before the
//!   upgrade named it, such as v2 and its Service, is otherwise not seen until it changes).
//! - EndpointSlices (slimmed to what the plan reads) and pods with the upgrade label (metadata
//!   only), all of them in scope.
//! - HorizontalPodAutoscalers, all of them in scope, slimmed to their target: an HPA made before
//!   the upgrade must be seen (it would fight v2's retirement), and a blocked upgrade's re-check
//!   then lists none from the API.
//! - A watch that failed, or that is listing again, or that ended, makes the caches unusable
//!   until it moves again: observe reads the API meanwhile. A watch that resumes after an error
//!   replays what it missed with no marker of when it is done, so "current" may come a little
//!   early: the decisions that cannot be taken back re-read the cluster from the API
//!   (`Decision::irreversible`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt, future};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use super::fetched::{Fetched, cached_or_get};
use super::slim::{slim, slim_hpa, slim_slice};
use crate::api::LangfuseUpgrade;
use crate::resources::deployments::deployment_name;
use crate::resources::deployments::views::worker_name;
use crate::resources::labels::{Role, UPGRADE_LABEL};

/// Label that EndpointSlices carry with the name of their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Read-only views of the watch caches.
#[derive(Clone)]
pub struct Caches {
    deployments: Store<Deployment>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    /// Only pods that carry this operator's upgrade label (the v3 pods), metadata only.
    v3_pods: Store<PartialObjectMeta<Pod>>,
    hpas: Store<HorizontalPodAutoscaler>,
    /// One flag per watch: it has listed and is following (no error since, no relist under way).
    current: Arc<[AtomicBool; WATCHES]>,
    fetched_deployments: Arc<Fetched<Deployment>>,
    fetched_services: Arc<Fetched<Service>>,
}

/// The watches that fill the caches, each with its "current" flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watch {
    Deployments,
    Services,
    Slices,
    V3Pods,
    Hpas,
}

const WATCHES: usize = 5;

type Feed<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// The watch streams that fill [`Caches`]; each must be polled (the controller does: they are
/// the triggers of its reconciles).
pub struct Feeds {
    pub deployments: Feed<Deployment>,
    pub services: Feed<Service>,
    pub slices: Feed<EndpointSlice>,
    pub v3_pods: Feed<PartialObjectMeta<Pod>>,
    pub hpas: Feed<HorizontalPodAutoscaler>,
}

/// Keep only what `keep` says an upgrade names: an update to anything else removes it from the
/// cache (so a cached entry is never older than the object's last change), and the initial list
/// skips it.
fn only_named<K: Clone>(
    keep: impl Fn(&K) -> bool + Send + 'static,
) -> impl FnMut(Event<K>) -> Option<Event<K>> + Send + 'static {
    move |e| match e {
        Event::Apply(o) if !keep(&o) => Some(Event::Delete(o)),
        Event::InitApply(o) if !keep(&o) => None,
        other => Some(other),
    }
}

fn feed<K>(
    events: impl Stream<Item = watcher::Result<Event<K>>> + Send + 'static,
    fetched: Option<Arc<Fetched<K>>>,
    mut keep: impl FnMut(Event<K>) -> Option<Event<K>> + Send + 'static,
    shape: fn(&mut K),
    current: Arc<[AtomicBool; WATCHES]>,
    which: Watch,
) -> (Store<K>, Feed<K>)
where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let ended = current.clone();
    let stream = events
        .backoff(super::timing::WatchBackoff::default())
        .inspect(move |r| {
            // Every report of an object, named by an upgrade or not, ends what was read of it.
            if let (Some(f), Ok(e)) = (&fetched, r) {
                match e {
                    Event::Apply(o) | Event::InitApply(o) | Event::Delete(o) => f.reported(Some(ObjectRef::from(o))),
                    Event::Init => f.reported(None),
                    Event::InitDone => {}
                }
            }
        })
        .filter_map(move |r| future::ready(r.map(&mut keep).transpose()))
        .modify(shape)
        .inspect(move |r| {
            // The store swaps in a relist only at its end: stale until then.
            let now = match r {
                Err(_) | Ok(Event::Init) => Some(false),
                Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => Some(true),
                Ok(Event::InitApply(_)) => None,
            };
            if let Some(now) = now {
                current[which as usize].store(now, Ordering::Release);
            }
        })
        .reflect(writer)
        .touched_objects()
        // A watch that ends follows nothing more: its cache is not current from then on.
        .chain(
            futures::stream::once(async move { ended[which as usize].store(false, Ordering::Release) })
                .filter_map(|()| future::ready(None)),
        )
        .boxed();
    (reader, stream)
}

/// An API over all namespaces, or over the one the operator is limited to.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Upgrades in `ns` that name a Deployment `name` (the source, its v3 web and worker, or the
/// worker of a source already on v3).
pub fn upgrades_naming_deployment<'a>(
    upgrades: &'a Store<LangfuseUpgrade>,
    ns: Option<String>,
    name: &'a str,
) -> impl Iterator<Item = Arc<LangfuseUpgrade>> + 'a {
    upgrades.state().into_iter().filter(move |u| {
        let source = &u.spec.source.deployment;
        u.namespace() == ns
            && (source == name
                || deployment_name(source, Role::Web) == name
                || deployment_name(source, Role::Worker) == name
                || worker_name(&u.spec).as_deref() == Some(name)
                || names_chart_deployment(u, name))
    })
}

/// `spec.handoff`: the chart release's web or worker Deployment.
fn names_chart_deployment(u: &LangfuseUpgrade, name: &str) -> bool {
    u.spec.handoff.as_ref().is_some_and(|h| {
        [Role::Web, Role::Worker]
            .into_iter()
            .any(|role| crate::handoff::chart::deployment(&h.release, h.fullname_override.as_deref(), role) == name)
    })
}

/// Upgrades in `ns` whose source Service is `service`.
pub fn upgrades_naming_service<'a>(
    upgrades: &'a Store<LangfuseUpgrade>,
    ns: Option<String>,
    service: &'a str,
) -> impl Iterator<Item = Arc<LangfuseUpgrade>> + 'a {
    upgrades
        .state()
        .into_iter()
        .filter(move |u| u.namespace() == ns && u.spec.source.service == service)
}

impl Caches {
    /// The caches and the streams that fill them, in the operator's watch scope. `upgrades`
    /// says which Deployments and Services are named.
    pub fn new(client: &Client, namespace: Option<&str>, upgrades: Store<LangfuseUpgrade>) -> (Caches, Feeds) {
        // Consistent lists (not `any_semantic`): a relist must not go back in time.
        let config = watcher::Config::default;
        let current: Arc<[AtomicBool; WATCHES]> = Arc::new(Default::default());
        let (fetched_deployments, fetched_services) = (Arc::new(Fetched::new()), Arc::new(Fetched::new()));
        let (u1, u2) = (upgrades.clone(), upgrades);
        let (deployments, d) = feed(
            watcher(scoped(client, namespace), config()),
            Some(fetched_deployments.clone()),
            only_named(move |d: &Deployment| {
                upgrades_naming_deployment(&u1, d.namespace(), &d.name_any())
                    .next()
                    .is_some()
            }),
            slim,
            current.clone(),
            Watch::Deployments,
        );
        let (services, s) = feed(
            watcher(scoped(client, namespace), config()),
            Some(fetched_services.clone()),
            only_named(move |s: &Service| {
                upgrades_naming_service(&u2, s.namespace(), &s.name_any())
                    .next()
                    .is_some()
            }),
            slim,
            current.clone(),
            Watch::Services,
        );
        let (slices, e) = feed(
            watcher(scoped(client, namespace), config()),
            None,
            Some,
            slim_slice,
            current.clone(),
            Watch::Slices,
        );
        // Metadata only: the names and labels say which pods are v3 web.
        let (v3_pods, p) = feed(
            watcher(
                scoped::<PartialObjectMeta<Pod>>(client, namespace),
                config().labels(UPGRADE_LABEL),
            ),
            None,
            Some,
            slim,
            current.clone(),
            Watch::V3Pods,
        );
        let (hpas, h) = feed(
            watcher(scoped(client, namespace), config()),
            None,
            Some,
            slim_hpa,
            current.clone(),
            Watch::Hpas,
        );
        let caches = Caches {
            deployments,
            services,
            slices,
            v3_pods,
            hpas,
            current,
            fetched_deployments,
            fetched_services,
        };
        let feeds = Feeds {
            deployments: d,
            services: s,
            slices: e,
            v3_pods: p,
            hpas: h,
        };
        (caches, feeds)
    }

    /// Every watch has listed and follows: until then (and while one relists or failed),
    /// observe reads the API.
    pub fn synced(&self) -> bool {
        self.current.iter().all(|c| c.load(Ordering::Acquire))
    }

    /// A Deployment from the cache, else from the API (that answer kept, see [`Fetched`]).
    pub async fn deployment(&self, api: &Api<Deployment>, ns: &str, name: &str) -> kube::Result<Option<Deployment>> {
        cached_or_get(&self.deployments, &self.fetched_deployments, api, ns, name).await
    }

    /// The Service, from the cache, else from the API (that answer kept).
    pub async fn service(&self, api: &Api<Service>, ns: &str, name: &str) -> kube::Result<Option<Service>> {
        cached_or_get(&self.services, &self.fetched_services, api, ns, name).await
    }

    /// This operator wrote or deleted the Deployment (or tried to: a write that errored may
    /// still have landed): an answer kept from the API, "absent" above all, no longer holds.
    pub fn wrote_deployment(&self, ns: &str, name: &str) {
        self.fetched_deployments.reported(Some(ObjectRef::new(name).within(ns)));
    }

    /// As [`Self::wrote_deployment`], for the Service.
    pub fn wrote_service(&self, ns: &str, name: &str) {
        self.fetched_services.reported(Some(ObjectRef::new(name).within(ns)));
    }

    /// The EndpointSlices of one Service.
    pub fn slices_of(&self, ns: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
        self.slices.state_filter(|s| {
            s.namespace().as_deref() == Some(ns)
                && s.labels().get(SERVICE_NAME_LABEL).map(String::as_str) == Some(service)
        })
    }

    /// The HorizontalPodAutoscalers in `ns` (slimmed to their targets).
    pub fn hpas_in(&self, ns: &str) -> Vec<HorizontalPodAutoscaler> {
        self.hpas
            .state_filter(|h| h.namespace().as_deref() == Some(ns))
            .iter()
            .map(|h| h.as_ref().clone())
            .collect()
    }

    /// Names of the pods in `ns` whose labels include every one of `selector`.
    pub fn pods_matching(&self, ns: &str, selector: &std::collections::BTreeMap<String, String>) -> Vec<String> {
        self.v3_pods
            .state_filter(|p| {
                p.namespace().as_deref() == Some(ns) && selector.iter().all(|(k, v)| p.labels().get(k) == Some(v))
            })
            .iter()
            .map(|p| p.name_any())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;

    fn svc(name: &str) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some(name.into());
        s
    }

    /// Safety review #6: a watch is current from the end of its list until it fails, relists
    /// or ends. One that ended follows nothing more, so a cache that kept saying "current"
    /// (484524e did: this test failed there) would be read as the truth for good.
    #[tokio::test]
    async fn a_watch_is_current_from_its_list_until_it_relists_or_ends() {
        let (events, source) = futures::channel::mpsc::unbounded::<watcher::Result<Event<Service>>>();
        let current: Arc<[AtomicBool; WATCHES]> = Arc::default();
        let (store, stream) = feed(source, None, Some, |_| {}, current.clone(), Watch::Slices);
        let drained = tokio::spawn(stream.for_each(|_| future::ready(())));
        let now = || current[Watch::Slices as usize].load(Ordering::Acquire);
        let settled = |want: bool, what: &'static str| {
            let now = &now;
            async move {
                for _ in 0..200 {
                    if now() == want {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                panic!("{what}: current is not {want}");
            }
        };
        events.unbounded_send(Ok(Event::Init)).unwrap();
        events.unbounded_send(Ok(Event::InitApply(svc("v2")))).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!now(), "current while still listing");
        events.unbounded_send(Ok(Event::InitDone)).unwrap();
        settled(true, "after the list").await;
        assert_eq!(store.state().len(), 1);
        events.unbounded_send(Ok(Event::Init)).unwrap();
        settled(false, "a relist under way").await;
        events.unbounded_send(Ok(Event::InitDone)).unwrap();
        settled(true, "after the relist").await;
        drop(events);
        drained.await.unwrap();
        assert!(!now(), "current after its watch ended");
        assert!(
            current
                .iter()
                .enumerate()
                .all(|(i, c)| i == Watch::Slices as usize || !c.load(Ordering::Acquire)),
            "another watch's flag moved"
        );
    }

    #[test]
    fn an_update_to_an_object_no_upgrade_names_removes_it_and_its_first_listing_is_skipped() {
        let mut keep = only_named(|s: &Service| s.name_any() == "named");
        assert!(matches!(keep(Event::Apply(svc("named"))), Some(Event::Apply(_))));
        assert!(matches!(keep(Event::Apply(svc("other"))), Some(Event::Delete(_))));
        assert!(matches!(
            keep(Event::InitApply(svc("named"))),
            Some(Event::InitApply(_))
        ));
        assert!(keep(Event::InitApply(svc("other"))).is_none());
        assert!(matches!(keep(Event::Delete(svc("other"))), Some(Event::Delete(_))));
        assert!(matches!(keep(Event::InitDone), Some(Event::InitDone)));
    }
}
