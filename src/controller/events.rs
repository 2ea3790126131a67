//! Events go out on a task of their own, in the order they were handed over: a reconcile hands
//! them over and returns, so the next step (already queued by its status write) never waits
//! behind their round trips. Events are best effort (status is the record): one the apiserver
//! refuses is logged and dropped, and those still queued when the process ends are lost, or
//! when it loses its Lease: a replica that no longer leads publishes nothing more (Events are
//! stamped when published, and would tell of a stale step as if it were new).

use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder};
use tokio::sync::mpsc;

use super::fence::Fence;

pub struct EventSink {
    queue: mpsc::UnboundedSender<(ObjectReference, Event)>,
    task: tokio::task::AbortHandle,
    fence: Arc<RwLock<Fence>>,
}

impl EventSink {
    /// Starts the publishing task (inside the runtime).
    pub fn start(recorder: Recorder) -> Self {
        let (queue, mut next) = mpsc::unbounded_channel::<(ObjectReference, Event)>();
        let fence = Arc::new(RwLock::new(Fence::none()));
        let checked = fence.clone();
        let task = tokio::spawn(async move {
            while let Some((reference, event)) = next.recv().await {
                // Checked at each Event: one queued before a pause (SIGSTOP, a frozen VM) must
                // not go out after it, once the Lease may be another replica's.
                if !checked.read().expect("fence lock").holds() {
                    continue;
                }
                if let Err(e) = recorder.publish(&event, &reference).await {
                    tracing::warn!(error = %e, reason = %event.reason, "could not publish an Event");
                }
            }
        })
        .abort_handle();
        Self { queue, task, fence }
    }

    /// Publish only while `fence` holds.
    pub fn fence_with(&self, fence: Fence) {
        *self.fence.write().expect("fence lock") = fence;
    }

    /// Drops what is queued and publishes nothing more (the Lease was lost).
    pub fn stop(&self) {
        self.task.abort();
    }

    pub fn send(&self, reference: &ObjectReference, event: Event) {
        // Fails only once the task is gone (the runtime shutting down): nothing left to tell.
        let _ = self.queue.send((reference.clone(), event));
    }
}
