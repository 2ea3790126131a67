//! The kit every gate shares: the planner (the decision being built), holds and requeues.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::api::conditions::{self as cond, Desired, Reason, reason};
use crate::api::{APPROVE_ANNOTATION, FINALIZER, LangfuseUpgrade, LangfuseUpgradeSpec, LangfuseUpgradeStatus, Phase};
use crate::catalog::Catalog;
use crate::controller::observed::Observed;

/// The plan's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub phase: Phase,
    pub actions: Vec<Action>,
    /// The new status, conditions not yet merged (see [`cond::merge`]).
    pub status: LangfuseUpgradeStatus,
    pub conditions: Vec<Desired>,
    pub requeue: Duration,
}

/// The decision moves the stage on (not to a terminal one) and writes more than status. A
/// terminal fact is the other way round: the clean-up (releasing the v3 Deployments, deleting
/// v3) is done before it is recorded, or it would never be done.
fn moves_stage_with_writes(
    spec: &LangfuseUpgradeSpec,
    before: &LangfuseUpgradeStatus,
    after: &LangfuseUpgradeStatus,
    actions: &[Action],
) -> bool {
    let writes = actions
        .iter()
        .any(|a| !matches!(a, Action::RecordFacts | Action::AddFinalizer));
    let (from, to) = (stage_of(spec, before), stage_of(spec, after));
    writes && from != to && !matches!(to, Stage::Completed | Stage::RolledBack)
}

impl Decision {
    /// Writes that cannot be taken back or that start data moving: made only from a view of
    /// the object and of the cluster read fresh from the API, not from caches that may lag.
    pub fn irreversible(&self, upgrade: &LangfuseUpgrade) -> bool {
        let before = upgrade.status.clone().unwrap_or_default();
        self.actions.iter().any(Action::needs_current_object)
            || moves_stage_with_writes(&upgrade.spec, &before, &self.status, &self.actions)
    }
}

/// Requeue intervals: waiting is a requeue, never a sleep.
pub(crate) mod wait {
    use std::time::Duration;
    pub const NOW: Duration = Duration::from_millis(0);
    pub const ROLLOUT: Duration = Duration::from_secs(15);
    pub const POLL: Duration = Duration::from_secs(10);
    /// Postgres cannot be watched (the operator writes no triggers there): while a copy moves it
    /// is polled this often. One poll is three statements and about 0.4 ms
    /// of the serving backend's CPU at 10 million rows (`make bench`), so ten a second are about
    /// 0.4 % of one core; a copy's end is then seen 50 ms after it on average. Status is written
    /// no more often for it: a state as it changes, a moving cursor once a second.
    pub const DB_WATCH: Duration = Duration::from_millis(100);
    /// While the drain waits: a newer v2 row only moves its end later, and the read at the end
    /// decides (the wait is woken exactly then), so the polls between need not be faster.
    pub const DRAIN_WATCH: Duration = Duration::from_millis(250);
    /// The shortest requeue: a zero one would spin (status writes trigger the next reconcile
    /// anyway). Not above `DB_WATCH`, so the polls above are not stretched.
    pub const FLOOR: Duration = Duration::from_millis(100);
    /// A database that did not answer is tried again this soon: a connection attempt to a
    /// server that is down costs nothing, and every second it is back unseen is a second lost.
    pub const DB_RETRY: Duration = Duration::from_secs(2);
    /// A copy whose cursor has not moved this long is polled at `POLL` again.
    pub const DB_WATCH_QUIET: Duration = Duration::from_secs(60);
    /// Waiting for a person (a failed preflight): related objects wake it through watches;
    /// this only catches what is not watched (Secrets, the databases).
    pub const PERSON: Duration = Duration::from_secs(60);
    pub const IDLE: Duration = Duration::from_secs(300);
}

pub(crate) struct Planner<'a> {
    pub upgrade: &'a LangfuseUpgrade,
    pub spec: &'a LangfuseUpgradeSpec,
    pub obs: &'a Observed,
    /// The releases the road is planned over: an input, so tests can vary it.
    pub catalog: &'a Catalog,
    pub now: Timestamp,
    pub status: LangfuseUpgradeStatus,
    pub actions: Vec<Action>,
    pub conditions: Vec<Desired>,
    /// A watch that must look again sooner than the hold says (the error-ratio analysis).
    requeue_cap: Option<Duration>,
}

/// From `t` to `to`, never negative.
fn elapsed(t: &Option<Time>, to: Timestamp) -> Option<Duration> {
    t.as_ref()
        .map(|t| Duration::from_millis((to.as_millisecond() - t.0.as_millisecond()).max(0) as u64))
}

/// A gate either lets the walk go on or holds it in a phase.
pub(crate) type Gate = Result<(), Hold>;

#[derive(Debug)]
pub(crate) struct Hold {
    pub phase: Phase,
    pub reason: Reason,
    pub message: String,
    pub requeue: Duration,
}

