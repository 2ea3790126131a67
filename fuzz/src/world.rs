//! A small simulated cluster for the fuzz bodies: a Langfuse v2.95.9 as the v2-era chart lays it
//! out, the operator's writes applied as the apiserver and the Deployment controller would, and
//! an upgrade walked from nothing to `Migrating` once (then cloned for each input).

use std::sync::OnceLock;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use langfuse_upgrade_operator::api::{LangfuseUpgrade, LangfuseUpgradeSpec, LangfuseUpgradeStatus, Phase};
use langfuse_upgrade_operator::controller::observe::{Endpoint, Observed, Reading};
use langfuse_upgrade_operator::controller::plan::{Action, Decision, Needs, look_ahead, needs, plan, second_look};
use langfuse_upgrade_operator::controller::report::next_status;
use langfuse_upgrade_operator::databases::{Remedy, SecretString};
use langfuse_upgrade_operator::migrations::{MigrationRow, PostgresFacts, TableCounts, V3_MIGRATIONS};
use langfuse_upgrade_operator::resources::labels::{Labels, selector_matches};
use langfuse_upgrade_operator::verify::ClickHouseFacts;
use serde_json::json;

/// Simulated seconds from the decision's `now` of the other bodies.
fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("in range")
}

fn chart_selector() -> Labels {
    Labels::from([
        ("app.kubernetes.io/name".to_string(), "langfuse".to_string()),
        ("app.kubernetes.io/instance".to_string(), "prod".to_string()),
    ])
}

fn deployment(name: &str, image: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": "langfuse", "generation": 1,
            "labels": {"app.kubernetes.io/name": "langfuse", "app.kubernetes.io/instance": "prod",
                       "app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "langfuse-0.8.0"}
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": chart_selector()},
            "template": {
                "metadata": {"labels": chart_selector()},
                "spec": {"containers": [{
                    "name": "langfuse",
                    "image": image,
                    "ports": [{"name": "http", "containerPort": 3000, "protocol": "TCP"}],
                    "env": [
                        {"name": "NODE_ENV", "value": "production"},
                        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "prod-langfuse-db", "key": "url"}}},
                        {"name": "NEXTAUTH_URL", "value": "https://langfuse.example.com"},
                        {"name": "NEXTAUTH_SECRET", "valueFrom": {"secretKeyRef": {"name": "prod-langfuse-nextauth", "key": "nextauth-secret"}}},
                        {"name": "SALT", "valueFrom": {"secretKeyRef": {"name": "prod-langfuse-salt", "key": "salt"}}}
                    ]
                }]}
            }
        }
    }))
    .map(rolled_out)
    .expect("a Deployment")
}

fn service() -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "prod-langfuse", "namespace": "langfuse"},
        "spec": {
            "selector": chart_selector(),
            "ports": [{"name": "http", "port": 3000, "targetPort": "http"}]
        }
    }))
    .expect("a Service")
}

/// As the Deployment controller leaves an applied Deployment once it has rolled out.
fn rolled_out(mut d: Deployment) -> Deployment {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    d.metadata.generation = Some(1);
    d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(replicas),
        ready_replicas: Some(replicas),
        available_replicas: Some(replicas),
        updated_replicas: Some(replicas),
        ..Default::default()
    });
    d
}

fn queued_rows() -> Vec<MigrationRow> {
    V3_MIGRATIONS
        .iter()
        .map(|name| MigrationRow {
            name: name.to_string(),
            finished_at: None,
            failed_at: None,
            failed_reason: None,
            locked_at: None,
            cursor: None,
            oldest_row: None,
            batch_size: None,
            env_gate: None,
            taken: false,
        })
        .collect()
}

fn counts() -> TableCounts {
    TableCounts {
        traces: 1000,
        observations: 3000,
        scores: 500,
    }
}

fn clickhouse() -> ClickHouseFacts {
    ClickHouseFacts {
        version: Some("24.8.4.13".into()),
        schema: Some((8, false)),
        counts: None,
        recent_counts: None,
        missing_tables: Vec::new(),
        grants: Reading::NotAsked,
        copy_counts: None,
        v4: Reading::NotAsked,
        events: Reading::NotAsked,
    }
}

