//! Watches one test namespace and checks DESIGN §2 on every watch event, from what the API
//! shows (not from what the operator says it did).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use langfuse_upgrade_operator::api::LangfuseUpgrade;
use langfuse_upgrade_operator::resources::deployments::migrations_enabled;
use langfuse_upgrade_operator::resources::labels::{Role, UPGRADE_LABEL, v3_selector};

use super::share::{Kind, Mark};

#[derive(Default, Debug)]
pub struct Record {
    /// Invariant violations seen, with when.
    pub violations: Vec<String>,
    /// Objects deleted in the namespace (kind/name).
    pub deleted: Vec<String>,
    /// First time each fact was seen, in µs since the observer started (the benchmark compares
    /// a few-millisecond switch with a peer timed to the microsecond).
    pub timeline_us: BTreeMap<String, u128>,
    pub switched_ever: bool,
    /// What looked like it came before the selector switch, with the resourceVersion of the
    /// object that showed it. Separate watch streams can deliver a write caused by the switch
    /// before the Service's own event, so the verdict waits for the switch's resourceVersion
    /// (etcd's one revision counter orders writes across kinds).
    before_switch: Vec<(Option<u64>, String)>,
    /// How often the Service selector changed to v3 web (from the Service's own watch events).
    pub selector_switches: usize,
    /// Whether the selector selected v3 web at the last Service event.
    on_v3: bool,
    pub max_v3_endpoints: usize,
    /// Ready endpoints of the Service have been seen once (v2 served): gaps count from then.
    served_ever: bool,
    /// Since when (ms) the Service has had no ready endpoint, while it lasts.
    dark_since: Option<u128>,
    /// Each closed stretch without a ready endpoint after v2 first served: (from ms, length ms).
    pub outages: Vec<(u128, u128)>,
    /// The one-way facts status has recorded so far (a stale writer would erase them).
    recorded: std::collections::BTreeSet<&'static str>,
    /// Facts the operator waits on and the steps it writes, on the wall clock (see `share`).
    pub marks: Vec<Mark>,
    /// The last value of each marked thing, so a mark is made when it changes.
    marked: BTreeMap<String, String>,
    /// Invariant 11: the etcd revision of the first write that showed each fact or step (one
    /// object's events come in order, so the first event showing it is the write that made it;
    /// etcd's one revision counter orders writes across objects and watch streams).
    first_rv: BTreeMap<&'static str, u64>,
    /// Status facts first seen in a relist: their revision is only an upper bound.
    inexact: std::collections::BTreeSet<&'static str>,
}

/// Invariant 11: each data-moving write (left) comes after the write that made its fact
/// durable in status (right).
const FENCED: [(&str, &str); 3] = [
    ("v3 web created", "status.provisioningStartedAt"),
    ("v3 worker migrations on", "status.cutoff"),
    ("v2 scaled to 0", "status.verifiedAt"),
];

impl Record {
    /// Stretches with no ready endpoint behind the Service, the one still open included
    /// (measured up to `now_ms`).
    /// Every violation: those seen, and those before a switch that has not been seen yet.
    pub fn all_violations(&self) -> Vec<String> {
        let mut all = self.violations.clone();
        all.extend(self.before_switch.iter().map(|(_, v)| v.clone()));
        for (write, fact) in FENCED {
            let Some(written) = self.first_rv.get(write) else {
                continue;
            };
            match self.first_rv.get(fact) {
                Some(recorded) if recorded < written => {}
                // Written at or before the revision seen: no proof either way.
                Some(_) if self.inexact.contains(fact) => {}
                recorded => all.push(format!(
                    "{write} (revision {written}) before {fact} was durable (revision {recorded:?})"
                )),
            }
        }
        all
    }

    fn first(&mut self, what: &'static str, rv: Option<u64>) {
        if let Some(rv) = rv {
            self.first_rv.entry(what).or_insert(rv);
        }
    }

    /// The switch was seen at `rv`: what was written before it stands as a violation, what was
    /// written after it (only delivered first) does not.
    fn settle_before_switch(&mut self, rv: Option<u64>) {
        for (seen_rv, v) in std::mem::take(&mut self.before_switch) {
            let after = matches!((seen_rv, rv), (Some(seen), Some(switch)) if seen > switch);
            if !after {
                self.violations.push(v);
            }
        }
    }

