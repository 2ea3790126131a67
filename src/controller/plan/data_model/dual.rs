//! `dual`: its gates (the system tables v4's propagation job reads), its flags, and its
//! health watched on every reconcile after: the job's heartbeat and the age of the oldest
//! staging partition it has not propagated, against the staging table's 48-hour TTL.

use super::{Planner, moving, roll};
use crate::api::conditions::{self as cond, reason};
use crate::api::{DataModelStatus, Phase};
use crate::controller::observed::Reading;
use crate::controller::plan::{Gate, Hold, wait};
use crate::controller::validate::DataModelSettings;
use crate::data_model::flags::Setting;
use std::time::Duration;

use crate::data_model::propagation::{Health, STUCK_AFTER, human, judge};

/// Web and worker on `dual`, its start recorded.
pub(super) fn enter(p: &mut Planner, dm: &mut DataModelStatus) -> Gate {
    if dm.dual_since.is_some() {
        return Ok(());
    }
    if !roll::written(p, Setting::Dual) {
        stores(p)?;
    }
    roll::apply(p, Setting::Dual, None)?;
    dm.dual_since = Some(p.now_time());
    dm.healthy_since = None;
    Ok(())
}

/// What v4 needs of its stores before the dual write, checked again here: an installation the
/// operator did not hop (the chart's own v4) was never gated. The propagation job lists its
/// work in `system.parts`: without the grant it finds none, silently; its queues need Redis
/// 7.0 with `noeviction`; ClickHouse in UTC.
fn stores(p: &mut Planner) -> Gate {
    if !p.obs.clickhouse.answered().is_some_and(|c| c.v4.is_asked()) {
        let message = match p.obs.clickhouse.failed() {
            Some(e) => format!("ClickHouse could not be read before the dual write ({e})"),
            None => "reading what the dual write needs of ClickHouse and Redis".to_string(),
        };
        return Err(moving(p, reason::MOVING_DATA_MODEL, message, wait::DB_RETRY));
    }
    let running = p
        .status
        .target_version
        .as_deref()
        .and_then(crate::version::Version::parse)
        .unwrap_or(crate::version::Version::new(4, 0, 0));
    let unmet = crate::controller::plan::in_place::v4_infra::unmet(p, running, REDIS_MIN);
    if unmet.is_empty() {
        return Ok(());
    }
    let message = format!("before the dual write: {}", unmet.join("; "));
    Err(p.hold_step(
        cond::DATA_MODEL,
        Phase::Blocked,
        reason::DATA_MODEL_BLOCKED,
        message,
        wait::POLL,
    ))
}

/// Langfuse v4's Redis minimum.
const REDIS_MIN: &str = "7.0";

/// The dual write judged now: `Ok` healthy, else the hold that says why not. Updates the
/// status's view of the job and the start of its healthy run.
pub(super) fn watch(p: &mut Planner, s: &DataModelSettings, dm: &mut DataModelStatus) -> Gate {
    let read = match &p.obs.propagation {
        Reading::Answered(keys) => {
            let keys = keys.clone();
            super::events_part(p, "the staging table", |e| Some(e.staging_partitions.clone()))
                .map(|parts| (keys, parts))
        }
        Reading::Failed(e) => {
            let message = format!("the propagation job's cursor could not be read from Redis: {e}");
            Err(moving(p, reason::PROPAGATION_STUCK, message, wait::POLL))
        }
        Reading::NotAsked => Err(moving(
            p,
            reason::MOVING_DATA_MODEL,
            "reading the dual write".into(),
            wait::NOW,
        )),
    };
    let (keys, partitions) = match read {
        Ok(read) => read,
        Err(hold) => {
            // A read not made yet says nothing of the job; one that failed breaks the healthy run.
            if hold.requeue != wait::NOW {
                dm.healthy_since = None;
            }
            return Err(hold);
        }
    };
    let (status, health) = judge(&keys, &partitions, s.lag_alert, p.now);
    dm.propagation = Some(status);
    let since_dual = p.since(&dm.dual_since).unwrap_or_default();
    let Some((why, message, requeue)) = unhealthy(health, s, since_dual) else {
        dm.healthy_since = dm.healthy_since.clone().or_else(|| Some(p.now_time()));
        return Ok(());
    };
    dm.healthy_since = None;
    Err(moving(p, why, message, requeue))
}

/// Why the dual write is not healthy, in a person's words; `None` when it is.
/// The job's first run follows the worker's start within seconds: that wait looks again soon.
fn unhealthy(health: Health, s: &DataModelSettings, since_dual: Duration) -> Option<(cond::Reason, String, Duration)> {
    let (why, message) = match health {
        Health::Healthy => return None,
        Health::NotStarted if since_dual < STUCK_AFTER => (
            reason::MOVING_DATA_MODEL,
            format!(
                "dual since {} ago; waiting for the propagation job's first run",
                human(since_dual)
            ),
        ),
        Health::NotStarted => (
            reason::PROPAGATION_STUCK,
            format!(
                "dual for {} and the propagation job has never run (no heartbeat in Redis): check the worker's logs and QUEUE_CONSUMER_EVENT_PROPAGATION_QUEUE_IS_ENABLED",
                human(since_dual)
            ),
        ),
        Health::Stuck { heartbeat_age } => (
            reason::PROPAGATION_STUCK,
            format!(
                "the propagation job last ran {} ago (its own threshold: 15m): the worker's health check fails with failIfEventPropagationStuck; check the worker",
                human(heartbeat_age)
            ),
        ),
        Health::Lagging { lag, before_loss } => (
            reason::PROPAGATION_LAGGING,
            format!(
                "the propagation cursor is {} behind the staging table (alert at {}): its oldest rows expire by TTL in {}, lost to the events tables unless the job catches up; check the worker (langfuse/langfuse#17452)",
                human(lag),
                human(s.lag_alert),
                human(before_loss)
            ),
        ),
    };
    let requeue = match why {
        reason::MOVING_DATA_MODEL => wait::DB_RETRY,
        _ => wait::POLL,
    };
    Some((why, message, requeue))
}

/// `target.dataModel: Dual` reached: the dual write stays watched (Degraded while unhealthy).
pub(super) fn stay(p: &mut Planner, s: &DataModelSettings, dm: &DataModelStatus, watched: Gate) -> Result<Hold, Hold> {
    if let Err(hold) = watched {
        p.condition(cond::DATA_MODEL, false, hold.reason, hold.message.clone());
        return Err(Hold::new(Phase::Degraded, hold.reason, hold.message, wait::POLL));
    }
    let healthy = p.since(&dm.healthy_since).unwrap_or_default();
    let backfill = match dm.backfill_started_at {
        Some(_) => "; the historic backfill runs",
        None => "",
    };
    let lag = dm.propagation.as_ref().map_or(0, |p| p.lag_seconds);
    let message = format!(
        "dual: old and events tables both written, the propagation lag {lag}s, healthy for {}{backfill} (alert at {})",
        human(healthy),
        human(s.lag_alert)
    );
    p.condition(cond::DATA_MODEL, true, reason::DATA_MODEL_REACHED, message.clone());
    Ok(Hold::new(
        Phase::Completed,
        reason::DATA_MODEL_REACHED,
        message,
        wait::POLL,
    ))
}
