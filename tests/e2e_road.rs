//! End-to-end on the road of in-place hops: a Langfuse already on v3 as the official chart lays
//! it out (applied by the field manager `helm`), the operator binary as a separate process, the
//! real control plane and databases, and stand-ins that play each release's web and worker from
//! the release catalog. Run through `tests/e2e/run.sh`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::Api;
use kube::api::ListParams;
use langfuse_upgrade_operator::api::{FIELD_MANAGER, LangfuseUpgrade, Phase, StopState};
use lfu_testkit::e2e_support::observer::Observer;
use lfu_testkit::e2e_support::{self, Operator, TestNs, kubectl, kubectl_status, play_web, play_worker};
use lfu_testkit::support::{self, TestDb};
use serde_json::{Value, json};

const FLOW: Duration = Duration::from_secs(180);

#[path = "e2e_road/data_model.rs"]
mod data_model;

struct Road {
    ns: TestNs,
    db: TestDb,
}

impl Road {
    /// A chart-laid-out Langfuse at `version`, as if that release had run on these databases.
    async fn new(label: &str, version: &str) -> Road {
        e2e_support::use_operator_bin(env!("CARGO_BIN_EXE_langfuse-upgrade-operator"));
        e2e_support::install_crd();
        let ns = TestNs::new(label).await;
        let db = TestDb::new(&ns.name).await;
        e2e_support::as_if_ran(&db, version).await;
        ns.lay_out_chart_v3(db.pg_url.expose(), version).await;
        let env = support::env();
        let (out, ok) = ns.apply(&json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "langfuse-clickhouse", "namespace": ns.name },
            "stringData": { "user": env.clickhouse_user, "password": env.clickhouse_password },
        }));
        assert!(ok, "{out}");
        Road { ns, db }
    }

    fn upgrade(&self, name: &str, to: &str) -> Value {
        let mut u = json!({
            "apiVersion": "upgrades.lfu-operator.dev/v1alpha1",
            "kind": "LangfuseUpgrade",
            "metadata": { "name": name, "namespace": self.ns.name },
            "spec": {
                "source": { "deployment": "langfuse-web", "service": "langfuse-web" },
                "target": { "version": to },
            }
        });
        for (k, v) in e2e_support::backends_spec(&self.db).as_object().unwrap() {
            u["spec"][k] = v.clone();
        }
        u
    }

    fn apply(&self, upgrade: &Value) {
        let (out, ok) = self.ns.apply(upgrade);
        assert!(ok, "apply: {out}");
    }

    async fn deployment(&self, name: &str) -> Deployment {
        self.ns.deployments().get(name).await.unwrap()
    }

    /// Once they stop changing: the operator publishes Events a moment after the status.
    async fn events(&self) -> Vec<K8sEvent> {
        e2e_support::settled_events(&self.ns).await
    }

    /// The namespace watched from now on: the Service's ready endpoints and DESIGN §2.
    fn observe(&self, upgrade: &str) -> Observer {
        Observer::start(
            self.ns.client.clone(),
            &self.ns.name,
            upgrade,
            "langfuse-web",
            "langfuse-web",
        )
    }

    /// No invariant broken, and the web Service never without a ready endpoint.
    fn assert_clean(&self, observer: &Observer) {
        let gaps = e2e_support::report_downtime(&self.ns.name, observer);
        assert!(
            gaps.is_empty(),
            "the web Service had no ready endpoint: {gaps:?} (from ms, for ms)"
        );
        let v = observer.violations();
        assert!(v.is_empty(), "{v:#?}");
    }

    async fn finish(self) {
        self.ns.delete().await;
        self.db.finish().await;
    }
}

