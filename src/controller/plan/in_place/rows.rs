//! Whether a release's background migrations have settled: every row it runs finished (rows
//! dormant behind an env gate are not waited on), a failed one named, progress reported.

use crate::api::Phase;
use crate::api::conditions::{self as cond, reason};
use crate::controller::observed::Reading;
use crate::controller::plan::remedies::{Site, remedy_failure};
use crate::controller::plan::{Action, Gate, Hold, Planner, wait};
use crate::controller::validate::Settings;
use crate::databases::Remedy;
use crate::migrations::{MigrationRow, RowState};
use crate::resources::deployments::views::{Role, running_version};
use crate::version::Version;

pub(super) fn rows_of(p: &Planner) -> Result<Vec<MigrationRow>, (crate::api::conditions::Reason, String)> {
    match &p.obs.postgres {
        Reading::Answered(pg) => Ok(pg.migrations.clone()),
        Reading::Failed(e) => Err((reason::POSTGRES_UNAVAILABLE, format!("cannot read Postgres: {e}"))),
        Reading::NotAsked => Err((reason::FINALIZING, "reading the background migrations".into())),
    }
}

/// Why a release's background migrations are not settled: closed, so the hold each one makes
/// is chosen by its kind, not by its words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Unsettled {
    /// Postgres was not read (or not yet).
    Unread(String),
    /// A row failed: the worker will not finish it by itself.
    Failed {
        row: String,
        release: String,
        reason: String,
    },
    /// Rows still run (or wait to).
    Running { release: String, rows: Vec<String> },
    /// An unfinished row whose script the running worker no longer ships (catalog
    /// `orphanRows`): the worker cannot load it, and no row after it runs.
    Orphan {
        row: String,
        script: String,
        release: String,
    },
}

impl std::fmt::Display for Unsettled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsettled::Unread(why) => f.write_str(why),
            Unsettled::Failed { row, release, reason } => {
                write!(f, "background migration {row} failed on {release}: {reason}")
            }
            Unsettled::Orphan { row, script, release } => write!(
                f,
                "background migration {row} was registered by the v4-preview script {script}, which {release} no longer ships: the worker cannot load it, and no background migration after it runs"
            ),
            Unsettled::Running { release, rows } => write!(
                f,
                "{} background migrations of {release} still run ({}); the next hop waits for them",
                rows.len(),
                rows.join(", ")
            ),
        }
    }
}

/// Every background migration the worker runs has finished (dormant rows are not waited on).
pub(crate) fn rows_settled(p: &Planner, release: &str) -> Result<(), Unsettled> {
    let rows = rows_of(p).map_err(|(_, why)| Unsettled::Unread(why))?;
    let gates = crate::controller::plan::migrate::open_gates(p);
    let worker = running_version(p.obs.worker.as_ref(), Role::Worker).or_else(|| Version::parse(release));
    let orphan = worker.and_then(|v| {
        rows.iter()
            .filter(|r| r.finished_at.is_none())
            .find_map(|r| p.catalog.orphan_for(&r.name, v).map(|o| (o, v)))
    });
    if let Some((o, v)) = orphan {
        return Err(Unsettled::Orphan {
            row: o.name.clone(),
            script: o.script.clone(),
            release: v.to_string(),
        });
    }
    if let Some(failed) = rows.iter().find(|r| r.state(p.now) == RowState::Failed) {
        return Err(Unsettled::Failed {
            row: failed.name.clone(),
            release: release.to_string(),
            reason: crate::controller::plan::remedies::short_reason(failed.failed_reason.as_deref()),
        });
    }
    let open: Vec<String> = rows
        .iter()
        .filter(|r| !matches!(r.state_with(p.now, &gates), RowState::Finished | RowState::Dormant))
        .map(|r| r.name.clone())
        .collect();
    match open.is_empty() {
        true => Ok(()),
        false => Err(Unsettled::Running {
            release: release.to_string(),
            rows: open,
        }),
    }
}

/// As [`rows_settled`], with progress reported, as a hold.
pub(crate) fn settled_rows(
    p: &mut Planner,
    settings: &Settings,
    site: Site,
    release: &str,
    rows: &[MigrationRow],
) -> Gate {
    let estimates = match &p.obs.postgres {
        Reading::Answered(pg) => pg.estimated_rows.clone().unwrap_or_default(),
        _ => Default::default(),
    };
    crate::controller::plan::migrate::report_progress(p, rows, &estimates);
    match rows_settled(p, release) {
        Ok(()) => Ok(()),
        Err(Unsettled::Orphan { row, script, release }) => Err(orphan(p, &row, &script, &release)),
        // The documented remedies, bounded, as beside v2 (a source's worker is not restarted:
        // the message says how).
        Err(Unsettled::Failed { row, .. }) => match rows.iter().find(|r| r.name == row) {
            Some(failed) => remedy_failure(p, settings, &failed.clone(), site),
            None => Err(Hold::new(Phase::Failed, reason::MIGRATION_FAILED, row, wait::POLL)),
        },
        Err(why) => {
            let gates = crate::controller::plan::migrate::open_gates(p);
            let dormant = rows
                .iter()
                .filter(|r| r.state_with(p.now, &gates) == RowState::Dormant)
                .count();
            let dormant_text = match dormant {
                0 => String::new(),
                n => format!("; {n} dormant (env gate off in the worker, not waited on)"),
            };
            let every = crate::controller::plan::migrate::poll_interval(p);
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

/// An unfinished orphan row: marked finished when `spec.migrations.finishOrphanRows` allows it
/// (the running release has no such script, by the catalog, so nothing it could run is lost),
/// else the hold that says how.
pub(crate) fn orphan(p: &mut Planner, row: &str, script: &str, release: &str) -> Hold {
    let why = Unsettled::Orphan {
        row: row.to_string(),
        script: script.to_string(),
        release: release.to_string(),
    };
    if p.spec.migrations.finish_orphan_rows {
        p.act(Action::Remedy(Remedy::FinishOrphan {
            name: row.to_string(),
            script: script.to_string(),
        }));
        return p.hold_step(
            cond::ROAD_FOLLOWED,
            Phase::Finalizing,
            reason::REMEDY_APPLIED,
            format!("{why}; marking it finished (spec.migrations.finishOrphanRows)"),
            wait::POLL,
        );
    }
    p.hold_step(
        cond::ROAD_FOLLOWED,
        Phase::Blocked,
        reason::ORPHAN_ROW,
        format!("{why}. {}", orphan_fix(row)),
        wait::PERSON,
    )
}

/// What a person does about an unfinished orphan row.
pub(crate) fn orphan_fix(row: &str) -> String {
    format!(
        "Nothing it could run is lost by marking it finished: UPDATE background_migrations SET finished_at = now() WHERE name = '{row}' AND finished_at IS NULL; or set spec.migrations.finishOrphanRows: true and the operator does exactly that"
    )
}
