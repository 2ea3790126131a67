//! A Redis of one test's own (Debian's redis-server on a free loopback port, nothing saved),
//! so a test can set a server-wide setting such as `maxmemory-policy` without touching the
//! Redis the other tests share. Stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct OwnRedis {
    child: Child,
    pub port: u16,
}

impl OwnRedis {
    /// Started with `maxmemory-policy` `policy`, and answering PING.
    pub fn start(policy: &str) -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
            .args(["--appendonly", "no", "--maxmemory-policy", policy])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (installed by tests/db/up.sh)");
        let redis = OwnRedis { child, port };
        for _ in 0..100 {
            if redis.cli(&["PING"]).trim() == "PONG" {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {port} never answered PING");
    }

    /// `redis-cli` against it; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
