//! Which in-place hops the road has, and what the status records of them: the planned road
//! from the recorded source, each hop's stop, the release that runs now.

use crate::api::conditions::{self as cond, reason};
use crate::api::{CopyCount, LangfuseUpgradeSpec, LangfuseUpgradeStatus, Phase, RoadStop, StopMode, StopState};
use crate::catalog::road::{Hop, HopGate, HopMode, RoadError, road};
use crate::controller::plan::{Gate, Planner, wait};
use crate::version::Version;

/// Which road the upgrade is on, from the source version preflight recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Road {
    /// From v2: v3 beside it, the switch, the copy and its proof, v2 retired, then the hops.
    BesideV2,
    /// The source ran v3 or v4: no v2 to run beside, only in-place hops.
    InPlace,
}

impl Road {
    /// Beside v2 until preflight recorded a v3 or v4 source.
    pub fn of(s: &LangfuseUpgradeStatus) -> Road {
        let in_place = s
            .source_version
            .as_deref()
            .and_then(Version::parse)
            .is_some_and(|v| v.major >= 3);
        match in_place {
            true => Road::InPlace,
            false => Road::BesideV2,
        }
    }

    pub fn is_in_place(self) -> bool {
        self == Road::InPlace
    }
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
    let accept = p.spec.target.accept_unknown_release;
    let fresh = road(p.catalog, from, to, accept)?;
    // A road under way keeps the stops it took: if the catalog changed since (a newer patch of
    // the required stop, say), the rest is planned from the last stop reached, never a hop
    // from a release that no longer runs.
    let taken: Vec<&RoadStop> = p.status.road.iter().filter(|s| s.finished_at.is_some()).collect();
    let on = |s: &RoadStop| {
        fresh
            .iter()
            .any(|h| h.from.to_string() == s.from && h.to.to_string() == s.version)
    };
    if taken.iter().all(|s| on(s)) {
        return Ok(fresh);
    }
    let Some(last) = taken.iter().filter_map(|s| Version::parse(&s.version)).max() else {
        return Ok(fresh);
    };
    let mut hops: Vec<Hop> = taken.iter().filter_map(|s| hop_of(s)).collect();
    hops.extend(road(p.catalog, last, to, accept)?);
    Ok(hops)
}

/// A hop taken, as the status records it (its gates held and are not asked again).
fn hop_of(s: &RoadStop) -> Option<Hop> {
    Some(Hop {
        from: Version::parse(&s.from)?,
        to: Version::parse(&s.version)?,
        mode: match s.mode {
            StopMode::BesideV2 => HopMode::BesideV2,
            StopMode::InPlace => HopMode::InPlace,
        },
        gates: Vec::new(),
        required_because: s.required_because.clone(),
        irreversible: s.irreversible.clone(),
    })
}

/// The recorded stop of a hop (times), if any.
pub(crate) fn recorded<'s>(status: &'s LangfuseUpgradeStatus, hop: &Hop) -> Option<&'s RoadStop> {
    let (from, to) = (hop.from.to_string(), hop.to.to_string());
    status.road.iter().find(|s| s.from == from && s.version == to)
}

/// The recorded stop that ends at `version`.
pub(crate) fn recorded_to(status: &LangfuseUpgradeStatus, version: Version) -> Option<&RoadStop> {
    let v = version.to_string();
    status.road.iter().find(|s| s.version == v)
}

pub(super) fn record<'p>(p: &'p mut Planner, hop: &Hop) -> &'p mut RoadStop {
    let (from, to) = (hop.from.to_string(), hop.to.to_string());
    match p.status.road.iter().position(|s| s.from == from && s.version == to) {
        Some(i) => &mut p.status.road[i],
        None => {
            p.status.road.push(stop_of(hop, StopState::Current));
            p.status.road.last_mut().expect("just pushed")
        }
    }
}

pub(crate) fn stop_of(hop: &Hop, state: StopState) -> RoadStop {
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
        backup: None,
        catalog: None,
        // One entry per copy to count; the counts come before the hop starts.
        copies: hop
            .gates
            .iter()
            .flat_map(|g| match g {
                HopGate::CopiesVerified { tables } => tables.clone(),
                _ => Vec::new(),
            })
            .map(|t| CopyCount {
                table: t.name().to_string(),
                since: None,
                until: None,
                postgres: None,
                clickhouse: None,
                verdict: None,
            })
            .collect(),
    }
}

/// The release the v3 Deployments this upgrade owns run now: the newest started hop's.
pub(crate) fn owned_version(status: &LangfuseUpgradeStatus) -> Option<String> {
    highest_started(status).map(|v| v.to_string())
}

/// The release a source on v3/v4 runs, from the recorded facts: the newest hop started (the
/// one it left, when that hop was undone), else the source's own.
pub(crate) fn release_now(status: &LangfuseUpgradeStatus) -> Option<String> {
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

/// A hop under way that the road (the spec or the catalog changed) no longer has, or a release
/// reached above the destination: walking on would mean writing a release below one that ran.
pub(super) fn off_the_recorded_road(p: &mut Planner, hops: &[Hop]) -> Gate {
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
