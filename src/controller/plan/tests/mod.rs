//! Plan tests: a small simulated cluster applies each decision's writes the way the apiserver
//! and the Deployment controller would, so whole upgrades run through the pure plan, with the
//! invariants of DESIGN §2 checked after every step.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;

use super::*;
use crate::api::conditions as c;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{CheckResult, LangfuseUpgradeSpec, LangfuseUpgradeStatus, WaivableCheck};
use crate::controller::observed::Endpoint;
use crate::controller::observed::Reading;
use crate::controller::report::next_status;
use crate::migrations::{MigrationRow, PostgresFacts, TableCounts};
use crate::resources::deployments::{MIGRATIONS_ENV, migrations_enabled};
use crate::resources::labels::{Role, UPGRADE_LABEL, selector_matches, v3_selector};
use crate::resources::service::selector_of;
use crate::testing::*;
use crate::verify::ClickHouseFacts;

/// One `background_migrations` row as the simulated runner keeps it.
#[derive(Clone, Debug)]
struct SimRow {
    name: &'static str,
    table: Option<&'static str>,
    finished: bool,
    failed: Option<String>,
    batch: Option<i64>,
    cursor: Option<i64>,
    locked_at: Option<i64>,
    progress: u32,
    /// A re-run bounded to late rows (RerunWindow) is pending.
    rerun: bool,
    /// `args.envGate`; the simulated worker runs v3 defaults, where every gate is off.
    gate: Option<&'static str>,
}

fn image_version_of(d: &Deployment) -> Option<crate::version::Version> {
    let image = d
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()?;
    crate::version::Version::parse(crate::version::image_tag(&image)?)
}

/// Langfuse's migration manager (reference §1): looks for work only at worker start, picks by
/// name, failed rows do not block later ones, heartbeat keeps `locked_at` fresh.
#[derive(Clone, Debug)]
struct Runner {
    rows: Vec<SimRow>,
    running: bool,
    /// The worker died without releasing its lock.
    killed: bool,
    /// (row, group size): more rows than the batch share one created_at.
    trap: Option<(usize, i64)>,
    /// (row, largest batch that fits the Node string limit).
    napi: Option<(usize, i64)>,
    /// (row, failures left) of some other error.
    flaky: Option<(usize, u32)>,
    starts: u32,
}

impl SimRow {
    fn new(name: &'static str, table: Option<&'static str>, gate: Option<&'static str>) -> Self {
        Self {
            name,
            table,
            finished: false,
            failed: None,
            batch: None,
            cursor: None,
            locked_at: None,
            progress: 0,
            rerun: false,
            gate,
        }
    }
}

impl Default for Runner {
    fn default() -> Self {
        let tables = [None, Some("traces"), Some("observations"), Some("scores")];
        let rows = crate::migrations::V3_MIGRATIONS
            .iter()
            .zip(tables)
            .map(|(name, table)| SimRow::new(name, table, None))
            .collect();
        Self {
            rows,
            running: false,
            killed: false,
            trap: None,
            napi: None,
            flaky: None,
            starts: 0,
        }
    }
}

impl Runner {
    fn start(&mut self, now: i64) {
        self.running = true;
        self.killed = false;
        self.starts += 1;
        for r in &mut self.rows {
            // SIGTERM of the old pod released its lock.
            if r.locked_at.is_some() && !r.finished {
                r.locked_at = None;
            }
        }
        let _ = now;
    }

    /// What a web of release `v` does at start (its Prisma migrations): register the release's
    /// rows and delete those it no longer has, as the release catalog says.
    fn register(&mut self, v: crate::version::Version) {
        let catalog = crate::catalog::Catalog::builtin();
        for m in catalog.rows_at(v) {
            if self.rows.iter().any(|r| r.name == m.name) {
                continue;
            }
            let name = Box::leak(m.name.clone().into_boxed_str());
            let gate = m.gate.clone().map(|g| &*Box::leak(g.into_boxed_str()));
            self.rows.push(SimRow::new(name, None, gate));
        }
        self.rows.retain(|r| !catalog.removed_by(v, r.name));
    }

    fn row(&mut self, name: &str) -> &mut SimRow {
        self.rows.iter_mut().find(|r| r.name == name).expect("known migration")
    }

