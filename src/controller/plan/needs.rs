//! What the next observation must read, from the stage the recorded facts put the upgrade in.

use jiff::Timestamp;

use super::*;
use crate::api::{LangfuseUpgrade, LangfuseUpgradeSpec, LangfuseUpgradeStatus};
use crate::controller::observed::Observed;
use crate::databases::{ClickHouseQuery, PostgresQuery};

/// Which external facts the next observation needs, from the facts recorded so far.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Needs {
    /// Read nothing at all: the spec names an object no object can be (the apiserver would
    /// refuse the reads); the plan answers InvalidSpec from the spec alone. Such names cannot
    /// pass preflight and the CRD freezes them after it, so nothing observed is missed.
    pub nothing: bool,
    pub secrets: bool,
    /// HorizontalPodAutoscalers on v2 matter to preflight and to retirement only.
    pub hpas: bool,
    pub postgres: PostgresQuery,
    pub clickhouse: ClickHouseQuery,
    /// Reach Redis and the S3 event bucket with the settings v3 will get.
    pub stores: bool,
    /// Reach Redis alone (`spec.redis`), for a v4 hop's gates.
    pub redis: bool,
    /// Read the dual write's propagation keys from Redis (the data-model road).
    pub propagation: bool,
    /// Write and delete a marker object in the bucket (not from `kubectl lfu plan`).
    pub s3_marker: bool,
    /// v3 web's error ratio, from the shift until v2 is retired (`strategy.analysis`).
    pub error_ratio: Option<crate::analysis::ErrorRatioQuery>,
}

/// `now` is the decision's: late rows are counted up to it, so a re-copy bounded by it takes
/// exactly the rows counted.
pub fn needs(upgrade: &LangfuseUpgrade, now: Timestamp) -> Needs {
    let deleting = upgrade.metadata.deletion_timestamp.is_some();
    match &upgrade.status {
        Some(s) => needs_for(&upgrade.spec, deleting, s, now),
        None => needs_for(&upgrade.spec, deleting, &LangfuseUpgradeStatus::default(), now),
    }
}

/// A decision that only records facts, leading to a stage that reads more than was read for
/// it: the wider reads, so the same reconcile can look again and plan from the same recorded
/// status with every fact the next step needs (the last copy finished → the counts; a hop
/// settled → the next hop's gates). Without it the next step waits for one more reconcile and
/// one more status write. `None` when the decision writes anything but status (the world
/// observed would then be one the decision is about to change), or when nothing but API reads
/// is added, or when the next stage would ask a read of the same kind with other bounds (the counts of a
/// re-copy): the recorded status is not the one those bounds come from.
pub fn look_ahead(upgrade: &LangfuseUpgrade, decision: &Decision, read: &Needs, now: Timestamp) -> Option<Needs> {
    if read.nothing || decision.actions.iter().any(|a| *a != Action::RecordFacts) {
        return None;
    }
    let deleting = upgrade.metadata.deletion_timestamp.is_some();
    let next = needs_for(&upgrade.spec, deleting, &decision.status, now);
    let wider = read.widened_by(&next)?;
    // Only a read outside the API is worth a second look: the HorizontalPodAutoscalers or the
    // Secrets alone would repeat every read made (the counts among them) for a message.
    let outside = Needs {
        hpas: read.hpas,
        secrets: read.secrets,
        ..wider.clone()
    };
    (outside != *read).then_some(wider)
}

/// What a reconcile acts on after its look ahead read `more`: the decision planned from it, or
/// `None` where a read failed that had answered the first time (a count timing out, ClickHouse
/// down): the facts the first decision records do not wait on a read they do not depend on.
/// The reconcile and the simulated worlds of the tests all go through here.
pub fn second_look(
    upgrade: &LangfuseUpgrade,
    first: &Observed,
    more: Observed,
    now: Timestamp,
) -> Option<(Observed, Decision)> {
    if more.failed_where_answered(first) {
        return None;
    }
    let decision = super::plan(upgrade, &more, now);
    Some((more, decision))
}

impl Needs {
    /// The same reads of the cluster's objects, none of the databases or stores.
    pub fn cluster_only(&self) -> Needs {
        Needs {
            nothing: self.nothing,
            secrets: self.secrets,
            hpas: self.hpas,
            ..Default::default()
        }
    }

