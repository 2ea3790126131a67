//! The controller's watches, kept as in-memory caches: the objects every reconcile reads (the
//! v2 and v3 Deployments, the Service, its EndpointSlices, the v3 web pods) come from memory
//! instead of six API round trips. That is what lets the traffic switch follow "v3 Available"
//! by one watch event and one write. The same watch streams wake the upgrades that name an
//! object, as the metadata-only watches did before.

use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::resources::labels::UPGRADE_LABEL;

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
}

type Feed<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// The watch streams that fill [`Caches`]; each must be polled (the controller does: they are
/// the triggers of its reconciles).
pub struct Feeds {
    pub deployments: Feed<Deployment>,
    pub services: Feed<Service>,
    pub slices: Feed<EndpointSlice>,
    pub v3_pods: Feed<PartialObjectMeta<Pod>>,
}

/// Fields no decision reads, dropped before caching (the largest part of most objects).
fn slim<K: Resource>(o: &mut K) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

fn feed<K>(events: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static) -> (Store<K>, Feed<K>)
where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = events
        .backoff(super::WatchBackoff::default())
        .modify(slim)
        .reflect(writer)
        .touched_objects()
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

impl Caches {
    /// The caches and the streams that fill them, in the operator's watch scope.
    pub fn new(client: &Client, namespace: Option<&str>) -> (Caches, Feeds) {
        let config = || watcher::Config::default().any_semantic();
        let (deployments, d) = feed(watcher(scoped(client, namespace), config()));
        let (services, s) = feed(watcher(scoped(client, namespace), config()));
        let (slices, e) = feed(watcher(scoped(client, namespace), config()));
        // Metadata only: the names and labels say which pods are v3 web.
        let (v3_pods, p) = feed(watcher(
            scoped::<PartialObjectMeta<Pod>>(client, namespace),
            config().labels(UPGRADE_LABEL),
        ));
        let caches = Caches {
            deployments,
            services,
            slices,
            v3_pods,
        };
        let feeds = Feeds {
            deployments: d,
            services: s,
            slices: e,
            v3_pods: p,
        };
        (caches, feeds)
    }

    /// Every cache has its first full list: until then, observe reads the API.
    pub fn synced(&self) -> bool {
        let ready = |f: futures::future::BoxFuture<'_, bool>| f.now_or_never().unwrap_or(false);
        ready(self.deployments.wait_until_ready().map(|r| r.is_ok()).boxed())
            && ready(self.services.wait_until_ready().map(|r| r.is_ok()).boxed())
            && ready(self.slices.wait_until_ready().map(|r| r.is_ok()).boxed())
            && ready(self.v3_pods.wait_until_ready().map(|r| r.is_ok()).boxed())
    }

    pub fn deployment(&self, ns: &str, name: &str) -> Option<Deployment> {
        let key = reflector::ObjectRef::new(name).within(ns);
        self.deployments.get(&key).map(Arc::unwrap_or_clone)
    }

    pub fn service(&self, ns: &str, name: &str) -> Option<Service> {
        let key = reflector::ObjectRef::new(name).within(ns);
        self.services.get(&key).map(Arc::unwrap_or_clone)
    }

    /// The EndpointSlices of one Service.
    pub fn slices_of(&self, ns: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
        self.slices.state_filter(|s| {
            s.namespace().as_deref() == Some(ns)
                && s.labels().get(SERVICE_NAME_LABEL).map(String::as_str) == Some(service)
        })
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
