//! The in-place part of the road: v3 → v3 and v3 → v4 hops on the same Deployments (v3 and v4
//! must never run side by side on one database). Each hop: its gates, web rolled first, then the
//! worker, both Available at the new release, then every background migration it runs finished.
//! The operator writes the images, or (`imageChanges: User`) a person does and the operator
//! says when it is safe and flags what leaves the road.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;

use super::{Action, Gate, Hold, Planner, Stage, wait};
use crate::api::conditions::{self as cond, reason};
use crate::api::{ImageChanges, LangfuseUpgradeSpec, LangfuseUpgradeStatus, Phase, RoadStop, StopMode, StopState};
use crate::catalog::Catalog;
use crate::catalog::road::{Hop, HopGate, HopMode, RoadError, road};
use crate::controller::validate::Settings;
use crate::migrations::{MigrationRow, RowState};
use crate::resources::deployments::ImageChange;
use crate::resources::v4_env;
use crate::version::{Version, image_repository, image_tag};

/// The worker Deployment of a source on v3/v4: named, or the chart's `<fullname>-worker`.
pub fn worker_name(spec: &LangfuseUpgradeSpec) -> Option<String> {
    spec.source.worker.clone().or_else(|| {
        spec.source
            .deployment
            .strip_suffix("-web")
            .map(|base| format!("{base}-worker"))
    })
}

/// Whether a Deployment's Langfuse container runs an exact v3 or v4 release.
pub fn runs_v3_or_later(d: &Deployment) -> bool {
    running_version(Some(d), Role::Web).is_some_and(|v| v.major >= 3)
}

/// Whose Deployments the hops move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Walker {
    /// The v3 Deployments this upgrade created beside v2 (v2 now retired).
    Owned,
    /// A source already on v3 or v4: its own web and worker Deployments (the official chart's
    /// `<fullname>-web` and `<fullname>-worker`), never owned by the operator.
    Source,
}

/// The source ran v3 or v4 when preflight read it: no v2 to run beside, only in-place hops.
pub fn in_place_source(s: &LangfuseUpgradeStatus) -> bool {
    s.source_version
        .as_deref()
        .and_then(Version::parse)
        .is_some_and(|v| v.major >= 3)
}

/// The release the upgrade ends on.
pub fn destination(spec: &LangfuseUpgradeSpec) -> &str {
    spec.target.final_version.as_deref().unwrap_or(&spec.target.version)
}

/// The road from the recorded source version; `Ok(empty)` while that version is unknown.
pub(crate) fn planned(p: &Planner) -> Result<Vec<Hop>, RoadError> {
    let from = p.status.source_version.as_deref().and_then(Version::parse);
    let (Some(from), Some(to)) = (from, Version::parse(destination(p.spec))) else {
        return Ok(Vec::new());
    };
    road(Catalog::current(), from, to, p.spec.target.accept_unknown_release)
}

/// The recorded stop of a hop (times), if any.
pub(super) fn recorded<'s>(status: &'s LangfuseUpgradeStatus, hop: &Hop) -> Option<&'s RoadStop> {
    let (from, to) = (hop.from.to_string(), hop.to.to_string());
    status.road.iter().find(|s| s.from == from && s.version == to)
}

fn record<'p>(p: &'p mut Planner, hop: &Hop) -> &'p mut RoadStop {
    let (from, to) = (hop.from.to_string(), hop.to.to_string());
    match p.status.road.iter().position(|s| s.from == from && s.version == to) {
        Some(i) => &mut p.status.road[i],
        None => {
            p.status.road.push(stop_of(hop, StopState::Current));
            p.status.road.last_mut().expect("just pushed")
        }
    }
}

pub(super) fn stop_of(hop: &Hop, state: StopState) -> RoadStop {
    RoadStop {
        from: hop.from.to_string(),
        version: hop.to.to_string(),
        mode: match hop.mode {
            HopMode::BesideV2 => StopMode::BesideV2,
            HopMode::InPlace => StopMode::InPlace,
        },
        state,
        required_because: hop.required_because.clone(),
        gates: hop.gates.iter().map(ToString::to_string).collect(),
        irreversible: hop.irreversible.clone(),
        started_at: None,
        finished_at: None,
    }
}