fn image(d: &Deployment) -> String {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

/// Which field managers own a Deployment's fields.
fn managers(d: &Deployment) -> BTreeSet<String> {
    d.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect()
}

/// Every watch event of the namespace's Deployments: (name, Langfuse image, fully rolled out).
struct DeploymentOrder {
    seen: Arc<std::sync::Mutex<Vec<(String, String, bool)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DeploymentOrder {
    fn watch(ns: &TestNs) -> DeploymentOrder {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let api: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = seen.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default()).applied_objects().boxed();
            while let Some(Ok(d)) = stream.next().await {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let st = d.status.clone().unwrap_or_default();
                let rolled = st.observed_generation >= d.metadata.generation
                    && st.updated_replicas == Some(want)
                    && st.available_replicas == Some(want)
                    && st.replicas == Some(want);
                out.lock()
                    .unwrap()
                    .push((d.metadata.name.clone().unwrap_or_default(), image(&d), rolled));
            }
        });
        DeploymentOrder { seen, task }
    }

    fn stop(self) -> Vec<(String, String, bool)> {
        self.task.abort();
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane and databases: run `make e2e` (tests/e2e/run.sh), which starts them and passes --include-ignored"]
async fn a_chart_on_3_100_moves_to_the_newest_v3_in_place_web_first_without_losing_its_endpoints() {
    let w = Road::new("chart-v3", "3.100.0").await;
    let observer = w.observe("to-newest-v3");
    let order = DeploymentOrder::watch(&w.ns);
    let _op = Operator::start(&w.ns.name, "a");
    let web = play_web(&w.ns, &w.db, "langfuse-web");
    let worker = play_worker(&w.ns, &w.db, "langfuse-worker");
    w.apply(&w.upgrade("to-newest-v3", "3.225.4"));
    let u = w.ns.wait_phase("to-newest-v3", Phase::Completed, FLOW).await;
    let s = u.status.unwrap();
    assert_eq!(s.source_version.as_deref(), Some("3.100.0"));
    assert_eq!(s.target_version.as_deref(), Some("3.225.4"));
    assert_eq!(s.road.len(), 1);
    assert_eq!(s.road[0].state, StopState::Done);
    let (started, finished) = (
        s.road[0].started_at.clone().unwrap(),
        s.road[0].finished_at.clone().unwrap(),
    );
    eprintln!(
        "hop 3.100.0 -> 3.225.4 took {} ms",
        finished.0.as_millisecond() - started.0.as_millisecond()
    );

    // The images moved; every other field stayed with Helm. The operator's field manager owns
    // the image (and the web's rolling strategy), nothing it did not set.
    let (web_d, worker_d) = (
        w.deployment("langfuse-web").await,
        w.deployment("langfuse-worker").await,
    );
    assert_eq!(image(&web_d), "langfuse/langfuse:3.225.4");
    assert_eq!(image(&worker_d), "langfuse/langfuse-worker:3.225.4");
    for d in [&web_d, &worker_d] {
        assert!(
            managers(d).contains(FIELD_MANAGER) && managers(d).contains("helm"),
            "{:?}",
            managers(d)
        );
        assert_eq!(
            d.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
            "Helm"
        );
    }
    assert_eq!(web_d.spec.as_ref().unwrap().replicas, Some(2), "replicas stay Helm's");
    let strategy = web_d.spec.as_ref().unwrap().strategy.clone().unwrap();
    let rolling = strategy.rolling_update.unwrap();
    assert_eq!(
        serde_json::to_value(rolling.max_surge).unwrap(),
        json!(1),
        "web rolls one new pod at a time"
    );
    // From the watch of both Deployments, in the order the API server sent it: the worker's
    // image changed only after web was fully rolled out at the new release.
    let seen = order.stop();
    let web_done = seen
        .iter()
        .position(|(name, image, rolled)| name == "langfuse-web" && image.ends_with(":3.225.4") && *rolled)
        .expect("web rolled out at 3.225.4");
    let worker_moved = seen
        .iter()
        .position(|(name, image, _)| name == "langfuse-worker" && image.ends_with(":3.225.4"))
        .expect("the worker moved");
    assert!(
        web_done < worker_moved,
        "worker moved before web was rolled out: {seen:?}"
    );
    // Every row 3.225.4 registered and runs finished; the gated ones were never taken.
    for row in w.db.migration_rows().await {
        let gated = row["args"].get("envGate").is_some();
        assert_eq!(row["finished_at"].is_null(), gated, "{row}");
    }
    let reasons: Vec<String> = w.events().await.into_iter().filter_map(|e| e.reason).collect();
    for r in ["HopStarted", "ImageSet", "HopFinished"] {
        assert!(reasons.iter().any(|x| x == r), "no {r} Event: {reasons:?}");
    }
    w.assert_clean(&observer);
    web.abort();
    worker.abort();
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane and databases: run `make e2e` (tests/e2e/run.sh), which starts them and passes --include-ignored"]
async fn the_v4_hop_is_blocked_by_an_old_clickhouse_and_a_missing_backup_and_a_downgrade_is_refused() {
    let w = Road::new("refused", "3.225.4").await;
    e2e_support::report_clickhouse_version(&w.db, "25.3.6.56").await;
    let observer = w.observe("to-v4");
    let _op = Operator::start(&w.ns.name, "a");
    let before = (
        w.deployment("langfuse-web").await,
        w.deployment("langfuse-worker").await,
    );
    w.apply(&w.upgrade("to-v4", "4.16.0"));
    w.apply(&w.upgrade("down", "3.100.0"));
    let to_v4 = w.ns.wait_phase("to-v4", Phase::Blocked, Duration::from_secs(60)).await;
    let down = w.ns.wait_phase("down", Phase::Blocked, Duration::from_secs(60)).await;
    let line = |u: &LangfuseUpgrade, name: &str| {
        u.status
            .as_ref()
            .unwrap()
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} line: {:?}", u.status))
            .clone()
    };
    let infra = line(&to_v4, "infrastructure");
    assert!(
        infra.message.contains("ClickHouse 25.3.6.56 is older than 25.12"),
        "{}",
        infra.message
    );
    // The backup belongs right before the hop: a warning at preflight, the hop itself waits.
    let backup = line(&to_v4, "hopBackups");
    assert!(
        backup.message.contains("spec.backup.hopBackups") && backup.message.contains("traces"),
        "{}",
        backup.message
    );
    let road = line(&down, "road");
    assert!(
        road.message.contains("refusing to go from 3.225.4 down to 3.100.0"),
        "{}",
        road.message
    );
    // Nothing touched: same generation, no field of the operator's on either Deployment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (old, name) in [(&before.0, "langfuse-web"), (&before.1, "langfuse-worker")] {
        let now = w.deployment(name).await;
        assert_eq!(now.metadata.generation, old.metadata.generation, "{name} changed");
        assert!(!managers(&now).contains(FIELD_MANAGER), "{name}: {:?}", managers(&now));
    }
    // A person fixes ClickHouse and records the backup taken now: the hop goes (web registers
    // v4's rows and drops the Postgres tracing tables as v4.0.0 does).
    w.db.ch_exec("DROP TABLE __lfu_test_reported_version").await;
    let web = play_web(&w.ns, &w.db, "langfuse-web");
    let worker = play_worker(&w.ns, &w.db, "langfuse-worker");
    kubectl(
        &[
            "-n",
            &w.ns.name,
            "patch",
            "lfu",
            "to-v4",
            "--type",
            "merge",
            "-p",
            &format!(
                r#"{{"spec":{{"backup":{{"hopBackups":[{{"hop":"4.16.0","reference":"snap-e2e","takenAt":"{}"}}]}}}}}}"#,
                jiff::Timestamp::now()
            ),
        ],
        None,
    );
    let u = w.ns.wait_phase("to-v4", Phase::Completed, FLOW).await;
    let stop = u
        .status
        .as_ref()
        .unwrap()
        .road
        .iter()
        .find(|r| r.version == "4.16.0")
        .unwrap()
        .clone();
    assert!(
        stop.backup
            .as_deref()
            .is_some_and(|b| b.starts_with("snap-e2e taken at")),
        "{:?}",
        stop.backup
    );
    assert!(
        stop.copies.len() == 4 && stop.copies.iter().all(|c| c.verdict.as_deref() == Some("Match")),
        "{:?}",
        stop.copies
    );
    assert_eq!(u.status.unwrap().target_version.as_deref(), Some("4.16.0"));
    let worker_d = w.deployment("langfuse-worker").await;
    let env = worker_d.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let get = |n: &str| env.iter().find(|e| e.name == n).and_then(|e| e.value.clone());
    assert_eq!(get("LANGFUSE_MIGRATION_V4_WRITE_MODE").as_deref(), Some("legacy"));
    assert_eq!(
        get("LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL").as_deref(),
        Some("false")
    );
    assert!(!w.db.pg_table_exists("traces").await, "v4 dropped the tracing tables");
    w.assert_clean(&observer);
    web.abort();
    worker.abort();
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane and databases: run `make e2e` (tests/e2e/run.sh), which starts them and passes --include-ignored"]
async fn images_changed_by_a_person_are_gated_and_watched_never_written() {
    let w = Road::new("by-hand", "3.100.0").await;
    let _op = Operator::start(&w.ns.name, "a");
    let web = play_web(&w.ns, &w.db, "langfuse-web");
    let worker = play_worker(&w.ns, &w.db, "langfuse-worker");
    let mut up = w.upgrade("by-hand", "3.225.4");
    up["spec"]["strategy"] = json!({ "imageChanges": "User" });
    w.apply(&up);
    let condition = |u: &LangfuseUpgrade| {
        u.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "RoadFollowed").cloned())
    };
    let waiting = support::eventually(
        Duration::from_secs(60),
        "the operator says the stop is safe",
        || async {
            let u = w.ns.upgrade("by-hand").await;
            condition(&u).filter(|c| c.reason == "AwaitingImageChange")
        },
    )
    .await;
    assert!(
        waiting.message.contains("langfuse/langfuse:3.225.4"),
        "{}",
        waiting.message
    );
    // The person: web first, then the worker, as the operator says.
    kubectl(
        &[
            "-n",
            &w.ns.name,
            "set",
            "image",
            "deploy/langfuse-web",
            "langfuse-web=langfuse/langfuse:3.225.4",
        ],
        None,
    );
    support::eventually(Duration::from_secs(60), "the operator asks for the worker", || async {
        let u = w.ns.upgrade("by-hand").await;
        condition(&u).filter(|c| c.message.contains("langfuse/langfuse-worker:3.225.4"))
    })
    .await;
    kubectl(
        &[
            "-n",
            &w.ns.name,
            "set",
            "image",
            "deploy/langfuse-worker",
            "langfuse-worker=langfuse/langfuse-worker:3.225.4",
        ],
        None,
    );
    w.ns.wait_phase("by-hand", Phase::Completed, FLOW).await;
    for name in ["langfuse-web", "langfuse-worker"] {
        let d = w.deployment(name).await;
        assert!(
            !managers(&d).contains(FIELD_MANAGER),
            "the operator wrote {name}: {:?}",
            managers(&d)
        );
    }
    let reasons: Vec<String> = w.events().await.into_iter().filter_map(|e| e.reason).collect();
    assert!(!reasons.iter().any(|r| r == "ImageSet"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "HopFinished"), "{reasons:?}");
    web.abort();
    worker.abort();
    w.finish().await;
}

