//! Where the upgrade is, from the facts recorded in status alone: one derivation, used by the
//! choice of what to observe ([`super::needs`]) and by the gates, so the two cannot disagree.
//! What is observed only says whether a stage's work is done, never which stage it is.

use crate::api::LangfuseUpgradeStatus;

/// The stages of the road, in order. A stage is left by recording its fact in status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Nothing recorded: the checks run, nothing is touched.
    Preflight,
    /// Preflight passed: v3 is provisioned beside v2 and the traffic switched to it.
    Provisioning,
    /// Traffic on v3: waiting for v2 to stop writing.
    Draining,
    /// Cut-off recorded: the background migrations run.
    Migrating,
    /// Migrations finished: Postgres and ClickHouse are compared.
    Verifying,
    /// Verified: v2 is kept for `retireSourceAfter`, then scaled to 0.
    Retiring,
    /// v2 retired: v3 moves on to `finalVersion`.
    Finalizing,
    /// Every step done: the v3 Deployments are released.
    Completing,
    /// Terminal: completed.
    Completed,
    /// A rollback started (abort, an unhealthy web, a deletion) and is not done.
    RollingBack,
    /// Terminal: rolled back.
    RolledBack,
}

/// The stage the recorded facts put the upgrade in. `moves_on` says whether a `finalVersion`
/// other than the parallel version is asked for (only then is there a Finalizing stage).
/// `in_place`: the source already ran v3 or v4, so there is no v2 to run beside: preflight,
/// then the in-place hops (Finalizing), then completion.
pub fn stage(s: &LangfuseUpgradeStatus, moves_on: bool, in_place: bool) -> Stage {
    if s.completed_at.is_some() {
        return Stage::Completed;
    }
    if s.rolled_back_at.is_some() {
        return Stage::RolledBack;
    }
    if s.rollback.as_ref().is_some_and(|r| r.started_at.is_some()) {
        return Stage::RollingBack;
    }
    if in_place {
        return match (s.provisioning_started_at.is_some(), s.finalized_at.is_some()) {
            (false, _) => Stage::Preflight,
            (true, false) => Stage::Finalizing,
            (true, true) => Stage::Completing,
        };
    }
    let steps = [
        (s.provisioning_started_at.is_some(), Stage::Preflight),
        (s.traffic_shifted_at.is_some(), Stage::Provisioning),
        (s.cutoff.is_some(), Stage::Draining),
        (s.migrations_finished_at.is_some(), Stage::Migrating),
        (s.verified_at.is_some(), Stage::Verifying),
        (s.source_retired_at.is_some(), Stage::Retiring),
        (!moves_on || s.finalized_at.is_some(), Stage::Finalizing),
    ];
    steps
        .into_iter()
        .find(|(done, _)| !done)
        .map_or(Stage::Completing, |(_, stage)| stage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RollbackStatus;
    use crate::testing::time;

    #[test]
    fn each_recorded_fact_moves_the_stage_on() {
        let mut s = LangfuseUpgradeStatus::default();
        let mut seen = vec![stage(&s, true, false)];
        let facts: [fn(&mut LangfuseUpgradeStatus); 7] = [
            |s| s.provisioning_started_at = Some(time(1)),
            |s| s.traffic_shifted_at = Some(time(2)),
            |s| s.cutoff = Some(time(3)),
            |s| s.migrations_finished_at = Some(time(4)),
            |s| s.verified_at = Some(time(5)),
            |s| s.source_retired_at = Some(time(6)),
            |s| s.finalized_at = Some(time(7)),
        ];
        for record in facts {
            record(&mut s);
            seen.push(stage(&s, true, false));
        }
        assert_eq!(
            seen,
            [
                Stage::Preflight,
                Stage::Provisioning,
                Stage::Draining,
                Stage::Migrating,
                Stage::Verifying,
                Stage::Retiring,
                Stage::Finalizing,
                Stage::Completing
            ]
        );
        s.completed_at = Some(time(8));
        assert_eq!(stage(&s, true, false), Stage::Completed);
    }

    #[test]
    fn without_a_final_version_retirement_is_the_last_step() {
        let s = LangfuseUpgradeStatus {
            provisioning_started_at: Some(time(1)),
            traffic_shifted_at: Some(time(2)),
            cutoff: Some(time(3)),
            migrations_finished_at: Some(time(4)),
            verified_at: Some(time(5)),
            source_retired_at: Some(time(6)),
            ..Default::default()
        };
        assert_eq!(stage(&s, false, false), Stage::Completing);
        assert_eq!(stage(&s, true, false), Stage::Finalizing);
    }

    #[test]
    fn a_rollback_outranks_every_step_until_it_is_done() {
        let mut s = LangfuseUpgradeStatus {
            provisioning_started_at: Some(time(1)),
            traffic_shifted_at: Some(time(2)),
            rollback: Some(RollbackStatus {
                started_at: Some(time(3)),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(stage(&s, false, false), Stage::RollingBack);
        s.rolled_back_at = Some(time(4));
        assert_eq!(stage(&s, false, false), Stage::RolledBack);
    }

    #[test]
    fn a_source_on_v3_goes_from_preflight_straight_to_its_hops() {
        let mut s = LangfuseUpgradeStatus::default();
        assert_eq!(stage(&s, true, true), Stage::Preflight);
        s.provisioning_started_at = Some(time(1));
        assert_eq!(stage(&s, true, true), Stage::Finalizing);
        s.finalized_at = Some(time(2));
        assert_eq!(stage(&s, true, true), Stage::Completing);
    }

    #[test]
    fn a_late_write_rerun_takes_the_upgrade_back_to_migrating() {
        // The late-write guard clears migrationsFinishedAt to copy the late rows.
        let s = LangfuseUpgradeStatus {
            provisioning_started_at: Some(time(1)),
            traffic_shifted_at: Some(time(2)),
            cutoff: Some(time(3)),
            late_writes_covered_until: Some(time(5)),
            ..Default::default()
        };
        assert_eq!(stage(&s, false, false), Stage::Migrating);
    }
}