/// The release the v3 Deployments this upgrade owns run now: the newest started hop's.
pub(super) fn owned_version(status: &LangfuseUpgradeStatus) -> Option<String> {
    highest_started(status).map(|v| v.to_string())
}

/// The release a source on v3/v4 runs, from the recorded facts: the newest hop started (the
/// one it left, when that hop was undone), else the source's own.
pub(super) fn release_now(status: &LangfuseUpgradeStatus) -> Option<String> {
    let highest = highest_started(status).map(|v| v.to_string());
    let started = status
        .road
        .iter()
        .find(|s| s.mode == StopMode::InPlace && s.started_at.is_some() && Some(&s.version) == highest.as_ref());
    match started {
        Some(s) if s.finished_at.is_none() && status.rolled_back_at.is_some() => Some(s.from.clone()),
        Some(s) => Some(s.version.clone()),
        None => status.source_version.clone(),
    }
}

/// Walk the in-place hops that are not finished; through all of them, record `finalizedAt`.
pub(super) fn walk(p: &mut Planner, settings: &Settings, walker: Walker) -> Gate {
    if p.stage() != Stage::Finalizing {
        return Ok(());
    }
    let hops =
        planned(p).map_err(|e| Hold::new(Phase::Failed, reason::HOP_BLOCKED, format!("no road: {e}"), wait::IDLE))?;
    off_the_recorded_road(p, &hops)?;
    for hop in hops.iter().filter(|h| h.mode == HopMode::InPlace) {
        if recorded(&p.status, hop).is_some_and(|s| s.finished_at.is_some()) {
            continue;
        }
        if walker == Walker::Source {
            flag_off_road(p, hop)?;
        }
        if recorded(&p.status, hop).is_none_or(|s| s.started_at.is_none()) {
            start(p, hop, walker)?;
            // The hop's start is durable before its first image write (the executor writes the
            // status first): a write whose fact was lost would leave a release running that
            // status does not know.
            let by_user = walker == Walker::Source && p.spec.strategy.image_changes == ImageChanges::User;
            if !by_user {
                p.act(Action::RecordFacts);
            }
        }
        roll(p, settings, hop, walker)?;
        settled(p, hop)?;
        let now = p.now_time();
        record(p, hop).finished_at = Some(now);
        p.condition(
            cond::ROAD_FOLLOWED,
            true,
            reason::HOPPING,
            format!(
                "{} reached: web and worker Available, its background migrations finished",
                hop.to
            ),
        );
    }
    p.status.finalized_at = Some(p.now_time());
    p.condition(
        cond::ROAD_FOLLOWED,
        true,
        reason::HOPS_DONE,
        format!("every stop reached: Langfuse runs {}", destination(p.spec)),
    );
    Ok(())
}

/// A hop under way that the road (the spec or the catalog changed) no longer has, or a release
/// reached above the destination: walking on would mean writing a release below one that ran.
fn off_the_recorded_road(p: &mut Planner, hops: &[Hop]) -> Gate {
    let on_road = |s: &RoadStop| {
        hops.iter()
            .any(|h| h.from.to_string() == s.from && h.to.to_string() == s.version)
    };
    let destination = Version::parse(destination(p.spec));
    let reached = highest_started(&p.status);
    let stray = p
        .status
        .road
        .iter()
        .find(|s| s.mode == StopMode::InPlace && s.started_at.is_some() && s.finished_at.is_none() && !on_road(s))
        .map(|s| format!("{} -> {}", s.from, s.version));
    let message = match (stray, reached, destination) {
        (Some(hop), ..) => format!(
            "the hop {hop} is under way but the road to {} no longer has it (finalVersion or the catalog changed): set finalVersion back until it finishes; nothing was written",
            destination.map(|d| d.to_string()).unwrap_or_default()
        ),
        (None, Some(r), Some(d)) if r > d => format!(
            "{r} already ran on this database and the destination is {d}: refusing to go down; set finalVersion to {r} or later"
        ),
        _ => return Ok(()),
    };
    Err(p.hold_step(
        cond::ROAD_FOLLOWED,
        Phase::Blocked,
        reason::DOWNGRADED,
        message,
        wait::IDLE,
    ))
}

/// The highest release any recorded hop started (its image was written or seen).
fn highest_started(status: &LangfuseUpgradeStatus) -> Option<Version> {
    status
        .road
        .iter()
        .filter(|s| s.mode == StopMode::InPlace && s.started_at.is_some())
        .filter_map(|s| Version::parse(&s.version))
        .max()
}

