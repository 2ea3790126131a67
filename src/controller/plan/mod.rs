//! The plan: pure and synchronous. Spec, recorded facts, observations and `now` in; the phase,
//! the writes to make, the facts to record, the conditions and the requeue out.
//!
//! The phase is never read back: every decision walks the gates below from the top, so losing
//! the `phase` field, or restarting the operator between any two writes, gives the same answer.

mod drain;
mod migrate;
mod preflight;
mod reading;
mod remedies;
mod retire;
mod rollback;
mod shift;
pub mod stage;
mod verify;
mod workloads;

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::observe::Observed;
use super::validate::validate;
use crate::api::conditions::{self as cond, Desired, reason};
use crate::api::{
    APPROVE_ANNOTATION, FINALIZER, LangfuseUpgrade, LangfuseUpgradeSpec, LangfuseUpgradeStatus, Phase, Promotion,
};
use crate::databases::{ClickHouseQuery, PostgresQuery, Remedy};
use crate::resources::labels::Labels;
pub use stage::Stage;

pub use preflight::checks as preflight_checks;
pub use workloads::source_container;

/// A write the executor makes. Each is idempotent (server-side apply or a guarded delete).
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    AddFinalizer,
    RemoveFinalizer,
    ApplyDeployment(Box<Deployment>),
    DeleteDeployment(String),
    /// Drop this upgrade's owner reference from a v3 Deployment (a merge patch, not an apply).
    ReleaseDeployment(String),
    /// Set only `spec.selector` of the source Service.
    ApplySelector {
        selector: Labels,
    },
    ScaleSource(i32),
    DeleteSource,
    /// A documented write to `background_migrations` (DESIGN §4), through the database boundary.
    Remedy(Remedy),
}

impl Action {
    /// Event reason and note for the audit trail.
    pub fn describe(&self) -> (&'static str, String) {
        match self {
            Action::AddFinalizer => ("FinalizerAdded", "added the rollback finalizer".into()),
            Action::RemoveFinalizer => ("FinalizerRemoved", "removed the rollback finalizer".into()),
            Action::ApplyDeployment(d) => {
                let name = d.metadata.name.clone().unwrap_or_default();
                let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or_default();
                let image = d
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.spec.as_ref())
                    .and_then(|p| p.containers.first())
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default();
                let migrations = crate::resources::deployments::migrations_enabled(d);
                (
                    "DeploymentApplied",
                    format!(
                        "applied Deployment {name}: {image}, {replicas} replicas, background migrations {}",
                        if migrations { "on" } else { "off" }
                    ),
                )
            }
            Action::DeleteDeployment(name) => ("DeploymentDeleted", format!("deleted v3 Deployment {name}")),
            Action::ReleaseDeployment(name) => (
                "DeploymentReleased",
                format!("released v3 Deployment {name}: it no longer belongs to this object"),
            ),
            Action::ApplySelector { selector } => (
                "SelectorApplied",
                format!("set the Service selector to {}", labels_text(selector)),
            ),
            Action::ScaleSource(n) => ("SourceScaled", format!("scaled the v2 Deployment to {n} replicas")),
            Action::DeleteSource => (
                "SourceDeleted",
                "deleted the v2 Deployment (spec.strategy.deleteSource)".into(),
            ),
            Action::Remedy(r) => (
                "RemedyApplied",
                match r {
                    Remedy::SetBatchSize { name, size } => {
                        format!("set args.batchSize = {size} on background migration {name}")
                    }
                    Remedy::ClearFailure { name } => format!(
                        "cleared failed_at and failed_reason on background migration {name}: it resumes from its cursor"
                    ),
                    Remedy::RerunWindow {
                        name,
                        max_date,
                        max_rows,
                    } => format!(
                        "re-running background migration {name} for the {max_rows} rows v2 wrote after the migrations started (up to {max_date})"
                    ),
                },
            ),
        }
    }
}

pub fn labels_text(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

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

/// Which external facts the next observation needs, from the facts recorded so far.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Needs {
    pub secrets: bool,
    /// HorizontalPodAutoscalers on v2 matter to preflight and to retirement only.
    pub hpas: bool,
    pub postgres: PostgresQuery,
    pub clickhouse: ClickHouseQuery,
}

