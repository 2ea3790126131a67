//! Objects read from the API because a watch cache did not hold them (one no upgrade named when
//! it last changed, such as v2 before the upgrade existed), each answer kept until the watch
//! reports anything of the object or this operator writes it: observe reads an object once, not
//! every reconcile, and never keeps an answer older than what the watch or our own write knew.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource};

use super::slim::slim;

/// Objects read from the API because the cache did not hold them, each kept (found or absent)
/// until the watch reports anything of it (or lists again): an absent object that is created is
/// reported. A read that overlapped such a report is not kept.
pub struct Fetched<K: Resource> {
    state: Mutex<FetchedState<K>>,
}

struct FetchedState<K: Resource> {
    /// `None`: the API answered that it does not exist. Boxed and slimmed as the watch caches
    /// keep theirs: inline, a Deployment made the table itself megabytes with 100 upgrades.
    kept: HashMap<ObjectRef<K>, Option<Arc<K>>>,
    /// Objects with reads under way: (reports of the object so far, readers). The count only
    /// grows while any reader holds it, so each read compares against its own start; the entry
    /// goes when the last reader finishes.
    reading: HashMap<ObjectRef<K>, (u64, usize)>,
}

impl<K> Fetched<K>
where
    K: Resource + Clone,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    pub(super) fn new() -> Self {
        Fetched {
            state: Mutex::new(FetchedState {
                kept: HashMap::new(),
                reading: HashMap::new(),
            }),
        }
    }

    pub(super) fn get(&self, key: &ObjectRef<K>) -> Option<Option<K>> {
        self.state
            .lock()
            .expect("fetched lock")
            .kept
            .get(key)
            .map(|o| o.as_deref().cloned())
    }

    pub(super) fn begin(&self, key: &ObjectRef<K>) -> u64 {
        let mut s = self.state.lock().expect("fetched lock");
        let (reports, readers) = s.reading.entry(key.clone()).or_insert((0, 0));
        *readers += 1;
        *reports
    }

    /// Keep what the API answered, unless the watch reported the object (or this operator
    /// wrote it) since this read began.
    pub(super) fn finish(&self, key: &ObjectRef<K>, began: u64, answer: Option<Option<&K>>) {
        let mut s = self.state.lock().expect("fetched lock");
        let Some((reports, readers)) = s.reading.get_mut(key) else {
            return;
        };
        let current = *reports == began;
        *readers -= 1;
        if *readers == 0 {
            s.reading.remove(key);
        }
        if let (Some(o), true) = (answer, current) {
            let kept = o.map(|o| {
                let mut o = o.clone();
                slim(&mut o);
                Arc::new(o)
            });
            s.kept.insert(key.clone(), kept);
        }
    }

    /// The watch reported this object (`Some`) or started listing again (`None`); or this
    /// operator wrote or deleted it (`Some`): what was kept may be older than that.
    pub(super) fn reported(&self, key: Option<ObjectRef<K>>) {
        let mut s = self.state.lock().expect("fetched lock");
        match key {
            Some(key) => {
                s.kept.remove(&key);
                if let Some((n, _)) = s.reading.get_mut(&key) {
                    *n += 1;
                }
            }
            None => {
                s.kept.clear();
                s.reading.values_mut().for_each(|(n, _)| *n += 1);
            }
        }
    }
}