    fn remedy(&mut self, remedy: &crate::databases::Remedy) {
        use crate::databases::Remedy;
        match remedy {
            Remedy::SetBatchSize { name, size } => self.row(name).batch = Some(*size),
            Remedy::ClearFailure { name } => self.row(name).failed = None,
            Remedy::RerunWindow { name, .. } => {
                let r = self.row(name);
                r.finished = false;
                r.rerun = true;
                r.progress = 0;
                r.cursor = None;
            }
            // Beside v2 there is no orphan row: the road from v2 never writes this remedy.
            Remedy::FinishOrphan { name, .. } => panic!("no orphan row on the road from v2: {name}"),
            Remedy::ResetBackfillRow { name, .. } => panic!("no v4 backfill row on the road from v2: {name}"),
        }
    }

    /// One step of the worker; returns tables whose late rows were copied.
    fn tick(&mut self, now: i64) -> Vec<&'static str> {
        let mut copied = Vec::new();
        if !self.running || self.killed {
            return copied;
        }
        let Some(i) = self
            .rows
            .iter()
            .position(|r| !r.finished && r.failed.is_none() && r.gate.is_none())
        else {
            self.running = false;
            return copied;
        };
        let batch = self.rows[i].batch.unwrap_or(crate::migrations::DEFAULT_BATCH_SIZE);
        let row = &mut self.rows[i];
        row.locked_at = Some(now);
        if let Some((j, limit)) = self.napi
            && j == i
            && batch > limit
        {
            row.failed = Some("Failed to convert rust String into napi string".into());
            row.locked_at = None;
            return copied;
        }
        if let Some((j, left)) = self.flaky.as_mut()
            && *j == i
            && *left > 0
        {
            *left -= 1;
            row.failed = Some("Connection terminated unexpectedly".into());
            row.locked_at = None;
            return copied;
        }
        if let Some((j, group)) = self.trap
            && j == i
            && batch <= group
        {
            row.cursor.get_or_insert(now - 5000);
            return copied;
        }
        row.cursor = Some(now - 1000 + i64::from(row.progress) * 10);
        row.progress += 1;
        if row.progress >= 2 {
            row.finished = true;
            row.locked_at = None;
            if row.rerun {
                row.rerun = false;
                copied.extend(row.table);
            }
        }
        copied
    }

    fn rows(&self) -> Vec<MigrationRow> {
        self.rows
            .iter()
            .map(|r| MigrationRow {
                name: r.name.to_string(),
                finished_at: r.finished.then(|| t(0)),
                failed_at: r.failed.as_ref().map(|_| t(0)),
                failed_reason: r.failed.clone(),
                // As Prisma and the scripts write them: milliseconds.
                locked_at: r.locked_at.map(|x| t(x) + jiff::SignedDuration::from_millis(123)),
                cursor: r.cursor.map(|x| t(x) + jiff::SignedDuration::from_millis(457)),
                oldest_row: None,
                batch_size: r.batch,
                env_gate: r.gate.map(String::from),
                taken: r.locked_at.is_some() || r.finished,
            })
            .collect()
    }
}

/// The copies' tables as counted before the v4 hop, from the three tables' counts.
fn copies_of(
    counts: &TableCounts,
    tables: &[crate::migrations::copies::CopiedTable],
) -> crate::migrations::copies::CopySources {
    use crate::migrations::copies::{CopiedTable, CopySources, SourceCount};
    CopySources {
        since: None,
        tables: tables
            .iter()
            .map(|&table| SourceCount {
                table,
                rows: match table {
                    CopiedTable::Traces => counts.traces,
                    CopiedTable::Observations => counts.observations,
                    CopiedTable::Scores => counts.scores,
                    CopiedTable::DatasetRunItems => 0,
                },
                newest: Some(t(-600)),
            })
            .collect(),
    }
}

/// A status as it comes back from the apiserver (JSON; `metav1.Time` keeps whole seconds).
fn api_round_trip(status: &LangfuseUpgradeStatus) -> LangfuseUpgradeStatus {
    serde_json::from_value(serde_json::to_value(status).unwrap()).unwrap()
}

/// Simulated seconds (offset as `t` offsets them) in epoch milliseconds.
fn s_to_ms(secs: i64) -> i64 {
    t(secs).as_millisecond()
}

