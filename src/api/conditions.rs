//! Condition types and reasons, and merging them so `lastTransitionTime` moves only when the
//! status of a condition changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const PREFLIGHT_PASSED: &str = "PreflightPassed";
pub const TRAFFIC_SHIFTED: &str = "TrafficShifted";
pub const MIGRATIONS_COMPLETE: &str = "MigrationsComplete";
pub const VERIFIED: &str = "Verified";
pub const SOURCE_RETIRED: &str = "SourceRetired";
/// The road of in-place hops is being followed: False when a hop waits for a gate, or the
/// images were moved past a required stop or below the release reached.
pub const ROAD_FOLLOWED: &str = "RoadFollowed";
/// `strategy.analysis`: v3 web's error ratio, from the shift until v2 is retired.
pub const ERROR_RATIO_HEALTHY: &str = "ErrorRatioHealthy";
/// `spec.handoff`: Langfuse runs on the official chart's release and the operator's own
/// Deployments are gone.
pub const HANDED_OFF: &str = "HandedOff";

/// Every condition type the operator writes, in the order it writes them.
pub const ALL_TYPES: [&str; 11] = [
    READY,
    RECONCILING,
    STALLED,
    PREFLIGHT_PASSED,
    TRAFFIC_SHIFTED,
    MIGRATIONS_COMPLETE,
    VERIFIED,
    SOURCE_RETIRED,
    ROAD_FOLLOWED,
    ERROR_RATIO_HEALTHY,
    HANDED_OFF,
];

/// A condition as the plan wants it; times are filled in by [`merge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: Reason,
    pub message: String,
}

