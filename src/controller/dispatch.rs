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
/// reconciles under way finish, and no other starts) or the triggers end. `reconcile` also gets
/// when a trigger first asked for that run (`None`: a requeue came due), for its log. The object is read
/// from `store` when its reconcile starts (nothing starts before the store has listed); one
/// the store does not hold is gone and skipped.
/// Dropping the returned future aborts the reconciles under way (a lost Lease must stop them).
pub async fn run<F, Fut>(
    triggers: impl Stream<Item = Vec<Key>>,
    store: Store<LangfuseUpgrade>,
    reconcile: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(Arc<LangfuseUpgrade>, Option<Instant>) -> Fut,
    Fut: Future<Output = Requeue> + Send + 'static,
{
    let mut queue: Queue<Key> = Queue::default();
    let mut tasks: JoinSet<Requeue> = JoinSet::new();
    let mut keys: HashMap<tokio::task::Id, Key> = HashMap::new();
    // When a trigger first asked for each key's next run.
    let mut asked: HashMap<Key, Instant> = HashMap::new();
    let mut triggers = std::pin::pin!(triggers);
    let mut shutdown = std::pin::pin!(shutdown);
    let start = |key: Key,
                 queue: &mut Queue<Key>,
                 tasks: &mut JoinSet<Requeue>,
                 keys: &mut HashMap<_, Key>,
                 asked: &mut HashMap<Key, Instant>| {
        let woken = asked.remove(&key);
        match store.get(&key) {
            Some(object) => {
                let id = tasks.spawn(reconcile(object, woken)).id();
                keys.insert(id, key);
            }
            None => queue.forget(&key),
        }
    };
    // The store fills from its first list only once that list is whole, while the list's
    // objects already come as triggers: those are held until then (else they would find no
    // object and be dropped, and an upgrade under way would wait for its next change).
    let ready = store.wait_until_ready();
    let mut ready = std::pin::pin!(ready);
    let mut held: Option<HashSet<Key>> = Some(HashSet::new());
    loop {
        let deadline = queue.next_deadline();
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            _ = &mut ready, if held.is_some() => {
                for key in held.take().into_iter().flatten() {
                    if queue.trigger(key.clone()) {
                        start(key, &mut queue, &mut tasks, &mut keys, &mut asked);
                    }
                }
            }
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
                    start(key, &mut queue, &mut tasks, &mut keys, &mut asked);
                }
            }
            refs = triggers.next() => {
                let Some(refs) = refs else { break };
                let now = Instant::now();
                for key in &refs {
                    asked.entry(key.clone()).or_insert(now);
                }
                if let Some(held) = held.as_mut() {
                    held.extend(refs);
                    continue;
                }
                for key in refs {
                    if queue.trigger(key.clone()) {
                        start(key, &mut queue, &mut tasks, &mut keys, &mut asked);
                    }
                }
            }
            () = sleep_until(deadline) => {
                for key in queue.take_due(Instant::now()) {
                    start(key, &mut queue, &mut tasks, &mut keys, &mut asked);
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

    /// The loop itself, on a real store: triggers of the first list are held until the store
    /// has it (the case a restarted operator meets), a requeue runs on time, triggers during a
    /// run make one run after it, never two at once, and shutdown lets a run finish.
    #[tokio::test]
    async fn the_loop_holds_the_first_list_requeues_and_runs_one_at_a_time() {
        use kube::runtime::watcher::Event;
        use std::sync::Mutex;
        // (start, end, whether a trigger asked for it) of every run.
        type Runs = Arc<Mutex<Vec<(Instant, Option<Instant>, bool)>>>;
        let (store, mut writer) = kube::runtime::reflector::store::<LangfuseUpgrade>();
        let object = crate::testing::upgrade(crate::testing::spec(), Default::default());
        let key = ObjectRef::from(&object);
        let (tx, rx) = futures::channel::mpsc::unbounded::<Vec<Key>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // (start, end) of every run; each takes 100 ms, the first asks for a requeue in 50 ms.
        let runs: Runs = Arc::default();
        let log = runs.clone();
        let reconcile = move |_u: Arc<LangfuseUpgrade>, asked: Option<Instant>| {
            let log = log.clone();
            async move {
                let n = {
                    let mut l = log.lock().unwrap();
                    l.push((Instant::now(), None, asked.is_some()));
                    l.len()
                };
                tokio::time::sleep(Duration::from_millis(100)).await;
                log.lock().unwrap()[n - 1].1 = Some(Instant::now());
                match n {
                    1 => Requeue::After(Duration::from_millis(50)),
                    _ => Requeue::OnChange,
                }
            }
        };
        let until = |n: usize| {
            let runs = runs.clone();
            async move {
                let wait = async {
                    while runs.lock().unwrap().len() < n {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                };
                tokio::time::timeout(Duration::from_secs(5), wait)
                    .await
                    .expect("the run never came");
            }
        };
        let dispatcher = tokio::spawn(run(rx, store, reconcile, async {
            let _ = stop_rx.await;
        }));
        // The first list: its object comes as a trigger before the store has it.
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(object.clone()));
        tx.unbounded_send(vec![key.clone()]).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(runs.lock().unwrap().is_empty(), "ran before the store had listed");
        writer.apply_watcher_event(&Event::InitDone);
        until(1).await;
        // The requeue.
        until(2).await;
        let (first, second) = {
            let r = runs.lock().unwrap();
            (r[0], r[1])
        };
        assert!(
            second.0 >= first.1.unwrap() + Duration::from_millis(50),
            "requeued early"
        );
        // Three triggers while the second run is under way: one more run, after it.
        for _ in 0..3 {
            tx.unbounded_send(vec![key.clone()]).unwrap();
        }
        until(3).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Shutdown lets the run under way (if any) finish.
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(5), dispatcher)
            .await
            .unwrap()
            .unwrap();
        let runs = runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 3, "three triggers during a run make one run: {runs:?}");
        for pair in runs.windows(2) {
            let ended = pair[0].1.expect("every run finished");
            assert!(pair[1].0 >= ended, "two runs of one object at once: {runs:?}");
        }
        assert!(runs[2].1.is_some(), "shutdown cut a run short");
        let asked: Vec<bool> = runs.iter().map(|r| r.2).collect();
        assert_eq!(
            asked,
            vec![true, false, true],
            "a trigger's run says when it was asked; a requeue's does not"
        );
    }
}
