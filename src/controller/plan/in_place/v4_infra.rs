//! What a v4 hop needs beyond the versions (facts check D5, D9): Redis with `noeviction`,
//! ClickHouse in UTC, the system tables v4 reads, the cluster grants where the cluster is on
//! and the backfill's grants where it will run; each unmet one with the statement that fixes it.

use crate::api::WaivableCheck;
use crate::controller::observed::Reading;
use crate::controller::plan::Planner;
use crate::databases::stores::redis_major_minor;
use crate::resources::deployments::views::{Role, langfuse_container};
use crate::resources::v4_env;
use crate::verify::readiness::V4Readiness;

/// The table the historic backfill sorts through (its grants: the guide's backfill section).
const BACKFILL_TABLE: &str = "observations_pid_tid_sorting";

/// Time zone names that are UTC.
const UTC: [&str; 6] = ["UTC", "Etc/UTC", "Etc/UCT", "UCT", "Universal", "Etc/Universal"];

/// Who the statements grant to: the operator never prints the user its Secret holds.
const WHO: &str = "<user>";

/// The unmet needs of a hop to `to` (a v4 release) whose Redis minimum is `redis_min`.
pub(crate) fn unmet(p: &Planner, to: crate::version::Version, redis_min: &str) -> Vec<String> {
    let mut unmet = redis(p, to, redis_min);
    if let Reading::Answered(ch) = &p.obs.clickhouse {
        match &ch.v4 {
            Reading::Answered(r) => unmet.extend(clickhouse(p, r)),
            Reading::Failed(e) => unmet.push(format!(
                "what Langfuse {to} needs of ClickHouse could not be read ({e}): check the time zone, system-table and cluster grants by hand"
            )),
            Reading::NotAsked => {}
        }
    }
    unmet
}

fn redis(p: &Planner, to: crate::version::Version, min: &str) -> Vec<String> {
    let waived = p.spec.preflight.skip.contains(&WaivableCheck::Redis);
    let need = redis_major_minor(min);
    match &p.obs.redis {
        Reading::Answered(facts) => {
            let mut unmet = Vec::new();
            if let (Some(have), Some(need)) = (redis_major_minor(&facts.version), need)
                && have < need
            {
                unmet.push(format!(
                    "Redis {} is older than {min}, the minimum of Langfuse {to}: upgrade Redis first",
                    facts.version
                ));
            }
            if let Some(policy) = facts.eviction_policy.as_deref().filter(|p| *p != "noeviction") {
                unmet.push(format!(
                    "Redis runs maxmemory-policy {policy}: Langfuse needs noeviction (its queues lose jobs when keys are evicted); set maxmemory-policy noeviction (redis.conf, CONFIG SET, or your provider's parameter group)"
                ));
            }
            unmet
        }
        Reading::Failed(e) if !waived => vec![format!(
            "Redis could not be checked for Langfuse {to} ({e}); fix spec.redis, or add Redis to spec.preflight.skip where the operator cannot reach what Langfuse's pods can"
        )],
        // Not named in spec.redis (a source the operator did not deploy): preflight warns.
        _ => Vec::new(),
    }
}

fn clickhouse(p: &Planner, r: &V4Readiness) -> Vec<String> {
    let mut unmet = Vec::new();
    if !UTC.contains(&r.timezone.as_str()) {
        unmet.push(format!(
            "ClickHouse runs in time zone {}: Langfuse requires UTC (set <timezone>UTC</timezone> in the server configuration and restart it)",
            r.timezone
        ));
    }
    let mut grants: Vec<String> = r
        .denied_tables
        .iter()
        .map(|t| format!("GRANT SELECT ON system.{t} TO {WHO}"))
        .collect();
    if cluster_enabled(p) {
        if !r.grants.gives_on(&["CLUSTER"], None, None) {
            grants.push(format!("GRANT CLUSTER ON *.* TO {WHO}"));
        }
        if !r.grants.gives_source(&["READ"], "REMOTE", &["REMOTE", "SOURCES"]) {
            grants.push(format!("GRANT READ ON REMOTE TO {WHO}"));
        }
    }
    if backfill_open(p) {
        let db = p.spec.clickhouse.database.as_deref().unwrap_or("default");
        let needs: [(&str, &[&str]); 3] = [
            (
                "ALTER SETTINGS",
                &["ALTER SETTINGS", "ALTER MODIFY SETTING", "ALTER TABLE", "ALTER"],
            ),
            ("SYSTEM SYNC REPLICA", &["SYSTEM SYNC REPLICA", "SYSTEM"]),
            ("SYSTEM MERGES", &["SYSTEM MERGES", "SYSTEM"]),
        ];
        for (grant, names) in needs {
            if !r.grants.gives_on(names, Some(db), Some(BACKFILL_TABLE)) {
                grants.push(format!("GRANT {grant} ON {db}.{BACKFILL_TABLE} TO {WHO}"));
            }
        }
    }
    if !grants.is_empty() {
        unmet.push(format!(
            "the ClickHouse user lacks what Langfuse v4 uses beyond its database; as an admin run: {} ({WHO}: the user of spec.clickhouse's Secret)",
            grants.join("; ")
        ));
    }
    unmet
}

/// As Langfuse's containers run it: the web container's value where set, else the spec's.
fn cluster_enabled(p: &Planner) -> bool {
    p.obs
        .web
        .as_ref()
        .and_then(|d| langfuse_container(d, Role::Web))
        .and_then(|c| {
            c.env
                .as_ref()?
                .iter()
                .find(|e| e.name == "CLICKHOUSE_CLUSTER_ENABLED")
                .cloned()
        })
        .and_then(|e| e.value)
        .map(|v| v.eq_ignore_ascii_case("true"))
        .unwrap_or(p.spec.clickhouse.cluster_enabled)
}

/// The historic backfill will run on the v4 worker as it will be started.
pub(super) fn backfill_open(p: &Planner) -> bool {
    super::flags::v4_values(p)
        .iter()
        .any(|(n, v)| *n == v4_env::HISTORIC_BACKFILL && v == "true")
}

/// The free disk against what the backfill writes (about three times `observations`, the
/// guide's headroom), as a line a person reads: `None` until both figures are read.
pub(crate) fn disk_headroom(p: &Planner) -> Option<(bool, String)> {
    let r = p.obs.clickhouse.answered()?.v4.answered()?;
    let (free, observations) = (r.free_bytes?, r.observations_bytes?);
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let enough = free >= observations.saturating_mul(3);
    let backfill = match backfill_open(p) {
        true => "the historic backfill runs with the v4 hop",
        false => "for the historic backfill, when you turn it on after the v4 hop",
    };
    Some((
        enough,
        format!(
            "ClickHouse has {:.1} GiB free; observations takes {:.1} GiB and the backfill writes about three times that ({:.1} GiB), {backfill}",
            gib(free),
            gib(observations),
            gib(observations.saturating_mul(3))
        ),
    ))
}
