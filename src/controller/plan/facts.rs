//! The milestones the road records in status, as one closed set: each is written only through
//! [`Planner::record`], so "what can set `verifiedAt`" is one search for `Fact::Verified`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::Planner;
use crate::api::LangfuseUpgradeStatus;

/// A milestone of the road, each one time in status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fact {
    ProvisioningStarted,
    TrafficShifted,
    /// The drain's cut-off: v2 wrote nothing after it.
    Cutoff,
    MigrationsEnabled,
    MigrationsFinished,
    Verified,
    SourceRetired,
    /// The last in-place stop reached.
    Finalized,
    Completed,
    RolledBack,
    WorkerRestarted,
}

impl Fact {
    fn slot(self, s: &mut LangfuseUpgradeStatus) -> &mut Option<Time> {
        match self {
            Fact::ProvisioningStarted => &mut s.provisioning_started_at,
            Fact::TrafficShifted => &mut s.traffic_shifted_at,
            Fact::Cutoff => &mut s.cutoff,
            Fact::MigrationsEnabled => &mut s.migrations_enabled_at,
            Fact::MigrationsFinished => &mut s.migrations_finished_at,
            Fact::Verified => &mut s.verified_at,
            Fact::SourceRetired => &mut s.source_retired_at,
            Fact::Finalized => &mut s.finalized_at,
            Fact::Completed => &mut s.completed_at,
            Fact::RolledBack => &mut s.rolled_back_at,
            Fact::WorkerRestarted => &mut s.worker_restarted_at,
        }
    }
}

impl Planner<'_> {
    /// Record `fact` as true at `at`.
    pub(super) fn record(&mut self, fact: Fact, at: Time) {
        *fact.slot(&mut self.status) = Some(at);
    }

    /// Record `fact` as true now (the decision's time).
    pub(super) fn record_now(&mut self, fact: Fact) {
        let now = self.now_time();
        self.record(fact, now);
    }

    /// Take `fact` back: its step runs again (a re-copy after a failed verification).
    pub(super) fn unrecord(&mut self, fact: Fact) {
        *fact.slot(&mut self.status) = None;
    }
}
