//! The official chart's values from the Deployments that run: every store external with the
//! settings in use, the app secrets by reference (never copied in clear), the exact image, the
//! v4 flags as running (explicit, whatever the image's defaults), replicas, resources, the
//! ServiceAccount and sidecars as running. What cannot be carried over blocks, each saying why.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use serde_json::{Value, json};

use super::ChartLine;
use crate::catalog::Catalog;
use crate::resources::deployments::views::{Role, langfuse_container, running_version};
use crate::resources::v4_env;
use crate::version::image_repository;

/// The values, and what a person should know before using them.
#[derive(Debug, PartialEq)]
pub struct Handoff {
    pub values: Value,
    pub notes: Vec<String>,
}

/// Set by the chart from its own values: never passed through `additionalEnv`.
const STRUCTURED: [&str; 8] = [
    "SALT",
    "ENCRYPTION_KEY",
    "NEXTAUTH_SECRET",
    "NEXTAUTH_URL",
    "HOSTNAME",
    "PORT",
    "LANGFUSE_AUTO_POSTGRES_MIGRATION_DISABLED",
    "LANGFUSE_AUTO_CLICKHOUSE_MIGRATION_DISABLED",
];

/// Settings the chart renders from values of its own, which refuse the same variable in
/// `additionalEnv` (its "only one of" checks): the running value goes to the key instead.
const FEATURES: [(&str, &[&str], Kind); 4] = [
    (
        "TELEMETRY_ENABLED",
        &["langfuse", "features", "telemetryEnabled"],
        Kind::Bool,
    ),
    (
        "AUTH_DISABLE_SIGNUP",
        &["langfuse", "features", "signUpDisabled"],
        Kind::Bool,
    ),
    (
        "ENABLE_EXPERIMENTAL_FEATURES",
        &["langfuse", "features", "experimentalFeaturesEnabled"],
        Kind::Bool,
    ),
    ("NODE_ENV", &["langfuse", "nodeEnv"], Kind::Text),
];

/// Keys whose chart default would clash with the variable passed through `additionalEnv`:
/// emptied, so the running value is the only one.
const CLEARED: [(&str, &[&str]); 3] = [
    ("CLICKHOUSE_USER", &["clickhouse", "auth", "username"]),
    ("DATABASE_USERNAME", &["postgresql", "auth", "username"]),
    ("DATABASE_NAME", &["postgresql", "auth", "database"]),
];

#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Text,
}

/// The buckets by kind: the chart wants them as values; a kind the pods do not use is off.
const S3_KINDS: [(&str, &str); 3] = [
    ("LANGFUSE_S3_EVENT_UPLOAD_", "eventUpload"),
    ("LANGFUSE_S3_BATCH_EXPORT_", "batchExport"),
    ("LANGFUSE_S3_MEDIA_UPLOAD_", "mediaUpload"),
];

/// Postgres by parts (no DATABASE_URL, chart 0.8.0's own style): the chart renders these from
/// `postgresql.*` and needs the password by reference there.
const POSTGRES_BY_PARTS: [&str; 4] = ["DATABASE_HOST", "DATABASE_PORT", "DATABASE_PASSWORD", "DATABASE_ARGS"];

/// Redis by host (the chart builds its connection string; its validation wants `redis.host`).
const REDIS_BY_HOST: [&str; 4] = ["REDIS_HOST", "REDIS_PORT", "REDIS_AUTH", "REDIS_TLS_ENABLED"];

