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

/// Every condition type the operator writes, in the order it writes them.
pub const ALL_TYPES: [&str; 8] = [
    READY,
    RECONCILING,
    STALLED,
    PREFLIGHT_PASSED,
    TRAFFIC_SHIFTED,
    MIGRATIONS_COMPLETE,
    VERIFIED,
    SOURCE_RETIRED,
];

/// A condition as the plan wants it; times are filled in by [`merge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Desired {
    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Self {
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
                    reason: d.reason.to_string(),
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

/// Reasons, each a CamelCase word as the API conventions ask.
pub mod reason {
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A reconcile stopped on an error before it could decide (retried with backoff).
    pub const RECONCILE_ERROR: &str = "ReconcileError";
    /// An irreversible step was reached without the facts it depends on (never expected).
    pub const OUT_OF_ORDER: &str = "OutOfOrder";
    pub const PENDING: &str = "Pending";
    pub const PREFLIGHT_RUNNING: &str = "PreflightRunning";
    pub const PREFLIGHT_FAILED: &str = "PreflightFailed";
    pub const CHECKS_PASSED: &str = "ChecksPassed";
    pub const PROVISIONING: &str = "Provisioning";
    pub const WEB_NOT_AVAILABLE: &str = "WebNotAvailable";
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    pub const SHIFTING: &str = "Shifting";
    pub const SHIFTED: &str = "Shifted";
    pub const NOT_SHIFTED: &str = "NotShifted";
    pub const SELECTOR_REVERTED: &str = "SelectorReverted";
    pub const SOURCE_MISSING: &str = "SourceMissing";
    pub const DRAINING: &str = "Draining";
    pub const POSTGRES_UNAVAILABLE: &str = "PostgresUnavailable";
    pub const CLICKHOUSE_UNAVAILABLE: &str = "ClickHouseUnavailable";
    pub const MIGRATING: &str = "Migrating";
    pub const MIGRATION_FAILED: &str = "MigrationFailed";
    pub const MIGRATION_STALLED: &str = "MigrationStalled";
    pub const MIGRATIONS_FINISHED: &str = "MigrationsFinished";
    pub const MIGRATION_STUCK: &str = "MigrationStuck";
    pub const REMEDY_APPLIED: &str = "RemedyApplied";
    pub const NOT_STARTED: &str = "NotStarted";
    pub const VERIFYING: &str = "Verifying";
    pub const COUNTS_MATCH: &str = "CountsMatch";
    pub const COUNTS_MISMATCH: &str = "CountsMismatch";
    pub const LATE_WRITES: &str = "LateWrites";
    pub const WAITING_TO_RETIRE: &str = "WaitingToRetire";
    pub const RETIRING: &str = "Retiring";
    pub const RETIRED: &str = "Retired";
    pub const SOURCE_SCALED_UP: &str = "SourceScaledUp";
    pub const FINALIZING: &str = "Finalizing";
    pub const COMPLETED: &str = "Completed";
    pub const PAUSED: &str = "Paused";
    pub const ROLLING_BACK: &str = "RollingBack";
    pub const ROLLED_BACK: &str = "RolledBack";
    pub const ABORT_TOO_LATE: &str = "AbortTooLate";
}

#[cfg(test)]
mod tests {
    use super::*;
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
