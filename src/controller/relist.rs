//! The upgrades' own watch as triggers. A list (the first one, and every relist after the
//! watch lost its place, e.g. across an apiserver restart) delivers its objects one by one
//! while the store still holds the previous state and swaps only at the list's end: an
//! upgrade created while the watch was down would find no object, be dropped, and wait for
//! its next change. So a list's objects are held and all released at its end.

use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

use crate::api::LangfuseUpgrade;

type Key = ObjectRef<LangfuseUpgrade>;

/// Keys of the list under way, released when it ends.
#[derive(Debug, Default)]
pub struct ListHold {
    listing: Vec<Key>,
}

impl ListHold {
    /// The upgrades to trigger once the store has applied `event`.
    pub fn after(&mut self, event: &Event<LangfuseUpgrade>) -> Vec<Key> {
        match event {
            Event::Init => {
                self.listing.clear();
                Vec::new()
            }
            Event::InitApply(u) => {
                self.listing.push(ObjectRef::from(u));
                Vec::new()
            }
            Event::InitDone => std::mem::take(&mut self.listing),
            Event::Apply(u) => vec![ObjectRef::from(u)],
            // Gone: nothing to reconcile (a deletion under way is an update, with its finalizer).
            Event::Delete(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(name: &str) -> LangfuseUpgrade {
        let mut u = crate::testing::upgrade(crate::testing::spec(), Default::default());
        u.metadata.name = Some(name.into());
        u.metadata.namespace = Some("ns".into());
        u
    }

    /// Safety review #5: an upgrade created while the watch was down arrives in a relist; it is
    /// triggered once the store holds it, at the relist's end, not while the old state is kept.
    #[test]
    fn a_relists_objects_are_triggered_at_its_end() {
        let mut h = ListHold::default();
        assert_eq!(h.after(&Event::Apply(upgrade("a"))), [ObjectRef::new("a").within("ns")]);
        assert!(h.after(&Event::Init).is_empty());
        assert!(h.after(&Event::InitApply(upgrade("a"))).is_empty());
        assert!(h.after(&Event::InitApply(upgrade("created-while-down"))).is_empty());
        assert_eq!(
            h.after(&Event::InitDone),
            [
                ObjectRef::new("a").within("ns"),
                ObjectRef::new("created-while-down").within("ns")
            ]
        );
        // A relist that starts over (the watch failed again mid-list) keeps only its own.
        h.after(&Event::Init);
        h.after(&Event::InitApply(upgrade("a")));
        h.after(&Event::Init);
        h.after(&Event::InitApply(upgrade("b")));
        assert_eq!(h.after(&Event::InitDone), [ObjectRef::new("b").within("ns")]);
        assert!(h.after(&Event::Delete(upgrade("b"))).is_empty());
    }
}
