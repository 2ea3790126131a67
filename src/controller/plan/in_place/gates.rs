//! A hop's gates and its start: what keeps it from starting (the catalog's gates, the v4 flags),
//! in words a person can act on, and the recorded start once they are met.

use super::Walker;
use super::flags::v4_values;
use super::road::record;
use super::rows::{Unsettled, rows_settled};
pub(crate) use super::unmet::{Unmet, words};
use crate::api::conditions::{self as cond, reason};
use crate::api::{ImageChanges, Phase};
use crate::catalog::road::{Hop, HopGate};
use crate::controller::observed::Reading;
use crate::controller::plan::{Gate, Hold, Planner, wait};
use crate::resources::deployments::views::{Role, image_for, langfuse_container, running_version};
use crate::resources::v4_env;
use crate::version::Version;

/// What keeps a hop from starting now; empty when it may start.
pub(crate) fn unmet_gates(p: &Planner, hop: &Hop) -> Vec<Unmet> {
    let mut unmet = Vec::new();
    for gate in &hop.gates {
        match gate {
            HopGate::MigrationsFinished => {
                unmet.extend(release_ran(p, hop.from).into_iter().map(Unmet::NotRan));
                if let Err(why) = rows_settled(p, &hop.from.to_string()) {
                    unmet.push(Unmet::Migrations(why));
                }
            }
            HopGate::Infrastructure {
                clickhouse,
                postgres,
                redis,
            } => {
                let mut infra = infrastructure_unmet(p, hop, clickhouse, postgres);
                if let Some(redis) = redis {
                    infra.extend(super::v4_infra::unmet(p, hop.to, redis));
                }
                unmet.extend(infra.into_iter().map(Unmet::Infrastructure));
            }
            HopGate::CopiesVerified { .. } => unmet.extend(super::copies::unmet(p, hop)),
            HopGate::Backup { drops } => unmet.extend(super::backup::unmet(p, hop, drops)),
        }
    }
    if hop.to.major >= 4 {
        if let Some(why) = v4_env::worker_exit_reason(&v4_values(p)) {
            unmet.push(Unmet::V4Flags(why));
        }
        unmet.extend(v4_flags_from_references(p).into_iter().map(Unmet::V4Flags));
    }
    unmet
}

/// A v4 flag the containers take from a Secret or ConfigMap cannot be judged (nor set beside).
fn v4_flags_from_references(p: &Planner) -> Vec<String> {
    [(p.obs.web.as_ref(), Role::Web), (p.obs.worker.as_ref(), Role::Worker)]
        .into_iter()
        .filter_map(|(d, role)| langfuse_container(d?, role))
        .flat_map(|c| c.env.iter().flatten())
        .filter(|e| e.value_from.is_some() && v4_env::KEEP_V3_BEHAVIOUR.iter().any(|(n, _)| *n == e.name))
        .map(|e| {
            format!(
                "{} comes from a Secret or ConfigMap reference: the operator cannot check it; set it as a value, or in spec.target.extraEnv",
                e.name
            )
        })
        .collect()
}

/// Whether `release` really ran to the end here: its web registered its background migrations
/// and raised ClickHouse to its schema height (a rollout still under way has not).
pub(crate) fn release_ran(p: &Planner, release: Version) -> Vec<String> {
    let catalog = p.catalog;
    let mut unmet = Vec::new();
    if !catalog.knows(release) {
        return unmet;
    }
    if let Reading::Answered(pg) = &p.obs.postgres {
        let missing: Vec<&str> = catalog
            .rows_at(release)
            .map(|m| m.name.as_str())
            .filter(|n| !pg.migrations.iter().any(|r| r.name == *n))
            .collect();
        if !missing.is_empty() {
            unmet.push(format!(
                "{release}'s web has not registered its background migrations ({}): its rollout has not finished",
                missing.join(", ")
            ));
        }
    }
    let height = catalog.schema_height(release) as i64;
    if let Reading::Answered(ch) = &p.obs.clickhouse {
        match ch.schema {
            Some((h, false)) if h >= height => {}
            Some((h, true)) => unmet.push(crate::controller::plan::dirty::repair(
                catalog,
                h,
                p.spec.clickhouse.cluster_enabled,
            )),
            Some((h, _)) => unmet.push(format!(
                "ClickHouse's schema is at {h}, below the {height} {release} ships: its web has not finished its migrations"
            )),
            None => unmet.push(format!("ClickHouse has no schema_migrations; {release} ships height {height}")),
        }
    }
    unmet
}

