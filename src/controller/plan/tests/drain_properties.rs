//! The drain over random v2 write patterns (millisecond timestamps, as Prisma writes them) and
//! random poll timings (watch events wake the operator early; never later than its requeue).

use proptest::prelude::*;

use super::*;
use crate::controller::observed::Reading;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn the_drain_ends_on_time_never_early_and_writes_nothing_at_rest(
        drain_s in 1i64..=180,
        writes in prop::collection::vec(0i64..150_000, 0..40),
        gaps in prop::collection::vec(1i64..15_000, 1..30),
    ) {
        let mut s = spec();
        s.strategy.drain_period = format!("{drain_s}s");
        let mut w = World::new(s);
        w.run_until(Phase::Draining, 40);
        let shift = s_to_ms(w.now);
        let history = s_to_ms(-600) + w.write_millis;
        let mut writes: Vec<i64> = writes.iter().map(|d| shift + d).collect();
        writes.sort();
        let last_write = writes.last().copied().unwrap_or(history);
        let (drain_ms, max_gap) = (drain_s * 1000, gaps.iter().copied().max().unwrap());
        let (mut clock, mut requeue, mut seen) = (shift, max_gap, history);
        for i in 0..100_000usize {
            clock += gaps[i % gaps.len()].min(requeue.max(1));
            // As reconcile does: whole seconds, read before the observation.
            let now = crate::precision::bound_after(Timestamp::from_millisecond(clock).unwrap());
            let newest = writes.iter().copied().filter(|x| *x <= clock).max().unwrap_or(history);
            let mut obs = w.cluster.clone();
            obs.postgres = Reading::Answered(PostgresFacts {
                newest_write: Some(Timestamp::from_millisecond(newest).unwrap()),
                newest_write_read_at: Some(Timestamp::from_millisecond(clock).unwrap()),
                ..Default::default()
            });
            let d = plan(&w.upgrade, &obs, now);
            let status = api_round_trip(&next_status(&w.upgrade, &d, now));
            if let Some(cutoff) = &status.cutoff {
                // Never early: every write read is at least drainPeriod before the cut-off read.
                prop_assert!(newest + drain_ms <= clock, "cut at {clock}, newest {newest}, drain {drain_ms}");
                // On time: one poll to see the last write, drainPeriod, and the status's
                // whole-second precision (up to 1 s rounding the write up, 1 s the clock down).
                prop_assert!(
                    clock <= last_write.max(shift) + max_gap + drain_ms + 2000,
                    "cut at {clock}, last write {last_write}, drain {drain_ms}, poll {max_gap}"
                );
                // Nothing at or before the cut-off can appear later: it was there to be read.
                prop_assert!(cutoff.0.as_millisecond() <= clock);
                prop_assert!(writes.iter().all(|x| *x > cutoff.0.as_millisecond() || *x <= newest));
                return Ok(());
            }
            prop_assert_eq!(d.phase, Phase::Draining);
            // At rest (no new write since the last poll) nothing in status changes.
            if i > 0 && newest == seen {
                prop_assert_eq!(Some(&status), w.upgrade.status.as_ref());
            }
            seen = newest;
            requeue = d.requeue.as_millis() as i64;
            w.upgrade.status = Some(status);
        }
        prop_assert!(false, "the drain never ended");
    }
}