/// How the simulated world behaves.
#[derive(Clone)]
struct World {
    upgrade: LangfuseUpgrade,
    cluster: Observed,
    now: i64,
    /// v3 web pods never become ready (a broken image, a bad Secret...).
    web_broken: bool,
    /// Langfuse's migration runner, as the reference describes it.
    runner: Runner,
    pg: TableCounts,
    ch: TableCounts,
    /// The counts over the recent window (shortly before the switch to the cut-off).
    pg_recent: TableCounts,
    ch_recent: TableCounts,
    late_writes: TableCounts,
    newest_write: Option<i64>,
    /// The milliseconds of the newest row within its second.
    write_millis: i64,
    postgres_down: bool,
    /// ClickHouse refuses every connection.
    clickhouse_down: bool,
    /// What the preflight scan for same-created_at groups finds.
    scan_groups: Vec<(crate::migrations::Table, i64)>,
    /// v2 keeps writing after the cut-off (late rows reappear after each copy).
    v2_never_quiet: bool,
    /// `SELECT version()` of ClickHouse.
    ch_version: String,
    /// `schema_migrations` height: each web raises it to its release's at start.
    ch_height: i64,
    /// What Prometheus answers the error-ratio analysis.
    error_ratio: Result<crate::analysis::ErrorRatioFacts, String>,
    /// A reconcile looks again when its decision only records facts (`look_ahead`); off, the
    /// walk stops in the stage between (Verifying, for the tests of the verification itself).
    look_ahead: bool,
    /// What the handoff marked `helm.sh/resource-policy: keep`.
    protected: Vec<String>,
    history: Vec<Decision>,
}

impl World {
    fn new(spec: LangfuseUpgradeSpec) -> Self {
        let mut upgrade = upgrade(spec, Default::default());
        upgrade.metadata.finalizers = None;
        Self {
            upgrade,
            cluster: untouched(),
            now: 0,
            web_broken: false,
            runner: Runner::default(),
            pg: counts(1000),
            ch: counts(1000),
            pg_recent: counts(50),
            ch_recent: counts(50),
            late_writes: TableCounts::default(),
            look_ahead: true,
            newest_write: Some(-600),
            write_millis: 369,
            postgres_down: false,
            clickhouse_down: false,
            error_ratio: Ok(Default::default()),
            scan_groups: Vec::new(),
            v2_never_quiet: false,
            ch_version: "24.8.4.13".into(),
            ch_height: 8,
            protected: Vec::new(),
            history: Vec::new(),
        }
    }

    fn status(&self) -> LangfuseUpgradeStatus {
        self.upgrade.status.clone().unwrap_or_default()
    }

    /// What the observation would bring, given what the plan says it needs.
    fn observe(&self) -> Observed {
        self.observe_with(&needs(&self.upgrade, t(self.now)))
    }