/// The clusters a spec is planned against: nothing read yet, an untouched v2, a v3 source.
pub fn clusters() -> &'static [Observed] {
    static CLUSTERS: OnceLock<Vec<Observed>> = OnceLock::new();
    CLUSTERS.get_or_init(|| {
        let healthy = PostgresFacts {
            server_version_num: Some(150008),
            migrations: queued_rows(),
            ..Default::default()
        };
        let v2 = Observed {
            source: Some(deployment("prod-langfuse", "ghcr.io/langfuse/langfuse:2.95.9", 2)),
            service: Some(service()),
            endpoints: vec![
                Endpoint {
                    pod: Some("prod-langfuse-abc".into()),
                    ready: true,
                },
                Endpoint {
                    pod: Some("prod-langfuse-def".into()),
                    ready: true,
                },
            ],
            postgres: Reading::Answered(healthy),
            postgres_url: Some(SecretString::new("postgres://langfuse@postgres/langfuse")),
            clickhouse: Reading::Answered(clickhouse()),
            ..Default::default()
        };
        let v3 = Observed {
            source: Some(deployment("prod-langfuse", "ghcr.io/langfuse/langfuse:3.100.0", 2)),
            worker: Some(deployment(
                "prod-langfuse-worker",
                "ghcr.io/langfuse/langfuse-worker:3.100.0",
                1,
            )),
            ..v2.clone()
        };
        vec![Observed::default(), v2, v3]
    })
}

/// The simulated cluster and the upgrade in it.
#[derive(Clone)]
struct World {
    upgrade: LangfuseUpgrade,
    cluster: Observed,
    /// Simulated seconds (see [`t`]).
    now: i64,
    rows: Vec<MigrationRow>,
}

impl World {
    fn new() -> Self {
        // Checks of stores this simulation does not model (Redis and S3 reachability, where the
        // operator has them), waived; those it models must pass.
        let waived: Vec<&str> = ["Redis", "S3"]
            .into_iter()
            .filter(|c| serde_json::from_value::<langfuse_upgrade_operator::api::WaivableCheck>(json!(c)).is_ok())
            .collect();
        let spec: LangfuseUpgradeSpec = serde_json::from_value(json!({
            "source": {"deployment": "prod-langfuse", "service": "prod-langfuse"},
            "clickhouse": {
                "url": "http://clickhouse:8123", "migrationUrl": "clickhouse://clickhouse:9000",
                "userSecretRef": {"name": "clickhouse", "key": "user"},
                "passwordSecretRef": {"name": "clickhouse", "key": "password"}
            },
            "redis": {"connectionStringSecretRef": {"name": "redis", "key": "url"}},
            "s3": {"bucket": "langfuse-events"},
            "backup": {"acknowledged": true, "reference": "snap-1"},
            "preflight": {"skip": waived}
        }))
        .expect("the example spec");
        let mut upgrade = LangfuseUpgrade::new("to-v3", spec);
        upgrade.metadata.namespace = Some("langfuse".into());
        upgrade.metadata.uid = Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427".into());
        upgrade.metadata.generation = Some(1);
        let mut cluster = clusters()[1].clone();
        cluster.postgres = Reading::NotAsked;
        cluster.clickhouse = Reading::NotAsked;
        World {
            upgrade,
            cluster,
            now: 0,
            rows: queued_rows(),
        }
    }

    fn status(&self) -> LangfuseUpgradeStatus {
        self.upgrade.status.clone().unwrap_or_default()
    }

