//! The operator's share of an upgrade (issue 13, item 4): of the time from `kubectl apply` to
//! the last write, how much the flow waited on the operator rather than on something a person
//! asked for (a drain period, a rollout, the migrations, `retireSourceAfter`).
//!
//! Two kinds of marks, on one wall clock (epoch ms):
//! - a **fact**: something the operator waits on became observable (a Deployment rolled out,
//!   the EndpointSlices list only v3, a migration row finished in Postgres, a timer the spec
//!   sets ran out);
//! - a **step**: the operator wrote something that moves the flow (a Deployment's spec, the
//!   Service selector, a phase or recorded fact in status). Progress-only status writes are not
//!   steps: the flow does not wait on them.
//!
//! Each step is charged from the newest fact since the previous step (the operator reacted to
//! it), or, when there is none, from the previous step itself (the operator's own chain: its
//! checks, its reads, waiting for its own write's watch event). The sum is the share.

use std::fmt::Write as _;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Fact,
    Step,
    /// A wait the spec sets, started at `since`, runs out at the mark's time; it gates the first
    /// step after `since` whose text starts with `gates`. That step coming before the mark's
    /// time is the wait ending early.
    Timer {
        since: i64,
        gates: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// Epoch milliseconds.
    pub at: i64,
    pub kind: Kind,
    pub what: String,
}

impl Mark {
    pub fn fact(at: i64, what: impl Into<String>) -> Mark {
        Mark {
            at,
            kind: Kind::Fact,
            what: what.into(),
        }
    }
    pub fn step(at: i64, what: impl Into<String>) -> Mark {
        Mark {
            at,
            kind: Kind::Step,
            what: what.into(),
        }
    }
    /// A wait of `ms` started at `since`, gating the first step after it that starts with `gates`.
    pub fn timer(since: i64, ms: i64, what: impl Into<String>, gates: impl Into<String>) -> Mark {
        let gates = gates.into();
        Mark {
            at: since + ms,
            kind: Kind::Timer { since, gates },
            what: what.into(),
        }
    }
}

/// One step and what it is charged from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub step: String,
    /// The fact it reacted to, or `None` when it followed the operator's previous step.
    pub after_fact: Option<String>,
    pub ms: i64,
    /// The step came this long before the wait that gates it ran out (it is charged nothing).
    pub early_ms: Option<i64>,
}

/// The gaps of every step from the first fact on (steps before it are not the operator's
/// reaction to anything in this flow: the set-up's own writes).
pub fn gaps(marks: &[Mark]) -> Vec<Gap> {
    let mut sorted: Vec<&Mark> = marks.iter().collect();
    // Stable: a fact and a step in the same millisecond keep the order they were seen in.
    sorted.sort_by_key(|m| m.at);
    let mut timers: Vec<&Mark> = sorted
        .iter()
        .copied()
        .filter(|m| matches!(m.kind, Kind::Timer { .. }))
        .collect();
    let mut out = Vec::new();
    let mut pending: Option<&Mark> = None;
    let mut last_step: Option<i64> = None;
    let mut started = false;
    for m in sorted {
        if m.kind != Kind::Step {
            started = true;
            pending = Some(m);
            continue;
        }
        if !started {
            continue;
        }
        let gated = timers.iter().position(
            |t| matches!(&t.kind, Kind::Timer { since, gates } if m.at >= *since && m.what.starts_with(gates.as_str())),
        );
        if let Some(timer) = gated.map(|i| timers.remove(i))
            && timer.at > m.at
        {
            out.push(Gap {
                step: m.what.clone(),
                after_fact: Some(timer.what.clone()),
                ms: 0,
                early_ms: Some(timer.at - m.at),
            });
            pending = None;
            last_step = Some(m.at);
            continue;
        }
        let (from, after_fact) = match (pending.take(), last_step) {
            (Some(f), _) => (f.at, Some(f.what.clone())),
            (None, Some(prev)) => (prev, None),
            (None, None) => continue,
        };
        out.push(Gap {
            step: m.what.clone(),
            after_fact,
            ms: m.at - from,
            early_ms: None,
        });
        last_step = Some(m.at);
    }
    out
}

pub fn total_ms(gaps: &[Gap]) -> i64 {
    gaps.iter().map(|g| g.ms).sum()
}

