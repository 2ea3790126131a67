//! `kubectl lfu history`: the upgrade's timeline from its recorded facts and its Events, for a
//! post-mortem. Pure: the object and the Events in, the lines out.

use std::fmt::Write;

use jiff::Timestamp;
use serde::Serialize;

use crate::api::LangfuseUpgrade;

/// One Event as the timeline needs it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventLine {
    pub at: Timestamp,
    pub warning: bool,
    pub reason: String,
    pub note: String,
    /// How many times the same Event was seen (an Event series).
    pub count: i32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    pub at: Timestamp,
    /// `fact` (recorded in status), `event` or `warning`.
    pub kind: &'static str,
    pub what: String,
}

pub fn timeline(u: &LangfuseUpgrade, events: &[EventLine]) -> Vec<Entry> {
    let s = u.status.clone().unwrap_or_default();
    let mut out = Vec::new();
    let mut fact = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>, what: String| {
        if let Some(t) = t {
            out.push(Entry {
                at: t.0,
                kind: "fact",
                what,
            });
        }
    };
    fact(&s.provisioning_started_at, "preflight passed".into());
    fact(&s.traffic_shifted_at, "traffic shifted to v3".into());
    fact(&s.cutoff, "cut-off recorded: v2 quiet".into());
    fact(&s.migrations_enabled_at, "background migrations enabled".into());
    fact(&s.migrations_finished_at, "background migrations finished".into());
    fact(&s.verified_at, "verified: Postgres and ClickHouse agree".into());
    fact(&s.source_retired_at, "v2 retired".into());
    for stop in s.road.iter().filter(|r| r.mode == crate::api::StopMode::InPlace) {
        fact(
            &stop.started_at,
            format!("hop {} -> {} started", stop.from, stop.version),
        );
        fact(
            &stop.finished_at,
            format!("hop {} -> {} finished", stop.from, stop.version),
        );
    }
    fact(&s.finalized_at, "every stop of the road reached".into());
    fact(&s.completed_at, "completed".into());
    fact(
        &s.rollback.as_ref().and_then(|r| r.started_at.clone()),
        format!(
            "rollback started: {}",
            s.rollback.as_ref().and_then(|r| r.reason.clone()).unwrap_or_default()
        ),
    );
    fact(&s.rolled_back_at, "rolled back".into());
    for e in events {
        let times = if e.count > 1 {
            format!(" (x{})", e.count)
        } else {
            String::new()
        };
        out.push(Entry {
            at: e.at,
            kind: if e.warning { "warning" } else { "event" },
            what: format!("{}: {}{times}", e.reason, e.note),
        });
    }
    // Facts before the Events of the same instant: the fact is why the Event was written.
    out.sort_by_key(|e| (e.at, e.kind != "fact"));
    out
}

pub fn history_text(entries: &[Entry], terminal: bool) -> String {
    let mut o = String::new();
    let first = entries.first().map(|e| e.at);
    for e in entries {
        let offset = first.map(|f| (e.at.as_second() - f.as_second()).max(0)).unwrap_or(0);
        let kind = match (e.kind, terminal) {
            ("warning", true) => "\x1b[31mwarning\x1b[0m",
            ("fact", true) => "\x1b[1mfact\x1b[0m   ",
            (k, _) => k,
        };
        let _ = writeln!(
            o,
            "{}  +{:<7} {:<7}  {}",
            e.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            super::render::duration(offset),
            kind,
            e.what
        );
    }
    o
}
