//! The road's checks, for every source: a road exists (no downgrade past the database, no
//! release the catalog does not know), each major's infrastructure is there, and each hop that
//! drops data has its backup acknowledged. For a source already on v3/v4, also its worker and
//! its background migrations: the in-place hops need nothing else.

use crate::api::{CheckId, CheckResult, PreflightCheck};
use crate::catalog::road::{Hop, HopGate, HopMode};
use crate::controller::observed::Reading;
use crate::controller::plan::Planner;
use crate::controller::plan::in_place::{self, Unmet};
use crate::resources::deployments::views::{Role, langfuse_container, running_version, worker_name};
use crate::version::Version;

fn line(id: CheckId, result: CheckResult, message: impl Into<String>) -> PreflightCheck {
    PreflightCheck {
        name: id.as_str().into(),
        result,
        message: message.into(),
    }
}

/// The lines about the road; empty while the source's version is unknown (its own line says so).
pub(super) fn lines(p: &Planner) -> Vec<PreflightCheck> {
    let hops = match in_place::planned(p) {
        Ok(h) => h,
        Err(e) => return vec![line(CheckId::Road, CheckResult::Fail, e.to_string())],
    };
    if p.status
        .source_version
        .as_deref()
        .and_then(crate::version::Version::parse)
        .is_none()
    {
        return Vec::new();
    }
    let mut out = vec![road_line(p, &hops)];
    out.extend(gate_lines(p, &hops));
    if p.road().is_in_place() {
        out.extend(in_place_source_lines(p));
    }
    out
}

/// The stops, in order.
fn road_line(p: &Planner, hops: &[Hop]) -> PreflightCheck {
    let stops: Vec<String> = hops.iter().map(|h| h.to.to_string()).collect();
    let words = match stops.as_slice() {
        [] => format!("already at {}: nothing to do", in_place::destination(p.spec)),
        _ => format!(
            "{} -> {} ({} hop{})",
            p.status.source_version.clone().unwrap_or_default(),
            stops.join(" -> "),
            stops.len(),
            if stops.len() == 1 { "" } else { "s" }
        ),
    };
    line(CheckId::Road, CheckResult::Pass, words)
}

/// The gates of the whole road known now: infrastructure for every in-place major, a backup
/// for every hop that drops data.
fn gate_lines(p: &Planner, hops: &[Hop]) -> Vec<PreflightCheck> {
    use CheckResult::*;
    let mut out = Vec::new();
    let mut infra = Vec::new();
    let mut backups = Vec::new();
    for hop in hops {
        let unmet = in_place::unmet_gates(p, hop);
        for gate in &hop.gates {
            match gate {
                HopGate::Infrastructure { .. } if hop.mode == HopMode::InPlace => {
                    infra.extend(unmet.iter().filter(|u| matches!(u, Unmet::Infrastructure(_))).cloned());
                }
                HopGate::Backup { .. } => {
                    backups.extend(unmet.iter().filter(|u| matches!(u, Unmet::Backup(_))).cloned());
                }
                _ => {}
            }
        }
    }
    let needs_infra = hops
        .iter()
        .any(|h| h.gates.iter().any(|g| matches!(g, HopGate::Infrastructure { .. })) && h.mode == HopMode::InPlace);
    if needs_infra {
        out.push(match infra.as_slice() {
            [] => line(
                CheckId::Infrastructure,
                Pass,
                "ClickHouse, PostgreSQL and Redis meet every major on the road",
            ),
            unmet => line(CheckId::Infrastructure, Fail, in_place::words(unmet)),
        });
    }
    if hops.iter().any(|h| h.to.major >= 4 && h.mode == HopMode::InPlace) {
        out.extend(v4_headroom_line(p));
    }
    let drops_data = hops
        .iter()
        .any(|h| h.gates.iter().any(|g| matches!(g, HopGate::Backup { .. })));
    if drops_data {
        // Not a failure: the backup belongs right before its hop, taken once the stop before
        // it finished; that hop waits for it.
        out.push(match backups.as_slice() {
            [] => line(CheckId::HopBackups, Pass, "each hop that drops data has its backup"),
            unmet => line(
                CheckId::HopBackups,
                Warn,
                format!(
                    "the road runs to the stop before, then waits for this backup: {}",
                    in_place::words(unmet)
                ),
            ),
        });
    }
    out
}

/// Before a v4 hop: the disk figures (a warning when short: the backfill is a later choice),
/// and Redis, which the operator reads only where spec.redis names it.
fn v4_headroom_line(p: &Planner) -> Option<PreflightCheck> {
    use CheckResult::*;
    let disk = in_place::v4_infra::disk_headroom(p);
    let redis_unread = !p.obs.redis.is_asked();
    let mut words: Vec<String> = disk.iter().map(|(_, w)| w.clone()).collect();
    if redis_unread {
        words.push(
            "Redis not checked (spec.redis names none): Langfuse v4 needs Redis >= 7.0 with maxmemory-policy noeviction; name it in spec.redis for the operator to check, or check it yourself".into(),
        );
    }
    // A managed Redis may leave maxmemory_policy out of INFO (as it refuses CONFIG GET).
    let policy_hidden = p.obs.redis.answered().is_some_and(|r| r.eviction_policy.is_none());
    if policy_hidden {
        words.push(
            "Redis did not report its maxmemory-policy (a managed Redis may hide it): make sure it is noeviction, which Langfuse needs".into(),
        );
    }
    let short = disk.as_ref().is_some_and(|(enough, _)| !enough);
    match (words.is_empty(), short || redis_unread || policy_hidden) {
        (true, _) => None,
        (false, warn) => Some(line(
            CheckId::V4Headroom,
            if warn { Warn } else { Pass },
            words.join("; "),
        )),
    }
}

