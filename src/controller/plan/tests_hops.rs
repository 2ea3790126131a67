//! Plan tests of the in-place road: a Langfuse already on v3 or v4 as the official chart lays it
//! out (`langfuse-web`, `langfuse-worker`), simulated the way Kubernetes and Langfuse's releases
//! behave (the release catalog says what each web registers and each schema height).

use crate::migrations::copies::{CopiedTable, CopySources, SourceCount};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::events::EventType;

use super::*;
use crate::api::conditions as c;
use crate::api::{ImageChanges, LangfuseUpgradeSpec, StopState};
use crate::catalog::Catalog;
use crate::controller::observed::Observed;
use crate::controller::observed::Reading;
use crate::controller::report::{next_status, transitions};
use crate::migrations::{MigrationRow, PostgresFacts};
use crate::testing::*;
use crate::verify::ClickHouseFacts;
use crate::version::Version;

fn chart_deployment(name: &str, container: &str, image: &str) -> Deployment {
    let d = Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            template: PodTemplateSpec {
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: container.into(),
                        image: Some(image.into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }),
        status: Some(DeploymentStatus::default()),
    };
    rolled_out(d)
}

pub(super) fn chart_spec(to: &str) -> LangfuseUpgradeSpec {
    let mut s = spec();
    s.source.deployment = "langfuse-web".into();
    s.source.service = "langfuse-web".into();
    s.target.version = to.into();
    s.backup.acknowledged = false;
    s
}

/// A chart-installed Langfuse: web and worker Deployments, its databases, and what each
/// release's web and worker do to them when they start.
pub(super) struct Chart {
    pub(super) upgrade: crate::api::LangfuseUpgrade,
    pub(super) web: Deployment,
    pub(super) worker: Deployment,
    pub(super) rows: Vec<MigrationRow>,
    pub(super) ch_version: String,
    pub(super) ch_height: i64,
    pub(super) pg_major: i64,
    pub(super) now: i64,
    pub(super) history: Vec<Decision>,
    pub(super) events: Vec<(EventType, String, String)>,
    /// Every image the web Deployment was set to, in order, with the worker's at that moment.
    pub(super) web_images: Vec<(String, String)>,
    pub(super) writes: usize,
    /// The copied tables' rows, in PostgreSQL and in ClickHouse (a day-old copy, complete).
    pub(super) pg_copies: std::collections::BTreeMap<CopiedTable, i64>,
    pub(super) ch_copies: std::collections::BTreeMap<CopiedTable, i64>,
    /// How many times ClickHouse was asked to count the copies.
    pub(super) copy_counts_read: usize,
    /// Redis's `maxmemory-policy`, and what v4 needs of ClickHouse beyond its database.
    pub(super) redis_policy: String,
    pub(super) v4: crate::verify::readiness::V4Readiness,
    /// golang-migrate's dirty flag: a web pod stopped in the middle of a migration.
    pub(super) ch_dirty: bool,
    /// The data-model road's world: backfill rows M1-M5, the propagation keys, the staging
    /// partitions, producers and per-month counts ClickHouse answers with.
    pub(super) dm: super::tests_data_model::DmWorld,
}

impl Chart {
    pub(super) fn new(spec: LangfuseUpgradeSpec, running: &str) -> Self {
        let mut chart = Self {
            upgrade: upgrade(spec, Default::default()),
            web: chart_deployment("langfuse-web", "langfuse-web", &format!("langfuse/langfuse:{running}")),
            worker: chart_deployment(
                "langfuse-worker",
                "langfuse-worker",
                &format!("langfuse/langfuse-worker:{running}"),
            ),
            rows: Vec::new(),
            ch_version: "26.4.1.1".into(),
            ch_height: 0,
            pg_major: 16,
            now: 0,
            history: Vec::new(),
            events: Vec::new(),
            web_images: Vec::new(),
            writes: 0,
            pg_copies: CopiedTable::ALL.into_iter().zip([1_000, 3_000, 500, 200]).collect(),
            ch_copies: CopiedTable::ALL.into_iter().zip([1_000, 3_000, 500, 200]).collect(),
            copy_counts_read: 0,
            redis_policy: "noeviction".into(),
            ch_dirty: false,
            dm: Default::default(),
            v4: crate::verify::readiness::V4Readiness {
                timezone: "UTC".into(),
                denied_tables: Vec::new(),
                grants: crate::verify::grants::Grants::parse(&["GRANT ALL ON *.* TO default".to_string()]),
                free_bytes: Some(200 << 30),
                observations_bytes: Some(20 << 30),
            },
        };
        chart.upgrade.metadata.finalizers = None;
        let v = Version::parse(running).unwrap();
        chart.web_started(v);
        chart.worker_started();
        chart
    }

    /// Web's start: Prisma registers the release's rows and drops the removed ones; the
    /// ClickHouse migrations raise the schema to the release's height.
    fn web_started(&mut self, v: Version) {
        let catalog = Catalog::builtin();
        for m in catalog.rows_at(v) {
            if !self.rows.iter().any(|r| r.name == m.name) {
                self.rows.push(MigrationRow {
                    env_gate: m.gate.clone(),
                    ..queued_row(&m.name)
                });
            }
        }
        self.rows.retain(|r| !catalog.removed_by(v, &r.name));
        self.ch_height = self.ch_height.max(catalog.schema_height(v) as i64);
    }

    /// The worker's start: it runs every row whose gate is open in its env (an unset gate at
    /// its release's default, as Langfuse's validated env has it), to the end.
    fn worker_started(&mut self) {
        let catalog = Catalog::builtin();
        let release = Version::parse(crate::version::image_tag(&image(&self.worker)).unwrap()).unwrap();
        let env = self
            .worker
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .clone()
            .unwrap_or_default();
        let names = catalog.background_migrations.iter().filter_map(|m| m.gate.as_deref());
        let gates = crate::migrations::OpenGates::from_env_or_default(&env, names, |g| catalog.env_default(g, release));
        // In name order; an unfinished row whose script this release lacks stops the runner.
        self.rows.sort_by(|a, b| a.name.cmp(&b.name));
        for r in &mut self.rows {
            if r.finished_at.is_none() && catalog.orphan_for(&r.name, release).is_some() {
                break;
            }
            if r.env_gate.as_deref().is_none_or(|g| gates.is_open(g)) {
                r.finished_at = Some(t(self.now));
                r.taken = true;
            }
        }
    }

    pub(super) fn observe(&self) -> Observed {
        self.observe_with(&needs(&self.upgrade, t(self.now)))
    }

    /// PostgreSQL's side of the copies: the rows and the newest one (a day old).
    fn copy_sources(&self, tables: &[CopiedTable]) -> Option<CopySources> {
        (!tables.is_empty()).then(|| CopySources {
            since: None,
            tables: tables
                .iter()
                .map(|&table| SourceCount {
                    table,
                    rows: self.pg_copies[&table],
                    newest: Some(t(self.now - 86_400)),
                })
                .collect(),
        })
    }

    fn observe_with(&self, n: &Needs) -> Observed {
        let mut obs = Observed {
            source: Some(self.web.clone()),
            web: Some(self.web.clone()),
            worker: Some(self.worker.clone()),
            ..untouched()
        };
        obs.source = Some(self.web.clone());
        obs.propagation = Reading::when(n.propagation, || Ok(self.dm.keys.clone()));
        obs.redis = Reading::when(n.redis || n.stores, || {
            Ok(crate::databases::RedisFacts {
                version: "7.2.4".into(),
                tls: false,
                // Empty: a managed Redis that leaves the policy out of INFO.
                eviction_policy: Some(self.redis_policy.clone()).filter(|p| !p.is_empty()),
            })
        });
        if !n.postgres.is_empty() {
            obs.postgres = Reading::Answered(PostgresFacts {
                server_version_num: Some(self.pg_major * 10000 + 8),
                migrations: self.rows.clone(),
                copy_sources: self.copy_sources(&n.postgres.copy_sources),
                backfill_rows: n.postgres.backfill_rows.then(|| self.dm.rows.clone()),
                ..healthy_postgres()
            });
        }
        if !n.clickhouse.is_empty() {
            obs.clickhouse = Reading::Answered(ClickHouseFacts {
                version: Some(self.ch_version.clone()),
                schema: Some((self.ch_height, self.ch_dirty)),
                // As the live reader: grants only when asked for (preflight).
                grants: if n.clickhouse.objects {
                    healthy_clickhouse().grants
                } else {
                    Reading::NotAsked
                },
                v4: Reading::when(n.clickhouse.v4_readiness, || Ok(self.v4.clone())),
                events: self.dm.events(&n.clickhouse.events),
                copy_counts: (!n.clickhouse.copy_counts.is_empty()).then(|| {
                    n.clickhouse
                        .copy_counts
                        .iter()
                        .map(|w| (w.table, self.ch_copies[&w.table]))
                        .collect()
                }),
                ..healthy_clickhouse()
            });
        }
        obs
    }