/// What keeps a hop from starting now, in words; empty when it may start.
pub(crate) fn unmet_gates(p: &Planner, hop: &Hop) -> Vec<String> {
    let mut unmet = Vec::new();
    for gate in &hop.gates {
        match gate {
            HopGate::MigrationsFinished => {
                unmet.extend(release_ran(p, hop.from));
                if let Err(why) = rows_settled(p, &hop.from.to_string()) {
                    unmet.push(why);
                }
            }
            HopGate::Infrastructure {
                clickhouse, postgres, ..
            } => unmet.extend(infrastructure_unmet(p, hop, clickhouse, postgres)),
            HopGate::Backup { drops } => {
                if !p.spec.backup.acknowledged_hops.contains(&hop.to.to_string()) {
                    unmet.push(format!(
                        "{} -> {} drops {drops}: take backups of PostgreSQL and ClickHouse, then add \"{}\" to spec.backup.acknowledgedHops",
                        hop.from, hop.to, hop.to
                    ));
                }
            }
        }
    }
    if hop.to.major >= 4 {
        if let Some(why) = v4_env::worker_exit_reason(&v4_values(p)) {
            unmet.push(why);
        }
        unmet.extend(v4_flags_from_references(p));
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
    let catalog = Catalog::current();
    let mut unmet = Vec::new();
    if release > catalog.newest_of(release.major).unwrap_or(release) {
        return unmet;
    }
    if let Some(Ok(pg)) = &p.obs.postgres {
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
    if let Some(Ok(ch)) = &p.obs.clickhouse {
        match ch.schema {
            Some((h, false)) if h >= height => {}
            Some((h, true)) => unmet.push(format!("ClickHouse's schema_migrations is dirty at {h}: fix it first")),
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
        Some(Ok(ch)) => ch.version.clone(),
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
        Some(Ok(pg)) => pg.server_version_num.map(|n| n / 10000),
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

/// The v4 flags as the worker will see them: `extraEnv`, else what its container already sets
/// (a chart value), else the v3-behaviour default.
fn v4_values(p: &Planner) -> Vec<(&'static str, String)> {
    let live: Vec<(String, String)> = p
        .obs
        .worker
        .as_ref()
        .and_then(|d| langfuse_container(d, Role::Worker))
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    v4_env::effective(|name| {
        p.spec
            .target
            .extra_env
            .iter()
            .rev()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
            .or_else(|| live.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()))
    })
}

fn start(p: &mut Planner, hop: &Hop, walker: Walker) -> Gate {
    if walker == Walker::Owned && !super::workloads::v2_gone(p) {
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
    if p.obs.clickhouse.is_none() || p.obs.postgres.is_none() {
        return Err(p.hold_step(
            cond::ROAD_FOLLOWED,
            Phase::Finalizing,
            reason::HOPPING,
            format!("reading PostgreSQL and ClickHouse before {} -> {}", hop.from, hop.to),
            wait::NOW,
        ));
    }
    let unmet = unmet_gates(p, hop);
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
                format!("{} was started before its gates held: {}", hop.to, unmet.join("; ")),
            );
        }
    } else if !unmet.is_empty() {
        return Err(blocked(p, hop, &unmet));
    }
    let now = p.now_time();
    let stop = record(p, hop);
    stop.started_at = Some(now);
    Ok(())
}

fn blocked(p: &mut Planner, hop: &Hop, unmet: &[String]) -> Hold {
    p.hold_step(
        cond::ROAD_FOLLOWED,
        Phase::Blocked,
        reason::HOP_BLOCKED,
        format!(
            "the hop {} -> {} waits, nothing was changed: {}",
            hop.from,
            hop.to,
            unmet.join("; ")
        ),
        wait::PERSON,
    )
}

/// Web, then the worker, Available at the hop's release.
fn roll(p: &mut Planner, settings: &Settings, hop: &Hop, walker: Walker) -> Gate {
    if walker == Walker::Owned {
        let ready = super::workloads::ensure(p, settings)?;
        if ready.web && ready.worker {
            return Ok(());
        }
        return Err(p.hold_step(
            cond::ROAD_FOLLOWED,
            Phase::Finalizing,
            reason::HOPPING,
            format!("rolling v3 to {}: web first, then the worker", hop.to),
            wait::ROLLOUT,
        ));
    }
    for role in [Role::Web, Role::Worker] {
        let d = match role {
            Role::Web => p.obs.web.clone(),
            Role::Worker => p.obs.worker.clone(),
        };
        let Some(d) = d else {
            return Err(p.hold_step(
                cond::ROAD_FOLLOWED,
                Phase::Blocked,
                reason::SOURCE_MISSING,
                format!("the {} Deployment is gone", role.word()),
                wait::ROLLOUT,
            ));
        };
        let name = d.metadata.name.clone().unwrap_or_default();
        if let Some(change) = wanted_change(p, &d, role, hop) {
            if p.spec.strategy.image_changes == ImageChanges::User {
                let env = match change.env.as_slice() {
                    [] => String::new(),
                    vars => format!(
                        " and its env {} (v3 behaviour on v4; set your own values in spec.target.extraEnv to opt in)",
                        vars.iter()
                            .map(|e| format!("{}={}", e.name, e.value.clone().unwrap_or_default()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                return Err(p.hold_step(
                    cond::ROAD_FOLLOWED,
                    Phase::Finalizing,
                    reason::AWAITING_IMAGE_CHANGE,
                    format!(
                        "{} -> {}: set the {} image of Deployment {name} to {}{env}",
                        hop.from,
                        hop.to,
                        role.word(),
                        change.image
                    ),
                    wait::POLL,
                ));
            }
            p.act(Action::SetImage(Box::new(change)));
        }
        if running_version(Some(&d), role) != Some(hop.to) || !super::workloads::settled(&d) {
            let (available, want) = availability(&d);
            return Err(p.hold_step(
                cond::ROAD_FOLLOWED,
                Phase::Finalizing,
                reason::HOPPING,
                format!(
                    "{} -> {}: rolling {} {name} ({available}/{want} available at the new release){}",
                    hop.from,
                    hop.to,
                    role.word(),
                    match role {
                        Role::Web => ", one new pod at a time; the worker follows",
                        Role::Worker => "",
                    }
                ),
                wait::ROLLOUT,
            ));
        }
    }
    Ok(())
}

/// The write that puts `d` at the hop's release, if it is not there yet.
fn wanted_change(p: &Planner, d: &Deployment, role: Role, hop: &Hop) -> Option<ImageChange> {
    let container = langfuse_container(d, role)?;
    let image = image_for(Some(d), role, hop.to)?;
    // Exactly the values the hop's gates judged (extraEnv, else the container's own, else
    // v3 behaviour), always all four: a field the operator owns and leaves out of a later
    // apply would be removed.
    let env = match hop.to.major >= 4 {
        true => v4_env::as_env(&v4_values(p)),
        false => Vec::new(),
    };
    let live_env = container.env.clone().unwrap_or_default();
    let env_there = env.iter().all(|e| live_env.contains(e));
    if container.image.as_deref() == Some(image.as_str()) && env_there {
        return None;
    }
    Some(ImageChange {
        deployment: d.metadata.name.clone()?,
        container: container.name.clone(),
        image,
        env,
        one_pod_at_a_time: role == Role::Web,
    })
}

/// The hop's release's background migrations: registered (web's start does that) and every
/// row the worker runs finished.
fn settled(p: &mut Planner, hop: &Hop) -> Gate {
    let to = hop.to.to_string();
    let rows = rows_of(p).map_err(|(r, why)| Hold::new(Phase::Finalizing, r, why, wait::POLL))?;
    let catalog = Catalog::current();
    if hop.to <= catalog.newest_of(hop.to.major).unwrap_or(hop.to) {
        let missing: Vec<&str> = catalog
            .rows_at(hop.to)
            .map(|m| m.name.as_str())
            .filter(|n| !rows.iter().any(|r| r.name == *n))
            .collect();
        if !missing.is_empty() {
            return Err(p.hold_step(
                cond::ROAD_FOLLOWED,
                Phase::Finalizing,
                reason::HOPPING,
                format!(
                    "{to} runs; waiting for its web to register its background migrations ({})",
                    missing.join(", ")
                ),
                wait::POLL,
            ));
        }
    }
    settled_rows(p, &to, &rows)
}

fn rows_of(p: &Planner) -> Result<Vec<MigrationRow>, (crate::api::conditions::Reason, String)> {
    match &p.obs.postgres {
        Some(Ok(pg)) => Ok(pg.migrations.clone()),
        Some(Err(e)) => Err((reason::POSTGRES_UNAVAILABLE, format!("cannot read Postgres: {e}"))),
        None => Err((reason::FINALIZING, "reading the background migrations".into())),
    }
}

/// Every background migration the worker runs has finished (dormant rows are not waited on).
pub(crate) fn rows_settled(p: &Planner, release: &str) -> Result<(), String> {
    let rows = rows_of(p).map_err(|(_, why)| why)?;
    let gates = super::migrate::open_gates(p);
    if let Some(failed) = rows.iter().find(|r| r.state(p.now) == RowState::Failed) {
        return Err(format!(
            "background migration {} failed on {release}: {}",
            failed.name,
            super::remedies::short_reason(failed.failed_reason.as_deref())
        ));
    }
    let open: Vec<&str> = rows
        .iter()
        .filter(|r| !matches!(r.state_with(p.now, &gates), RowState::Finished | RowState::Dormant))
        .map(|r| r.name.as_str())
        .collect();
    match open.as_slice() {
        [] => Ok(()),
        names => Err(format!(
            "{} background migrations of {release} still run ({}); the next hop waits for them",
            names.len(),
            names.join(", ")
        )),
    }
}

/// As [`rows_settled`], with progress reported, as a hold.
pub(super) fn settled_rows(p: &mut Planner, release: &str, rows: &[MigrationRow]) -> Gate {
    let estimates = match &p.obs.postgres {
        Some(Ok(pg)) => pg.estimated_rows.clone().unwrap_or_default(),
        _ => Default::default(),
    };
    super::migrate::report_progress(p, rows, &estimates);
    match rows_settled(p, release) {
        Ok(()) => Ok(()),
        Err(why) if why.contains(" failed on ") => {
            Err(Hold::new(Phase::Failed, reason::MIGRATION_FAILED, why, wait::POLL))
        }
        Err(why) => {
            let gates = super::migrate::open_gates(p);
            let dormant = rows
                .iter()
                .filter(|r| r.state_with(p.now, &gates) == RowState::Dormant)
                .count();
            let dormant_text = match dormant {
                0 => String::new(),
                n => format!("; {n} dormant (env gate off in the worker, not waited on)"),
            };
            let every = super::migrate::poll_interval(p);
            Err(p.hold_step(
                cond::ROAD_FOLLOWED,
                Phase::Finalizing,
                reason::HOPPING,
                format!("{release} runs; {why}{dormant_text}"),
                every,
            ))
        }
    }
}

/// `imageChanges: User`: images moved past the next required stop, or below the release
/// reached, are flagged (condition + Event); nothing is written either way.
fn flag_off_road(p: &mut Planner, hop: &Hop) -> Gate {
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
            let dropped: Vec<String> = Catalog::current()
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

/// `spec.abort` on a source already on v3/v4: the hop under way is undone while it can be
/// (nothing irreversible ran and ClickHouse's schema is one the older image knows).
pub(super) fn abort(p: &mut Planner) -> Gate {
    let hops = planned(p).unwrap_or_default();
    let current = hops
        .iter()
        .filter(|h| h.mode == HopMode::InPlace)
        .find(|h| recorded(&p.status, h).is_some_and(|s| s.started_at.is_some() && s.finished_at.is_none()));
    let Some(hop) = current.cloned() else {
        let reached = p
            .status
            .road
            .iter()
            .rev()
            .find(|s| s.finished_at.is_some())
            .map(|s| s.version.clone())
            .or(p.status.source_version.clone())
            .unwrap_or_default();
        p.status.rolled_back_at = Some(p.now_time());
        return Err(Hold::new(
            Phase::RolledBack,
            reason::ROLLED_BACK,
            format!("aborted with no hop under way: Langfuse stays on {reached}, nothing was changed"),
            wait::IDLE,
        ));
    };
    if let Err(why) = reversible(p, &hop) {
        return Err(Hold::new(
            Phase::Blocked,
            reason::ABORT_TOO_LATE,
            format!(
                "abort requested, but the hop {} -> {} cannot be undone: {why}. To go back, restore PostgreSQL and ClickHouse from the backups acknowledged for this hop (spec.backup.acknowledgedHops), then set the images to {}. Set spec.abort: false to continue to {}",
                hop.from, hop.to, hop.from, hop.to
            ),
            wait::IDLE,
        ));
    }
    let back = Hop {
        from: hop.to,
        to: hop.from,
        ..hop.clone()
    };
    // Worker first going down: the newer web keeps serving until the worker runs the old code.
    for role in [Role::Worker, Role::Web] {
        let d = match role {
            Role::Web => p.obs.web.clone(),
            Role::Worker => p.obs.worker.clone(),
        };
        let Some(d) = d else { continue };
        if let Some(mut change) = wanted_change(p, &d, role, &back) {
            change.env.clear();
            if p.spec.strategy.image_changes == ImageChanges::User {
                return Err(Hold::new(
                    Phase::RollingBack,
                    reason::ROLLING_BACK,
                    format!("abort: set the {} image back to {}", role.word(), change.image),
                    wait::POLL,
                ));
            }
            p.act(Action::SetImage(Box::new(change)));
        }
        if running_version(Some(&d), role) != Some(hop.from) || !super::workloads::settled(&d) {
            return Err(Hold::new(
                Phase::RollingBack,
                reason::ROLLING_BACK,
                format!("abort: rolling the {} back to {}", role.word(), hop.from),
                wait::ROLLOUT,
            ));
        }
    }
    p.status.rolled_back_at = Some(p.now_time());
    Err(Hold::new(
        Phase::RolledBack,
        reason::ROLLED_BACK,
        format!("aborted: web and worker run {} again", hop.from),
        wait::IDLE,
    ))
}

/// Whether the hop can still be undone; why not, when it cannot.
pub(super) fn reversible(p: &Planner, hop: &Hop) -> Result<(), String> {
    if let Some(drops) = &hop.irreversible {
        return Err(format!("it dropped {drops}"));
    }
    let catalog = Catalog::current();
    let known = catalog.schema_height(hop.from) as i64;
    match &p.obs.clickhouse {
        Some(Ok(ch)) => match ch.schema {
            Some((height, _)) if height > known => {
                return Err(format!(
                    "ClickHouse's schema is at {height} and {} knows only up to {known}",
                    hop.from
                ));
            }
            _ => {}
        },
        _ => return Err("ClickHouse's schema height could not be read".into()),
    }
    let Some(Ok(pg)) = &p.obs.postgres else {
        return Err("the background migrations could not be read".into());
    };
    {
        let foreign: Vec<&str> = pg
            .migrations
            .iter()
            .filter(|r| r.finished_at.is_none() && !catalog.rows_at(hop.from).any(|m| m.name == r.name))
            .map(|r| r.name.as_str())
            .collect();
        if !foreign.is_empty() {
            return Err(format!(
                "{} registered background migrations {} does not have ({}): its worker would fail on them",
                hop.to,
                hop.from,
                foreign.join(", ")
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Web,
    Worker,
}

impl Role {
    fn word(self) -> &'static str {
        match self {
            Role::Web => "web",
            Role::Worker => "worker",
        }
    }
}

/// The Langfuse container: the only one, else the one whose image is Langfuse's web or worker.
pub(crate) fn langfuse_container(d: &Deployment, role: Role) -> Option<&Container> {
    let containers = d.spec.as_ref()?.template.spec.as_ref()?.containers.as_slice();
    if let [only] = containers {
        return Some(only);
    }
    let wanted = match role {
        Role::Web => "langfuse",
        Role::Worker => "langfuse-worker",
    };
    containers.iter().find(|c| {
        c.image
            .as_deref()
            .map(image_repository)
            .is_some_and(|r| r == wanted || r.ends_with(&format!("/{wanted}")))
    })
}

/// The exact release a Deployment's Langfuse container names (`None` for a floating tag).
pub(crate) fn running_version(d: Option<&Deployment>, role: Role) -> Option<Version> {
    let image = langfuse_container(d?, role)?.image.as_deref()?;
    Version::parse(image_tag(image)?)
}

fn image_for(d: Option<&Deployment>, role: Role, v: Version) -> Option<String> {
    let image = langfuse_container(d?, role)?.image.as_deref()?;
    Some(format!("{}:{v}", image_repository(image)))
}

fn availability(d: &Deployment) -> (i32, i32) {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let available = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    (available, want)
}
