//! TEST SUPPORT: stop and start the test servers of tests/db/up.sh under a running test, for
//! the fault table (tests/e2e_faults.rs). Every test sharing these servers is affected, so the
//! fault tests run alone, one after the other.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn workdir() -> PathBuf {
    let path = std::env::var("LFU_TEST_DB_ENV").expect("LFU_TEST_DB_ENV");
    let text = std::fs::read_to_string(&path).expect("the db env file");
    let dir = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export LFU_TEST_DB_WORKDIR="))
        .map(|v| v.trim_matches('\'').to_string())
        .next()
        .expect("LFU_TEST_DB_WORKDIR in the db env");
    PathBuf::from(dir)
}

/// `pg_ctl` as the data directory's owner (postgres refuses to run as root).
fn pg_ctl(args: &[&str]) {
    let data = workdir().join("pg/data");
    let log = workdir().join("logs/postgres.log");
    let mut all = vec!["-D".to_string(), data.display().to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    if args.contains(&"start") {
        all.extend(["-l".into(), log.display().to_string()]);
    }
    let root = is_root();
    let status = if root {
        Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl")])
            .args(&all)
            .stdout(Stdio::null())
            .status()
    } else {
        Command::new(format!("{PG_BIN}/pg_ctl"))
            .args(&all)
            .stdout(Stdio::null())
            .status()
    }
    .expect("pg_ctl runs");
    assert!(status.success(), "pg_ctl {args:?} failed");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// PostgreSQL stopped as a crash would (immediate shutdown).
pub fn stop_postgres() {
    pg_ctl(&["-m", "immediate", "-w", "-t", "30", "-s", "stop"]);
}

pub fn start_postgres() {
    pg_ctl(&["-w", "-t", "60", "-s", "start"]);
}

/// The ClickHouse stand-in killed (SIGKILL); returns how to start it again, as it was.
pub fn kill_clickhouse() -> Respawn {
    let dir = workdir();
    kill_recorded(dir.join("pids/chdb_http.pid"), dir.join("logs/chdb_http.log"))
}

/// The control plane's kube-apiserver killed (SIGKILL; etcd and everything else kept);
/// returns how to start it again, as it was.
pub fn kill_apiserver() -> Respawn {
    let env = std::env::var("LFU_TEST_CLUSTER_ENV").expect("LFU_TEST_CLUSTER_ENV");
    let dir = std::path::Path::new(&env)
        .parent()
        .expect("the cluster workdir")
        .to_path_buf();
    kill_recorded(dir.join("pids/kube-apiserver.pid"), dir.join("logs/kube-apiserver.log"))
}

/// SIGKILL to the process a test script recorded in `pidfile`, remembering its command line
/// and environment to start it again.
fn kill_recorded(pidfile: PathBuf, log: PathBuf) -> Respawn {
    let pid = std::fs::read_to_string(&pidfile).expect("pid file").trim().to_string();
    let split = |bytes: Vec<u8>| -> Vec<String> {
        bytes
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    };
    let argv = split(std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline"));
    let env = split(std::fs::read(format!("/proc/{pid}/environ")).expect("environ"));
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd");
    let status = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "{pid} survived SIGKILL");
        std::thread::sleep(Duration::from_millis(50));
    }
    Respawn {
        argv,
        env,
        cwd,
        pidfile,
        log,
        started: false,
    }
}

pub struct Respawn {
    argv: Vec<String>,
    env: Vec<String>,
    cwd: PathBuf,
    pidfile: PathBuf,
    log: PathBuf,
    started: bool,
}

impl Respawn {
    /// Started again with the same command line, environment and directory (its data kept);
    /// its new pid goes into the pid file, so the script that stops the servers stops it.
    pub fn start(mut self) {
        self.start_now();
    }

    fn start_now(&mut self) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new("setsid");
        cmd.args(&self.argv).env_clear().current_dir(&self.cwd);
        for kv in &self.env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        let mut child = cmd.spawn().expect("starts again");
        std::fs::write(&self.pidfile, format!("{}\n", child.id())).expect("pid file written");
        // Reaped when it exits.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
    }
}

/// A test that fails while a server is down (a panic between the kill and the start) still
/// starts it again: the servers are shared with the tests after it.
impl Drop for Respawn {
    fn drop(&mut self) {
        self.start_now();
    }
}
