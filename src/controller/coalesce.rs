//! Progress is written at most once a second per upgrade. A reconcile whose status differs from
//! the stored one only by progress (a condition's message or reason under the same status, the
//! copies' cursors and percentages) and comes within a second of the last status write writes
//! nothing and asks to run again when the second is up: it ends sooner, so a watch event that
//! makes a fact true (v3 Available, the EndpointSlices only v3) is not queued behind a write
//! that only moved a percentage (or said "now the worker" instead of "web": measured, the switch
//! waited 16-23 ms behind exactly that write). Anything else (a phase, a fact, a condition's
//! status, a copy's state, a write to the cluster) is written at once, as before.
//!
//! One more write waits: the switch's own. Right after the Service selector is applied, the status
//! would only say so (phase `ShiftingTraffic`, the condition's words); no fact changes, and the
//! fact that follows (the EndpointSlices list only v3) arrives milliseconds later as a watch
//! event that waited 6-12 ms behind that write. It is held for up to a second, whatever was
//! written before: the next reconcile records the shift and `Draining` in one write, and a shift
//! whose endpoints lag says `ShiftingTraffic` when the second is up. A crash in between loses
//! nothing: the selector is read back from the Service, the replaced one was recorded ahead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;

use crate::api::{LangfuseUpgrade, LangfuseUpgradeStatus, Phase};
use crate::controller::plan::Action;

/// At most one progress-only status write per upgrade in this long.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// `new` differs from `old` by progress alone (and does differ).
pub fn progress_only(old: &LangfuseUpgradeStatus, new: &LangfuseUpgradeStatus) -> bool {
    old != new && without_progress(old) == without_progress(new)
}

/// Why a status write may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferrable {
    /// Messages and percentages: at most once a second.
    Progress,
    /// The switch's narration right after the selector write: held up to a second, always.
    Switched,
}

/// Whether the status a reconcile would write after `executed` may wait, and why. The switch's
/// narration may follow the selector write itself or a look that finds the endpoints not yet
/// moved (the Service's own watch event comes first).
pub fn deferrable(old: &LangfuseUpgradeStatus, new: &LangfuseUpgradeStatus, executed: &[Action]) -> Option<Deferrable> {
    if !matches!(executed, [] | [Action::ApplySelector { .. }]) {
        return None;
    }
    if switch_narration(old, new) {
        return Some(Deferrable::Switched);
    }
    (executed.is_empty() && progress_only(old, new)).then_some(Deferrable::Progress)
}

/// Only the phase moved to `ShiftingTraffic`, beside progress: no fact, no condition status.
fn switch_narration(old: &LangfuseUpgradeStatus, new: &LangfuseUpgradeStatus) -> bool {
    if new.phase != Some(Phase::ShiftingTraffic) || old.phase == new.phase {
        return false;
    }
    let mut old = without_progress(old);
    old.phase = new.phase;
    old == without_progress(new)
}

/// The status with what only reports progress blanked out.
fn without_progress(s: &LangfuseUpgradeStatus) -> LangfuseUpgradeStatus {
    let mut s = s.clone();
    s.migration_progress = None;
    for m in &mut s.migrations {
        m.cursor = None;
        m.progress_percent = None;
        m.cursor_since = None;
        m.estimated_rows = None;
    }
    for c in &mut s.conditions {
        c.message.clear();
        c.reason.clear();
    }
    s
}

/// When each upgrade's status was last written by this replica, and since when the switch's
/// narration has been held (a second from the first hold, not from each look: endpoints that
/// never follow are said within the second).
#[derive(Default)]
pub struct Coalescer {
    last: Mutex<HashMap<ObjectRef<LangfuseUpgrade>, Instant>>,
    held: Mutex<HashMap<ObjectRef<LangfuseUpgrade>, Instant>>,
}

impl Coalescer {
    /// `Some(wait)`: skip this write, and run again within `wait`.
    pub fn defer(&self, key: &ObjectRef<LangfuseUpgrade>, why: Option<Deferrable>, now: Instant) -> Option<Duration> {
        if why? == Deferrable::Switched {
            let mut held = self.held.lock().expect("coalescer lock");
            let since = now.saturating_duration_since(*held.entry(key.clone()).or_insert(now));
            return (since < PROGRESS_EVERY).then(|| PROGRESS_EVERY - since);
        }
        let last = *self.last.lock().expect("coalescer lock").get(key)?;
        let since = now.saturating_duration_since(last);
        (since < PROGRESS_EVERY).then(|| PROGRESS_EVERY - since)
    }

    /// A status write landed at `now`.
    pub fn wrote(&self, key: ObjectRef<LangfuseUpgrade>, now: Instant) {
        self.held.lock().expect("coalescer lock").remove(&key);
        self.last.lock().expect("coalescer lock").insert(key, now);
    }