    /// Both sets of reads, or `None` where the two ask one read with different bounds.
    fn widened_by(&self, other: &Needs) -> Option<Needs> {
        fn list<T: Clone + PartialEq>(a: &[T], b: &[T]) -> Option<Vec<T>> {
            match (a.is_empty(), b.is_empty()) {
                (_, true) => Some(a.to_vec()),
                (true, false) => Some(b.to_vec()),
                _ => (a == b).then(|| a.to_vec()),
            }
        }
        fn one<T: Clone + PartialEq>(a: &Option<T>, b: &Option<T>) -> Option<Option<T>> {
            match (a, b) {
                (Some(x), Some(y)) if x != y => None,
                _ => Some(a.clone().or_else(|| b.clone())),
            }
        }
        let (p, q) = (&self.postgres, &other.postgres);
        let (c, d) = (&self.clickhouse, &other.clickhouse);
        Some(Needs {
            nothing: self.nothing || other.nothing,
            secrets: self.secrets || other.secrets,
            hpas: self.hpas || other.hpas,
            postgres: PostgresQuery {
                server_version: p.server_version || q.server_version,
                migrations: p.migrations || q.migrations,
                newest_write: p.newest_write || q.newest_write,
                same_created_at_scan: one(&p.same_created_at_scan, &q.same_created_at_scan)?,
                counts_until: one(&p.counts_until, &q.counts_until)?,
                recent_after: one(&p.recent_after, &q.recent_after)?,
                late_writes_after: one(&p.late_writes_after, &q.late_writes_after)?,
                late_writes_until: one(&p.late_writes_until, &q.late_writes_until)?,
                copy_sources: list(&p.copy_sources, &q.copy_sources)?,
                backfill_rows: p.backfill_rows || q.backfill_rows,
            },
            clickhouse: ClickHouseQuery {
                server: c.server || d.server,
                objects: c.objects || d.objects,
                counts_until: one(&c.counts_until, &d.counts_until)?,
                recent_after: one(&c.recent_after, &d.recent_after)?,
                copy_counts: list(&c.copy_counts, &d.copy_counts)?,
                v4_readiness: c.v4_readiness || d.v4_readiness,
                events: match (&c.events, &d.events) {
                    (a, b) if *a == crate::data_model::EventsQuery::default() => b.clone(),
                    (a, b) if *b == crate::data_model::EventsQuery::default() || a == b => a.clone(),
                    _ => return None,
                },
            },
            stores: self.stores || other.stores,
            redis: self.redis || other.redis,
            propagation: self.propagation || other.propagation,
            s3_marker: self.s3_marker || other.s3_marker,
            error_ratio: one(&self.error_ratio, &other.error_ratio)?,
        })
    }
}

fn needs_for(spec: &LangfuseUpgradeSpec, deleting: bool, s: &LangfuseUpgradeStatus, now: Timestamp) -> Needs {
    let mut n = Needs::default();
    if crate::controller::validate::object_names(spec).is_err() {
        n.nothing = true;
        return n;
    }
    // Undoing an in-place hop depends on ClickHouse's schema height.
    if spec.abort && super::in_place::Road::of(s).is_in_place() && !deleting {
        n.clickhouse.server = true;
        n.postgres.migrations = true;
        return n;
    }
    if deleting || spec.abort || spec.paused {
        return n;
    }
    n.error_ratio = error_ratio(spec, s, now);
    match stage_of(spec, s) {
        Stage::Preflight => preflight_needs(&mut n, s),
        Stage::Draining => n.postgres.newest_write = true,
        Stage::Migrating => n.postgres.migrations = true,
        Stage::Verifying => verifying_needs(&mut n, s, now),
        // HorizontalPodAutoscalers on v2 matter to retirement and after it.
        Stage::Retiring | Stage::Completing => n.hpas = true,
        // A hop's gates are read again before it starts: infrastructure can change on the way.
        // While one is under way only a v3/v4 source's rollback outlook needs ClickHouse (the
        // schema height says whether the hop can be undone): after v2 the hop's reconciles
        // read its Postgres rows alone, and the next hop's start waits for one more read.
        Stage::Finalizing => {
            let in_place = super::in_place::Road::of(s).is_in_place();
            n.hpas = !in_place;
            n.postgres.migrations = true;
            if in_place || !hop_under_way(s) {
                n.postgres.server_version = true;
                n.clickhouse.server = true;
            }
            // What a v4 hop needs beyond versions, read while a v4 hop waits to start (eight
            // more ClickHouse queries: not on the hops that do not need them).
            if !hop_under_way(s) && v4_hop_ahead(s) {
                n.clickhouse.v4_readiness = true;
                n.redis = true;
            }
            (n.postgres.copy_sources, n.clickhouse.copy_counts) = super::in_place::copies::needed(s);
        }
        Stage::Completed => data_model_needs(&mut n, spec, s, now),
        Stage::Provisioning | Stage::RollingBack | Stage::RolledBack => {}
    }
    n
}

