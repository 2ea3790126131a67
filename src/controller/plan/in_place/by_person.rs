//! `imageChanges: User`: a person writes the images; what leaves the road is flagged here.

use crate::api::Phase;
use crate::api::conditions::{self as cond, reason};
use crate::catalog::road::Hop;
use crate::controller::observed::Reading;
use crate::controller::plan::{Gate, Planner, wait};
use crate::resources::deployments::views::{Role, langfuse_container, running_version};
use crate::resources::v4_env;

/// `imageChanges: User`: images moved past the next required stop, or below the release
/// reached, are flagged (condition + Event); nothing is written either way.
pub(super) fn flag_off_road(p: &mut Planner, hop: &Hop) -> Gate {
    let running = [Role::Web, Role::Worker].map(|r| {
        let d = match r {
            Role::Web => p.obs.web.as_ref(),
            Role::Worker => p.obs.worker.as_ref(),
        };
        running_version(d, r)
    });
    for v in running.into_iter().flatten() {
        if v > hop.to {
            let why = hop
                .required_because
                .as_deref()
                .map(|w| format!(": {w}"))
                .unwrap_or_default();
            let dropped: Vec<String> = p
                .catalog
                .irreversible_between(hop.to, v)
                .map(|i| format!("{} ({})", i.drops, i.at))
                .collect();
            let what_now = match dropped.as_slice() {
                [] => format!(
                    "Set them back to {} if ClickHouse's schema is still one {} knows, finish the stop, then go on",
                    hop.to, hop.to
                ),
                d => format!(
                    "Do not set them back: {v} has dropped {}; only a restore of the backups brings {} back",
                    d.join("; "),
                    hop.to
                ),
            };
            return Err(p.hold_step(
                cond::ROAD_FOLLOWED,
                Phase::Blocked,
                reason::STOP_SKIPPED,
                format!("the images run {v}, past the stop {}{why}. {what_now}", hop.to),
                wait::POLL,
            ));
        }
        if v < hop.from {
            return Err(p.hold_step(
                cond::ROAD_FOLLOWED,
                Phase::Blocked,
                reason::DOWNGRADED,
                format!(
                    "the images run {v}, below {} which this database has already run: an older image may crash-loop on the newer schema. Set them back to {}",
                    hop.from, hop.from
                ),
                wait::POLL,
            ));
        }
    }
    Ok(())
}

/// `imageChanges: User`: a v4 web or worker that leaves a v4 flag unset runs it at its image's
/// default (`events_only`, the historic backfill open), not at the v3 behaviour the road keeps.
/// Held until a person sets all four explicitly: their values are then a choice, not a default.
pub(super) fn v4_defaults_in_effect(p: &mut Planner) -> Gate {
    let mut unset: Vec<String> = Vec::new();
    let mut release = None;
    for role in [Role::Web, Role::Worker] {
        let Some(d) = p.obs.deployment(role) else {
            continue;
        };
        let Some(v) = running_version(Some(d), role).filter(|v| v.major >= 4) else {
            continue;
        };
        let Some(c) = langfuse_container(d, role) else {
            continue;
        };
        for (name, keep) in v4_env::KEEP_V3_BEHAVIOUR {
            let set = c.env.iter().flatten().any(|e| e.name == name);
            match p.catalog.env_default(name, v) {
                Some(default) if !set && default != keep => {
                    unset.push(format!("{} {name}={default}", role.as_str()));
                    release = Some(v);
                }
                _ => {}
            }
        }
    }
    let Some(release) = release else {
        return Ok(());
    };
    let rows = rows_that_will_run(p);
    let keep: Vec<String> = v4_env::KEEP_V3_BEHAVIOUR
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    Err(p.hold_step(
        cond::ROAD_FOLLOWED,
        Phase::Finalizing,
        reason::V4_DEFAULTS_IN_EFFECT,
        format!(
            "{release} runs with v4 flags its containers do not set, at the image's defaults, not v3 behaviour: {}{rows}. Set all four explicitly on web and worker: {} keeps v3 behaviour; other values opt in to the new data model",
            unset.join(", "),
            keep.join(" ")
        ),
        wait::POLL,
    ))
}

/// The registered, unfinished background migrations whose gate the worker now has open.
fn rows_that_will_run(p: &Planner) -> String {
    let Reading::Answered(pg) = &p.obs.postgres else {
        return String::new();
    };
    let gates = crate::controller::plan::migrate::open_gates(p);
    let rows: Vec<&str> = pg
        .migrations
        .iter()
        .filter(|r| r.finished_at.is_none() && r.env_gate.as_deref().is_some_and(|g| gates.is_open(g)))
        .map(|r| r.name.as_str())
        .collect();
    match rows.as_slice() {
        [] => String::new(),
        names => format!(
            "; with its gate open, {} background migrations will run ({})",
            names.len(),
            names.join(", ")
        ),
    }
}
