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
use crate::data_model::{PropagationKeys, StagingPartition};

/// Web and worker on `dual`, its start recorded.
pub(super) fn enter(p: &mut Planner, dm: &mut DataModelStatus) -> Gate {
    if dm.dual_since.is_some() {
        return Ok(());
    }
    if !roll::written(p, Setting::Dual) {
        grants(p)?;
    }
    roll::apply(p, Setting::Dual, None)?;
    dm.dual_since = Some(p.now_time());
    dm.healthy_since = None;
    Ok(())
}

/// The propagation job reads `system.parts`: without the grant it finds no work, silently.
fn grants(p: &mut Planner) -> Gate {
    let readiness = match &p.obs.clickhouse {
        Reading::Answered(ch) => ch.v4.clone(),
        Reading::Failed(e) => Reading::Failed(e.clone()),
        Reading::NotAsked => Reading::NotAsked,
    };
    let denied = match readiness {
        Reading::Answered(r) => r.denied_tables,
        Reading::Failed(e) => {
            let message = format!("ClickHouse could not be read before the dual write ({e})");
            return Err(moving(p, reason::CLICKHOUSE_UNAVAILABLE, message, wait::POLL));
        }
        Reading::NotAsked => {
            let message = "reading ClickHouse's grants before the dual write".to_string();
            return Err(moving(p, reason::MOVING_DATA_MODEL, message, wait::NOW));
        }
    };
    if denied.is_empty() {
        return Ok(());
    }
    let statements: Vec<String> = denied
        .iter()
        .map(|t| format!("GRANT SELECT ON system.{t} TO <user>"))
        .collect();
    let message = format!(
        "the dual write's propagation job lists work in system.parts; the ClickHouse user lacks {}: as an admin run {}",
        denied.join(", "),
        statements.join("; ")
    );
    Err(p.hold_step(
        cond::DATA_MODEL,
        Phase::Blocked,
        reason::DATA_MODEL_BLOCKED,
        message,
        wait::POLL,
    ))
}

/// The dual write judged now: `Ok` healthy, else the hold that says why not. Updates the
/// status's view of the job and the start of its healthy run.
pub(super) fn watch(p: &mut Planner, s: &DataModelSettings, dm: &mut DataModelStatus) -> Gate {
    let (keys, partitions) = match read(p) {
        Ok(read) => read,
        Err((why, message, requeue)) => {
            if requeue != wait::NOW {
                dm.healthy_since = None;
            }
            return Err(moving(p, why, message, requeue));
        }
    };
    let (status, health) = judge(&keys, &partitions, s.lag_alert, p.now);
    dm.propagation = Some(status);
    let since_dual = p.since(&dm.dual_since).unwrap_or_default();
    let Some((why, message)) = unhealthy(health, s, since_dual) else {
        dm.healthy_since = dm.healthy_since.clone().or_else(|| Some(p.now_time()));
        return Ok(());
    };
    dm.healthy_since = None;
    // The job's first run follows the worker's start within seconds: look again soon.
    let requeue = match why {
        reason::MOVING_DATA_MODEL => wait::DB_RETRY,
        _ => wait::POLL,
    };
    Err(moving(p, why, message, requeue))
}

type Unread = (cond::Reason, String, std::time::Duration);

/// The propagation keys (Redis) and the staging partitions (ClickHouse), or why not.
fn read(p: &Planner) -> Result<(PropagationKeys, Vec<StagingPartition>), Unread> {
    let keys = match &p.obs.propagation {
        Reading::Answered(k) => k.clone(),
        Reading::Failed(e) => {
            let message = format!("the propagation job's cursor could not be read from Redis: {e}");
            return Err((reason::PROPAGATION_STUCK, message, wait::POLL));
        }
        Reading::NotAsked => return Err((reason::MOVING_DATA_MODEL, "reading the dual write".into(), wait::NOW)),
    };
    match p.obs.clickhouse.answered().map(|c| &c.events) {
        Some(Reading::Answered(e)) => Ok((keys, e.staging_partitions.clone())),
        Some(Reading::Failed(e)) => {
            let message = format!("the staging table could not be read: {e}");
            Err((reason::CLICKHOUSE_UNAVAILABLE, message, wait::POLL))
        }
        _ => Err((reason::MOVING_DATA_MODEL, "reading the staging table".into(), wait::NOW)),
    }
}

/// Why the dual write is not healthy, in a person's words; `None` when it is.
fn unhealthy(health: Health, s: &DataModelSettings, since_dual: Duration) -> Option<(cond::Reason, String)> {
    Some(match health {
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
    })
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