    /// What the observation brings, given what the plan says it needs.
    fn observe(&self, n: &Needs) -> Observed {
        if n.nothing {
            return Observed::default();
        }
        let mut obs = self.cluster.clone();
        if !n.postgres.is_empty() {
            obs.postgres = Reading::Answered(PostgresFacts {
                server_version_num: Some(150008),
                migrations: if n.postgres.migrations {
                    self.rows.clone()
                } else {
                    Vec::new()
                },
                newest_write: n.postgres.newest_write.then(|| t(-600)),
                counts: n.postgres.counts_until.map(|_| counts()),
                late_writes: n.postgres.late_writes_after.map(|_| TableCounts::default()),
                ..Default::default()
            });
        }
        if !n.clickhouse.is_empty() {
            obs.clickhouse = Reading::Answered(ClickHouseFacts {
                counts: n.clickhouse.counts_until.map(|_| counts()),
                ..clickhouse()
            });
        }
        if n.stores {
            obs.redis = Reading::Answered(langfuse_upgrade_operator::databases::RedisFacts {
                version: "7.2.4".into(),
                tls: false,
                eviction_policy: Some("noeviction".into()),
            });
            obs.s3 = Reading::Answered(langfuse_upgrade_operator::databases::S3Facts { marker: None });
        }
        obs
    }

    /// One reconcile: observe, plan, apply the writes, write the status (through the API).
    fn step(&mut self) -> Decision {
        let n = needs(&self.upgrade, t(self.now));
        let obs = self.observe(&n);
        let mut decision = plan(&self.upgrade, &obs, t(self.now));
        // As the reconcile: one more look when the decision only records facts.
        if let Some(wider) = look_ahead(&self.upgrade, &decision, &n, t(self.now)) {
            if let Some((_, second)) = second_look(&self.upgrade, &obs, self.observe(&wider), t(self.now)) {
                decision = second;
            }
        }
        for action in &decision.actions {
            if *action == Action::RecordFacts {
                self.record(&decision);
            } else {
                self.apply(action);
            }
        }
        self.record(&decision);
        self.settle();
        decision
    }

    fn record(&mut self, decision: &Decision) {
        let status = next_status(&self.upgrade, decision, t(self.now));
        let stored = serde_json::to_value(&status).expect("a status serializes");
        self.upgrade.status = Some(serde_json::from_value(stored).expect("a stored status reads back"));
    }

    fn apply(&mut self, action: &Action) {
        let c = &mut self.cluster;
        match action {
            Action::RecordFacts => {}
            Action::AddFinalizer => {
                self.upgrade.metadata.finalizers = Some(vec![langfuse_upgrade_operator::api::FINALIZER.into()])
            }
            Action::RemoveFinalizer => self.upgrade.metadata.finalizers = Some(Vec::new()),
            Action::ApplyDeployment(d) => {
                let d = rolled_out(d.as_ref().clone());
                if d.metadata.name.as_deref().is_some_and(|n| n.ends_with("-web")) {
                    c.web = Some(d);
                } else {
                    c.worker = Some(d);
                }
            }
            Action::DeleteDeployment(name) | Action::ReleaseDeployment(name) | Action::RetireDeployment(name) => {
                for slot in [&mut c.web, &mut c.worker] {
                    if slot.as_ref().and_then(|d| d.metadata.name.as_ref()) == Some(name) {
                        *slot = None;
                    }
                }
            }
            Action::ApplySelector { selector } => {
                if let Some(spec) = c.service.as_mut().and_then(|s| s.spec.as_mut()) {
                    spec.selector = Some(selector.clone());
                }
            }
            Action::ScaleSource(n) => {
                if let Some(source) = c.source.as_mut() {
                    if let Some(spec) = source.spec.as_mut() {
                        spec.replicas = Some(*n);
                    }
                    *source = rolled_out(source.clone());
                }
            }
            Action::DeleteSource => c.source = None,
            Action::Remedy(remedy) => {
                let name = match remedy {
                    Remedy::SetBatchSize { name, .. }
                    | Remedy::ClearFailure { name }
                    | Remedy::RerunWindow { name, .. }
                    | Remedy::FinishOrphan { name, .. }
                    | Remedy::ResetBackfillRow { name, .. } => name,
                };
                for row in self.rows.iter_mut().filter(|r| &r.name == name) {
                    match remedy {
                        Remedy::SetBatchSize { size, .. } => row.batch_size = Some(*size),
                        Remedy::ClearFailure { .. } => {
                            row.failed_at = None;
                            row.failed_reason = None;
                        }
                        Remedy::RerunWindow { .. } => {
                            row.cursor = None;
                            row.finished_at = None;
                            row.failed_at = None;
                            row.failed_reason = None;
                        }
                        Remedy::FinishOrphan { .. } => row.finished_at = Some(t(self.now)),
                        Remedy::ResetBackfillRow { .. } => {
                            row.failed_at = None;
                            row.failed_reason = None;
                            row.finished_at = None;
                        }
                    }
                }
            }
            Action::SetImage(_) | Action::SetFlags(_) | Action::Protect(_) => {}
        }
    }

