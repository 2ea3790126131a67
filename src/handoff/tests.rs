//! The values reproduce the operator's own Deployments: stores external, secrets by reference,
//! the exact release, the v4 flags as running; what cannot be carried over blocks, without the
//! secret in the words.

use super::*;
use crate::testing::{spec, v3_pair};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::EnvVar;
use serde_json::{Value, json};

fn at(release: &str) -> (Deployment, Deployment) {
    let (mut web, mut worker) = v3_pair(&spec(), release, true, false);
    for d in [&mut web, &mut worker] {
        let c = &mut d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0];
        let image = c.image.clone().unwrap();
        let repo = image.rsplit_once(':').unwrap().0.to_string();
        c.image = Some(format!("{repo}:{release}"));
    }
    (web, worker)
}

fn env(values: &Value) -> Vec<(String, Value)> {
    values["langfuse"]["additionalEnv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

fn set_env(d: &mut Deployment, name: &str, value: &str) {
    let c = &mut d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0];
    let env = c.env.get_or_insert_with(Vec::new);
    env.retain(|e| e.name != name);
    env.push(EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    });
}

#[test]
fn the_values_reproduce_what_runs_with_every_store_external_and_secrets_by_reference() {
    let (web, worker) = at("3.225.4");
    let h = values(ChartLine::V1, &web, &worker, crate::testing::catalog()).unwrap();
    let v = &h.values;
    for store in ["postgresql", "clickhouse", "redis", "s3"] {
        assert_eq!(v[store]["deploy"], json!(false), "{store}");
    }
    assert_eq!(v["langfuse"]["image"]["tag"], json!("3.225.4"));
    assert_eq!(
        v["langfuse"]["salt"]["secretKeyRef"],
        json!({ "name": "prod-langfuse-salt", "key": "salt" })
    );
    assert_eq!(
        v["langfuse"]["nextauth"]["secret"]["secretKeyRef"]["name"],
        json!("prod-langfuse-nextauth")
    );
    assert_eq!(v["langfuse"]["nextauth"]["url"], json!("https://langfuse.example.com"));
    assert_eq!(
        v["langfuse"]["serviceAccount"],
        json!({ "create": false, "name": "prod-langfuse" })
    );
    assert_eq!(v["clickhouse"]["clusterEnabled"], json!(false));
    assert_eq!(v["s3"]["eventUpload"]["bucket"], json!("langfuse-events"));
    assert_eq!(
        v["s3"]["eventUpload"]["accessKeyId"]["secretKeyRef"]["key"],
        json!("access-key-id")
    );
    let env = env(v);
    let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in [
        "DATABASE_URL",
        "CLICKHOUSE_MIGRATION_URL",
        "CLICKHOUSE_CLUSTER_ENABLED",
        "REDIS_CONNECTION_STRING",
    ] {
        assert!(names.contains(&wanted), "{wanted}: {names:?}");
    }
    for structured in ["SALT", "NEXTAUTH_SECRET", "LANGFUSE_S3_EVENT_UPLOAD_BUCKET", "PORT"] {
        assert!(!names.contains(&structured), "{structured} twice: {names:?}");
    }
    let db = &env.iter().find(|(n, _)| n == "DATABASE_URL").unwrap().1;
    assert_eq!(db["valueFrom"]["secretKeyRef"]["name"], json!("prod-langfuse-db"));
    // 2.x: the cluster switch has its own key.
    let h2 = values(ChartLine::V2, &web, &worker, crate::testing::catalog()).unwrap();
    assert_eq!(h2.values["clickhouse"]["cluster"]["enabled"], json!(false));
}

/// A v4 that runs on its image's defaults is handed over with them written out: the chart's
/// pods never fall back to other defaults, and never cut a `legacy` installation over.
#[test]
fn the_v4_flags_are_written_as_they_run() {
    let (mut web, mut worker) = at("4.16.0");
    // Only the write mode set; the other three at the image's defaults.
    for d in [&mut web, &mut worker] {
        let c = &mut d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0];
        let flags = crate::resources::v4_env::KEEP_V3_BEHAVIOUR.map(|(n, _)| n);
        c.env.as_mut().unwrap().retain(|e| !flags.contains(&e.name.as_str()));
        set_env(d, crate::resources::v4_env::WRITE_MODE, "legacy");
    }
    let h = values(ChartLine::V2, &web, &worker, crate::testing::catalog()).unwrap();
    let env = env(&h.values);
    let value = |n: &str| env.iter().find(|(x, _)| x == n).map(|(_, e)| e["value"].clone());
    assert_eq!(value(crate::resources::v4_env::WRITE_MODE), Some(json!("legacy")));
    let catalog = crate::testing::catalog();
    let v4 = crate::version::Version::parse("4.16.0").unwrap();
    for (name, _) in crate::resources::v4_env::KEEP_V3_BEHAVIOUR.iter().skip(1) {
        assert_eq!(value(name), catalog.env_default(name, v4).map(|d| json!(d)), "{name}");
    }
}