    /// A mark for `key`, when its value changed since the last one.
    fn mark(&mut self, key: String, value: String, kind: Kind, at: i64) {
        if self.marked.get(&key) == Some(&value) {
            return;
        }
        let what = format!("{key}: {value}");
        self.marked.insert(key, value);
        self.marks.push(Mark { at, kind, what });
    }

    pub fn downtime(&self, now_ms: u128) -> Vec<(u128, u128)> {
        let mut all = self.outages.clone();
        all.extend(self.dark_since.map(|from| (from, now_ms.saturating_sub(from))));
        all
    }
}

#[derive(Default)]
struct Snapshot {
    pods: BTreeMap<String, BTreeMap<String, String>>,
    slices: BTreeMap<String, EndpointSlice>,
    deployments: BTreeMap<String, Deployment>,
    service: Option<Service>,
    upgrade: Option<LangfuseUpgrade>,
    /// The upgrade's watch is listing (again, after it lost its place): a fact first seen now
    /// was written at or before the revision shown, not exactly at it.
    listing_upgrade: bool,
}

pub struct Observer {
    pub record: Arc<Mutex<Record>>,
    task: tokio::task::JoinHandle<()>,
    start: Instant,
}

enum Change {
    Pod(Event<Pod>),
    Slice(Event<EndpointSlice>),
    Deployment(Event<Deployment>),
    Service(Event<Service>),
    Upgrade(Box<Event<LangfuseUpgrade>>),
}

impl Observer {
    pub fn start(client: Client, ns: &str, upgrade: &str, service: &str, source: &str) -> Observer {
        let record = Arc::new(Mutex::new(Record::default()));
        let rec = record.clone();
        let (upgrade, service, source) = (upgrade.to_string(), service.to_string(), source.to_string());
        let cfg = watcher::Config::default;
        let streams = stream::select_all(vec![
            watcher::watcher(Api::<Pod>::namespaced(client.clone(), ns), cfg())
                .map(|e| e.map(Change::Pod))
                .boxed(),
            watcher::watcher(
                Api::<EndpointSlice>::namespaced(client.clone(), ns),
                cfg().labels(&format!("kubernetes.io/service-name={service}")),
            )
            .map(|e| e.map(Change::Slice))
            .boxed(),
            watcher::watcher(Api::<Deployment>::namespaced(client.clone(), ns), cfg())
                .map(|e| e.map(Change::Deployment))
                .boxed(),
            watcher::watcher(Api::<Service>::namespaced(client.clone(), ns), cfg())
                .map(|e| e.map(Change::Service))
                .boxed(),
            watcher::watcher(Api::<LangfuseUpgrade>::namespaced(client.clone(), ns), cfg())
                .map(|e| e.map(|u| Change::Upgrade(Box::new(u))))
                .boxed(),
        ]);
        let start = Instant::now();
        let task = tokio::spawn(async move {
            let mut snap = Snapshot::default();
            let mut streams = streams;
            while let Some(change) = streams.next().await {
                let Ok(change) = change else { continue };
                apply(&mut snap, change, &rec, &service);
                check(&snap, &rec, &upgrade, &source, start);
            }
        });
        Observer { record, task, start }
    }

    /// Now, on the clock of the timeline and the outages (ms since the observer started).
    pub fn now_ms(&self) -> u128 {
        self.start.elapsed().as_millis()
    }

    /// Every stretch so far (from ms, length ms) in which the Service had no ready endpoint
    /// after v2 first served: a client would have been refused then.
    pub fn downtime(&self) -> Vec<(u128, u128)> {
        self.record.lock().unwrap().downtime(self.start.elapsed().as_millis())
    }

    pub fn violations(&self) -> Vec<String> {
        self.record.lock().unwrap().all_violations()
    }

    pub fn deleted(&self) -> Vec<String> {
        self.record.lock().unwrap().deleted.clone()
    }

