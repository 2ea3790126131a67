//! End-to-end: the operator binary, as a separate process, upgrades a chart-era Langfuse v2 on
//! a real control plane (kube-apiserver, controller-manager, scheduler, kwok), with the real
//! PostgreSQL and ClickHouse engine, while an observer checks the invariants from the API.
//! Run through `tests/e2e/run.sh` (starts the cluster and databases, stops them after).

mod e2e_support;
mod support;

use std::time::{Duration, Instant};

use e2e_support::observer::Observer;
use e2e_support::{Operator, TestNs, kubectl_status, play_worker};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use langfuse_upgrade_operator::api::{Phase, crd_yaml};
use serde_json::{Value, json};
use support::TestDb;

const UPGRADE: &str = "to-v3";
const V2: &str = "prod-langfuse";
const FLOW: Duration = Duration::from_secs(240);

fn install_crd() {
    let (out, ok) = kubectl_status(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&crd_yaml()),
    );
    assert!(ok, "CRD install: {out}");
    let (out, ok) = kubectl_status(
        &[
            "wait",
            "--for=condition=Established",
            "crd/langfuseupgrades.upgrades.lfu-operator.dev",
            "--timeout=30s",
        ],
        None,
    );
    assert!(ok, "{out}");
}

/// A test's world: namespace, databases with v2 data, the v2 layout.
struct World {
    ns: TestNs,
    db: TestDb,
}

impl World {
    async fn new(label: &str, v2_image: &str) -> World {
        install_crd();
        let ns = TestNs::new(label).await;
        let db = TestDb::new(&ns.name).await;
        // An hour of v2 history in every table, all older than the drain period.
        let first = Timestamp::from_second(Timestamp::now().as_second() - 3600).unwrap();
        for table in ["traces", "observations", "scores"] {
            db.insert_rows(table, &format!("{table}-"), 300, first, 5_000).await;
        }
        ns.lay_out_v2(db.pg_url.expose(), v2_image).await;
        let env = support::env();
        let ch = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "langfuse-clickhouse", "namespace": ns.name },
            "stringData": { "user": env.clickhouse_user, "password": env.clickhouse_password },
        });
        let (out, ok) = ns.apply(&ch);
        assert!(ok, "{out}");
        World { ns, db }
    }

    fn upgrade(&self) -> Value {
        json!({
            "apiVersion": "upgrades.lfu-operator.dev/v1alpha1",
            "kind": "LangfuseUpgrade",
            "metadata": { "name": UPGRADE, "namespace": self.ns.name },
            "spec": {
                "source": { "deployment": V2, "service": V2 },
                "target": { "version": "3.29.0", "web": { "image": "langfuse/langfuse", "replicas": 2 } },
                "clickhouse": {
                    "url": self.db.ch.url,
                    "migrationUrl": "clickhouse://127.0.0.1:9000",
                    "database": self.db.ch.database,
                    "userSecretRef": { "name": "langfuse-clickhouse", "key": "user" },
                    "passwordSecretRef": { "name": "langfuse-clickhouse", "key": "password" }
                },
                "redis": { "connectionStringSecretRef": { "name": "langfuse-redis", "key": "url" } },
                "s3": {
                    "bucket": "langfuse-events",
                    "accessKeyIdSecretRef": { "name": "langfuse-s3", "key": "access-key-id" },
                    "secretAccessKeySecretRef": { "name": "langfuse-s3", "key": "secret-access-key" }
                },
                "strategy": { "drainPeriod": "3s", "retireSourceAfter": "3s", "rollbackAfter": "30s" },
                "backup": { "acknowledged": true, "reference": "e2e" }
            }
        })
    }

    fn apply(&self, upgrade: &Value) {
        let (out, ok) = self.ns.apply(upgrade);
        assert!(ok, "apply: {out}");
    }

    fn observe(&self) -> Observer {
        Observer::start(self.ns.client.clone(), &self.ns.name, UPGRADE, V2, V2)
    }

    async fn replica_sets(&self, deployment: &str) -> usize {
        let rs: Api<ReplicaSet> = Api::namespaced(self.ns.client.clone(), &self.ns.name);
        rs.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|r| r.owner_references().iter().any(|o| o.name == deployment))
            .count()
    }

    async fn events(&self) -> Vec<K8sEvent> {
        let api: Api<K8sEvent> = Api::namespaced(self.ns.client.clone(), &self.ns.name);
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("LangfuseUpgrade"))
            .collect()
    }

    async fn finish(self) {
        self.ns.delete().await;
        self.db.finish().await;
    }
}