/// The release an image names, as the operator reads it.
fn release(image: &str) -> Option<langfuse_upgrade_operator::version::Version> {
    langfuse_upgrade_operator::version::image_tag(image).and_then(langfuse_upgrade_operator::version::Version::parse)
}

/// Safety review #1, interleaving B (a thawed replica writes an older release): replica A's
/// image change of the first hop (3.100.0 -> 3.225.4) is on the wire (held by a proxy) when A
/// freezes; B takes the Lease, makes that hop itself and then the v4 hop; then A's change
/// lands. It must not: v3 pods on a database v4 migrated. From every watch event of web, its
/// release never goes down. Failed on 484524e (web went from 4.16.0 back to 3.225.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane and databases: run `make e2e` (tests/e2e/run.sh), which starts them and passes --include-ignored"]
async fn a_held_image_change_that_lands_after_the_next_hop_never_takes_web_back() {
    use e2e_support::proxy::ApiProxy;
    let w = Road::new("held-image", "3.100.0").await;
    let order = DeploymentOrder::watch(&w.ns);
    let proxy = ApiProxy::start().await;
    let mut a = Operator::start_through(&w.ns.name, "replica-a", &proxy);
    support::eventually(Duration::from_secs(60), "replica A to lead", || async {
        a.logs().contains("leading; starting the controller").then_some(())
    })
    .await;
    let b = Operator::start(&w.ns.name, "replica-b");
    let web = play_web(&w.ns, &w.db, "langfuse-web");
    let worker = play_worker(&w.ns, &w.db, "langfuse-worker");
    let held = proxy.hold("PATCH", &format!("/namespaces/{}/deployments/langfuse-web", w.ns.name));
    let mut up = w.upgrade("to-v4", "4.16.0");
    up["spec"]["backup"] = json!({ "acknowledgedHops": ["4.16.0"] });
    w.apply(&up);
    held.wait_for(1, FLOW).await;
    a.freeze(true);
    support::eventually(FLOW, "replica B to lead", || async {
        b.logs().contains("leading; starting the controller").then_some(())
    })
    .await;
    let u = w.ns.wait_phase("to-v4", Phase::Completed, FLOW).await;
    assert_eq!(u.status.unwrap().target_version.as_deref(), Some("4.16.0"));
    assert_eq!(image(&w.deployment("langfuse-web").await), "langfuse/langfuse:4.16.0");
    let before = held.count();
    held.release();
    a.freeze(false);
    // The held write has reached the apiserver (answered or refused) and anything that
    // followed it has been seen by the watch.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let seen = order.stop();
    let mut reached = None;
    for (name, image, _) in seen.iter().filter(|(n, ..)| n == "langfuse-web") {
        let r = release(image);
        assert!(r >= reached, "{name} went from {reached:?} back to {image}: {seen:?}");
        reached = r;
    }
    assert_eq!(reached, release("langfuse/langfuse:4.16.0"));
    assert_eq!(image(&w.deployment("langfuse-web").await), "langfuse/langfuse:4.16.0");
    eprintln!("held image change: {before} request(s) held, released after the v4 hop");
    a.kill9();
    web.abort();
    worker.abort();
    w.finish().await;
}

/// `kubectl lfu`, the plugin binary, as a person or a pipeline runs it.
fn lfu(args: &[&str], kubeconfig: Option<&std::path::Path>) -> (i32, String, String) {
    e2e_support::kubectl_lfu(env!("CARGO_BIN_EXE_kubectl-lfu"), args, kubeconfig)
}

