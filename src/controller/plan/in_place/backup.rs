//! The backup a hop that drops data waits for, taken right before it: after the stop it leaves
//! finished, so a restore loses nothing that ran on the way there. One acknowledged in advance
//! is allowed, and status says its backup may predate the hop.

use jiff::Timestamp;

use super::road::recorded_to;
use super::unmet::Unmet;
use crate::api::HopBackup;
use crate::catalog::road::Hop;
use crate::controller::plan::Planner;

/// When the stop this hop leaves finished, if the road recorded it (a source already at that
/// release has no such time: any backup taken now is after it).
fn stop_finished(p: &Planner, hop: &Hop) -> Option<Timestamp> {
    recorded_to(&p.status, hop.from)
        .and_then(|s| s.finished_at.as_ref())
        .map(|t| t.0)
}

fn backup_for<'a>(p: &'a Planner, hop: &Hop) -> Option<(&'a HopBackup, Timestamp)> {
    let to = hop.to.to_string();
    p.spec
        .backup
        .hop_backups
        .iter()
        .filter(|b| b.hop == to)
        .filter_map(|b| Some((b, b.taken_at.parse::<Timestamp>().ok()?)))
        .max_by_key(|(_, at)| *at)
}

/// What keeps the hop from starting, if anything.
pub(super) fn unmet(p: &Planner, hop: &Hop, drops: &str) -> Option<Unmet> {
    let finished = stop_finished(p, hop);
    let after = finished
        .map(|f| format!(" (after {} finished at {f})", hop.from))
        .unwrap_or_default();
    match backup_for(p, hop) {
        Some((b, at)) if finished.is_some_and(|f| at < f) => Some(Unmet::Backup(format!(
            "the backup {} for {} was taken at {at}, before {} finished at {}: a restore from it would lose everything since. Take new backups of PostgreSQL and ClickHouse now and give their time in spec.backup.hopBackups",
            b.reference,
            hop.to,
            hop.from,
            finished.map(|f| f.to_string()).unwrap_or_default()
        ))),
        Some(_) => None,
        None if p.spec.backup.acknowledged_hops.contains(&hop.to.to_string()) => None,
        None => Some(Unmet::Backup(format!(
            "{} -> {} drops {drops}: take backups of PostgreSQL and ClickHouse now{after}, then add {{hop: \"{}\", reference: <where they are>, takenAt: <when>}} to spec.backup.hopBackups",
            hop.from, hop.to, hop.to
        ))),
    }
}

/// What status says of the hop's backup: which one, and whether it predates the hop.
pub(crate) fn note(p: &Planner, hop: &Hop) -> Option<String> {
    match backup_for(p, hop) {
        Some((b, at)) => Some(match stop_finished(p, hop) {
            Some(f) if at < f => format!(
                "{} taken at {at}, before {} finished at {f}: refused",
                b.reference, hop.from
            ),
            Some(f) => format!("{} taken at {at}, after {} finished at {f}", b.reference, hop.from),
            None => format!("{} taken at {at}", b.reference),
        }),
        None if p.spec.backup.acknowledged_hops.contains(&hop.to.to_string()) => Some(String::from(
            "acknowledged in advance (spec.backup.acknowledgedHops): its backup may predate this hop, and a restore from it loses what ran since; spec.backup.hopBackups records one taken right before it",
        )),
        None => None,
    }
}