fn assert_clean(observer: &Observer) {
    let v = observer.violations();
    assert!(v.is_empty(), "invariant violations observed: {v:#?}");
    let deleted = observer.deleted();
    assert!(deleted.is_empty(), "deleted although nobody asked: {deleted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_completes_and_every_invariant_holds_throughout() {
    let w = World::new("happy", "langfuse/langfuse:2.95.9").await;
    let observer = w.observe();
    let op = Operator::start(&w.ns.name, "a");
    let worker = play_worker(&w.ns, &w.db, "prod-langfuse-worker");
    let started = Instant::now();
    w.apply(&w.upgrade());

    // kstatus: `kubectl wait --for=condition=Ready` returns when the upgrade completes.
    let (out, ok) = kubectl_status(
        &[
            "-n",
            &w.ns.name,
            "wait",
            "--for=condition=Ready",
            &format!("lfu/{UPGRADE}"),
            "--timeout=240s",
        ],
        None,
    );
    assert!(ok, "kubectl wait: {out}");
    let u = w.ns.wait_phase(UPGRADE, Phase::Completed, Duration::from_secs(5)).await;
    let s = u.status.clone().unwrap();
    eprintln!(
        "completed in {:?}; timeline: {:#?}",
        started.elapsed(),
        observer.timeline()
    );

    assert_clean(&observer);
    assert_eq!(s.observed_generation, u.metadata.generation);
    for c in [
        "Ready",
        "PreflightPassed",
        "TrafficShifted",
        "MigrationsComplete",
        "Verified",
        "SourceRetired",
    ] {
        let cond = s
            .conditions
            .iter()
            .find(|x| x.type_ == c)
            .unwrap_or_else(|| panic!("no {c}"));
        assert_eq!(cond.status, "True", "{c}: {}", cond.message);
    }
    assert!(
        s.verification.iter().all(|v| v.verdict == "Match" && v.postgres == 300),
        "{:?}",
        s.verification
    );
    for table in ["traces", "observations", "scores"] {
        assert_eq!(w.db.ch_final_count(table).await, 300, "{table} in ClickHouse");
    }
    // v2 kept at 0 replicas, never deleted; v3 released from the object.
    let v2 = w.ns.deployments().get(V2).await.unwrap();
    assert_eq!(v2.spec.unwrap().replicas, Some(0));
    for name in ["prod-langfuse-web", "prod-langfuse-worker"] {
        let d = w.ns.deployments().get(name).await.unwrap();
        assert!(d.owner_references().is_empty(), "{name} still owned");
    }
    // Exactly the rollouts the flow needs: the first template, then migrations on.
    assert_eq!(w.replica_sets("prod-langfuse-web").await, 2);
    assert_eq!(w.replica_sets("prod-langfuse-worker").await, 2);
    // Events: one per phase change and per write; no secret in any of them.
    let events = w.events().await;
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("SelectorApplied")));
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("Completed")));
    for e in &events {
        let note = e.note.clone().unwrap_or_default();
        for secret in [
            support::env().clickhouse_password.as_str(),
            "test-redis-password",
            "test-secret-key",
        ] {
            assert!(!note.contains(secret), "secret in an Event: {note}");
        }
    }
    // The metrics endpoint, scraped and parsed: the phase, the finished migrations, the work done.
    let samples = e2e_support::scrape(op.http_port).await;
    let one = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    };
    let ns = w.ns.name.as_str();
    assert_eq!(
        one(
            "lfu_upgrade_phase",
            &[("namespace", ns), ("name", UPGRADE), ("phase", "Completed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        one(
            "lfu_upgrade_phase",
            &[("namespace", ns), ("name", UPGRADE), ("phase", "Migrating")]
        ),
        Some(0.0)
    );
    assert_eq!(
        one(
            "lfu_upgrade_condition",
            &[
                ("namespace", ns),
                ("type", "Ready"),
                ("status", "True"),
                ("reason", "Completed")
            ]
        ),
        Some(1.0)
    );
    let progress: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == "lfu_migration_progress_ratio")
        .map(|s| s.value)
        .collect();
    assert_eq!(progress, vec![1.0; 4], "{samples:#?}");
    assert!(one("lfu_reconciles_total", &[]).unwrap() > 5.0);
    assert!(one("lfu_reconcile_duration_seconds_count", &[]).unwrap() > 5.0);
    assert_eq!(
        one(
            "lfu_preflight_check",
            &[("namespace", ns), ("check", "backup"), ("result", "Pass")]
        ),
        Some(1.0)
    );
    worker.abort();
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_promotion_waits_then_continues_on_approval() {
    let w = World::new("manual", "langfuse/langfuse:2.95.9").await;
    let observer = w.observe();
    let _op = Operator::start(&w.ns.name, "a");
    let worker = play_worker(&w.ns, &w.db, "prod-langfuse-worker");
    let mut up = w.upgrade();
    up["spec"]["strategy"]["promotion"] = json!("Manual");
    w.apply(&up);
    w.ns.wait_phase(UPGRADE, Phase::AwaitingPromotion, FLOW).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(w.ns.phase(UPGRADE).await, Some(Phase::AwaitingPromotion));
    assert!(
        !observer.record.lock().unwrap().switched_ever,
        "shifted without approval"
    );
    up["spec"]["strategy"]["approved"] = json!(true);
    w.apply(&up);
    w.ns.wait_phase(UPGRADE, Phase::Completed, FLOW).await;
    assert_clean(&observer);
    worker.abort();
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_before_retirement_rolls_back() {
    let w = World::new("abort", "langfuse/langfuse:2.95.9").await;
    let observer = w.observe();
    let _op = Operator::start(&w.ns.name, "a");
    let mut up = w.upgrade();
    // Hold after the shift: no stand-in worker runs, so the migrations never finish.
    up["spec"]["strategy"]["drainPeriod"] = json!("2s");
    w.apply(&up);
    w.ns.wait_phase(UPGRADE, Phase::Migrating, FLOW).await;
    up["spec"]["abort"] = json!(true);
    w.apply(&up);
    let u = w.ns.wait_phase(UPGRADE, Phase::RolledBack, FLOW).await;
    let service = kubectl_status(
        &["-n", &w.ns.name, "get", "svc", V2, "-o", "jsonpath={.spec.selector}"],
        None,
    )
    .0;
    let selector: Value = serde_json::from_str(&service).unwrap();
    assert_eq!(
        selector,
        json!({ "app.kubernetes.io/name": "langfuse", "app.kubernetes.io/instance": "prod" })
    );
    assert_eq!(
        w.ns.deployments().get(V2).await.unwrap().spec.unwrap().replicas,
        Some(2)
    );
    assert!(
        w.ns.deployments().get_opt("prod-langfuse-web").await.unwrap().is_none(),
        "v3 web gone"
    );
    assert!(
        w.ns.deployments()
            .get_opt("prod-langfuse-worker")
            .await
            .unwrap()
            .is_none(),
        "v3 worker gone"
    );
    assert!(
        u.status
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True")
    );
    // The v3 deletions were asked for (abort); nothing else was deleted.
    let deleted = observer.deleted();
    assert!(
        deleted
            .iter()
            .all(|d| d == "Deployment/prod-langfuse-web" || d == "Deployment/prod-langfuse-worker"),
        "{deleted:?}"
    );
    let v = observer.violations();
    assert!(v.is_empty(), "{v:#?}");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_that_never_becomes_ready_is_never_shifted_to() {
    let w = World::new("unready", "langfuse/langfuse:2.95.9").await;
    let observer = w.observe();
    let _op = Operator::start(&w.ns.name, "a");
    let mut up = w.upgrade();
    // No node can fit it: the web pod stays Pending, as a broken image would stay unready.
    up["spec"]["target"]["web"]["resources"] = json!({ "requests": { "cpu": "5000" } });
    w.apply(&up);
    w.ns.wait_phase(UPGRADE, Phase::Provisioning, FLOW).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let u = w.ns.upgrade(UPGRADE).await;
    let s = u.status.unwrap();
    assert_eq!(s.phase, Some(Phase::Provisioning));
    let ready = s.condition("Ready").unwrap();
    assert_eq!(ready.reason, "WebNotAvailable");
    assert!(ready.message.contains("0/1 available"), "{}", ready.message);
    assert!(!observer.record.lock().unwrap().switched_ever);
    assert!(
        w.ns.deployments()
            .get_opt("prod-langfuse-worker")
            .await
            .unwrap()
            .is_none(),
        "worker waits for web"
    );
    assert_clean(&observer);
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_every_phase_still_completes_without_a_wrong_write() {
    let w = World::new("sigkill", "langfuse/langfuse:2.95.9").await;
    let observer = w.observe();
    let mut op = Operator::start(&w.ns.name, "a");
    let worker = play_worker(&w.ns, &w.db, "prod-langfuse-worker");
    w.apply(&w.upgrade());
    let mut killed_in = Vec::new();
    let deadline = Instant::now() + FLOW;
    loop {
        let phase = w.ns.phase(UPGRADE).await;
        if phase == Some(Phase::Completed) {
            break;
        }
        if let Some(p) = phase
            && !killed_in.contains(&p)
        {
            op.restart();
            killed_in.push(p);
        }
        assert!(
            Instant::now() < deadline,
            "not completed; killed in {killed_in:?}, now {phase:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("killed (SIGKILL) and restarted in {killed_in:?}; {} starts", op.starts);
    for p in [
        Phase::Provisioning,
        Phase::ShiftingTraffic,
        Phase::Draining,
        Phase::Migrating,
        Phase::RetiringSource,
    ] {
        assert!(killed_in.contains(&p), "never killed in {p}: {killed_in:?}");
    }
    assert_clean(&observer);
    assert_eq!(
        w.replica_sets("prod-langfuse-web").await,
        2,
        "a duplicate rollout of web"
    );
    assert_eq!(
        w.replica_sets("prod-langfuse-worker").await,
        2,
        "a duplicate rollout of the worker"
    );
    let switched = w
        .events()
        .await
        .iter()
        .filter(|e| e.reason.as_deref() == Some("SelectorApplied"))
        .count();
    assert_eq!(switched, 1, "the selector was switched more than once");
    worker.abort();
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_act_as_one() {
    let w = World::new("ha", "langfuse/langfuse:2.95.9").await;
    let observer = w.observe();
    let a = Operator::start(&w.ns.name, "replica-a");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = Operator::start(&w.ns.name, "replica-b");
    let worker = play_worker(&w.ns, &w.db, "prod-langfuse-worker");
    w.apply(&w.upgrade());
    w.ns.wait_phase(UPGRADE, Phase::Completed, FLOW).await;
    let leaders = [&a, &b]
        .iter()
        .filter(|o| o.logs().contains("leading; starting the controller"))
        .count();
    assert_eq!(leaders, 1, "both replicas led:\nA: {}\nB: {}", a.logs(), b.logs());
    let instances: std::collections::BTreeSet<String> = w
        .events()
        .await
        .iter()
        .filter_map(|e| e.reporting_instance.clone())
        .collect();
    assert_eq!(instances.len(), 1, "events from several replicas: {instances:?}");
    assert_clean(&observer);
    worker.abort();
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_are_rejected_or_reported_and_nothing_is_created() {
    // Rejected by the apiserver itself (schema and CEL).
    let w = World::new("badspec", "langfuse/langfuse:2.95.9").await;
    type Mutation = fn(&mut Value);
    let rejected: Vec<(&str, Mutation, &str)> = vec![
        (
            "malformed duration",
            |u| u["spec"]["strategy"]["drainPeriod"] = json!("two minutes"),
            "drainPeriod",
        ),
        (
            "redis twice",
            |u| u["spec"]["redis"]["host"] = json!("redis"),
            "exactly one of redis",
        ),
        (
            "half S3 credentials",
            |u| {
                u["spec"]["s3"]
                    .as_object_mut()
                    .unwrap()
                    .remove("secretAccessKeySecretRef");
            },
            "set both s3",
        ),
        (
            "migrations in extraEnv",
            |u| {
                u["spec"]["target"]["extraEnv"] =
                    json!([{ "name": "LANGFUSE_ENABLE_BACKGROUND_MIGRATIONS", "value": "true" }])
            },
            "managed by the operator",
        ),
        (
            "v4 target",
            |u| u["spec"]["target"]["version"] = json!("4.0.0"),
            "spec.target.version",
        ),
    ];
    for (what, mutate, message) in rejected {
        let mut u = w.upgrade();
        mutate(&mut u);
        let (out, ok) = w.ns.apply(&u);
        assert!(!ok, "{what} was accepted");
        assert!(out.contains(message), "{what}: {out}");
    }
    w.finish().await;

    // Accepted, then Blocked with a condition that names the problem; nothing created.
    type Setup = fn(&TestNs, &mut Value);
    let blocked: Vec<(&str, &str, Setup, &str)> = vec![
        (
            "missing v2",
            "langfuse/langfuse:2.95.9",
            |_, u| u["spec"]["source"]["deployment"] = json!("nope"),
            "sourceDeployment",
        ),
        ("v2 too old", "langfuse/langfuse:2.60.3", |_, _| {}, "sourceVersion"),
        (
            "missing secret key",
            "langfuse/langfuse:2.95.9",
            |_, u| u["spec"]["redis"]["connectionStringSecretRef"]["key"] = json!("nope"),
            "langfuse-redis/nope",
        ),
        (
            "3.30.0 in parallel",
            "langfuse/langfuse:2.95.9",
            |_, u| u["spec"]["target"]["version"] = json!("3.30.0"),
            "only 3.29.0",
        ),
        (
            "no backup",
            "langfuse/langfuse:2.95.9",
            |_, u| u["spec"]["backup"]["acknowledged"] = json!(false),
            "backup",
        ),
    ];
    for (what, image, setup, message) in blocked {
        let w = World::new("blocked", image).await;
        let _op = Operator::start(&w.ns.name, "a");
        let mut u = w.upgrade();
        setup(&w.ns, &mut u);
        w.apply(&u);
        let up = w.ns.wait_phase(UPGRADE, Phase::Blocked, Duration::from_secs(60)).await;
        let ready = up
            .status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.reason, "PreflightFailed", "{what}");
        assert!(ready.message.contains(message), "{what}: {}", ready.message);
        let created: Vec<String> =
            w.ns.deployments()
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .map(|d| d.name_any())
                .filter(|n| n != V2)
                .collect();
        assert!(created.is_empty(), "{what}: created {created:?}");
        w.finish().await;
    }
}