    fn observe_with(&self, n: &Needs) -> Observed {
        if n.nothing {
            return Observed::default();
        }
        let mut obs = self.cluster.clone();
        obs.postgres = Reading::when(!n.postgres.is_empty(), || {
            if self.postgres_down {
                return Err(crate::controller::observed::PostgresError::Unreachable(
                    "connection refused".to_string(),
                ));
            }
            let mut pg = PostgresFacts {
                server_version_num: Some(150008),
                ..Default::default()
            };
            if n.postgres.migrations {
                pg.migrations = self.runner.rows();
            }
            if n.postgres.same_created_at_scan.is_some() {
                pg.same_created_at_groups = self.scan_groups.clone();
            }
            if n.postgres.newest_write {
                // Prisma's TIMESTAMP(3): real rows carry milliseconds.
                pg.newest_write = self
                    .newest_write
                    .map(|s| Timestamp::from_millisecond(s_to_ms(s) + self.write_millis).unwrap());
            }
            if n.postgres.counts_until.is_some() {
                pg.counts = Some(self.pg.clone());
                pg.recent_counts = n.postgres.recent_after.map(|_| self.pg_recent.clone());
            }
            if n.postgres.late_writes_after.is_some() {
                pg.late_writes = Some(self.late_writes.clone());
            }
            // Before the v4 hop: the copies' sources (no dataset run items in this v2).
            if !n.postgres.copy_sources.is_empty() {
                pg.copy_sources = Some(copies_of(&self.pg, &n.postgres.copy_sources));
            }
            Ok(pg)
        });
        obs.clickhouse = Reading::when(!n.clickhouse.is_empty(), || {
            if self.clickhouse_down {
                return Err("connection refused".to_string());
            }
            let mut ch = healthy_clickhouse();
            ch.version = Some(self.ch_version.clone());
            ch.schema = Some((self.ch_height, false));
            if n.clickhouse.counts_until.is_some() {
                ch.counts = Some(self.ch.clone());
                ch.recent_counts = n.clickhouse.recent_after.map(|_| self.ch_recent.clone());
            }
            if !n.clickhouse.copy_counts.is_empty() {
                let tables: Vec<_> = n.clickhouse.copy_counts.iter().map(|w| w.table).collect();
                let counted = copies_of(&self.ch, &tables);
                ch.copy_counts = Some(counted.tables.iter().map(|s| (s.table, s.rows)).collect());
            }
            // As the live reader: grants only when asked for (preflight).
            if !n.clickhouse.objects {
                ch.grants = Reading::NotAsked;
            }
            Ok(ch)
        });
        if let Some(q) = &n.error_ratio {
            // The window is read only once the shift is a whole window old.
            obs.error_ratio = self
                .error_ratio
                .clone()
                .map(|mut f| {
                    if q.window.is_none() {
                        f.window_min = None;
                        f.window_points = None;
                    }
                    f
                })
                .into();
        }
        if n.stores {
            obs.redis = Reading::Answered(crate::databases::RedisFacts {
                version: "7.2.4".into(),
                tls: false,
                eviction_policy: Some("noeviction".into()),
            });
            obs.s3 = Reading::Answered(crate::databases::S3Facts {
                marker: Some("events/lfu-preflight-0".into()),
            });
        }
        obs
    }

    /// One reconcile: observe, plan, apply the writes, write status.
    fn step(&mut self) -> Decision {
        let n = needs(&self.upgrade, t(self.now));
        let first = self.observe_with(&n);
        let mut decision = plan(&self.upgrade, &first, t(self.now));
        // As the reconcile: one more look when the decision only records facts.
        if let Some(wider) = look_ahead(&self.upgrade, &decision, &n, t(self.now)).filter(|_| self.look_ahead) {
            if let Some((_, second)) = second_look(&self.upgrade, &first, self.observe_with(&wider), t(self.now)) {
                decision = second;
            }
        }
        for action in &decision.actions {
            if *action == Action::RecordFacts {
                // The executor writes the decision's status here, before the writes after it.
                let status = next_status(&self.upgrade, &decision, t(self.now));
                self.upgrade.status = Some(api_round_trip(&status));
                continue;
            }
            self.apply(action);
        }
        // Through the API, as the real status is: times keep whole seconds only. Every time the
        // plan records is already at that precision, else the status would differ from its own
        // round trip and be rewritten at rest.
        let status = next_status(&self.upgrade, &decision, t(self.now));
        let round_tripped = api_round_trip(&status);
        assert_eq!(round_tripped, status, "a recorded time has sub-second precision");
        self.upgrade.status = Some(round_tripped);
        self.settle();
        self.check_invariants(&decision);
        self.now += decision.requeue.as_secs().clamp(1, 60) as i64;
        self.history.push(decision.clone());
        decision
    }

    /// v3 web loses every ready pod, and any it rolls out stays unready.
    fn break_web(&mut self) {
        self.cluster
            .web
            .as_mut()
            .unwrap()
            .status
            .as_mut()
            .unwrap()
            .available_replicas = Some(0);
        self.web_broken = true;
    }

    fn run_until(&mut self, phase: Phase, max: usize) -> Decision {
        for _ in 0..max {
            let d = self.step();
            if d.phase == phase {
                return d;
            }
        }
        panic!(
            "never reached {phase}; phases: {:?}",
            self.history.iter().map(|d| d.phase).collect::<Vec<_>>()
        );
    }