/// One line per step, then the total: what the demo prints and the README quotes.
pub fn table(gaps: &[Gap]) -> String {
    let mut s = String::new();
    for g in gaps {
        let cause = g.after_fact.as_deref().unwrap_or("(its previous step)");
        let early = g
            .early_ms
            .map(|e| format!(" (EARLY: {e} ms before it ran out)"))
            .unwrap_or_default();
        let _ = writeln!(s, "  {:>6} ms  {cause}{early}  ->  {}", g.ms, g.step);
    }
    let reacting: i64 = gaps.iter().filter(|g| g.after_fact.is_some()).map(|g| g.ms).sum();
    let _ = writeln!(
        s,
        "  {:>6} ms  in total over {} steps ({reacting} ms reacting to facts, {} ms in its own chains)",
        total_ms(gaps),
        gaps.len(),
        total_ms(gaps) - reacting
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_charged_from_the_newest_fact_since_the_previous_step() {
        let marks = [
            Mark::fact(1_000, "applied"),
            Mark::step(1_040, "finalizer"),
            Mark::fact(2_000, "web rolled out"),
            Mark::fact(2_300, "worker rolled out"),
            Mark::step(2_310, "selector switched"),
        ];
        let g = gaps(&marks);
        assert_eq!(
            g.iter().map(|g| (g.ms, g.after_fact.as_deref())).collect::<Vec<_>>(),
            [(40, Some("applied")), (10, Some("worker rolled out"))]
        );
        assert_eq!(total_ms(&g), 50);
    }

    #[test]
    fn a_step_with_no_fact_before_it_is_charged_from_the_previous_step() {
        let marks = [
            Mark::fact(0, "migrations finished"),
            Mark::step(30, "Verifying"),
            Mark::step(230, "verified"),
        ];
        let g = gaps(&marks);
        assert_eq!(
            g[1],
            Gap {
                step: "verified".into(),
                after_fact: None,
                ms: 200,
                early_ms: None
            }
        );
        assert_eq!(total_ms(&g), 230);
    }

    #[test]
    fn steps_before_the_first_fact_are_the_set_up_and_not_charged() {
        let marks = [
            Mark::step(0, "v2 laid out"),
            Mark::fact(5_000, "applied"),
            Mark::step(5_020, "finalizer"),
        ];
        assert_eq!(total_ms(&gaps(&marks)), 20);
    }

    #[test]
    fn a_step_before_the_wait_that_gates_it_ran_out_is_flagged_early_and_charged_nothing() {
        let marks = [
            Mark::fact(0, "applied"),
            Mark::step(5, "Deployment v2: 2 replicas"),
            Mark::step(10, "verified"),
            Mark::timer(10, 5_000, "verified + retireSourceAfter", "Deployment v2:"),
            Mark::step(4_100, "Deployment v2: 0 replicas"),
            Mark::step(4_130, "upgrade: Finalizing"),
        ];
        let g = gaps(&marks);
        // A matching step before the wait started is not gated by it.
        assert_eq!((g[0].ms, g[0].early_ms), (5, None));
        assert_eq!((g[2].ms, g[2].early_ms), (0, Some(910)));
        // The next step is charged from the early one, not from the timer still to come.
        assert_eq!((g[3].ms, g[3].after_fact.as_deref()), (30, None));
        let on_time = [
            Mark::fact(0, "applied"),
            Mark::step(10, "verified"),
            Mark::timer(10, 5_000, "verified + retireSourceAfter", "Deployment v2:"),
            Mark::step(5_040, "Deployment v2: 0 replicas"),
        ];
        let g = gaps(&on_time);
        assert_eq!(
            (g[1].ms, g[1].early_ms, g[1].after_fact.as_deref()),
            (30, None, Some("verified + retireSourceAfter"))
        );
    }

    #[test]
    fn marks_out_of_order_are_sorted_by_time_first() {
        // A Postgres fact is read after the watch events that followed it.
        let marks = [
            Mark::fact(0, "applied"),
            Mark::step(10, "enabled"),
            Mark::step(900, "finished recorded"),
            Mark::fact(700, "row finished"),
        ];
        let g = gaps(&marks);
        assert_eq!(g[1].after_fact.as_deref(), Some("row finished"));
        assert_eq!(g[1].ms, 200);
    }
}