/// The values of chart line `line` that reproduce `web` and `worker`, or what blocks them.
pub fn values(
    line: ChartLine,
    web: &Deployment,
    worker: &Deployment,
    catalog: &Catalog,
) -> Result<Handoff, Vec<String>> {
    let mut blocked = Vec::new();
    let mut notes = Vec::new();
    let (Some(wc), Some(kc)) = (
        langfuse_container(web, Role::Web),
        langfuse_container(worker, Role::Worker),
    ) else {
        return Err(vec![
            "no Langfuse container found in the web or worker Deployment".into(),
        ]);
    };
    let release = match (
        running_version(Some(web), Role::Web),
        running_version(Some(worker), Role::Worker),
    ) {
        (Some(a), Some(b)) if a == b => a,
        (a, b) => {
            return Err(vec![format!(
                "web and worker must run one exact release to hand over (web {}, worker {})",
                a.map_or("a floating tag".into(), |v| v.to_string()),
                b.map_or("a floating tag".into(), |v| v.to_string())
            )]);
        }
    };
    let env = wc.env.clone().unwrap_or_default();
    let mut v = json!({
        "langfuse": { "image": { "tag": release.to_string() } },
        "postgresql": { "deploy": false },
        "clickhouse": { "deploy": false },
        "redis": { "deploy": false },
        "s3": { "deploy": false },
    });
    for (name, path) in [
        ("SALT", &["langfuse", "salt"][..]),
        ("NEXTAUTH_SECRET", &["langfuse", "nextauth", "secret"][..]),
        ("ENCRYPTION_KEY", &["langfuse", "encryptionKey"][..]),
    ] {
        match by_reference(&env, name) {
            Ok(Some(r)) => set(&mut v, path, json!({ "secretKeyRef": r })),
            Ok(None) if name == "ENCRYPTION_KEY" => {
                if line == ChartLine::V2 {
                    notes.push("the running pods have no ENCRYPTION_KEY; chart 2.x generates one when none is given (nothing was encrypted with a key before, so nothing becomes unreadable)".into());
                }
            }
            Ok(None) => blocked.push(format!(
                "{name} is not set in the running web container; the chart needs the value Langfuse runs with"
            )),
            Err(why) => blocked.push(why),
        }
    }
    if let Some(url) = literal(&env, "NEXTAUTH_URL") {
        set(&mut v, &["langfuse", "nextauth", "url"], json!(url));
    }
    for (name, store) in [
        ("LANGFUSE_AUTO_POSTGRES_MIGRATION_DISABLED", "postgresql"),
        ("LANGFUSE_AUTO_CLICKHOUSE_MIGRATION_DISABLED", "clickhouse"),
    ] {
        let disabled = literal(&env, name).is_some_and(|x| x == "true");
        set(&mut v, &[store, "migration", "autoMigrate"], json!(!disabled));
    }
    if let Some(port) = literal(&env, "PORT").filter(|p| p != "3000") {
        match port.parse::<u16>() {
            Ok(p) => set(&mut v, &["langfuse", "web", "service", "port"], json!(p)),
            Err(_) => blocked.push(format!("PORT {port:?} is not a port number")),
        }
    }
    let redis_by_host = !env.iter().any(|e| e.name == "REDIS_CONNECTION_STRING");
    if redis_by_host {
        redis(&env, &mut v, &mut blocked);
    }
    for (prefix, kind) in S3_KINDS {
        s3(&env, prefix, kind, &mut v, &mut blocked);
    }
    // Both chart lines render a media-upload bucket whatever `enabled` says (2.x a default
    // `langfuse` bucket): one the pods lack goes to the event bucket, said in a note.
    let no_media = literal(&env, "LANGFUSE_S3_MEDIA_UPLOAD_BUCKET").is_none();
    if no_media {
        if let Some(bucket) = literal(&env, "LANGFUSE_S3_EVENT_UPLOAD_BUCKET") {
            set(&mut v, &["s3", "mediaUpload", "bucket"], json!(bucket));
            set(&mut v, &["s3", "mediaUpload", "prefix"], json!("media/"));
            notes.push(format!("the chart always configures media uploads and the running pods have none: the values send them to {bucket} under media/; change s3.mediaUpload if they belong elsewhere"));
        }
    }
    for (name, path, kind) in FEATURES {
        if let Some(x) = literal(&env, name) {
            let value = match kind {
                Kind::Bool => json!(x == "true"),
                Kind::Text => json!(x),
            };
            set(&mut v, path, value);
        }
    }
    for (name, path) in CLEARED {
        if env.iter().any(|e| e.name == name) {
            set(&mut v, path, json!(""));
        }
    }
    let postgres_by_parts = !env.iter().any(|e| e.name == "DATABASE_URL");
    if postgres_by_parts {
        postgres(&env, &mut v, &mut blocked);
    }
    // ClickHouse rides in additionalEnv: with CLICKHOUSE_MIGRATION_URL there the chart renders
    // none of its own ClickHouse env (CLICKHOUSE_CLUSTER_ENABLED included), so all of it is ours.
    if literal(&env, "CLICKHOUSE_CLUSTER_ENABLED").is_some_and(|c| c == "true") {
        set(&mut v, line.cluster_key(), json!(true));
    } else {
        set(&mut v, line.cluster_key(), json!(false));
    }
    let mut additional: Vec<EnvVar> = Vec::new();
    for e in &env {
        let structured = STRUCTURED.contains(&e.name.as_str())
            || S3_KINDS.iter().any(|(prefix, _)| e.name.starts_with(prefix))
            || FEATURES.iter().any(|(n, ..)| *n == e.name && e.value.is_some())
            || (redis_by_host && REDIS_BY_HOST.contains(&e.name.as_str()))
            || (postgres_by_parts && postgres_part(e));
        if structured {
            continue;
        }
        if let Some(why) = credentials_in_clear(e) {
            blocked.push(why);
            continue;
        }
        additional.push(e.clone());
    }
    // The v4 flags as they run: explicit, never left to the chart's image defaults.
    if release.major >= 4 {
        for (name, _) in v4_env::KEEP_V3_BEHAVIOUR {
            if additional.iter().any(|e| e.name == name) {
                continue;
            }
            match catalog.env_default(name, release) {
                Some(default) => additional.push(EnvVar {
                    name: name.into(),
                    value: Some(default.into()),
                    value_from: None,
                }),
                None => blocked.push(format!("{name} is unset and the catalog has no default for {release}")),
            }
        }
    }
    set(&mut v, &["langfuse", "additionalEnv"], json!(additional));
    pod(&mut v, "web", web, wc);
    pod(&mut v, "worker", worker, kc);
    if worker_env_differs(wc, kc) {
        notes.push("web and worker env differ beyond PORT and HOSTNAME; the values follow web (the chart gives both the same env)".into());
    }
    match blocked.is_empty() {
        true => Ok(Handoff { values: v, notes }),
        false => Err(blocked),
    }
}