    pub(super) fn step(&mut self) -> Decision {
        self.copy_counts_read += usize::from(!needs(&self.upgrade, t(self.now)).clickhouse.copy_counts.is_empty());
        // The Deployment controller finishes what the last step started.
        for d in [&mut self.web, &mut self.worker] {
            *d = rolled_out(d.clone());
        }
        let n = needs(&self.upgrade, t(self.now));
        let first = self.observe_with(&n);
        let mut decision = plan(&self.upgrade, &first, t(self.now));
        // As the reconcile: one more look when the decision only records facts.
        if let Some(wider) = look_ahead(&self.upgrade, &decision, &n, t(self.now)) {
            if let Some((_, second)) = second_look(&self.upgrade, &first, self.observe_with(&wider), t(self.now)) {
                decision = second;
            }
        }
        // Events compare with the object as the reconcile read it.
        let old = self.upgrade.status.clone().unwrap_or_default();
        let mut stored = old.clone();
        for action in &decision.actions {
            if *action == Action::RecordFacts {
                // The executor writes the decision's status first.
                stored = next_status(&self.upgrade, &decision, t(self.now));
                self.upgrade.status = Some(stored.clone());
                continue;
            }
            // Invariant: an image is written only once the hop's start is in the stored status.
            if let Action::SetImage(change) = action {
                let tag = crate::version::image_tag(&change.image).unwrap().to_string();
                let aborting = self.upgrade.spec.abort;
                assert!(
                    aborting || stored.road.iter().any(|r| r.version == tag && r.started_at.is_some()),
                    "{} written before its hop's start was recorded",
                    change.image
                );
            }
            self.apply(action);
        }
        let status = next_status(&self.upgrade, &decision, t(self.now));
        self.events.extend(transitions(&old, &status));
        self.upgrade.status = Some(status);
        self.now += decision.requeue.as_secs().clamp(1, 60) as i64;
        self.history.push(decision.clone());
        decision
    }

    pub(super) fn run_until(&mut self, phase: Phase, max: usize) -> Decision {
        for _ in 0..max {
            let d = self.step();
            if d.phase == phase {
                return d;
            }
        }
        panic!(
            "never reached {phase}; last: {:?}",
            self.history.last().map(|d| (d.phase, d.conditions.clone()))
        );
    }

    /// Steps until RoadFollowed's message says `words`.
    fn run_until_road(&mut self, words: &str, max: usize) -> Decision {
        for _ in 0..max {
            let d = self.step();
            let road = d.conditions.iter().find(|c| c.type_ == c::ROAD_FOLLOWED);
            if road.is_some_and(|c| c.message.contains(words)) {
                return d;
            }
        }
        panic!(
            "never said {words:?}; last: {:?}",
            self.history.last().map(|d| d.conditions.clone())
        );
    }

    fn apply(&mut self, action: &Action) {
        match action {
            Action::AddFinalizer => self.upgrade.metadata.finalizers = Some(vec![crate::api::FINALIZER.into()]),
            Action::RemoveFinalizer => self.upgrade.metadata.finalizers = Some(vec![]),
            Action::SetImage(change) => {
                self.writes += 1;
                let is_web = change.deployment == "langfuse-web";
                let d = if is_web { &mut self.web } else { &mut self.worker };
                let c = &mut d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0];
                assert_eq!(c.name, change.container);
                c.image = Some(change.image.clone());
                let env = c.env.get_or_insert_with(Vec::new);
                for var in &change.env {
                    env.retain(|e| e.name != var.name);
                    env.push(var.clone());
                }
                // Server-side apply: the probe and its annotation are the operator's; an apply
                // without them takes away what it had given.
                let annotations = d.metadata.annotations.get_or_insert_with(Default::default);
                let key = crate::resources::deployments::STARTUP_PROBE_ANNOTATION;
                match &change.startup_probe {
                    Some(probe) => {
                        c.startup_probe = Some(probe.clone());
                        annotations.insert(key.into(), "ours".into());
                    }
                    None if annotations.remove(key).is_some() => c.startup_probe = None,
                    None => {}
                }
                // A new ReplicaSet: nothing of it available until the next step.
                d.metadata.generation = Some(d.metadata.generation.unwrap_or(1) + 1);
                let v = Version::parse(crate::version::image_tag(&change.image).unwrap()).unwrap();
                if !is_web && !self.upgrade.spec.abort {
                    // Invariant: the worker moves only once web runs the release, all available.
                    let web_image = image(&self.web);
                    let web_status = self.web.status.clone().unwrap();
                    assert!(
                        web_image.ends_with(&format!(":{v}")) && web_status.available_replicas == Some(2),
                        "worker set to {v} while web runs {web_image} ({web_status:?})"
                    );
                }
                if is_web {
                    self.web_images.push((change.image.clone(), image(&self.worker)));
                    self.web_started(v);
                } else {
                    self.worker_started();
                }
            }
            // The one database write of an in-place road, and only where the spec allows it.
            Action::Remedy(crate::databases::Remedy::FinishOrphan { name, script }) => {
                assert!(self.upgrade.spec.migrations.finish_orphan_rows, "{name}: not allowed");
                let orphan = Catalog::builtin()
                    .orphan_rows
                    .iter()
                    .any(|o| o.name == *name && o.script == *script);
                assert!(orphan, "{name} ({script}) is not a catalog orphan row");
                let row = self.rows.iter_mut().find(|r| r.name == *name).unwrap();
                row.finished_at = Some(t(self.now));
            }
            // Resume a failed row from its cursor (allowed by invariant 5: failed_at, failed_reason).
            Action::Remedy(crate::databases::Remedy::ClearFailure { name }) => {
                let row = self.rows.iter_mut().find(|r| r.name == *name).unwrap();
                (row.failed_at, row.failed_reason) = (None, None);
            }
            Action::SetFlags(change) => self.dm_flags(change),
            Action::Remedy(crate::databases::Remedy::ResetBackfillRow { name, reload_chunks }) => {
                self.dm.reset(name, *reload_chunks)
            }
            other => {
                panic!("an in-place road writes nothing but images, the finalizer and allowed remedies: {other:?}")
            }
        }
    }

    /// A person (Helm, Git) sets an image: the operator sees it on its next observation.
    fn person_sets(&mut self, web: bool, version: &str) {
        let (d, repo) = if web {
            (&mut self.web, "langfuse/langfuse")
        } else {
            (&mut self.worker, "langfuse/langfuse-worker")
        };
        let c = &mut d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0];
        c.image = Some(format!("{repo}:{version}"));
        *d = rolled_out(d.clone());
        let v = Version::parse(version).unwrap();
        if web {
            self.web_started(v);
        } else {
            self.worker_started();
        }
    }

    pub(super) fn status(&self) -> crate::api::LangfuseUpgradeStatus {
        self.upgrade.status.clone().unwrap_or_default()
    }

    pub(super) fn event_reasons(&self) -> Vec<String> {
        self.events.iter().map(|(_, r, _)| r.clone()).collect()
    }
}

