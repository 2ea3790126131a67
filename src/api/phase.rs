//! The phase: a one-word summary of the recorded facts (never read back by the plan).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Provisioning,
    AwaitingPromotion,
    ShiftingTraffic,
    Draining,
    Migrating,
    Verifying,
    RetiringSource,
    Finalizing,
    Completed,
    // Completed, and handing Langfuse to a release of the official chart (`spec.handoff`); a
    // plain comment: a doc comment would turn the schema's enum into a oneOf.
    HandingOff,
    // Completed, and walking v4's data-model road (`spec.target.dataModel`).
    MigratingDataModel,
    Paused,
    Blocked,
    Degraded,
    RollingBack,
    RolledBack,
    Failed,
}

impl Phase {
    /// Every phase, once (metrics export one series per phase).
    pub const ALL: [Phase; 18] = [
        Phase::Pending,
        Phase::Provisioning,
        Phase::AwaitingPromotion,
        Phase::ShiftingTraffic,
        Phase::Draining,
        Phase::Migrating,
        Phase::Verifying,
        Phase::RetiringSource,
        Phase::Finalizing,
        Phase::Completed,
        Phase::HandingOff,
        Phase::MigratingDataModel,
        Phase::Paused,
        Phase::Blocked,
        Phase::Degraded,
        Phase::RollingBack,
        Phase::RolledBack,
        Phase::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Provisioning => "Provisioning",
            Phase::AwaitingPromotion => "AwaitingPromotion",
            Phase::ShiftingTraffic => "ShiftingTraffic",
            Phase::Draining => "Draining",
            Phase::Migrating => "Migrating",
            Phase::Verifying => "Verifying",
            Phase::RetiringSource => "RetiringSource",
            Phase::Finalizing => "Finalizing",
            Phase::Completed => "Completed",
            Phase::HandingOff => "HandingOff",
            Phase::MigratingDataModel => "MigratingDataModel",
            Phase::Paused => "Paused",
            Phase::Blocked => "Blocked",
            Phase::Degraded => "Degraded",
            Phase::RollingBack => "RollingBack",
            Phase::RolledBack => "RolledBack",
            Phase::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