/// `now` is the decision's: late rows are counted up to it, so a re-copy bounded by it takes
/// exactly the rows counted.
pub fn needs(upgrade: &LangfuseUpgrade, now: Timestamp) -> Needs {
    let s = upgrade.status.clone().unwrap_or_default();
    let mut n = Needs::default();
    if upgrade.metadata.deletion_timestamp.is_some() || upgrade.spec.abort || upgrade.spec.paused {
        return n;
    }
    match stage_of(&upgrade.spec, &s) {
        Stage::Preflight => {
            n.hpas = true;
            n.secrets = true;
            n.postgres.server_version = true;
            n.postgres.migrations = true;
            n.postgres.same_created_at_scan = Some(crate::migrations::DEFAULT_BATCH_SIZE);
            n.clickhouse.server = true;
        }
        Stage::Draining => n.postgres.newest_write = true,
        Stage::Migrating => n.postgres.migrations = true,
        Stage::Verifying => {
            let until = s.late_writes_covered_until.as_ref().or(s.cutoff.as_ref()).map(|t| t.0);
            n.postgres.counts_until = until;
            n.postgres.late_writes_after = verify::late_window(&s).or(until.map(crate::databases::LateWindow::uniform));
            n.postgres.late_writes_until = Some(now);
            n.clickhouse.counts_until = until;
        }
        // HorizontalPodAutoscalers on v2 matter to retirement and after it.
        Stage::Retiring | Stage::Completing => n.hpas = true,
        Stage::Finalizing => {
            n.hpas = true;
            n.postgres.migrations = true;
        }
        Stage::Provisioning | Stage::Completed | Stage::RollingBack | Stage::RolledBack => {}
    }
    n
}

/// The stage of an upgrade with this spec and status (see [`stage::stage`]).
pub fn stage_of(spec: &LangfuseUpgradeSpec, status: &LangfuseUpgradeStatus) -> Stage {
    let moves_on = spec
        .target
        .final_version
        .as_ref()
        .is_some_and(|v| *v != spec.target.version);
    stage::stage(status, moves_on)
}

/// Requeue intervals: waiting is a requeue, never a sleep.
pub(crate) mod wait {
    use std::time::Duration;
    pub const NOW: Duration = Duration::from_millis(0);
    pub const ROLLOUT: Duration = Duration::from_secs(15);
    pub const POLL: Duration = Duration::from_secs(10);
    /// Waiting for a person (a failed preflight): related objects wake it through watches;
    /// this only catches what is not watched (Secrets, the databases).
    pub const PERSON: Duration = Duration::from_secs(60);
    pub const IDLE: Duration = Duration::from_secs(300);
}

pub(crate) struct Planner<'a> {
    pub upgrade: &'a LangfuseUpgrade,
    pub spec: &'a LangfuseUpgradeSpec,
    pub obs: &'a Observed,
    pub now: Timestamp,
    pub status: LangfuseUpgradeStatus,
    pub actions: Vec<Action>,
    pub conditions: Vec<Desired>,
}

/// A gate either lets the walk go on or holds it in a phase.
pub(crate) type Gate = Result<(), Hold>;

#[derive(Debug)]
pub(crate) struct Hold {
    pub phase: Phase,
    pub reason: &'static str,
    pub message: String,
    pub requeue: Duration,
}

impl Hold {
    pub fn new(phase: Phase, reason: &'static str, message: impl Into<String>, requeue: Duration) -> Self {
        Self {
            phase,
            reason,
            message: message.into(),
            requeue,
        }
    }
}

