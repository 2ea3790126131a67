//! TEST SUPPORT: a tiny Prometheus target playing v3 web's request counters, whose error ratio
//! the test sets. Served on loopback; the test Prometheus (tests/prometheus/up.sh) scrapes it
//! once it is listed in a file under the file-discovery directory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct ErrorExporter {
    addr: String,
    /// The error ratio, as f64 bits.
    ratio: Arc<AtomicU64>,
    file: Option<std::path::PathBuf>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    errors: AtomicU64,
}

impl ErrorExporter {
    /// Serve counters that grow by 100 requests a second, `ratio` of them errors.
    pub async fn start(ratio: f64) -> ErrorExporter {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the test exporter");
        let addr = listener.local_addr().unwrap().to_string();
        let share = Arc::new(AtomicU64::new(ratio.to_bits()));
        let counters = Arc::new(Counters::default());
        let (c, r) = (counters.clone(), share.clone());
        let traffic = tokio::spawn(async move {
            // Fractions of an error carried over, so a ratio of 0.05 gives 5 errors in 100.
            let mut owed = 0.0;
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                owed += 10.0 * f64::from_bits(r.load(Ordering::SeqCst));
                let errors = owed.floor();
                owed -= errors;
                c.errors.fetch_add(errors as u64, Ordering::SeqCst);
                c.ok.fetch_add(10 - errors as u64, Ordering::SeqCst);
            }
        });
        let c = counters.clone();
        let serve = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let c = c.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let body = format!(
                        "# TYPE lfu_test_requests_total counter\n\
                         lfu_test_requests_total{{code=\"200\"}} {}\n\
                         lfu_test_requests_total{{code=\"500\"}} {}\n",
                        c.ok.load(Ordering::SeqCst),
                        c.errors.load(Ordering::SeqCst)
                    );
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        ErrorExporter {
            addr,
            ratio: share,
            file: None,
            tasks: vec![traffic, serve],
        }
    }

    pub fn set_error_ratio(&self, ratio: f64) {
        self.ratio.store(ratio.to_bits(), Ordering::SeqCst);
    }

    /// Listed for the test Prometheus: one file of its own under the discovery directory.
    pub fn register(&mut self, targets_dir: &str, name: &str) {
        let path = std::path::Path::new(targets_dir).join(format!("{name}.json"));
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!(r#"[{{"targets":["{}"]}}]"#, self.addr)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        self.file = Some(path);
    }

    /// This target's error ratio in PromQL, as a user's query would read v3 web's.
    pub fn query(&self) -> String {
        let sel = format!("instance=\"{}\"", self.addr);
        format!(
            "sum(rate(lfu_test_requests_total{{{sel},code=~\"5..\"}}[5s])) / sum(rate(lfu_test_requests_total{{{sel}}}[5s]))"
        )
    }
}

impl Drop for ErrorExporter {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(f) = &self.file {
            let _ = std::fs::remove_file(f);
        }
    }
}
