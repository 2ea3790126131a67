//! Draining: v2 has stopped writing once the newest `created_at` has not moved for
//! `drainPeriod`; the cut-off is recorded then.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::reading::postgres;
use super::{Gate, Hold, Planner, Stage, wait};
use crate::api::Phase;
use crate::api::conditions::reason;
use crate::controller::validate::Settings;
use crate::precision::{bound_after, newest_seen};

/// Wait until v2 has stopped writing: the newest `created_at` has not moved for `drainPeriod`.
pub(super) fn drain(p: &mut Planner, settings: &Settings) -> Gate {
    if p.stage() > Stage::Draining {
        return Ok(());
    }
    let newest = postgres(p, Phase::Draining)?.newest_write;
    // Compared and recorded at status precision, rounded up: the same row read again is never
    // "newer", and the quiet period never starts before the write (see `crate::precision`).
    let seen = newest.map(newest_seen);
    let moved = seen.is_some() && seen.map(Time) != p.status.last_source_write_at;
    if moved || p.status.drain_quiet_since.is_none() {
        p.status.last_source_write_at = seen.map(Time);
        p.status.drain_quiet_since = Some(Time(seen.map_or(p.now, |s| s.max(p.now))));
    }
    let quiet_for = p.since(&p.status.drain_quiet_since).unwrap_or_default();
    if quiet_for < settings.drain_period {
        let left = settings.drain_period - quiet_for;
        return Err(Hold::new(
            Phase::Draining,
            reason::DRAINING,
            // No countdown and no milliseconds in the words: v2 writing on, polled several times
            // a second, rewrites the status at most once a second.
            format!(
                "waiting for v2 to stop writing: newest row at {} (to the second), none newer seen since {}; needs {} of quiet",
                newest
                    .map(|t| bound_after(t).to_string())
                    .unwrap_or_else(|| "none".into()),
                p.status
                    .drain_quiet_since
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default(),
                p.spec.strategy.drain_period
            ),
            left.min(wait::DB_WATCH),
        ));
    }
    p.status.cutoff = Some(p.now_time());
    Ok(())
}
