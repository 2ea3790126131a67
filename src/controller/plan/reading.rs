//! Facts a gate reads from the observation, or the hold that says why they are missing.

use super::{Hold, Planner, wait};
use crate::api::Phase;
use crate::api::conditions::reason;
use crate::controller::observed::Reading;
use crate::migrations::{PostgresFacts, Table};

pub(super) fn postgres<'a>(p: &'a Planner, phase: Phase) -> Result<&'a PostgresFacts, Hold> {
    match &p.obs.postgres {
        Reading::Answered(pg) => Ok(pg),
        Reading::Failed(e) => Err(Hold::new(
            phase,
            reason::POSTGRES_UNAVAILABLE,
            format!("cannot read Postgres: {e}"),
            wait::DB_RETRY,
        )),
        // The facts that call for Postgres were recorded this very reconcile: read it next.
        Reading::NotAsked => Err(Hold::new(phase, reason::PENDING, "reading Postgres next", wait::NOW)),
    }
}

/// Table names for a message, e.g. `traces, scores`.
pub(super) fn names(tables: &[Table]) -> String {
    tables.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
}
