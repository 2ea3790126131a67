//! `kubectl lfu handoff NAME --chart VERSION`: the official chart's values that reproduce what
//! the upgrade left running, read from the cluster (nothing is changed).

use std::process::ExitCode;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};
use langfuse_upgrade_operator::api::LangfuseUpgrade;
use langfuse_upgrade_operator::catalog::Catalog;
use langfuse_upgrade_operator::handoff::{ChartLine, values};
use langfuse_upgrade_operator::resources::deployments::deployment_name;
use langfuse_upgrade_operator::resources::deployments::views::{Role, worker_name};
use langfuse_upgrade_operator::version::Version;

/// The web and worker Deployments that run now: the source's own (a v3/v4 source), else the
/// ones the operator made beside v2.
fn names(u: &LangfuseUpgrade) -> Result<(String, String), String> {
    let spec = &u.spec;
    let in_place = u
        .status
        .as_ref()
        .and_then(|s| s.source_version.as_deref())
        .and_then(Version::parse)
        .is_some_and(|v| v.major >= 3);
    match in_place {
        true => {
            let worker = worker_name(spec).ok_or_else(|| {
                format!(
                    "the worker of {} cannot be told: set spec.source.worker",
                    spec.source.deployment
                )
            })?;
            Ok((spec.source.deployment.clone(), worker))
        }
        false => Ok((
            deployment_name(&spec.source.deployment, Role::Web),
            deployment_name(&spec.source.deployment, Role::Worker),
        )),
    }
}

/// The web and worker Deployments that run, read from the cluster.
async fn running(
    client: &Client,
    ns: &str,
    u: &LangfuseUpgrade,
) -> Result<(String, String, Deployment, Deployment), String> {
    let (web, worker) = names(u)?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let get = |name: String| {
        let deployments = deployments.clone();
        async move {
            deployments
                .get(&name)
                .await
                .map_err(|e| format!("Deployment {ns}/{name}: {e}"))
        }
    };
    let (web_d, worker_d) = (get(web.clone()).await?, get(worker.clone()).await?);
    Ok((web, worker, web_d, worker_d))
}

/// `plan NAME --helm-values FILE --chart VERSION`: each conflict of the file with what runs.
pub async fn check(
    client: &Client,
    ns: &str,
    u: &LangfuseUpgrade,
    chart: &str,
    file: &std::path::Path,
) -> Result<ExitCode, String> {
    let line = ChartLine::of(chart)?;
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let user: serde_json::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: not YAML values: {e}", file.display()))?;
    let (_, _, web_d, worker_d) = running(client, ns, u).await?;
    let ours = values(line, &web_d, &worker_d, &Catalog::builtin())
        .map_err(|b| format!("what runs cannot be handed over yet: {}", b.join("; ")))?;
    let release = langfuse_upgrade_operator::resources::deployments::views::running_version(Some(&web_d), Role::Web)
        .ok_or("the web runs no exact release")?;
    let found = langfuse_upgrade_operator::handoff::conflicts(line, &ours.values, &user, release);
    if found.is_empty() {
        println!(
            "no conflict: helm upgrade with {} (chart {chart}) keeps what runs",
            file.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for conflict in &found {
        println!("{conflict}");
    }
    eprintln!(
        "{} conflicts: helm upgrade with these values would break what runs",
        found.len()
    );
    Ok(ExitCode::from(1))
}

pub async fn handoff(client: &Client, ns: &str, u: &LangfuseUpgrade, chart: &str) -> Result<ExitCode, String> {
    let line = ChartLine::of(chart)?;
    let (web, worker, web_d, worker_d) = running(client, ns, u).await?;
    match values(line, &web_d, &worker_d, &Catalog::builtin()) {
        Ok(h) => {
            println!(
                "# Values of the official Langfuse chart {chart} that reproduce {ns}/{web} and {worker} as they run."
            );
            println!("# Secrets are references to the Secrets in use; nothing was changed.");
            for note in &h.notes {
                println!("# note: {note}");
            }
            let yaml = serde_yaml::to_string(&h.values).map_err(|e| format!("values: {e}"))?;
            print!("{yaml}");
            Ok(ExitCode::SUCCESS)
        }
        Err(blocked) => {
            eprintln!("handoff blocked: {}", blocked.join("; "));
            Ok(ExitCode::from(1))
        }
    }
}