/// One clear line on stderr and a non-zero exit: never a panic or a trace.
fn one_line_error((code, _, err): (i32, String, String), words: &str) {
    assert_ne!(code, 0, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked") && err.contains(words), "{err}");
}

/// The spec and annotations of an object as JSON pointers to values, for exact diffs.
fn fields(u: &LangfuseUpgrade) -> std::collections::BTreeMap<String, Value> {
    fn walk(prefix: String, v: &Value, out: &mut std::collections::BTreeMap<String, Value>) {
        match v {
            Value::Object(m) => m.iter().for_each(|(k, v)| walk(format!("{prefix}/{k}"), v, out)),
            other => {
                out.insert(prefix, other.clone());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk("/spec".into(), &serde_json::to_value(&u.spec).unwrap(), &mut out);
    walk(
        "/metadata/annotations".into(),
        &serde_json::to_value(u.metadata.annotations.clone().unwrap_or_default()).unwrap(),
        &mut out,
    );
    out
}

fn changed(a: &LangfuseUpgrade, b: &LangfuseUpgrade) -> Vec<String> {
    let (a, b) = (fields(a), fields(b));
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane and databases: run `make e2e` (tests/e2e/run.sh), which starts them and passes --include-ignored"]
async fn kubectl_lfu_plans_follows_and_acts_on_exactly_one_field() {
    let w = Road::new("plugin", "3.100.0").await;
    let ns = w.ns.name.clone();
    let dir = tempdir(&ns);
    let write = |name: &str, v: &Value| {
        let path = dir.join(name);
        std::fs::write(&path, serde_yaml::to_string(v).unwrap()).unwrap();
        path
    };
    // plan: touching nothing, the operator's own checks; exit 1 when it would block.
    let good = write("good.yaml", &w.upgrade("to-newest", "3.225.4"));
    let bad = write("bad.yaml", &w.upgrade("down", "3.50.0"));
    let (code, out, err) = lfu(&["-n", &ns, "plan", "-f", good.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("PASS road") && out.contains("would proceed"), "{out}");
    let (code, out, _) = lfu(&["-n", &ns, "plan", "-f", bad.to_str().unwrap()], None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("refusing to go from 3.100.0 down to 3.50.0") && out.contains("BLOCKED"),
        "{out}"
    );
    assert!(
        w.ns.upgrades()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "plan created nothing"
    );

    // Each action is one field of one object.
    w.apply(&w.upgrade("down", "3.50.0"));
    let _op = Operator::start(&w.ns.name, "a");
    w.ns.wait_phase("down", Phase::Blocked, Duration::from_secs(60)).await;
    // Listed, one line: its phase and what it waits for.
    let (code, listed, err) = lfu(&["-n", &ns, "list"], None);
    assert_eq!(code, 0, "{err}");
    let row = listed.lines().find(|l| l.starts_with("down ")).unwrap_or_default();
    assert!(
        row.contains("Blocked") && row.contains("-> 3.50.0") && row.contains("refusing"),
        "{listed}"
    );
    let actions: [(&[&str], &str); 4] = [
        (
            &["approve", "down"],
            "/metadata/annotations/upgrades.lfu-operator.dev~1approve",
        ),
        (&["pause", "down"], "/spec/paused"),
        (&["resume", "down"], "/spec/paused"),
        (&["abort", "down", "--yes"], "/spec/abort"),
    ];
    for (args, field) in actions {
        let before = w.ns.upgrade("down").await;
        let mut full = vec!["-n", ns.as_str()];
        full.extend_from_slice(args);
        let (code, out, err) = lfu(&full, None);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        let after = w.ns.upgrade("down").await;
        let diff: Vec<String> = changed(&before, &after)
            .into_iter()
            .map(|k| k.replace("upgrades.lfu-operator.dev/", "upgrades.lfu-operator.dev~1"))
            .collect();
        assert_eq!(diff, [field], "{args:?}");
        // Idempotent: the same command again changes nothing.
        let again_before = w.ns.upgrade("down").await;
        assert_eq!(lfu(&full, None).0, 0);
        assert!(
            changed(&again_before, &w.ns.upgrade("down").await).is_empty(),
            "{args:?} twice"
        );
    }

    // status --watch follows a real upgrade to Completed, one frame per change of the object.
    let web = play_web(&w.ns, &w.db, "langfuse-web");
    let worker = play_worker(&w.ns, &w.db, "langfuse-worker");
    let env = e2e_support::cluster_env();
    // Applied paused, watched, then resumed with the plugin: every frame comes from the watch.
    let mut up = w.upgrade("to-newest", "3.225.4");
    up["spec"]["paused"] = json!(true);
    w.apply(&up);
    w.ns.wait_phase("to-newest", Phase::Paused, Duration::from_secs(30))
        .await;
    let watch = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-lfu"))
        .args(["-n", &ns, "status", "to-newest", "--watch"])
        .env("KUBECONFIG", &env.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Resume only once the first frame is out (the watch is established): a fixed wait let a
    // slow start miss the whole flow on a loaded machine.
    let mut watch = watch;
    let stdout = watch.stdout.take().unwrap();
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        let mut first = Some(first_tx);
        for line in std::io::BufReader::new(stdout).lines() {
            all.push_str(&line.unwrap());
            all.push('\n');
            if let Some(tx) = first.take_if(|_| all.contains("Paused")) {
                let _ = tx.send(());
            }
        }
        all
    });
    tokio::task::spawn_blocking(move || first_rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("a first frame from status --watch");
    assert_eq!(lfu(&["-n", &ns, "resume", "to-newest"], None).0, 0);
    let frames = tokio::task::spawn_blocking(move || {
        assert!(watch.wait().unwrap().success());
        reader.join().unwrap()
    })
    .await
    .unwrap();
    std::fs::write(dir.join("status-watch.txt"), &frames).unwrap();
    eprintln!("status --watch frames:\n{frames}");
    let count = frames.matches("\n--- ").count() + usize::from(frames.starts_with("--- "));
    assert!(count >= 3, "{count} frames:\n{frames}");
    let last = frames.rsplit("--- ").next().unwrap();
    assert!(
        last.contains("Completed") && last.contains("done 3.225.4 (in place"),
        "{last}"
    );
    assert!(!frames.contains('\x1b'), "escape codes in a pipe");

    // history: the facts and the Events, in order.
    let (code, out, _) = lfu(&["-n", &ns, "history", "to-newest"], None);
    assert_eq!(code, 0);
    let (a, b) = (
        out.find("preflight passed").unwrap(),
        out.find("hop 3.100.0 -> 3.225.4 finished").unwrap(),
    );
    assert!(a < b && out.contains("ImageSet"), "{out}");
    let (code, out, _) = lfu(&["-n", &ns, "status", "to-newest", "-o", "json"], None);
    assert_eq!(code, 0);
    let view: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["phase"], "Completed");

    // Bad input: one line, non-zero, no trace.
    one_line_error(lfu(&["-n", &ns, "status", "nope"], None), "not found");
    let pod = write(
        "pod.yaml",
        &json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "x" } }),
    );
    one_line_error(
        lfu(&["-n", &ns, "plan", "-f", pod.to_str().unwrap()], None),
        "is not a LangfuseUpgrade",
    );
    let text = std::fs::read_to_string(&env.kubeconfig).unwrap();
    let unreachable = write(
        "unreachable.kubeconfig",
        &serde_yaml::from_str::<Value>(
            &text.replace(
                &text
                    .lines()
                    .find(|l| l.trim_start().starts_with("server:"))
                    .unwrap()
                    .trim_start()
                    .replace("server: ", ""),
                "https://127.0.0.1:1",
            ),
        )
        .unwrap(),
    );
    one_line_error(
        lfu(&["-n", &ns, "status", "to-newest"], Some(&unreachable)),
        "cannot reach the cluster",
    );
    let mut anonymous: Value = serde_yaml::from_str(&text).unwrap();
    anonymous["users"][0]["user"] = json!({});
    let anonymous = write("anonymous.kubeconfig", &anonymous);
    one_line_error(lfu(&["-n", &ns, "status", "to-newest"], Some(&anonymous)), "to-newest");
    web.abort();
    worker.abort();
    w.finish().await;
}

fn tempdir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lfu-plugin-{label}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `n` rows of `table` as the background migrations copy them to ClickHouse: same ids and
/// created_at as `TestDb::insert_rows` gives PostgreSQL (prefix, start, step).
async fn copied(db: &TestDb, table: &str, n: u64, first_ms: i64, step_ms: i64) {
    let at = format!("fromUnixTimestamp64Milli(toInt64({first_ms} + number * {step_ms}))");
    let project = support::PROJECT;
    let sql = match table {
        "traces" => format!(
            "INSERT INTO traces (id, project_id, timestamp, name, public, bookmarked, created_at, updated_at, event_ts, is_deleted) \
             SELECT concat('pg-', toString(number)), '{project}', {at}, 'trace', false, false, {at}, {at}, {at}, 0 FROM numbers({n})"
        ),
        "observations" => format!(
            "INSERT INTO observations (id, trace_id, project_id, type, start_time, name, level, created_at, updated_at, event_ts, is_deleted) \
             SELECT concat('pg-', toString(number)), 't', '{project}', 'GENERATION', {at}, 'g', 'DEFAULT', {at}, {at}, {at}, 0 FROM numbers({n})"
        ),
        "scores" => format!(
            "INSERT INTO scores (id, project_id, trace_id, timestamp, name, value, data_type, source, created_at, updated_at, event_ts, is_deleted) \
             SELECT concat('pg-', toString(number)), '{project}', 't', {at}, 'q', 1, 'NUMERIC', 'API', {at}, {at}, {at}, 0 FROM numbers({n})"
        ),
        _ => format!(
            "INSERT INTO dataset_run_items_rmt (id, project_id, dataset_run_id, dataset_item_id, dataset_id, trace_id, created_at, updated_at, event_ts, is_deleted) \
             SELECT concat('pg-', toString(number)), '{project}', 'run', 'item', 'ds', 't', {at}, {at}, {at}, 0 FROM numbers({n})"
        ),
    };
    db.ch_exec(&sql).await;
}

/// Before v4.0.0 drops the PostgreSQL sources: an orphan v4-preview row fails preflight (then
/// is marked finished where the spec allows it), and a copy that lost rows in ClickHouse holds
/// the v4 hop with its counts and the fix; accepted, the hop goes. Nothing moves meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane and databases: run `make e2e` (tests/e2e/run.sh), which starts them and passes --include-ignored"]
async fn the_v4_hop_is_held_on_an_orphan_row_and_a_short_copy_until_fixed() {
    let w = Road::new("copies", "3.225.4").await;
    const T0: i64 = 1_709_251_200_000; // 2024-03-01, copied long ago
    for (table, n, in_ch) in [
        ("traces", 1_000, 1_000),
        ("observations", 30_000, 27_600),
        ("scores", 500, 500),
        ("dataset_run_items", 200, 200),
    ] {
        w.db.insert_rows(table, "pg", n, support::t_ms(T0), 37).await;
        copied(&w.db, table, in_ch, T0, 37).await;
    }
    w.db.pg_exec(
        "INSERT INTO background_migrations (id, name, script, args, worker_id, locked_at)
         VALUES ('preview', '20251027_backfill_events_historic', 'backfillEventsHistoric', '{}', 'w-gone', now() - interval '3 days')",
    )
    .await;
    let _op = Operator::start(&w.ns.name, "a");
    let mut up = w.upgrade("to-v4", "4.16.0");
    up["spec"]["backup"]["hopBackups"] =
        json!([{ "hop": "4.16.0", "reference": "snap-e2e", "takenAt": jiff::Timestamp::now().to_string() }]);
    w.apply(&up);
    let u = w.ns.wait_phase("to-v4", Phase::Blocked, Duration::from_secs(60)).await;
    let ready = u.status.as_ref().unwrap().condition("Ready").unwrap().message.clone();
    assert!(
        ready.contains("20251027_backfill_events_historic") && ready.contains("finishOrphanRows"),
        "{ready}"
    );
    // Allowed: the operator marks exactly that row finished; then the copies are counted.
    let patch = |body: &str| {
        kubectl(
            &["-n", &w.ns.name, "patch", "lfu", "to-v4", "--type", "merge", "-p", body],
            None,
        )
    };
    patch(r#"{"spec":{"migrations":{"finishOrphanRows":true}}}"#);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let held = loop {
        let u = w.ns.upgrade("to-v4").await;
        let road = u
            .status
            .as_ref()
            .and_then(|s| s.condition("RoadFollowed"))
            .map(|c| c.message.clone());
        if road
            .as_deref()
            .is_some_and(|m| m.contains("observations: PostgreSQL 30000, ClickHouse 27600, 2400 missing"))
        {
            break u;
        }
        assert!(std::time::Instant::now() < deadline, "never held on the copy: {road:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(held.status.as_ref().unwrap().phase, Some(Phase::Blocked));
    let orphan = w.db.migration_row("20251027_backfill_events_historic").await;
    assert!(!orphan["finished_at"].is_null(), "{orphan}");
    let web = w.deployment("langfuse-web").await;
    assert!(image(&web).ends_with(":3.225.4"), "nothing moved: {}", image(&web));
    // Rows deleted in Langfuse since the copy: accepted by a person, the hop goes.
    let web_play = play_web(&w.ns, &w.db, "langfuse-web");
    let worker_play = play_worker(&w.ns, &w.db, "langfuse-worker");
    patch(r#"{"spec":{"migrations":{"acceptCopyShortfall":{"observations":2400}}}}"#);
    let u = w.ns.wait_phase("to-v4", Phase::Completed, FLOW).await;
    let stop = u
        .status
        .unwrap()
        .road
        .into_iter()
        .find(|r| r.version == "4.16.0")
        .unwrap();
    let verdicts: Vec<(String, Option<String>)> = stop.copies.into_iter().map(|c| (c.table, c.verdict)).collect();
    assert!(
        verdicts.contains(&("observations".into(), Some("Accepted 2400".into()))),
        "{verdicts:?}"
    );
    let reasons: Vec<String> = w.events().await.into_iter().filter_map(|e| e.reason).collect();
    for r in ["RemedyApplied", "HopBlocked", "HopFinished"] {
        assert!(reasons.iter().any(|x| x == r), "{r}: {reasons:?}");
    }
    drop((web_play, worker_play));
    w.finish().await;
}

/// The v4 hop's infrastructure and copies from a chart source at the required stop: preflight
/// refuses a Redis that evicts keys (a Redis of this test's own) and a ClickHouse user refused
/// the system tables v4 reads, each with its fix; fixed, the hop is held on every one of the
/// four copies short in ClickHouse, each with its counts, one table re-copied at a time; all
/// four complete, the hop goes. Nothing moves until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane and databases: run `make e2e` (tests/e2e/run.sh), which starts them and passes --include-ignored"]
async fn the_v4_hop_is_held_on_redis_grants_and_each_short_copy_until_fixed() {
    let w = Road::new("v4-infra", "3.225.4").await;
    const T0: i64 = 1_709_251_200_000;
    let tables = [
        ("traces", 1_000, 900),
        ("observations", 3_000, 2_700),
        ("scores", 500, 450),
        ("dataset_run_items", 200, 180),
    ];
    for (table, n, in_ch) in tables {
        w.db.insert_rows(table, "pg", n, support::t_ms(T0), 37).await;
        copied(&w.db, table, in_ch, T0, 37).await;
    }
    let redis = e2e_support::own_redis::OwnRedis::start("allkeys-lru");
    e2e_support::deny_system_tables(&w.db, &["parts", "query_log"]).await;
    let _op = Operator::start(&w.ns.name, "a");
    let mut up = w.upgrade("v4-infra", "4.16.0");
    up["spec"]["redis"] = json!({ "host": "127.0.0.1", "port": redis.port });
    up["spec"]["backup"]["hopBackups"] =
        json!([{ "hop": "4.16.0", "reference": "snap-e2e", "takenAt": jiff::Timestamp::now().to_string() }]);
    w.apply(&up);
    let u =
        w.ns.wait_phase("v4-infra", Phase::Blocked, Duration::from_secs(60))
            .await;
    let infra = u
        .status
        .as_ref()
        .unwrap()
        .checks
        .iter()
        .find(|c| c.name == "infrastructure")
        .cloned()
        .expect("an infrastructure line");
    for words in [
        "maxmemory-policy allkeys-lru",
        "GRANT SELECT ON system.parts TO <user>",
        "GRANT SELECT ON system.query_log TO <user>",
    ] {
        assert!(infra.message.contains(words), "{words}: {}", infra.message);
    }
    assert!(!infra.message.contains("system.mutations"), "{}", infra.message);
    let nudge = |n: u32| {
        kubectl(
            &[
                "-n",
                &w.ns.name,
                "annotate",
                "lfu",
                "v4-infra",
                &format!("e2e/nudge={n}"),
                "--overwrite",
            ],
            None,
        )
    };
    let road_says = |words: Vec<String>, absent: Vec<String>| {
        let ns = &w.ns;
        async move {
            support::eventually(FLOW, "the hop's words", || {
                let (words, absent) = (words.clone(), absent.clone());
                async move {
                    let u = ns.upgrade("v4-infra").await;
                    let road = u.status.as_ref()?.condition("RoadFollowed")?.message.clone();
                    (words.iter().all(|w| road.contains(w.as_str()))
                        && !absent.iter().any(|a| road.contains(a.as_str())))
                    .then_some(road)
                }
            })
            .await
        }
    };
    // Fixed by a person: Redis keeps its keys, the grants given.
    assert!(
        redis
            .cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
            .contains("OK")
    );
    e2e_support::allow_system_tables(&w.db).await;
    nudge(1);
    let shortfall = |(table, n, in_ch): (&str, i64, i64)| {
        format!("{table}: PostgreSQL {n}, ClickHouse {in_ch}, {} missing", n - in_ch)
    };
    let held = road_says(
        tables.iter().map(|t| shortfall((t.0, t.1, t.2 as i64))).collect(),
        vec![],
    )
    .await;
    assert!(held.contains("Re-run the copy"), "{held}");
    assert_eq!(
        w.ns.upgrade("v4-infra").await.status.unwrap().phase,
        Some(Phase::Blocked)
    );
    let web = w.deployment("langfuse-web").await;
    assert!(image(&web).ends_with(":3.225.4"), "nothing moved: {}", image(&web));
    // The copies re-run one at a time: each table leaves the message alone.
    for (i, (table, n, _)) in tables.into_iter().take(3).enumerate() {
        copied(&w.db, table, n as u64, T0, 37).await;
        nudge(2 + i as u32);
        let still: Vec<String> = tables[i + 1..].iter().map(|t| format!("{}: PostgreSQL", t.0)).collect();
        road_says(still, vec![format!("{table}: PostgreSQL")]).await;
    }
    let web_play = play_web(&w.ns, &w.db, "langfuse-web");
    let worker_play = play_worker(&w.ns, &w.db, "langfuse-worker");
    copied(&w.db, "dataset_run_items", 200, T0, 37).await;
    nudge(9);
    let u = w.ns.wait_phase("v4-infra", Phase::Completed, FLOW).await;
    let stop = u
        .status
        .unwrap()
        .road
        .into_iter()
        .find(|r| r.version == "4.16.0")
        .unwrap();
    let verdicts: Vec<Option<String>> = stop.copies.into_iter().map(|c| c.verdict).collect();
    assert_eq!(verdicts, vec![Some("Match".to_string()); 4]);
    drop((web_play, worker_play, redis));
    w.finish().await;
}

/// A person takes the v4 image by hand (`imageChanges: User`) on a chart source whose pods run a
/// sidecar first, without the v4 flags: the operator reads the Langfuse container, not the
/// sidecar, and says that the image's defaults are in effect (the historic backfill open,
/// `events_only`) and, once the worker runs v4, which background migrations will run; the
/// flags set, the road completes. It never writes either Deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane and databases: run `make e2e` (tests/e2e/run.sh), which starts them and passes --include-ignored"]
async fn a_v4_image_set_by_hand_without_flags_is_seen_with_its_open_backfill() {
    let w = Road::new("v4-by-hand", "3.225.4").await;
    for d in ["langfuse-web", "langfuse-worker"] {
        let sidecar = json!([{ "op": "add", "path": "/spec/template/spec/containers/0",
            "value": { "name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.22.3" } }]);
        kubectl(
            &[
                "-n",
                &w.ns.name,
                "patch",
                "deploy",
                d,
                "--field-manager=helm",
                "--type",
                "json",
                "-p",
                &sidecar.to_string(),
            ],
            None,
        );
    }
    let _op = Operator::start(&w.ns.name, "a");
    let web = play_web(&w.ns, &w.db, "langfuse-web");
    let worker = play_worker(&w.ns, &w.db, "langfuse-worker");
    let mut up = w.upgrade("v4-by-hand", "4.16.0");
    up["spec"]["strategy"] = json!({ "imageChanges": "User" });
    up["spec"]["backup"]["hopBackups"] =
        json!([{ "hop": "4.16.0", "reference": "snap-e2e", "takenAt": jiff::Timestamp::now().to_string() }]);
    w.apply(&up);
    let road = |reason: &'static str, words: &'static [&'static str]| {
        let ns = &w.ns;
        async move {
            support::eventually(FLOW, reason, || async move {
                let u = ns.upgrade("v4-by-hand").await;
                let c = u.status.as_ref()?.condition("RoadFollowed")?.clone();
                (c.reason == reason && words.iter().all(|w| c.message.contains(w))).then_some(c.message)
            })
            .await
        }
    };
    road("AwaitingImageChange", &["langfuse/langfuse:4.16.0"]).await;
    let set_image = |d: &str, image: &str| kubectl(&["-n", &w.ns.name, "set", "image", d, image], None);
    set_image("deploy/langfuse-web", "langfuse-web=langfuse/langfuse:4.16.0");
    let said = road(
        "V4DefaultsInEffect",
        &[
            "web LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL=true",
            "events_only",
        ],
    )
    .await;
    assert!(!said.contains("istio"), "{said}");
    // The worker taken to v4 too, still without flags: the rows its open gate will run.
    set_image(
        "deploy/langfuse-worker",
        "langfuse-worker=langfuse/langfuse-worker:4.16.0",
    );
    road("V4DefaultsInEffect", &["background migrations will run"]).await;
    // The person sets the four flags the operator names: the road goes on and completes.
    for d in ["langfuse-web", "langfuse-worker"] {
        let mut args = vec![
            "-n".to_string(),
            w.ns.name.clone(),
            "set".into(),
            "env".into(),
            format!("deploy/{d}"),
            "-c".into(),
            d.into(),
        ];
        args.extend(
            langfuse_upgrade_operator::resources::v4_env::KEEP_V3_BEHAVIOUR
                .iter()
                .map(|(n, v)| format!("{n}={v}")),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl(&args, None);
    }
    w.ns.wait_phase("v4-by-hand", Phase::Completed, FLOW).await;
    for name in ["langfuse-web", "langfuse-worker"] {
        let d = w.deployment(name).await;
        assert!(
            !managers(&d).contains(FIELD_MANAGER),
            "the operator wrote {name}: {:?}",
            managers(&d)
        );
        assert_eq!(d.spec.unwrap().template.spec.unwrap().containers[0].name, "istio-proxy");
    }
    web.abort();
    worker.abort();
    w.finish().await;
}

/// The chart's admission policy, generated from the catalog, on the real apiserver: a
/// `helm upgrade`-shaped apply of the chart's Deployments at 4.4.0 (chart 2.0.0's appVersion)
/// over a chart install at 3.224.1 is refused with the stop named, and nothing changes; the
/// operator's own road (3.225.4, then 4.16.0) passes under it; a person taking v4 back to v3 is
/// refused. Then the day after: `kubectl lfu handoff` blocks on a layout without SALT, prints
/// the chart's values once SALT comes from a Secret, and `plan --helm-values` names each
/// conflict of a naive values file and none of the generated one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane and databases: run `make e2e` (tests/e2e/run.sh), which starts them and passes --include-ignored"]
async fn the_admission_policy_refuses_a_skipping_helm_upgrade_and_lets_the_road_through() {
    let w = Road::new("vap", "3.224.1").await;
    let name = format!("lfu-road-{}", w.ns.name);
    let policy = std::process::Command::new(env!("CARGO_BIN_EXE_langfuse-upgrade-operator"))
        .args([
            "admission-policy",
            "--name",
            &name,
            "--exempt",
            "nobody:nobody",
            "--namespace",
            &w.ns.name,
        ])
        .output()
        .expect("the policy printed");
    let policy = String::from_utf8(policy.stdout).unwrap();
    let (out, ok) = kubectl_status(&["apply", "-f", "-"], Some(&policy));
    assert!(ok, "{out}");
    // The chart's Deployments alone: its Secrets hold throwaway values, not this test's stores.
    let chart_at = |version: &str| {
        e2e_support::V3_CHART
            .replace("__NAMESPACE__", &w.ns.name)
            .replace("__VERSION__", version)
            .split("\n---")
            .filter(|doc| doc.contains("\nkind: Deployment"))
            .collect::<Vec<_>>()
            .join("\n---")
    };
    // What `helm upgrade` to chart 2.0.0 sends for the Deployments (names and labels unchanged).
    let helm = |version: &str, dry: bool| {
        let mut args = vec!["apply", "--field-manager=helm", "-f", "-"];
        if dry {
            args.push("--dry-run=server");
        }
        kubectl_status(&args, Some(&chart_at(version)))
    };
    // The policy takes effect once the apiserver has loaded it: tried without changing anything.
    let refused = support::eventually(Duration::from_secs(30), "the policy in effect", || async {
        let (out, ok) = helm("4.4.0", true);
        (!ok).then_some(out)
    })
    .await;
    assert!(refused.contains("skips the required stop 3.225.4"), "{refused}");
    let (out, ok) = helm("4.4.0", false);
    assert!(
        !ok && out.contains("Langfuse 3.224.1 -> 4.4.0 skips the required stop 3.225.4: set 3.225.4 first"),
        "{out}"
    );
    assert!(
        image(&w.deployment("langfuse-web").await).ends_with(":3.224.1"),
        "nothing changed"
    );
    // The operator walks the road under the policy.
    let _op = Operator::start(&w.ns.name, "a");
    let web = play_web(&w.ns, &w.db, "langfuse-web");
    let worker = play_worker(&w.ns, &w.db, "langfuse-worker");
    let mut up = w.upgrade("vap", "4.16.0");
    up["spec"]["backup"]["acknowledgedHops"] = json!(["4.16.0"]);
    w.apply(&up);
    w.ns.wait_phase("vap", Phase::Completed, FLOW).await;
    assert!(image(&w.deployment("langfuse-web").await).ends_with(":4.16.0"));
    // Back below v4 by hand: refused, the step named.
    let (out, ok) = kubectl_status(
        &[
            "-n",
            &w.ns.name,
            "set",
            "image",
            "deploy/langfuse-web",
            "langfuse-web=langfuse/langfuse:3.225.4",
        ],
        None,
    );
    assert!(!ok && out.contains("goes below 4.0.0"), "{out}");
    // The day after: the chart's values for what runs. This layout sets no SALT: blocked, said.
    let (code, _, err) = lfu(&["-n", &w.ns.name, "handoff", "vap", "--chart", "2.0.0"], None);
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
    assert!(err.contains("SALT is not set"), "{err}");
    // Given by reference, as a chart install would: the values reproduce what runs.
    kubectl(
        &[
            "-n",
            &w.ns.name,
            "create",
            "secret",
            "generic",
            "langfuse-auth",
            "--from-literal=NEXTAUTH_SECRET=e2e-next",
            "--from-literal=SALT=e2e-salt-value",
        ],
        None,
    );
    for d in ["deploy/langfuse-web", "deploy/langfuse-worker"] {
        kubectl(
            &["-n", &w.ns.name, "set", "env", d, "--from=secret/langfuse-auth"],
            None,
        );
        let bucket = "LANGFUSE_S3_EVENT_UPLOAD_BUCKET=langfuse-events";
        kubectl(&["-n", &w.ns.name, "set", "env", d, bucket], None);
    }
    let (code, values, err) = lfu(&["-n", &w.ns.name, "handoff", "vap", "--chart", "2.0.0"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        !values.contains("e2e-salt-value") && !values.contains("e2e-next"),
        "a secret in clear: {values}"
    );
    let v: Value = serde_yaml::from_str(&values).unwrap();
    assert_eq!(v["langfuse"]["image"]["tag"], json!("4.16.0"));
    assert_eq!(
        v["langfuse"]["salt"]["secretKeyRef"],
        json!({ "name": "langfuse-auth", "key": "SALT" })
    );
    assert_eq!(v["clickhouse"]["cluster"]["enabled"], json!(false));
    let env = v["langfuse"]["additionalEnv"].as_array().unwrap();
    let flag = env
        .iter()
        .find(|e| e["name"] == "LANGFUSE_MIGRATION_V4_WRITE_MODE")
        .expect("the write mode as running");
    assert_eq!(flag["value"], json!("legacy"));
    // A naive values file for `helm upgrade` is caught, conflict by conflict; the generated
    // values have none.
    let dir = tempdir(&w.ns.name);
    let naive = dir.join("naive.yaml");
    std::fs::write(
        &naive,
        "langfuse:\n  nextauth:\n    url: https://langfuse.example.com\n",
    )
    .unwrap();
    let plan = |file: &std::path::Path| {
        lfu(
            &[
                "-n",
                &w.ns.name,
                "plan",
                "vap",
                "--helm-values",
                file.to_str().unwrap(),
                "--chart",
                "2.0.0",
            ],
            None,
        )
    };
    let (code, found, _) = plan(&naive);
    assert_eq!(code, 1, "{found}");
    for words in [
        "langfuse.salt is unset",
        "postgresql.deploy is not false",
        "langfuse.image.tag is unset: the chart then runs its appVersion 4.4.0",
        "LANGFUSE_MIGRATION_V4_WRITE_MODE in langfuse.additionalEnv is unset",
    ] {
        assert!(found.contains(words), "{words}: {found}");
    }
    let generated = dir.join("generated.yaml");
    std::fs::write(&generated, &values).unwrap();
    let (code, said, err) = plan(&generated);
    assert_eq!(code, 0, "{said}{err}");
    assert!(said.starts_with("no conflict"), "{said}");
    web.abort();
    worker.abort();
    kubectl(
        &[
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            &name,
        ],
        None,
    );
    w.finish().await;
}

/// The release catalog followed from a ConfigMap: a source on 4.16.0 asked for 4.17.0, which
/// the catalog does not know, is refused; the ConfigMap edited to know it, the running operator
/// plans the road within seconds (no restart); an invalid edit is refused with an Event and the
/// catalog in force kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane and databases: run `make e2e` (tests/e2e/run.sh), which starts them and passes --include-ignored"]
async fn a_catalog_edit_is_followed_and_a_bad_one_refused() {
    let w = Road::new("catalog", "4.16.0").await;
    let catalog = |text: &str| {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "lfu-catalog", "namespace": w.ns.name },
            "data": { "langfuse.yaml": text },
        })
    };
    let builtin = langfuse_upgrade_operator::catalog::BUILTIN;
    w.apply(&catalog(builtin));
    let _op = Operator::start_with_args(&w.ns.name, "a", &["--catalog-config-map", "lfu-catalog"]);
    let mut up = w.upgrade("to-next", "4.17.0");
    up["spec"]["backup"]["acknowledged"] = json!(true);
    w.apply(&up);
    let road_line = |u: &LangfuseUpgrade| {
        u.status
            .as_ref()
            .and_then(|s| s.checks.iter().find(|c| c.name == "road").cloned())
    };
    let refused = support::eventually(Duration::from_secs(60), "4.17.0 refused as unknown", || async {
        road_line(&w.ns.upgrade("to-next").await)
            .filter(|c| c.message.contains("newer than the operator's release catalog knows"))
    })
    .await;
    assert_eq!(refused.result, langfuse_upgrade_operator::api::CheckResult::Fail);
    // The platform team adds 4.17.0: planned without a restart.
    let edited = std::time::Instant::now();
    w.apply(&catalog(&builtin.replace("v4: 4.16.0", "v4: 4.17.0")));
    let planned = support::eventually(Duration::from_secs(30), "the road to 4.17.0 planned", || async {
        road_line(&w.ns.upgrade("to-next").await).filter(|c| c.message.contains("4.16.0 -> 4.17.0"))
    })
    .await;
    eprintln!("catalog edit to road planned: {} ms", edited.elapsed().as_millis());
    assert!(edited.elapsed() < Duration::from_secs(15), "{planned:?}");
    // A broken edit: refused with the reason, the catalog in force kept.
    w.apply(&catalog("known: {v2: 2.95.12}\n"));
    let events = |reason: &'static str| {
        let ns = &w.ns;
        async move {
            support::eventually(Duration::from_secs(30), reason, || async {
                let events: Api<K8sEvent> = Api::namespaced(ns.client.clone(), &ns.name);
                let list = events.list(&ListParams::default()).await.ok()?;
                list.items.into_iter().find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("lfu-catalog")
                })
            })
            .await
        }
    };
    let loaded = events("CatalogLoaded").await;
    assert!(loaded.note.unwrap_or_default().contains("v4 4.17.0"));
    let bad = events("CatalogRefused").await;
    assert!(
        bad.note
            .as_deref()
            .is_some_and(|n| n.starts_with("catalog:") && n.contains("stays in force")),
        "{:?}",
        bad.note
    );
    kubectl(&["-n", &w.ns.name, "annotate", "lfu", "to-next", "e2e/nudge=1"], None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = road_line(&w.ns.upgrade("to-next").await).unwrap();
    assert!(
        still.message.contains("4.16.0 -> 4.17.0"),
        "the last good catalog stays: {still:?}"
    );
    w.finish().await;
}