    /// First time each fact was seen, in µs since the observer started.
    pub fn timeline_us(&self) -> BTreeMap<String, u128> {
        self.record.lock().unwrap().timeline_us.clone()
    }

    pub fn stop(self) -> Record {
        self.task.abort();
        std::mem::take(&mut *self.record.lock().unwrap())
    }
}

fn apply(snap: &mut Snapshot, change: Change, rec: &Mutex<Record>, service: &str) {
    fn upsert<K: ResourceExt + Clone>(
        map: &mut BTreeMap<String, K>,
        e: Event<K>,
        deleted: &mut Vec<String>,
        kind: &str,
        track: bool,
    ) {
        match e {
            Event::Apply(o) | Event::InitApply(o) => {
                map.insert(o.name_any(), o);
            }
            Event::Delete(o) => {
                map.remove(&o.name_any());
                if track {
                    deleted.push(format!("{kind}/{}", o.name_any()));
                }
            }
            Event::Init | Event::InitDone => {}
        }
    }
    let mut r = rec.lock().unwrap();
    match change {
        Change::Pod(e) => match e {
            Event::Apply(p) | Event::InitApply(p) => {
                snap.pods.insert(p.name_any(), p.labels().clone());
            }
            Event::Delete(p) => {
                snap.pods.remove(&p.name_any());
            }
            Event::Init | Event::InitDone => {}
        },
        Change::Slice(e) => upsert(&mut snap.slices, e, &mut r.deleted, "EndpointSlice", false),
        Change::Deployment(e) => upsert(&mut snap.deployments, e, &mut r.deleted, "Deployment", true),
        Change::Service(e) => match e {
            Event::Apply(o) | Event::InitApply(o) if o.name_any() == service => snap.service = Some(o),
            Event::Delete(o) => {
                r.deleted.push(format!("Service/{}", o.name_any()));
                if o.name_any() == service {
                    snap.service = None;
                }
            }
            _ => {}
        },
        Change::Upgrade(e) => match *e {
            Event::Apply(u) | Event::InitApply(u) => snap.upgrade = Some(u),
            Event::Delete(_) => snap.upgrade = None,
            Event::Init => snap.listing_upgrade = true,
            Event::InitDone => snap.listing_upgrade = false,
        },
    }
}

/// etcd's revision of the object's last write; opaque to clients, but a test observer of one
/// etcd may compare them.
fn resource_version<K: ResourceExt>(o: &K) -> Option<u64> {
    o.resource_version()?.parse().ok()
}