impl Desired {
    pub fn new(type_: &'static str, status: bool, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// The full condition list: desired ones updated in place (keeping the transition time while the
/// status is unchanged), types the plan says nothing about kept as they were.
pub fn merge(existing: &[Condition], desired: &[Desired], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    let mut out: Vec<Condition> = Vec::new();
    for type_ in ALL_TYPES {
        let old = existing.iter().find(|c| c.type_ == type_);
        match desired.iter().find(|d| d.type_ == type_) {
            Some(d) => {
                let status = status_str(d.status);
                let last_transition_time = match old {
                    Some(o) if o.status == status => o.last_transition_time.clone(),
                    _ => now.clone(),
                };
                out.push(Condition {
                    type_: type_.to_string(),
                    status: status.to_string(),
                    reason: d.reason.as_str().to_string(),
                    message: d.message.clone(),
                    observed_generation: generation,
                    last_transition_time,
                });
            }
            None => {
                if let Some(o) = old {
                    out.push(o.clone());
                }
            }
        }
    }
    out
}

/// Every reason a condition can carry: a closed set, each a CamelCase word as the API
/// conventions ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    InvalidSpec,
    /// A reconcile stopped on an error before it could decide (retried with backoff).
    ReconcileError,
    /// An irreversible step was reached without the facts it depends on (never expected).
    OutOfOrder,
    Pending,
    PreflightRunning,
    PreflightFailed,
    ChecksPassed,
    Provisioning,
    WebNotAvailable,
    AwaitingApproval,
    Shifting,
    Shifted,
    NotShifted,
    SelectorReverted,
    SourceMissing,
    Draining,
    PostgresUnavailable,
    ClickHouseUnavailable,
    Migrating,
    MigrationFailed,
    MigrationStalled,
    MigrationsFinished,
    MigrationStuck,
    RemedyApplied,
    NotStarted,
    Verifying,
    CountsMatch,
    CountsMismatch,
    LateWrites,
    WaitingToRetire,
    Retiring,
    Retired,
    SourceScaledUp,
    Finalizing,
    Completed,
    Paused,
    RollingBack,
    RolledBack,
    AbortTooLate,
    /// A hop of the road waits for one of its gates (infrastructure, a backup, migrations).
    HopBlocked,
    /// An in-place hop is rolling web, then the worker, or waits for its background migrations.
    Hopping,
    /// `imageChanges: User`: the next stop is safe to take; a person sets the image.
    AwaitingImageChange,
    /// The images went past the next stop the road requires.
    StopSkipped,
    /// The images went below the release the road had reached.
    Downgraded,
    /// `imageChanges: User`: a v4 container leaves a v4 flag unset, so its image's default
    /// (not v3 behaviour) is in effect.
    V4DefaultsInEffect,
    /// An unfinished background migration whose script no release ships any more blocks the
    /// worker's runner.
    OrphanRow,
    /// Every stop of the road was reached.
    HopsDone,
    /// The error ratio is at or below the analysis threshold.
    ErrorRatioOk,
    /// The error ratio is above the threshold, not yet for a whole window.
    ErrorRatioHigh,
    /// The error ratio stayed above the threshold for a whole window: rolled back.
    ErrorRatioSustained,
    /// Prometheus gave no answer to judge by (no rollback on missing data).
    AnalysisUnavailable,
    /// The handoff waits for the chart's web and worker Deployments to exist and be Available.
    WaitingForChart,
    /// The chart's pods would not run what runs (another release, flag or setting): refused.
    ChartDiffers,
    /// The handoff protects the old release's objects, moves the Service, or retires the operator's Deployments.
    HandingOff,
    /// Langfuse runs on the chart's release; the operator's Deployments are gone.
    HandedOff,
    /// `spec.handoff` was removed before the operator's Deployments were deleted: the Service was put back.
    HandoffWithdrawn,
}

impl Reason {
    pub const ALL: [Reason; 56] = [
        Reason::InvalidSpec,
        Reason::ReconcileError,
        Reason::OutOfOrder,
        Reason::Pending,
        Reason::PreflightRunning,
        Reason::PreflightFailed,
        Reason::ChecksPassed,
        Reason::Provisioning,
        Reason::WebNotAvailable,
        Reason::AwaitingApproval,
        Reason::Shifting,
        Reason::Shifted,
        Reason::NotShifted,
        Reason::SelectorReverted,
        Reason::SourceMissing,
        Reason::Draining,
        Reason::PostgresUnavailable,
        Reason::ClickHouseUnavailable,
        Reason::Migrating,
        Reason::MigrationFailed,
        Reason::MigrationStalled,
        Reason::MigrationsFinished,
        Reason::MigrationStuck,
        Reason::RemedyApplied,
        Reason::NotStarted,
        Reason::Verifying,
        Reason::CountsMatch,
        Reason::CountsMismatch,
        Reason::LateWrites,
        Reason::WaitingToRetire,
        Reason::Retiring,
        Reason::Retired,
        Reason::SourceScaledUp,
        Reason::Finalizing,
        Reason::Completed,
        Reason::Paused,
        Reason::RollingBack,
        Reason::RolledBack,
        Reason::AbortTooLate,
        Reason::HopBlocked,
        Reason::Hopping,
        Reason::AwaitingImageChange,
        Reason::StopSkipped,
        Reason::Downgraded,
        Reason::V4DefaultsInEffect,
        Reason::OrphanRow,
        Reason::HopsDone,
        Reason::ErrorRatioOk,
        Reason::ErrorRatioHigh,
        Reason::ErrorRatioSustained,
        Reason::AnalysisUnavailable,
        Reason::WaitingForChart,
        Reason::ChartDiffers,
        Reason::HandingOff,
        Reason::HandedOff,
        Reason::HandoffWithdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidSpec => "InvalidSpec",
            Reason::ReconcileError => "ReconcileError",
            Reason::OutOfOrder => "OutOfOrder",
            Reason::Pending => "Pending",
            Reason::PreflightRunning => "PreflightRunning",
            Reason::PreflightFailed => "PreflightFailed",
            Reason::ChecksPassed => "ChecksPassed",
            Reason::Provisioning => "Provisioning",
            Reason::WebNotAvailable => "WebNotAvailable",
            Reason::AwaitingApproval => "AwaitingApproval",
            Reason::Shifting => "Shifting",
            Reason::Shifted => "Shifted",
            Reason::NotShifted => "NotShifted",
            Reason::SelectorReverted => "SelectorReverted",
            Reason::SourceMissing => "SourceMissing",
            Reason::Draining => "Draining",
            Reason::PostgresUnavailable => "PostgresUnavailable",
            Reason::ClickHouseUnavailable => "ClickHouseUnavailable",
            Reason::Migrating => "Migrating",
            Reason::MigrationFailed => "MigrationFailed",
            Reason::MigrationStalled => "MigrationStalled",
            Reason::MigrationsFinished => "MigrationsFinished",
            Reason::MigrationStuck => "MigrationStuck",
            Reason::RemedyApplied => "RemedyApplied",
            Reason::NotStarted => "NotStarted",
            Reason::Verifying => "Verifying",
            Reason::CountsMatch => "CountsMatch",
            Reason::CountsMismatch => "CountsMismatch",
            Reason::LateWrites => "LateWrites",
            Reason::WaitingToRetire => "WaitingToRetire",
            Reason::Retiring => "Retiring",
            Reason::Retired => "Retired",
            Reason::SourceScaledUp => "SourceScaledUp",
            Reason::Finalizing => "Finalizing",
            Reason::Completed => "Completed",
            Reason::Paused => "Paused",
            Reason::RollingBack => "RollingBack",
            Reason::RolledBack => "RolledBack",
            Reason::AbortTooLate => "AbortTooLate",
            Reason::HopBlocked => "HopBlocked",
            Reason::Hopping => "Hopping",
            Reason::AwaitingImageChange => "AwaitingImageChange",
            Reason::StopSkipped => "StopSkipped",
            Reason::Downgraded => "Downgraded",
            Reason::V4DefaultsInEffect => "V4DefaultsInEffect",
            Reason::OrphanRow => "OrphanRow",
            Reason::HopsDone => "HopsDone",
            Reason::ErrorRatioOk => "ErrorRatioOk",
            Reason::ErrorRatioHigh => "ErrorRatioHigh",
            Reason::ErrorRatioSustained => "ErrorRatioSustained",
            Reason::AnalysisUnavailable => "AnalysisUnavailable",
            Reason::WaitingForChart => "WaitingForChart",
            Reason::ChartDiffers => "ChartDiffers",
            Reason::HandingOff => "HandingOff",
            Reason::HandedOff => "HandedOff",
            Reason::HandoffWithdrawn => "HandoffWithdrawn",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reasons by their old constant names, so call sites read `reason::DRAINING`.
pub mod reason {
    use super::Reason;

    pub const INVALID_SPEC: Reason = Reason::InvalidSpec;
    pub const RECONCILE_ERROR: Reason = Reason::ReconcileError;
    pub const OUT_OF_ORDER: Reason = Reason::OutOfOrder;
    pub const PENDING: Reason = Reason::Pending;
    pub const PREFLIGHT_RUNNING: Reason = Reason::PreflightRunning;
    pub const PREFLIGHT_FAILED: Reason = Reason::PreflightFailed;
    pub const CHECKS_PASSED: Reason = Reason::ChecksPassed;
    pub const PROVISIONING: Reason = Reason::Provisioning;
    pub const WEB_NOT_AVAILABLE: Reason = Reason::WebNotAvailable;
    pub const AWAITING_APPROVAL: Reason = Reason::AwaitingApproval;
    pub const SHIFTING: Reason = Reason::Shifting;
    pub const SHIFTED: Reason = Reason::Shifted;
    pub const NOT_SHIFTED: Reason = Reason::NotShifted;
    pub const SELECTOR_REVERTED: Reason = Reason::SelectorReverted;
    pub const SOURCE_MISSING: Reason = Reason::SourceMissing;
    pub const DRAINING: Reason = Reason::Draining;
    pub const POSTGRES_UNAVAILABLE: Reason = Reason::PostgresUnavailable;
    pub const CLICKHOUSE_UNAVAILABLE: Reason = Reason::ClickHouseUnavailable;
    pub const MIGRATING: Reason = Reason::Migrating;
    pub const MIGRATION_FAILED: Reason = Reason::MigrationFailed;
    pub const MIGRATION_STALLED: Reason = Reason::MigrationStalled;
    pub const MIGRATIONS_FINISHED: Reason = Reason::MigrationsFinished;
    pub const MIGRATION_STUCK: Reason = Reason::MigrationStuck;
    pub const REMEDY_APPLIED: Reason = Reason::RemedyApplied;
    pub const NOT_STARTED: Reason = Reason::NotStarted;
    pub const VERIFYING: Reason = Reason::Verifying;
    pub const COUNTS_MATCH: Reason = Reason::CountsMatch;
    pub const COUNTS_MISMATCH: Reason = Reason::CountsMismatch;
    pub const LATE_WRITES: Reason = Reason::LateWrites;
    pub const WAITING_TO_RETIRE: Reason = Reason::WaitingToRetire;
    pub const RETIRING: Reason = Reason::Retiring;
    pub const RETIRED: Reason = Reason::Retired;
    pub const SOURCE_SCALED_UP: Reason = Reason::SourceScaledUp;
    pub const FINALIZING: Reason = Reason::Finalizing;
    pub const COMPLETED: Reason = Reason::Completed;
    pub const PAUSED: Reason = Reason::Paused;
    pub const ROLLING_BACK: Reason = Reason::RollingBack;
    pub const ROLLED_BACK: Reason = Reason::RolledBack;
    pub const ABORT_TOO_LATE: Reason = Reason::AbortTooLate;
    pub const HOP_BLOCKED: Reason = Reason::HopBlocked;
    pub const HOPPING: Reason = Reason::Hopping;
    pub const AWAITING_IMAGE_CHANGE: Reason = Reason::AwaitingImageChange;
    pub const STOP_SKIPPED: Reason = Reason::StopSkipped;
    pub const DOWNGRADED: Reason = Reason::Downgraded;
    pub const V4_DEFAULTS_IN_EFFECT: Reason = Reason::V4DefaultsInEffect;
    pub const ORPHAN_ROW: Reason = Reason::OrphanRow;
    pub const HOPS_DONE: Reason = Reason::HopsDone;
    pub const ERROR_RATIO_OK: Reason = Reason::ErrorRatioOk;
    pub const ERROR_RATIO_HIGH: Reason = Reason::ErrorRatioHigh;
    pub const ERROR_RATIO_SUSTAINED: Reason = Reason::ErrorRatioSustained;
    pub const ANALYSIS_UNAVAILABLE: Reason = Reason::AnalysisUnavailable;
    pub const WAITING_FOR_CHART: Reason = Reason::WaitingForChart;
    pub const CHART_DIFFERS: Reason = Reason::ChartDiffers;
    pub const HANDING_OFF: Reason = Reason::HandingOff;
    pub const HANDED_OFF: Reason = Reason::HandedOff;
    pub const HANDOFF_WITHDRAWN: Reason = Reason::HandoffWithdrawn;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_explained_in_the_operating_page() {
        let page = include_str!("../../docs/operating.md");
        for r in Reason::ALL {
            assert!(
                page.contains(&format!("| `{r}` |")),
                "{r} is not explained in docs/operating.md (what it means, what to do)"
            );
        }
    }
    use jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let first = merge(
            &[],
            &[Desired::new(READY, false, reason::PROVISIONING, "a")],
            Some(1),
            &at(10),
        );
        assert_eq!(first[0].last_transition_time, at(10));

        // Same status, new reason and message: the time stays.
        let second = merge(
            &first,
            &[Desired::new(READY, false, reason::DRAINING, "b")],
            Some(2),
            &at(20),
        );
        assert_eq!(second[0].last_transition_time, at(10));
        assert_eq!(second[0].reason, "Draining");
        assert_eq!(second[0].observed_generation, Some(2));

        let third = merge(
            &second,
            &[Desired::new(READY, true, reason::COMPLETED, "c")],
            Some(2),
            &at(30),
        );
        assert_eq!(third[0].last_transition_time, at(30));
        assert_eq!(third[0].status, "True");
    }

    #[test]
    fn conditions_the_plan_omits_are_kept() {
        let first = merge(
            &[],
            &[Desired::new(VERIFIED, true, reason::COUNTS_MATCH, "ok")],
            Some(1),
            &at(10),
        );
        let second = merge(
            &first,
            &[Desired::new(READY, false, reason::RETIRING, "x")],
            Some(1),
            &at(20),
        );
        assert_eq!(second.len(), 2);
        assert!(
            second
                .iter()
                .any(|c| c.type_ == VERIFIED && c.last_transition_time == at(10))
        );
    }
}
