//! How long the controller waits: after a lost compare-and-swap, before retrying an apiserver
//! that did not answer, between watch reconnects, after failures (with jitter), and how long
//! waits are spread so that many upgrades do not re-check together.

use std::time::Duration;

use super::plan;

/// A decision that lost a compare-and-swap is made again this soon (the change that beat it
/// also triggers a reconcile; this bounds the wait if that event is slow).
pub(super) const CONFLICT_RETRY: Duration = Duration::from_millis(100);

/// The longest wait before retrying a reconcile the apiserver did not answer.
pub(super) const TRANSPORT_RETRY_MAX: Duration = Duration::from_secs(4);

/// Reconnecting the watches after they broke: 250 ms doubling to 4 s, back to 250 ms once one
/// succeeds. kube's default (800 ms doubling to 30 s) left the operator blind for 7 s after a
/// 5 s apiserver restart; a watch resumes from its last version, so a retry is one cheap request.
#[derive(Clone, Debug)]
pub(super) struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(4);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (now * 2).min(Self::MAX);
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// A long wait comes up to a fifth early, at random, never late (a wait may end at a deadline
/// such as `rollbackAfter`): many upgrades blocked together would otherwise re-check together,
/// every minute, all their reads and futures at once. Waking early only plans again.
pub fn spread(wait: Duration, jitter: f64) -> Duration {
    if wait < plan::wait::POLL {
        return wait;
    }
    wait.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
}

/// Exponential backoff with ±20 % jitter, 2 s doubling to 5 min.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let base = 2f64 * 2f64.powi(failures.min(8) as i32);
    Duration::from_secs_f64(base.min(300.0) * (0.8 + 0.4 * jitter.clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn watches_reconnect_from_250_ms_doubling_to_4_s_and_start_over_after_a_success() {
        use kube::runtime::utils::Backoff;
        let mut b = WatchBackoff::default();
        let first: Vec<u64> = b.by_ref().take(7).map(|d| d.as_millis() as u64).collect();
        assert_eq!(first, vec![250, 500, 1000, 2000, 4000, 4000, 4000]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn long_waits_are_spread_early_never_late_and_short_ones_kept() {
        let minute = Duration::from_secs(60);
        assert_eq!(spread(minute, 0.0), minute);
        assert_eq!(spread(minute, 1.0), Duration::from_secs(48));
        assert!(spread(minute, 0.5) < minute);
        // A short wait is a database poll or a deadline close by: kept as planned.
        let poll = Duration::from_millis(250);
        assert_eq!(spread(poll, 1.0), poll);
        assert_eq!(spread(Duration::from_secs(9), 1.0), Duration::from_secs(9));
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        assert!(backoff(1, 0.0) >= Duration::from_millis(3200) && backoff(1, 1.0) <= Duration::from_millis(4800));
        assert!(backoff(3, 0.5) > backoff(2, 0.5));
        assert!(backoff(50, 1.0) <= Duration::from_secs(360));
        assert_ne!(backoff(4, 0.0), backoff(4, 1.0));
    }
}