fn check(snap: &Snapshot, rec: &Mutex<Record>, upgrade: &str, source: &str, start: Instant) {
    let mut r = rec.lock().unwrap();
    let at = start.elapsed().as_micros();
    let fact = |r: &mut Record, name: &str| {
        r.timeline_us.entry(name.to_string()).or_insert(at);
    };
    // Any Deployment's first moment rolled out and Available at each Langfuse image, and its
    // deletion (a handoff's worker overlap).
    for (name, d) in &snap.deployments {
        let (Some(spec), Some(st)) = (d.spec.as_ref(), d.status.as_ref()) else {
            continue;
        };
        let want = spec.replicas.unwrap_or(0);
        let rolled = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
            && st.updated_replicas.unwrap_or(0) >= want
            && st.available_replicas.unwrap_or(0) >= want;
        let image = spec
            .template
            .spec
            .iter()
            .flat_map(|p| p.containers.iter())
            .find(|c| c.name.starts_with("langfuse-"))
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        if want > 0 && rolled {
            fact(&mut r, &format!("{name} Available {image}"));
        }
    }
    for gone in r.deleted.clone() {
        fact(&mut r, &format!("deleted {gone}"));
    }
    let status = snap.upgrade.as_ref().and_then(|u| u.status.clone()).unwrap_or_default();
    let rolling_back = snap
        .upgrade
        .as_ref()
        .is_some_and(|u| u.spec.abort || u.metadata.deletion_timestamp.is_some())
        || status.rollback.as_ref().is_some_and(|rb| rb.started_at.is_some());
    let v3_web = v3_selector(upgrade, Role::Web);
    let selector = snap
        .service
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    if selector == v3_web && !r.switched_ever {
        r.switched_ever = true;
        fact(&mut r, "selector switched");
        let rv = snap.service.as_ref().and_then(resource_version);
        r.settle_before_switch(rv);
    }
    if selector == v3_web && !r.on_v3 {
        r.selector_switches += 1;
    }
    if r.switched_ever && selector != v3_web && !selector.is_empty() {
        fact(&mut r, "selector back on v2");
    }
    r.on_v3 = selector == v3_web;
    let role = |labels: &BTreeMap<String, String>| -> Option<&'static str> {
        if labels.get(UPGRADE_LABEL).map(String::as_str) != Some(upgrade) {
            return None;
        }
        match labels.get("app.kubernetes.io/component").map(String::as_str) {
            Some("web") => Some("web"),
            Some("worker") => Some("worker"),
            _ => None,
        }
    };
    // Invariant 1, from the EndpointSlices.
    let mut v3_ready = 0;
    let mut v2_endpoints = 0;
    for slice in snap.slices.values() {
        for e in &slice.endpoints {
            let Some(pod) = e.target_ref.as_ref().and_then(|t| t.name.clone()) else {
                continue;
            };
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
            // A pod's EndpointSlice entry can arrive before its own watch event: then its
            // Deployment-given name says what it is.
            let kind = match snap.pods.get(&pod) {
                Some(labels) => role(labels),
                None if pod.starts_with(&format!("{source}-web-")) => Some("web"),
                None if pod.starts_with(&format!("{source}-worker-")) => Some("worker"),
                None => None,
            };
            match kind {
                Some("worker") => r
                    .violations
                    .push(format!("{at}ms: worker pod {pod} is an endpoint of the Service")),
                Some(_) => {
                    if !r.switched_ever {
                        r.before_switch.push((
                            resource_version(slice),
                            format!("{at}ms: v3 web pod {pod} is an endpoint before the selector switch"),
                        ));
                    }
                    if ready {
                        v3_ready += 1;
                    }
                }
                None => v2_endpoints += 1,
            }
        }
    }
    r.max_v3_endpoints = r.max_v3_endpoints.max(v3_ready);
    // No downtime: from v2's first ready endpoint on, the Service always has one. Counted from
    // the EndpointSlices the API shows, which is what kube-proxy routes by.
    let serving = ready_endpoints(snap);
    if serving > 0 {
        r.served_ever = true;
        // In ms, as `downtime` reads them (`at` is µs: the timeline's unit).
        if let Some(from) = r.dark_since.take() {
            r.outages.push((from, at / 1000 - from));
        }
    } else if r.served_ever && r.dark_since.is_none() {
        r.dark_since = Some(at / 1000);
    }
    if r.switched_ever && v3_ready > 0 && v2_endpoints == 0 {
        fact(&mut r, "endpoints only v3");
    }
    mark_flow(
        snap,
        &mut r,
        selector_text(&selector),
        v3_ready > 0 && v2_endpoints == 0,
    );
    if status.traffic_shifted_at.is_some() && !rolling_back && v2_endpoints > 0 && selector == v3_web {
        r.violations.push(format!(
            "{at}ms: {v2_endpoints} v2 endpoints after the operator declared the shift done"
        ));
    }
    // Invariants 2 and 3, from the pod templates.
    let v2 = snap.deployments.get(source);
    let v2_pods = v2.and_then(|d| d.status.as_ref()).and_then(|s| s.replicas).unwrap_or(0);
    for (name, d) in &snap.deployments {
        if name == source {
            continue;
        }
        let is_v3 = d
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .and_then(&role)
            .is_some();
        if !is_v3 {
            continue;
        }
        let is_worker = d
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .and_then(&role)
            == Some("worker");
        if is_worker {
            // The worker's migrations flag goes one way: off again mid-copy restarts it twice.
            let key = format!("{name} migrations on");
            let was_on = r.timeline_us.contains_key(&key);
            if was_on && !migrations_enabled(d) && !rolling_back && d.metadata.deletion_timestamp.is_none() {
                r.violations
                    .push(format!("{at}ms: {name} had its background migrations turned off again"));
            }
            if migrations_enabled(d) {
                r.first("v3 worker migrations on", resource_version(d));
            }
        } else {
            r.first("v3 web created", resource_version(d));
        }
        if migrations_enabled(d) {
            fact(&mut r, &format!("{name} migrations on"));
            if !r.switched_ever {
                r.before_switch.push((
                    resource_version(d),
                    format!("{at}ms: {name} has background migrations on before the switch"),
                ));
            }
        }
        let images: Vec<String> = d
            .spec
            .iter()
            .flat_map(|s| s.template.spec.iter())
            .flat_map(|p| p.containers.iter())
            // Langfuse's own containers; v2's sidecars run whatever image they run.
            .filter(|c| c.name.starts_with("langfuse-"))
            .filter_map(|c| c.image.clone())
            .collect();
        if v2_pods > 0 && (images.is_empty() || images.iter().any(|i| !i.ends_with(":3.29.0"))) {
            r.violations
                .push(format!("{at}ms: {name} runs {images:?} while {v2_pods} v2 pods exist"));
        }
        let available = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        if want > 0 && available >= want {
            fact(&mut r, &format!("{name} available {want}"));
        }
    }
    // Invariant 4.
    if let Some(v2) = v2
        && v2.spec.as_ref().and_then(|s| s.replicas) == Some(0)
    {
        fact(&mut r, "v2 scaled to 0");
        r.first("v2 scaled to 0", resource_version(v2));
        let ready = status.traffic_shifted_at.is_some()
            && status.migrations_finished_at.is_some()
            && status.verified_at.is_some();
        if !ready && !rolling_back {
            r.violations.push(format!(
                "{at}ms: v2 scaled to 0 before shift + migrations + verification"
            ));
        }
    }
    if status.migrations_finished_at.is_some() {
        fact(&mut r, "migrations finished (status)");
    }
    let upgrade_rv = snap.upgrade.as_ref().and_then(resource_version);
    for (what, set) in [
        ("status.provisioningStartedAt", status.provisioning_started_at.is_some()),
        ("status.cutoff", status.cutoff.is_some()),
        ("status.verifiedAt", status.verified_at.is_some()),
    ] {
        if set && !r.first_rv.contains_key(what) {
            r.first(what, upgrade_rv);
            if snap.listing_upgrade {
                r.inexact.insert(what);
            }
        }
    }
    if let Some(phase) = status.phase {
        fact(&mut r, &format!("phase {phase}"));
    }
    // Facts are one-way: once recorded, never erased (a replica acting on a stale view, or a
    // status write that is not a compare-and-swap, would erase them). `migrationsFinishedAt`
    // alone is cleared on purpose, by the late-write re-run.
    for (name, set) in [
        ("trafficShiftedAt", status.traffic_shifted_at.is_some()),
        ("migrationsEnabledAt", status.migrations_enabled_at.is_some()),
        ("verifiedAt", status.verified_at.is_some()),
        ("sourceRetiredAt", status.source_retired_at.is_some()),
    ] {
        if set {
            r.recorded.insert(name);
        } else if snap.upgrade.is_some() && r.recorded.contains(name) {
            r.violations
                .push(format!("{at}ms: status.{name} was recorded, then erased"));
        }
    }
}

