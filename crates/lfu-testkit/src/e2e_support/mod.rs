//! TEST SUPPORT for the end-to-end tests: a namespace per test on the local control plane
//! (`tests/cluster/up.sh`, found through `LFU_TEST_CLUSTER_ENV`), a Langfuse v2 laid out as the
//! v2-era chart does, the operator binary as a separate process, the stand-in worker playing
//! Langfuse's worker, and an observer checking DESIGN §2 from watch events while it all runs.
//! Without a cluster the tests FAIL with instructions; they never skip.

pub mod deny;
pub mod exporter;
pub mod observer;
pub mod own_redis;
pub mod proxy;
pub mod share;
pub mod v4_player;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use langfuse_upgrade_operator::api::{LangfuseUpgrade, Phase};
use langfuse_upgrade_operator::resources::deployments::migrations_enabled;

const HOW_TO: &str = "start the test cluster first: `tests/e2e/run.sh` does everything, or \
                      `tests/cluster/up.sh /tmp/lfu-c && LFU_TEST_CLUSTER_ENV=/tmp/lfu-c/env LFU_TEST_DB_ENV=/tmp/lfu-db/env cargo test --test e2e -- --include-ignored`";

pub const V2_LAYOUT: &str = include_str!("../../../../tests/e2e/langfuse-v2.yaml");
pub const V2_CHART_0_8_0: &str = include_str!("../../../../tests/e2e/langfuse-v2-chart-0.8.0.yaml");
pub const V3_CHART: &str = include_str!("../../../../tests/e2e/langfuse-v3-chart.yaml");
static OPERATOR_BIN: OnceLock<PathBuf> = OnceLock::new();

/// Integration tests name the binary Cargo built for them (`CARGO_BIN_EXE_…` exists only there).
pub fn use_operator_bin(path: &str) {
    let _ = OPERATOR_BIN.set(PathBuf::from(path));
}

/// The operator binary: `LFU_OPERATOR_BIN`, else the one a test named, else the workspace's
/// debug build (the demo, an example).
/// The `clickhouse`, `redis` and `s3` parts of a LangfuseUpgrade spec, for this test's
/// databases and the layouts' Secrets.
pub fn backends_spec(db: &crate::support::TestDb) -> serde_json::Value {
    let env = crate::support::env();
    serde_json::json!({
        "clickhouse": {
            "url": db.ch.url,
            "migrationUrl": "clickhouse://127.0.0.1:9000",
            "database": db.ch.database,
            "userSecretRef": { "name": "langfuse-clickhouse", "key": "user" },
            "passwordSecretRef": { "name": "langfuse-clickhouse", "key": "password" }
        },
        "redis": { "connectionStringSecretRef": { "name": "langfuse-redis", "key": "url" } },
        "s3": {
            "bucket": env.s3_bucket,
            "endpoint": env.s3_endpoint,
            "region": env.s3_region,
            "prefix": "events/",
            "forcePathStyle": true,
            "accessKeyIdSecretRef": { "name": "langfuse-s3", "key": "access-key-id" },
            "secretAccessKeySecretRef": { "name": "langfuse-s3", "key": "secret-access-key" }
        }
    })
}

