//! Read-your-writes without a GET: per upgrade, the version this operator last wrote or read
//! fresh, and what its own last status write returned until the watch shows it.
//!
//! The cached object can predate this operator's own last status write; planning from it
//! would repeat a decision with a later `now` (moving recorded times, repeating Events). It is
//! used only when it is exactly the version last written or read, or the version the last
//! write started from (then that write's answer is the object); otherwise the caller reads
//! the object fresh. Every write is a compare-and-swap on the version planned from either way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::LangfuseUpgrade;

/// What is known of one upgrade.
#[derive(Clone)]
struct Known {
    version: String,
    /// The version the writing reconcile planned from, and the object its writes (each a
    /// compare-and-swap onto the one before) ended at. A cached copy still at `from` has missed
    /// only those writes: `object` is then the current object, without a GET.
    written: Option<(String, Arc<LangfuseUpgrade>)>,
}

/// The memo of every upgrade's last known version.
#[derive(Default)]
pub struct WriteMemo {
    known: Mutex<HashMap<ObjectRef<LangfuseUpgrade>, Known>>,
}

/// The object to plan from, and whether it is known to be current.
pub struct Current {
    pub upgrade: Arc<LangfuseUpgrade>,
    pub known_current: bool,
}

impl WriteMemo {
    /// `cached` (from the watch) as the object to plan from: current when it is the version
    /// last known, or the object the last write returned when `cached` is what that write
    /// started from. Otherwise `cached`, not known to be current.
    pub fn current(&self, cached: Arc<LangfuseUpgrade>) -> Current {
        let key = ObjectRef::from(cached.as_ref());
        let version = cached.resource_version();
        let known = {
            let mut known = self.known.lock().expect("memo lock");
            // The watch has caught up with the write: the object kept from it is not needed.
            if let Some(k) = known.get_mut(&key)
                && version.as_ref() == Some(&k.version)
            {
                k.written = None;
            }
            known.get(&key).cloned()
        };
        if known.as_ref().is_some_and(|k| version.as_ref() == Some(&k.version)) {
            return Current {
                upgrade: cached,
                known_current: true,
            };
        }
        match known.and_then(|k| k.written) {
            Some((from, written)) if version.as_ref() == Some(&from) => Current {
                upgrade: written,
                known_current: true,
            },
            _ => Current {
                upgrade: cached,
                known_current: false,
            },
        }
    }

    /// After a reconcile's writes: `planned_from` is the version it planned from, `version`
    /// the one its writes ended at (`None`: the object is gone or leaves this operator), and
    /// `object` what its own status write returned.
    pub fn remember(
        &self,
        key: ObjectRef<LangfuseUpgrade>,
        planned_from: Option<String>,
        version: Option<String>,
        object: Option<LangfuseUpgrade>,
    ) {
        let mut known = self.known.lock().expect("memo lock");
        match version {
            Some(version) => {
                let written = object.zip(planned_from).map(|(mut o, from)| {
                    super::slim::slim(&mut o);
                    (from, Arc::new(o))
                });
                known.insert(key, Known { version, written })
            }
            None => known.remove(&key),
        };
    }

    /// A write may have landed unseen (a conflict, an error): plan the next one from a fresh read.
    pub fn forget(&self, key: &ObjectRef<LangfuseUpgrade>) {
        self.known.lock().expect("memo lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(version: &str) -> Arc<LangfuseUpgrade> {
        let mut u = crate::testing::upgrade(crate::testing::spec(), Default::default());
        u.metadata.name = Some("lf".into());
        u.metadata.namespace = Some("ns".into());
        u.metadata.resource_version = Some(version.into());
        Arc::new(u)
    }

    fn key() -> ObjectRef<LangfuseUpgrade> {
        ObjectRef::from(at("1").as_ref())
    }

    #[test]
    fn an_object_never_written_is_read_fresh() {
        let memo = WriteMemo::default();
        assert!(!memo.current(at("7")).known_current);
    }

    #[test]
    fn the_cache_at_the_written_version_is_current() {
        let memo = WriteMemo::default();
        memo.remember(key(), Some("7".into()), Some("9".into()), None);
        assert!(memo.current(at("9")).known_current);
    }

    #[test]
    fn a_cache_still_at_the_planned_version_is_replaced_by_the_write_answer() {
        let memo = WriteMemo::default();
        let answer = at("9").as_ref().clone();
        memo.remember(key(), Some("7".into()), Some("9".into()), Some(answer));
        let current = memo.current(at("7"));
        assert!(current.known_current);
        assert_eq!(current.upgrade.resource_version().as_deref(), Some("9"));
    }

    #[test]
    fn any_other_version_is_read_fresh() {
        let memo = WriteMemo::default();
        memo.remember(
            key(),
            Some("7".into()),
            Some("9".into()),
            Some(at("9").as_ref().clone()),
        );
        // Older than the write's start (a lagging cache) or newer than its end (another writer).
        assert!(!memo.current(at("5")).known_current);
        assert!(!memo.current(at("11")).known_current);
    }

    #[test]
    fn once_the_watch_caught_up_the_kept_answer_is_dropped() {
        let memo = WriteMemo::default();
        memo.remember(
            key(),
            Some("7".into()),
            Some("9".into()),
            Some(at("9").as_ref().clone()),
        );
        assert!(memo.current(at("9")).known_current);
        // A cache seen at 7 again after the watch showed 9 is older than what is known.
        assert!(!memo.current(at("7")).known_current);
    }

    #[test]
    fn a_forgotten_or_gone_object_is_read_fresh() {
        let memo = WriteMemo::default();
        memo.remember(key(), Some("7".into()), Some("9".into()), None);
        memo.forget(&key());
        assert!(!memo.current(at("9")).known_current);
        memo.remember(key(), Some("7".into()), Some("9".into()), None);
        memo.remember(key(), Some("9".into()), None, None);
        assert!(!memo.current(at("9")).known_current);
    }
}
