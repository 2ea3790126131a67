//! Prometheus metrics, served on `/metrics`. Per-upgrade series are derived from the status the
//! reconcile wrote (one source of truth), and removed when the upgrade is gone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{LangfuseUpgradeStatus, Phase, RemedyKind};
use crate::databases::Remedy;
use crate::migrations::RowState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    namespace: String,
    name: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    namespace: String,
    name: String,
    r#type: String,
    status: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MigrationLabels {
    namespace: String,
    name: String,
    migration: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemedyLabels {
    namespace: String,
    name: String,
    remedy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    namespace: String,
    name: String,
    check: String,
    result: String,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The series written for one upgrade, so stale ones can be removed.
#[derive(Default)]
struct Written {
    conditions: Vec<ConditionLabels>,
    migrations: Vec<MigrationLabels>,
    checks: Vec<CheckLabels>,
    /// Rows copied (estimate) and when, per migration: the base of rows/s and ETA.
    copied: HashMap<String, (f64, Instant)>,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Family<KindLabels, Counter>,
    duration: Histogram,
    phase: Family<PhaseLabels, Gauge>,
    condition: Family<ConditionLabels, Gauge>,
    progress: Family<MigrationLabels, FloatGauge>,
    rows_per_second: Family<MigrationLabels, FloatGauge>,
    eta_seconds: Family<MigrationLabels, FloatGauge>,
    remedies: Family<RemedyLabels, Counter>,
    preflight: Family<CheckLabels, Gauge>,
    written: Mutex<HashMap<(String, String), Written>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Counter::default();
        let failures = Family::<KindLabels, Counter>::default();
        // 5 ms .. ~20 s: a reconcile is a handful of API calls and, at times, database queries.
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let m = Self {
            reconciles: reconciles.clone(),
            failures: failures.clone(),
            duration: duration.clone(),
            phase: Family::default(),
            condition: Family::default(),
            progress: Family::default(),
            rows_per_second: Family::default(),
            eta_seconds: Family::default(),
            remedies: Family::default(),
            preflight: Family::default(),
            written: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register("lfu_reconciles", "Reconciles run", reconciles);
        registry.register(
            "lfu_reconcile_failures",
            "Reconciles that failed, by error kind",
            failures,
        );
        registry.register("lfu_reconcile_duration_seconds", "Time one reconcile took", duration);
        registry.register(
            "lfu_upgrade_phase",
            "1 for the upgrade's current phase, 0 for the others",
            m.phase.clone(),
        );
        registry.register(
            "lfu_upgrade_condition",
            "1 for each current condition of the upgrade",
            m.condition.clone(),
        );
        registry.register(
            "lfu_migration_progress_ratio",
            "Share of a background migration copied (0..1), from its cursor",
            m.progress.clone(),
        );
        registry.register(
            "lfu_migration_rows_per_second",
            "Rows a background migration copies per second (Postgres row estimate x progress)",
            m.rows_per_second.clone(),
        );
        registry.register(
            "lfu_migration_eta_seconds",
            "Estimated seconds until a background migration finishes at its current rate",
            m.eta_seconds.clone(),
        );
        registry.register("lfu_remedies", "Remedies the operator applied", m.remedies.clone());
        registry.register(
            "lfu_preflight_check",
            "1 per preflight check line, by result",
            m.preflight.clone(),
        );
        Self { registry, ..m }
    }

    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn failed(&self, kind: &str) {
        self.reconciles.inc();
        self.failures
            .get_or_create(&KindLabels { kind: kind.to_string() })
            .inc();
    }

    /// Count the remedies among the writes just made.
    pub fn remedies_applied<'a>(
        &self,
        namespace: &str,
        name: &str,
        executed: impl IntoIterator<Item = &'a Remedy>,
        restarts_before: i32,
        restarts_after: i32,
    ) {
        let bump = |remedy: &str, n: u64| {
            if n > 0 {
                let labels = RemedyLabels {
                    namespace: namespace.into(),
                    name: name.into(),
                    remedy: remedy.into(),
                };
                self.remedies.get_or_create(&labels).inc_by(n);
            }
        };
        for r in executed {
            bump(
                match r {
                    Remedy::SetBatchSize { .. } => "batchSize",
                    Remedy::ClearFailure { .. } => "clearFailure",
                    Remedy::RerunWindow { .. } => "rerunWindow",
                    Remedy::FinishOrphan { .. } => "finishOrphan",
                    Remedy::ResetBackfillRow { .. } => "resetBackfillRow",
                },
                1,
            );
        }
        bump(
            &RemedyKind::WorkerRestart.key(),
            restarts_after.saturating_sub(restarts_before).max(0) as u64,
        );
    }

    /// Set every per-upgrade series from the status just written.
    pub fn observe_status(&self, namespace: &str, name: &str, status: &LangfuseUpgradeStatus, now: Instant) {
        let (ns, n) = (namespace.to_string(), name.to_string());
        for phase in Phase::ALL {
            let labels = PhaseLabels {
                namespace: ns.clone(),
                name: n.clone(),
                phase: phase.to_string(),
            };
            self.phase
                .get_or_create(&labels)
                .set(i64::from(status.phase == Some(phase)));
        }
        let mut written = self.written.lock().expect("metrics lock");
        let w = written.entry((ns.clone(), n.clone())).or_default();

        let conditions: Vec<ConditionLabels> = status
            .conditions
            .iter()
            .map(|c| ConditionLabels {
                namespace: ns.clone(),
                name: n.clone(),
                r#type: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
            })
            .collect();
        replace(&self.condition, &mut w.conditions, conditions);

        let checks: Vec<CheckLabels> = status
            .checks
            .iter()
            .map(|c| CheckLabels {
                namespace: ns.clone(),
                name: n.clone(),
                check: c.name.clone(),
                result: format!("{:?}", c.result),
            })
            .collect();
        replace(&self.preflight, &mut w.checks, checks);

        let mut migrations = Vec::new();
        for m in &status.migrations {
            let labels = MigrationLabels {
                namespace: ns.clone(),
                name: n.clone(),
                migration: m.name.clone(),
            };
            let ratio = f64::from(m.progress_percent.unwrap_or(0)) / 100.0;
            let ratio = if m.state == RowState::Finished.as_str() {
                1.0
            } else {
                ratio
            };
            self.progress.get_or_create(&labels).set(ratio);
            let (rate, eta) = match m.estimated_rows {
                Some(total) if total > 0 => {
                    let copied = ratio * total as f64;
                    let rate = match w.copied.get(&m.name) {
                        Some((before, at)) if now > *at && copied >= *before => {
                            (copied - before) / now.duration_since(*at).as_secs_f64()
                        }
                        _ => 0.0,
                    };
                    w.copied.insert(m.name.clone(), (copied, now));
                    let left = total as f64 - copied;
                    let eta = if left <= 0.0 {
                        0.0
                    } else if rate > 0.0 {
                        left / rate
                    } else {
                        f64::NAN
                    };
                    (rate, eta)
                }
                _ => (0.0, if ratio >= 1.0 { 0.0 } else { f64::NAN }),
            };
            self.rows_per_second.get_or_create(&labels).set(rate);
            self.eta_seconds.get_or_create(&labels).set(eta);
            migrations.push(labels);
        }
        for old in w.migrations.iter().filter(|l| !migrations.contains(l)) {
            self.progress.remove(old);
            self.rows_per_second.remove(old);
            self.eta_seconds.remove(old);
        }
        w.migrations = migrations;
    }

    /// The upgrade is gone: drop its series.
    pub fn forget(&self, namespace: &str, name: &str) {
        for phase in Phase::ALL {
            self.phase.remove(&PhaseLabels {
                namespace: namespace.into(),
                name: name.into(),
                phase: phase.to_string(),
            });
        }
        if let Some(w) = self
            .written
            .lock()
            .expect("metrics lock")
            .remove(&(namespace.to_string(), name.to_string()))
        {
            for l in &w.conditions {
                self.condition.remove(l);
            }
            for l in &w.checks {
                self.preflight.remove(l);
            }
            for l in &w.migrations {
                self.progress.remove(l);
                self.rows_per_second.remove(l);
                self.eta_seconds.remove(l);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Set `new` label sets to 1 and remove those written last time but not now.
fn replace<L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug>(
    family: &Family<L, Gauge>,
    written: &mut Vec<L>,
    new: Vec<L>,
) {
    for old in written.iter().filter(|l| !new.contains(l)) {
        family.remove(old);
    }
    for l in &new {
        family.get_or_create(l).set(1);
    }
    *written = new;
}

#[cfg(test)]
mod tests;