impl Hold {
    pub fn new(phase: Phase, reason: Reason, message: impl Into<String>, requeue: Duration) -> Self {
        Self {
            phase,
            reason,
            message: message.into(),
            requeue,
        }
    }
}

impl<'a> Planner<'a> {
    pub(super) fn new(upgrade: &'a LangfuseUpgrade, obs: &'a Observed, catalog: &'a Catalog, now: Timestamp) -> Self {
        let mut status = upgrade.status.clone().unwrap_or_default();
        status.observed_generation = upgrade.metadata.generation;
        Self {
            upgrade,
            spec: &upgrade.spec,
            obs,
            catalog,
            now,
            status,
            actions: Vec::new(),
            conditions: Vec::new(),
            requeue_cap: None,
        }
    }

    /// Look again within `d`, whatever the hold says.
    pub fn requeue_at_most(&mut self, d: Duration) {
        self.requeue_cap = Some(self.requeue_cap.map_or(d, |c| c.min(d)));
    }

    pub fn name(&self) -> &str {
        self.upgrade.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> &str {
        self.upgrade.metadata.namespace.as_deref().unwrap_or_default()
    }

    /// Where the upgrade is now, from the facts recorded so far (this decision's included).
    pub fn stage(&self) -> Stage {
        stage_of(self.spec, &self.status)
    }

    /// The road, as the recorded facts say (preflight records the source this decision at most).
    pub fn road(&self) -> in_place::Road {
        in_place::Road::of(&self.status)
    }

    /// An irreversible step checks the facts it depends on itself, whatever order the gates
    /// are walked in: a missing one holds the upgrade and nothing is written.
    pub fn require(&self, step: &str, facts: &[(&str, bool)]) -> Gate {
        let missing: Vec<&str> = facts.iter().filter(|(_, ok)| !ok).map(|(what, _)| *what).collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Hold::new(
            Phase::Failed,
            reason::OUT_OF_ORDER,
            format!(
                "refusing to {step} before {}: a bug in the operator's order of steps; nothing was changed, please report it",
                missing.join(", ")
            ),
            wait::IDLE,
        ))
    }

    pub fn now_time(&self) -> Time {
        Time(self.now)
    }

    /// How long before this reconcile's last read `t` was, to the millisecond when the
    /// observation says when that was (else from the whole-second `now`).
    pub fn since_read(&self, t: &Option<Time>) -> Option<Duration> {
        elapsed(t, self.obs.read_at.unwrap_or(self.now))
    }

    pub fn since(&self, t: &Option<Time>) -> Option<Duration> {
        elapsed(t, self.now)
    }

    /// A step condition and the hold that keeps the upgrade there, with the same words.
    pub fn hold_step(
        &mut self,
        type_: &'static str,
        phase: Phase,
        reason: Reason,
        message: String,
        requeue: Duration,
    ) -> Hold {
        self.condition(type_, false, reason, message.clone());
        Hold::new(phase, reason, message, requeue)
    }

    pub fn condition(&mut self, type_: &'static str, status: bool, reason: Reason, message: impl Into<String>) {
        self.conditions.retain(|c| c.type_ != type_);
        self.conditions.push(Desired::new(type_, status, reason, message));
    }

    /// Add a write; the same write twice is one. A second, different apply of one Deployment
    /// would silently undo the first gate's decision: a bug in the gates, caught by the tests.
    pub fn act(&mut self, action: Action) {
        if let Action::ApplyDeployment(d) = &action {
            let name = d.metadata.name.clone();
            // Checked in the plan's own tests (every gate, the simulated cluster), not in a
            // debug operator, where a panic would stop a reconcile that is otherwise sound.
            assert!(
                !cfg!(test)
                    || !self
                        .actions
                        .iter()
                        .any(|a| matches!(a, Action::ApplyDeployment(o) if o.metadata.name == name && o != d)),
                "two different applies of Deployment {name:?} in one decision"
            );
            self.actions
                .retain(|a| !matches!(a, Action::ApplyDeployment(o) if o.metadata.name == name));
        }
        if !self.actions.contains(&action) {
            self.actions.push(action);
        }
    }

