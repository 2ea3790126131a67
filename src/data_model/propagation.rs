//! The dual write's health (§4.1): the propagation job's heartbeat and how far its cursor is
//! behind the staging table. The worker's own stuck check watches only the heartbeat (a cursor
//! frozen for 49 hours read "not stuck": langfuse/langfuse#17452), so the lag is judged too,
//! against the staging table's 48-hour TTL.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{PropagationKeys, StagingPartition};
use crate::api::PropagationStatus;

/// `observations_batch_staging`'s TTL: rows never propagated are gone after it.
pub const STAGING_TTL: Duration = Duration::from_secs(48 * 3600);
/// The worker's `LANGFUSE_EVENT_PROPAGATION_STUCK_THRESHOLD_MINUTES` default.
pub const STUCK_AFTER: Duration = Duration::from_secs(15 * 60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// No run of the job yet (its first run follows the worker's start).
    NotStarted,
    /// The job's last start is older than the worker's own stuck threshold.
    Stuck {
        heartbeat_age: Duration,
    },
    /// The oldest partition waiting is older than the alert.
    Lagging {
        lag: Duration,
        before_loss: Duration,
    },
}

/// What status shows of the job, and its health against `lag_alert`.
pub fn judge(
    keys: &PropagationKeys,
    partitions: &[StagingPartition],
    lag_alert: Duration,
    now: Timestamp,
) -> (PropagationStatus, Health) {
    let waiting: Vec<&StagingPartition> = partitions
        .iter()
        .filter(|p| keys.cursor.as_deref().is_none_or(|c| p.name.as_str() > c))
        .collect();
    let oldest = waiting.iter().map(|p| p.start).min();
    let lag = oldest.map_or(Duration::ZERO, |o| now.duration_since(o).unsigned_abs());
    let before_loss = STAGING_TTL.saturating_sub(lag);
    let heartbeat = keys.heartbeat_ms.and_then(|ms| Timestamp::from_millisecond(ms).ok());
    let status = PropagationStatus {
        cursor: keys.cursor.clone(),
        heartbeat_at: heartbeat.map(Time),
        backlog: waiting.len() as u32,
        oldest_waiting: oldest.map(Time),
        lag_seconds: lag.as_secs() as i64,
        hours_before_loss: oldest.map(|_| (before_loss.as_secs() / 3600) as i64),
    };
    let health = match heartbeat {
        None => Health::NotStarted,
        Some(h) if now.duration_since(h).unsigned_abs() > STUCK_AFTER => Health::Stuck {
            heartbeat_age: now.duration_since(h).unsigned_abs(),
        },
        Some(_) if lag > lag_alert => Health::Lagging { lag, before_loss },
        Some(_) => Health::Healthy,
    };
    (status, health)
}

/// `2h 5m` for a person.
pub fn human(d: Duration) -> String {
    let (h, m) = (d.as_secs() / 3600, d.as_secs() % 3600 / 60);
    match (h, m) {
        (0, 0) => format!("{}s", d.as_secs()),
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn part(name: &str, start: i64) -> StagingPartition {
        StagingPartition {
            name: name.into(),
            start: at(start),
        }
    }

    #[test]
    fn a_frozen_cursor_with_a_fresh_heartbeat_is_lagging_long_before_the_ttl() {
        let parts = [
            part("2027-01-15 08:00:00", 0),
            part("2027-01-15 08:03:00", 180),
            part("2027-01-15 11:00:00", 3 * 3600),
        ];
        let keys = PropagationKeys {
            cursor: Some("2027-01-15 08:00:00".into()),
            heartbeat_ms: Some(at(3 * 3600 + 60).as_millisecond()),
        };
        let now = at(3 * 3600 + 120);
        let (status, health) = judge(&keys, &parts, Duration::from_secs(7200), now);
        assert_eq!(status.backlog, 2);
        assert_eq!(status.lag_seconds, 3 * 3600 + 120 - 180);
        assert_eq!(status.hours_before_loss, Some(45));
        assert!(matches!(health, Health::Lagging { .. }), "{health:?}");
        let (_, health) = judge(&keys, &parts, Duration::from_secs(4 * 3600), now);
        assert_eq!(health, Health::Healthy);
    }

    #[test]
    fn a_stale_heartbeat_is_stuck_and_none_is_not_started() {
        let keys = PropagationKeys {
            cursor: None,
            heartbeat_ms: Some(at(0).as_millisecond()),
        };
        let (status, health) = judge(&keys, &[], Duration::from_secs(7200), at(16 * 60));
        assert!(matches!(health, Health::Stuck { .. }));
        assert_eq!(
            (status.backlog, status.lag_seconds, status.hours_before_loss),
            (0, 0, None)
        );
        let (_, health) = judge(&PropagationKeys::default(), &[], Duration::from_secs(60), at(0));
        assert_eq!(health, Health::NotStarted);
        assert_eq!(human(Duration::from_secs(7500)), "2h 5m");
    }
}
