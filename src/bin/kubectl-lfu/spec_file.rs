//! A LangfuseUpgrade from a file (or stdin), and what can be said of it without a cluster.

use std::process::ExitCode;

use langfuse_upgrade_operator::api::LangfuseUpgrade;
use langfuse_upgrade_operator::controller::validate;

type Fallible<T> = Result<T, String>;

pub fn read_upgrade(path: &std::path::Path, namespace: Option<&str>) -> Fallible<LangfuseUpgrade> {
    let text = match path.to_str() {
        Some("-") => std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?,
        _ => std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    };
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("{} is not YAML: {e}", path.display()))?;
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
    if kind != "LangfuseUpgrade" {
        return Err(format!(
            "{} is not a LangfuseUpgrade (kind: {})",
            path.display(),
            if kind.is_empty() { "none" } else { kind }
        ));
    }
    let mut upgrade: LangfuseUpgrade =
        serde_yaml::from_value(value).map_err(|e| format!("{} is not a valid LangfuseUpgrade: {e}", path.display()))?;
    if upgrade.metadata.namespace.is_none() {
        upgrade.metadata.namespace = Some(namespace.unwrap_or("default").to_string());
    }
    upgrade.status = None;
    Ok(upgrade)
}

pub fn plan_offline(u: &LangfuseUpgrade) -> Fallible<ExitCode> {
    if let Err(e) = validate::validate(u) {
        println!("FAIL spec: {e}");
        return Ok(ExitCode::from(1));
    }
    println!(
        "spec valid; destination {} (the road and the preflight checks need the cluster: run without --offline)",
        u.spec
            .target
            .final_version
            .clone()
            .unwrap_or_else(|| u.spec.target.version.clone())
    );
    Ok(ExitCode::SUCCESS)
}
