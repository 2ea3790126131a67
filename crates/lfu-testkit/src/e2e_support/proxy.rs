//! A small HTTP proxy between one operator replica and the apiserver, that holds or delays the
//! requests a test names. The replica talks plain HTTP to it (a kubeconfig the proxy writes);
//! the proxy forwards with the replica's own identity (the operator kubeconfig's client
//! certificate). What the safety tests need and SIGSTOP cannot give: a write on the wire that
//! lands only when the test says, and one watch of one replica running behind the others.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use futures::StreamExt;
use http_body_util::BodyExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;

/// What a rule does to the requests it matches.
#[derive(Clone)]
enum Act {
    /// Held until released (`true` on the channel).
    Hold {
        released: watch::Receiver<bool>,
        held: Arc<AtomicUsize>,
    },
    /// The response's body (a watch's events) delivered this much later than it arrived.
    DelayStream(Duration),
}

#[derive(Clone)]
struct Rule {
    method: http::Method,
    /// A part of the path (and query) the request must contain.
    path: String,
    act: Act,
}

struct Shared {
    upstream: kube::Client,
    rules: Mutex<Vec<Rule>>,
}

pub struct ApiProxy {
    shared: Arc<Shared>,
    kubeconfig: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

/// Requests held by one [`ApiProxy::hold`] rule.
pub struct Held {
    release: watch::Sender<bool>,
    held: Arc<AtomicUsize>,
}

impl Held {
    /// How many matching requests are held now or were held (and released).
    pub fn count(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` matching requests have been held.
    pub async fn wait_for(&self, n: usize, timeout: Duration) {
        let start = std::time::Instant::now();
        while self.count() < n {
            assert!(
                start.elapsed() < timeout,
                "no request matched the hold within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The held requests go on to the apiserver (and later ones are not held).
    pub fn release(&self) {
        let _ = self.release.send(true);
    }
}

impl ApiProxy {
    /// A proxy to the test cluster with the operator's identity, on a free loopback port.
    pub async fn start() -> ApiProxy {
        let env = super::cluster_env();
        let config = Kubeconfig::read_from(&env.operator_kubeconfig).expect("the operator's kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
            .await
            .expect("a client config");
        let upstream = kube::Client::try_from(config).expect("a client");
        let shared = Arc::new(Shared {
            upstream,
            rules: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().fallback(forward).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let kubeconfig = std::env::temp_dir().join(format!("lfu-proxy-{port}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: proxied\n  user: {{}}\ncontexts:\n- name: proxy\n  context:\n    cluster: proxy\n    user: proxied\ncurrent-context: proxy\n"
        );
        std::fs::write(&kubeconfig, text).unwrap();
        ApiProxy {
            shared,
            kubeconfig,
            task,
        }
    }

    /// The kubeconfig a replica reaches the apiserver through this proxy with.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Hold every `method` request whose path contains `path` until released.
    pub fn hold(&self, method: &str, path: &str) -> Held {
        let (release, released) = watch::channel(false);
        let held = Arc::new(AtomicUsize::new(0));
        self.add(
            method,
            path,
            Act::Hold {
                released,
                held: held.clone(),
            },
        );
        Held { release, held }
    }

    /// Deliver the body of every `method` response whose path contains `path` (a watch's
    /// events) `by` later than it arrives, in order. Only requests made from now on.
    pub fn delay_stream(&self, method: &str, path: &str, by: Duration) {
        self.add(method, path, Act::DelayStream(by));
    }

    fn add(&self, method: &str, path: &str, act: Act) {
        self.shared.rules.lock().unwrap().push(Rule {
            method: method.parse().expect("an HTTP method"),
            path: path.to_string(),
            act,
        });
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

async fn forward(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    request: http::Request<Body>,
) -> http::Response<Body> {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return status(http::StatusCode::BAD_REQUEST);
    };
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let rules: Vec<Rule> = shared
        .rules
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == parts.method && target.contains(&r.path))
        .cloned()
        .collect();
    let mut delay = None;
    for rule in rules {
        match rule.act {
            Act::Hold { mut released, held } => {
                if !*released.borrow() {
                    held.fetch_add(1, Ordering::SeqCst);
                    let _ = released.wait_for(|r| *r).await;
                }
            }
            Act::DelayStream(by) => delay = Some(by),
        }
    }
    let mut out = http::Request::builder().method(parts.method).uri(&target);
    for (name, value) in &parts.headers {
        if name != http::header::HOST && name != http::header::AUTHORIZATION {
            out = out.header(name, value);
        }
    }
    let Ok(out) = out.body(kube::client::Body::from(bytes.to_vec())) else {
        return status(http::StatusCode::BAD_REQUEST);
    };
    // On a task of its own: a request once sent reaches the apiserver even if the replica that
    // sent it gave up waiting (as a write on the wire would).
    let upstream = shared.upstream.clone();
    let Ok(Ok(answer)) = tokio::spawn(async move { upstream.send(out).await }).await else {
        return status(http::StatusCode::BAD_GATEWAY);
    };
    let (parts, body) = answer.into_parts();
    let body = match delay {
        None => Body::new(body),
        Some(by) => Body::from_stream(delayed(body, by)),
    };
    http::Response::from_parts(parts, body)
}

/// The body's chunks, each released `by` after it arrived, in order.
fn delayed(
    body: kube::client::Body,
    by: Duration,
) -> impl futures::Stream<Item = Result<bytes::Bytes, Box<dyn std::error::Error + Send + Sync>>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut chunks = body.into_data_stream();
        while let Some(chunk) = chunks.next().await {
            let due = tokio::time::Instant::now() + by;
            if tx.send((due, chunk.map_err(|e| e.to_string()))).is_err() {
                break;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        let (due, chunk) = rx.recv().await?;
        tokio::time::sleep_until(due).await;
        Some((chunk.map_err(Into::into), rx))
    })
}

fn status(code: http::StatusCode) -> http::Response<Body> {
    let mut r = http::Response::new(Body::empty());
    *r.status_mut() = code;
    r
}
