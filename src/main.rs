//! Thin CLI: `crd` prints the CRD, `run` runs the controller.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use kube::Client;
use kube::runtime::events::Reporter;
use kube_lease_manager::LeaseManagerBuilder;
use langfuse_upgrade_operator::api::{FIELD_MANAGER, crd_yaml};
use langfuse_upgrade_operator::catalog::Catalog;
use langfuse_upgrade_operator::controller::fence::{self, Fence, LEASE_REQUEST_TIMEOUT};
use langfuse_upgrade_operator::controller::{self, Context};
use langfuse_upgrade_operator::databases::Live;
use langfuse_upgrade_operator::error::{Error, Result};
use langfuse_upgrade_operator::http::{self, Health};
use langfuse_upgrade_operator::metrics::Metrics;
use langfuse_upgrade_operator::telemetry::{self, LogFormat};
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "langfuse-upgrade-operator",
    version,
    about = "Upgrades a running self-hosted Langfuse v2 to v3 with no downtime and no lost data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the LangfuseUpgrade CRD as YAML.
    Crd,
    /// Print the spec and status reference (docs/reference.md) as Markdown.
    Reference,
    /// Print the compiled-in release catalog (a starting point for `run --catalog`), or
    /// generate one from a Langfuse checkout.
    Catalog {
        #[command(subcommand)]
        action: Option<CatalogAction>,
    },
    /// Print the ValidatingAdmissionPolicy that refuses a Langfuse image change skipping a
    /// required stop (the chart's template; with --name and --exempt, plain YAML to apply).
    AdmissionPolicy {
        /// Name of the policy and its binding (plain YAML).
        #[arg(long, requires = "exempt")]
        name: Option<String>,
        /// The operator's ServiceAccount as `namespace:name`, whose own writes are not judged.
        #[arg(long, requires = "name")]
        exempt: Option<String>,
        /// Judge this namespace only (plain YAML; default: every namespace).
        #[arg(long, requires = "name")]
        namespace: Option<String>,
    },
    /// Run the controller against the cluster (in-cluster config or the current kubeconfig).
    Run(RunArgs),
}

#[derive(Subcommand)]
enum CatalogAction {
    /// Derive the catalog from a Langfuse git checkout's release tags (ClickHouse heights,
    /// background-migration rows and gates, v4 defaults, newest releases), merged with the
    /// overlay; printed to stdout, what needs a person's look to stderr.
    Generate {
        /// A Langfuse git repository (a checkout or a bare mirror).
        #[arg(long)]
        from: std::path::PathBuf,
        /// The hand-written part.
        #[arg(long, default_value = "catalog/overlay.yaml")]
        overlay: std::path::PathBuf,
        /// Ignore releases above this one.
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /healthz and /readyz.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "plain")]
    log_format: LogFormat,
    /// Disable leader election (only for a single replica, e.g. local runs).
    #[arg(long, env = "NO_LEADER_ELECTION")]
    no_leader_election: bool,
    #[arg(long, env = "LEASE_NAME", default_value = "langfuse-upgrade-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease (default: the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// A release catalog to use instead of the compiled-in one (`catalog` prints that one), so
    /// a newer Langfuse release can be followed without a new operator image.
    #[arg(long, env = "LFU_CATALOG")]
    catalog: Option<std::path::PathBuf>,
    /// A ConfigMap (in the Lease's namespace) holding the release catalog, followed while the
    /// operator runs: a change takes effect without a restart, an invalid one is refused.
    #[arg(long, env = "LFU_CATALOG_CONFIGMAP", conflicts_with = "catalog")]
    catalog_config_map: Option<String>,
    /// The ConfigMap's key that holds the catalog YAML.
    #[arg(long, env = "LFU_CATALOG_KEY", default_value = "langfuse.yaml")]
    catalog_key: String,
}