    pub(super) fn has_finalizer(&self) -> bool {
        self.upgrade
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == FINALIZER)
    }

    pub fn approved(&self) -> bool {
        self.spec.strategy.approved
            || self
                .upgrade
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(APPROVE_ANNOTATION))
                .is_some_and(|v| v == "true")
    }

    /// Step conditions as the recorded facts say; gates override them where they know more.
    /// With `settle`, only conditions already True are rewritten, so their message comes from
    /// the fact alone and does not change between reconciles.
    pub(super) fn step_conditions_from_facts(&mut self, settle: bool) {
        let s = self.status.clone();
        // A source already on v3/v4 has no shift, drain, copy or retirement: only preflight.
        let in_place = self.road() == in_place::Road::InPlace;
        for (type_, at, yes, no, text) in fact_conditions(&s) {
            if in_place && type_ != cond::PREFLIGHT_PASSED {
                continue;
            }
            if settle {
                let is_true = self.conditions.iter().any(|c| c.type_ == type_ && c.status);
                if let (true, Some(at)) = (is_true, at) {
                    self.condition(type_, true, yes, format!("{text} {at}"));
                }
                continue;
            }
            match at {
                Some(at) => self.condition(type_, true, yes, format!("{text} {at}")),
                // Enabled and not finished: running, whatever gate holds this reconcile (a
                // fallback to NotStarted here would flap the reason, and emit a Warning).
                None if type_ == cond::MIGRATIONS_COMPLETE && s.migrations_enabled_at.is_some() => self.condition(
                    type_,
                    false,
                    reason::MIGRATING,
                    "background migrations enabled; progress follows",
                ),
                None => self.condition(type_, false, no, "not yet"),
            }
        }
    }

    /// Invariant 11: a decision that moves the stage (v3 web's first start, the migrations flag
    /// with the cut-off, v2's scale-down after verification, a rollback's start) writes its facts
    /// before anything else. That write is a compare-and-swap onto the version planned from:
    /// a `paused` or `abort` accepted meanwhile stops every write after it, and a write never
    /// lands without the fact the next decision needs to see it.
    fn record_first_when_the_stage_moves(&mut self) {
        let before = self.upgrade.status.clone().unwrap_or_default();
        if moves_stage_with_writes(self.spec, &before, &self.status, &self.actions)
            && self.actions.first() != Some(&Action::RecordFacts)
        {
            self.actions.retain(|a| *a != Action::RecordFacts);
            self.actions.insert(0, Action::RecordFacts);
        }
    }

    pub(super) fn finish(mut self, hold: Hold) -> Decision {
        let Hold {
            phase,
            reason,
            message,
            requeue,
        } = hold;
        self.step_conditions_from_facts(true);
        let (ready, reconciling, stalled) = match phase {
            Phase::Completed
                if reason == reason::COMPLETED
                    || reason == reason::HANDED_OFF
                    || reason == reason::DATA_MODEL_REACHED =>
            {
                (true, false, false)
            }
            Phase::Completed => (false, false, true),
            Phase::Paused => (false, false, false),
            Phase::Blocked | Phase::Degraded | Phase::Failed | Phase::RolledBack | Phase::Pending => {
                (false, false, true)
            }
            _ => (false, true, false),
        };
        self.condition(cond::READY, ready, reason, message.clone());
        if reconciling {
            self.condition(cond::RECONCILING, true, reason, message.clone());
        } else {
            self.condition(cond::RECONCILING, false, reason, "not progressing");
        }
        if stalled {
            self.condition(cond::STALLED, true, reason, message);
        } else {
            self.condition(cond::STALLED, false, reason, "not stalled");
        }
        self.status.phase = Some(phase);
        self.status.target_version = match self.road() {
            in_place::Road::InPlace => in_place::release_now(&self.status),
            in_place::Road::BesideV2 => Some(workloads::version_now(&self)),
        };
        self.status.rollback = Some(rollback::rollback_outlook(&self));
        self.status.road = road_status::road_status(&self);
        let requeue = self.requeue_cap.map_or(requeue, |cap| requeue.min(cap));
        self.record_first_when_the_stage_moves();
        Decision {
            phase,
            actions: self.actions,
            status: self.status,
            conditions: self.conditions,
            requeue,
        }
    }
}

/// The step conditions that recorded facts make True: (type, the fact's time, reason when
/// true, reason while not, the words before the time).
fn fact_conditions(s: &LangfuseUpgradeStatus) -> [FactCondition; 5] {
    let fact = |t: &Option<Time>| t.as_ref().map(|t| t.0.to_string());
    [
        (
            cond::PREFLIGHT_PASSED,
            fact(&s.provisioning_started_at),
            reason::CHECKS_PASSED,
            reason::PREFLIGHT_RUNNING,
            "preflight checks passed at",
        ),
        (
            cond::TRAFFIC_SHIFTED,
            fact(&s.traffic_shifted_at),
            reason::SHIFTED,
            reason::NOT_SHIFTED,
            "the Service selects only v3 web pods since",
        ),
        (
            cond::MIGRATIONS_COMPLETE,
            fact(&s.migrations_finished_at),
            reason::MIGRATIONS_FINISHED,
            reason::NOT_STARTED,
            "all background migrations finished at",
        ),
        (
            cond::VERIFIED,
            fact(&s.verified_at),
            reason::COUNTS_MATCH,
            reason::NOT_STARTED,
            "Postgres and ClickHouse counts agreed at",
        ),
        (
            cond::SOURCE_RETIRED,
            fact(&s.source_retired_at),
            reason::RETIRED,
            reason::NOT_STARTED,
            "v2 has had no pods since",
        ),
    ]
}

type FactCondition = (&'static str, Option<String>, Reason, Reason, &'static str);