impl<'a> Planner<'a> {
    fn new(upgrade: &'a LangfuseUpgrade, obs: &'a Observed, now: Timestamp) -> Self {
        let mut status = upgrade.status.clone().unwrap_or_default();
        status.observed_generation = upgrade.metadata.generation;
        Self {
            upgrade,
            spec: &upgrade.spec,
            obs,
            now,
            status,
            actions: Vec::new(),
            conditions: Vec::new(),
        }
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

    pub fn since(&self, t: &Option<Time>) -> Option<Duration> {
        t.as_ref()
            .map(|t| Duration::from_millis((self.now.as_millisecond() - t.0.as_millisecond()).max(0) as u64))
    }

    pub fn condition(&mut self, type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) {
        self.conditions.retain(|c| c.type_ != type_);
        self.conditions.push(Desired::new(type_, status, reason, message));
    }

    /// Replace an earlier write to the same object in this decision (a later gate knows better).
    pub fn act(&mut self, action: Action) {
        if let Action::ApplyDeployment(d) = &action {
            let name = d.metadata.name.clone();
            self.actions
                .retain(|a| !matches!(a, Action::ApplyDeployment(o) if o.metadata.name == name));
        }
        if !self.actions.contains(&action) {
            self.actions.push(action);
        }
    }

    fn has_finalizer(&self) -> bool {
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
    fn step_conditions_from_facts(&mut self, settle: bool) {
        let s = self.status.clone();
        let fact = |t: &Option<Time>| t.as_ref().map(|t| t.0.to_string());
        let pairs: [(&'static str, Option<String>, &'static str, &'static str, &'static str); 5] = [
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
        ];
        for (type_, at, yes, no, text) in pairs {
            if settle {
                let is_true = self.conditions.iter().any(|c| c.type_ == type_ && c.status);
                if let (true, Some(at)) = (is_true, at) {
                    self.condition(type_, true, yes, format!("{text} {at}"));
                }
                continue;
            }
            match at {
                Some(at) => self.condition(type_, true, yes, format!("{text} {at}")),
                None => self.condition(type_, false, no, "not yet"),
            }
        }
    }

    fn finish(mut self, hold: Hold) -> Decision {
        let Hold {
            phase,
            reason,
            message,
            requeue,
        } = hold;
        self.step_conditions_from_facts(true);
        let (ready, reconciling, stalled) = match phase {
            Phase::Completed if reason == reason::COMPLETED => (true, false, false),
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
        self.status.target_version = Some(workloads::version_now(&self));
        self.status.rollback = Some(rollback::rollback_outlook(&self));
        Decision {
            phase,
            actions: self.actions,
            status: self.status,
            conditions: self.conditions,
            requeue,
        }
    }
}

/// Decide the next step for one `LangfuseUpgrade`.
pub fn plan(upgrade: &LangfuseUpgrade, obs: &Observed, now: Timestamp) -> Decision {
    let mut p = Planner::new(upgrade, obs, now);
    p.step_conditions_from_facts(false);
    if upgrade.metadata.deletion_timestamp.is_some() {
        let hold = rollback::cleanup(&mut p);
        return p.finish(hold);
    }
    let hold = walk(&mut p);
    p.finish(hold)
}

/// Every gate either holds the upgrade in a phase or lets it through; through all of them it
/// completes.
fn walk(p: &mut Planner) -> Hold {
    match gates(p) {
        Ok(()) => retire::complete(p),
        Err(hold) => hold,
    }
}

fn gates(p: &mut Planner) -> Gate {
    if p.status.completed_at.is_some() {
        return Err(retire::after_completion(p));
    }
    if p.status.rolled_back_at.is_some() {
        return Err(Hold::new(
            Phase::RolledBack,
            reason::ROLLED_BACK,
            format!(
                "rolled back to v2: {}; delete this object, or create a new one to try again",
                p.status
                    .rollback
                    .as_ref()
                    .and_then(|r| r.reason.clone())
                    .unwrap_or_default()
            ),
            wait::IDLE,
        ));
    }
    if !p.has_finalizer() {
        p.act(Action::AddFinalizer);
    }
    if p.spec.abort {
        return rollback::abort(p);
    }
    if p.status.rollback.as_ref().is_some_and(|r| r.started_at.is_some()) {
        return rollback::roll_back(p, false);
    }
    let settings = match validate(p.upgrade) {
        Ok(s) => s,
        Err(e) => {
            return Err(Hold::new(
                Phase::Pending,
                reason::INVALID_SPEC,
                format!("invalid spec: {e}"),
                wait::IDLE,
            ));
        }
    };
    if p.spec.paused {
        return Err(Hold::new(
            Phase::Paused,
            reason::PAUSED,
            "spec.paused is true: nothing is changed until it is false",
            wait::IDLE,
        ));
    }
    preflight::gate(p, &settings)?;
    let ready = workloads::ensure(p, &settings)?;
    if p.spec.strategy.promotion == Promotion::Manual && p.status.traffic_shifted_at.is_none() && !p.approved() {
        return Err(Hold::new(
            Phase::AwaitingPromotion,
            reason::AWAITING_APPROVAL,
            format!(
                "v3 is Available; set spec.strategy.approved: true (or annotate {APPROVE_ANNOTATION}=true) to shift traffic"
            ),
            wait::IDLE,
        ));
    }
    shift::gate(p, &ready)?;
    rollback::after_shift(p, &settings, &ready)?;
    drain::drain(p, &settings)?;
    migrate::migrate(p, &settings, &ready)?;
    verify::verify(p)?;
    retire::retire(p, &settings)?;
    retire::finalize(p, &settings)
}

#[cfg(test)]
mod tests;