    pub fn forget(&self, key: &ObjectRef<LangfuseUpgrade>) {
        self.held.lock().expect("coalescer lock").remove(key);
        self.last.lock().expect("coalescer lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MigrationStatus, Phase};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn status(percent: i32, message: &str, reason: &str) -> LangfuseUpgradeStatus {
        LangfuseUpgradeStatus {
            phase: Some(Phase::Migrating),
            migration_progress: Some(format!("{percent}%")),
            migrations: vec![MigrationStatus {
                name: "traces".into(),
                state: "running".into(),
                cursor: Some(format!("2026-01-01T00:00:{percent:02}Z")),
                progress_percent: Some(percent),
                failed_reason: None,
                cursor_since: None,
                batch_size: None,
                start_cursor: None,
                estimated_rows: Some(1000),
            }],
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                observed_generation: Some(1),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_moved_percentage_or_reason_is_progress_and_a_condition_status_phase_or_state_is_not() {
        let a = status(10, "copying: 10%", "Migrating");
        assert!(progress_only(&a, &status(20, "copying: 20%", "Migrating")));
        assert!(!progress_only(&a, &a), "no change is not a write at all");
        // Web Available, the worker not yet: the same Ready=False with another reason.
        assert!(progress_only(&a, &status(20, "waiting for the worker", "Provisioning")));
        let mut ready = status(20, "done", "Completed");
        ready.conditions[0].status = "True".into();
        assert!(!progress_only(&a, &ready), "a condition's status is never held back");
        let mut phase = status(20, "copying: 20%", "Migrating");
        phase.phase = Some(Phase::Verifying);
        assert!(!progress_only(&a, &phase));
        let mut state = status(10, "copying: 10%", "Migrating");
        state.migrations[0].state = "finished".into();
        assert!(!progress_only(&a, &state));
        let mut fact = status(10, "copying: 10%", "Migrating");
        fact.migrations_finished_at = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(!progress_only(&a, &fact), "a fact is never held back");
    }

    #[test]
    fn progress_is_written_at_most_once_a_second_per_upgrade() {
        let c = Coalescer::default();
        let key = ObjectRef::new("a").within("ns");
        let other = ObjectRef::new("b").within("ns");
        let t0 = Instant::now();
        let progress = Some(Deferrable::Progress);
        assert_eq!(c.defer(&key, progress, t0), None, "nothing written yet: write");
        c.wrote(key.clone(), t0);
        let wait = c.defer(&key, progress, t0 + Duration::from_millis(300));
        assert_eq!(wait, Some(Duration::from_millis(700)));
        assert_eq!(
            c.defer(&key, None, t0 + Duration::from_millis(300)),
            None,
            "not progress: at once"
        );
        assert_eq!(
            c.defer(&other, progress, t0 + Duration::from_millis(300)),
            None,
            "per upgrade"
        );
        assert_eq!(c.defer(&key, progress, t0 + PROGRESS_EVERY), None);
        c.forget(&key);
        assert_eq!(c.defer(&key, progress, t0 + Duration::from_millis(10)), None);
        let switched = Some(Deferrable::Switched);
        assert_eq!(
            c.defer(&other, switched, t0),
            Some(PROGRESS_EVERY),
            "the switch's narration waits even with nothing written before"
        );
        assert_eq!(
            c.defer(&other, switched, t0 + Duration::from_millis(600)),
            Some(Duration::from_millis(400)),
            "counted from the first hold"
        );
        assert_eq!(c.defer(&other, switched, t0 + PROGRESS_EVERY), None, "then written");
        c.wrote(other.clone(), t0 + PROGRESS_EVERY);
        assert_eq!(c.defer(&other, switched, t0 + PROGRESS_EVERY * 2), Some(PROGRESS_EVERY));
    }

    #[test]
    fn only_the_switch_s_own_narration_waits_after_a_write() {
        let before = status(10, "waiting for v3 web", "Provisioning");
        let mut switching = status(10, "switching the Service selector", "Shifting");
        switching.phase = Some(Phase::ShiftingTraffic);
        let apply = [Action::ApplySelector {
            selector: Default::default(),
        }];
        assert_eq!(deferrable(&before, &switching, &apply), Some(Deferrable::Switched));
        assert_eq!(
            deferrable(&before, &switching, &[]),
            Some(Deferrable::Switched),
            "the look that finds the endpoints not moved yet"
        );
        assert_eq!(
            deferrable(
                &switching,
                &status(30, "waiting for the Service endpoints", "Shifting"),
                &[]
            ),
            None,
            "another phase change is written at once"
        );
        let recorded = [Action::RecordFacts, apply[0].clone()];
        assert_eq!(deferrable(&before, &switching, &recorded), None, "beside a fact");
        let mut shifted = switching.clone();
        shifted.traffic_shifted_at = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(deferrable(&before, &shifted, &apply), None, "a fact is never held back");
        let mut restoring = switching.clone();
        restoring.phase = Some(Phase::RollingBack);
        assert_eq!(
            deferrable(&before, &restoring, &apply),
            None,
            "a rollback's selector write says so at once"
        );
        let mut status_flip = switching.clone();
        status_flip.conditions[0].status = "True".into();
        assert_eq!(deferrable(&before, &status_flip, &apply), None);
        assert_eq!(
            deferrable(&before, &status(20, "copying", "Migrating"), &[]),
            Some(Deferrable::Progress)
        );
    }
}