/// `kubectl lfu` (the plugin binary at `bin`) against the test cluster or `kubeconfig`:
/// (exit code, stdout, stderr).
pub fn kubectl_lfu(bin: &str, args: &[&str], kubeconfig: Option<&Path>) -> (i32, String, String) {
    let env = cluster_env();
    let out = Command::new(bin)
        .args(args)
        .env("KUBECONFIG", kubeconfig.unwrap_or(&env.kubeconfig))
        .env("NO_COLOR", "1")
        .output()
        .expect("kubectl-lfu runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The CRD, installed server-side from the operator's own types, and Established.
pub fn install_crd() {
    let (out, ok) = kubectl_status(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&langfuse_upgrade_operator::api::crd_yaml()),
    );
    assert!(ok, "CRD install: {out}");
    // Polled, not `kubectl wait`: a CRD created a moment ago has no conditions yet, and
    // `kubectl wait` then fails at once ("<nil> ... expected []interface{}") instead of waiting.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (out, _) = kubectl_status(
            &[
                "get",
                "crd/langfuseupgrades.upgrades.lfu-operator.dev",
                "-o",
                r#"jsonpath={.status.conditions[?(@.type=="Established")].status}"#,
            ],
            None,
        );
        if out.trim() == "True" {
            return;
        }
        assert!(Instant::now() < deadline, "the CRD never became Established: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn operator_bin() -> PathBuf {
    if let Ok(path) = std::env::var("LFU_OPERATOR_BIN") {
        return PathBuf::from(path);
    }
    match OPERATOR_BIN.get() {
        Some(path) => path.clone(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/langfuse-upgrade-operator"),
    }
}

pub struct ClusterEnv {
    pub kubeconfig: PathBuf,
    /// The operator's own identity (its requests are the only ones in the audit log).
    pub operator_kubeconfig: PathBuf,
    pub audit_log: PathBuf,
    pub kubectl: PathBuf,
}

pub fn cluster_env() -> &'static ClusterEnv {
    static ENV: OnceLock<ClusterEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = std::env::var("LFU_TEST_CLUSTER_ENV")
            .unwrap_or_else(|_| panic!("LFU_TEST_CLUSTER_ENV is not set, so there is no cluster; {HOW_TO}"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}; {HOW_TO}"));
        let var = |name: &str| -> String {
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("export "))
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
                .unwrap_or_else(|| panic!("{path} has no {name}"))
        };
        ClusterEnv {
            kubeconfig: PathBuf::from(var("KUBECONFIG")),
            operator_kubeconfig: PathBuf::from(var("LFU_OPERATOR_KUBECONFIG")),
            audit_log: PathBuf::from(var("LFU_AUDIT_LOG")),
            kubectl: Path::new(&var("LFU_BIN_DIR")).join("kubectl"),
        }
    })
}

pub async fn client() -> Client {
    let env = cluster_env();
    let kubeconfig = Kubeconfig::read_from(&env.kubeconfig).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

/// How long a laid-out Langfuse may take to roll out. Seconds when the cluster is calm; after a
/// fault case restarted the apiserver, the controller-manager, the scheduler and kwok resync
/// their watches with backoff, and a loaded machine once took 61 s to mark the next case's v2
/// pods running (kwok patched them 60 s after they were created).
const LAYOUT_ROLLOUT: &str = "--timeout=180s";

/// `kubectl` against the test cluster; panics with its stderr on failure.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    let (out, ok) = kubectl_status(args, stdin);
    assert!(ok, "kubectl {} failed: {out}", args.join(" "));
    out
}

pub fn kubectl_status(args: &[&str], stdin: Option<&str>) -> (String, bool) {
    use std::io::Write;
    let env = cluster_env();
    let mut child = Command::new(&env.kubectl)
        .args(args)
        .env("KUBECONFIG", &env.kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, out.status.success())
}

/// A namespace of the test's own, deleted at the end.
pub struct TestNs {
    pub name: String,
    pub client: Client,
}

