//! What `kubectl lfu status` shows, computed from the object alone (and `now`): pure, so the
//! same view renders as text, JSON or YAML and is tested on fixed statuses.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use crate::api::conditions as cond;
use crate::api::{CheckResult, LangfuseUpgrade, LangfuseUpgradeStatus, Phase, StopMode, StopState};

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    /// Seconds in this phase, from the fact that started it (absent when no fact says).
    pub phase_seconds: Option<i64>,
    pub source_version: Option<String>,
    pub target_version: Option<String>,
    pub destination: String,
    pub road: Vec<StopView>,
    /// v4's data-model road, when `spec.target.dataModel` asks for one.
    pub data_model: Option<super::data_model::DataModelView>,
    /// The operator's own words on what it waits for (the Ready condition).
    pub waiting_for: String,
    pub steps: Vec<StepView>,
    pub checks: Vec<CheckView>,
    pub migrations: Vec<MigrationView>,
    pub remedies: Vec<(String, i32)>,
    pub verification: Vec<VerificationView>,
    pub rollback_possible: bool,
    pub rollback_note: Option<String>,
    /// What a person may do now, as commands.
    pub you_may: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StopView {
    pub from: String,
    pub version: String,
    pub in_place: bool,
    pub state: StopState,
    pub seconds: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepView {
    pub name: String,
    pub done: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckView {
    pub name: String,
    pub result: CheckResult,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationView {
    pub name: String,
    pub state: String,
    pub percent: Option<i32>,
    /// Average since the migrations were enabled, from the copy's progress and the table's size.
    pub rows_per_second: Option<i64>,
    pub eta_seconds: Option<i64>,
    pub batch_size: Option<i64>,
    pub failed_reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerificationView {
    pub table: String,
    pub postgres: i64,
    pub clickhouse: i64,
    pub verdict: String,
}

const STEPS: [&str; 8] = [
    cond::PREFLIGHT_PASSED,
    cond::TRAFFIC_SHIFTED,
    cond::MIGRATIONS_COMPLETE,
    cond::VERIFIED,
    cond::SOURCE_RETIRED,
    cond::ROAD_FOLLOWED,
    cond::HANDED_OFF,
    cond::DATA_MODEL,
];

fn secs(from: &Time, to: Timestamp) -> i64 {
    (to.as_second() - from.0.as_second()).max(0)
}

/// The fact that started the current phase.
fn phase_start(s: &LangfuseUpgradeStatus, phase: Option<Phase>) -> Option<&Time> {
    let current_stop = s
        .road
        .iter()
        .find(|r| r.state == StopState::Current)
        .and_then(|r| r.started_at.as_ref());
    match phase? {
        Phase::Provisioning | Phase::AwaitingPromotion | Phase::ShiftingTraffic => s.provisioning_started_at.as_ref(),
        Phase::Draining => s.traffic_shifted_at.as_ref(),
        Phase::Migrating => s.cutoff.as_ref(),
        Phase::Verifying => s.migrations_finished_at.as_ref(),
        Phase::RetiringSource => s.verified_at.as_ref(),
        Phase::Finalizing => current_stop.or(s.source_retired_at.as_ref()),
        Phase::Completed => s.completed_at.as_ref(),
        Phase::RolledBack => s.rolled_back_at.as_ref(),
        Phase::RollingBack => s.rollback.as_ref().and_then(|r| r.started_at.as_ref()),
        Phase::HandingOff => s.chart_handoff.as_ref().and_then(|h| h.protected_at.as_ref()),
        _ => s.condition(cond::READY).map(|c| &c.last_transition_time),
    }
}

pub fn status_view(u: &LangfuseUpgrade, now: Timestamp) -> StatusView {
    let s = u.status.clone().unwrap_or_default();
    let name = u.metadata.name.clone().unwrap_or_default();
    let ready = s.condition(cond::READY);
    let steps = STEPS
        .iter()
        .filter_map(|t| s.condition(t))
        .map(|c| StepView {
            name: c.type_.clone(),
            done: c.status == "True",
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect();
    let enabled = s
        .migrations_enabled_at
        .as_ref()
        .map(|t| secs(t, now))
        .filter(|d| *d > 0);
    let migrations = s
        .migrations
        .iter()
        .map(|m| {
            let done_rows = match (percent(m), m.estimated_rows) {
                (Some(p), Some(n)) => Some(n * p as i64 / 100),
                _ => None,
            };
            let rate = match (done_rows, enabled) {
                (Some(rows), Some(d)) if rows > 0 => Some(rows / d),
                _ => None,
            };
            let eta = match (rate, m.estimated_rows, done_rows) {
                (Some(r), Some(n), Some(done)) if r > 0 && m.state == "running" => Some((n - done).max(0) / r),
                _ => None,
            };
            MigrationView {
                name: m.name.clone(),
                state: m.state.clone(),
                percent: m.progress_percent,
                rows_per_second: rate.filter(|_| m.state != "dormant"),
                eta_seconds: eta,
                batch_size: m.batch_size,
                failed_reason: m.failed_reason.clone(),
            }
        })
        .collect();
    let rollback = s.rollback.clone().unwrap_or_default();
    StatusView {
        namespace: u.metadata.namespace.clone().unwrap_or_default(),
        phase: s.phase.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        phase_seconds: phase_start(&s, s.phase).map(|t| secs(t, now)),
        source_version: s.source_version.clone(),
        target_version: s.target_version.clone(),
        destination: u
            .spec
            .target
            .final_version
            .clone()
            .unwrap_or_else(|| u.spec.target.version.clone()),
        road: s
            .road
            .iter()
            .map(|r| StopView {
                from: r.from.clone(),
                version: r.version.clone(),
                in_place: r.mode == StopMode::InPlace,
                state: r.state,
                seconds: match (&r.started_at, &r.finished_at) {
                    (Some(a), Some(b)) => Some(secs(a, b.0)),
                    (Some(a), None) => Some(secs(a, now)),
                    _ => None,
                },
            })
            .collect(),
        data_model: super::data_model::data_model_view(u),
        waiting_for: ready.map(|c| c.message.clone()).unwrap_or_default(),
        steps,
        checks: s
            .checks
            .iter()
            .map(|c| CheckView {
                name: c.name.clone(),
                result: c.result,
                message: c.message.clone(),
            })
            .collect(),
        migrations,
        remedies: s.remedies.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        verification: s
            .verification
            .iter()
            .map(|v| VerificationView {
                table: v.table.clone(),
                postgres: v.postgres,
                clickhouse: v.clickhouse,
                verdict: v.verdict.clone(),
            })
            .collect(),
        rollback_possible: rollback.possible,
        rollback_note: rollback.loss_if_rolled_back.clone(),
        you_may: you_may(u, &s, &name),
        name,
    }
}

/// What a person may do now, as the commands that do it.
fn you_may(u: &LangfuseUpgrade, s: &LangfuseUpgradeStatus, name: &str) -> Vec<String> {
    let ns = u.metadata.namespace.clone().unwrap_or_default();
    let cmd = |verb: &str| format!("kubectl lfu -n {ns} {verb} {name}");
    let reason = s.condition(cond::READY).map(|c| c.reason.as_str()).unwrap_or_default();
    let mut out = Vec::new();
    match s.phase {
        Some(Phase::AwaitingPromotion) => out.push(format!("{}    shift traffic to v3", cmd("approve"))),
        Some(Phase::Paused) => out.push(format!("{}     act again", cmd("resume"))),
        Some(Phase::Completed | Phase::RolledBack) => {}
        _ if reason == "AbortTooLate" => out.push(format!(
            "kubectl -n {ns} patch lfu {name} --type merge -p '{{\"spec\":{{\"abort\":false}}}}'    go on instead"
        )),
        Some(_) if !u.spec.paused => out.push(format!("{}      stop acting (observation goes on)", cmd("pause"))),
        _ => {}
    }
    let can_hand_off = s.handoff.as_deref().is_some_and(|h| h.starts_with("possible"));
    if s.phase == Some(Phase::Completed) && u.spec.handoff.is_none() && s.chart_handoff.is_none() && can_hand_off {
        let chart = match s.target_version.as_deref().and_then(crate::version::Version::parse) {
            Some(v) if v.major >= 4 => "2.0.0",
            _ => "1.5.41",
        };
        out.push(format!(
            "kubectl lfu -n {ns} handoff {name} --chart {chart} > values.yaml    back to the official chart (README: the day after)"
        ));
    }
    if reason == "SelectorReverted" {
        out.push("restore the selector with the command in the message above".into());
    }
    if s.rollback.as_ref().is_some_and(|r| r.possible) && !matches!(s.phase, Some(Phase::Completed | Phase::RolledBack))
    {
        out.push(format!("{}      roll back (asks first)", cmd("abort")));
    }
    out
}

/// A finished copy is at 100 % whatever its last estimate said.
fn percent(m: &crate::api::MigrationStatus) -> Option<i32> {
    match m.state.as_str() {
        "finished" => Some(100),
        _ => m.progress_percent,
    }
}
