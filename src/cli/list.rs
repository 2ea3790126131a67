//! `kubectl lfu list`: every upgrade in a namespace (or the cluster) on one line each: phase,
//! road, age and what it waits for, as `kubectl argo rollouts list` shows rollouts.

use jiff::Timestamp;

use crate::api::LangfuseUpgrade;

/// The longest "waiting for" shown; the status screen has the whole message.
const WAITING_WIDTH: usize = 90;

/// A table of `upgrades` (with their namespaces when `all_namespaces`), aged from `now`.
pub fn list_text(upgrades: &[LangfuseUpgrade], now: Timestamp, all_namespaces: bool) -> String {
    if upgrades.is_empty() {
        return "no LangfuseUpgrade found\n".into();
    }
    let rows: Vec<Vec<String>> = upgrades
        .iter()
        .map(|u| {
            let s = u.status.clone().unwrap_or_default();
            let mut row = Vec::new();
            if all_namespaces {
                row.push(u.metadata.namespace.clone().unwrap_or_default());
            }
            row.push(u.metadata.name.clone().unwrap_or_default());
            row.push(s.phase.map_or("Pending".into(), |p| format!("{p:?}")));
            row.push(road(u));
            row.push(
                u.metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or("-".into(), |t| age(now.duration_since(t.0).as_secs())),
            );
            let waiting = s.condition("Ready").map(|c| c.message.clone()).unwrap_or_default();
            row.push(shorten(&waiting));
            row
        })
        .collect();
    let mut header: Vec<String> = ["NAME", "PHASE", "ROAD", "AGE", "WAITING FOR"]
        .map(String::from)
        .to_vec();
    if all_namespaces {
        header.insert(0, "NAMESPACE".into());
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let last = cells.len() - 1;
        let mut out: Vec<String> = cells[..last]
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push(cells[last].clone());
        out.join("  ").trim_end().to_string() + "\n"
    };
    std::iter::once(line(&header))
        .chain(rows.iter().map(|r| line(r)))
        .collect()
}

/// `source -> stops`: the recorded road, else the spec's destination.
fn road(u: &LangfuseUpgrade) -> String {
    let s = u.status.clone().unwrap_or_default();
    let destination = u
        .spec
        .target
        .final_version
        .clone()
        .unwrap_or_else(|| u.spec.target.version.clone());
    let stops: Vec<String> = s.road.iter().map(|r| r.version.clone()).collect();
    let from = s.source_version.unwrap_or_else(|| "?".into());
    match stops.as_slice() {
        [] => format!("{from} -> {destination}"),
        _ => format!("{from} -> {}", stops.join(" -> ")),
    }
}

fn age(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn shorten(text: &str) -> String {
    match text.chars().count() > WAITING_WIDTH {
        true => text.chars().take(WAITING_WIDTH - 1).collect::<String>() + "…",
        false => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LangfuseUpgradeStatus, Phase, RoadStop, StopMode, StopState};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn upgrade(ns: &str, name: &str, status: Option<LangfuseUpgradeStatus>) -> LangfuseUpgrade {
        let mut u = crate::testing::upgrade(crate::testing::spec(), status.unwrap_or_default());
        u.metadata.name = Some(name.into());
        u.metadata.namespace = Some(ns.into());
        u.metadata.creation_timestamp = Some(crate::testing::time(0));
        u
    }

    #[test]
    fn one_line_per_upgrade_with_its_road_age_and_wait() {
        let stop = |v: &str| RoadStop {
            from: "3.100.0".into(),
            version: v.into(),
            mode: StopMode::InPlace,
            state: StopState::Current,
            required_because: None,
            gates: Vec::new(),
            irreversible: None,
            started_at: None,
            finished_at: None,
            backup: None,
            copies: Vec::new(),
            catalog: None,
        };
        let blocked = LangfuseUpgradeStatus {
            phase: Some(Phase::Blocked),
            source_version: Some("3.100.0".into()),
            road: vec![stop("3.225.4"), stop("4.16.0")],
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "HopBlocked".into(),
                message: "the hop 3.225.4 -> 4.16.0 waits, nothing was changed: ".to_string() + &"x".repeat(200),
                last_transition_time: crate::testing::time(0),
                observed_generation: None,
            }],
            ..Default::default()
        };
        let text = list_text(
            &[
                upgrade("team-a", "to-v4", Some(blocked)),
                upgrade("team-b", "fresh", None),
            ],
            crate::testing::t(3 * 3600),
            true,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("NAMESPACE  NAME   PHASE"), "{text}");
        assert!(lines[1].contains("team-a") && lines[1].contains("Blocked"), "{text}");
        assert!(
            lines[1].contains("3.100.0 -> 3.225.4 -> 4.16.0") && lines[1].contains("3h"),
            "{text}"
        );
        assert!(
            lines[1].ends_with('…') && lines[1].contains("the hop 3.225.4"),
            "{text}"
        );
        assert!(
            lines[2].contains("Pending") && lines[2].contains("? -> 3.29.0"),
            "{text}"
        );
        assert_eq!(
            list_text(&[], crate::testing::t(0), false),
            "no LangfuseUpgrade found\n"
        );
    }
}