impl TestNs {
    pub async fn new(label: &str) -> TestNs {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "e2e-{label}-{}-{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::SeqCst)
        );
        let client = client().await;
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace");
        // Pods are refused until the namespace's "default" ServiceAccount exists, and the
        // controller-manager that makes it can be a minute behind after an apiserver restart
        // (a fault case before this one): made here, as a cluster's namespace tooling does.
        let default_sa = k8s_openapi::api::core::v1::ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match Api::namespaced(client.clone(), &name)
            .create(&PostParams::default(), &default_sa)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("the default ServiceAccount of {name}: {e}"),
        }
        TestNs { name, client }
    }

    /// The chart-era v2 (Deployment, Service, Secrets) in this namespace, with `DATABASE_URL`
    /// pointing at `database_url` through a Secret; waits until v2 serves.
    pub async fn lay_out_v2(&self, database_url: &str, image: &str) {
        let yaml = V2_LAYOUT
            .replace("namespace: langfuse", &format!("namespace: {}", self.name))
            .replace("langfuse/langfuse:2.95.9", image);
        let docs: Vec<&str> = yaml
            .split("\n---\n")
            .filter(|d| !d.contains("kind: Namespace"))
            .collect();
        kubectl(&["apply", "-f", "-"], Some(&docs.join("\n---\n")));
        self.secret("prod-langfuse-db", "url", database_url);
        self.use_test_stores();
        if image.contains("2.95") {
            kubectl(
                &[
                    "-n",
                    &self.name,
                    "rollout",
                    "status",
                    "deploy/prod-langfuse",
                    LAYOUT_ROLLOUT,
                ],
                None,
            );
        }
    }

    /// v2 as the official chart 0.8.0 renders it with a sidecar first, a base path, the ghcr.io
    /// image and the chart's default database settings (no DATABASE_URL), pointing at
    /// `database_url`; waits until v2 serves.
    pub async fn lay_out_chart_0_8_0(&self, database_url: &str) {
        let rest = database_url.split_once("://").map_or(database_url, |(_, r)| r);
        let (auth, rest) = rest.split_once('@').expect("user:password@ in the test database URL");
        let (user, password) = auth.split_once(':').expect("user:password in the test database URL");
        let (host, name) = rest.split_once('/').expect("a database name in the test database URL");
        let name = name.split('?').next().unwrap_or(name);
        let yaml = V2_CHART_0_8_0
            .replace("namespace: langfuse", &format!("namespace: {}", self.name))
            .replace("__DB_HOST__", host)
            .replace("__DB_NAME__", name)
            .replace("__DB_USER__", user)
            .replace("__DB_PASSWORD__", password);
        kubectl(&["apply", "-f", "-"], Some(&yaml));
        self.use_test_stores();
        kubectl(
            &[
                "-n",
                &self.name,
                "rollout",
                "status",
                "deploy/prod-langfuse",
                LAYOUT_ROLLOUT,
            ],
            None,
        );
    }

    /// Langfuse `version` (v3 or v4) as the official chart lays it out (`langfuse-web`,
    /// `langfuse-worker`, Service `langfuse-web`), applied by the field manager `helm` as Helm
    /// would, `DATABASE_URL` from a Secret; waits until both Deployments are rolled out.
    pub async fn lay_out_chart_v3(&self, database_url: &str, version: &str) {
        let yaml = V3_CHART
            .replace("__NAMESPACE__", &self.name)
            .replace("__VERSION__", version);
        kubectl(&["apply", "--field-manager=helm", "-f", "-"], Some(&yaml));
        self.secret("langfuse-db", "url", database_url);
        self.use_test_stores();
        for d in ["deploy/langfuse-web", "deploy/langfuse-worker"] {
            kubectl(&["-n", &self.name, "rollout", "status", d, LAYOUT_ROLLOUT], None);
        }
    }

    /// The layouts' Redis and S3 Secrets, pointed at the test servers (preflight reaches both).
    pub fn use_test_stores(&self) {
        let env = crate::support::env();
        self.secret("langfuse-redis", "url", &env.redis_url);
        let manifest = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "langfuse-s3", "namespace": self.name },
            "stringData": {
                "access-key-id": env.s3_access_key_id,
                "secret-access-key": env.s3_secret_access_key,
            },
        });
        kubectl(&["apply", "-f", "-"], Some(&manifest.to_string()));
    }

    pub fn secret(&self, name: &str, key: &str, value: &str) {
        let manifest = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": name, "namespace": self.name },
            "stringData": { key: value },
        });
        kubectl(&["apply", "-f", "-"], Some(&manifest.to_string()));
    }

    pub fn apply(&self, manifest: &serde_json::Value) -> (String, bool) {
        kubectl_status(&["apply", "-n", &self.name, "-f", "-"], Some(&manifest.to_string()))
    }

    pub fn upgrades(&self) -> Api<LangfuseUpgrade> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub async fn upgrade(&self, name: &str) -> LangfuseUpgrade {
        self.upgrades().get(name).await.expect("the LangfuseUpgrade exists")
    }

    pub async fn phase(&self, name: &str) -> Option<Phase> {
        self.upgrades()
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|u| u.status.and_then(|s| s.phase))
    }

    /// Wait for `phase`; the panic says where the upgrade was stuck and why.
    pub async fn wait_phase(&self, name: &str, phase: Phase, timeout: Duration) -> LangfuseUpgrade {
        let start = Instant::now();
        loop {
            let u = self.upgrade(name).await;
            if u.status.as_ref().and_then(|s| s.phase) == Some(phase) {
                return u;
            }
            if start.elapsed() > timeout {
                let s = u.status.unwrap_or_default();
                let ready = s.condition("Ready").map(|c| c.message.clone()).unwrap_or_default();
                panic!(
                    "{name} never reached {phase} in {timeout:?}: phase {:?}, Ready: {ready}",
                    s.phase
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn delete(self) {
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::background())
            .await;
    }
}

/// The operator binary running as a separate process, watching one namespace.
pub struct Operator {
    child: Option<Child>,
    args: Vec<String>,
    pub log: PathBuf,
    pub starts: u32,
    /// Where it serves /healthz, /readyz and /metrics.
    pub http_port: u16,
    /// Reaches the apiserver with this kubeconfig instead of the operator's own (a proxy's).
    kubeconfig: Option<PathBuf>,
}

impl Operator {
    /// One replica with leader election on a Lease in `ns` (so replicas of one test compete).
    pub fn start(ns: &str, identity: &str) -> Operator {
        Operator::start_with(ns, identity, true)
    }

    fn start_with(ns: &str, identity: &str, leader_election: bool) -> Operator {
        let mut op = Operator::new(ns, identity, leader_election);
        op.spawn();
        op
    }

    fn new(ns: &str, identity: &str, leader_election: bool) -> Operator {
        let log = std::env::temp_dir().join(format!("lfu-operator-{ns}-{identity}.log"));
        let http_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args = vec![
            "run".into(),
            "--namespace".into(),
            ns.into(),
            "--lease-namespace".into(),
            ns.into(),
            "--identity".into(),
            identity.into(),
            "--http-addr".into(),
            format!("127.0.0.1:{http_port}"),
        ];
        let mut op = Operator {
            child: None,
            args,
            log,
            starts: 0,
            http_port,
            kubeconfig: None,
        };
        if !leader_election {
            op.args.push("--no-leader-election".into());
        }
        op
    }

    /// One elected replica started with `extra` arguments (e.g. the catalog's ConfigMap).
    pub fn start_with_args(ns: &str, identity: &str, extra: &[&str]) -> Operator {
        let mut op = Operator::new(ns, identity, true);
        op.args.extend(extra.iter().map(|a| a.to_string()));
        op.spawn();
        op
    }

    /// One elected replica that reaches the apiserver through `proxy` (same identity).
    pub fn start_through(ns: &str, identity: &str, proxy: &proxy::ApiProxy) -> Operator {
        let mut op = Operator::new(ns, identity, true);
        op.kubeconfig = Some(proxy.kubeconfig().to_path_buf());
        op.spawn();
        op
    }

    /// One replica without leader election: two of these act on the same objects at once (a
    /// split brain), which only the compare-and-swap writes keep safe.
    pub fn start_unelected(ns: &str, identity: &str) -> Operator {
        Operator::start_with(ns, identity, false)
    }

    fn spawn(&mut self) {
        let env = cluster_env();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(operator_bin())
            .args(&self.args)
            .env(
                "KUBECONFIG",
                self.kubeconfig.as_ref().unwrap_or(&env.operator_kubeconfig),
            )
            // LFU_OPERATOR_RUST_LOG: more of the operator's log when a test is diagnosed.
            .env(
                "RUST_LOG",
                std::env::var("LFU_OPERATOR_RUST_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("operator starts");
        self.child = Some(child);
        self.starts += 1;
    }

    /// SIGKILL: no cleanup, no lease release, as a node loss or OOM kill would do.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a replica that stops running without dying, as
    /// a long GC pause, a frozen VM or a node cut off from the network would, and then goes on
    /// with everything it knew before.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.pid().expect("running").to_string();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// The exit status, once the process has exited on its own.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Plays Langfuse's worker: whenever the v3 worker Deployment has rolled out a pod template
/// with background migrations on (a new pod starts), the previous stand-in stops (SIGTERM) and
/// a new one starts against the test's databases, as a pod restart would.
pub fn play_worker(ns: &TestNs, db: &crate::support::TestDb, worker: &str) -> tokio::task::JoinHandle<u32> {
    play_worker_with(ns, db, worker, Kills::default())
}

/// The worker process SIGKILLed `times` times, `every` after each start, as an OOM kill would,
/// and started again `restart_after` later (the kubelet's restart back-off), while it copies.
/// Batches pause `batch_pause` so a copy lasts long enough to be killed in.
#[derive(Clone, Debug, Default)]
pub struct Kills {
    pub times: u32,
    pub every: Duration,
    pub restart_after: Duration,
    pub batch_pause: Option<Duration>,
    /// Kills made so far that hit a worker mid-copy (rows inserted, not finished).
    pub made: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

/// [`play_worker`] with [`Kills`]; the count of worker starts is the task's result, and each
/// kill's report (rows it had inserted) is logged to stderr.
pub fn play_worker_with(
    ns: &TestNs,
    db: &crate::support::TestDb,
    worker: &str,
    mut kills: Kills,
) -> tokio::task::JoinHandle<u32> {
    let deployments = ns.deployments();
    let worker = worker.to_string();
    let pg_url = db.pg_url.expose().to_string();
    let ch = db.ch_client.clone();
    tokio::spawn(async move {
        use crate::support::standin_worker::{Standin, StandinConfig};
        let mut current: Option<(String, Standin, StandinConfig, std::time::Instant)> = None;
        let mut starts = 0;
        loop {
            if kills.times > 0
                && let Some((_, standin, _, started)) = &current
                && started.elapsed() >= kills.every
                && !standin.is_finished()
            {
                let (template, standin, config, _) = current.take().unwrap();
                let report = standin.kill().await;
                eprintln!(
                    "worker SIGKILLed after {} batches, {} rows",
                    report.batches, report.rows_inserted
                );
                if report.rows_inserted > 0 {
                    kills.made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                kills.times -= 1;
                tokio::time::sleep(kills.restart_after).await;
                let standin = Standin::start(&pg_url, ch.clone(), config.clone()).await;
                starts += 1;
                current = Some((template, standin, config, std::time::Instant::now()));
            }
            if let Ok(Some(d)) = deployments.get_opt(&worker).await {
                let spec = d.spec.clone().unwrap_or_default();
                let status = d.status.clone().unwrap_or_default();
                let rolled = status.observed_generation >= d.metadata.generation
                    && status.updated_replicas == spec.replicas
                    && status.available_replicas == spec.replicas
                    && spec.replicas.unwrap_or(0) > 0;
                let template = serde_json::to_string(&spec.template).unwrap();
                // Langfuse's default is on: only an explicit "false" turns the manager off.
                let env = spec
                    .template
                    .spec
                    .as_ref()
                    .and_then(|p| langfuse_container(&p.containers))
                    .and_then(|c| c.env.clone())
                    .unwrap_or_default();
                let enabled =
                    migrations_enabled(&d) || !env.iter().any(|e| e.name == "LANGFUSE_ENABLE_BACKGROUND_MIGRATIONS");
                let open_gates = env
                    .iter()
                    .filter(|e| {
                        e.name.starts_with("LANGFUSE_BACKGROUND_MIGRATION_") && e.value.as_deref() == Some("true")
                    })
                    .map(|e| e.name.clone())
                    .collect();
                let changed = current.as_ref().is_none_or(|(t, ..)| *t != template);
                if rolled && changed {
                    if let Some((_, old, ..)) = current.take() {
                        old.shutdown().await;
                    }
                    if enabled {
                        let defaults = StandinConfig::default();
                        let config = StandinConfig {
                            open_gates,
                            batch_pause: kills.batch_pause.unwrap_or(defaults.batch_pause),
                            ..defaults
                        };
                        let standin = Standin::start(&pg_url, ch.clone(), config.clone()).await;
                        starts += 1;
                        current = Some((template, standin, config, std::time::Instant::now()));
                    }
                }
                if spec.replicas == Some(0)
                    && let Some((_, old, ..)) = current.take()
                {
                    old.shutdown().await;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if starts > 50 {
                return starts;
            }
        }
    })
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// GET `/metrics` and parse it: every sample line must be `name{labels} value`, every metric
/// must be announced by `# TYPE`, and the exposition must end with `# EOF`.
pub async fn scrape(port: u16) -> Vec<Sample> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    parse_exposition(body)
}

pub fn parse_exposition(body: &str) -> Vec<Sample> {
    let mut typed: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    assert_eq!(body.trim_end().lines().last(), Some("# EOF"), "no # EOF");
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.push(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut labels = std::collections::BTreeMap::new();
                for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label {pair} in {line}"));
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name.to_string(), labels)
            }
            None => (series.to_string(), Default::default()),
        };
        assert!(
            typed.iter().any(|t| name == *t || name.starts_with(&format!("{t}_"))),
            "{name} has no # TYPE line"
        );
        samples.push(Sample { name, labels, value });
    }
    samples
}

/// v2 receiving traffic: it writes (milliseconds, bursts) while the Service selects v2 pods,
/// and keeps writing `tail` after the switch (requests in flight), as a real v2 does into the
/// drain. Stops for good after that tail, or when dropped.
pub struct V2Traffic {
    handle: Option<tokio::task::JoinHandle<i64>>,
}

impl V2Traffic {
    pub fn start(ns: &TestNs, db: &crate::support::TestDb, service: &str, tail: Duration) -> V2Traffic {
        let ingest = crate::support::langfuse_data::Ingest::start(db, Duration::from_millis(120));
        let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(ns.client.clone(), &ns.name);
        let service = service.to_string();
        let handle = tokio::spawn(async move {
            let mut first: Option<std::collections::BTreeMap<String, String>> = None;
            loop {
                if let Ok(Some(s)) = services.get_opt(&service).await {
                    let selector = s.spec.and_then(|s| s.selector).unwrap_or_default();
                    match &first {
                        None => first = Some(selector),
                        Some(v2) if *v2 != selector => break,
                        Some(_) => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(tail).await;
            ingest.stop().await
        });
        V2Traffic { handle: Some(handle) }
    }

    /// Rows v2 wrote, once it has stopped (after the switch and its tail).
    pub async fn finished(mut self) -> i64 {
        match self.handle.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => 0,
        }
    }
}

impl Drop for V2Traffic {
    fn drop(&mut self) {
        // Aborting drops the task's Ingest, which stops writing.
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// Plays Langfuse web's startup: when the web Deployment's pod template moves to a release,
/// the rows that release's Prisma migrations insert appear, and those it deletes go (before
/// its pods can be ready), as the release catalog says.
pub fn play_web(ns: &TestNs, db: &crate::support::TestDb, web: &str) -> tokio::task::JoinHandle<()> {
    let deployments = ns.deployments();
    let (web, pool, ch) = (web.to_string(), db.pool.clone(), db.ch_client.clone());
    tokio::spawn(async move {
        let mut registered_for = None;
        loop {
            let image = deployments
                .get_opt(&web)
                .await
                .ok()
                .flatten()
                .and_then(|d| langfuse_container(&d.spec?.template.spec?.containers)?.image.clone());
            let version = image
                .as_deref()
                .and_then(|i| langfuse_upgrade_operator::version::image_tag(i))
                .and_then(langfuse_upgrade_operator::version::Version::parse);
            if let Some(v) = version
                && registered_for != Some(v)
            {
                // What a web does at start, before it reports ready: Prisma migrations, then
                // ClickHouse migrations up to the release's schema height.
                register_rows_of(&pool, v).await;
                raise_schema(&ch, v).await;
                registered_for = Some(v);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// The ClickHouse migrations of release `v`: `schema_migrations` up to the height the catalog
/// says it ships (never down: an older image does not rewind the schema); from v4 the events
/// tables those migrations create.
async fn raise_schema(ch: &clickhouse::Client, v: langfuse_upgrade_operator::version::Version) {
    if v.major >= 4 {
        crate::support::load_v4_events(ch).await;
    }
    let height = langfuse_upgrade_operator::catalog::Catalog::builtin().schema_height(v) as i64;
    let current: i64 = ch
        .query("SELECT toInt64(max(version)) FROM schema_migrations")
        .fetch_one()
        .await
        .expect("read schema_migrations");
    if height > current {
        let sequence = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        ch.query("INSERT INTO schema_migrations (version, dirty, sequence) VALUES (?, 0, ?)")
            .bind(height)
            .bind(sequence)
            .execute()
            .await
            .expect("raise schema_migrations");
    }
}

/// What a release's Prisma migrations do to `background_migrations`, from the release catalog;
/// v4.0.0 also drops the Postgres tracing tables.
async fn register_rows_of(pool: &sqlx::PgPool, v: langfuse_upgrade_operator::version::Version) {
    let catalog = langfuse_upgrade_operator::catalog::Catalog::builtin();
    for m in catalog.rows_at(v) {
        let args = match &m.gate {
            Some(gate) => serde_json::json!({ "envGate": gate }),
            None => serde_json::json!({}),
        };
        sqlx::query(
            "INSERT INTO background_migrations (id, name, script, args) VALUES ($1, $1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&m.name)
        .bind(&m.script)
        .bind(args)
        .execute(pool)
        .await
        .expect("register a background migration");
    }
    let removed: Vec<String> = catalog
        .background_migrations
        .iter()
        .filter(|m| catalog.removed_by(v, &m.name))
        .map(|m| m.name.clone())
        .collect();
    sqlx::query("DELETE FROM background_migrations WHERE name = ANY($1)")
        .bind(&removed)
        .execute(pool)
        .await
        .expect("delete the background migrations a release removes");
    if v.major >= 4 {
        sqlx::query("DROP TABLE IF EXISTS traces, observations, scores, dataset_run_items CASCADE")
            .execute(pool)
            .await
            .expect("v4.0.0 drops the Postgres tracing tables");
    }
}

/// The operator's Events in the namespace once two lists half a second apart agree (at most
/// 10 s): it publishes Events on a task of its own, a moment after the status they tell of.
pub async fn settled_events(ns: &TestNs) -> Vec<k8s_openapi::api::events::v1::Event> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let list = || async {
        let mut items = api
            .list(&kube::api::ListParams::default())
            .await
            .expect("list Events")
            .items;
        items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        items
    };
    let started = Instant::now();
    let mut last = list().await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = list().await;
        if now == last || started.elapsed() > Duration::from_secs(10) {
            return now;
        }
        last = now;
    }
}

/// Test knob of the ClickHouse test endpoint: this test's database answers `SELECT version()`
/// with `version` (e.g. an older ClickHouse than the engine really is).
pub async fn report_clickhouse_version(db: &crate::support::TestDb, version: &str) {
    db.ch_exec("CREATE TABLE IF NOT EXISTS __lfu_test_reported_version (v String) ENGINE = Memory")
        .await;
    db.ch_exec(&format!("INSERT INTO __lfu_test_reported_version VALUES ('{version}')"))
        .await;
}

/// The test endpoint's other knob: this database's user is refused `system.<t>` for each of
/// `tables`, as a ClickHouse user without those grants (one statement: the knob is read again
/// after a CREATE).
pub async fn deny_system_tables(db: &crate::support::TestDb, tables: &[&str]) {
    db.ch_exec("DROP TABLE IF EXISTS __lfu_test_denied_system_tables").await;
    let rows: Vec<String> = tables.iter().map(|t| format!("'{t}'")).collect();
    db.ch_exec(&format!(
        "CREATE TABLE __lfu_test_denied_system_tables ENGINE = Memory AS SELECT arrayJoin([{}]) AS t",
        rows.join(", ")
    ))
    .await;
}

/// The Langfuse container of a pod (a sidecar may come first, as the official chart allows):
/// the first whose image is Langfuse's, else the first.
fn langfuse_container(
    containers: &[k8s_openapi::api::core::v1::Container],
) -> Option<&k8s_openapi::api::core::v1::Container> {
    containers
        .iter()
        .find(|c| c.image.as_deref().is_some_and(|i| i.contains("langfuse/langfuse")))
        .or(containers.first())
}

/// The denial knob taken away: the user reads every system table again.
pub async fn allow_system_tables(db: &crate::support::TestDb) {
    db.ch_exec("DROP TABLE IF EXISTS __lfu_test_denied_system_tables").await;
}

/// What a release that already ran leaves behind: its rows registered and finished (its worker
/// ran them), ClickHouse at its schema height.
pub async fn as_if_ran(db: &crate::support::TestDb, version: &str) {
    let v = langfuse_upgrade_operator::version::Version::parse(version).expect("a version");
    register_rows_of(&db.pool, v).await;
    raise_schema(&db.ch_client, v).await;
    sqlx::query(
        "UPDATE background_migrations SET finished_at = now(), worker_id = 'ran-before' WHERE args->>'envGate' IS NULL",
    )
    .execute(&db.pool)
    .await
    .expect("finish the rows of the release that ran");
}

/// Appends one scenario's measured downtime to `target/e2e-report/downtime.tsv` (the README's
/// figures come from there) and returns the stretches so the scenario can assert on them.
pub fn report_downtime(scenario: &str, observer: &observer::Observer) -> Vec<(u128, u128)> {
    use std::io::Write;
    let gaps = observer.downtime();
    let total: u128 = gaps.iter().map(|(_, ms)| ms).sum();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/e2e-report");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("downtime.tsv"))
    {
        let _ = writeln!(f, "{scenario}\t{total}\t{}\t{gaps:?}", gaps.len());
    }
    eprintln!("downtime: {scenario}: {total} ms in {} stretches {gaps:?}", gaps.len());
    gaps
}

/// The test Prometheus (tests/prometheus/up.sh): its URL and the directory it discovers
/// targets from. Fails with instructions when it is not up.
pub fn prometheus_env() -> (String, String) {
    let path = std::env::var("LFU_TEST_PROMETHEUS_ENV").unwrap_or_else(|_| {
        panic!("LFU_TEST_PROMETHEUS_ENV is not set: run through tests/e2e/run.sh, or `tests/prometheus/up.sh DIR` and export LFU_TEST_PROMETHEUS_ENV=DIR/env")
    });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let var = |name: &str| {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim().trim_matches('\'').to_string())
            .unwrap_or_else(|| panic!("{path} has no {name}"))
    };
    (var("LFU_TEST_PROMETHEUS_URL"), var("LFU_TEST_PROMETHEUS_TARGETS_DIR"))
}
