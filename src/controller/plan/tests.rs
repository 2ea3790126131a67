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
        obs.postgres = (!n.postgres.is_empty()).then(|| {
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
            Ok(pg)
        });
        obs.clickhouse = (!n.clickhouse.is_empty()).then(|| {
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
            // As the live reader: grants only when asked for (preflight).
            if !n.clickhouse.objects {
                ch.grants = None;
            }
            Ok(ch)
        });
        if let Some(q) = &n.error_ratio {
            // The window is read only once the shift is a whole window old.
            obs.error_ratio = Some(self.error_ratio.clone().map(|mut f| {
                if q.window.is_none() {
                    f.window_min = None;
                    f.window_points = None;
                }
                f
            }));
        }
        if n.stores {
            obs.redis = Some(Ok(crate::databases::RedisFacts {
                version: "7.2.4".into(),
                tls: false,
            }));
            obs.s3 = Some(Ok(crate::databases::S3Facts {
                marker: Some("events/lfu-preflight-0".into()),
            }));
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
                    !created || durable.provisioning_started_at.is_some() || super::in_place::in_place_source(&durable),
                    "a v3 Deployment created before provisioningStartedAt was recorded"
                );
                if !is_web && migrations_enabled(&d) {
                    assert!(
                        durable.cutoff.is_some() && durable.migrations_enabled_at.is_some()
                            || super::in_place::in_place_source(&durable),
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
                assert!(
                    durable
                        .as_ref()
                        .is_some_and(|d| *d == current || current.contains_key(UPGRADE_LABEL) || *selector != v3),
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

#[test]
fn happy_path_walks_every_phase_to_completed() {
    let mut w = World::new(spec());
    w.run_until(Phase::Completed, 400);
    assert_eq!(
        phases(&w),
        vec![
            Phase::Provisioning,
            Phase::ShiftingTraffic,
            Phase::Draining,
            // Verifying passes in the reconcile that sees the copies end (the look ahead).
            Phase::Migrating,
            Phase::RetiringSource,
            Phase::Completed
        ]
    );
    let s = w.status();
    assert!(s.verified_at.is_some() && s.source_retired_at.is_some() && s.completed_at.is_some());
    assert_eq!(condition(&w, c::READY).status, "True");
    assert_eq!(condition(&w, c::STALLED).status, "False");
    assert_eq!(condition(&w, c::RECONCILING).status, "False");
    for step in [
        c::PREFLIGHT_PASSED,
        c::TRAFFIC_SHIFTED,
        c::MIGRATIONS_COMPLETE,
        c::VERIFIED,
        c::SOURCE_RETIRED,
    ] {
        assert_eq!(condition(&w, step).status, "True", "{step}");
    }
    // v2 scaled to 0, never deleted; v3 released from the object.
    let v2 = w.cluster.source.as_ref().expect("v2 kept");
    assert_eq!(v2.spec.as_ref().unwrap().replicas, Some(0));
    assert!(w.cluster.web.as_ref().unwrap().metadata.owner_references.is_none());
    assert!(w.cluster.worker.as_ref().unwrap().metadata.owner_references.is_none());
    assert_eq!(s.previous_selector, Some(chart_selector()));
    assert_eq!(s.source_replicas, Some(2));
}

#[test]
fn completed_is_quiet() {
    let mut w = World::new(spec());
    w.run_until(Phase::Completed, 400);
    let before = w.upgrade.status.clone();
    for _ in 0..3 {
        let d = w.step();
        assert_eq!(d.phase, Phase::Completed);
        assert!(d.actions.is_empty(), "writes after completion: {:?}", d.actions);
    }
    assert_eq!(w.upgrade.status, before, "status must not change when nothing changes");
}

#[test]
fn web_starts_with_one_replica_then_scales_and_worker_waits_for_web() {
    let mut w = World::new(spec());
    let first = w.step();
    let applied: Vec<&Deployment> = first
        .actions
        .iter()
        .filter_map(|a| {
            if let Action::ApplyDeployment(d) = a {
                Some(d.as_ref())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(applied.len(), 1, "only web first");
    assert_eq!(applied[0].metadata.name.as_deref(), Some("prod-langfuse-web"));
    assert_eq!(applied[0].spec.as_ref().unwrap().replicas, Some(1));
    let second = w.step();
    let names: Vec<(String, i32)> = second
        .actions
        .iter()
        .filter_map(|a| {
            if let Action::ApplyDeployment(d) = a {
                Some((
                    d.metadata.name.clone().unwrap(),
                    d.spec.as_ref().unwrap().replicas.unwrap(),
                ))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        names,
        vec![("prod-langfuse-web".into(), 2), ("prod-langfuse-worker".into(), 1)]
    );
}

/// The decision points the Service at v3 web.
fn switches_to_v3(d: &Decision) -> bool {
    d.actions
        .iter()
        .any(|a| matches!(a, Action::ApplySelector { selector } if *selector == v3_selector(UPGRADE, Role::Web)))
}

#[test]
fn the_old_selector_is_recorded_ahead_so_the_switch_is_one_write() {
    let mut w = World::new(spec());
    let d = w.run_until(Phase::ShiftingTraffic, 20);
    // Recorded while v3 rolled out: the switching reconcile writes only the Service.
    assert!(!d.actions.contains(&Action::RecordFacts), "{:?}", d.actions);
    assert!(switches_to_v3(&d), "{:?}", d.actions);
    assert_eq!(d.status.previous_selector, Some(chart_selector()));
    assert_eq!(w.status().previous_selector, Some(chart_selector()));
}

#[test]
fn a_selector_changed_after_it_was_recorded_is_recorded_again_before_the_switch() {
    let switches = |d: &Decision| d.actions.iter().any(|a| matches!(a, Action::ApplySelector { .. }));
    // The simulation is deterministic: find the reconcile that switches...
    let mut w = World::new(spec());
    let mut before = 0;
    while !switches(&w.step()) {
        before += 1;
        assert!(before < 50, "never switched");
    }
    // ...then, in a second run, change the selector (a Helm upgrade of v2) just before it.
    let mut w = World::new(spec());
    for _ in 0..before {
        w.step();
    }
    assert_eq!(w.status().previous_selector, Some(chart_selector()), "recorded ahead");
    let mut changed = chart_selector();
    changed.insert("release".into(), "langfuse-2".into());
    w.cluster.service.as_mut().unwrap().spec.as_mut().unwrap().selector = Some(changed.clone());
    let d = w.step();
    let record = d.actions.iter().position(|a| *a == Action::RecordFacts);
    let switch = d.actions.iter().position(|a| matches!(a, Action::ApplySelector { .. }));
    assert!(
        matches!((record, switch), (Some(r), Some(s)) if r < s),
        "{:?}",
        d.actions
    );
    assert_eq!(w.status().previous_selector, Some(changed));
}

#[test]
fn a_selector_of_ours_edited_after_the_switch_is_never_recorded_as_the_one_to_go_back_to() {
    let mut w = World::new(spec());
    w.run_until(Phase::ShiftingTraffic, 20);
    assert!(w.status().traffic_shifted_at.is_none());
    // Someone adds a key to our selector before the shift is recorded.
    let mut edited = v3_selector(UPGRADE, Role::Web);
    edited.insert("extra".into(), "x".into());
    w.cluster.service.as_mut().unwrap().spec.as_mut().unwrap().selector = Some(edited);
    let d = w.step();
    assert!(switches_to_v3(&d), "{:?}", d.actions);
    assert_eq!(w.status().previous_selector, Some(chart_selector()));
}

#[test]
fn every_step_decides_the_same_without_the_phase_field() {
    // Restart in every phase: drop `phase` (and run a fresh plan) and the decision is unchanged.
    let mut w = World::new(spec());
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..400 {
        let obs = w.observe();
        let with_phase = plan(&w.upgrade, &obs, t(w.now));
        let mut lost = w.upgrade.clone();
        lost.status.as_mut().unwrap().phase = None;
        let without = plan(&lost, &obs, t(w.now));
        assert_eq!(with_phase.phase, without.phase);
        assert_eq!(with_phase.actions, without.actions);
        seen.insert(with_phase.phase.as_str());
        if w.step().phase == Phase::Completed {
            break;
        }
    }
    for phase in [
        "Provisioning",
        "ShiftingTraffic",
        "Draining",
        "Migrating",
        "RetiringSource",
        "Completed",
    ] {
        assert!(seen.contains(phase), "never checked {phase}");
    }
}

#[test]
fn a_crash_between_a_write_and_its_status_repeats_nothing_wrong() {
    // Simulate the operator dying after executing a decision's writes but before its status
    // patch: the next plan sees the new cluster with the old status and must converge.
    let mut w = World::new(spec());
    for _ in 0..400 {
        let obs = w.observe();
        let d = plan(&w.upgrade, &obs, t(w.now));
        for a in &d.actions {
            // A fact the executor records before a write is durable; only the final write is lost.
            if *a == Action::RecordFacts {
                let status = next_status(&w.upgrade, &d, t(w.now));
                w.upgrade.status = Some(api_round_trip(&status));
                continue;
            }
            w.apply(a);
        }
        w.settle();
        // The final status write lost. Next reconcile:
        let d2 = w.step();
        for a in &d2.actions {
            assert!(
                !matches!(a, Action::DeleteDeployment(_) | Action::DeleteSource),
                "destructive write after a crash: {a:?}"
            );
        }
        if d2.phase == Phase::Completed {
            return;
        }
    }
    panic!(
        "did not complete with crashes between writes and status: {:?}",
        phases(&w)
    );
}

#[test]
fn manual_promotion_waits_for_approval() {
    let mut s = spec();
    s.strategy.promotion = Promotion::Manual;
    let mut w = World::new(s);
    let d = w.run_until(Phase::AwaitingPromotion, 20);
    assert!(d.actions.iter().all(|a| !matches!(a, Action::ApplySelector { .. })));
    for _ in 0..5 {
        assert_eq!(w.step().phase, Phase::AwaitingPromotion);
    }
    assert_eq!(selector_of(w.cluster.service.as_ref().unwrap()), chart_selector());
    // The annotation works as well as the field.
    w.upgrade.metadata.annotations = Some(std::collections::BTreeMap::from([(
        crate::api::APPROVE_ANNOTATION.to_string(),
        "true".to_string(),
    )]));
    w.run_until(Phase::Completed, 400);
}

#[test]
fn abort_before_retirement_rolls_back_everything() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    assert_eq!(
        selector_of(w.cluster.service.as_ref().unwrap()),
        v3_selector(UPGRADE, Role::Web)
    );
    w.upgrade.spec.abort = true;
    w.run_until(Phase::RolledBack, 40);
    assert_eq!(
        selector_of(w.cluster.service.as_ref().unwrap()),
        chart_selector(),
        "old selector back"
    );
    assert_eq!(
        w.cluster.source.as_ref().unwrap().spec.as_ref().unwrap().replicas,
        Some(2)
    );
    assert!(w.cluster.web.is_none() && w.cluster.worker.is_none(), "v3 gone");
    assert!(
        w.cluster
            .endpoints
            .iter()
            .all(|e| e.pod.as_deref().unwrap().starts_with("v2-"))
    );
    assert_eq!(condition(&w, c::STALLED).status, "True");
    // Terminal: stays rolled back with no writes.
    let d = w.step();
    assert_eq!(d.phase, Phase::RolledBack);
    assert!(d.actions.is_empty());
}

/// Safety review #1 (interleaving A): a replica frozen with the switch to v3 on the wire lands
/// it after the other replica rolled back and deleted v3. The Service must not stay on pods
/// that are gone: the previous selector goes back, and then nothing more is written.
#[test]
fn a_switch_that_lands_after_the_rollback_is_undone() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    w.upgrade.spec.abort = true;
    w.run_until(Phase::RolledBack, 40);
    let service = w.cluster.service.as_mut().unwrap();
    service.spec.as_mut().unwrap().selector = Some(v3_selector(UPGRADE, Role::Web));
    let d = w.step();
    assert_eq!(d.phase, Phase::RolledBack);
    assert_eq!(
        d.actions,
        [Action::ApplySelector {
            selector: chart_selector()
        }]
    );
    assert_eq!(condition(&w, c::READY).reason, "SelectorReverted");
    assert_eq!(selector_of(w.cluster.service.as_ref().unwrap()), chart_selector());
    let d = w.step();
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(condition(&w, c::READY).reason, "RolledBack");
}

#[test]
fn abort_after_retirement_is_refused_and_changes_nothing() {
    let mut s = spec();
    s.target.final_version = Some("3.40.0".into());
    let mut w = World::new(s);
    w.run_until(Phase::Finalizing, 400);
    w.upgrade.spec.abort = true;
    let d = w.step();
    assert_eq!(d.phase, Phase::Blocked);
    assert!(d.actions.is_empty());
    assert_eq!(condition(&w, c::READY).reason, "AbortTooLate");
}

#[test]
fn a_web_that_never_becomes_ready_is_never_shifted_to() {
    let mut w = World::new(spec());
    w.web_broken = true;
    for _ in 0..30 {
        let d = w.step();
        assert_eq!(d.phase, Phase::Provisioning);
        assert!(d.actions.iter().all(|a| !matches!(a, Action::ApplySelector { .. })));
    }
    let ready = condition(&w, c::READY);
    assert_eq!(ready.reason, "WebNotAvailable");
    assert!(ready.message.contains("0/1 available"), "{}", ready.message);
    assert!(ready.message.contains("kubectl logs deploy/prod-langfuse-web"));
    assert!(w.cluster.worker.is_none(), "worker waits for web");
}

#[test]
fn web_down_after_the_shift_rolls_back_after_rollback_after() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    // v3 web loses every ready pod.
    w.break_web();
    let d = w.step();
    assert_eq!(d.phase, Phase::Degraded);
    assert!(w.status().web_unavailable_since.is_some());
    w.run_until(Phase::RolledBack, 200);
    assert!(w.now >= 300, "rolled back before rollbackAfter: {}", w.now);
    assert_eq!(selector_of(w.cluster.service.as_ref().unwrap()), chart_selector());
    // Not asked to delete: v3 is scaled to 0 and kept for its logs.
    assert_eq!(w.cluster.web.as_ref().unwrap().spec.as_ref().unwrap().replicas, Some(0));
    assert!(w.status().rollback.unwrap().reason.unwrap().contains("rollbackAfter"));
}

#[test]
fn the_rollback_starts_when_rollback_after_runs_out_not_at_the_next_poll() {
    let mut sp = spec();
    sp.strategy.rollback_after = "25s".into();
    let mut w = World::new(sp);
    w.run_until(Phase::Draining, 40);
    w.break_web();
    let d = w.step();
    assert_eq!(d.phase, Phase::Degraded);
    assert_eq!(d.requeue, Duration::from_secs(10), "at most a poll while far from it");
    let since = w.status().web_unavailable_since.unwrap().0;
    let d = w.step();
    assert_eq!(d.requeue, Duration::from_secs(10));
    let d = w.step();
    // `since` is a whole second at or before the outage was seen: the wait is rollbackAfter
    // plus that second, so it never ends before rollbackAfter has passed since the fault.
    assert_eq!(d.requeue, Duration::from_secs(6), "woken exactly when it runs out");
    w.run_until(Phase::RolledBack, 50);
    let started = w.status().rollback.unwrap().started_at.unwrap().0;
    assert_eq!(started.as_second() - since.as_second(), 26);
}

fn with_analysis() -> LangfuseUpgradeSpec {
    let mut sp = spec();
    sp.strategy.analysis = Some(crate::api::AnalysisSpec {
        prometheus_url: "http://prometheus:9090".into(),
        error_ratio_query: "sum(rate(errors[1m])) / sum(rate(requests[1m]))".into(),
        threshold: "0.05".into(),
        window: "60s".into(),
    });
    sp
}

fn ratio(now: f64, lowest: f64, points: f64) -> Result<crate::analysis::ErrorRatioFacts, String> {
    Ok(crate::analysis::ErrorRatioFacts {
        now: Some(now),
        window_min: Some(lowest),
        window_points: Some(points),
    })
}

fn error_condition(w: &World) -> (String, String, String) {
    let c = w
        .status()
        .condition("ErrorRatioHealthy")
        .cloned()
        .expect("an ErrorRatioHealthy condition");
    (c.status, c.reason, c.message)
}

#[test]
fn a_sustained_error_ratio_rolls_back_with_the_measured_value() {
    let mut w = World::new(with_analysis());
    w.run_until(Phase::Draining, 40);
    w.error_ratio = ratio(0.30, 0.12, 20.0);
    let d = w.step();
    // Younger than the window: above now, not judged over it yet.
    assert_eq!(error_condition(&w).1, "ErrorRatioHigh");
    assert!(d.requeue <= Duration::from_secs(3), "{:?}", d.requeue);
    w.run_until(Phase::RolledBack, 200);
    let s = w.status();
    let why = s.rollback.unwrap().reason.unwrap();
    assert!(why.contains("above 0.05 for 60s") && why.contains("0.1200"), "{why}");
    assert_eq!(error_condition(&w).1, "ErrorRatioSustained");
    assert_eq!(selector_of(w.cluster.service.as_ref().unwrap()), chart_selector());
}

#[test]
fn a_spike_and_missing_data_never_roll_back() {
    let mut w = World::new(with_analysis());
    w.run_until(Phase::Draining, 40);
    // High now, but the window's lowest point is healthy: a spike.
    w.error_ratio = ratio(0.30, 0.01, 20.0);
    for _ in 0..30 {
        w.step();
    }
    assert_eq!(error_condition(&w).1, "ErrorRatioHigh");
    // Sustained but sparse (targets down most of the window): no rollback either.
    w.error_ratio = ratio(0.30, 0.30, 3.0);
    for _ in 0..10 {
        w.step();
    }
    w.error_ratio = Err("cannot reach Prometheus at http://prometheus:9090: connection refused".into());
    let d = w.step();
    let (status, reason, message) = error_condition(&w);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "AnalysisUnavailable"));
    assert!(message.contains("no rollback on missing data"), "{message}");
    assert_ne!(d.phase, Phase::RollingBack);
    assert!(w.status().rollback.unwrap().started_at.is_none());
    w.error_ratio = ratio(0.0, 0.0, 20.0);
    // Judged every 3 s (the window's step) until retirement: many short reconciles.
    w.run_until(Phase::Completed, 2000);
}

#[test]
fn after_the_point_of_no_return_the_error_ratio_is_not_asked() {
    let mut w = World::new(with_analysis());
    w.run_until(Phase::RetiringSource, 2000);
    while w.status().source_retired_at.is_none() {
        w.step();
    }
    w.error_ratio = ratio(0.9, 0.9, 20.0);
    assert!(needs(&w.upgrade, t(w.now)).error_ratio.is_none());
    w.run_until(Phase::Completed, 400);
    assert!(w.status().rollback.unwrap().started_at.is_none());
}

#[test]
fn a_reverted_selector_blocks_and_is_not_fought_over() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    w.cluster.service.as_mut().unwrap().spec.as_mut().unwrap().selector = Some(chart_selector());
    w.settle();
    let d = w.step();
    assert_eq!(d.phase, Phase::Blocked);
    assert!(
        d.actions.iter().all(|a| !matches!(a, Action::ApplySelector { .. })),
        "tug of war"
    );
    let shifted = condition(&w, c::TRAFFIC_SHIFTED);
    assert_eq!(
        (shifted.status.as_str(), shifted.reason.as_str()),
        ("False", "SelectorReverted")
    );
    // A JSON-patch replace of the whole map: a merge patch would keep v2's keys and match nothing.
    assert!(
        shifted
            .message
            .contains("kubectl patch service prod-langfuse --type json"),
        "{}",
        shifted.message
    );
    assert!(
        shifted.message.contains(r#""op":"replace","path":"/spec/selector""#),
        "{}",
        shifted.message
    );
    // A person restores it: the upgrade continues.
    w.cluster.service.as_mut().unwrap().spec.as_mut().unwrap().selector = Some(v3_selector(UPGRADE, Role::Web));
    w.settle();
    w.run_until(Phase::Completed, 400);
}

#[test]
fn v2_scaled_back_up_after_retirement_blocks_without_a_fight() {
    let mut s = spec();
    s.target.final_version = Some("3.40.0".into());
    let mut w = World::new(s);
    w.run_until(Phase::Finalizing, 400);
    *w.cluster.source.as_mut().unwrap() = v2_deployment(2);
    let d = w.step();
    assert_eq!(d.phase, Phase::Blocked);
    assert!(!d.actions.contains(&Action::ScaleSource(0)));
    assert_eq!(condition(&w, c::SOURCE_RETIRED).reason, "SourceScaledUp");
    // And v3 must not move past 3.29.0 while v2 pods exist (checked by the invariants too).
    assert!(d.actions.iter().all(|a| !matches!(a, Action::ApplyDeployment(d) if d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].image.as_deref().unwrap().ends_with("3.40.0"))));
}

#[test]
fn final_version_is_rolled_out_only_after_v2_is_gone() {
    let mut s = spec();
    s.target.final_version = Some("3.40.0".into());
    let mut w = World::new(s);
    w.run_until(Phase::Completed, 400);
    let image = |d: &Option<Deployment>| {
        d.as_ref()
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone()
            .unwrap()
    };
    assert_eq!(image(&w.cluster.web), "ghcr.io/langfuse/langfuse:3.40.0");
    assert_eq!(image(&w.cluster.worker), "ghcr.io/langfuse/langfuse-worker:3.40.0");
    assert!(phases(&w).contains(&Phase::Finalizing));
    assert_eq!(w.status().target_version.as_deref(), Some("3.40.0"));
}

#[test]
fn paused_makes_no_writes() {
    let mut w = World::new(spec());
    w.run_until(Phase::Provisioning, 5);
    w.upgrade.spec.paused = true;
    for _ in 0..3 {
        let d = w.step();
        assert_eq!(d.phase, Phase::Paused);
        assert!(d.actions.is_empty());
    }
    assert_eq!(condition(&w, c::STALLED).status, "False");
    w.upgrade.spec.paused = false;
    w.run_until(Phase::Completed, 400);
}

#[test]
fn draining_waits_for_v2_to_stop_writing() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    // v2 keeps writing: the newest row moves every step.
    for _ in 0..20 {
        w.newest_write = Some(w.now);
        assert_eq!(w.step().phase, Phase::Draining);
    }
    assert!(w.status().cutoff.is_none());
    let quiet_from = w.now;
    w.run_until(Phase::Migrating, 200);
    assert!(w.now - quiet_from >= 120, "drainPeriod 2m not honoured");
    assert!(w.status().cutoff.is_some());
}

/// The drain counts from the newest row to the read's own clock in milliseconds, not from the
/// row's second rounded up: it ends within one poll of drainPeriod, never before it.
#[test]
fn the_drain_ends_to_the_millisecond_after_the_newest_row() {
    let mut s = spec();
    s.strategy.drain_period = "5s".into();
    let mut w = World::new(s);
    w.run_until(Phase::Draining, 40);
    let row = s_to_ms(w.now) + 300;
    let at = |ms: i64| Timestamp::from_millisecond(ms).unwrap();
    let read = |w: &World, read_ms: i64| {
        let mut obs = w.cluster.clone();
        obs.postgres = Some(Ok(PostgresFacts {
            newest_write: Some(at(row)),
            newest_write_read_at: Some(at(read_ms)),
            ..Default::default()
        }));
        let now = crate::precision::bound_after(at(read_ms));
        (plan(&w.upgrade, &obs, now), now)
    };
    // First sight of the row, in its own second: the quiet period starts at the row.
    let (d, now) = read(&w, row + 40);
    w.upgrade.status = Some(api_round_trip(&next_status(&w.upgrade, &d, now)));
    assert_eq!(d.phase, Phase::Draining);
    // 4.9 s after the row: not yet, and the next look is due when the 5 s are up.
    let (d, _) = read(&w, row + 4_900);
    assert_eq!(d.phase, Phase::Draining);
    assert!(d.requeue <= std::time::Duration::from_millis(100), "{:?}", d.requeue);
    // 5.01 s after the row (the status's whole seconds would still say 4 s): over.
    let (d, now) = read(&w, row + 5_010);
    let status = next_status(&w.upgrade, &d, now);
    assert!(status.cutoff.is_some(), "{:?}", d.phase);
}

/// `retireSourceAfter` counts from the verification's reads to this reconcile's reads, both to
/// the millisecond: never early (whole seconds read before the observation ended it up to a
/// second early), and due within one poll.
#[test]
fn retire_source_after_ends_to_the_millisecond_after_the_verification() {
    let mut s = spec();
    s.strategy.retire_source_after = "5s".into();
    let mut w = World::new(s);
    w.look_ahead = false;
    w.run_until(Phase::Verifying, 400);
    let at = |ms: i64| Timestamp::from_millisecond(ms).unwrap();
    // The counts come back 900 ms into a second (the plan's `now` is that second, read before).
    let verified = s_to_ms(w.now) + 900;
    let read = |w: &World, read_ms: i64| {
        let mut obs = w.observe();
        obs.read_at = Some(at(read_ms) + jiff::SignedDuration::from_micros(250));
        let now = crate::precision::bound_after(at(read_ms - 30));
        (plan(&w.upgrade, &obs, now), now)
    };
    let (d, now) = read(&w, verified);
    let status = api_round_trip(&next_status(&w.upgrade, &d, now));
    assert_eq!(
        status.verified_at.as_ref().map(|t| t.0),
        Some(at(verified)),
        "{:?}",
        d.phase
    );
    w.upgrade.status = Some(status);
    let scales = |d: &Decision| d.actions.contains(&Action::ScaleSource(0));
    // 4.15 s later the whole seconds would say 5 (from X.000 to X+5.000): not yet.
    let (d, _) = read(&w, verified + 4_150);
    assert!(!scales(&d), "retired 4.15 s after verification: {:?}", d.actions);
    assert_eq!(d.phase, Phase::RetiringSource);
    let (d, _) = read(&w, verified + 4_999);
    assert!(!scales(&d), "retired 4.999 s after verification");
    assert!(d.requeue <= std::time::Duration::from_millis(1), "{:?}", d.requeue);
    let (d, _) = read(&w, verified + 5_000);
    assert!(
        scales(&d),
        "not retired 5 s after verification: {:?} {:?}",
        d.phase,
        d.actions
    );
}

#[test]
fn postgres_down_while_draining_holds_with_a_reason() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    w.postgres_down = true;
    let d = w.step();
    assert_eq!(d.phase, Phase::Draining);
    assert!(d.actions.is_empty());
    assert_eq!(condition(&w, c::READY).reason, "PostgresUnavailable");
}