    fn apply(&mut self, action: &Action) {
        let c = &mut self.cluster;
        match action {
            Action::AddFinalizer => self.upgrade.metadata.finalizers = Some(vec![crate::api::FINALIZER.into()]),
            Action::RemoveFinalizer => self.upgrade.metadata.finalizers = Some(vec![]),
            Action::ApplyDeployment(d) => {
                let mut d = rolled_out(d.as_ref().clone());
                let is_web = d.metadata.name.as_deref() == Some(&format!("{V2_NAME}-web"));
                if is_web && self.web_broken {
                    let s = d.status.as_mut().unwrap();
                    s.available_replicas = Some(0);
                    s.ready_replicas = Some(0);
                }
                if is_web && let Some(v) = image_version_of(&d) {
                    self.runner.register(v);
                    let height = crate::catalog::Catalog::builtin().schema_height(v) as i64;
                    self.ch_height = self.ch_height.max(height);
                }
                // Invariant 11: the fact a data-moving write depends on is durable before it.
                let durable = self.upgrade.status.clone().unwrap_or_default();
                let created = if is_web { c.web.is_none() } else { c.worker.is_none() };
                assert!(
                    !created
                        || durable.provisioning_started_at.is_some()
                        || super::in_place::Road::of(&durable).is_in_place(),
                    "a v3 Deployment created before provisioningStartedAt was recorded"
                );
                if !is_web && migrations_enabled(&d) {
                    assert!(
                        durable.cutoff.is_some() && durable.migrations_enabled_at.is_some()
                            || super::in_place::Road::of(&durable).is_in_place(),
                        "the migrations turned on before the cut-off was recorded"
                    );
                    self.runner.start(self.now);
                }
                if !is_web
                    && let Some(before) = &c.worker
                    && migrations_enabled(before)
                    && !migrations_enabled(&d)
                {
                    panic!("the worker's background migrations turned off again");
                }
                if is_web { c.web = Some(d) } else { c.worker = Some(d) }
            }
            Action::DeleteDeployment(name) => {
                if c.web.as_ref().and_then(|d| d.metadata.name.as_ref()) == Some(name) {
                    c.web = None;
                }
                if c.worker.as_ref().and_then(|d| d.metadata.name.as_ref()) == Some(name) {
                    c.worker = None;
                }
            }
            Action::RetireDeployment(name) => {
                // Only after the Service's EndpointSlices listed the chart's pods alone.
                let switched = self
                    .upgrade
                    .status
                    .as_ref()
                    .and_then(|s| s.chart_handoff.as_ref())
                    .is_some_and(|h| h.switched_at.is_some());
                assert!(switched, "{name} retired before the switch to the chart was confirmed");
                for slot in [&mut c.web, &mut c.worker] {
                    if slot.as_ref().and_then(|d| d.metadata.name.as_ref()) == Some(name) {
                        *slot = None;
                    }
                }
            }
            Action::Protect(kept) => self.protected.push(kept.to_string()),
            Action::ReleaseDeployment(name) => {
                for d in [&mut c.web, &mut c.worker].into_iter().flatten() {
                    if d.metadata.name.as_ref() == Some(name) {
                        d.metadata.owner_references = None;
                    }
                }
            }
            Action::RecordFacts => unreachable!("written by step"),
            Action::ApplySelector { selector, .. } => {
                // Invariant: the selector being replaced is durable before the Service changes
                // (the one it has now, or, when it is one of ours, some record).
                let current = c.service.as_ref().map(selector_of).unwrap_or_default();
                let durable = self.upgrade.status.as_ref().and_then(|s| s.previous_selector.clone());
                let v3 = v3_selector(UPGRADE, Role::Web);
                // The handoff's switch: the selector it replaces is recorded first.
                let handoff = self.upgrade.spec.handoff.as_ref();
                if handoff.is_some_and(|h| *selector == crate::handoff::chart::selector(&h.release, Role::Web)) {
                    let recorded = self
                        .upgrade
                        .status
                        .as_ref()
                        .and_then(|s| s.chart_handoff.as_ref())
                        .and_then(|h| h.previous_selector.clone());
                    assert_eq!(recorded, Some(current.clone()), "the handoff switched before recording");
                }
                // A withdrawn handoff puts back ours over the chart's: the chart's selector is
                // the one spec.handoff names, so nothing unrecorded is lost.
                let withdrawing = current.get("app.kubernetes.io/instance").is_some_and(|r| {
                    self.upgrade
                        .status
                        .as_ref()
                        .and_then(|s| s.chart_handoff.as_ref())
                        .is_some_and(|h| &h.release == r)
                });
                assert!(
                    durable.as_ref().is_some_and(|d| {
                        *d == current || current.contains_key(UPGRADE_LABEL) || *selector != v3 || withdrawing
                    }),
                    "the selector {current:?} was switched before it was recorded (recorded: {durable:?})"
                );
                c.service.as_mut().unwrap().spec.as_mut().unwrap().selector = Some(selector.clone());
            }
            Action::ScaleSource(n) => {
                let durable = self.upgrade.status.clone().unwrap_or_default();
                assert!(
                    *n > 0 || durable.verified_at.is_some(),
                    "v2 scaled to 0 before verifiedAt was recorded"
                );
                // Only the replica count moves; the pod template stays as the user wrote it.
                let source = c.source.as_mut().unwrap();
                source.spec.as_mut().unwrap().replicas = Some(*n);
                source.status = v2_deployment(*n).status;
            }
            Action::DeleteSource => c.source = None,
            Action::Remedy(r) => self.runner.remedy(r),
            Action::SetFlags(change) => {
                for d in [&mut c.source, &mut c.web, &mut c.worker].into_iter().flatten() {
                    if d.metadata.name.as_deref() != Some(change.deployment.as_str()) {
                        continue;
                    }
                    let pod = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
                    let container = pod.containers.iter_mut().find(|k| k.name == change.container).unwrap();
                    let env = container.env.get_or_insert_with(Vec::new);
                    for var in &change.env {
                        env.retain(|e| e.name != var.name);
                        env.push(var.clone());
                    }
                    *d = rolled_out(d.clone());
                }
            }
            Action::SetImage(change) => {
                for d in [&mut c.source, &mut c.web, &mut c.worker].into_iter().flatten() {
                    if d.metadata.name.as_deref() != Some(change.deployment.as_str()) {
                        continue;
                    }
                    let pod = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
                    let container = pod.containers.iter_mut().find(|k| k.name == change.container).unwrap();
                    container.image = Some(change.image.clone());
                    let env = container.env.get_or_insert_with(Vec::new);
                    for var in &change.env {
                        env.retain(|e| e.name != var.name);
                        env.push(var.clone());
                    }
                    *d = rolled_out(d.clone());
                    if change.container.contains("worker") {
                        self.runner.start(self.now);
                    } else if let Some(v) = image_version_of(d) {
                        self.runner.register(v);
                    }
                }
            }
        }
    }