/// A secret written as a literal is never copied: the handoff blocks and says how to fix it,
/// without the value.
#[test]
fn a_secret_in_clear_blocks_without_being_printed() {
    let (mut web, worker) = at("3.225.4");
    set_env(&mut web, "SALT", "s3cr3t-salt-value");
    set_env(&mut web, "DATABASE_URL", "postgres://langfuse:hunter2@db:5432/langfuse");
    let blocked = values(ChartLine::V1, &web, &worker, crate::testing::catalog()).unwrap_err();
    let text = blocked.join("\n");
    assert!(text.contains("SALT is written in the pod as a literal"), "{text}");
    assert!(text.contains("DATABASE_URL holds a password"), "{text}");
    assert!(!text.contains("s3cr3t") && !text.contains("hunter2"), "{text}");
    // Web and worker on different releases: nothing to hand over yet.
    let (web, _) = at("3.225.4");
    let (_, worker) = at("3.224.1");
    let blocked = values(ChartLine::V1, &web, &worker, crate::testing::catalog()).unwrap_err();
    assert!(blocked[0].contains("one exact release"), "{blocked:?}");
    assert!(ChartLine::of("3.0.0").unwrap_err().contains("1.x and 2.x"));
}

/// The operator's own web and worker at 4.16.0 with SALT from a Secret: the fixture the
/// committed values and renders of `tests/handoff` were made from.
fn handed_over() -> (Deployment, Deployment) {
    let (mut web, mut worker) = at("4.16.0");
    for d in [&mut web, &mut worker] {
        let c = &mut d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0];
        let env = c.env.as_mut().unwrap();
        env.retain(|e| e.name != "SALT");
        env.push(EnvVar {
            name: "SALT".into(),
            value: None,
            value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                secret_key_ref: Some(k8s_openapi::api::core::v1::SecretKeySelector {
                    name: "langfuse-app".into(),
                    key: "salt".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
        });
    }
    (web, worker)
}

/// The values are exactly the ones the official chart was rendered from (tests/handoff), and
/// each render runs what the operator's Deployments run: every variable with the same value or
/// Secret reference, the same image, replicas and ServiceAccount.
#[test]
fn the_values_match_the_committed_renders() {
    let (web, worker) = handed_over();
    for (line, values_text, render_text) in [
        (
            ChartLine::V1,
            include_str!("../../tests/handoff/values-1.5.41.yaml"),
            include_str!("../../tests/handoff/render-1.5.41.yaml"),
        ),
        (
            ChartLine::V2,
            include_str!("../../tests/handoff/values-2.0.0.yaml"),
            include_str!("../../tests/handoff/render-2.0.0.yaml"),
        ),
    ] {
        let h = values(line, &web, &worker, crate::testing::catalog()).unwrap();
        let committed: Value = serde_yaml::from_str(values_text).unwrap();
        assert_eq!(h.values, committed, "{line:?}: regenerate tests/handoff (README.md)");
        let rendered: Vec<Deployment> = serde_yaml::Deserializer::from_str(render_text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        for (running, suffix) in [(&web, "-web"), (&worker, "-worker")] {
            let chart = rendered
                .iter()
                .find(|d| d.metadata.name.as_deref().is_some_and(|n| n.ends_with(suffix)))
                .unwrap();
            let pod = |d: &Deployment| d.spec.as_ref().unwrap().template.spec.clone().unwrap();
            let (ours, theirs) = (pod(running), pod(chart));
            let c = |p: &k8s_openapi::api::core::v1::PodSpec| {
                p.containers
                    .iter()
                    .find(|c| c.name.starts_with("langfuse-"))
                    .cloned()
                    .unwrap()
            };
            let (ours_c, theirs_c) = (c(&ours), c(&theirs));
            assert_eq!(ours_c.image, theirs_c.image, "{line:?}{suffix}");
            assert_eq!(ours.service_account_name, theirs.service_account_name);
            assert_eq!(
                running.spec.as_ref().unwrap().replicas,
                chart.spec.as_ref().unwrap().replicas
            );
            // As Kubernetes reads a list with a name twice: the last one.
            let last = |env: &[EnvVar], name: &str| env.iter().rev().find(|e| e.name == name).cloned();
            let theirs_env = theirs_c.env.clone().unwrap_or_default();
            for e in ours_c
                .env
                .iter()
                .flatten()
                .filter(|e| e.name != "PORT" && e.name != "HOSTNAME")
            {
                assert_eq!(
                    last(&theirs_env, &e.name).as_ref(),
                    Some(e),
                    "{line:?}{suffix}: {}",
                    e.name
                );
            }
        }
    }
}

/// A naive values file (no salt, the default stores, no tag, no v4 flags) over a v4 that runs
/// `legacy`: each conflict named with its fix; the generated values have none.
#[test]
fn a_naive_values_file_is_caught_conflict_by_conflict() {
    let (web, worker) = handed_over();
    let ours = values(ChartLine::V2, &web, &worker, crate::testing::catalog())
        .unwrap()
        .values;
    let release = crate::version::Version::parse("4.16.0").unwrap();
    assert_eq!(conflicts(ChartLine::V2, &ours, &ours, release), Vec::<String>::new());
    let naive = json!({ "langfuse": { "nextauth": { "url": "https://langfuse.example.com" } } });
    let found = conflicts(ChartLine::V2, &ours, &naive, release);
    let text = found.join("\n");
    for words in [
        "langfuse.salt is unset: the chart generates a new one; a new SALT makes every API key invalid",
        "postgresql.deploy is not false",
        "clickhouse.deploy is not false",
        "redis.deploy is not false",
        "s3.deploy is not false",
        "langfuse.image.tag is unset: the chart then runs its appVersion 4.4.0, not the 4.16.0 that runs",
        "clickhouse.cluster.enabled is unset",
        "LANGFUSE_MIGRATION_V4_WRITE_MODE in langfuse.additionalEnv is unset (the image's default), but legacy runs",
    ] {
        assert!(text.contains(words), "{words}: {text}");
    }
    // One line each.
    assert!(found.iter().all(|l| !l.contains('\n')));
    // A tag below what runs, a salt given in clear.
    let mut lower = ours.clone();
    lower["langfuse"]["image"]["tag"] = json!("4.4.0");
    lower["langfuse"]["salt"] = json!({ "value": "abc" });
    let text = conflicts(ChartLine::V2, &ours, &lower, release).join("\n");
    assert!(text.contains("a downgrade the database refuses"), "{text}");
    assert!(text.contains("langfuse.salt is given in clear"), "{text}");
}

/// Chart 0.8.0's own database style (no DATABASE_URL): the parts go to `postgresql.*`, the
/// password by reference; a password in clear blocks.
#[test]
fn postgres_by_parts_goes_to_the_charts_own_keys() {
    let (mut web, mut worker) = at("3.225.4");
    for d in [&mut web, &mut worker] {
        let c = &mut d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0];
        c.env.as_mut().unwrap().retain(|e| e.name != "DATABASE_URL");
        set_env(d, "DATABASE_HOST", "prod-postgresql");
        set_env(d, "DATABASE_NAME", "postgres_langfuse");
        set_env(d, "DATABASE_USERNAME", "langfuse");
        let c = &mut d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0];
        c.env.as_mut().unwrap().push(EnvVar {
            name: "DATABASE_PASSWORD".into(),
            value: None,
            value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                secret_key_ref: Some(k8s_openapi::api::core::v1::SecretKeySelector {
                    name: "prod-postgresql".into(),
                    key: "password".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
        });
    }
    let v = values(ChartLine::V1, &web, &worker, crate::testing::catalog())
        .unwrap()
        .values;
    assert_eq!(v["postgresql"]["host"], json!("prod-postgresql"));
    assert_eq!(v["postgresql"]["auth"]["username"], json!("langfuse"));
    assert_eq!(v["postgresql"]["auth"]["database"], json!("postgres_langfuse"));
    assert_eq!(v["postgresql"]["auth"]["existingSecret"], json!("prod-postgresql"));
    assert_eq!(
        v["postgresql"]["auth"]["secretKeys"]["userPasswordKey"],
        json!("password")
    );
    let names: Vec<String> = env(&v).into_iter().map(|(n, _)| n).collect();
    assert!(!names.iter().any(|n| n.starts_with("DATABASE_")), "{names:?}");
    set_env(&mut web, "DATABASE_PASSWORD", "hunter2-in-clear");
    let blocked = values(ChartLine::V1, &web, &worker, crate::testing::catalog()).unwrap_err();
    assert!(blocked.iter().any(|b| b.contains("DATABASE_PASSWORD")), "{blocked:?}");
    assert!(!blocked.join(" ").contains("hunter2"), "a secret in the words");
}