/// A source on v3/v4: web and worker found at one exact release, ClickHouse clean at a height
/// that release knows, and nothing of that release still migrating.
fn in_place_source_lines(p: &Planner) -> Vec<PreflightCheck> {
    let web = running_version(p.obs.web.as_ref(), Role::Web);
    vec![worker_line(p, web), clickhouse_line(p, web), ran_line(p, web)]
}

/// The worker found, with a Langfuse container, at the web's exact release.
fn worker_line(p: &Planner, web: Option<Version>) -> PreflightCheck {
    use CheckResult::*;
    let worker_name = worker_name(p.spec).unwrap_or_default();
    let worker = p.obs.worker.as_ref();
    match (worker, running_version(worker, Role::Worker)) {
        (None, _) => line(
            CheckId::SourceWorker,
            Fail,
            format!("worker Deployment {worker_name:?} not found; name it in spec.source.worker"),
        ),
        (Some(d), None) if langfuse_container(d, Role::Worker).is_none() => line(
            CheckId::SourceWorker,
            Fail,
            format!("{worker_name} has no Langfuse worker container"),
        ),
        (Some(_), v) if v != web => line(
            CheckId::SourceWorker,
            Fail,
            format!(
                "the worker runs {} and web runs {}: finish that rollout first (both the same exact release)",
                v.map(|v| v.to_string()).unwrap_or("a floating tag".into()),
                web.map(|v| v.to_string()).unwrap_or("a floating tag".into())
            ),
        ),
        (Some(_), _) => line(
            CheckId::SourceWorker,
            Pass,
            format!("{worker_name} runs the web's release"),
        ),
    }
}

/// ClickHouse's schema clean, at a height the running release knows.
fn clickhouse_line(p: &Planner, web: Option<Version>) -> PreflightCheck {
    use CheckResult::*;
    match &p.obs.clickhouse {
        Reading::Answered(ch) => {
            let known = web.map(|v| p.catalog.schema_height(v) as i64);
            match (ch.schema, known) {
                (Some((v, true)), _) => line(
                    CheckId::Clickhouse,
                    Fail,
                    crate::controller::plan::dirty::repair(p.catalog, v, p.spec.clickhouse.cluster_enabled),
                ),
                (Some((v, _)), Some(k)) if v > k => line(
                    CheckId::Clickhouse,
                    Warn,
                    format!(
                        "schema_migrations is at {v}, above the {k} the running release ships: a newer image ran here, or the release catalog lacks a migration"
                    ),
                ),
                (Some((v, _)), _) => line(CheckId::Clickhouse, Pass, format!("schema_migrations at {v}, clean")),
                (None, _) => line(
                    CheckId::Clickhouse,
                    Fail,
                    "ClickHouse has no schema_migrations: a v3 web creates it; is spec.clickhouse the database this Langfuse uses?",
                ),
            }
        }
        Reading::Failed(e) => line(CheckId::Clickhouse, Fail, format!("ClickHouse unreachable: {e}")),
        Reading::NotAsked => line(CheckId::Clickhouse, Fail, "ClickHouse was not observed"),
    }
}

/// The release must have run to the end: both rolled out, its rows registered, its schema.
fn ran_line(p: &Planner, web: Option<Version>) -> PreflightCheck {
    use CheckResult::*;
    let release = web.map(|v| v.to_string()).unwrap_or_default();
    let mut unmet: Vec<String> = [(p.obs.web.as_ref(), "web"), (p.obs.worker.as_ref(), "worker")]
        .into_iter()
        .filter(|(d, _)| d.is_some_and(|d| !crate::controller::plan::workloads::settled(d)))
        .map(|(_, role)| format!("the {role} rollout has not finished: wait for it, or finish it, first"))
        .collect();
    unmet.extend(web.map(|v| in_place::release_ran(p, v)).unwrap_or_default());
    let mut warned = None;
    match in_place::rows_settled(p, &release) {
        Ok(()) => {}
        // Allowed to be fixed: the operator marks it finished before the first hop.
        Err(why @ in_place::Unsettled::Orphan { .. }) if p.spec.migrations.finish_orphan_rows => {
            warned = Some(format!(
                "{why}; it is marked finished before the first hop (finishOrphanRows)"
            ));
        }
        Err(in_place::Unsettled::Orphan { row, script, release }) => {
            let why = in_place::Unsettled::Orphan {
                row: row.clone(),
                script,
                release,
            };
            unmet.push(format!("{why}. {}", in_place::orphan_fix(&row)));
        }
        Err(why) => unmet.push(why.to_string()),
    }
    if let (Some(warning), true) = (warned, unmet.is_empty()) {
        return line(CheckId::SourceMigrations, Warn, warning);
    }
    match unmet.as_slice() {
        [] => line(
            CheckId::SourceMigrations,
            Pass,
            format!("{release} ran to the end: every background migration its worker runs has finished"),
        ),
        _ => line(CheckId::SourceMigrations, Fail, unmet.join("; ")),
    }
}