/// The catalog from `from`'s history and the overlay; warnings go to stderr.
fn generate_catalog(from: &std::path::Path, overlay: &std::path::Path, until: Option<&str>) -> Result<String, String> {
    use langfuse_upgrade_operator::catalog::generate::{Overlay, generate, git::Git};
    let overlay = std::fs::read_to_string(overlay)
        .map_err(|e| format!("cannot read {}: {e}", overlay.display()))
        .and_then(|t| Overlay::from_yaml(&t))?;
    let until = match until {
        Some(u) => Some(
            langfuse_upgrade_operator::version::Version::parse(u).ok_or(format!("--until {u:?} is not a release"))?,
        ),
        None => None,
    };
    let (text, warnings) = generate(
        &Git {
            dir: from.to_path_buf(),
        },
        &overlay,
        until,
    )?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(text)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Reference => {
            print!("{}", langfuse_upgrade_operator::api::reference::reference_markdown());
            ExitCode::SUCCESS
        }
        Command::Crd => {
            print!("{}", crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Catalog { action: None } => {
            print!("{}", langfuse_upgrade_operator::catalog::BUILTIN);
            ExitCode::SUCCESS
        }
        Command::Catalog {
            action: Some(CatalogAction::Generate { from, overlay, until }),
        } => match generate_catalog(&from, &overlay, until.as_deref()) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::AdmissionPolicy {
            name,
            exempt,
            namespace,
        } => {
            use langfuse_upgrade_operator::catalog::admission::{Scope, policy};
            let scope = match (name, exempt) {
                (Some(name), Some(exempt)) => Scope::Plain {
                    name,
                    exempt,
                    namespace,
                },
                _ => Scope::Helm,
            };
            print!("{}", policy(&Catalog::builtin(), &scope));
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            telemetry::init(args.log_format);
            if let Some(path) = &args.catalog {
                let loaded = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the catalog {}: {e}", path.display()))
                    .and_then(|text| Catalog::from_yaml(&text));
                match loaded {
                    Ok(catalog) => {
                        info!(catalog = %path.display(), v3 = %catalog.known.v3, v4 = %catalog.known.v4, "release catalog loaded");
                        Catalog::install(catalog);
                    }
                    Err(e) => {
                        error!(error = %e, "exiting: the release catalog is not usable");
                        return ExitCode::FAILURE;
                    }
                }
            }
            match run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!(error = %e, "exiting");
                    eprintln!("langfuse-upgrade-operator: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Longest wait for the apiserver's answer to one request (kube's default: none). A request
/// caught by an apiserver restart can otherwise hang the reconcile that made it, and with it
/// every later reconcile of that upgrade, for as long as the connection stays open.
const API_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Clients on one config: requests with an answer timeout (reconciles and Events; the Lease's
/// shorter), and watches without one (a quiet watch sends nothing for minutes; the watcher has
/// an idle timeout of its own).
struct Clients {
    requests: Client,
    lease: Client,
    watches: Client,
}

/// `fence` learns of every Lease renewal from the Lease client itself.
async fn clients(fence: &Fence) -> Result<Clients> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| Error::Kube(kube::Error::InferConfig(e)))?;
    let answered_within = |timeout| {
        let mut c = config.clone();
        c.read_timeout = Some(timeout);
        // Counted from when a request is sent, not from when its pooled connection went idle.
        c.reset_reader_on_write = true;
        Client::try_from(c)
    };
    let lease = {
        let mut c = config.clone();
        c.read_timeout = Some(LEASE_REQUEST_TIMEOUT);
        c.reset_reader_on_write = true;
        kube::client::ClientBuilder::try_from(c)?
            .with_layer(&fence.layer())
            .build()
    };
    Ok(Clients {
        requests: answered_within(API_REQUEST_TIMEOUT)?,
        lease,
        watches: Client::try_from(config.clone())?,
    })
}

async fn run(args: RunArgs) -> Result<()> {
    let fence = match args.no_leader_election {
        true => Fence::none(),
        false => Fence::leased(),
    };
    let Clients {
        requests: client,
        lease: lease_client,
        watches: watch_client,
    } = clients(&fence).await?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{}", FIELD_MANAGER, std::process::id()));
    let health = Health::default();
    let metrics = Arc::new(Metrics::new());
    let server = tokio::spawn(http::serve(
        args.http_addr,
        health.clone(),
        metrics.clone(),
        controller::dispatch::shutdown_signal(),
    ));

    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: Some(identity.clone()),
    };
    if let Some(name) = args.catalog_config_map.clone() {
        let recorder = kube::runtime::events::Recorder::new(client.clone(), reporter.clone());
        tokio::spawn(controller::catalog_watch::follow(
            watch_client.clone(),
            args.lease_namespace.clone(),
            name,
            args.catalog_key.clone(),
            recorder,
        ));
    }
    let ctx = Arc::new(Context::new(client.clone(), reporter, Live::default(), metrics).with_fence(fence.clone()));

    let result = if args.no_leader_election {
        health.set_ready(true);
        controller::run(watch_client, args.namespace, ctx).await
    } else {
        let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
            kube::Api::namespaced(lease_client.clone(), &args.lease_namespace);
        let manager = LeaseManagerBuilder::new(lease_client, &args.lease_name)
            .with_namespace(&args.lease_namespace)
            .with_identity(&identity)
            .with_duration(fence::LEASE_DURATION_SECS)
            .with_grace(fence::LEASE_GRACE_SECS)
            .with_field_manager(FIELD_MANAGER)
            .build()
            .await
            .map_err(|e| Error::Leader(e.to_string()))?;
        let (mut leading, lease_task) = manager.watch().await;
        info!(lease = %args.lease_name, %identity, "waiting to lead");
        let became_leader = async {
            while !*leading.borrow_and_update() {
                if leading.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        let led = tokio::select! { led = became_leader => led, _ = controller::dispatch::shutdown_signal() => false };
        if led && !fence.holds() {
            // Leading without a write of ours: an earlier run under this identity renewed it.
            match leases.get_opt(&args.lease_name).await {
                Ok(Some(lease)) => {
                    if let Some(t) = lease.spec.and_then(|s| s.renew_time) {
                        fence.renewed_at(t.0);
                    }
                }
                Ok(None) => {}
                Err(e) => error!(error = %e, "cannot read the Lease's renewal time"),
            }
            // That renewal is too old to act on: the Lease library renews it within its grace
            // (5 s); act once it has.
            let renewed = async {
                while !fence.holds() {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            };
            if tokio::time::timeout(fence::HOLDS_FOR, renewed).await.is_err() {
                error!("leading by the Lease library's account, but no renewal of ours succeeded; stopping");
            }
        }
        let result = if led {
            info!("leading; starting the controller");
            health.set_ready(true);
            let told = async {
                while *leading.borrow_and_update() {
                    if leading.changed().await.is_err() {
                        break;
                    }
                }
            };
            // The Lease library says "lost" only when the Lease API answers; the fence also
            // when it has not answered a renewal in time (a control-plane outage).
            let lost = async {
                tokio::select! {
                    _ = told => {}
                    _ = fence.expired() => {
                        error!("the Lease was not renewed in time: another replica may lead; stopping");
                    }
                }
            };
            tokio::select! {
                r = controller::run(watch_client, args.namespace, ctx.clone()) => r,
                _ = lost => {
                    ctx.events.stop();
                    Err(Error::Leader("lost the lease; exiting so that only one replica acts".into()))
                }
            }
        } else {
            Ok(())
        };
        health.set_ready(false);
        // Closing the channel makes the lease task release the lease for the next replica.
        drop(leading);
        let _ = lease_task.await;
        result
    };
    server.abort();
    result
}