/// The Langfuse container of a chart Deployment (its only one here).
fn container(d: &mut Deployment) -> &mut Container {
    &mut d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0]
}

/// A person sets the four v4 flags to v3 behaviour on web and worker.
fn keep_v3_flags(w: &mut Chart) {
    for d in [&mut w.web, &mut w.worker] {
        container(d).env = Some(crate::resources::v4_env::as_env(&crate::resources::v4_env::effective(
            |_| None,
        )));
    }
}

fn image(d: &Deployment) -> String {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

pub(super) fn env_of(d: &Deployment, name: &str) -> Option<String> {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

#[test]
fn a_chart_on_3_100_walks_to_the_newest_v3_then_to_v4_web_first_each_hop() {
    let mut s = chart_spec("4.16.0");
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = Chart::new(s, "3.100.0");
    let done = w.run_until(Phase::Completed, 60);
    assert_eq!(done.status.target_version.as_deref(), Some("4.16.0"));
    // Two hops, each web before the worker: when web moved, the worker still ran the old release.
    assert_eq!(
        w.web_images,
        [
            (
                "langfuse/langfuse:3.225.4".to_string(),
                "langfuse/langfuse-worker:3.100.0".to_string()
            ),
            (
                "langfuse/langfuse:4.16.0".to_string(),
                "langfuse/langfuse-worker:3.225.4".to_string()
            ),
            // The road done: web applied once more at the release it runs, without the
            // startup probe the hops gave it.
            (
                "langfuse/langfuse:4.16.0".to_string(),
                "langfuse/langfuse-worker:4.16.0".to_string()
            ),
        ]
    );
    assert_eq!(image(&w.worker), "langfuse/langfuse-worker:4.16.0");
    assert_eq!(
        w.writes, 5,
        "one image write per Deployment per hop, and the probe taken away"
    );
    // v4 keeps v3 behaviour: legacy writes, dual-write OTel, no preview, no backfill.
    for d in [&w.web, &w.worker] {
        assert_eq!(
            env_of(d, crate::resources::v4_env::WRITE_MODE).as_deref(),
            Some("legacy")
        );
        assert_eq!(
            env_of(d, crate::resources::v4_env::HISTORIC_BACKFILL).as_deref(),
            Some("false")
        );
    }
    // The road in status: both stops done, each with its times; Events for each stop.
    let s = w.status();
    let road: Vec<(&str, StopState)> = s.road.iter().map(|r| (r.version.as_str(), r.state)).collect();
    assert_eq!(road, [("3.225.4", StopState::Done), ("4.16.0", StopState::Done)]);
    assert!(s.road.iter().all(|r| r.started_at.is_some() && r.finished_at.is_some()));
    assert!(
        s.road[0]
            .required_because
            .as_deref()
            .is_some_and(|w| w.contains("newest v3"))
    );
    assert!(s.road[1].irreversible.as_deref().is_some_and(|w| w.contains("traces")));
    let reasons = w.event_reasons();
    assert_eq!(reasons.iter().filter(|r| *r == "HopStarted").count(), 2, "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| *r == "HopFinished").count(), 2, "{reasons:?}");
    // The v4 dormant rows (gates off) were never waited on; v4 dropped the rows it no longer has.
    assert!(!w.rows.iter().any(|r| r.name.starts_with("20241024_1730")));
}

#[test]
fn the_v4_hop_waits_for_the_newest_v3_s_migrations_to_finish() {
    let mut s = chart_spec("4.16.0");
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = Chart::new(s, "3.225.4");
    // One row of 3.225.4 is still running: preflight says so and nothing is written.
    w.rows
        .iter_mut()
        .find(|r| r.name.contains("event_log"))
        .unwrap()
        .finished_at = None;
    let d = w.run_until(Phase::Blocked, 5);
    assert!(
        d.actions.iter().all(|a| matches!(a, Action::AddFinalizer)),
        "{:?}",
        d.actions
    );
    let line = d.status.checks.iter().find(|c| c.name == "sourceMigrations").unwrap();
    assert!(line.message.contains("event_log"), "{}", line.message);
    assert_eq!(w.writes, 0);
    w.rows
        .iter_mut()
        .for_each(|r| r.finished_at = r.finished_at.or(Some(t(1))));
    w.run_until(Phase::Completed, 30);
}

#[test]
fn the_v4_hop_is_blocked_by_an_old_clickhouse_and_a_missing_backup_nothing_touched() {
    let mut w = Chart::new(chart_spec("4.16.0"), "3.225.4");
    w.ch_version = "25.3.6.56".into();
    w.pg_major = 14;
    let d = w.run_until(Phase::Blocked, 5);
    assert_eq!(w.writes, 0);
    let infra = d.status.checks.iter().find(|c| c.name == "infrastructure").unwrap();
    assert!(
        infra.message.contains("ClickHouse 25.3.6.56 is older than 25.12") && infra.message.contains("PostgreSQL 14"),
        "{}",
        infra.message
    );
    let backup = d.status.checks.iter().find(|c| c.name == "hopBackups").unwrap();
    assert!(
        backup.message.contains("spec.backup.hopBackups") && backup.message.contains("dataset_run_items"),
        "{}",
        backup.message
    );
    // Fixed one by one: still blocked until all hold, then it goes.
    w.ch_version = "26.4.1.1".into();
    w.pg_major = 16;
    w.run_until(Phase::Blocked, 3);
    assert_eq!(w.writes, 0);
    let mut u = w.upgrade.clone();
    u.spec.backup.acknowledged_hops = vec!["4.16.0".into()];
    w.upgrade = u;
    w.run_until(Phase::Completed, 30);
}

/// The v4 hop's backup is taken right before it: preflight only warns, the road runs to the
/// required stop, and the v4 hop waits for a backup taken after that stop finished (one taken
/// before is refused, saying why). An acknowledgement in advance is allowed, and said so.
#[test]
fn the_v4_hop_waits_for_a_backup_taken_after_the_stop_before_it() {
    let mut w = Chart::new(chart_spec("4.16.0"), "3.100.0");
    let d = w.run_until(Phase::Blocked, 40);
    let road = d.conditions.iter().find(|c| c.type_ == c::ROAD_FOLLOWED).unwrap();
    assert_eq!(road.reason, c::reason::HOP_BLOCKED, "{}", road.message);
    assert!(road.message.contains("spec.backup.hopBackups"), "{}", road.message);
    assert!(
        image(&w.web).ends_with(":3.225.4"),
        "ran to the stop: {}",
        image(&w.web)
    );
    assert!(w.event_reasons().contains(&"HopBlocked".to_string()));
    let stop = w.status().road.into_iter().find(|r| r.version == "3.225.4").unwrap();
    let finished = stop.finished_at.expect("the stop finished").0;
    // Taken a minute before the stop finished: refused.
    let mut u = w.upgrade.clone();
    let early = crate::api::HopBackup {
        hop: "4.16.0".into(),
        reference: "snap-early".into(),
        taken_at: (finished - jiff::SignedDuration::from_secs(60)).to_string(),
    };
    u.spec.backup.hop_backups = vec![early];
    w.upgrade = u;
    let d = w.run_until(Phase::Blocked, 3);
    let road = d.conditions.iter().find(|c| c.type_ == c::ROAD_FOLLOWED).unwrap();
    assert!(
        road.message.contains("snap-early") && road.message.contains("before 3.225.4 finished"),
        "{}",
        road.message
    );
    let note = w
        .status()
        .road
        .into_iter()
        .find(|r| r.version == "4.16.0")
        .unwrap()
        .backup;
    assert!(note.as_deref().is_some_and(|n| n.ends_with("refused")), "{note:?}");
    // Taken after: the hop goes, and status names it.
    let mut u = w.upgrade.clone();
    u.spec.backup.hop_backups.push(crate::api::HopBackup {
        hop: "4.16.0".into(),
        reference: "snap-after".into(),
        taken_at: (finished + jiff::SignedDuration::from_secs(60)).to_string(),
    });
    w.upgrade = u;
    w.run_until(Phase::Completed, 20);
    let note = w
        .status()
        .road
        .into_iter()
        .find(|r| r.version == "4.16.0")
        .unwrap()
        .backup;
    assert!(
        note.as_deref()
            .is_some_and(|n| n.starts_with("snap-after") && n.contains("after 3.225.4 finished")),
        "{note:?}"
    );
    // Acknowledged in advance: allowed, and status says the backup may predate the hop.
    let mut s = chart_spec("4.16.0");
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = Chart::new(s, "3.100.0");
    w.run_until(Phase::Completed, 60);
    let note = w
        .status()
        .road
        .into_iter()
        .find(|r| r.version == "4.16.0")
        .unwrap()
        .backup;
    assert!(
        note.as_deref().is_some_and(|n| n.contains("may predate this hop")),
        "{note:?}"
    );
}

#[test]
fn a_downgrade_is_refused_before_anything_is_touched() {
    let mut w = Chart::new(chart_spec("3.50.0"), "3.100.0");
    let d = w.run_until(Phase::Blocked, 3);
    let road = d.status.checks.iter().find(|c| c.name == "road").unwrap();
    assert!(
        road.message.contains("refusing to go from 3.100.0 down to 3.50.0"),
        "{}",
        road.message
    );
    assert_eq!(w.writes, 0);
    let mut w = Chart::new(chart_spec("3.225.4"), "4.16.0");
    w.run_until(Phase::Blocked, 3);
    assert_eq!(w.writes, 0);
}

#[test]
fn images_changed_by_a_person_are_gated_watched_and_flagged_never_written() {
    let mut s = chart_spec("4.16.0");
    s.strategy.image_changes = ImageChanges::User;
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = Chart::new(s, "3.100.0");
    let d = w.run_until(Phase::Finalizing, 5);
    let road = d.conditions.iter().find(|c| c.type_ == c::ROAD_FOLLOWED).unwrap();
    assert_eq!(road.reason, c::reason::AWAITING_IMAGE_CHANGE);
    assert!(road.message.contains("langfuse/langfuse:3.225.4"), "{}", road.message);
    // Skipping the required stop: flagged, with why the stop exists.
    w.person_sets(true, "4.16.0");
    let d = w.step();
    assert_eq!(d.phase, Phase::Blocked);
    let road = d.conditions.iter().find(|c| c.type_ == c::ROAD_FOLLOWED).unwrap();
    assert_eq!(road.reason, c::reason::STOP_SKIPPED);
    assert!(road.message.contains("newest v3"), "{}", road.message);
    assert!(w.event_reasons().contains(&"StopSkipped".to_string()));
    // Back on the road: web then worker at the stop, the operator only watches.
    w.person_sets(true, "3.225.4");
    let d = w.step();
    assert_eq!(d.phase, Phase::Finalizing);
    assert!(
        d.conditions.iter().any(|c| c
            .message
            .contains("set the worker image of Deployment langfuse-worker to langfuse/langfuse-worker:3.225.4")),
        "{:?}",
        d.conditions
    );
    w.person_sets(false, "3.225.4");
    // Once the copies the v4 hop drops are counted (two looks), it is safe to go on.
    let d = w.run_until_road("safe to take the next stop now", 3);
    assert_eq!(d.phase, Phase::Finalizing);
    // Going back below the stop reached: flagged as a downgrade.
    w.person_sets(true, "3.100.0");
    let d = w.step();
    assert_eq!(d.phase, Phase::Blocked);
    let road = d.conditions.iter().find(|c| c.type_ == c::ROAD_FOLLOWED).unwrap();
    assert_eq!(road.reason, c::reason::DOWNGRADED);
    assert!(w.event_reasons().contains(&"Downgraded".to_string()));
    w.person_sets(true, "3.225.4");
    w.run_until(Phase::Finalizing, 5);
    // On v4 the person must also keep v3 behaviour (or opt in through extraEnv).
    w.person_sets(true, "4.16.0");
    let d = w.step();
    let road = d.conditions.iter().find(|c| c.type_ == c::ROAD_FOLLOWED).unwrap();
    assert!(
        road.message.contains("LANGFUSE_MIGRATION_V4_WRITE_MODE=legacy"),
        "{}",
        road.message
    );
    keep_v3_flags(&mut w);
    w.person_sets(false, "4.16.0");
    w.run_until(Phase::Completed, 10);
    assert_eq!(w.writes, 0, "the operator wrote no image");
}

/// `imageChanges: User`: v4 images set without the flags run at v4's defaults (`events_only`,
/// the backfill open); the operator says so, names the rows that will run, and holds until the
/// flags are set explicitly.
#[test]
fn v4_images_without_flags_are_seen_to_run_at_v4_defaults() {
    let mut s = chart_spec("4.16.0");
    s.strategy.image_changes = ImageChanges::User;
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = Chart::new(s, "3.225.4");
    w.run_until(Phase::Finalizing, 5);
    w.person_sets(true, "4.16.0");
    // The worker's image changed, its pods not started yet: the backfill rows wait to run.
    container(&mut w.worker).image = Some("langfuse/langfuse-worker:4.16.0".into());
    let d = w.step();
    let road = d.conditions.iter().find(|c| c.type_ == c::ROAD_FOLLOWED).unwrap();
    assert_eq!(road.reason, c::reason::V4_DEFAULTS_IN_EFFECT, "{}", road.message);
    for words in [
        "web LANGFUSE_MIGRATION_V4_WRITE_MODE=events_only",
        "worker LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL=true",
        "4 background migrations will run",
        "20260701_v4_step_1_create_root_spans_from_traces",
        "LANGFUSE_MIGRATION_V4_WRITE_MODE=legacy",
    ] {
        assert!(road.message.contains(words), "{words}: {}", road.message);
    }
    assert!(
        !road.message.contains("step_5"),
        "M5 is closed by default: {}",
        road.message
    );
    assert!(w.event_reasons().contains(&"V4DefaultsInEffect".to_string()));
    // Set explicitly (here: v3 behaviour), the road goes on.
    keep_v3_flags(&mut w);
    w.person_sets(false, "4.16.0");
    w.run_until(Phase::Completed, 10);
    assert_eq!(w.writes, 0, "the operator wrote no image");
}

/// A v4 source already on its image's defaults (a chart install with no flags runs
/// `events_only`): the operator's hop writes those values explicitly, never legacy over them.
#[test]
fn a_v4_source_on_its_defaults_keeps_them_across_a_hop() {
    let mut w = Chart::new(chart_spec("4.16.0"), "4.4.0");
    w.run_until(Phase::Completed, 40);
    for (d, name) in [(&w.web, "web"), (&w.worker, "worker")] {
        assert!(image(d).ends_with(":4.16.0"), "{name}: {}", image(d));
        for (var, value) in [
            ("LANGFUSE_MIGRATION_V4_WRITE_MODE", "events_only"),
            ("LANGFUSE_MIGRATION_V4_NATIVE_OTEL_BEHAVIOUR", "direct"),
            ("LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN", "true"),
            ("LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL", "true"),
        ] {
            assert_eq!(env_of(d, var).as_deref(), Some(value), "{name} {var}");
        }
    }
}

/// A v4-preview script's row left unfinished (run by hand on 3.140, its script removed in
/// 3.179.0): the worker can run no row after it. The hop says so and how to fix it, and with
/// `finishOrphanRows` the operator marks exactly that row finished and goes on.
#[test]
fn an_orphan_preview_row_blocks_the_hop_with_its_fix() {
    let preview = MigrationRow {
        taken: true,
        ..queued_row("20251027_backfill_events_historic")
    };
    let mut s = chart_spec("4.16.0");
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = Chart::new(s.clone(), "3.225.4");
    w.rows.push(preview.clone());
    // Caught by preflight, before anything starts.
    let d = w.run_until(Phase::Blocked, 10);
    let ready = d.conditions.iter().find(|c| c.type_ == c::PREFLIGHT_PASSED).unwrap();
    assert_eq!(ready.reason, c::reason::PREFLIGHT_FAILED, "{}", ready.message);
    for words in [
        "20251027_backfill_events_historic",
        "backfillEventsHistoric",
        "3.225.4 no longer ships",
        "UPDATE background_migrations SET finished_at = now() WHERE name = '20251027_backfill_events_historic'",
        "finishOrphanRows",
    ] {
        assert!(ready.message.contains(words), "{words}: {}", ready.message);
    }
    assert_eq!(w.writes, 0, "nothing was changed");
    assert!(image(&w.web).ends_with(":3.225.4"));
    // Allowed: the operator finishes exactly that row, then the hop goes ahead.
    s.migrations.finish_orphan_rows = true;
    let mut w = Chart::new(s, "3.225.4");
    w.rows.push(preview.clone());
    w.run_until(Phase::Completed, 40);
    let remedies: Vec<(&str, String)> = w
        .history
        .iter()
        .flat_map(|d| &d.actions)
        .filter(|a| matches!(a, Action::Remedy(_)))
        .map(|a| a.describe())
        .collect();
    assert_eq!(remedies.len(), 1, "{remedies:?}");
    assert_eq!(remedies[0].0, "RemedyApplied");
    assert!(
        remedies[0].1.contains("20251027_backfill_events_historic"),
        "{}",
        remedies[0].1
    );
    assert!(image(&w.web).ends_with(":4.16.0"));
    // Upserted after preflight (a person ran an old script by hand): the hop holds at its
    // rows with the reason and the fix, and writes nothing more.
    let mut s = chart_spec("4.16.0");
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = Chart::new(s, "3.225.4");
    w.run_until(Phase::Finalizing, 10);
    w.rows.push(preview);
    let d = w.run_until(Phase::Blocked, 5);
    let road = d.conditions.iter().find(|c| c.type_ == c::ROAD_FOLLOWED).unwrap();
    assert_eq!(road.reason, c::reason::ORPHAN_ROW, "{}", road.message);
    assert!(
        road.message.contains("UPDATE background_migrations"),
        "{}",
        road.message
    );
    assert!(w.event_reasons().contains(&"OrphanRow".to_string()));
    let again = w.step();
    assert_eq!(
        (again.phase, again.actions.len()),
        (Phase::Blocked, 0),
        "{:?}",
        again.actions
    );
}

/// Before v4.0.0 drops the PostgreSQL sources, each copy is counted on both sides: a copy that
/// lost rows holds the hop (each of the four tables), with the counts, the reset of its copy
/// and the way to accept deleted rows; once ClickHouse has them again the hop goes ahead.
#[test]
fn the_v4_hop_is_held_on_a_copy_that_lost_rows_in_each_table() {
    let rows = [
        (CopiedTable::Traces, "20241024_1730_migrate_traces_from_pg_to_ch"),
        (
            CopiedTable::Observations,
            "20241024_1737_migrate_observations_from_pg_to_ch",
        ),
        (CopiedTable::Scores, "20241024_1738_migrate_scores_from_pg_to_ch"),
        (
            CopiedTable::DatasetRunItems,
            "20250814_1001_migrate_dataset_run_items_rmt_pg_to_ch",
        ),
    ];
    for (table, row) in rows {
        let mut s = chart_spec("4.16.0");
        s.backup.acknowledged_hops = vec!["4.16.0".into()];
        let mut w = Chart::new(s, "3.225.4");
        *w.ch_copies.get_mut(&table).unwrap() -= 40;
        let d = w.run_until(Phase::Blocked, 10);
        let road = d.conditions.iter().find(|c| c.type_ == c::ROAD_FOLLOWED).unwrap();
        assert_eq!(road.reason, c::reason::HOP_BLOCKED, "{table}: {}", road.message);
        let pg = w.pg_copies[&table];
        for words in [
            format!("{table}: PostgreSQL {pg}, ClickHouse {}, 40 missing", pg - 40),
            format!("WHERE name = '{row}'"),
            format!("acceptCopyShortfall: {{{table}: 40}}"),
            "4.16.0 drops the PostgreSQL tables".to_string(),
        ] {
            assert!(road.message.contains(&words), "{table}: {words}: {}", road.message);
        }
        let stop = w.status().road.into_iter().find(|r| r.version == "4.16.0").unwrap();
        let copy = stop.copies.iter().find(|c| c.table == table.name()).unwrap();
        assert_eq!(
            (copy.postgres, copy.clickhouse, copy.verdict.as_deref()),
            (Some(pg), Some(pg - 40), Some("Missing 40"))
        );
        assert!(
            stop.copies
                .iter()
                .filter(|c| c.table != table.name())
                .all(|c| c.verdict.as_deref() == Some("Match"))
        );
        assert_eq!(w.writes, 0, "{table}: nothing was changed");
        // The copy re-run (by a person): ClickHouse has every row again; the hop goes ahead.
        *w.ch_copies.get_mut(&table).unwrap() += 40;
        w.run_until(Phase::Completed, 20);
        assert!(image(&w.web).ends_with(":4.16.0"), "{table}");
    }
}

/// Rows deleted in Langfuse after the copy ran: accepted up to the number a person gives, not
/// one more; a matching table is counted in ClickHouse only until it matches.
#[test]
fn a_shortfall_is_accepted_only_up_to_the_rows_a_person_named() {
    let mut s = chart_spec("4.16.0");
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    s.migrations.accept_copy_shortfall = [("observations".to_string(), 39)].into();
    let mut w = Chart::new(s.clone(), "3.225.4");
    *w.ch_copies.get_mut(&CopiedTable::Observations).unwrap() -= 40;
    w.run_until(Phase::Blocked, 10);
    let blocked_reads = w.copy_counts_read;
    w.run_until(Phase::Blocked, 3);
    assert!(
        w.copy_counts_read > blocked_reads,
        "a shortfall is counted again at each look"
    );
    s.migrations.accept_copy_shortfall = [("observations".to_string(), 40)].into();
    w.upgrade.spec = s;
    w.run_until(Phase::Completed, 20);
    let stop = w.status().road.into_iter().find(|r| r.version == "4.16.0").unwrap();
    let copy = stop.copies.iter().find(|c| c.table == "observations").unwrap();
    assert_eq!(copy.verdict.as_deref(), Some("Accepted 40"));
}

/// A chart install from 3.100.0 whose worker already runs the 3.225.4 stop.
fn worker_on_the_stop() -> Chart {
    let mut w = Chart::new(chart_spec("3.225.4"), "3.100.0");
    for _ in 0..40 {
        w.step();
        if image(&w.worker).ends_with(":3.225.4") {
            break;
        }
    }
    w
}

/// A row of the new release taken by another worker that then died: Langfuse's worker looks for
/// rows only when it starts, so nobody runs it. After the grace the hop says nothing runs and
/// how to restart the worker (`Stalled=True`), never `Hopping` forever; restarted, it completes.
#[test]
fn a_row_nobody_runs_after_a_hop_is_said_to_stall_with_the_restart_to_do() {
    let mut w = worker_on_the_stop();
    let name = "20260106_encrypt_blob_storage_secrets";
    let row = w
        .rows
        .iter_mut()
        .find(|r| r.name == name)
        .expect("registered by 3.144.0");
    (row.finished_at, row.locked_at, row.taken) = (None, Some(t(w.now - 300)), true);
    let d = w.run_until(Phase::Blocked, 300);
    let road = d.conditions.iter().find(|c| c.type_ == c::ROAD_FOLLOWED).unwrap();
    assert_eq!(road.reason, c::reason::MIGRATION_STALLED, "{}", road.message);
    for words in [
        name,
        "rollout restart deployment/langfuse-worker",
        "only when it starts",
    ] {
        assert!(road.message.contains(words), "{words}: {}", road.message);
    }
    let stalled = d.conditions.iter().find(|c| c.type_ == c::STALLED).unwrap();
    assert!(stalled.status, "{stalled:?}");
    let hop_start = w
        .status()
        .road
        .iter()
        .find(|r| r.version == "3.225.4")
        .unwrap()
        .started_at
        .clone()
        .unwrap();
    // Decided at the clock before the step's requeue moved it on.
    let held_at = t(w.now).as_second() - d.requeue.as_secs().clamp(1, 60) as i64;
    assert!(
        held_at - hop_start.0.as_second() >= 120,
        "held {} s after the hop started",
        held_at - hop_start.0.as_second()
    );
    let before = &w.history[w.history.len() - 2];
    assert_eq!(before.phase, Phase::Finalizing, "said only once the grace passed");
    assert_eq!(
        w.writes, 2,
        "the hop's two image writes, no restart of a Deployment it does not own"
    );
    // A person restarts the worker: it picks the row up and the hop finishes.
    w.worker_started();
    w.run_until(Phase::Completed, 10);
}

/// A row of the new release fails: resumed once from its cursor (the documented remedy, an
/// Event), with the worker restart a person runs on a source's Deployment; failing again, the
/// hop stops with the manual fix, never a second automatic try.
#[test]
fn a_failed_row_in_place_is_resumed_once_then_handed_to_a_person() {
    let mut w = worker_on_the_stop();
    let name = "20260106_encrypt_blob_storage_secrets";
    let fail = |w: &mut Chart| {
        let now = t(w.now);
        let row = w.rows.iter_mut().find(|r| r.name == name).unwrap();
        (row.finished_at, row.failed_at, row.taken) = (None, Some(now), true);
        row.failed_reason = Some("Error: connect ETIMEDOUT 10.0.0.7:5432".into());
    };
    fail(&mut w);
    let d = w.step();
    let road = d.conditions.iter().find(|c| c.type_ == c::ROAD_FOLLOWED).unwrap();
    assert_eq!(road.reason, c::reason::REMEDY_APPLIED, "{}", road.message);
    assert!(
        road.message.contains("resumed it once from its cursor"),
        "{}",
        road.message
    );
    assert!(
        road.message.contains("rollout restart deployment/langfuse-worker"),
        "{}",
        road.message
    );
    let cleared = d
        .actions
        .iter()
        .any(|a| matches!(a, Action::Remedy(crate::databases::Remedy::ClearFailure { name: n }) if n == name));
    assert!(cleared, "{:?}", d.actions);
    // The person restarts the worker; it fails again: handed over, no second resume.
    w.worker_started();
    fail(&mut w);
    let d = w.step();
    assert_eq!(d.phase, Phase::Failed, "{:?}", d.conditions);
    let road = d.conditions.iter().find(|c| c.type_ == c::ROAD_FOLLOWED).unwrap();
    assert!(
        road.message.contains("One automatic resume was already tried"),
        "{}",
        road.message
    );
    assert!(
        !d.actions.iter().any(|a| matches!(a, Action::Remedy(_))),
        "{:?}",
        d.actions
    );
}

#[test]
fn abort_undoes_a_reversible_hop_and_refuses_one_that_dropped_data() {
    // 3.100.0 -> 3.150.0: ClickHouse moved from 26 to 33, which 3.100.0 cannot run on.
    let mut w = Chart::new(chart_spec("3.150.0"), "3.100.0");
    w.step();
    w.step();
    assert_eq!(image(&w.web), "langfuse/langfuse:3.150.0");
    let mut u = w.upgrade.clone();
    u.spec.abort = true;
    w.upgrade = u;
    let d = w.step();
    assert_eq!(d.phase, Phase::Blocked);
    let ready = d.conditions.iter().find(|c| c.type_ == c::READY).unwrap();
    assert_eq!(ready.reason, c::reason::ABORT_TOO_LATE);
    assert!(ready.message.contains("knows only up to 26"), "{}", ready.message);
    assert!(!d.status.rollback.as_ref().unwrap().possible);

    // 3.225.0 -> 3.225.4: same schema height, nothing dropped: undone, worker first.
    let mut w = Chart::new(chart_spec("3.225.4"), "3.225.0");
    w.step();
    w.step();
    assert_eq!(image(&w.web), "langfuse/langfuse:3.225.4");
    assert!(w.status().rollback.as_ref().unwrap().possible);
    let mut u = w.upgrade.clone();
    u.spec.abort = true;
    w.upgrade = u;
    w.run_until(Phase::RolledBack, 6);
    assert_eq!(image(&w.web), "langfuse/langfuse:3.225.0");
    assert_eq!(image(&w.worker), "langfuse/langfuse-worker:3.225.0");
    let again = w.step();
    assert!(again.actions.is_empty(), "{:?}", again.actions);
    let s = w.status();
    assert_eq!(s.target_version.as_deref(), Some("3.225.0"));
    assert_eq!(s.road[0].state, StopState::RolledBack);
    let ready = s.conditions.iter().find(|c| c.type_ == c::READY).unwrap();
    assert!(ready.message.contains("Langfuse runs 3.225.0"), "{}", ready.message);

    // Into v4: it dropped the Postgres tracing tables. Only a restore goes back.
    let mut s = chart_spec("4.16.0");
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = Chart::new(s, "3.225.4");
    w.step();
    w.step();
    let mut u = w.upgrade.clone();
    u.spec.abort = true;
    w.upgrade = u;
    let d = w.step();
    let ready = d.conditions.iter().find(|c| c.type_ == c::READY).unwrap();
    assert_eq!(ready.reason, c::reason::ABORT_TOO_LATE);
    assert!(
        ready.message.contains("restore PostgreSQL and ClickHouse"),
        "{}",
        ready.message
    );
}

#[test]
fn v4_flags_that_stop_the_worker_are_refused_by_validation() {
    let mut s = chart_spec("4.16.0");
    s.target.extra_env = vec![EnvVar {
        name: crate::resources::v4_env::WRITE_MODE.into(),
        value: Some("events_only".into()),
        value_from: None,
    }];
    let mut w = Chart::new(s, "4.2.0");
    let d = w.step();
    assert_eq!(d.phase, Phase::Pending);
    let ready = d.conditions.iter().find(|c| c.type_ == c::READY).unwrap();
    assert!(ready.message.contains("dual_write"), "{}", ready.message);
    assert_eq!(w.writes, 0);
}

#[test]
fn a_source_whose_rollout_has_not_finished_does_not_start_a_hop() {
    let mut s = chart_spec("4.16.0");
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = Chart::new(s, "3.100.0");
    // Someone just set 3.225.4: the images say so, but its web never started (no rows, schema
    // still at 3.100.0's height).
    for (d, repo) in [
        (&mut w.web, "langfuse/langfuse"),
        (&mut w.worker, "langfuse/langfuse-worker"),
    ] {
        d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].image = Some(format!("{repo}:3.225.4"));
    }
    let d = w.run_until(Phase::Blocked, 3);
    let hop = d.status.checks.iter().find(|c| c.name == "sourceMigrations").unwrap();
    assert!(
        hop.message.contains("has not registered") || hop.message.contains("below the"),
        "{}",
        hop.message
    );
    assert_eq!(w.writes, 0);
}

#[test]
fn deleting_never_touches_a_source_on_v3_even_with_its_status_lost() {
    let mut w = Chart::new(chart_spec("3.225.4"), "3.100.0");
    w.step();
    w.step();
    for lost in [false, true] {
        let mut u = w.upgrade.clone();
        if lost {
            u.status = None;
        }
        u.metadata.deletion_timestamp = Some(time(1));
        u.metadata.finalizers = Some(vec![crate::api::FINALIZER.into()]);
        let d = plan(&u, &w.observe(), t(w.now));
        assert_eq!(d.actions, [Action::RemoveFinalizer], "status lost: {lost}");
    }
}

#[test]
fn a_destination_changed_mid_hop_or_below_what_ran_is_refused() {
    // Both Deployments already run 3.150.0 and its rows finished, but the hop's end is not
    // recorded yet: the destination moves below it. Every gate of the new road holds, only the
    // recorded road says 3.150.0 ran.
    let mut w = Chart::new(chart_spec("3.150.0"), "3.100.0");
    while image(&w.worker) != "langfuse/langfuse-worker:3.150.0" {
        assert!(w.history.len() < 10, "the worker never moved");
        w.step();
    }
    let writes = w.writes;
    let mut u = w.upgrade.clone();
    u.spec.target.version = "3.120.0".into();
    w.upgrade = u;
    for _ in 0..3 {
        let d = w.step();
        assert_eq!(d.phase, Phase::Blocked, "{:?}", d.conditions);
        let road = d.conditions.iter().find(|c| c.type_ == c::ROAD_FOLLOWED).unwrap();
        assert_eq!(road.reason, c::reason::DOWNGRADED, "{}", road.message);
    }
    assert_eq!(w.writes, writes, "nothing written below what ran");
    assert_eq!(image(&w.web), "langfuse/langfuse:3.150.0");
    assert!(
        w.status()
            .road
            .iter()
            .any(|r| r.version == "3.150.0" && r.started_at.is_some()),
        "the started hop is kept"
    );
    // Back to the destination under way: it finishes.
    let mut u = w.upgrade.clone();
    u.spec.target.version = "3.150.0".into();
    w.upgrade = u;
    w.run_until(Phase::Completed, 10);
}

/// The catalog is an input of the plan: the same cluster, planned over a catalog whose v4 needs
/// a newer ClickHouse, is held at the infrastructure gate; over the installed one it is not.
#[test]
fn the_plan_follows_the_catalog_it_is_given() {
    let w = Chart::new(chart_spec("4.16.0"), "3.225.4");
    let obs = w.observe();
    let infrastructure = |d: &Decision| {
        let line = d.status.checks.iter().find(|c| c.name == "infrastructure").cloned();
        line.map(|c| (c.result, c.message)).expect("an infrastructure line")
    };
    let installed = crate::testing::catalog();
    let (result, _) = infrastructure(&super::plan_over(&w.upgrade, &obs, installed, t(0)));
    assert_eq!(result, crate::api::CheckResult::Pass);
    let mut stricter = installed.clone();
    for r in stricter.requirements.iter_mut().filter(|r| r.major == 4) {
        r.clickhouse = "27.1".into();
    }
    let (result, message) = infrastructure(&super::plan_over(&w.upgrade, &obs, &stricter, t(0)));
    assert_eq!(result, crate::api::CheckResult::Fail);
    assert!(message.contains("ClickHouse 26.4.1.1 is older than 27.1"), "{message}");
}

/// What v4 needs beyond the versions, read before its hop from any source: Redis with
/// noeviction, ClickHouse in UTC, the system tables v4 reads; each unmet one named with its fix
/// in preflight and again at the hop, nothing touched until all hold.
#[test]
fn the_v4_hop_waits_for_noeviction_utc_and_the_system_grants_v4_uses() {
    let mut s = chart_spec("4.16.0");
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = Chart::new(s, "3.225.4");
    w.redis_policy = "allkeys-lru".into();
    w.v4.timezone = "Europe/Berlin".into();
    w.v4.denied_tables = vec!["parts".into(), "query_log".into()];
    w.v4.free_bytes = Some(30 << 30);
    let d = w.run_until(Phase::Blocked, 5);
    assert_eq!(w.writes, 0);
    let infra = d.status.checks.iter().find(|c| c.name == "infrastructure").unwrap();
    for words in [
        "maxmemory-policy allkeys-lru",
        "noeviction",
        "time zone Europe/Berlin",
        "GRANT SELECT ON system.parts TO <user>",
        "GRANT SELECT ON system.query_log TO <user>",
    ] {
        assert!(infra.message.contains(words), "{words}: {}", infra.message);
    }
    assert!(!infra.message.contains("system.mutations"), "{}", infra.message);
    let disk = d.status.checks.iter().find(|c| c.name == "v4Headroom").unwrap();
    assert_eq!(disk.result, crate::api::CheckResult::Warn, "{}", disk.message);
    assert!(
        disk.message.contains("30.0 GiB free") && disk.message.contains("observations takes 20.0 GiB"),
        "{}",
        disk.message
    );
    // Fixed one by one: still refused while any remains, then it goes.
    w.redis_policy = String::new();
    let d = w.run_until(Phase::Blocked, 3);
    let line = d.status.checks.iter().find(|c| c.name == "v4Headroom").unwrap();
    assert!(
        line.message.contains("did not report its maxmemory-policy"),
        "{}",
        line.message
    );
    w.redis_policy = "noeviction".into();
    w.v4.timezone = "UTC".into();
    let d = w.run_until(Phase::Blocked, 3);
    let infra = d.status.checks.iter().find(|c| c.name == "infrastructure").unwrap();
    assert!(infra.message.contains("system.parts"), "{}", infra.message);
    assert!(!infra.message.contains("noeviction"), "{}", infra.message);
    assert_eq!(w.writes, 0);
    w.v4.denied_tables.clear();
    w.run_until(Phase::Completed, 30);
}

/// Judged again right before the hop, not only at preflight: Redis changed to evict keys while
/// the road walked to the stop holds the v4 hop there.
#[test]
fn an_eviction_policy_set_on_the_way_holds_the_v4_hop_at_the_stop() {
    let mut s = chart_spec("4.16.0");
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = Chart::new(s, "3.100.0");
    for _ in 0..60 {
        w.step();
        if image(&w.web).ends_with(":3.225.4") {
            break;
        }
    }
    w.redis_policy = "volatile-lru".into();
    let d = w.run_until(Phase::Blocked, 60);
    let road = d.conditions.iter().find(|c| c.type_ == c::ROAD_FOLLOWED).unwrap();
    assert_eq!(road.reason, c::reason::HOP_BLOCKED, "{}", road.message);
    assert!(
        road.message.contains("maxmemory-policy volatile-lru"),
        "{}",
        road.message
    );
    assert!(image(&w.web).ends_with(":3.225.4"), "{}", image(&w.web));
    w.redis_policy = "noeviction".into();
    w.run_until(Phase::Completed, 30);
    assert!(image(&w.web).ends_with(":4.16.0"), "{}", image(&w.web));
}

/// Where the cluster is on, v4 needs the cluster grants; where the historic backfill will run,
/// its grants on the sorting table: each missing one is its GRANT.
#[test]
fn cluster_and_backfill_grants_are_asked_only_where_they_are_used() {
    let mut s = chart_spec("4.16.0");
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    s.clickhouse.cluster_enabled = true;
    s.clickhouse.database = Some("lf".into());
    let mut w = Chart::new(s, "3.225.4");
    w.v4.grants =
        crate::verify::grants::Grants::parse(&["GRANT SELECT, INSERT, ALTER, CREATE ON lf.* TO u".to_string()]);
    let d = w.run_until(Phase::Blocked, 5);
    let infra = d.status.checks.iter().find(|c| c.name == "infrastructure").unwrap();
    assert!(
        infra.message.contains("GRANT CLUSTER ON *.* TO <user>"),
        "{}",
        infra.message
    );
    assert!(
        infra.message.contains("GRANT READ ON REMOTE TO <user>"),
        "{}",
        infra.message
    );
    assert!(
        !infra.message.contains("SYSTEM MERGES"),
        "the backfill is off: {}",
        infra.message
    );
    // The backfill turned on: its grants too (ALTER on lf.* already covers ALTER SETTINGS).
    let mut u = w.upgrade.clone();
    u.spec.target.extra_env.push(k8s_openapi::api::core::v1::EnvVar {
        name: crate::resources::v4_env::HISTORIC_BACKFILL.into(),
        value: Some("true".into()),
        value_from: None,
    });
    u.spec.clickhouse.cluster_enabled = false;
    w.upgrade = u;
    w.v4.grants = crate::verify::grants::Grants::parse(&[
        "GRANT SELECT, INSERT, ALTER, CREATE ON lf.* TO u".to_string(),
        "GRANT CLUSTER ON *.* TO u".to_string(),
    ]);
    let d = w.run_until(Phase::Blocked, 3);
    let infra = d.status.checks.iter().find(|c| c.name == "infrastructure").unwrap();
    assert!(
        infra
            .message
            .contains("GRANT SYSTEM SYNC REPLICA ON lf.observations_pid_tid_sorting TO <user>")
            && infra
                .message
                .contains("GRANT SYSTEM MERGES ON lf.observations_pid_tid_sorting TO <user>"),
        "{}",
        infra.message
    );
    assert!(!infra.message.contains("ALTER SETTINGS"), "{}", infra.message);
    assert!(
        !infra.message.contains("REMOTE"),
        "the cluster is off: {}",
        infra.message
    );
    assert_eq!(w.writes, 0);
}

/// The chart's web has no startup probe and a liveness probe that kills a pod migrating for
/// 70 s: each hop's web gets the operator's (15 minutes), and once the road is done it is taken
/// away again, at the release running; a probe of the user's own is never touched.
#[test]
fn the_hops_give_web_a_startup_probe_and_take_it_away_at_the_end() {
    let mut w = Chart::new(chart_spec("3.225.4"), "3.100.0");
    let probe_of = |d: &Deployment| {
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
            .startup_probe
            .clone()
    };
    assert!(probe_of(&w.web).is_none(), "the chart gives none");
    let mut seen = None;
    for _ in 0..40 {
        w.step();
        if image(&w.web).ends_with(":3.225.4") {
            seen = probe_of(&w.web);
            break;
        }
    }
    let probe = seen.expect("the hop's web apply carries a startup probe");
    assert_eq!(probe.failure_threshold.unwrap() * probe.period_seconds.unwrap(), 900);
    assert_eq!(
        probe.http_get.as_ref().and_then(|h| h.path.as_deref()),
        Some("/api/public/health")
    );
    let writes = w.writes;
    w.run_until(Phase::Completed, 30);
    assert!(probe_of(&w.web).is_none(), "taken away at the end");
    assert!(image(&w.web).ends_with(":3.225.4"));
    assert_eq!(w.writes, writes + 2, "the worker's image, then web without the probe");
    // The user's own probe stays theirs: never replaced, never removed.
    let mut w = Chart::new(chart_spec("3.225.4"), "3.100.0");
    let own = k8s_openapi::api::core::v1::Probe {
        period_seconds: Some(30),
        failure_threshold: Some(60),
        ..Default::default()
    };
    w.web.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].startup_probe = Some(own.clone());
    w.run_until(Phase::Completed, 60);
    assert_eq!(probe_of(&w.web), Some(own));
}

/// A schema left dirty by a web pod killed mid-migration: refused with the repair for its
/// height (the release and file of that migration, the version to force), nothing touched.
#[test]
fn a_dirty_schema_is_refused_with_the_repair_for_its_height() {
    let mut s = chart_spec("4.16.0");
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = Chart::new(s, "3.225.4");
    w.ch_dirty = true;
    let d = w.run_until(Phase::Blocked, 5);
    assert_eq!(w.writes, 0);
    let line = d.status.checks.iter().find(|c| c.name == "clickhouse").unwrap();
    for words in ["dirty at 37", "0037_*.up.sql", "VALUES (36, 0,", "Scale web to one pod"] {
        assert!(line.message.contains(words), "{words}: {}", line.message);
    }
    w.ch_dirty = false;
    w.run_until(Phase::Completed, 30);
}

/// A v3 patch newer than the catalog (3.225.5, a security fix) is a known source: its facts are
/// the stop's and are checked (a row it must have registered, missing, is said), not skipped.
#[test]
fn a_patch_of_the_stop_is_a_source_whose_facts_are_checked() {
    let mut s = chart_spec("4.16.0");
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = Chart::new(s, "3.225.5");
    let dropped = w.rows.pop().expect("3.225.4's rows registered").name;
    let d = w.run_until(Phase::Blocked, 5);
    let why: Vec<&str> = d.status.checks.iter().map(|c| c.message.as_str()).collect();
    assert!(
        why.iter()
            .any(|m| m.contains("3.225.5's web has not registered") && m.contains(&dropped)),
        "{why:#?}"
    );
    assert_eq!(w.writes, 0);
    w.web_started(Version::parse("3.225.5").unwrap());
    w.worker_started();
    w.run_until(Phase::Completed, 30);
    assert!(image(&w.web).ends_with(":4.16.0"));
}

/// A catalog that learns a newer patch of the required stop mid-road (3.225.5) never moves a
/// stop already taken: the rest of the road goes on from the stop reached; a road not yet under
/// way takes the newer stop. Each hop records the catalog revision that planned it.
#[test]
fn a_newer_catalog_never_moves_a_stop_already_taken() {
    let mut newer = crate::catalog::Catalog::builtin();
    newer.known.v3 = Version::parse("3.225.5").unwrap();
    newer.revision = "rev-newer".into();
    let w = Chart::new(chart_spec("4.16.0"), "3.100.0");
    let mut u = w.upgrade.clone();
    let status = u.status.get_or_insert_with(Default::default);
    status.source_version = Some("3.100.0".into());
    let obs = w.observe();
    let road_of = |u: &crate::api::LangfuseUpgrade| {
        let p = Planner::new(u, &obs, &newer, t(0));
        crate::controller::plan::in_place::planned(&p)
            .unwrap()
            .iter()
            .map(|h| format!("{}->{}", h.from, h.to))
            .collect::<Vec<_>>()
    };
    assert_eq!(road_of(&u), ["3.100.0->3.225.5", "3.225.5->4.16.0"]);
    let hop = crate::catalog::road::road(
        crate::testing::catalog(),
        Version::parse("3.100.0").unwrap(),
        Version::parse("3.225.4").unwrap(),
        false,
    )
    .unwrap();
    let mut taken = crate::controller::plan::in_place::stop_of(&hop[0], crate::api::StopState::Done);
    (taken.started_at, taken.finished_at) = (Some(crate::testing::time(1)), Some(crate::testing::time(2)));
    u.status.as_mut().unwrap().road = vec![taken];
    assert_eq!(road_of(&u), ["3.100.0->3.225.4", "3.225.4->4.16.0"]);
    // The hop's start records the revision that planned it.
    let w = worker_on_the_stop();
    let stop = w.status().road.into_iter().find(|r| r.version == "3.225.4").unwrap();
    assert_eq!(
        stop.catalog.as_deref(),
        Some(crate::testing::catalog().revision.as_str())
    );
    assert!(stop.catalog.unwrap().starts_with("rev-"));
}

/// Once completed, status says whether what runs can go back to the official chart, or what
/// blocks it.
#[test]
fn completed_says_whether_the_chart_can_take_over() {
    let mut w = Chart::new(chart_spec("3.225.4"), "3.100.0");
    w.run_until(Phase::Completed, 40);
    let d = w.step();
    let note = d.status.handoff.expect("said once completed");
    assert!(note.starts_with("blocked: SALT is not set"), "{note}");
    let salt = |name: &str| k8s_openapi::api::core::v1::EnvVar {
        name: name.into(),
        value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
            secret_key_ref: Some(k8s_openapi::api::core::v1::SecretKeySelector {
                name: "langfuse-app".into(),
                key: name.to_lowercase(),
                optional: None,
            }),
            ..Default::default()
        }),
        value: None,
    };
    for d in [&mut w.web, &mut w.worker] {
        let c = &mut d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0];
        let bucket = k8s_openapi::api::core::v1::EnvVar {
            name: "LANGFUSE_S3_EVENT_UPLOAD_BUCKET".into(),
            value: Some("langfuse-events".into()),
            value_from: None,
        };
        c.env = Some(vec![
            salt("SALT"),
            salt("NEXTAUTH_SECRET"),
            salt("DATABASE_URL"),
            bucket,
        ]);
    }
    let d = w.step();
    let note = d.status.handoff.unwrap();
    assert!(note.starts_with("possible: kubectl lfu handoff"), "{note}");
}