    /// Endpoints and pods follow the objects, as the EndpointSlice controller makes them.
    fn settle(&mut self) {
        let c = &mut self.cluster;
        let selector = c
            .service
            .as_ref()
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        let replicas = |d: &Option<Deployment>| d.as_ref().and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas);
        let mut endpoints = Vec::new();
        if selector_matches(&selector, &chart_selector()) {
            endpoints.extend((0..replicas(&c.source).unwrap_or(0)).map(|i| Endpoint {
                pod: Some(format!("v2-{i}")),
                ready: true,
            }));
        }
        c.v3_web_pods.clear();
        if let Some(web) = &c.web {
            let web_pods = replicas(&c.web).unwrap_or(0);
            c.v3_web_pods.extend((0..web_pods).map(|i| format!("web-{i}")));
            let labels = web
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            if selector_matches(&selector, &labels) {
                endpoints.extend((0..web_pods).map(|i| Endpoint {
                    pod: Some(format!("web-{i}")),
                    ready: true,
                }));
            }
        }
        c.endpoints = endpoints;
    }
}

/// The upgrade walked from nothing until the migrations run (computed once), or the phases it
/// went through instead (the simulation no longer matches the plan: see [`simulation`]).
fn migrating() -> &'static Result<World, String> {
    static MIGRATING: OnceLock<Result<World, String>> = OnceLock::new();
    MIGRATING.get_or_init(|| {
        let mut w = World::new();
        let mut phases = Vec::new();
        for _ in 0..200 {
            let d = w.step();
            if phases.last() != Some(&d.phase) {
                phases.push(d.phase);
            }
            if d.phase == Phase::Migrating && !w.status().migrations.is_empty() {
                return Ok(w);
            }
            w.now += d.requeue.as_secs().clamp(1, 60) as i64;
        }
        let why = w.upgrade.status.as_ref().and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.message.clone())
        });
        Err(format!(
            "the simulated upgrade never reached Migrating: phases {phases:?}, last {why:?}"
        ))
    })
}

/// Whether the simulation reaches `Migrating` (else [`migrating_with`] plans nothing).
pub fn simulation() -> Result<(), String> {
    migrating().as_ref().map(|_| ()).map_err(Clone::clone)
}

/// `row` (its `locked_at`, `finished_at` and `failed_at` as old, at each step, as they are at
/// `input_now`) among the four copy rows of a migrating upgrade, planned twice 11 minutes apart
/// (past the default `stuckAfter` of 10 minutes: the first records the cursor, the second may
/// find it stuck).
pub fn migrating_with(row: &MigrationRow, input_now: Timestamp) {
    let Ok(start) = migrating() else {
        return;
    };
    let mut w = start.clone();
    match w.rows.iter_mut().find(|r| r.name == row.name) {
        Some(slot) => *slot = row.clone(),
        None => w.rows.push(row.clone()),
    }
    for step in 0..2 {
        let age = |at: Option<Timestamp>| {
            at.map(|at| {
                let shift = SignedDuration::from_millis(t(w.now).as_millisecond() - input_now.as_millisecond());
                at.checked_add(shift).unwrap_or(at)
            })
        };
        if let Some(r) = w.rows.iter_mut().find(|r| r.name == row.name) {
            r.locked_at = age(row.locked_at);
            if step == 0 {
                r.finished_at = age(row.finished_at);
                r.failed_at = age(row.failed_at);
            }
        }
        let decision = w.step();
        for action in &decision.actions {
            let _ = action.describe();
        }
        w.now += 660;
    }
}