#[test]
fn verification_mismatch_keeps_v2() {
    let mut w = World::new(spec());
    w.ch.observations -= 1;
    for _ in 0..400 {
        let d = w.step();
        assert!(!d.actions.contains(&Action::ScaleSource(0)));
        if d.phase == Phase::Degraded {
            assert_eq!(condition(&w, c::VERIFIED).reason, "CountsMismatch");
            assert!(condition(&w, c::VERIFIED).message.contains("observations missing 1"));
            assert_eq!(
                w.cluster.source.as_ref().unwrap().spec.as_ref().unwrap().replicas,
                Some(2)
            );
            return;
        }
    }
    panic!("never degraded: {:?}", phases(&w));
}

/// Safety review #1 (interleaving B): a replica whose view of the status lags sees web already
/// moved on by the replica that leads now. It must not put the older release back.
#[test]
fn a_view_older_than_the_release_running_never_writes_the_older_release() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    for d in [w.cluster.web.as_mut(), w.cluster.worker.as_mut()]
        .into_iter()
        .flatten()
    {
        let c = &mut d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0];
        let image = c.image.clone().unwrap().replace(":3.29.0", ":3.30.0");
        c.image = Some(image);
    }
    let d = plan(&w.upgrade, &w.observe(), t(w.now));
    assert!(
        !d.actions.iter().any(|a| matches!(a, Action::ApplyDeployment(_))),
        "{:?}",
        d.actions
    );
    // The drain goes on as it would: only the older write is left out.
    assert_eq!(d.phase, Phase::Draining);
}

