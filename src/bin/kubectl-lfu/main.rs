//! `kubectl lfu`: see a LangfuseUpgrade at a glance, plan one before it exists, act on it.
//! A kubectl plugin: the current kubeconfig and namespace, `-n`, `--context`, `--kubeconfig`.
//! Every failure is one line on stderr and a non-zero exit.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};
use langfuse_upgrade_operator::api::{APPROVE_ANNOTATION, CheckResult, LangfuseUpgrade, Phase};
use langfuse_upgrade_operator::cli::history::{EventLine, history_text, timeline};
use langfuse_upgrade_operator::cli::render::{Style, status_text};
use langfuse_upgrade_operator::cli::view::status_view;
use langfuse_upgrade_operator::controller::observe;
use langfuse_upgrade_operator::controller::plan::{needs, plan};
use langfuse_upgrade_operator::databases::Live;
use serde_json::json;

mod complete;
mod handoff;
mod list;
use list::list;
mod road;
mod spec_file;
use spec_file::{plan_offline, read_upgrade};

#[derive(Parser)]
#[command(
    name = "kubectl-lfu",
    bin_name = "kubectl lfu",
    version,
    about = "See, plan and steer LangfuseUpgrades (langfuse-upgrade-operator)"
)]
struct Cli {
    /// Namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// kubeconfig context.
    #[arg(long, global = true)]
    context: Option<String>,
    /// kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Text,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// One screen: the road, the phase, steps, checks, migrations, verification, what comes next.
    Status {
        name: String,
        /// Redraw on every change of the object (until it completes or rolls back).
        #[arg(short, long)]
        watch: bool,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// What would happen, touching nothing: the road and, with cluster access, the preflight
    /// checks the operator would run. Exits 1 when something would block.
    Plan {
        /// A file holding a LangfuseUpgrade (`-` for stdin).
        #[arg(short, long, conflicts_with = "name")]
        file: Option<std::path::PathBuf>,
        /// An existing LangfuseUpgrade.
        name: Option<String>,
        /// Only the spec and the road; read neither the cluster nor the databases.
        #[arg(long)]
        offline: bool,
        /// Check a values file meant for `helm upgrade` of the official chart against what runs
        /// (needs NAME and --chart); exit 1 with one line per conflict.
        #[arg(long, requires_all = ["name", "chart"])]
        helm_values: Option<std::path::PathBuf>,
        /// The official chart version the values file is for.
        #[arg(long, requires = "helm_values")]
        chart: Option<String>,
    },
    /// Approve the traffic shift (`promotion: Manual`).
    Approve { name: String },
    /// Stop acting (observation and status go on).
    Pause { name: String },
    /// Act again after `pause`.
    Resume { name: String },
    /// Roll back (says first what a rollback does and hides; asks unless --yes).
    Abort {
        name: String,
        #[arg(short, long)]
        yes: bool,
    },
    /// The road from one release to another, with nothing installed: the stops, each hop's
    /// gates, what each destroys for good (the operator's own planner and catalog).
    Road {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// A release catalog instead of the compiled-in one (`langfuse-upgrade-operator catalog`).
        #[arg(long)]
        catalog: Option<std::path::PathBuf>,
        /// Plan to a release newer than the catalog knows (its facts from the newest known).
        #[arg(long)]
        accept_unknown: bool,
    },
    /// The official chart's values that reproduce what runs (nothing is changed): stores
    /// external, secrets by reference, the exact release and v4 flags as running.
    Handoff {
        name: String,
        /// The official chart version to write values for (1.x or 2.x, e.g. 2.0.0).
        #[arg(long)]
        chart: String,
    },
    /// Every upgrade in the namespace (or, -A, the cluster): phase, road, age, what it waits for.
    List {
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// A completion script for bash, zsh or fish (`source <(kubectl lfu completion bash)`).
    Completion { shell: clap_complete::Shell },
    /// kubectl's plugin completion (called by the `kubectl_complete-lfu` shim).
    #[command(name = "__complete", hide = true)]
    Complete {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// The timeline of an upgrade: its recorded facts and Events.
    History {
        name: String,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
}

type Fallible<T> = Result<T, String>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn client(cli: &Cli) -> Fallible<(Client, String)> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let kubeconfig = match &cli.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => Kubeconfig::read().map_err(|e| format!("no kubeconfig ({e}); set KUBECONFIG or pass --kubeconfig"))?,
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| format!("kubeconfig: {e}"))?;
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))?;
    Ok((client, namespace))
}

