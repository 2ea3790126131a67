//! The README's main job: the operator takes a simulated Langfuse v2 through the whole road on the
//! local control plane (3.29.0 beside v2, then in place to the newest v3, then to the newest v4),
//! printing the phases, the stops and the migration progress as they happen, then
//! the measurements (RSS, fact-to-write latency, API calls when idle). Run by `tests/demo.sh`,
//! which starts the cluster and the databases and stops them afterwards.

use lfu_testkit::{e2e_support, support};

#[path = "demo/data_model.rs"]
mod data_model;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e_support::observer::Observer;
use e2e_support::share::{self, Mark};
use e2e_support::{Operator, TestNs, V2Traffic, cluster_env, kubectl_status, play_web, play_worker};
use jiff::Timestamp;
use langfuse_upgrade_operator::api::{LangfuseUpgrade, Phase, crd_yaml};
use serde_json::{Value, json};
use support::process::{cpu_seconds, rss_kib};

/// The operator's requests in the audit log since `from_line`, by verb.
fn audit_since(from_line: usize) -> (usize, BTreeMap<String, usize>) {
    let text = std::fs::read_to_string(&cluster_env().audit_log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut verbs = BTreeMap::new();
    for line in lines.iter().skip(from_line) {
        let v: Value = serde_json::from_str(line).unwrap_or_default();
        if v["stage"] == "ResponseComplete" || v["stage"] == "ResponseStarted" {
            let resource = v["objectRef"]["resource"].as_str().unwrap_or("?");
            let sub = v["objectRef"]["subresource"]
                .as_str()
                .map(|s| format!("/{s}"))
                .unwrap_or_default();
            *verbs
                .entry(format!("{} {resource}{sub}", v["verb"].as_str().unwrap_or("?")))
                .or_insert(0) += 1;
        }
    }
    (lines.len(), verbs)
}

/// The operator's share over the demo: the observer's marks from the apply on, with the facts
/// only Postgres and the spec's timers show (drainPeriod and retireSourceAfter, both 5 s here).
/// Where the logged reconciles' time went (the operator logs each one that wrote or moved a
/// phase): the outside reads run at once, so observe is about the slowest of them.
fn reconcile_costs(logs: &str) -> String {
    const FIELDS: [&str; 6] = [
        "observe_ms",
        "postgres_ms",
        "clickhouse_ms",
        "stores_ms",
        "execute_ms",
        "report_ms",
    ];
    let mut sums = [0.0f64; 6];
    let mut n = 0;
    for line in logs.lines().filter(|l| l.contains("reconciled")) {
        // The operator writes no colour codes to a file (`telemetry::init`).
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse::<f64>().ok())
        };
        if let Some(values) = FIELDS.iter().map(|f| field(f)).collect::<Option<Vec<f64>>>() {
            n += 1;
            for (sum, v) in sums.iter_mut().zip(values) {
                *sum += v;
            }
        }
    }
    format!(
        "  the {n} reconciles that wrote: observe {:.0} ms (reads at once: Postgres {:.0}, the ClickHouse stand-in {:.0}, Redis and S3 {:.0}), execute {:.0} ms, report {:.0} ms\n",
        sums[0], sums[1], sums[2], sums[3], sums[4], sums[5]
    )
}

fn share_table(
    marks: &[Mark],
    finished_rows: &BTreeMap<String, i64>,
    newest_v2_write: Option<i64>,
    verified_at: Option<i64>,
) -> String {
    const WAIT_MS: i64 = 5_000;
    let Some(applied) = marks.iter().find(|m| m.what.starts_with("upgrade spec")).map(|m| m.at) else {
        return "  n/a: the observer saw no upgrade\n".into();
    };
    let mut all: Vec<Mark> = marks.iter().filter(|m| m.at >= applied).cloned().collect();
    for (name, at) in finished_rows {
        all.push(Mark::fact(*at, format!("Postgres: {name} finished")));
    }
    // The drain gates the first Deployment step after it (migrations on), the retirement the
    // one on v2 (scaled to 0): a step before its wait ran out is flagged EARLY.
    if let Some(at) = newest_v2_write {
        all.push(Mark::timer(
            at,
            WAIT_MS,
            "v2's newest row + drainPeriod",
            "Deployment prod-langfuse-web:",
        ));
    }
    // From the recorded verifiedAt (to the millisecond: when the counts were read), the instant
    // the spec's wait counts from; its status write is seen a few ms later.
    if let Some(verified) = verified_at {
        all.push(Mark::timer(
            verified,
            WAIT_MS,
            "verifiedAt + retireSourceAfter",
            "Deployment prod-langfuse:",
        ));
    }
    share::table(&share::gaps(&all))
}