/// The data-model road's reads, from its recorded facts: the grants before the dual write,
/// the propagation while it is the data path, the disk before the backfill, its rows while it
/// runs, the counts once and the producers before the cutover.
fn data_model_needs(n: &mut Needs, spec: &LangfuseUpgradeSpec, s: &LangfuseUpgradeStatus, now: Timestamp) {
    use crate::api::DataModel;
    let Some(target) = spec.target.data_model else {
        return;
    };
    let Ok(settings) = crate::controller::validate::validate_spec(spec) else {
        return;
    };
    let dm = s.data_model.clone().unwrap_or_default();
    let committed = dm.cutover_started_at.is_some();
    if target == DataModel::Legacy || committed {
        n.postgres.backfill_rows = committed && dm.cleaned_up_at.is_none();
        return;
    }
    // What v4 needs of ClickHouse before the dual write, its disk before a backfill that will
    // run: not on every look of a dual write that stays (eight queries each time).
    let backfill_ahead = target == DataModel::Events
        && spec.data_model.historic_data == crate::api::HistoricData::Backfill
        && dm.backfill_started_at.is_none();
    n.clickhouse.v4_readiness = dm.dual_since.is_none() || backfill_ahead;
    n.propagation = dm.dual_since.is_some();
    // Redis's version and eviction policy before the dual write; its propagation keys after.
    n.redis = dm.dual_since.is_none();
    n.clickhouse.events.staging = dm.dual_since.is_some();
    n.postgres.backfill_rows = dm.backfill_started_at.is_some();
    if target == DataModel::Events && dm.historic_done_at.is_some() {
        let historic = spec.data_model.historic_data;
        if dm.counts_matched_at.is_none() {
            n.clickhouse.events.counts = super::data_model::count_window(historic, &settings.data_model, &dm);
        }
        n.clickhouse.events.producers_since = jiff::SignedDuration::try_from(settings.data_model.producer_window)
            .ok()
            .map(|w| now - w);
    }
}

/// Preflight reads everything its checks judge.
fn preflight_needs(n: &mut Needs, s: &LangfuseUpgradeStatus) {
    n.hpas = true;
    n.secrets = true;
    n.postgres.server_version = true;
    n.postgres.migrations = true;
    // Only 3.29.0's copies stall on such groups: not scanned for a source on v3/v4.
    if !super::in_place::Road::of(s).is_in_place() {
        n.postgres.same_created_at_scan = Some(crate::migrations::DEFAULT_BATCH_SIZE);
        // v3's Redis and S3 settings come from this spec only on the road from v2.
        n.stores = true;
        n.s3_marker = true;
    }
    n.clickhouse.server = true;
    n.clickhouse.objects = true;
    n.clickhouse.v4_readiness = true;
    n.redis = true;
}

/// Verification counts both databases up to the cut-off (or the late writes covered), the late
/// writes after the copy's start, and the recent window where rows behind the cursor land.
fn verifying_needs(n: &mut Needs, s: &LangfuseUpgradeStatus, now: Timestamp) {
    let until = s.late_writes_covered_until.as_ref().or(s.cutoff.as_ref()).map(|t| t.0);
    n.postgres.counts_until = until;
    n.postgres.late_writes_after = verify::late_window(s).or(until.map(crate::databases::LateWindow::uniform));
    n.postgres.late_writes_until = Some(now);
    n.clickhouse.counts_until = until;
    let recent = until.and(verify::recent_window_start(s));
    n.postgres.recent_after = recent;
    n.clickhouse.recent_after = recent;
}

/// A hop into v4 recorded on the road and not started yet.
fn v4_hop_ahead(s: &LangfuseUpgradeStatus) -> bool {
    s.road.iter().any(|r| {
        r.mode == crate::api::StopMode::InPlace
            && r.started_at.is_none()
            && crate::version::Version::parse(&r.version).is_some_and(|v| v.major >= 4)
            && crate::version::Version::parse(&r.from).is_some_and(|v| v.major < 4)
    })
}

/// An in-place hop started and not yet finished.
fn hop_under_way(s: &LangfuseUpgradeStatus) -> bool {
    s.road
        .iter()
        .any(|r| r.mode == crate::api::StopMode::InPlace && r.started_at.is_some() && r.finished_at.is_none())
}

/// The analysis runs while a rollback to v2 can still be decided: after the shift, before v2
/// is retired, with no rollback under way. The window is read only once the shift is a whole
/// window old, so v2's errors are never judged as v3's.
fn error_ratio(
    spec: &LangfuseUpgradeSpec,
    s: &LangfuseUpgradeStatus,
    now: Timestamp,
) -> Option<crate::analysis::ErrorRatioQuery> {
    let a = spec.strategy.analysis.as_ref()?;
    let settings = crate::controller::validate::analysis(spec).ok()??;
    let shifted = s.traffic_shifted_at.as_ref()?.0;
    let open = s.source_retired_at.is_none()
        && s.completed_at.is_none()
        && s.rolled_back_at.is_none()
        && s.rollback.as_ref().is_none_or(|r| r.started_at.is_none());
    if !open {
        return None;
    }
    let since = now.duration_since(shifted).unsigned_abs();
    Some(crate::analysis::ErrorRatioQuery {
        prometheus_url: a.prometheus_url.clone(),
        query: a.error_ratio_query.clone(),
        window: (since >= settings.window).then_some(settings.window),
        step: crate::analysis::step(settings.window),
    })
}

/// The stage of an upgrade with this spec and status (see [`stage::stage`]).
pub fn stage_of(spec: &LangfuseUpgradeSpec, status: &LangfuseUpgradeStatus) -> Stage {
    let moves_on = spec
        .target
        .final_version
        .as_ref()
        .is_some_and(|v| *v != spec.target.version);
    stage::stage(status, moves_on, super::in_place::Road::of(status).is_in_place())
}
