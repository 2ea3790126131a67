//! Draining: v2 has stopped writing once the newest `created_at` has not moved for
//! `drainPeriod`; the cut-off is recorded then.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::reading::postgres;
use super::{Gate, Hold, Planner, Stage, wait};
use crate::api::Phase;
use crate::api::conditions::reason;
use crate::controller::observed::Reading;
use crate::controller::plan::facts::Fact;
use crate::controller::validate::Settings;
use crate::precision::{bound_after, newest_seen};

/// Wait until v2 has stopped writing: the newest `created_at` has not moved for `drainPeriod`.
pub(super) fn drain(p: &mut Planner, settings: &Settings) -> Gate {
    if p.stage() > Stage::Draining {
        return Ok(());
    }
    let pg = match postgres(p, Phase::Draining) {
        Ok(pg) => pg,
        Err(hold) => {
            // A window that could not be read is not quiet: writes held by v2's clients may land
            // when Postgres answers again, carrying `created_at`s from before the outage. The
            // quiet period starts again at the first read that answers.
            if matches!(p.obs.postgres, Reading::Failed(_)) {
                p.status.drain_quiet_since = None;
            }
            return Err(hold);
        }
    };
    let (newest, read_at) = (pg.newest_write, pg.newest_write_read_at);
    let quiet_for = quiet_for(p, newest, read_at);
    if quiet_for < settings.drain_period {
        let left = settings.drain_period - quiet_for;
        return Err(Hold::new(
            Phase::Draining,
            reason::DRAINING,
            waiting_text(p, newest),
            left.min(wait::DRAIN_WATCH),
        ));
    }
    p.record_now(Fact::Cutoff);
    Ok(())
}

/// How long v2 has been quiet, the quiet period (re)started when a newer row is seen.
fn quiet_for(p: &mut Planner, newest: Option<Timestamp>, read_at: Option<Timestamp>) -> std::time::Duration {
    // Compared and recorded at status precision, rounded up: the same row read again is never
    // "newer", and the quiet period never starts before the write (see `crate::precision`).
    let seen = newest.map(newest_seen);
    let moved = seen.is_some() && seen.map(Time) != p.status.last_source_write_at;
    if moved || p.status.drain_quiet_since.is_none() {
        p.status.last_source_write_at = seen.map(Time);
        p.status.drain_quiet_since = Some(Time(seen.map_or(p.now, |s| s.max(p.now))));
    }
    // When the quiet period started at the newest row itself (its second is the one recorded),
    // the read's own clock says to the millisecond how long v2 has been quiet: the drain then
    // ends on time instead of up to a second late for the whole-second status.
    let precise = match (newest, read_at) {
        (Some(n), Some(r)) if p.status.drain_quiet_since == Some(Time(newest_seen(n))) => Some(
            std::time::Duration::from_millis(r.duration_since(n).as_millis().max(0) as u64),
        ),
        _ => None,
    };
    let whole = p.since(&p.status.drain_quiet_since).unwrap_or_default();
    precise.map_or(whole, |q| q.max(whole))
}

/// No countdown and no milliseconds in the words: v2 writing on, polled several times a second,
/// rewrites the status at most once a second.
fn waiting_text(p: &Planner, newest: Option<Timestamp>) -> String {
    let since = p.status.drain_quiet_since.as_ref().map(|t| t.0.to_string());
    format!(
        "waiting for v2 to stop writing: newest row at {} (to the second), none newer seen since {}; needs {} of quiet",
        newest
            .map(|t| bound_after(t).to_string())
            .unwrap_or_else(|| "none".into()),
        since.unwrap_or_default(),
        p.spec.strategy.drain_period
    )
}