fn line(u: &LangfuseUpgrade) -> String {
    let s = u.status.clone().unwrap_or_default();
    let ready = s.condition("Ready").map(|c| c.message.clone()).unwrap_or_default();
    format!(
        "{:<18} {}",
        s.phase.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        ready
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let t0 = Instant::now();
    let stamp = || format!("[{:>5.1}s]", t0.elapsed().as_secs_f64());
    let (out, ok) = kubectl_status(&["apply", "--server-side", "-f", "-"], Some(&crd_yaml()));
    assert!(ok, "{out}");
    kubectl_status(
        &[
            "wait",
            "--for=condition=Established",
            "crd/langfuseupgrades.upgrades.lfu-operator.dev",
        ],
        None,
    );

    let ns = TestNs::new("demo").await;
    let db = support::TestDb::new(&ns.name).await;
    // Two hours of history shaped like production (milliseconds, a batch-import burst, large
    // bodies, rows updated later), then a v2 that keeps writing while it serves.
    let history = support::langfuse_data::History {
        traces: 2000,
        observations_per_trace: 4,
        span: Duration::from_secs(7200),
        ..Default::default()
    };
    let seeded = db.seed(&history, Timestamp::now()).await;
    ns.lay_out_v2(db.pg_url.expose(), "ghcr.io/langfuse/langfuse:2.95.9")
        .await;
    let traffic = V2Traffic::start(&ns, &db, "prod-langfuse", Duration::from_millis(1500));
    let env = support::env();
    ns.apply(&json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "langfuse-clickhouse", "namespace": ns.name },
        "stringData": { "user": env.clickhouse_user, "password": env.clickhouse_password },
    }));
    println!(
        "{} Langfuse v2 2.95.9 running in namespace {} (2 replicas); Postgres holds {} traces, {} observations, {} scores; v2 keeps ingesting until the switch",
        stamp(),
        ns.name,
        seeded.traces,
        seeded.observations,
        seeded.scores
    );

    let observer = Observer::start(ns.client.clone(), &ns.name, "to-v3", "prod-langfuse", "prod-langfuse");
    let operator = Operator::start(&ns.name, "demo");
    let pid = operator.pid().expect("operator runs");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss = rss_kib(pid);
    let worker = play_worker(&ns, &db, "prod-langfuse-worker");
    let web = play_web(&ns, &db, "prod-langfuse-web");

    let upgrade = json!({
        "apiVersion": "upgrades.lfu-operator.dev/v1alpha1",
        "kind": "LangfuseUpgrade",
        "metadata": { "name": "to-v3", "namespace": ns.name },
        "spec": {
            "source": { "deployment": "prod-langfuse", "service": "prod-langfuse" },
            "target": { "version": "3.29.0", "finalVersion": "4.16.0", "web": { "replicas": 2 } },
            "strategy": { "drainPeriod": "5s", "retireSourceAfter": "5s", "rollbackAfter": "60s" },
            "backup": { "acknowledged": true, "reference": "demo", "acknowledgedHops": ["4.16.0"] }
        }
    });
    // ClickHouse, Redis and S3 as the test servers run them (preflight reaches all three).
    let mut upgrade = upgrade;
    for (k, v) in e2e_support::backends_spec(&db).as_object().unwrap() {
        upgrade["spec"][k] = v.clone();
    }
    println!(
        "{} kubectl apply LangfuseUpgrade to-v3 (3.29.0 beside v2, finalVersion 4.16.0, drainPeriod 5s, retireSourceAfter 5s)",
        stamp()
    );
    let applied = Instant::now();
    let (out, ok) = ns.apply(&upgrade);
    assert!(ok, "{out}");
    // `kubectl lfu status --watch` follows the upgrade as a person would (frames to a file; it
    // exits at Completed); its last screen is printed at the end.
    let plugin = std::env::var("LFU_KUBECTL_LFU").unwrap_or_else(|_| "target/debug/kubectl-lfu".into());
    let frames_path = std::env::temp_dir().join(format!("lfu-demo-{}-status.txt", ns.name));
    let watch = std::process::Command::new(&plugin)
        .args(["-n", &ns.name, "status", "to-v3", "--watch"])
        .env("KUBECONFIG", &cluster_env().kubeconfig)
        .stdout(std::fs::File::create(&frames_path).expect("frames file"))
        .spawn();

    let mut last = String::new();
    let mut last_progress = String::new();
    let mut last_road = String::new();
    // Read when the v3 copies are recorded as finished: v4.0.0 later deletes their rows.
    let mut last_finished: Option<i64> = None;
    let mut seen_finished: Option<i64> = None;
    let mut peak_rss = 0;
    // Postgres facts for the operator's share, read while they exist (v4.0.0 deletes the v3
    // rows): when each background migration row finished.
    let mut finished_rows: BTreeMap<String, i64> = BTreeMap::new();
    let mut newest_v2_write: Option<i64> = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        let u = ns.upgrade("to-v3").await;
        peak_rss = peak_rss.max(rss_kib(pid).unwrap_or(0));
        let l = line(&u);
        if l != last {
            println!("{} {l}", stamp());
            last = l;
        }
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT name, (extract(epoch from finished_at) * 1000)::bigint FROM background_migrations WHERE finished_at IS NOT NULL",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap_or_default();
        for (name, at) in rows {
            finished_rows.entry(name).or_insert(at);
        }
        let s = u.status.clone().unwrap_or_default();
        if s.cutoff.is_some() && newest_v2_write.is_none() {
            // v2's newest row once the drain is over (read before v4.0.0 drops those tables).
            newest_v2_write = sqlx::query_scalar(
                "SELECT (extract(epoch FROM greatest((SELECT max(created_at) FROM traces), (SELECT max(created_at) FROM observations), (SELECT max(created_at) FROM scores))) * 1000)::bigint",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap_or(None);
        }
        if s.migrations_finished_at.is_some() && last_finished.is_none() {
            // When the fact became visible in the API (this loop reads every 100 ms): the
            // recorded time itself is floored to whole seconds.
            seen_finished = Some(Timestamp::now().as_millisecond());
            last_finished = sqlx::query_scalar(
                "SELECT (extract(epoch from max(finished_at)) * 1000)::bigint FROM background_migrations WHERE name LIKE '20241024%'",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
        }
        let road: Vec<String> = s.road.iter().map(|r| format!("{} {:?}", r.version, r.state)).collect();
        let road = road.join(" -> ");
        if road != last_road {
            println!("{}   road: {road}", stamp());
            last_road = road;
        }
        if let Some(p) = &s.migration_progress
            && *p != last_progress
            && !s.migrations.is_empty()
        {
            let rows: Vec<String> = s
                .migrations
                .iter()
                .map(|m| {
                    format!(
                        "{}={}{}",
                        m.name.split('_').nth(3).unwrap_or(&m.name),
                        m.state,
                        m.progress_percent.map(|x| format!(" {x}%")).unwrap_or_default()
                    )
                })
                .collect();
            println!("{}   migrations {p}: {}", stamp(), rows.join(", "));
            last_progress = p.clone();
        }
        match s.phase {
            Some(Phase::Completed) => break Ok(u),
            Some(Phase::Failed | Phase::Blocked | Phase::RolledBack) => break Err(u),
            _ => {}
        }
        if Instant::now() > deadline {
            break Err(u);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let u = match done {
        Ok(u) => u,
        Err(u) => {
            eprintln!(
                "demo: the upgrade did not complete: {}\noperator log:\n{}",
                line(&u),
                operator.logs()
            );
            std::process::exit(1);
        }
    };
    let s = u.status.clone().unwrap_or_default();
    println!("{} Completed in {:.1}s", stamp(), applied.elapsed().as_secs_f64());
    for stop in &s.road {
        if let (Some(a), Some(b)) = (&stop.started_at, &stop.finished_at) {
            println!(
                "           stop {:<8} {:?}: {:>5.1}s",
                stop.version,
                stop.mode,
                (b.0.as_millisecond() - a.0.as_millisecond()) as f64 / 1000.0
            );
        }
    }
    let written = traffic.finished().await;
    println!("           v2 wrote {written} rows while it served (through the switch and into the drain)");
    for v in &s.verification {
        println!(
            "           verified {:<13} postgres {:>5}  clickhouse {:>5}  {}",
            v.table, v.postgres, v.clickhouse, v.verdict
        );
    }

    // Measurements. The window opens once the last reconcile's Events (written after its
    // status) are out: it measures what the operator does at rest.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mark, _) = audit_since(0);
    let idle_window = Duration::from_secs(60);
    tokio::time::sleep(idle_window).await;
    let (_, idle_verbs) = audit_since(mark);
    // Lease renewals are leader election's heartbeat, not a reaction to anything: counted apart.
    let writes: usize = idle_verbs
        .iter()
        .filter(|(v, _)| {
            !v.starts_with("get ") && !v.starts_with("list ") && !v.starts_with("watch ") && !v.ends_with(" leases")
        })
        .map(|(_, n)| n)
        .sum();
    let record = observer.stop();
    if let Ok(mut watch) = watch {
        let waited = Instant::now();
        while watch.try_wait().ok().flatten().is_none() && waited.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = watch.kill();
        let frames = std::fs::read_to_string(&frames_path).unwrap_or_default();
        let count = frames.lines().filter(|l| l.starts_with("--- ")).count();
        println!(
            "\n$ kubectl lfu -n {} status to-v3    (the last of {count} frames `--watch` drew, one per change; all in {})",
            ns.name,
            frames_path.display()
        );
        print!(
            "{}",
            frames
                .rsplit_once("\n--- ")
                .map(|(_, last)| last.split_once('\n').map(|(_, b)| b).unwrap_or(last))
                .unwrap_or(&frames)
        );
        let history = std::process::Command::new(&plugin)
            .args(["-n", &ns.name, "history", "to-v3"])
            .env("KUBECONFIG", &cluster_env().kubeconfig)
            .output();
        if let Ok(h) = history {
            println!("\n$ kubectl lfu -n {} history to-v3", ns.name);
            print!("{}", String::from_utf8_lossy(&h.stdout));
        }
    } else {
        println!("(kubectl-lfu not found at {plugin}: build it with `cargo build --bin kubectl-lfu`)");
    }
    println!("\nmeasurements");
    println!(
        "  operator RSS: idle {} KiB, peak during the upgrade {peak_rss} KiB, after {} KiB",
        idle_rss.unwrap_or(0),
        rss_kib(pid).unwrap_or(0)
    );
    println!(
        "  API requests in {}s with nothing changing: {idle_verbs:?} ({writes} writes besides Lease renewals)",
        idle_window.as_secs()
    );
    let t = &record.timeline_us;
    let gap = |fact: &str, write: &str| match (t.get(fact), t.get(write)) {
        (Some(a), Some(b)) => format!("{:.1} ms", b.saturating_sub(*a) as f64 / 1000.0),
        _ => "n/a".into(),
    };
    println!(
        "  web Available (2 replicas) -> selector switched: {}",
        gap("prod-langfuse-web available 2", "selector switched")
    );
    println!(
        "  endpoints only v3 -> draining (status): {}",
        gap("endpoints only v3", "phase Draining")
    );
    // Postgres is polled (no triggers: the operator writes nothing but the remedy fields), so
    // this is bounded by the poll interval; measured from the last finished_at the worker wrote.
    match (last_finished, seen_finished) {
        (Some(a), Some(b)) => println!(
            "  last migration finished (Postgres) -> recorded by the operator (seen in the API, +-100 ms): {} ms",
            b - a
        ),
        _ => println!("  last migration finished -> recorded: n/a"),
    }
    println!(
        "\noperator's share: each step it wrote, charged from the newest fact since its previous step\n(a rollout, the EndpointSlices, a migration row finished, a timer the spec set), else from that step"
    );
    print!(
        "{}",
        share_table(
            &record.marks,
            &finished_rows,
            newest_v2_write,
            s.verified_at.as_ref().map(|t| t.0.as_millisecond())
        )
    );
    print!("{}", reconcile_costs(&operator.logs()));
    // The operator's own log, each reconcile's timings in it, kept when asked (the demo's
    // directory is removed at the end).
    if let Some(path) = std::env::var_os("LFU_DEMO_OPERATOR_LOG") {
        match std::fs::write(&path, operator.logs()) {
            Ok(()) => println!("  operator log kept in {}", path.to_string_lossy()),
            Err(e) => println!("  operator log not kept ({}): {e}", path.to_string_lossy()),
        }
    }
    println!("  invariant violations observed: {}", record.violations.len());
    for v in &record.violations {
        println!("    {v}");
    }
    // The Postgres load the operator adds: its own backends' CPU over the whole demo (its pool
    // keeps them 5 minutes idle, so they are all still there).
    let backends: Vec<(i32, Option<f64>)> = sqlx::query_scalar::<_, i32>(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'langfuse-upgrade-operator'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap_or_default()
    .into_iter()
    .map(|pid| (pid, cpu_seconds(pid)))
    .collect();
    let cpu: f64 = backends.iter().filter_map(|(_, c)| *c).sum();
    println!(
        "  Postgres backends serving the operator: {} ({cpu:.2} s of CPU in all, over {:.1} s from the apply to now)",
        backends.len(),
        applied.elapsed().as_secs_f64()
    );
    // The second road: v4's data model, from legacy to events_only; the v4 worker's part is
    // played from here on by the data-model stand-in.
    worker.abort();
    let walked = data_model::walk(&ns, &db, "to-v3", "prod-langfuse-worker", &stamp).await;
    web.abort();
    if let Err(e) = walked {
        eprintln!(
            "demo: the data-model road did not complete: {e}\noperator log:\n{}",
            operator.logs()
        );
        std::process::exit(1);
    }
    drop(operator);
    ns.delete().await;
    db.finish().await;
    if !record.violations.is_empty() {
        std::process::exit(1);
    }
}
