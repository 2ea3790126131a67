//! Where observe reads the cluster's objects from: one interface, two sources. The watch
//! caches answer from memory (an object they do not hold comes from the API once); the plain
//! API answers every read with a round trip (the CLI, and a reconcile whose caches are not
//! current or whose decision cannot be taken back). Observe has one path over either.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};

use super::cache::{Caches, SERVICE_NAME_LABEL};

/// The reads observe makes of the cluster's objects, in one namespace.
pub trait ObjectSource: Sync {
    fn deployment(&self, name: &str) -> impl Future<Output = kube::Result<Option<Deployment>>> + Send;
    fn service(&self, name: &str) -> impl Future<Output = kube::Result<Option<Service>>> + Send;
    /// Every EndpointSlice of the Service.
    fn slices_of(&self, service: &str) -> impl Future<Output = kube::Result<Vec<EndpointSlice>>> + Send;
    /// Names of the pods whose labels include every one of `selector`.
    fn pods_matching(
        &self,
        selector: &BTreeMap<String, String>,
    ) -> impl Future<Output = kube::Result<BTreeSet<String>>> + Send;
    fn hpas(&self) -> impl Future<Output = kube::Result<Vec<HorizontalPodAutoscaler>>> + Send;
}

/// The plain API: every read a round trip.
pub struct ApiObjects {
    deployments: Api<Deployment>,
    services: Api<Service>,
    slices: Api<EndpointSlice>,
    pods: Api<Pod>,
    hpas: Api<HorizontalPodAutoscaler>,
}

impl ApiObjects {
    pub fn new(client: &Client, ns: &str) -> Self {
        ApiObjects {
            deployments: Api::namespaced(client.clone(), ns),
            services: Api::namespaced(client.clone(), ns),
            slices: Api::namespaced(client.clone(), ns),
            pods: Api::namespaced(client.clone(), ns),
            hpas: Api::namespaced(client.clone(), ns),
        }
    }
}

fn label_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl ObjectSource for ApiObjects {
    async fn deployment(&self, name: &str) -> kube::Result<Option<Deployment>> {
        self.deployments.get_opt(name).await
    }

    async fn service(&self, name: &str) -> kube::Result<Option<Service>> {
        self.services.get_opt(name).await
    }

    async fn slices_of(&self, service: &str) -> kube::Result<Vec<EndpointSlice>> {
        let params = ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={service}"));
        Ok(self.slices.list(&params).await?.items)
    }

    async fn pods_matching(&self, selector: &BTreeMap<String, String>) -> kube::Result<BTreeSet<String>> {
        let params = ListParams::default().labels(&label_selector(selector));
        let pods = self.pods.list_metadata(&params).await?;
        Ok(pods.items.into_iter().filter_map(|p| p.metadata.name).collect())
    }

    async fn hpas(&self) -> kube::Result<Vec<HorizontalPodAutoscaler>> {
        Ok(self.hpas.list(&ListParams::default()).await?.items)
    }
}

/// The watch caches, with the API behind them for a Deployment or Service they do not hold.
pub struct CachedObjects<'a> {
    caches: &'a Caches,
    api: ApiObjects,
    ns: String,
}

impl<'a> CachedObjects<'a> {
    pub fn new(caches: &'a Caches, client: &Client, ns: &str) -> Self {
        CachedObjects {
            caches,
            api: ApiObjects::new(client, ns),
            ns: ns.to_owned(),
        }
    }
}

impl ObjectSource for CachedObjects<'_> {
    async fn deployment(&self, name: &str) -> kube::Result<Option<Deployment>> {
        self.caches.deployment(&self.api.deployments, &self.ns, name).await
    }

    async fn service(&self, name: &str) -> kube::Result<Option<Service>> {
        self.caches.service(&self.api.services, &self.ns, name).await
    }

    async fn slices_of(&self, service: &str) -> kube::Result<Vec<EndpointSlice>> {
        let slices = self.caches.slices_of(&self.ns, service);
        Ok(slices.iter().map(|s| s.as_ref().clone()).collect())
    }

    async fn pods_matching(&self, selector: &BTreeMap<String, String>) -> kube::Result<BTreeSet<String>> {
        Ok(self.caches.pods_matching(&self.ns, selector).into_iter().collect())
    }

    async fn hpas(&self) -> kube::Result<Vec<HorizontalPodAutoscaler>> {
        Ok(self.caches.hpas_in(&self.ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selector_lists_every_label_in_order() {
        let labels = BTreeMap::from([("b".to_string(), "2".to_string()), ("a".to_string(), "1".to_string())]);
        assert_eq!(label_selector(&labels), "a=1,b=2");
    }
}
