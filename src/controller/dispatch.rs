//! Which upgrade reconciles when. A watch event starts its upgrade's reconcile at once; one
//! reconcile per upgrade at a time (an event meanwhile runs it again right after); a requeue at
//! the time the reconcile asked for (the earliest request wins).
//!
//! Why not kube-runtime's `Controller`: its scheduler puts every request, even one due now, on
//! a timer wheel of whole milliseconds and then waits on that timer, so each watch event
//! reached its reconcile 1.2-3.4 ms late (measured in the e2e happy path, 2026-12-02): half of
//! the traffic switch, whose floor is one watch event and one write.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::api::LangfuseUpgrade;

/// What a reconcile asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// Run again after this long, unless a watch event comes first.
    After(Duration),
    /// Only when a watch event comes.
    OnChange,
}

/// The bookkeeping, without I/O: which keys run, which must run again, which are due when.
#[derive(Debug)]
pub struct Queue<K> {
    running: HashSet<K>,
    /// Asked for while running: run again as soon as the current run ends.
    again: HashSet<K>,
    due: HashMap<K, Instant>,
}

impl<K> Default for Queue<K> {
    fn default() -> Self {
        Queue {
            running: HashSet::new(),
            again: HashSet::new(),
            due: HashMap::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> Queue<K> {
    /// A watch event (or a due requeue) for `key`: `true` when it is to start now.
    pub fn trigger(&mut self, key: K) -> bool {
        if self.running.contains(&key) {
            self.again.insert(key);
            return false;
        }
        self.due.remove(&key);
        self.running.insert(key);
        true
    }

    /// A run of `key` ended asking for `next`: `true` when it is to start again now.
    pub fn finished(&mut self, key: K, next: Requeue, now: Instant) -> bool {
        self.running.remove(&key);
        if self.again.remove(&key) {
            // The run about to start asks for its own requeue.
            self.due.remove(&key);
            self.running.insert(key);
            return true;
        }
        if let Requeue::After(after) = next {
            let at = now + after;
            let entry = self.due.entry(key).or_insert(at);
            *entry = (*entry).min(at);
        }
        false
    }

    /// `key` could not run (its object is gone): nothing of it is kept.
    pub fn forget(&mut self, key: &K) {
        self.running.remove(key);
        self.again.remove(key);
        self.due.remove(key);
    }

    /// When the earliest requeue is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// The requeues due by `now`, taken off the queue: the keys to start now (a running one
    /// runs again when it ends).
    pub fn take_due(&mut self, now: Instant) -> Vec<K> {
        let keys: Vec<K> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter().filter(|k| self.trigger(k.clone())).collect()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }
}

type Key = ObjectRef<LangfuseUpgrade>;

/// A reconcile of a panic is retried after this long (it never should panic).
const AFTER_PANIC: Duration = Duration::from_secs(5);

/// Run `reconcile` for the upgrades `triggers` name, until `shutdown` completes (then the
/// reconciles under way finish, and no other starts) or the triggers end. The object is read
/// from `store` when its reconcile starts; one the store does not hold is gone and skipped.
/// Dropping the returned future aborts the reconciles under way (a lost Lease must stop them).
pub async fn run<F, Fut>(
    triggers: impl Stream<Item = Vec<Key>>,
    store: Store<LangfuseUpgrade>,
    reconcile: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(Arc<LangfuseUpgrade>) -> Fut,
    Fut: Future<Output = Requeue> + Send + 'static,
{
    let mut queue: Queue<Key> = Queue::default();
    let mut tasks: JoinSet<Requeue> = JoinSet::new();
    let mut keys: HashMap<tokio::task::Id, Key> = HashMap::new();
    let mut triggers = std::pin::pin!(triggers);
    let mut shutdown = std::pin::pin!(shutdown);
    let start = |key: Key, queue: &mut Queue<Key>, tasks: &mut JoinSet<Requeue>, keys: &mut HashMap<_, Key>| match store
        .get(&key)
    {
        Some(object) => {
            let id = tasks.spawn(reconcile(object)).id();
            keys.insert(id, key);
        }
        None => queue.forget(&key),
    };
    loop {
        let deadline = queue.next_deadline();
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (id, next) = match done {
                    Ok((id, next)) => (id, next),
                    Err(e) => {
                        tracing::error!(error = %e, "a reconcile panicked; retrying it");
                        (e.id(), Requeue::After(AFTER_PANIC))
                    }
                };
                if let Some(key) = keys.remove(&id)
                    && queue.finished(key.clone(), next, Instant::now())
                {
                    start(key, &mut queue, &mut tasks, &mut keys);
                }
            }
            refs = triggers.next() => {
                let Some(refs) = refs else { break };
                for key in refs {
                    if queue.trigger(key.clone()) {
                        start(key, &mut queue, &mut tasks, &mut keys);
                    }
                }
            }
            () = sleep_until(deadline) => {
                for key in queue.take_due(Instant::now()) {
                    start(key, &mut queue, &mut tasks, &mut keys);
                }
            }
        }
    }
    tracing::info!(
        running = queue.running(),
        "stopping: letting the reconciles under way finish"
    );
    while tasks.join_next().await.is_some() {}
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_trigger_starts_at_once_and_one_while_running_runs_again_after() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        assert!(q.trigger("a"));
        assert!(!q.trigger("a"), "never two runs of one key");
        assert!(!q.trigger("a"));
        assert!(q.trigger("b"), "other keys are not held");
        // The run ends; the event that came meanwhile runs it again, once.
        assert!(q.finished("a", Requeue::After(Duration::from_secs(60)), t0));
        assert_eq!(q.next_deadline(), None, "the new run asks for its own requeue");
        assert!(!q.finished("a", Requeue::OnChange, t0));
        assert_eq!(q.running(), 1);
    }

    #[test]
    fn requeues_come_due_at_the_earliest_time_asked_and_a_trigger_takes_their_place() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        assert!(q.trigger("a"));
        assert!(!q.finished("a", Requeue::After(Duration::from_millis(100)), t0));
        assert!(q.trigger("b"));
        assert!(!q.finished("b", Requeue::After(Duration::from_millis(300)), t0));
        assert_eq!(q.next_deadline(), Some(at(t0, 100)));
        assert!(q.take_due(at(t0, 99)).is_empty());
        assert_eq!(q.take_due(at(t0, 100)), vec!["a"]);
        assert_eq!(q.next_deadline(), Some(at(t0, 300)));
        // An event before b's requeue runs it now and drops the requeue.
        assert!(q.trigger("b"));
        assert_eq!(q.next_deadline(), None);
        // A later request does not push back an earlier one.
        assert!(!q.finished("b", Requeue::After(Duration::from_millis(50)), t0));
        assert!(!q.finished("a", Requeue::After(Duration::from_secs(9)), t0));
        assert!(q.trigger("c"));
        assert!(!q.finished("c", Requeue::OnChange, t0));
        assert_eq!(q.next_deadline(), Some(at(t0, 50)));
    }

    #[test]
    fn a_requeue_due_while_running_runs_again_after_and_forget_drops_everything() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        assert!(q.trigger("a"));
        assert!(!q.finished("a", Requeue::After(Duration::from_millis(10)), t0));
        assert!(q.trigger("a"));
        // Not due: the trigger took the requeue's place.
        assert!(q.take_due(at(t0, 20)).is_empty());
        q.due.insert("a", t0);
        assert!(q.take_due(at(t0, 20)).is_empty(), "running: runs again when it ends");
        assert!(q.finished("a", Requeue::OnChange, t0));
        q.forget(&"a");
        assert_eq!(q.running(), 0);
        assert_eq!(q.next_deadline(), None);
        assert!(q.trigger("a"));
    }
}