/// Safety review #6: the decisions that retire v2, turn the copies on or create v3 are made
/// again on the API's view of the cluster (a watch cache that resumed may not have replayed a
/// revert yet); the switch, reversible and timed, stays on the caches.
#[test]
fn irreversible_decisions_are_the_ones_the_reconcile_reads_the_api_for() {
    let mut w = World::new(spec());
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..600 {
        let before = w.upgrade.clone();
        let d = w.step();
        let kind = if d.actions.contains(&Action::ScaleSource(0)) {
            "retire v2"
        } else if d.actions.iter().any(|a| matches!(a, Action::ApplySelector { .. })) {
            "switch"
        } else if d
            .actions
            .iter()
            .any(|a| matches!(a, Action::ApplyDeployment(x) if migrations_enabled(x)))
        {
            "copies on"
        } else if before
            .status
            .as_ref()
            .is_none_or(|s| s.provisioning_started_at.is_none())
            && d.actions.iter().any(|a| matches!(a, Action::ApplyDeployment(_)))
        {
            "create v3"
        } else {
            continue;
        };
        seen.insert(kind, d.irreversible(&before));
        if d.phase == Phase::Completed {
            break;
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            ("copies on", true),
            ("create v3", true),
            ("retire v2", true),
            ("switch", false)
        ]
    );
}

#[test]
fn postgres_down_while_draining_restarts_the_quiet_period() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    // v2's last row well over a drain period before the outage ends: only a read says quiet.
    w.newest_write = Some(w.now - 60);
    w.postgres_down = true;
    let down = w.now;
    while w.now < down + 10 {
        assert_eq!(w.step().phase, Phase::Draining);
    }
    assert!(
        w.status().drain_quiet_since.is_none(),
        "the unread window counted as quiet"
    );
    w.postgres_down = false;
    let back = w.now;
    let d = w.run_until(Phase::Migrating, 200);
    let cutoff = w.status().cutoff.unwrap().0.as_millisecond();
    // The drain period (3 s in `spec()`) counted from the first read that answered.
    let after = cutoff - s_to_ms(back);
    assert!(after >= 3_000, "cut-off only {after} ms after Postgres answered");
    assert_eq!(d.phase, Phase::Migrating);
}