fn selector_text(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The marks of the operator's share: each Deployment's spec (a step) and its rollout (a fact),
/// the Service selector (a step), the EndpointSlices listing only v3 (a fact), the upgrade's
/// spec (a fact) and its flow in status (a step: phase, recorded facts, road, finalizers;
/// messages and progress are not steps).
fn mark_flow(snap: &Snapshot, r: &mut Record, selector: String, only_v3: bool) {
    let at = jiff::Timestamp::now().as_millisecond();
    for (name, d) in &snap.deployments {
        let spec = d.spec.as_ref();
        let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
        let images: Vec<String> = spec
            .iter()
            .flat_map(|s| s.template.spec.iter())
            .flat_map(|p| p.containers.iter())
            .filter(|c| c.name.starts_with("langfuse"))
            .filter_map(|c| c.image.as_deref())
            .map(|i| i.rsplit('/').next().unwrap_or(i).to_string())
            .collect();
        let migrations = if migrations_enabled(d) { ", migrations on" } else { "" };
        let generation = d.metadata.generation.unwrap_or(0);
        r.mark(
            format!("Deployment {name}"),
            format!("{replicas} x {}{migrations}", images.join("+")),
            Kind::Step,
            at,
        );
        let st = d.status.as_ref();
        let rolled_out = st.and_then(|s| s.observed_generation) == Some(generation)
            && st.and_then(|s| s.updated_replicas).unwrap_or(0) == replicas
            && st.and_then(|s| s.available_replicas).unwrap_or(0) == replicas
            && st.and_then(|s| s.replicas).unwrap_or(0) == replicas;
        if rolled_out {
            r.mark(
                format!("{name} rolled out"),
                format!("generation {generation}, {replicas} available"),
                Kind::Fact,
                at,
            );
        }
    }
    if !selector.is_empty() {
        r.mark("Service selector".into(), selector, Kind::Step, at);
    }
    if only_v3 {
        r.mark("EndpointSlices".into(), "only v3".into(), Kind::Fact, at);
    }
    let Some(u) = &snap.upgrade else { return };
    r.mark(
        "upgrade spec".into(),
        format!("generation {}", u.metadata.generation.unwrap_or(0)),
        Kind::Fact,
        at,
    );
    if u.status.is_none() && u.finalizers().is_empty() {
        return; // as applied: nothing of the operator's yet
    }
    let s = u.status.clone().unwrap_or_default();
    let recorded: Vec<&str> = [
        ("provisioning", s.provisioning_started_at.is_some()),
        ("previousSelector", s.previous_selector.is_some()),
        ("trafficShifted", s.traffic_shifted_at.is_some()),
        ("cutoff", s.cutoff.is_some()),
        ("migrationsEnabled", s.migrations_enabled_at.is_some()),
        ("workerRestarted", s.worker_restarted_at.is_some()),
        ("migrationsFinished", s.migrations_finished_at.is_some()),
        ("verified", s.verified_at.is_some()),
        ("sourceRetired", s.source_retired_at.is_some()),
        ("finalized", s.finalized_at.is_some()),
        ("completed", s.completed_at.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    let road: Vec<String> = s.road.iter().map(|r| format!("{} {:?}", r.version, r.state)).collect();
    r.mark(
        "upgrade".into(),
        format!(
            "{} [{}] road [{}] finalizers [{}]",
            s.phase.map(|p| p.to_string()).unwrap_or_default(),
            recorded.join(" "),
            road.join(", "),
            u.finalizers().join(" ")
        ),
        Kind::Step,
        at,
    );
}

/// Ready endpoints across the Service's EndpointSlices, each pod once.
fn ready_endpoints(snap: &Snapshot) -> usize {
    let mut pods = std::collections::BTreeSet::new();
    for slice in snap.slices.values() {
        for e in &slice.endpoints {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
            if ready {
                pods.insert(
                    e.target_ref
                        .as_ref()
                        .and_then(|t| t.name.clone())
                        .or_else(|| e.addresses.first().cloned()),
                );
            }
        }
    }
    pods.len()
}

#[cfg(test)]
mod tests {
    use super::Record;

    #[test]
    fn what_was_written_after_the_switch_but_delivered_first_is_no_violation() {
        let mut r = Record::default();
        r.before_switch.push((Some(90), "written before".into()));
        r.before_switch.push((Some(110), "written after".into()));
        r.before_switch.push((None, "no revision".into()));
        assert_eq!(r.all_violations().len(), 3, "unsettled, all count");
        r.settle_before_switch(Some(100));
        assert_eq!(r.all_violations(), vec!["written before", "no revision"]);
    }

    #[test]
    fn without_the_switch_revision_everything_seen_before_it_stands() {
        let mut r = Record::default();
        r.before_switch.push((Some(110), "v3 endpoint".into()));
        r.settle_before_switch(None);
        assert_eq!(r.all_violations(), vec!["v3 endpoint"]);
    }
}
