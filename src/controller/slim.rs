//! What the caches keep of each object: the fields no decision reads are dropped before
//! caching (managedFields alone were 4.6 MB of a 25.6 MB heap with 200 upgrades).

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;

/// Fields no decision reads, dropped before caching.
pub fn slim<K: Resource>(o: &mut K) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// An EndpointSlice as the plan reads it: which pod each endpoint is and whether it is ready.
pub fn slim_slice(s: &mut EndpointSlice) {
    slim(s);
    s.metadata.annotations = None;
    s.ports = None;
    for e in &mut s.endpoints {
        e.addresses.clear();
        e.hints = None;
        e.hostname = None;
        e.node_name = None;
        e.zone = None;
        e.deprecated_topology = None;
    }
}

/// An HPA as the plan reads it: its name and the object it scales.
pub fn slim_hpa(h: &mut HorizontalPodAutoscaler) {
    slim(h);
    h.metadata.annotations = None;
    h.metadata.labels = None;
    h.status = None;
    if let Some(spec) = h.spec.as_mut() {
        spec.metrics = None;
        spec.behavior = None;
    }
}
