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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Fact,
    Step,
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
}

/// One step and what it is charged from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub step: String,
    /// The fact it reacted to, or `None` when it followed the operator's previous step.
    pub after_fact: Option<String>,
    pub ms: i64,
}

/// The gaps of every step from the first fact on (steps before it are not the operator's
/// reaction to anything in this flow: the set-up's own writes).
pub fn gaps(marks: &[Mark]) -> Vec<Gap> {
    let mut sorted: Vec<&Mark> = marks.iter().collect();
    // Stable: a fact and a step in the same millisecond keep the order they were seen in.
    sorted.sort_by_key(|m| m.at);
    let mut out = Vec::new();
    let mut pending: Option<&Mark> = None;
    let mut last_step: Option<i64> = None;
    let mut started = false;
    for m in sorted {
        match m.kind {
            Kind::Fact => {
                started = true;
                pending = Some(m);
            }
            Kind::Step if !started => {}
            Kind::Step => {
                let (from, after_fact) = match (pending.take(), last_step) {
                    (Some(f), _) => (f.at, Some(f.what.clone())),
                    (None, Some(prev)) => (prev, None),
                    (None, None) => continue,
                };
                out.push(Gap {
                    step: m.what.clone(),
                    after_fact,
                    ms: m.at - from,
                });
                last_step = Some(m.at);
            }
        }
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
        let _ = writeln!(s, "  {:>6} ms  {cause}  ->  {}", g.ms, g.step);
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
                ms: 200
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
