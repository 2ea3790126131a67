//! Where a database time meets a status time. Postgres and ClickHouse keep milliseconds;
//! `metav1.Time` keeps whole seconds through the API, so a millisecond time written to status
//! comes back truncated and compares as "changed" (or "newer") forever. One rule, here:
//!
//! - the plan's `now` is whole seconds, read *before* the observation, so every time it records
//!   is at or before the instant the facts were read: a row with `created_at <= now` was
//!   already visible to the read that decided;
//! - a database time recorded as "the newest seen" is rounded **up** ([`newest_seen`]): a later
//!   read of the same row never looks newer than it, and a quiet period measured from it never
//!   starts before the write;
//! - a database time recorded as "rows after this may be missing" (a copy's start cursor) is
//!   rounded **down** ([`bound_after`]): a row in that second is treated as possibly missing and
//!   re-copied, never assumed copied;
//! - counts up to a status time and "late" rows after one use the same millisecond bound on both
//!   databases ([`millis_floor`]), `<=` and `>`: a row falls on
//!   exactly one side.
//!
//! One exception: `verifiedAt` is written to the millisecond (the read that verified), so
//! `retireSourceAfter` counts to the millisecond from it and never ends early.

use jiff::Timestamp;

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// A timestamp as the epoch milliseconds it falls in (Postgres stores milliseconds: a row at
/// millisecond `m` is `<= t` exactly when `m <= floor(t)` and `> t` exactly when `m > floor(t)`).
pub fn millis_floor(t: Timestamp) -> i64 {
    t.as_nanosecond().div_euclid(1_000_000) as i64
}

/// The whole second at or after `t`.
pub fn newest_seen(t: Timestamp) -> Timestamp {
    let ns = t.as_nanosecond();
    let whole = ns.div_euclid(NANOS_PER_SECOND);
    let up = if ns.rem_euclid(NANOS_PER_SECOND) == 0 {
        whole
    } else {
        whole + 1
    };
    Timestamp::from_second(up as i64).unwrap_or(t)
}

/// The whole second at or before `t`.
pub fn bound_after(t: Timestamp) -> Timestamp {
    let down = t.as_nanosecond().div_euclid(NANOS_PER_SECOND);
    Timestamp::from_second(down as i64).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: i64) -> Timestamp {
        Timestamp::from_millisecond(n).unwrap()
    }

    #[test]
    fn newest_seen_rounds_up_and_keeps_whole_seconds() {
        assert_eq!(newest_seen(ms(1_800_000_022_369)), ms(1_800_000_023_000));
        assert_eq!(newest_seen(ms(1_800_000_022_000)), ms(1_800_000_022_000));
        assert_eq!(newest_seen(ms(1_800_000_022_001)), ms(1_800_000_023_000));
        assert_eq!(newest_seen(ms(1_800_000_022_999)).subsec_nanosecond(), 0);
    }

    #[test]
    fn bound_after_rounds_down() {
        assert_eq!(bound_after(ms(1_800_000_022_999)), ms(1_800_000_022_000));
        assert_eq!(bound_after(ms(1_800_000_022_000)), ms(1_800_000_022_000));
        assert_ne!(ms(1_800_000_022_999).subsec_nanosecond(), 0);
    }

    #[test]
    fn before_the_epoch_rounds_the_same_way() {
        assert_eq!(newest_seen(ms(-1_500)), ms(-1_000));
        assert_eq!(bound_after(ms(-1_500)), ms(-2_000));
    }
}
