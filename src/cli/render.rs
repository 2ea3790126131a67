//! The status screen as text: colours and bars on a terminal, plain words when piped. Pure.

use std::fmt::Write;

use super::view::{StatusView, StopView};
use crate::api::{CheckResult, StopState};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// ANSI colours and block bars (a terminal), or plain text (a pipe, a file).
    pub terminal: bool,
}

#[derive(Clone, Copy)]
enum Tone {
    Good,
    Warn,
    Bad,
    Dim,
    Bold,
}

impl Style {
    fn paint(&self, tone: Tone, text: &str) -> String {
        if !self.terminal {
            return text.to_string();
        }
        let code = match tone {
            Tone::Good => "32",
            Tone::Warn => "33",
            Tone::Bad => "31",
            Tone::Dim => "2",
            Tone::Bold => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    fn bar(&self, percent: Option<i32>) -> String {
        let p = percent.unwrap_or(0).clamp(0, 100) as usize;
        let filled = p / 10;
        match self.terminal {
            true => format!("{}{}", "█".repeat(filled), "░".repeat(10 - filled)),
            false => format!("[{}{}]", "#".repeat(filled), ".".repeat(10 - filled)),
        }
    }
}

/// `1h02m`, `3m05s`, `42s`.
pub fn duration(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m"),
    }
}

fn stop_text(style: &Style, stop: &StopView) -> String {
    let (mark, tone) = match stop.state {
        StopState::Done => ("✓", Tone::Good),
        StopState::Current => ("▶", Tone::Bold),
        StopState::Next => ("·", Tone::Dim),
        StopState::RolledBack => ("↩", Tone::Warn),
    };
    let mark = if style.terminal {
        mark
    } else {
        match stop.state {
            StopState::Done => "done",
            StopState::Current => "current",
            StopState::Next => "next",
            StopState::RolledBack => "rolled back",
        }
    };
    let how = if stop.in_place { "in place" } else { "beside v2" };
    let took = stop.seconds.map(|s| format!(", {}", duration(s))).unwrap_or_default();
    style.paint(tone, &format!("{mark} {} ({how}{took})", stop.version))
}

pub fn status_text(v: &StatusView, style: Style) -> String {
    let mut o = String::new();
    let phase_tone = match v.phase.as_str() {
        "Completed" => Tone::Good,
        "Blocked" | "Degraded" | "Failed" | "RolledBack" => Tone::Bad,
        "Paused" | "AwaitingPromotion" | "RollingBack" => Tone::Warn,
        _ => Tone::Bold,
    };
    let since = v
        .phase_seconds
        .map(|s| format!(" for {}", duration(s)))
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "{}  {}/{}   {}{since}",
        style.paint(Tone::Bold, "LangfuseUpgrade"),
        v.namespace,
        v.name,
        style.paint(phase_tone, &v.phase)
    );
    let _ = writeln!(
        o,
        "Langfuse  {} -> {}   (runs {})",
        v.source_version.as_deref().unwrap_or("?"),
        v.destination,
        v.target_version.as_deref().unwrap_or("?")
    );
    if !v.road.is_empty() {
        let stops: Vec<String> = v.road.iter().map(|s| stop_text(&style, s)).collect();
        let _ = writeln!(o, "Road      {}", stops.join("  ->  "));
    }
    if let Some(dm) = &v.data_model {
        for line in super::data_model::data_model_lines(dm, style.terminal) {
            let _ = writeln!(o, "{line}");
        }
    }
    let _ = writeln!(o, "Now       {}", v.waiting_for);
    if !v.you_may.is_empty() {
        let _ = writeln!(o, "You may");
        for c in &v.you_may {
            let _ = writeln!(o, "  {c}");
        }
    }
    if !v.steps.is_empty() {
        let _ = writeln!(o, "\n{}", style.paint(Tone::Bold, "Steps"));
        for s in &v.steps {
            let (mark, tone) = match (s.done, style.terminal) {
                (true, true) => ("✓", Tone::Good),
                (false, true) => ("…", Tone::Dim),
                (true, false) => ("yes", Tone::Good),
                (false, false) => ("no ", Tone::Dim),
            };
            let _ = writeln!(o, "  {} {:<19} {}", style.paint(tone, mark), s.name, s.message);
        }
    }
    if !v.checks.is_empty() {
        let _ = writeln!(o, "\n{}", style.paint(Tone::Bold, "Preflight"));
        for c in &v.checks {
            let (word, tone) = match c.result {
                CheckResult::Pass => ("PASS", Tone::Good),
                CheckResult::Warn => ("WARN", Tone::Warn),
                CheckResult::Fail => ("FAIL", Tone::Bad),
                CheckResult::Skipped => ("SKIP", Tone::Dim),
            };
            let _ = writeln!(o, "  {} {:<24} {}", style.paint(tone, word), c.name, c.message);
        }
    }
    if !v.migrations.is_empty() {
        let _ = writeln!(o, "\n{}", style.paint(Tone::Bold, "Background migrations"));
        let width = v.migrations.iter().map(|m| m.name.len()).max().unwrap_or(0);
        for m in &v.migrations {
            let tone = match m.state.as_str() {
                "finished" => Tone::Good,
                "failed" | "stalled" => Tone::Bad,
                "dormant" => Tone::Dim,
                _ => Tone::Bold,
            };
            let pct = m.percent.map(|p| format!("{p:>3}%")).unwrap_or_else(|| "   -".into());
            let rate = m.rows_per_second.map(|r| format!("  {r} rows/s")).unwrap_or_default();
            let eta = m
                .eta_seconds
                .map(|e| format!("  ETA {}", duration(e)))
                .unwrap_or_default();
            let batch = m.batch_size.map(|b| format!("  batch {b}")).unwrap_or_default();
            let failed = m.failed_reason.as_ref().map(|f| format!("  ({f})")).unwrap_or_default();
            let _ = writeln!(
                o,
                "  {:<width$} {} {pct} {}{rate}{eta}{batch}{failed}",
                m.name,
                style.bar(m.percent),
                style.paint(tone, &m.state)
            );
        }
        if !v.remedies.is_empty() {
            let applied: Vec<String> = v.remedies.iter().map(|(k, n)| format!("{k} x{n}")).collect();
            let _ = writeln!(o, "  remedies applied: {}", applied.join(", "));
        }
    }
    if !v.verification.is_empty() {
        let _ = writeln!(o, "\n{}", style.paint(Tone::Bold, "Verification (up to the cut-off)"));
        for t in &v.verification {
            let tone = if t.verdict == "Match" { Tone::Good } else { Tone::Bad };
            let _ = writeln!(
                o,
                "  {:<13} postgres {:>10}  clickhouse {:>10}  {}",
                t.table,
                t.postgres,
                t.clickhouse,
                style.paint(tone, &t.verdict)
            );
        }
    }
    let _ = writeln!(
        o,
        "\nRollback  {}{}",
        if v.rollback_possible {
            style.paint(Tone::Warn, "possible")
        } else {
            style.paint(Tone::Dim, "not possible")
        },
        v.rollback_note.as_ref().map(|n| format!(": {n}")).unwrap_or_default()
    );
    o
}
