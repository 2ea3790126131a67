//! The cutover's counts (§4.2): per project and month, the old tables against the events
//! tables up to one fixed instant. Root spans (`span_id` `t-<trace id>`, written by M1) stand
//! for traces, other spans for observations; traces referenced by a dataset run item are left
//! out (M1 skips them, M4 writes them whole). The events tables may hold more (producers on v4
//! SDKs write there directly), never fewer.

use crate::api::CountMismatch;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MonthCounts {
    pub project: String,
    /// `YYYYMM` as ClickHouse's `toYYYYMM` gives it.
    pub month: u32,
    pub traces: u64,
    pub root_spans: u64,
    pub observations: u64,
    pub child_spans: u64,
}

/// Every project and month where the events tables hold fewer rows. `roots`: compare traces
/// too (only the backfill writes root spans; the dual write propagates observations).
pub fn mismatches(counts: &[MonthCounts], roots: bool) -> Vec<CountMismatch> {
    let month = |m: u32| format!("{:04}-{:02}", m / 100, m % 100);
    let mut out = Vec::new();
    for c in counts {
        if roots && c.root_spans < c.traces {
            out.push(CountMismatch {
                project: c.project.clone(),
                month: month(c.month),
                table: "traces".into(),
                old: c.traces,
                events: c.root_spans,
            });
        }
        if c.child_spans < c.observations {
            out.push(CountMismatch {
                project: c.project.clone(),
                month: month(c.month),
                table: "observations".into(),
                old: c.observations,
                events: c.child_spans,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewer_events_than_old_rows_is_a_mismatch_more_is_not() {
        let counts = [
            MonthCounts {
                project: "a".into(),
                month: 202611,
                traces: 10,
                root_spans: 10,
                observations: 50,
                child_spans: 49,
            },
            MonthCounts {
                project: "b".into(),
                month: 202612,
                traces: 3,
                root_spans: 0,
                observations: 7,
                child_spans: 9,
            },
        ];
        let found = mismatches(&counts, true);
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[0].month.as_str(), found[0].table.as_str()),
            ("2026-11", "observations")
        );
        assert_eq!(
            (found[1].project.as_str(), found[1].table.as_str(), found[1].old),
            ("b", "traces", 3)
        );
        assert_eq!(mismatches(&counts, false).len(), 1);
    }
}