/// From the watch cache, else what the API answered before (kept), else the API.
pub(super) async fn cached_or_get<K>(
    store: &Store<K>,
    fetched: &Fetched<K>,
    api: &Api<K>,
    ns: &str,
    name: &str,
) -> kube::Result<Option<K>>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let key = ObjectRef::new(name).within(ns);
    if let Some(o) = store.get(&key) {
        return Ok(Some(Arc::unwrap_or_clone(o)));
    }
    if let Some(known) = fetched.get(&key) {
        return Ok(known);
    }
    let began = fetched.begin(&key);
    let answer = api.get_opt(name).await;
    fetched.finish(&key, began, answer.as_ref().ok().map(Option::as_ref));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;

    #[test]
    fn an_api_answer_is_kept_until_the_watch_reports_the_object_and_not_if_it_did_meanwhile() {
        let f = Fetched::<Service>::new();
        let key = ObjectRef::new("v2").within("ns");
        let began = f.begin(&key);
        let mut answer = svc("v2");
        answer.metadata.managed_fields = Some(vec![Default::default()]);
        f.finish(&key, began, Some(Some(&answer)));
        let kept = f.get(&key).flatten().expect("kept");
        assert_eq!(kept.metadata.name.as_deref(), Some("v2"));
        assert!(
            kept.metadata.managed_fields.is_none(),
            "slimmed as the watch caches are"
        );
        f.reported(Some(key.clone()));
        assert!(f.get(&key).is_none(), "a report of the object ends it");
        // A report while the read was under way: the answer may predate it, so it is not kept.
        let began = f.begin(&key);
        f.reported(Some(key.clone()));
        f.finish(&key, began, Some(Some(&svc("v2"))));
        assert!(f.get(&key).is_none());
        // Absent is kept too, until the watch reports the object (its creation).
        let began = f.begin(&key);
        f.finish(&key, began, Some(None));
        assert!(matches!(f.get(&key), Some(None)));
        f.reported(Some(key.clone()));
        assert!(f.get(&key).is_none());
        // A failed read keeps nothing; a relist ends everything.
        let began = f.begin(&key);
        f.finish(&key, began, None);
        assert!(f.get(&key).is_none());
        let began = f.begin(&key);
        f.finish(&key, began, Some(Some(&svc("v2"))));
        f.reported(None);
        assert!(f.get(&key).is_none());
    }

    /// Safety review #7: B and A read, the watch reports the object, A finishes, C begins, B
    /// finishes. B's answer predates the report and must not be kept (a shared counter that A's
    /// finish removed let C's new entry vouch for B); C's, begun after it, is.
    #[test]
    fn overlapping_reads_each_compare_against_their_own_start() {
        let f = Fetched::<Service>::new();
        let key = ObjectRef::new("v2").within("ns");
        let b = f.begin(&key);
        let a = f.begin(&key);
        f.reported(Some(key.clone()));
        f.finish(&key, a, Some(Some(&svc("v2"))));
        assert!(f.get(&key).is_none(), "A began before the report");
        let c = f.begin(&key);
        let mut stale = svc("v2");
        stale.metadata.resource_version = Some("1".into());
        f.finish(&key, b, Some(Some(&stale)));
        assert!(f.get(&key).is_none(), "B's answer predates the report and was kept");
        let mut fresh = svc("v2");
        fresh.metadata.resource_version = Some("2".into());
        f.finish(&key, c, Some(Some(&fresh)));
        let kept = f.get(&key).flatten().expect("C began after the report");
        assert_eq!(kept.metadata.resource_version.as_deref(), Some("2"));
        assert!(
            f.state.lock().unwrap().reading.is_empty(),
            "no entry outlives its readers"
        );
    }

    /// Safety review #4: "absent" read before our own create must not survive it; nor a read
    /// under way while we write.
    #[test]
    fn our_own_write_ends_a_kept_absent_and_a_read_under_way() {
        let f = Fetched::<Service>::new();
        let key = ObjectRef::new("v3-web").within("ns");
        let began = f.begin(&key);
        f.finish(&key, began, Some(None));
        assert!(matches!(f.get(&key), Some(None)));
        // What `Caches::wrote_*` does after the executor's create.
        f.reported(Some(key.clone()));
        assert!(f.get(&key).is_none(), "absent outlived our own create");
        let began = f.begin(&key);
        f.reported(Some(key.clone()));
        f.finish(&key, began, Some(None));
        assert!(f.get(&key).is_none(), "a read that overlapped our write was kept");
    }

    fn svc(name: &str) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some(name.into());
        s
    }
}
