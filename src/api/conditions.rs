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
/// `spec.target.dataModel`: the v4 data-model road has reached its target.
pub const DATA_MODEL: &str = "DataModel";

/// Every condition type the operator writes, in the order it writes them.
pub const ALL_TYPES: [&str; 12] = [
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
    DATA_MODEL,
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
    /// The data-model road writes a stage's flags: web first, then the worker.
    MovingDataModel,
    /// The data-model road cannot go on (not v4, ClickHouse grants, the chart owns the Deployments).
    DataModelBlocked,
    /// The dual write's propagation job has not run within its stuck threshold.
    PropagationStuck,
    /// The oldest staging partition not yet propagated is older than `dataModel.lagAlert`.
    PropagationLagging,
    /// The dual write has not yet been healthy for `dataModel.dualWriteHealthyFor`.
    WaitingForHealthyDualWrite,
    /// ClickHouse has too little free disk for the historic backfill.
    DiskHeadroom,
    /// Background rows M1-M4 copy the historic data into the events tables.
    Backfilling,
    /// A backfill row failed and its documented remedies are used up.
    BackfillRowFailed,
    /// `historicData: RetentionWindow`: the cutover waits for one retention window of dual write.
    RetentionWindow,
    /// Producers seen in `events_core` that `events_only` would reject.
    IncompatibleProducers,
    /// Every check passed; the irreversible step waits for `dataModel.acknowledge`.
    AwaitingAcknowledgement,
    /// `target.dataModel` is reached (and, in Dual, the dual write is healthy).
    DataModelReached,
    /// A step back was asked for after the cutover, which cannot be undone.
    ForwardOnly,
    /// Back to `legacy` from `dual` or the backfill, before the cutover.
    BackedOut,
}

impl Reason {
    pub const ALL: [Reason; 70] = [
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
        Reason::MovingDataModel,
        Reason::DataModelBlocked,
        Reason::PropagationStuck,
        Reason::PropagationLagging,
        Reason::WaitingForHealthyDualWrite,
        Reason::DiskHeadroom,
        Reason::Backfilling,
        Reason::BackfillRowFailed,
        Reason::RetentionWindow,
        Reason::IncompatibleProducers,
        Reason::AwaitingAcknowledgement,
        Reason::DataModelReached,
        Reason::ForwardOnly,
        Reason::BackedOut,
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
            Reason::MovingDataModel => "MovingDataModel",
            Reason::DataModelBlocked => "DataModelBlocked",
            Reason::PropagationStuck => "PropagationStuck",
            Reason::PropagationLagging => "PropagationLagging",
            Reason::WaitingForHealthyDualWrite => "WaitingForHealthyDualWrite",
            Reason::DiskHeadroom => "DiskHeadroom",
            Reason::Backfilling => "Backfilling",
            Reason::BackfillRowFailed => "BackfillRowFailed",
            Reason::RetentionWindow => "RetentionWindow",
            Reason::IncompatibleProducers => "IncompatibleProducers",
            Reason::AwaitingAcknowledgement => "AwaitingAcknowledgement",
            Reason::DataModelReached => "DataModelReached",
            Reason::ForwardOnly => "ForwardOnly",
            Reason::BackedOut => "BackedOut",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reasons by their old constant names, so call sites read `reason::DRAINING`.
/// The reasons by their old constant names, so call sites read `reason::DRAINING`.
#[path = "reasons.rs"]
pub mod reason;

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