    /// Endpoints and pods follow the objects, as the EndpointSlice controller makes them.
    fn settle(&mut self) {
        let c = &mut self.cluster;
        c.v3_web_pods.clear();
        let web_ready = c
            .web
            .as_ref()
            .and_then(|d| d.status.as_ref())
            .and_then(|s| s.available_replicas)
            .unwrap_or(0);
        let web_pods = c
            .web
            .as_ref()
            .and_then(|d| d.spec.as_ref())
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        for i in 0..web_pods {
            c.v3_web_pods.insert(format!("web-{i}"));
        }
        let selector = c.service.as_ref().map(selector_of).unwrap_or_default();
        let mut endpoints = Vec::new();
        if selector_matches(&selector, &chart_selector()) {
            let v2 = c
                .source
                .as_ref()
                .and_then(|d| d.status.as_ref())
                .and_then(|s| s.replicas)
                .unwrap_or(0);
            endpoints.extend((0..v2).map(|i| Endpoint {
                pod: Some(format!("v2-{i}")),
                ready: true,
            }));
        }
        if let Some(web) = &c.web {
            let labels = web
                .spec
                .as_ref()
                .unwrap()
                .template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .clone()
                .unwrap();
            if selector_matches(&selector, &labels) {
                endpoints.extend((0..web_pods).map(|i| Endpoint {
                    pod: Some(format!("web-{i}")),
                    ready: i < web_ready,
                }));
            }
        }
        if let Some(chart) = &c.chart_web {
            let labels = chart
                .spec
                .as_ref()
                .unwrap()
                .template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .clone()
                .unwrap();
            let (ready, want) = crate::resources::deployments::views::availability(chart);
            if selector_matches(&selector, &labels) {
                let name = chart.metadata.name.clone().unwrap();
                endpoints.extend((0..want).map(|i| Endpoint {
                    pod: Some(format!("{name}-abc-{i}")),
                    ready: i < ready,
                }));
            }
        }
        c.endpoints = endpoints;
        let copied = self.runner.tick(self.now);
        for table in copied {
            // A re-copy of the recent window leaves ClickHouse with every Postgres row of it.
            let (pg, ch, ch_all) = match table {
                "traces" => (self.pg_recent.traces, &mut self.ch_recent.traces, &mut self.ch.traces),
                "observations" => (
                    self.pg_recent.observations,
                    &mut self.ch_recent.observations,
                    &mut self.ch.observations,
                ),
                _ => (self.pg_recent.scores, &mut self.ch_recent.scores, &mut self.ch.scores),
            };
            *ch_all += (pg - *ch).max(0);
            *ch = (*ch).max(pg);
            if self.v2_never_quiet {
                continue;
            }
            match table {
                "traces" => self.late_writes.traces = 0,
                "observations" => self.late_writes.observations = 0,
                "scores" => self.late_writes.scores = 0,
                _ => {}
            }
        }
    }

