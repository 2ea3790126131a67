//! `kubectl lfu list [-A]`: every upgrade of a namespace or the cluster, one line each.

use std::process::ExitCode;

use jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client};
use langfuse_upgrade_operator::api::LangfuseUpgrade;

pub async fn list(client: &Client, api: &Api<LangfuseUpgrade>, all_namespaces: bool) -> Result<ExitCode, String> {
    let scope: Api<LangfuseUpgrade> = match all_namespaces {
        true => Api::all(client.clone()),
        false => api.clone(),
    };
    let items = scope
        .list(&ListParams::default())
        .await
        .map_err(|e| crate::api_error(e, "LangfuseUpgrades"))?
        .items;
    print!(
        "{}",
        langfuse_upgrade_operator::cli::list::list_text(&items, Timestamp::now(), all_namespaces)
    );
    Ok(ExitCode::SUCCESS)
}
