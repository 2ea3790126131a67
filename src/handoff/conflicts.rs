//! A values file a person means to `helm upgrade` with, checked against what runs: each
//! difference that would break the installation (official-chart-v3-v4-layout.md §8.2), one line
//! with the value that fixes it. Pure: the generated values, the person's, and the chart line in.

use serde_json::Value;

use super::ChartLine;
use crate::resources::v4_env;
use crate::version::Version;

/// The release a chart line runs when no tag is given (its appVersion).
fn app_version(line: ChartLine) -> &'static str {
    match line {
        ChartLine::V1 => "3.224.1",
        ChartLine::V2 => "4.4.0",
    }
}

fn at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.get(*k)).filter(|x| !x.is_null())
}

fn dotted(path: &[&str]) -> String {
    path.join(".")
}

/// Every conflict of `user` with `ours` (the values that reproduce what runs at `release`).
pub fn conflicts(line: ChartLine, ours: &Value, user: &Value, release: Version) -> Vec<String> {
    let mut out = Vec::new();
    secrets(line, ours, user, &mut out);
    for store in ["postgresql", "clickhouse", "redis", "s3"] {
        if at(user, &[store, "deploy"]) != Some(&Value::Bool(false)) {
            out.push(format!(
                "{store}.deploy is not false: the chart deploys a new, empty bundled {store} and points Langfuse at it; set {store}.deploy: false with the settings in use (kubectl lfu handoff prints them)"
            ));
        }
    }
    let tag = at(user, &["langfuse", "image", "tag"]).and_then(Value::as_str);
    match tag.and_then(Version::parse) {
        Some(t) if t == release => {}
        Some(t) => out.push(format!(
            "langfuse.image.tag is {t}, but {release} runs: {}; set langfuse.image.tag: {release:?}",
            if t < release { "a downgrade the database refuses" } else { "a release change belongs to an upgrade, not a handoff" }
        )),
        None => out.push(format!(
            "langfuse.image.tag is {}: the chart then runs its appVersion {}, not the {release} that runs; set langfuse.image.tag: {:?}",
            tag.map_or("unset".to_string(), |t| format!("{t:?}")),
            app_version(line),
            release.to_string()
        )),
    }
    let cluster = line.cluster_key();
    if at(user, cluster) != at(ours, cluster) {
        out.push(format!(
            "{} is {}, but CLICKHOUSE_CLUSTER_ENABLED runs {}; set {}: {}",
            dotted(cluster),
            at(user, cluster).map_or("unset (the chart's default true)".to_string(), |v| v.to_string()),
            at(ours, cluster).map_or("unset".to_string(), |v| v.to_string()),
            dotted(cluster),
            at(ours, cluster).map_or("false".to_string(), |v| v.to_string())
        ));
    }
    if release.major >= 4 {
        flags(ours, user, &mut out);
    }
    out
}

/// Salt, NextAuth secret and encryption key: the running Secret references, never new ones.
fn secrets(line: ChartLine, ours: &Value, user: &Value, out: &mut Vec<String>) {
    for (path, what) in [
        (&["langfuse", "salt"][..], "a new SALT makes every API key invalid"),
        (
            &["langfuse", "nextauth", "secret"][..],
            "a new NEXTAUTH_SECRET signs everyone out",
        ),
        (
            &["langfuse", "encryptionKey"][..],
            "a new ENCRYPTION_KEY cannot read the encrypted columns",
        ),
    ] {
        let (want, have) = (at(ours, path), at(user, path));
        let reference = |v: Option<&Value>| v.and_then(|v| v.get("secretKeyRef")).cloned();
        if want.is_none() || reference(have) == reference(want) {
            continue;
        }
        let given_in_clear = have
            .and_then(|h| h.get("value"))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        let unset = match line {
            ChartLine::V1 if path[1] != "encryptionKey" => "unset: chart 1.x refuses to render",
            _ => "unset: the chart generates a new one",
        };
        let state = match (have, given_in_clear) {
            (_, true) => "given in clear (it cannot be checked against the running one)",
            (None, _) => unset,
            _ => "a different Secret",
        };
        let fix = reference(want).map(|r| r.to_string()).unwrap_or_default();
        out.push(format!(
            "{} is {state}; {what}: set {}.secretKeyRef: {fix}",
            dotted(path),
            dotted(path)
        ));
    }
}

/// The four v4 flags, as running: the chart sets none, so the image's defaults would cut a
/// `legacy` installation over to `events_only`, which cannot be undone.
fn flags(ours: &Value, user: &Value, out: &mut Vec<String>) {
    let env = |v: &Value| -> Vec<(String, Option<String>)> {
        at(v, &["langfuse", "additionalEnv"])
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some((
                    e.get("name")?.as_str()?.to_string(),
                    e.get("value").and_then(Value::as_str).map(String::from),
                ))
            })
            .collect()
    };
    let (want, have) = (env(ours), env(user));
    for (name, _) in v4_env::KEEP_V3_BEHAVIOUR {
        let running = want.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.clone());
        let given = have.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        if given.as_ref() == Some(&running) {
            continue;
        }
        out.push(format!(
            "{name} in langfuse.additionalEnv is {}, but {} runs: the chart's pods would change the data model (possibly for good); add {{name: {name}, value: {:?}}}",
            given.flatten().map_or("unset (the image's default)".to_string(), |v| format!("{v:?}")),
            running.clone().unwrap_or_default(),
            running.unwrap_or_default()
        ));
    }
}