    /// DESIGN §2, checked on the simulated cluster after every step.
    fn check_invariants(&self, decision: &Decision) {
        let c = &self.cluster;
        let status = self.status();
        let selector = c.service.as_ref().map(selector_of).unwrap_or_default();
        // Invariant 2 is about the switch having happened, not about who edits the Service after.
        let switched = selector == v3_selector(UPGRADE, Role::Web) || status.traffic_shifted_at.is_some();
        for (d, role) in [(&c.web, Role::Web), (&c.worker, Role::Worker)] {
            let Some(d) = d else { continue };
            let labels = d
                .spec
                .as_ref()
                .unwrap()
                .template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .clone()
                .unwrap();
            // 1. The Service selects v3 pods only after the switch, and never the worker.
            if role == Role::Worker || !switched {
                assert!(
                    !selector_matches(&selector, &labels),
                    "Service selects v3 {role:?} pods; phase {}",
                    decision.phase
                );
            }
            // 2. Migrations off until the Service points to v3.
            if !switched {
                assert!(
                    !migrations_enabled(d),
                    "migrations on before the shift; phase {}",
                    decision.phase
                );
            }
            // 3. 3.29.0 while a v2 pod exists.
            let v2_pods = c
                .source
                .as_ref()
                .and_then(|d| d.status.as_ref())
                .and_then(|s| s.replicas)
                .unwrap_or(0);
            let image = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
                .image
                .clone()
                .unwrap();
            // Checked on what this decision wrote: a v3 already past 3.29.0 when a person
            // scales v2 back up is never set back (invariant 10: 3.29.0 cannot start on what
            // the newer release migrated); the upgrade blocks instead.
            let written = decision
                .actions
                .iter()
                .any(|a| matches!(a, Action::ApplyDeployment(w) if w.metadata.name == d.metadata.name));
            if v2_pods > 0 && written {
                assert!(image.ends_with(":3.29.0"), "{image} while v2 runs");
            }
        }
        for action in &decision.actions {
            // 4. v2 retired only after shift, migrations, verification and the delay.
            if action == &Action::ScaleSource(0) {
                assert!(status.traffic_shifted_at.is_some() && status.migrations_finished_at.is_some());
                let verified = status.verified_at.clone().expect("verified before retirement");
                let waited = self.now - verified.0.as_second() + 1_800_000_000;
                assert!(waited >= 3600, "retired {waited}s after verification");
            }
            // 5. Nothing deleted that nobody asked to delete.
            if matches!(action, Action::DeleteSource) {
                assert!(self.upgrade.spec.strategy.delete_source);
            }
            if matches!(action, Action::DeleteDeployment(_)) {
                assert!(self.upgrade.spec.abort || self.upgrade.metadata.deletion_timestamp.is_some());
            }
        }
    }
}

fn phases(w: &World) -> Vec<Phase> {
    let mut out: Vec<Phase> = Vec::new();
    for d in &w.history {
        if out.last() != Some(&d.phase) {
            out.push(d.phase);
        }
    }
    out
}

fn condition<'a>(w: &'a World, type_: &str) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    w.upgrade
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|x| x.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

mod deletion_and_preflight;
mod drain_and_verify;
mod drain_properties;
mod env_as_langfuse_reads_it;
mod flow;
mod handoff;
mod migrations;
mod needs_and_look_ahead;
mod order_of_facts;
mod preflight_table;
mod road;
mod rollback;
mod status_and_cli;