/// ClickHouse `version()` and the PostgreSQL major against the target major's minimums.
fn infrastructure_unmet(p: &Planner, hop: &Hop, clickhouse: &str, postgres: &str) -> Vec<String> {
    let mut unmet = Vec::new();
    let major_minor = |v: &str| {
        let mut it = v.split('.');
        Some((it.next()?.parse::<u64>().ok()?, it.next()?.parse::<u64>().ok()?))
    };
    let ch_version = match &p.obs.clickhouse {
        Reading::Answered(ch) => ch.version.clone(),
        _ => None,
    };
    match (ch_version.as_deref().and_then(major_minor), major_minor(clickhouse)) {
        (Some(have), Some(need)) if have >= need => {}
        (Some(_), _) => unmet.push(format!(
            "ClickHouse {} is older than {clickhouse}, the minimum of Langfuse {}: upgrade ClickHouse first (v3 runs on it too)",
            ch_version.unwrap_or_default(),
            hop.to
        )),
        (None, _) => unmet.push(format!(
            "ClickHouse's version could not be read; Langfuse {} needs >= {clickhouse}",
            hop.to
        )),
    }
    let pg_major = match &p.obs.postgres {
        Reading::Answered(pg) => pg.server_version_num.map(|n| n / 10000),
        _ => None,
    };
    let need: i64 = postgres.parse().unwrap_or(0);
    match pg_major {
        Some(have) if have >= need => {}
        Some(have) => unmet.push(format!(
            "PostgreSQL {have} is older than {postgres}, the minimum of Langfuse {}: upgrade PostgreSQL first",
            hop.to
        )),
        None => unmet.push(format!(
            "PostgreSQL's version could not be read; Langfuse {} needs >= {postgres}",
            hop.to
        )),
    }
    unmet
}

pub(super) fn start(p: &mut Planner, hop: &Hop, walker: Walker) -> Gate {
    if walker == Walker::Owned && !crate::controller::plan::workloads::v2_gone(p) {
        return Err(Hold::new(
            Phase::Finalizing,
            reason::FINALIZING,
            format!("waiting for the last v2 pod to go before leaving {}", hop.from),
            wait::ROLLOUT,
        ));
    }
    // The infrastructure is read from the Finalizing stage on: the first decision of the stage
    // was observed without it. Read it before judging the gates, rather than flash Blocked.
    // A step hold: the road is not followed to its end yet (a plain hold would leave the
    // previous hop's "reached" in RoadFollowed for this one write).
    if !p.obs.clickhouse.is_asked() || !p.obs.postgres.is_asked() {
        return Err(p.hold_step(
            cond::ROAD_FOLLOWED,
            Phase::Finalizing,
            reason::HOPPING,
            format!("reading PostgreSQL and ClickHouse before {} -> {}", hop.from, hop.to),
            wait::NOW,
        ));
    }
    super::copies::record_counts(p, hop);
    let unmet = unmet_gates(p, hop);
    own_holds(p, hop, &unmet)?;
    let by_user = walker == Walker::Source && p.spec.strategy.image_changes == ImageChanges::User;
    if by_user {
        let web_at = running_version(p.obs.web.as_ref(), Role::Web);
        if web_at != Some(hop.to) {
            return Err(match unmet.is_empty() {
                true => p.hold_step(
                    cond::ROAD_FOLLOWED,
                    Phase::Finalizing,
                    reason::AWAITING_IMAGE_CHANGE,
                    format!(
                        "safe to take the next stop now: set the web image to {} (then the worker, once web is Available)",
                        image_for(p.obs.web.as_ref(), Role::Web, hop.to).unwrap_or_else(|| hop.to.to_string())
                    ),
                    wait::POLL,
                ),
                false => blocked(p, hop, &unmet),
            });
        }
        if !unmet.is_empty() {
            // Taken by a person before its gates held: say so; it cannot be undone from here.
            p.condition(
                cond::ROAD_FOLLOWED,
                false,
                reason::HOP_BLOCKED,
                format!("{} was started before its gates held: {}", hop.to, words(&unmet)),
            );
        }
    } else if !unmet.is_empty() {
        return Err(blocked(p, hop, &unmet));
    }
    record_start(p, hop);
    Ok(())
}

/// The hop's start, with the catalog revision that planned it.
fn record_start(p: &mut Planner, hop: &Hop) {
    let now = p.now_time();
    let revision = p.catalog.revision.clone();
    let stop = record(p, hop);
    stop.started_at = Some(now);
    stop.catalog = Some(revision);
}

/// The unmet gates with a hold of their own: an orphan row (its reason, fix and remedy where
/// allowed), and copies still to count alone (read at once, not a block).
fn own_holds(p: &mut Planner, hop: &Hop, unmet: &[Unmet]) -> Gate {
    let orphan = unmet.iter().find_map(|u| match u {
        Unmet::Migrations(Unsettled::Orphan { row, script, release }) => Some((row, script, release)),
        _ => None,
    });
    if let Some((row, script, release)) = orphan {
        return Err(super::rows::orphan(p, row, script, release));
    }
    if let [Unmet::CopiesPending(what)] = unmet {
        let message = format!("{} -> {}: {what}", hop.from, hop.to);
        return Err(p.hold_step(
            cond::ROAD_FOLLOWED,
            Phase::Finalizing,
            reason::HOPPING,
            message,
            wait::NOW,
        ));
    }
    Ok(())
}

fn blocked(p: &mut Planner, hop: &Hop, unmet: &[Unmet]) -> Hold {
    // Counts still to read come at once, whatever else waits for a person.
    let pending = unmet.iter().any(|u| matches!(u, Unmet::CopiesPending(_)));
    p.hold_step(
        cond::ROAD_FOLLOWED,
        Phase::Blocked,
        reason::HOP_BLOCKED,
        format!(
            "the hop {} -> {} waits, nothing was changed: {}",
            hop.from,
            hop.to,
            words(unmet)
        ),
        if pending { wait::NOW } else { wait::PERSON },
    )
}