/// A secret's reference: `Ok(None)` when unset; an error for a literal (the chart would need
/// it in clear).
fn by_reference(env: &[EnvVar], name: &str) -> Result<Option<Value>, String> {
    let Some(e) = env.iter().find(|e| e.name == name) else {
        return Ok(None);
    };
    match e.value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref()) {
        Some(r) => Ok(Some(json!({ "name": r.name, "key": r.key }))),
        None => Err(format!(
            "{name} is written in the pod as a literal value; the operator never copies a secret in clear: put it in a Secret (kubectl create secret generic ... --from-literal), reference it from both Deployments, and run the handoff again"
        )),
    }
}

fn literal(env: &[EnvVar], name: &str) -> Option<String> {
    env.iter().find(|e| e.name == name)?.value.clone()
}

/// A URL with a password written in the pod (`DATABASE_URL=postgres://u:pw@…`).
fn credentials_in_clear(e: &EnvVar) -> Option<String> {
    let value = e.value.as_deref()?;
    let (_, rest) = value.split_once("://")?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.contains(':').then(|| {
        format!(
            "{} holds a password in a literal URL; the operator never copies it in clear: move it to a Secret, reference it from both Deployments, and run the handoff again",
            e.name
        )
    })
}

/// A Postgres setting the chart renders from `postgresql.*` (a username or database name from a
/// Secret rides in additionalEnv: the chart takes only literals for them).
fn postgres_part(e: &EnvVar) -> bool {
    POSTGRES_BY_PARTS.contains(&e.name.as_str())
        || (matches!(e.name.as_str(), "DATABASE_USERNAME" | "DATABASE_NAME") && e.value.is_some())
}

fn postgres(env: &[EnvVar], v: &mut Value, blocked: &mut Vec<String>) {
    match literal(env, "DATABASE_HOST") {
        Some(host) => set(v, &["postgresql", "host"], json!(host)),
        None => blocked.push(
            "neither DATABASE_URL nor a literal DATABASE_HOST is set in the running web container; the chart needs one"
                .into(),
        ),
    }
    for (name, path) in [
        ("DATABASE_PORT", &["postgresql", "port"][..]),
        ("DATABASE_USERNAME", &["postgresql", "auth", "username"][..]),
        ("DATABASE_NAME", &["postgresql", "auth", "database"][..]),
        ("DATABASE_ARGS", &["postgresql", "args"][..]),
    ] {
        if let Some(x) = literal(env, name) {
            set(v, path, json!(x));
        }
    }
    match by_reference(env, "DATABASE_PASSWORD") {
        Ok(Some(r)) => {
            set(v, &["postgresql", "auth", "existingSecret"], r["name"].clone());
            set(
                v,
                &["postgresql", "auth", "secretKeys", "userPasswordKey"],
                r["key"].clone(),
            );
        }
        Ok(None) => blocked
            .push("DATABASE_PASSWORD is not set in the running web container; the chart needs it by reference".into()),
        Err(why) => blocked.push(why),
    }
}