/// A v2 write held across an outage lands behind the copy's cursor: Postgres has it up to the
/// cut-off, ClickHouse does not, and it lies in the recent window, so that window is re-copied.
#[test]
fn rows_that_landed_behind_the_cursor_are_recopied_then_verified() {
    let mut w = World::new(spec());
    w.pg.traces += 1;
    w.pg_recent.traces += 1;
    w.pg.observations += 4;
    w.pg_recent.observations += 4;
    w.run_until(Phase::Completed, 600);
    let reruns: Vec<(String, i64)> = remedies_applied(&w)
        .into_iter()
        .filter_map(|r| match r {
            crate::databases::Remedy::RerunWindow {
                name,
                max_rows,
                max_date,
            } => {
                assert_eq!(Some(Time(max_date)), w.status().cutoff, "bounded by the cut-off");
                Some((name, max_rows))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        reruns,
        [
            (
                "20241024_1730_migrate_traces_from_pg_to_ch".to_string(),
                counts(50).traces + 1
            ),
            (
                "20241024_1737_migrate_observations_from_pg_to_ch".to_string(),
                counts(50).observations + 4
            ),
        ]
    );
    assert!(
        w.status().late_writes_covered_until.is_none(),
        "the counts stay bounded by the cut-off"
    );
    assert!(w.status().verification.iter().all(|v| v.verdict == "Match"));
}

/// Missing rows older than the recent window are not a late arrival: v2 is kept, as before.
#[test]
fn rows_missing_outside_the_recent_window_keep_v2() {
    let mut w = World::new(spec());
    w.pg.scores += 2;
    w.pg_recent.scores += 1;
    let d = w.run_until(Phase::Degraded, 600);
    assert!(!d.actions.contains(&Action::ScaleSource(0)));
    assert!(condition(&w, c::VERIFIED).message.contains("scores missing 2"));
    assert!(remedies_applied(&w).is_empty(), "{:?}", remedies_applied(&w));
}

#[test]
fn late_writes_are_recopied_exactly_then_verified() {
    let mut w = World::new(spec());
    w.late_writes.traces = 7;
    w.run_until(Phase::Completed, 600);
    let reruns: Vec<&Action> = w
        .history
        .iter()
        .flat_map(|d| d.actions.iter())
        .filter(|a| matches!(a, Action::Remedy(crate::databases::Remedy::RerunWindow { .. })))
        .collect();
    assert_eq!(reruns.len(), 1, "{reruns:?}");
    let Action::Remedy(crate::databases::Remedy::RerunWindow { name, max_rows, .. }) = reruns[0] else {
        unreachable!()
    };
    assert_eq!(
        (name.as_str(), *max_rows),
        ("20241024_1730_migrate_traces_from_pg_to_ch", 7)
    );
    // Bounded above by the instant the late rows were counted, never beyond it: rows arriving
    // during the re-copy must not push counted rows out of the window.
    let Action::Remedy(crate::databases::Remedy::RerunWindow { max_date, .. }) = reruns[0] else {
        unreachable!()
    };
    assert_eq!(w.status().late_writes_covered_until, Some(Time(*max_date)));
    // v2 was retired only after the re-copy finished and verification passed again.
    let retire = w
        .history
        .iter()
        .position(|d| d.actions.contains(&Action::ScaleSource(0)))
        .unwrap();
    let rerun = w
        .history
        .iter()
        .position(|d| {
            d.actions
                .iter()
                .any(|a| matches!(a, Action::Remedy(crate::databases::Remedy::RerunWindow { .. })))
        })
        .unwrap();
    assert!(retire > rerun);
}

#[test]
fn v2_that_keeps_writing_after_the_cutoff_keeps_v2() {
    let mut w = World::new(spec());
    w.late_writes.scores = 3;
    w.v2_never_quiet = true;
    let d = w.run_until(Phase::Degraded, 600);
    assert!(!d.actions.contains(&Action::ScaleSource(0)));
    assert_eq!(condition(&w, c::VERIFIED).reason, "LateWrites");
    assert!(condition(&w, c::READY).message.contains("keeps writing"));
    assert_eq!(w.status().remedies.get("lateWriteRerun"), Some(&2), "bounded");
    assert!(w.history.iter().all(|d| !d.actions.contains(&Action::ScaleSource(0))));
}

fn remedies_applied(w: &World) -> Vec<crate::databases::Remedy> {
    w.history
        .iter()
        .flat_map(|d| d.actions.iter())
        .filter_map(|a| {
            if let Action::Remedy(r) = a {
                Some(r.clone())
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn napi_failure_lowers_the_batch_and_resumes() {
    use crate::databases::Remedy;
    let mut w = World::new(spec());
    w.runner.napi = Some((2, 2500));
    w.run_until(Phase::Completed, 600);
    let name = "20241024_1737_migrate_observations_from_pg_to_ch".to_string();
    assert_eq!(
        remedies_applied(&w),
        vec![
            Remedy::SetBatchSize {
                name: name.clone(),
                size: 2500
            },
            Remedy::ClearFailure { name }
        ]
    );
    assert!(
        w.runner.starts >= 2,
        "the worker must be restarted to pick the row up again"
    );
}

#[test]
fn napi_failure_halves_down_to_the_floor_then_asks_a_person() {
    let mut w = World::new(spec());
    w.runner.napi = Some((1, 100));
    w.upgrade.spec.migrations.min_batch_size = 600;
    let d = w.run_until(Phase::Failed, 600);
    let sizes: Vec<i64> = remedies_applied(&w)
        .into_iter()
        .filter_map(|r| {
            if let crate::databases::Remedy::SetBatchSize { size, .. } = r {
                Some(size)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(sizes, vec![2500, 1250, 625]);
    let ready = d.conditions.iter().find(|x| x.type_ == c::READY).unwrap();
    assert!(
        ready.message.contains("napi string") && ready.message.contains("floor"),
        "{}",
        ready.message
    );
    assert_eq!(condition(&w, c::STALLED).status, "True");
}

#[test]
fn another_failure_is_resumed_once_then_reported() {
    let mut w = World::new(spec());
    w.runner.flaky = Some((3, 1));
    w.run_until(Phase::Completed, 600);
    assert_eq!(
        remedies_applied(&w),
        vec![crate::databases::Remedy::ClearFailure {
            name: "20241024_1738_migrate_scores_from_pg_to_ch".into()
        }]
    );

    let mut w = World::new(spec());
    w.runner.flaky = Some((3, 2));
    let d = w.run_until(Phase::Failed, 600);
    let ready = d.conditions.iter().find(|x| x.type_ == c::READY).unwrap();
    assert!(
        ready.message.contains("Connection terminated unexpectedly") && ready.message.contains("clear failed_at"),
        "{}",
        ready.message
    );
}

#[test]
fn remediation_off_reports_the_failure_and_the_manual_fix() {
    let mut w = World::new(spec());
    w.upgrade.spec.migrations.remediation = false;
    w.runner.napi = Some((1, 2500));
    let d = w.run_until(Phase::Failed, 600);
    assert!(remedies_applied(&w).is_empty());
    let ready = d.conditions.iter().find(|x| x.type_ == c::READY).unwrap();
    assert!(
        ready.message.contains("napi string") && ready.message.contains("clear failed_at"),
        "{}",
        ready.message
    );
}

#[test]
fn same_created_at_trap_found_by_preflight_is_fixed_before_the_start() {
    let mut w = World::new(spec());
    w.scan_groups = vec![(crate::migrations::Table::Traces, 12_000)];
    w.runner.trap = Some((1, 12_000));
    w.run_until(Phase::Completed, 600);
    let name = "20241024_1730_migrate_traces_from_pg_to_ch".to_string();
    assert_eq!(
        remedies_applied(&w),
        vec![crate::databases::Remedy::SetBatchSize { name, size: 12_001 }]
    );
    let line = w
        .status()
        .checks
        .into_iter()
        .find(|l| l.name == "stuckCursorScan")
        .unwrap();
    assert_eq!(line.result, CheckResult::Warn);
    assert!(line.message.contains("12001"));
}

#[test]
fn same_created_at_trap_at_runtime_is_detected_after_stuck_after_and_remedied() {
    let mut w = World::new(spec());
    w.runner.trap = Some((1, 12_000));
    w.run_until(Phase::Completed, 900);
    let sizes: Vec<i64> = remedies_applied(&w)
        .into_iter()
        .filter_map(|r| {
            if let crate::databases::Remedy::SetBatchSize { size, .. } = r {
                Some(size)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(sizes, vec![10_000, 20_000], "doubling until the group fits");
    let stuck_at = w
        .history
        .iter()
        .position(|d| d.actions.iter().any(|a| matches!(a, Action::Remedy(_))))
        .unwrap();
    let enabled = w.history.iter().position(|d| d.phase == Phase::Migrating).unwrap();
    let waited: u64 = w.history[enabled..stuck_at]
        .iter()
        .map(|d| d.requeue.as_secs().clamp(1, 60))
        .sum();
    assert!(waited >= 600, "remedied after {waited}s, before stuckAfter (10m)");
}

#[test]
fn a_stuck_copy_with_a_zero_batch_size_in_its_row_is_raised_from_the_default() {
    let mut w = World::new(spec());
    w.runner.trap = Some((1, 12_000));
    w.runner.rows[1].batch = Some(0);
    w.run_until(Phase::Completed, 900);
    let sizes: Vec<i64> = remedies_applied(&w)
        .into_iter()
        .filter_map(|r| match r {
            crate::databases::Remedy::SetBatchSize { size, .. } => Some(size),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, vec![10_000, 20_000], "doubled from the default, not from 0");
}

#[test]
fn a_killed_worker_is_restarted_after_its_lock_goes_stale() {
    let mut w = World::new(spec());
    w.run_until(Phase::Migrating, 200);
    w.step();
    w.step();
    w.runner.killed = true;
    let starts = w.runner.starts;
    w.run_until(Phase::Completed, 600);
    assert!(w.runner.starts > starts, "never restarted");
    assert_eq!(w.status().remedies.get("idleRestart"), Some(&1));
}

#[test]
fn deleting_an_unfinished_upgrade_rolls_back_then_lets_go() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    w.upgrade.metadata.deletion_timestamp = Some(time(w.now));
    for _ in 0..40 {
        let d = w.step();
        if d.actions.contains(&Action::RemoveFinalizer) {
            assert_eq!(selector_of(w.cluster.service.as_ref().unwrap()), chart_selector());
            assert!(w.cluster.web.is_none() && w.cluster.worker.is_none());
            return;
        }
    }
    panic!("finalizer never removed");
}

#[test]
fn deleting_a_completed_upgrade_touches_nothing() {
    let mut w = World::new(spec());
    w.run_until(Phase::Completed, 400);
    w.upgrade.metadata.deletion_timestamp = Some(time(w.now));
    let d = w.step();
    assert_eq!(d.actions, vec![Action::RemoveFinalizer]);
}

#[test]
fn deleting_after_retirement_releases_v3_instead_of_rolling_back() {
    let mut s = spec();
    s.target.final_version = Some("3.40.0".into());
    let mut w = World::new(s);
    w.run_until(Phase::Finalizing, 400);
    w.upgrade.metadata.deletion_timestamp = Some(time(w.now));
    let d = w.step();
    assert!(
        d.actions
            .iter()
            .all(|a| matches!(a, Action::ReleaseDeployment(_) | Action::RemoveFinalizer)),
        "{:?}",
        d.actions
    );
    assert!(d.actions.contains(&Action::RemoveFinalizer));
    assert!(w.cluster.web.as_ref().unwrap().metadata.owner_references.is_none());
}

#[test]
fn invalid_spec_is_reported_with_the_field_and_nothing_is_touched() {
    type Case = (&'static str, Box<dyn Fn(&mut LangfuseUpgradeSpec)>);
    let cases: Vec<Case> = vec![
        (
            "spec.strategy.drainPeriod",
            Box::new(|s| s.strategy.drain_period = "2 minutes".into()),
        ),
        ("spec.target.version", Box::new(|s| s.target.version = "2.95.9".into())),
        (
            "spec.target.finalVersion",
            Box::new(|s| s.target.final_version = Some("3.20.0".into())),
        ),
        (
            "spec.target.web.image",
            Box::new(|s| s.target.web.image = Some("langfuse/langfuse:3".into())),
        ),
        (
            "spec.target.finalVersion",
            Box::new(|s| s.target.final_version = Some("3.300.0".into())),
        ),
        (
            "spec.source.service",
            Box::new(|s| s.source.service = "other-ns/prod-langfuse".into()),
        ),
        (
            "spec.source.deployment",
            Box::new(|s| s.source.deployment = "Prod_Langfuse".into()),
        ),
        (
            "spec.source.container",
            Box::new(|s| s.source.container = Some("langfuse web".into())),
        ),
        (
            "spec.clickhouse.userSecretRef.name",
            Box::new(|s| s.clickhouse.user_secret_ref.name = "ns/langfuse-clickhouse".into()),
        ),
        ("spec.redis", Box::new(|s| s.redis.host = Some("redis".into()))),
        ("spec.s3", Box::new(|s| s.s3.secret_access_key_secret_ref = None)),
        (
            "spec.clickhouse.url",
            Box::new(|s| s.clickhouse.url = "clickhouse:8123".into()),
        ),
        (
            "spec.target.extraEnv[0]",
            Box::new(|s| {
                s.target.extra_env = vec![k8s_openapi::api::core::v1::EnvVar {
                    name: MIGRATIONS_ENV.into(),
                    value: Some("true".into()),
                    value_from: None,
                }]
            }),
        ),
    ];
    for (field, mutate) in cases {
        let mut s = spec();
        mutate(&mut s);
        let mut w = World::new(s);
        let d = w.step();
        assert_eq!(d.phase, Phase::Pending, "{field}");
        assert!(
            d.actions.iter().all(|a| matches!(a, Action::AddFinalizer)),
            "{field}: {:?}",
            d.actions
        );
        let ready = condition(&w, c::READY);
        assert_eq!(ready.reason, "InvalidSpec", "{field}");
        assert!(
            ready.message.contains(field),
            "{field} not named in {:?}",
            ready.message
        );
        assert_eq!(condition(&w, c::STALLED).status, "True");
    }
}

#[test]
fn preflight_failures_block_with_nothing_created() {
    type Case = (&'static str, Box<dyn Fn(&mut World)>);
    let cases: Vec<Case> = vec![
        ("sourceDeployment", Box::new(|w| w.cluster.source = None)),
        (
            "sourceVersion",
            Box::new(|w| {
                w.cluster
                    .source
                    .as_mut()
                    .unwrap()
                    .spec
                    .as_mut()
                    .unwrap()
                    .template
                    .spec
                    .as_mut()
                    .unwrap()
                    .containers[0]
                    .image = Some("langfuse/langfuse:2.60.3".into())
            }),
        ),
        (
            "targetVersion",
            Box::new(|w| w.upgrade.spec.target.version = "3.30.0".into()),
        ),
        ("service", Box::new(|w| w.cluster.service = None)),
        (
            "secrets",
            Box::new(|w| w.cluster.missing_secret_keys = vec!["clickhouse/password".into()]),
        ),
        ("postgres", Box::new(|w| w.postgres_down = true)),
        ("backup", Box::new(|w| w.upgrade.spec.backup.acknowledged = false)),
        (
            "selectorIsolation",
            Box::new(|w| w.cluster.service = Some(v2_service(labels(&[("app", "web")])))),
        ),
    ];
    for (check, mutate) in cases {
        let mut w = World::new(spec());
        mutate(&mut w);
        for _ in 0..3 {
            let d = w.step();
            assert_eq!(d.phase, Phase::Blocked, "{check}");
            assert!(
                d.actions.iter().all(|a| matches!(a, Action::AddFinalizer)),
                "{check} wrote {:?}",
                d.actions
            );
        }
        let line = w
            .status()
            .checks
            .into_iter()
            .find(|l| l.name == check)
            .unwrap_or_else(|| panic!("no {check} line"));
        assert_eq!(line.result, CheckResult::Fail, "{check}");
        assert_eq!(condition(&w, c::PREFLIGHT_PASSED).reason, "PreflightFailed");
        assert!(condition(&w, c::READY).message.contains(check));
    }
}

#[test]
fn a_blocked_preflight_resumes_once_fixed() {
    let mut w = World::new(spec());
    w.upgrade.spec.backup.acknowledged = false;
    assert_eq!(w.step().phase, Phase::Blocked);
    w.upgrade.spec.backup.acknowledged = true;
    w.run_until(Phase::Completed, 400);
}

#[test]
fn waivers_skip_only_waivable_checks() {
    let mut w = World::new(spec());
    w.upgrade.spec.backup.acknowledged = false;
    w.upgrade.spec.preflight.skip = vec![WaivableCheck::Backup];
    let d = w.step();
    assert_eq!(d.phase, Phase::Provisioning);
    let line = w.status().checks.into_iter().find(|l| l.name == "backup").unwrap();
    assert_eq!(line.result, CheckResult::Skipped);
    assert!(line.message.contains("waived"));
}

#[test]
fn clickhouse_schema_past_3_29_blocks() {
    let mut w = World::new(spec());
    let obs = {
        let mut o = w.observe();
        o.clickhouse = Some(Ok(ClickHouseFacts {
            version: Some("25.3.1".into()),
            schema: Some((9, false)),
            counts: None,
            recent_counts: None,
            missing_tables: Vec::new(),
            grants: None,
        }));
        o
    };
    let d = plan(&w.upgrade, &obs, t(0));
    assert_eq!(d.phase, Phase::Blocked);
    let line = d.status.checks.iter().find(|l| l.name == "clickhouse").unwrap();
    assert!(line.message.contains("crash-loop"));
    w.step();
}

#[test]
fn hpa_on_v2_is_reported_not_touched() {
    let mut w = World::new(spec());
    w.cluster.hpas_on_source = vec!["prod-langfuse".into()];
    w.step();
    let line = w
        .status()
        .checks
        .into_iter()
        .find(|l| l.name == "horizontalPodAutoscaler")
        .unwrap();
    assert_eq!(line.result, CheckResult::Warn);
    w.run_until(Phase::Completed, 400);
}

/// After v2, a hop under way reads its Postgres rows alone; ClickHouse and the server versions
/// are read for a hop's gates, before it starts. A v3 source reads ClickHouse throughout: its
/// rollback outlook depends on the schema height.
#[test]
fn a_hop_under_way_reads_clickhouse_only_when_its_rollback_depends_on_it() {
    let mut sp = spec();
    sp.target.final_version = Some("3.40.0".into());
    let mut status = verified_status();
    status.source_retired_at = Some(time(50));
    let stop = |started: Option<i64>, finished: Option<i64>| crate::api::RoadStop {
        from: "3.29.0".into(),
        version: "3.40.0".into(),
        mode: crate::api::StopMode::InPlace,
        state: crate::api::StopState::Current,
        required_because: None,
        gates: Vec::new(),
        irreversible: None,
        started_at: started.map(time),
        finished_at: finished.map(time),
    };
    let needs_with = |source: Option<&str>, road: crate::api::RoadStop| {
        let mut st = status.clone();
        st.source_version = source.map(String::from);
        st.road = vec![road];
        needs(&upgrade(sp.clone(), st), t(60))
    };
    for (road, what) in [
        (stop(None, None), "before the hop"),
        (stop(Some(55), Some(58)), "after it"),
    ] {
        let n = needs_with(None, road);
        assert!(
            n.clickhouse.server && n.postgres.server_version && n.postgres.migrations,
            "{what}: {n:?}"
        );
    }
    let n = needs_with(None, stop(Some(55), None));
    assert!(!n.clickhouse.server && !n.postgres.server_version, "{n:?}");
    assert!(n.postgres.migrations, "the hop's rows are read: {n:?}");
    let n = needs_with(Some("3.29.0"), stop(Some(55), None));
    assert!(
        n.clickhouse.server && n.postgres.migrations,
        "a v3 source's outlook: {n:?}"
    );
}

#[test]
fn needs_follow_the_facts() {
    let mut u = upgrade(spec(), Default::default());
    let n = needs(&u, t(0));
    assert!(n.secrets && n.hpas && n.postgres.migrations && n.clickhouse.server && n.clickhouse.objects);
    u.status = Some(LangfuseUpgradeStatus {
        provisioning_started_at: Some(time(0)),
        ..Default::default()
    });
    assert_eq!(needs(&u, t(0)), Needs::default(), "provisioning needs no database");
    u.status.as_mut().unwrap().traffic_shifted_at = Some(time(1));
    assert!(needs(&u, t(0)).postgres.newest_write);
    u.status.as_mut().unwrap().completed_at = Some(time(2));
    assert_eq!(needs(&u, t(0)), Needs::default());
}

#[test]
fn requeue_is_never_a_busy_loop_when_waiting() {
    let mut w = World::new(spec());
    w.web_broken = true;
    let d = w.step();
    assert!(d.requeue >= Duration::from_secs(5));
}

#[test]
fn long_failure_reasons_are_clipped_to_their_first_line() {
    let long = format!("insert failed: schema mismatch\n{}", "- column\n".repeat(500));
    assert_eq!(remedies::short_reason(Some(&long)), "insert failed: schema mismatch");
    let wide = "x".repeat(1000);
    assert_eq!(remedies::short_reason(Some(&wide)).len(), 303);
    assert_eq!(remedies::short_reason(None), "no reason recorded");
}

#[test]
fn late_window_uses_each_copys_start_as_seen_while_running() {
    use crate::api::MigrationStatus;
    use crate::databases::LateWindow;
    let mut s = LangfuseUpgradeStatus {
        migrations_enabled_at: Some(time(100)),
        ..Default::default()
    };
    let row = |name: &str, start: Option<i64>| MigrationStatus {
        name: name.into(),
        state: "running".into(),
        cursor: None,
        progress_percent: None,
        failed_reason: None,
        cursor_since: None,
        batch_size: None,
        start_cursor: start.map(time),
        estimated_rows: None,
    };
    s.migrations = vec![
        row("20241024_1730_migrate_traces_from_pg_to_ch", Some(130)),
        row("20241024_1737_migrate_observations_from_pg_to_ch", None),
        row("20241024_1738_migrate_scores_from_pg_to_ch", Some(190)),
    ];
    assert_eq!(
        verify::late_window(&s),
        Some(LateWindow {
            traces: t(130),
            observations: t(100),
            scores: t(190)
        })
    );
    // First seen only after a batch (the cursor already at older rows): the enable time bounds
    // it, so rows the copy took are not mistaken for late ones.
    s.migrations[0].start_cursor = Some(time(-3600));
    assert_eq!(verify::late_window(&s).unwrap().traces, t(100));
    s.late_writes_covered_until = Some(time(500));
    assert_eq!(verify::late_window(&s), Some(LateWindow::uniform(t(500))));
    assert_eq!(verify::late_window(&LangfuseUpgradeStatus::default()), None);
}

#[test]
fn the_start_cursor_is_the_highest_cursor_seen_while_running() {
    let mut w = World::new(spec());
    w.run_until(Phase::Migrating, 200);
    for _ in 0..6 {
        w.step();
    }
    let s = w.status();
    let traces = s.migrations.iter().find(|m| m.name.contains("traces")).unwrap();
    let start = traces.start_cursor.clone().expect("seen while running");
    // The runner model moves the cursor; the recorded start never goes down.
    assert!(traces.cursor.is_some());
    assert!(start.0 >= t(w.now - 2000));
}

#[test]
fn a_missing_clickhouse_table_keeps_v2_with_the_reason() {
    let mut w = World::new(spec());
    w.look_ahead = false;
    w.run_until(Phase::Verifying, 400);
    let mut obs = w.observe();
    if let Some(Ok(ch)) = obs.clickhouse.as_mut() {
        ch.missing_tables = vec![crate::migrations::Table::Scores];
        ch.counts = None;
    }
    let d = plan(&w.upgrade, &obs, t(w.now));
    assert_eq!(d.phase, Phase::Degraded);
    assert!(!d.actions.contains(&Action::ScaleSource(0)));
    let verified = d.conditions.iter().find(|x| x.type_ == c::VERIFIED).unwrap();
    assert!(verified.message.contains("no scores table"), "{}", verified.message);
}

#[test]
fn a_damaged_clickhouse_schema_blocks_preflight() {
    let w = World::new(spec());
    let mut obs = w.observe();
    if let Some(Ok(ch)) = obs.clickhouse.as_mut() {
        ch.missing_tables = vec![crate::migrations::Table::Traces];
    }
    let d = plan(&w.upgrade, &obs, t(0));
    assert_eq!(d.phase, Phase::Blocked);
    let line = d.status.checks.iter().find(|l| l.name == "clickhouse").unwrap();
    assert!(line.message.contains("traces is missing"), "{}", line.message);
}

#[test]
fn a_selector_reverted_after_completion_is_reported_not_fought() {
    let mut w = World::new(spec());
    w.run_until(Phase::Completed, 400);
    // A sync puts v2's selector back; v2 is at 0 replicas, so nothing serves.
    w.cluster.service.as_mut().unwrap().spec.as_mut().unwrap().selector = Some(chart_selector());
    w.settle();
    let d = w.step();
    assert_eq!(d.phase, Phase::Completed);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(condition(&w, c::READY).reason, "SelectorReverted");
    assert_eq!(condition(&w, c::READY).status, "False");
    assert!(condition(&w, c::TRAFFIC_SHIFTED).message.contains("--type json"));
    // Restored (or moved on to a selector that reaches the v3 web pods): Ready again.
    w.cluster.service.as_mut().unwrap().spec.as_mut().unwrap().selector = Some(v3_selector(UPGRADE, Role::Web));
    w.settle();
    w.step();
    assert_eq!(condition(&w, c::READY).status, "True");
}

#[test]
fn status_lost_after_the_switch_makes_a_rollback_ask_for_the_old_selector() {
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    // The whole status is gone (not just the phase): the old selector went with it.
    w.upgrade.status = None;
    w.upgrade.spec.abort = true;
    let d = w.run_until(Phase::Failed, 40);
    let ready = d.conditions.iter().find(|x| x.type_ == c::READY).unwrap();
    assert!(ready.message.contains("restore it by hand"), "{}", ready.message);
    assert!(
        d.actions.iter().all(|a| !matches!(a, Action::ApplySelector { .. })),
        "guessed a selector"
    );
    assert_eq!(
        selector_of(w.cluster.service.as_ref().unwrap()),
        v3_selector(UPGRADE, Role::Web),
        "traffic left on v3"
    );
}

/// The official chart puts `extraContainers` before `langfuse` (a Cloud SQL proxy, say).
fn with_sidecar_first(mut d: Deployment) -> Deployment {
    let pod = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    pod.containers.insert(
        0,
        k8s_openapi::api::core::v1::Container {
            name: "cloud-sql-proxy".into(),
            image: Some("gcr.io/cloudsql-docker/gce-proxy:1.30.1".into()),
            ..Default::default()
        },
    );
    d
}

#[test]
fn a_sidecar_before_the_langfuse_container_is_not_read_as_v2() {
    let mut w = World::new(spec());
    w.cluster.source = w.cluster.source.take().map(with_sidecar_first);
    w.run_until(Phase::Completed, 400);
    let s = w.status();
    assert_eq!(s.source_version.as_deref(), Some("2.95.9"));
    assert!(
        s.checks
            .iter()
            .any(|c| c.name == "sourceVersion" && c.result == CheckResult::Pass)
    );
    // v3 pods keep the sidecar (v3 reaches the database through it, as v2 did), after Langfuse.
    let web = w.cluster.web.as_ref().unwrap();
    let names: Vec<&str> = web
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["langfuse-web", "cloud-sql-proxy"]);
}

#[test]
fn env_gated_rows_a_v3_worker_never_runs_are_not_waited_on() {
    let mut s = spec();
    s.target.final_version = Some("3.225.4".into());
    let mut w = World::new(s);
    // What 3.203.0+ registers: four backfill steps and a drop, each behind an env gate that is
    // off in a v3 worker.
    for (step, gate) in [
        (
            "20260701_v4_step_1_create_root_spans_from_traces",
            "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL",
        ),
        (
            "20260701_v4_step_2_rewrite_observations_to_pid_tid_sorting",
            "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL",
        ),
        (
            "20260701_v4_step_3_backfill_events_full_from_observations",
            "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL",
        ),
        (
            "20260701_v4_step_4_backfill_events_full_from_dataset_run_items",
            "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL",
        ),
        (
            "20260701_v4_step_5_drop_pid_tid_sorting_tables",
            "LANGFUSE_BACKGROUND_MIGRATION_V4_DROP_PID_TID_SORTING_TABLES",
        ),
    ] {
        let mut row = w.runner.rows[0].clone();
        row.name = step;
        row.table = None;
        row.gate = Some(gate);
        w.runner.rows.push(row);
    }
    w.run_until(Phase::Completed, 400);
    let s = w.status();
    let dormant = s.migrations.iter().filter(|m| m.state == "dormant").count();
    assert_eq!(dormant, 5, "{:?}", s.migrations);
    assert!(s.finalized_at.is_some());
    // Every row 3.225.4 registers that its worker runs (the v2 four and the six later ones).
    assert_eq!(s.migration_progress.as_deref(), Some("10/10 (100%)"));
}

/// v2 on its way to 4.16.0 (its backup acknowledged, ClickHouse new enough for v4), walked
/// to the end.
fn v2_to_v4_completed() -> World {
    let mut s = spec();
    s.target.final_version = Some("4.16.0".into());
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = World::new(s);
    w.ch_version = "25.12.1.1".into();
    w.run_until(Phase::Completed, 400);
    w
}

#[test]
fn v2_goes_to_v4_through_every_stop_of_the_road() {
    let w = v2_to_v4_completed();
    let st = w.status();
    let road: Vec<(&str, crate::api::StopState)> = st.road.iter().map(|r| (r.version.as_str(), r.state)).collect();
    use crate::api::StopState::Done;
    assert_eq!(road, [("3.29.0", Done), ("3.225.4", Done), ("4.16.0", Done)]);
    assert!(
        st.road
            .iter()
            .all(|r| r.started_at.is_some() && r.finished_at.is_some())
    );
    // Each in-place hop started only after the one before finished, and after v2 was retired.
    let retired = st.source_retired_at.clone().unwrap().0;
    assert!(st.road[1].started_at.as_ref().unwrap().0 >= retired);
    assert!(st.road[2].started_at.as_ref().unwrap().0 >= st.road[1].finished_at.as_ref().unwrap().0);
    assert_eq!(st.target_version.as_deref(), Some("4.16.0"));
    let worker = w.cluster.worker.as_ref().unwrap();
    let env = &worker.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].env;
    let write_mode = env
        .iter()
        .flatten()
        .find(|e| e.name == crate::resources::v4_env::WRITE_MODE);
    assert_eq!(write_mode.and_then(|e| e.value.as_deref()), Some("legacy"));
}

/// The reconcile that sees the last copy finished reads the counts too and records the
/// verification: no status write and no reconcile in between (the look ahead).
#[test]
fn the_reconcile_that_sees_the_copies_end_verifies_them() {
    let mut w = World::new(spec());
    w.run_until(Phase::RetiringSource, 400);
    let ended = w
        .history
        .iter()
        .find(|d| d.status.migrations_finished_at.is_some())
        .expect("the copies ended");
    assert!(ended.status.verified_at.is_some(), "verified in the same decision");
    assert!(ended.actions.is_empty(), "status only: {:?}", ended.actions);
    assert!(!phases(&w).contains(&Phase::Verifying), "{:?}", phases(&w));
}

/// v2 to v4: the reconcile that sees a hop's rows settle reads the next hop's gates too and
/// starts it (its start recorded before its first image).
#[test]
fn a_settled_hop_starts_the_next_in_the_same_reconcile() {
    let w = v2_to_v4_completed();
    let settled = w
        .history
        .iter()
        .find(|d| d.status.road.get(1).is_some_and(|r| r.finished_at.is_some()))
        .expect("3.225.4 reached");
    assert!(settled.status.road[2].started_at.is_some(), "{:?}", settled.status.road);
    assert_eq!(
        settled.actions.first(),
        Some(&Action::RecordFacts),
        "{:?}",
        settled.actions
    );
    let web_on_4 = settled.actions.iter().any(|a| match a {
        Action::ApplyDeployment(d) => image_version_of(d).is_some_and(|v| v.to_string() == "4.16.0"),
        _ => false,
    });
    assert!(web_on_4, "{:?}", settled.actions.len());
}

/// Polled ten times a second, a copy whose cursor moves at every poll is shown once a second:
/// its cursor and percentage are held within the second they were shown in (no status write),
/// and shown again the next second.
#[test]
fn a_moving_cursor_is_shown_once_a_second() {
    let mut w = World::new(spec());
    w.run_until(Phase::Migrating, 400);
    let (at, shown) = (0..400)
        .find_map(|_| {
            let at = w.now;
            let d = w.step();
            d.status
                .migrations
                .iter()
                .find(|m| m.state == "running" && m.cursor_since.as_ref().map(|x| x.0) == Some(t(at)))
                .map(|m| (at, m.clone()))
        })
        .expect("a copy shown running as its cursor moved");
    // The same copy, still running, its cursor moved on since.
    let moved = |w: &World| {
        let mut obs = w.observe_with(&needs(&w.upgrade, t(at)));
        if let Some(Ok(pg)) = obs.postgres.as_mut() {
            let row = pg.migrations.iter_mut().find(|r| r.name == shown.name).unwrap();
            row.finished_at = None;
            row.locked_at = Some(t(at));
            // Milliseconds, as a real worker's cursor (a row's `created_at`) has them.
            row.cursor = Some(t(at - 2_000) + jiff::SignedDuration::from_millis(417));
        }
        obs
    };
    let stored = w.status();
    let d = plan(&w.upgrade, &moved(&w), t(at));
    let held = d.status.migrations.iter().find(|m| m.name == shown.name).unwrap();
    assert_eq!(
        (&held.cursor, held.progress_percent),
        (&shown.cursor, shown.progress_percent)
    );
    assert_eq!(
        d.status.migrations, stored.migrations,
        "nothing to write within the second"
    );
    assert_eq!(d.status.migration_progress, stored.migration_progress);
    let d = plan(&w.upgrade, &moved(&w), t(at + 1));
    let next = d.status.migrations.iter().find(|m| m.name == shown.name).unwrap();
    assert_ne!(next.cursor, shown.cursor, "shown again the next second");
    assert_eq!(next.cursor_since.as_ref().map(|x| x.0), Some(t(at + 1)));
}

/// A look ahead whose read failed (ClickHouse down as the copies end) leaves the decision it
/// would have replaced: the copies' end is recorded, and the verification waits for ClickHouse.
#[test]
fn a_look_ahead_that_cannot_read_keeps_the_facts_already_decided() {
    let mut w = World::new(spec());
    w.run_until(Phase::Migrating, 400);
    w.clickhouse_down = true;
    let ended = (0..400)
        .map(|_| w.step())
        .find(|d| d.status.migrations_finished_at.is_some())
        .expect("the copies end");
    assert_eq!(ended.phase, Phase::Verifying);
    assert!(ended.status.verified_at.is_none());
    assert!(w.status().migrations_finished_at.is_some(), "recorded");
    let d = w.step();
    assert_eq!(d.phase, Phase::Verifying);
    assert_eq!(condition(&w, c::READY).reason, "ClickHouseUnavailable");
    w.clickhouse_down = false;
    w.run_until(Phase::RetiringSource, 20);
    assert!(w.status().verified_at.is_some());
}

/// From Verifying, retirement adds only an API read (the HorizontalPodAutoscalers): no second
/// look, which would repeat the counts for a message.
#[test]
fn api_reads_alone_are_not_worth_a_second_look() {
    let mut w = World::new(spec());
    w.look_ahead = false;
    w.run_until(Phase::Verifying, 400);
    let n = needs(&w.upgrade, t(w.now));
    let d = plan(&w.upgrade, &w.observe_with(&n), t(w.now));
    assert!(d.status.verified_at.is_some(), "{:?}", d.phase);
    assert!(!n.hpas && needs_after(&w, &d).hpas, "retirement reads the HPAs");
    assert_eq!(look_ahead(&w.upgrade, &d, &n, t(w.now)), None);
}

fn needs_after(w: &World, d: &Decision) -> Needs {
    let mut u = w.upgrade.clone();
    u.status = Some(d.status.clone());
    needs(&u, t(w.now))
}

/// Only a decision that writes nothing but status looks again, only for reads it lacked, and
/// never for a read of the same kind with other bounds.
#[test]
fn the_look_ahead_widens_only_a_status_only_decision() {
    let mut w = World::new(spec());
    // The first decision that sees every row finished, as planned from its own reads.
    let (n, d) = (0..400)
        .find_map(|_| {
            let n = needs(&w.upgrade, t(w.now));
            let d = plan(&w.upgrade, &w.observe_with(&n), t(w.now));
            if d.status.migrations_finished_at.is_some() {
                return Some((n, d));
            }
            w.step();
            None
        })
        .expect("the copies end");
    assert!(d.status.verified_at.is_none() && n.postgres.counts_until.is_none());
    let wider = look_ahead(&w.upgrade, &d, &n, t(w.now)).expect("the counts are read at once");
    assert!(wider.postgres.migrations && wider.postgres.counts_until.is_some());
    assert!(wider.clickhouse.counts_until.is_some());
    // The same decision with a write in it: the world it read is about to change.
    let mut writes = d.clone();
    writes.actions.push(Action::ScaleSource(0));
    assert_eq!(look_ahead(&w.upgrade, &writes, &n, t(w.now)), None);
    // Nothing more to read.
    assert_eq!(look_ahead(&w.upgrade, &d, &wider, t(w.now)), None);
    // Counts read up to another instant than the next stage's: not merged.
    let mut other = wider.clone();
    other.postgres.counts_until = Some(t(1));
    assert_eq!(look_ahead(&w.upgrade, &d, &other, t(w.now)), None);
}

#[test]
fn v2_to_v4_is_blocked_at_preflight_when_clickhouse_is_too_old_for_v4() {
    let mut s = spec();
    s.target.final_version = Some("4.16.0".into());
    let mut w = World::new(s);
    let d = w.run_until(Phase::Blocked, 3);
    let infra = d.status.checks.iter().find(|c| c.name == "infrastructure").unwrap();
    assert!(infra.message.contains("older than 25.12"), "{}", infra.message);
    let backup = d.status.checks.iter().find(|c| c.name == "hopBackups").unwrap();
    assert_eq!(backup.result, CheckResult::Fail);
    assert!(
        w.cluster.web.is_none() && w.cluster.worker.is_none(),
        "nothing provisioned"
    );
}

#[test]
fn a_gated_row_a_worker_took_is_waited_on() {
    let row = MigrationRow {
        name: "20260701_v4_step_1_create_root_spans_from_traces".into(),
        finished_at: None,
        failed_at: None,
        failed_reason: None,
        locked_at: None,
        cursor: None,
        oldest_row: None,
        batch_size: None,
        env_gate: Some("LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL".into()),
        taken: false,
    };
    let closed = crate::migrations::OpenGates::default();
    assert_eq!(row.state_with(t(0), &closed), crate::migrations::RowState::Dormant);
    let open = crate::migrations::OpenGates::from_env(&[k8s_openapi::api::core::v1::EnvVar {
        name: "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL".into(),
        value: Some("true".into()),
        value_from: None,
    }]);
    assert_eq!(row.state_with(t(0), &open), crate::migrations::RowState::Queued);
    let taken = MigrationRow { taken: true, ..row };
    assert_eq!(taken.state_with(t(0), &closed), crate::migrations::RowState::Queued);
}

#[test]
fn final_version_rolls_web_before_the_worker() {
    let mut s = spec();
    s.target.final_version = Some("3.40.0".into());
    let mut w = World::new(s);
    w.run_until(Phase::Completed, 400);
    let applied = |d: &Decision, role: &str| {
        d.actions.iter().any(|a| {
            matches!(a, Action::ApplyDeployment(d)
                if d.metadata.name.as_deref() == Some(&format!("{V2_NAME}-{role}"))
                && d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
                    .image.as_deref().unwrap().ends_with(":3.40.0"))
        })
    };
    let web_at = w
        .history
        .iter()
        .position(|d| applied(d, "web"))
        .expect("web rolled to 3.40.0");
    let worker_at = w
        .history
        .iter()
        .position(|d| applied(d, "worker"))
        .expect("worker rolled to 3.40.0");
    assert!(web_at < worker_at, "worker rolled with web ({web_at} vs {worker_at})");
}

/// The drain over random v2 write patterns (millisecond timestamps, as Prisma writes them) and
/// random poll timings (watch events wake the operator early; never later than its requeue).
mod drain_properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn the_drain_ends_on_time_never_early_and_writes_nothing_at_rest(
            drain_s in 1i64..=180,
            writes in prop::collection::vec(0i64..150_000, 0..40),
            gaps in prop::collection::vec(1i64..15_000, 1..30),
        ) {
            let mut s = spec();
            s.strategy.drain_period = format!("{drain_s}s");
            let mut w = World::new(s);
            w.run_until(Phase::Draining, 40);
            let shift = s_to_ms(w.now);
            let history = s_to_ms(-600) + w.write_millis;
            let mut writes: Vec<i64> = writes.iter().map(|d| shift + d).collect();
            writes.sort();
            let last_write = writes.last().copied().unwrap_or(history);
            let (drain_ms, max_gap) = (drain_s * 1000, gaps.iter().copied().max().unwrap());
            let (mut clock, mut requeue, mut seen) = (shift, max_gap, history);
            for i in 0..100_000usize {
                clock += gaps[i % gaps.len()].min(requeue.max(1));
                // As reconcile does: whole seconds, read before the observation.
                let now = crate::precision::bound_after(Timestamp::from_millisecond(clock).unwrap());
                let newest = writes.iter().copied().filter(|x| *x <= clock).max().unwrap_or(history);
                let mut obs = w.cluster.clone();
                obs.postgres = Some(Ok(PostgresFacts {
                    newest_write: Some(Timestamp::from_millisecond(newest).unwrap()),
                    newest_write_read_at: Some(Timestamp::from_millisecond(clock).unwrap()),
                    ..Default::default()
                }));
                let d = plan(&w.upgrade, &obs, now);
                let status = api_round_trip(&next_status(&w.upgrade, &d, now));
                if let Some(cutoff) = &status.cutoff {
                    // Never early: every write read is at least drainPeriod before the cut-off read.
                    prop_assert!(newest + drain_ms <= clock, "cut at {clock}, newest {newest}, drain {drain_ms}");
                    // On time: one poll to see the last write, drainPeriod, and the status's
                    // whole-second precision (up to 1 s rounding the write up, 1 s the clock down).
                    prop_assert!(
                        clock <= last_write.max(shift) + max_gap + drain_ms + 2000,
                        "cut at {clock}, last write {last_write}, drain {drain_ms}, poll {max_gap}"
                    );
                    // Nothing at or before the cut-off can appear later: it was there to be read.
                    prop_assert!(cutoff.0.as_millisecond() <= clock);
                    prop_assert!(writes.iter().all(|x| *x > cutoff.0.as_millisecond() || *x <= newest));
                    return Ok(());
                }
                prop_assert_eq!(d.phase, Phase::Draining);
                // At rest (no new write since the last poll) nothing in status changes.
                if i > 0 && newest == seen {
                    prop_assert_eq!(Some(&status), w.upgrade.status.as_ref());
                }
                seen = newest;
                requeue = d.requeue.as_millis() as i64;
                w.upgrade.status = Some(status);
            }
            prop_assert!(false, "the drain never ended");
        }
    }
}

/// Removes one recorded fact.
type ClearFact = fn(&mut LangfuseUpgradeStatus);

/// Facts recorded up to verification, v2 still at 2 replicas.
fn verified_status() -> LangfuseUpgradeStatus {
    LangfuseUpgradeStatus {
        provisioning_started_at: Some(time(0)),
        source_replicas: Some(2),
        traffic_shifted_at: Some(time(10)),
        cutoff: Some(time(20)),
        migrations_enabled_at: Some(time(20)),
        migrations_finished_at: Some(time(30)),
        verified_at: Some(time(40)),
        ..Default::default()
    }
}

fn planner_for<'a>(u: &'a LangfuseUpgrade, obs: &'a Observed) -> (Planner<'a>, crate::controller::validate::Settings) {
    (
        Planner::new(u, obs, crate::catalog::Catalog::current(), t(100)),
        crate::controller::validate::validate(u).unwrap(),
    )
}

/// Each irreversible step checks its own preconditions: called before the facts it depends on,
/// it holds with OutOfOrder and writes nothing, whatever the order of the gates.
#[test]
fn retiring_v2_refuses_without_the_shift_the_migrations_or_the_verification() {
    let mut s = spec();
    s.strategy.retire_source_after = "0s".into();
    let clears: [(&str, ClearFact); 3] = [
        ("the traffic shift", |s| s.traffic_shifted_at = None),
        ("the end of the background migrations", |s| {
            s.migrations_finished_at = None
        }),
        ("verification", |s| s.verified_at = None),
    ];
    let obs = untouched();
    for (missing, clear) in clears {
        let mut status = verified_status();
        clear(&mut status);
        let u = upgrade(s.clone(), status);
        let (mut p, settings) = planner_for(&u, &obs);
        let hold = retire::retire(&mut p, &settings).unwrap_err();
        assert_eq!(hold.reason, reason::OUT_OF_ORDER, "{missing}");
        assert!(hold.message.contains(missing), "{missing}: {}", hold.message);
        assert!(p.actions.is_empty(), "{missing}: {:?}", p.actions);
        assert!(p.status.source_retired_at.is_none());
    }
    // With every fact recorded the same call retires v2.
    let u = upgrade(s, verified_status());
    let (mut p, settings) = planner_for(&u, &obs);
    assert!(retire::retire(&mut p, &settings).is_err());
    assert_eq!(p.actions, [Action::ScaleSource(0)]);
}

/// v2 gone at the verification's own second, `retireSourceAfter: 0s`: the retirement is recorded
/// no earlier than the verification (to the millisecond), so the history keeps their order.
#[test]
fn v2_is_never_recorded_retired_before_it_was_verified() {
    let mut s = spec();
    s.strategy.retire_source_after = "0s".into();
    let mut status = verified_status();
    status.verified_at = Some(Time(Timestamp::from_millisecond(t(40).as_millisecond() + 640).unwrap()));
    let u = upgrade(s, status);
    let mut obs = untouched();
    obs.source = None;
    let settings = crate::controller::validate::validate(&u).unwrap();
    let mut p = Planner::new(&u, &obs, crate::catalog::Catalog::current(), t(40));
    assert!(retire::retire(&mut p, &settings).is_ok());
    let retired = p.status.source_retired_at.clone().unwrap();
    assert_eq!(retired, time(41), "rounded up to the whole second after verifiedAt");
    let mut p = Planner::new(&u, &obs, crate::catalog::Catalog::current(), t(45));
    assert!(retire::retire(&mut p, &settings).is_ok());
    assert_eq!(p.status.source_retired_at, Some(time(45)));
}

#[test]
#[should_panic(expected = "two different applies of Deployment")]
fn a_second_different_apply_of_one_deployment_is_caught() {
    let u = upgrade(spec(), Default::default());
    let obs = untouched();
    let mut p = Planner::new(&u, &obs, crate::catalog::Catalog::current(), t(40));
    let mut d = k8s_openapi::api::apps::v1::Deployment::default();
    d.metadata.name = Some("prod-langfuse-web".into());
    p.act(Action::ApplyDeployment(Box::new(d.clone())));
    p.act(Action::ApplyDeployment(Box::new(d.clone())));
    d.metadata.labels = Some([("changed".to_string(), "yes".to_string())].into());
    p.act(Action::ApplyDeployment(Box::new(d)));
}

#[test]
fn the_migrations_are_not_turned_on_before_the_shift_and_the_cutoff() {
    let clears: [(&str, ClearFact); 2] = [
        ("the traffic shift", |s| s.traffic_shifted_at = None),
        ("the drain's cut-off", |s| s.cutoff = None),
    ];
    let obs = untouched();
    for (missing, clear) in clears {
        let mut status = verified_status();
        status.migrations_enabled_at = None;
        status.migrations_finished_at = None;
        status.verified_at = None;
        clear(&mut status);
        let u = upgrade(spec(), status);
        let (mut p, settings) = planner_for(&u, &obs);
        let hold = migrate::migrate(&mut p, &settings, &workloads::Readiness::default()).unwrap_err();
        assert_eq!(hold.reason, reason::OUT_OF_ORDER, "{missing}");
        assert!(hold.message.contains(missing), "{missing}: {}", hold.message);
        assert!(p.actions.is_empty(), "{missing}: {:?}", p.actions);
        assert!(p.status.migrations_enabled_at.is_none());
    }
}

#[test]
fn v3_is_released_only_after_verification_retirement_and_the_final_version() {
    let mut s = spec();
    s.target.final_version = Some("3.40.0".into());
    let mut status = verified_status();
    status.source_retired_at = Some(time(50));
    let obs = untouched();
    // Retired, but the final version not reached: no release.
    let u = upgrade(s.clone(), status.clone());
    let (mut p, _) = planner_for(&u, &obs);
    let hold = retire::complete(&mut p);
    assert_eq!(hold.reason, reason::OUT_OF_ORDER);
    assert!(hold.message.contains("the final version"), "{}", hold.message);
    assert!(p.actions.is_empty() && p.status.completed_at.is_none());
    // Not retired: no release either, and no Finalizing stage to move v3 on from.
    status.source_retired_at = None;
    let u = upgrade(s, status);
    let (mut p, settings) = planner_for(&u, &obs);
    let hold = retire::complete(&mut p);
    assert!(hold.message.contains("v2's retirement"), "{}", hold.message);
    assert!(in_place::walk(&mut p, &settings, in_place::Walker::Owned).is_ok());
    assert!(p.actions.is_empty(), "{:?}", p.actions);
}

/// One row per preflight finding: a change to the spec or the observation, and the line it
/// must produce (check, result, words of the message). Every other line stays as it was.
#[test]
fn each_preflight_check_as_a_table() {
    use crate::api::CheckResult::{Fail, Pass, Skipped, Warn};
    use crate::databases::{RedisFacts, RedisProblem, S3Problem};
    use crate::verify::grants::Grants;
    type Change = fn(&mut LangfuseUpgradeSpec, &mut Observed);
    fn v2_image(o: &mut Observed, image: &str) {
        let pod = o
            .source
            .as_mut()
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap();
        pod.containers[0].image = Some(image.into());
    }
    fn pg(o: &mut Observed) -> &mut PostgresFacts {
        o.postgres.as_mut().unwrap().as_mut().unwrap()
    }
    fn ch(o: &mut Observed) -> &mut ClickHouseFacts {
        o.clickhouse.as_mut().unwrap().as_mut().unwrap()
    }
    let cases: Vec<(&str, Change, &str, CheckResult, &str)> = vec![
        (
            "parallel target",
            |s, _| s.target.version = "3.30.0".into(),
            "targetVersion",
            Fail,
            "only 3.29.0",
        ),
        ("no v2", |_, o| o.source = None, "sourceDeployment", Fail, "not found"),
        (
            "old v2",
            |_, o| v2_image(o, "ghcr.io/langfuse/langfuse:2.60.3"),
            "sourceVersion",
            Fail,
            "upgrade v2 to 2.92.0",
        ),
        (
            "floating tag",
            |_, o| v2_image(o, "ghcr.io/langfuse/langfuse:2"),
            "sourceVersion",
            Warn,
            "does not pin",
        ),
        (
            "unknown registry",
            |_, o| v2_image(o, "registry.corp/obs/tracing:2.95.9"),
            "images",
            Warn,
            "Docker Hub",
        ),
        (
            "no selector",
            |_, o| o.service = Some(v2_service(Default::default())),
            "service",
            Fail,
            "no selector",
        ),
        (
            "missing key",
            |_, o| o.missing_secret_keys = vec!["langfuse-redis/url".into()],
            "secrets",
            Fail,
            "langfuse-redis/url",
        ),
        (
            "cluster mode",
            |s, _| s.clickhouse.cluster_enabled = true,
            "clusterMode",
            Pass,
            "=true",
        ),
        (
            "no database settings",
            |_, o| {
                o.postgres = Some(Err(crate::controller::observed::PostgresError::Settings(
                    "DATABASE_HOST".into(),
                )))
            },
            "postgres",
            Fail,
            "connection settings missing: DATABASE_HOST",
        ),
        (
            "old Postgres",
            |_, o| pg(o).server_version_num = Some(110_000),
            "postgresVersion",
            Fail,
            "older than 12",
        ),
        (
            "shared created_at",
            |_, o| pg(o).same_created_at_groups = vec![(crate::migrations::Table::Traces, 12_000)],
            "stuckCursorScan",
            Warn,
            "planned args.batchSize 12001",
        ),
        (
            "dirty schema",
            |_, o| ch(o).schema = Some((8, true)),
            "clickhouse",
            Fail,
            "dirty",
        ),
        (
            "newer schema",
            |_, o| ch(o).schema = Some((37, false)),
            "clickhouse",
            Fail,
            "past 8",
        ),
        (
            "old ClickHouse",
            |_, o| ch(o).version = Some("23.8.1".into()),
            "clickhouseVersion",
            Fail,
            "older than 24.3",
        ),
        (
            "ClickHouse 26.9",
            |_, o| ch(o).version = Some("26.9.1".into()),
            "clickhouseVersion",
            Warn,
            "26.8+",
        ),
        (
            "Postgres 13",
            |_, o| pg(o).server_version_num = Some(130_012),
            "postgresVersion",
            Warn,
            "outside 14-16",
        ),
        (
            "wrong Redis password",
            |s, o| {
                s.redis.connection_string_secret_ref = None;
                s.redis.host = Some("redis".into());
                s.redis.auth_secret_ref = Some(crate::testing::secret_ref("redis", "auth"));
                o.redis = Some(Err(RedisProblem::Auth {
                    target: "redis:6379".into(),
                    detail: "wrong user or password".into(),
                }))
            },
            "redis",
            Fail,
            "spec.redis.authSecretRef",
        ),
        (
            "Redis host unreachable",
            |_, o| {
                // spec() names a connection string: its Secret is what to fix.
                o.redis = Some(Err(RedisProblem::Unreachable {
                    target: "redis:6379".into(),
                    detail: "connection refused".into(),
                }))
            },
            "redis",
            Fail,
            "host and port in the Secret of spec.redis.connectionStringSecretRef",
        ),
        (
            "Redis 6.2",
            |_, o| {
                o.redis = Some(Ok(RedisFacts {
                    version: "6.2.14".into(),
                    tls: false,
                }))
            },
            "redis",
            Fail,
            "older than 7.0",
        ),
        (
            "Redis 8.0",
            |_, o| {
                o.redis = Some(Ok(RedisFacts {
                    version: "8.0.2".into(),
                    tls: true,
                }))
            },
            "redis",
            Warn,
            "newer than 7.4",
        ),
        (
            "a ClickHouse user that may only read",
            |_, o| ch(o).grants = Some(Ok(Grants::parse(&["GRANT SELECT ON default.* TO ro".into()]))),
            "clickhouseGrants",
            Fail,
            "lacks INSERT, ALTER, CREATE TABLE, ALTER DELETE on default.*",
        ),
        (
            "grants on another database than spec.clickhouse.database",
            |s, o| {
                s.clickhouse.database = Some("langfuse".into());
                ch(o).grants = Some(Ok(Grants::parse(&["GRANT ALL ON default.* TO lf".into()])));
            },
            "clickhouseGrants",
            Fail,
            "GRANT SELECT, INSERT, ALTER, CREATE TABLE, ALTER DELETE ON langfuse.*",
        ),
        (
            "grants unreadable",
            |_, o| ch(o).grants = Some(Err("reading the ClickHouse user's grants: Code: 62".into())),
            "clickhouseGrants",
            Warn,
            "check by hand",
        ),
        (
            "grants lacking, waived",
            |s, o| {
                s.preflight.skip = vec![WaivableCheck::ClickHouseGrants];
                ch(o).grants = Some(Ok(Grants::default()));
            },
            "clickhouseGrants",
            Skipped,
            "waived",
        ),
        (
            "Redis unreachable, waived",
            |s, o| {
                s.preflight.skip = vec![WaivableCheck::Redis];
                o.redis = Some(Err(RedisProblem::Unreachable {
                    target: "redis:6379".into(),
                    detail: "timed out".into(),
                }))
            },
            "redis",
            Skipped,
            "waived",
        ),
        (
            "no bucket",
            |_, o| {
                o.s3 = Some(Err(S3Problem::NoSuchBucket {
                    bucket: "langfuse-events".into(),
                    endpoint: "http://s3".into(),
                }))
            },
            "s3",
            Fail,
            "create the bucket or fix spec.s3.bucket",
        ),
        (
            "read-only key",
            |_, o| {
                o.s3 = Some(Err(S3Problem::Denied {
                    bucket: "langfuse-events".into(),
                    prefix: "events/".into(),
                    action: "write",
                    code: "AccessDenied".into(),
                }))
            },
            "s3",
            Fail,
            "s3:PutObject",
        ),
        (
            "ambient identity",
            |s, o| {
                s.s3.access_key_id_secret_ref = None;
                s.s3.secret_access_key_secret_ref = None;
                o.s3 = None;
            },
            "s3",
            Warn,
            "ambient identity",
        ),
        (
            "HPA on v2",
            |_, o| o.hpas_on_source = vec!["prod-langfuse".into()],
            "horizontalPodAutoscaler",
            Warn,
            "prod-langfuse",
        ),
        (
            "no backup",
            |s, _| s.backup.acknowledged = false,
            "backup",
            Fail,
            "spec.backup.acknowledged",
        ),
        (
            "backup waived",
            |s, _| {
                s.backup.acknowledged = false;
                s.preflight.skip = vec![WaivableCheck::Backup];
            },
            "backup",
            Skipped,
            "waived",
        ),
    ];
    let baseline = preflight_checks(UPGRADE, &spec(), &untouched());
    assert!(baseline.iter().all(|c| c.result == Pass), "{baseline:#?}");
    for (what, change, check, result, words) in cases {
        let (mut s, mut o) = (spec(), untouched());
        change(&mut s, &mut o);
        let lines = preflight_checks(UPGRADE, &s, &o);
        let line = lines
            .iter()
            .find(|c| c.name == check)
            .unwrap_or_else(|| panic!("{what}: no {check} line in {lines:#?}"));
        assert_eq!(line.result, result, "{what}: {}", line.message);
        assert!(line.message.contains(words), "{what}: {:?}", line.message);
    }
}

#[test]
fn status_shows_the_road_stop_by_stop() {
    use crate::api::{StopMode, StopState};
    let mut s = spec();
    s.target.final_version = Some("3.40.0".into());
    let mut w = World::new(s);
    let road = |w: &World| {
        w.status()
            .road
            .iter()
            .map(|r| (r.version.clone(), r.mode, r.state))
            .collect::<Vec<_>>()
    };
    w.run_until(Phase::Draining, 40);
    assert_eq!(
        road(&w),
        [
            ("3.29.0".into(), StopMode::BesideV2, StopState::Current),
            ("3.40.0".into(), StopMode::InPlace, StopState::Next)
        ]
    );
    assert!(
        w.status().road[0]
            .required_because
            .as_deref()
            .unwrap()
            .contains("beside v2")
    );
    w.run_until(Phase::Finalizing, 400);
    assert_eq!(road(&w)[0].2, StopState::Done);
    assert_eq!(road(&w)[1].2, StopState::Current);
    w.run_until(Phase::Completed, 400);
    assert!(road(&w).iter().all(|(.., state)| *state == StopState::Done));
    // Aborted mid-way: the stops not reached are marked rolled back.
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    w.upgrade.spec.abort = true;
    w.run_until(Phase::RolledBack, 100);
    assert_eq!(road(&w), [("3.29.0".into(), StopMode::BesideV2, StopState::RolledBack)]);
}

#[test]
fn a_final_version_newer_than_the_catalog_is_refused_unless_accepted() {
    let mut s = spec();
    s.target.final_version = Some("3.300.0".into());
    let mut w = World::new(s.clone());
    let d = w.step();
    assert_eq!(d.phase, Phase::Pending);
    let ready = condition(&w, c::READY);
    assert!(ready.message.contains("catalog/langfuse.yaml"), "{}", ready.message);
    assert!(ready.message.contains("acceptUnknownRelease"), "{}", ready.message);
    s.target.accept_unknown_release = true;
    let mut w = World::new(s);
    assert_ne!(w.step().phase, Phase::Pending);
}

#[test]
fn an_impossible_object_name_reads_nothing() {
    let mut s = spec();
    s.source.service = "other-ns/prod-langfuse".into();
    let u = upgrade(s, Default::default());
    let n = needs(&u, t(0));
    assert!(n.nothing && n.postgres.is_empty() && n.clickhouse.is_empty() && !n.secrets);
    assert!(!needs(&upgrade(spec(), Default::default()), t(0)).nothing);
}

/// Writes `tests/cli/fixtures/*.yaml`: the object, status included, at each phase of the
/// simulated upgrades above (the `kubectl lfu` rendering tests read them). A generator, not a
/// check: `make cli-fixtures` runs it; the fixtures are committed and reviewed as text.
#[test]
#[ignore = "writes tests/cli/fixtures: run `make cli-fixtures`"]
fn generate_cli_fixtures() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cli/fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let save = |w: &World, name: &str| {
        let mut u = w.upgrade.clone();
        u.metadata.namespace = Some("langfuse".into());
        u.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("lfu.test/now".into(), t(w.now).to_string());
        u.metadata.finalizers = None;
        std::fs::write(dir.join(format!("{name}.yaml")), serde_yaml::to_string(&u).unwrap()).unwrap();
    };
    // Every phase of the happy path, and the road to v4.
    let mut s = spec();
    s.target.final_version = Some("4.16.0".into());
    s.backup.acknowledged_hops = vec!["4.16.0".into()];
    let mut w = World::new(s);
    w.ch_version = "25.12.1.1".into();
    // Every phase, Verifying too: a reconcile whose counts could not be read stops there.
    w.look_ahead = false;
    let mut seen = Vec::new();
    for _ in 0..400 {
        let d = w.step();
        if !seen.contains(&d.phase) {
            seen.push(d.phase);
            save(&w, &format!("phase-{}", d.phase.to_string().to_lowercase()));
        }
        if d.phase == Phase::Completed {
            break;
        }
    }
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    w.cluster.service.as_mut().unwrap().spec.as_mut().unwrap().selector = Some(chart_selector());
    w.settle();
    w.step();
    save(&w, "selector-reverted");
    let mut s = spec();
    s.strategy.promotion = Promotion::Manual;
    let mut w = World::new(s);
    w.run_until(Phase::AwaitingPromotion, 20);
    save(&w, "phase-awaitingpromotion");
    let mut w = World::new(spec());
    w.run_until(Phase::Provisioning, 5);
    w.upgrade.spec.paused = true;
    w.step();
    save(&w, "phase-paused");
    let mut s = spec();
    s.backup.acknowledged = false;
    let mut w = World::new(s);
    w.step();
    save(&w, "preflight-failed");
    // Stuck with remediation off: reported to a person with the fix.
    let mut w = World::new(spec());
    w.runner.trap = Some((1, 12_000));
    w.upgrade.spec.migrations.remediation = false;
    for _ in 0..900 {
        let reason = w.status().condition(c::READY).map(|x| x.reason.clone());
        if reason.as_deref() == Some("MigrationStuck") {
            save(&w, "migration-stuck");
            break;
        }
        w.step();
    }
    let mut w = World::new(spec());
    w.runner.trap = Some((1, 12_000));
    for _ in 0..900 {
        let d = w.step();
        if d.actions.iter().any(|a| matches!(a, Action::Remedy(_))) {
            w.step();
            save(&w, "migration-remedied");
            break;
        }
    }
    let mut w = World::new(spec());
    w.ch.observations -= 1;
    w.run_until(Phase::Degraded, 400);
    save(&w, "phase-degraded");
    let mut w = World::new(spec());
    w.run_until(Phase::Draining, 40);
    w.break_web();
    w.run_until(Phase::RolledBack, 200);
    save(&w, "phase-rolledback");
    let mut w = World::new(spec());
    w.runner.napi = Some((1, 100));
    w.upgrade.spec.migrations.min_batch_size = 600;
    w.run_until(Phase::Failed, 600);
    save(&w, "phase-failed");
    let mut s = spec();
    s.strategy.drain_period = "two minutes".into();
    let mut w = World::new(s);
    w.step();
    save(&w, "phase-pending");
}

#[test]
fn a_final_version_changed_mid_hop_never_writes_an_older_release() {
    let mut s = spec();
    s.target.final_version = Some("3.150.0".into());
    let mut w = World::new(s);
    w.ch_version = "25.12.1.1".into();
    let image = |w: &World| {
        w.cluster
            .web
            .as_ref()
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone()
            .unwrap()
    };
    for _ in 0..400 {
        w.step();
        if image(&w).ends_with(":3.150.0") {
            break;
        }
    }
    assert!(image(&w).ends_with(":3.150.0"));
    w.upgrade.spec.target.final_version = Some("4.16.0".into());
    w.upgrade.spec.backup.acknowledged_hops = vec!["4.16.0".into()];
    for _ in 0..5 {
        let d = w.step();
        assert_eq!(d.phase, Phase::Blocked, "{:?}", d.conditions);
        for a in &d.actions {
            if let Action::ApplyDeployment(dep) = a {
                let img = dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone();
                assert!(img.unwrap().ends_with(":3.150.0"), "an older release written");
            }
        }
    }
    // Back to the destination under way: the hop finishes.
    w.upgrade.spec.target.final_version = Some("3.150.0".into());
    w.run_until(Phase::Completed, 100);
}

#[test]
fn the_happy_path_emits_no_warning_event() {
    // Every transition of the simulated happy path, as `report` turns it into Events.
    let mut w = World::new(spec());
    let mut warnings = Vec::new();
    for _ in 0..400 {
        let before = w.status();
        let d = w.step();
        for (kind, reason, note) in crate::controller::report::transitions(&before, &w.status()) {
            if kind == kube::runtime::events::EventType::Warning {
                warnings.push(format!("{reason}: {note}"));
            }
        }
        if d.phase == Phase::Completed {
            break;
        }
    }
    assert_eq!(w.status().phase, Some(Phase::Completed));
    assert!(warnings.is_empty(), "{warnings:#?}");
}
