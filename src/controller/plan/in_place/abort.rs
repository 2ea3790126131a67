//! Undoing a hop under way: the images set back, web last, while the hop is still reversible.

use super::road::{planned, recorded};
use super::roll::wanted_change;
use crate::api::conditions::reason;
use crate::api::{ImageChanges, Phase};
use crate::catalog::road::{Hop, HopMode};
use crate::controller::observed::Reading;
use crate::controller::plan::facts::Fact;
use crate::controller::plan::{Action, Gate, Hold, Planner, wait};
use crate::resources::deployments::views::{Role, running_version};

/// `spec.abort` on a source already on v3/v4: the hop under way is undone while it can be
/// (nothing irreversible ran and ClickHouse's schema is one the older image knows).
pub(crate) fn abort(p: &mut Planner) -> Gate {
    let hops = planned(p).unwrap_or_default();
    let current = hops
        .iter()
        .filter(|h| h.mode == HopMode::InPlace)
        .find(|h| recorded(&p.status, h).is_some_and(|s| s.started_at.is_some() && s.finished_at.is_none()));
    let Some(hop) = current.cloned() else {
        return Err(nothing_under_way(p));
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
    set_back(p, &hop)?;
    p.record_now(Fact::RolledBack);
    Err(Hold::new(
        Phase::RolledBack,
        reason::ROLLED_BACK,
        format!("aborted: web and worker run {} again", hop.from),
        wait::IDLE,
    ))
}

/// No hop under way: nothing to undo, the upgrade ends where Langfuse stands.
fn nothing_under_way(p: &mut Planner) -> Hold {
    let reached = p
        .status
        .road
        .iter()
        .rev()
        .find(|s| s.finished_at.is_some())
        .map(|s| s.version.clone())
        .or(p.status.source_version.clone())
        .unwrap_or_default();
    p.record_now(Fact::RolledBack);
    Hold::new(
        Phase::RolledBack,
        reason::ROLLED_BACK,
        format!("aborted with no hop under way: Langfuse stays on {reached}, nothing was changed"),
        wait::IDLE,
    )
}

/// The images set back to the hop's release and rolled out, the worker first going down: the
/// newer web keeps serving until the worker runs the old code.
fn set_back(p: &mut Planner, hop: &Hop) -> Gate {
    let back = Hop {
        from: hop.to,
        to: hop.from,
        ..hop.clone()
    };
    for role in [Role::Worker, Role::Web] {
        let Some(d) = p.obs.deployment(role).cloned() else {
            continue;
        };
        if let Some(mut change) = wanted_change(p, &d, role, &back) {
            change.env.clear();
            if p.spec.strategy.image_changes == ImageChanges::User {
                return Err(Hold::new(
                    Phase::RollingBack,
                    reason::ROLLING_BACK,
                    format!("abort: set the {} image back to {}", role.as_str(), change.image),
                    wait::POLL,
                ));
            }
            p.act(Action::SetImage(Box::new(change)));
        }
        if running_version(Some(&d), role) != Some(hop.from) || !crate::controller::plan::workloads::settled(&d) {
            return Err(Hold::new(
                Phase::RollingBack,
                reason::ROLLING_BACK,
                format!("abort: rolling the {} back to {}", role.as_str(), hop.from),
                wait::ROLLOUT,
            ));
        }
    }
    Ok(())
}

/// Whether the hop can still be undone; why not, when it cannot.
pub(crate) fn reversible(p: &Planner, hop: &Hop) -> Result<(), String> {
    if let Some(drops) = &hop.irreversible {
        return Err(format!("it dropped {drops}"));
    }
    let catalog = p.catalog;
    let known = catalog.schema_height(hop.from) as i64;
    match &p.obs.clickhouse {
        Reading::Answered(ch) => match ch.schema {
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
    let Reading::Answered(pg) = &p.obs.postgres else {
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