/// An API error in one line that says what to do.
fn api_error(e: kube::Error, what: &str) -> String {
    match e {
        kube::Error::Api(s)
            if s.code == 404 && s.message.contains("the server could not find the requested resource") =>
        {
            format!("{what}: the LangfuseUpgrade CRD is not installed in this cluster")
        }
        kube::Error::Api(s) if s.code == 404 => format!("{what}: not found"),
        kube::Error::Api(s) if s.code == 403 => format!("{what}: forbidden ({})", s.message),
        kube::Error::Api(s) => format!("{what}: {}", s.message),
        other => format!("{what}: cannot reach the cluster ({other})"),
    }
}

async fn get(api: &Api<LangfuseUpgrade>, ns: &str, name: &str) -> Fallible<LangfuseUpgrade> {
    api.get(name)
        .await
        .map_err(|e| api_error(e, &format!("LangfuseUpgrade {ns}/{name}")))
}

fn terminal() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

async fn run(cli: Cli) -> Fallible<ExitCode> {
    if let Command::Completion { shell } = &cli.command {
        print!("{}", complete::script::<Cli>(*shell));
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Complete { words } = &cli.command {
        return complete::answer(client(&cli).await, words).await;
    }
    if let Command::Road {
        from,
        to,
        catalog,
        accept_unknown,
    } = &cli.command
    {
        return road::road(from, to, catalog.as_deref(), *accept_unknown);
    }
    if let Command::Plan {
        file: Some(path),
        offline: true,
        ..
    } = &cli.command
    {
        return plan_offline(&read_upgrade(path, cli.namespace.as_deref())?);
    }
    let (client, ns) = client(&cli).await?;
    let api: Api<LangfuseUpgrade> = Api::namespaced(client.clone(), &ns);
    match &cli.command {
        Command::Status { name, watch, output } => status(&api, &ns, name, *watch, *output).await,
        Command::Plan {
            name: Some(name),
            helm_values: Some(values),
            chart: Some(chart),
            ..
        } => handoff::check(&client, &ns, &get(&api, &ns, name).await?, chart, values).await,
        Command::Plan {
            file, name, offline, ..
        } => {
            let upgrade = match (file, name) {
                (Some(path), _) => read_upgrade(path, Some(&ns))?,
                (None, Some(name)) => get(&api, &ns, name).await?,
                (None, None) => return Err("plan needs -f FILE or a NAME".into()),
            };
            match offline {
                true => plan_offline(&upgrade),
                false => plan_live(&client, &upgrade).await,
            }
        }
        Command::Approve { name } => {
            let patch = json!({ "metadata": { "annotations": { APPROVE_ANNOTATION: "true" } } });
            act(
                &api,
                &ns,
                name,
                patch,
                "approved: traffic shifts to v3 once v3 is Available",
            )
            .await
        }
        Command::Pause { name } => act(&api, &ns, name, json!({ "spec": { "paused": true } }), "paused").await,
        Command::Resume { name } => act(&api, &ns, name, json!({ "spec": { "paused": false } }), "resumed").await,
        Command::Abort { name, yes } => abort(&api, &ns, name, *yes).await,
        Command::History { name, output } => history(&client, &api, &ns, name, *output).await,
        Command::Road { .. } | Command::Completion { .. } | Command::Complete { .. } => {
            unreachable!("answered without a cluster above")
        }
        Command::List { all_namespaces } => list(&client, &api, *all_namespaces).await,
        Command::Handoff { name, chart } => handoff::handoff(&client, &ns, &get(&api, &ns, name).await?, chart).await,
    }
}

async fn status(api: &Api<LangfuseUpgrade>, ns: &str, name: &str, watch: bool, output: Output) -> Fallible<ExitCode> {
    let upgrade = get(api, ns, name).await?;
    let style = Style { terminal: terminal() };
    if !watch {
        print_status(&upgrade, output, style, false)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Redrawn on each watch event of the object, never on a timer.
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api.clone(), config).applied_objects().boxed();
    while let Some(event) = stream.next().await {
        let upgrade = event.map_err(|e| format!("watching {ns}/{name}: {e}"))?;
        print_status(&upgrade, output, style, true)?;
        let phase = upgrade.status.as_ref().and_then(|s| s.phase);
        if matches!(phase, Some(Phase::Completed | Phase::RolledBack)) {
            return Ok(ExitCode::SUCCESS);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(u: &LangfuseUpgrade, output: Output, style: Style, frame: bool) -> Fallible<()> {
    let view = status_view(u, Timestamp::now());
    let text = match output {
        Output::Text => status_text(&view, style),
        Output::Json => serde_json::to_string_pretty(&view).map_err(|e| e.to_string())? + "\n",
        Output::Yaml => serde_yaml::to_string(&view).map_err(|e| e.to_string())?,
    };
    let mut out = std::io::stdout().lock();
    if frame && output == Output::Text {
        // A terminal gets the screen redrawn in place; a pipe gets one frame after another.
        let head = if style.terminal {
            "\x1b[H\x1b[2J".to_string()
        } else {
            format!("--- {}\n", Timestamp::now().strftime("%H:%M:%S"))
        };
        let _ = write!(out, "{head}");
    }
    let _ = write!(out, "{text}");
    let _ = out.flush();
    Ok(())
}

/// The operator's own observation and plan, run once, read-only: its writes are not made.
async fn plan_live(client: &Client, u: &LangfuseUpgrade) -> Fallible<ExitCode> {
    let mut fresh = u.clone();
    fresh.status = None;
    let now = Timestamp::now();
    let mut n = needs(&fresh, now);
    // Touching nothing: the bucket is listed, no marker is written.
    n.s3_marker = false;
    let obs = observe::observe(client, &Live::default(), &fresh, &n, None)
        .await
        .map_err(|e| format!("reading the cluster: {e}"))?;
    let decision = plan(&fresh, &obs, now);
    let style = Style { terminal: terminal() };
    let mut shown = fresh.clone();
    shown.status = Some(decision.status.clone());
    let mut view = status_view(&shown, now);
    view.waiting_for = decision
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    view.you_may.clear();
    view.steps.clear();
    print!("{}", status_text(&view, style));
    let blocked = decision.status.checks.iter().any(|c| c.result == CheckResult::Fail)
        || matches!(decision.phase, Phase::Pending | Phase::Blocked | Phase::Failed);
    let writes = decision.actions.len();
    println!(
        "\nplan: {} (the operator's first reconcile would make {writes} write{}; none was made)",
        if blocked { "BLOCKED" } else { "would proceed" },
        if writes == 1 { "" } else { "s" }
    );
    Ok(if blocked { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn act(
    api: &Api<LangfuseUpgrade>,
    ns: &str,
    name: &str,
    patch: serde_json::Value,
    done: &str,
) -> Fallible<ExitCode> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| api_error(e, &format!("LangfuseUpgrade {ns}/{name}")))?;
    println!("{ns}/{name} {done}");
    Ok(ExitCode::SUCCESS)
}

async fn abort(api: &Api<LangfuseUpgrade>, ns: &str, name: &str, yes: bool) -> Fallible<ExitCode> {
    let u = get(api, ns, name).await?;
    let rollback = u.status.as_ref().and_then(|s| s.rollback.clone()).unwrap_or_default();
    if !rollback.possible {
        println!(
            "{ns}/{name}: a rollback is no longer possible{}; the operator will answer AbortTooLate with the manual recovery",
            rollback
                .loss_if_rolled_back
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
    } else {
        println!(
            "{ns}/{name}: abort rolls back: {}",
            rollback
                .loss_if_rolled_back
                .unwrap_or_else(|| "nothing was changed yet; nothing is hidden".into())
        );
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err("abort needs a confirmation: run it on a terminal, or pass --yes".into());
        }
        print!("abort {ns}/{name}? type yes: ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if answer.trim() != "yes" {
            println!("not aborted");
            return Ok(ExitCode::from(1));
        }
    }
    act(api, ns, name, json!({ "spec": { "abort": true } }), "abort requested").await
}

async fn history(
    client: &Client,
    api: &Api<LangfuseUpgrade>,
    ns: &str,
    name: &str,
    output: Output,
) -> Fallible<ExitCode> {
    let u = get(api, ns, name).await?;
    let events: Api<K8sEvent> = Api::namespaced(client.clone(), ns);
    let params = ListParams::default().fields(&format!("regarding.name={name},regarding.kind=LangfuseUpgrade"));
    let list = events
        .list(&params)
        .await
        .map_err(|e| api_error(e, &format!("Events of {ns}/{name}")))?;
    let lines: Vec<EventLine> = list
        .items
        .iter()
        .filter_map(|e| {
            let at = e
                .series
                .as_ref()
                .map(|s| s.last_observed_time.0)
                .or(e.event_time.as_ref().map(|t| t.0))
                .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))?;
            Some(EventLine {
                at,
                warning: e.type_.as_deref() == Some("Warning"),
                reason: e.reason.clone().unwrap_or_default(),
                note: e.note.clone().unwrap_or_default(),
                count: e.series.as_ref().map(|s| s.count).unwrap_or(1),
            })
        })
        .collect();
    let entries = timeline(&u, &lines);
    match output {
        Output::Text => print!("{}", history_text(&entries, terminal())),
        Output::Json => println!("{}", serde_json::to_string_pretty(&entries).map_err(|e| e.to_string())?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&entries).map_err(|e| e.to_string())?),
    }
    Ok(ExitCode::SUCCESS)
}