fn redis(env: &[EnvVar], v: &mut Value, blocked: &mut Vec<String>) {
    if let Some(host) = literal(env, "REDIS_HOST") {
        set(v, &["redis", "host"], json!(host));
    }
    if let Some(port) = literal(env, "REDIS_PORT").and_then(|p| p.parse::<u16>().ok()) {
        set(v, &["redis", "port"], json!(port));
    }
    match by_reference(env, "REDIS_AUTH") {
        Ok(Some(r)) => {
            set(v, &["redis", "auth", "existingSecret"], r["name"].clone());
            set(v, &["redis", "auth", "existingSecretPasswordKey"], r["key"].clone());
        }
        Ok(None) => {}
        Err(why) => blocked.push(why),
    }
    if literal(env, "REDIS_TLS_ENABLED").is_some_and(|t| t == "true") {
        set(v, &["redis", "tls", "enabled"], json!(true));
    }
}

fn s3(env: &[EnvVar], prefix: &str, kind: &str, v: &mut Value, blocked: &mut Vec<String>) {
    if literal(env, &format!("{prefix}BUCKET")).is_none() {
        match kind {
            "eventUpload" => blocked.push(format!(
                "{prefix}BUCKET is not set in the running web container; Langfuse v3 needs its event bucket"
            )),
            _ => set(v, &["s3", kind, "enabled"], json!(false)),
        }
        return;
    }
    for (suffix, key) in [
        ("BUCKET", "bucket"),
        ("REGION", "region"),
        ("ENDPOINT", "endpoint"),
        ("PREFIX", "prefix"),
    ] {
        if let Some(x) = literal(env, &format!("{prefix}{suffix}")) {
            set(v, &["s3", kind, key], json!(x));
        }
    }
    if let Some(x) = literal(env, &format!("{prefix}FORCE_PATH_STYLE")) {
        set(v, &["s3", kind, "forcePathStyle"], json!(x == "true"));
        // The chart falls back to the global switch (default true) when a kind's is false.
        if kind == "eventUpload" {
            set(v, &["s3", "forcePathStyle"], json!(x == "true"));
        }
    }
    for (suffix, key) in [
        ("ACCESS_KEY_ID", "accessKeyId"),
        ("SECRET_ACCESS_KEY", "secretAccessKey"),
    ] {
        match by_reference(env, &format!("{prefix}{suffix}")) {
            Ok(Some(r)) => set(v, &["s3", kind, key], json!({ "secretKeyRef": r })),
            Ok(None) => {}
            Err(why) => blocked.push(why),
        }
    }
}

/// Image repository, replicas, resources, ServiceAccount and sidecars of one component.
fn pod(v: &mut Value, component: &str, d: &Deployment, c: &Container) {
    let root = ["langfuse", component];
    if let Some(image) = c.image.as_deref() {
        set(
            v,
            &[root[0], root[1], "image", "repository"],
            json!(image_repository(image)),
        );
    }
    if let Some(replicas) = d.spec.as_ref().and_then(|s| s.replicas) {
        set(v, &[root[0], root[1], "replicas"], json!(replicas));
    }
    if let Some(resources) = &c.resources {
        set(v, &[root[0], root[1], "resources"], json!(resources));
    }
    let spec: Option<&PodSpec> = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    if let Some(sa) = spec.and_then(|p| p.service_account_name.clone()) {
        set(v, &["langfuse", "serviceAccount", "create"], json!(false));
        set(v, &["langfuse", "serviceAccount", "name"], json!(sa));
    }
    let sidecars: Vec<&Container> = spec
        .map(|p| p.containers.iter().filter(|x| x.name != c.name).collect())
        .unwrap_or_default();
    if !sidecars.is_empty() {
        set(v, &[root[0], root[1], "pod", "extraContainers"], json!(sidecars));
    }
}

fn worker_env_differs(web: &Container, worker: &Container) -> bool {
    let keep = |c: &Container| -> Vec<EnvVar> {
        let mut env: Vec<EnvVar> = c
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.name != "PORT" && e.name != "HOSTNAME")
            .collect();
        env.sort_by(|a, b| a.name.cmp(&b.name));
        env
    };
    keep(web) != keep(worker)
}

/// `root[path] = value`, making the objects on the way.
fn set(root: &mut Value, path: &[&str], value: Value) {
    let mut at = root;
    for key in &path[..path.len() - 1] {
        if !at.get(*key).is_some_and(Value::is_object) {
            at[*key] = json!({});
        }
        at = &mut at[*key];
    }
    at[path[path.len() - 1]] = value;
}
