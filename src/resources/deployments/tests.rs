use super::views::source_container;
use super::*;
use crate::resources::labels::selector_matches;
use crate::testing::*;
use k8s_openapi::api::core::v1::EnvVar;

fn build(spec: &LangfuseUpgradeSpec, migrations: bool, owner: bool) -> (Deployment, Deployment) {
    crate::testing::v3_pair(spec, "3.29.0", migrations, owner)
}

fn pod(d: &Deployment) -> &PodSpec {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn env<'a>(d: &'a Deployment, name: &str) -> Vec<&'a EnvVar> {
    pod(d).containers[0]
        .env
        .iter()
        .flatten()
        .filter(|e| e.name == name)
        .collect()
}

fn value(d: &Deployment, name: &str) -> Option<String> {
    let vars = env(d, name);
    assert!(vars.len() <= 1, "{name} set {} times", vars.len());
    vars.first().and_then(|e| e.value.clone())
}

#[test]
fn web_probes_keep_the_base_path_v2_is_served_under() {
    let (web, _) = build(&spec(), false, true);
    let probe_path = |d: &Deployment| {
        let c = &pod(d).containers[0];
        [&c.readiness_probe, &c.liveness_probe, &c.startup_probe]
            .map(|p| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone().unwrap())
    };
    assert_eq!(
        probe_path(&web),
        ["/api/public/ready", "/api/public/health", "/api/public/health"]
    );
    let mut v2 = v2_deployment(2)
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .remove(0);
    for (probe, path) in [
        (&mut v2.readiness_probe, "/langfuse/api/public/ready"),
        (&mut v2.liveness_probe, "/langfuse/api/public/health"),
    ] {
        *probe = Some(http_probe(path, IntOrString::String("http".into()), 10, 3));
    }
    assert_eq!(health_base_path(&v2), "/langfuse");
    v2.readiness_probe = None;
    v2.liveness_probe = None;
    assert_eq!(health_base_path(&v2), "");
}

#[test]
fn v2_env_is_inherited_as_written_and_secrets_stay_references() {
    let (web, worker) = build(&spec(), false, true);
    for d in [&web, &worker] {
        let db = env(d, "DATABASE_URL")[0];
        assert!(db.value.is_none());
        let r = db.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("prod-langfuse-db", "url"));
        assert_eq!(
            value(d, "NEXTAUTH_URL").as_deref(),
            Some("https://langfuse.example.com")
        );
        assert!(env(d, "SALT")[0].value_from.is_some());
        // Every credential the operator adds is a reference too (invariant 7).
        for name in [
            "CLICKHOUSE_USER",
            "CLICKHOUSE_PASSWORD",
            "REDIS_CONNECTION_STRING",
            "LANGFUSE_S3_EVENT_UPLOAD_ACCESS_KEY_ID",
            "LANGFUSE_S3_EVENT_UPLOAD_SECRET_ACCESS_KEY",
        ] {
            let var = env(d, name);
            assert_eq!(var.len(), 1, "{name}");
            assert!(
                var[0].value.is_none() && var[0].value_from.as_ref().unwrap().secret_key_ref.is_some(),
                "{name}"
            );
        }
        assert_eq!(value(d, "CLICKHOUSE_URL").as_deref(), Some("http://clickhouse:8123"));
        assert_eq!(
            value(d, "CLICKHOUSE_MIGRATION_URL").as_deref(),
            Some("clickhouse://clickhouse:9000")
        );
        assert_eq!(value(d, "CLICKHOUSE_CLUSTER_ENABLED").as_deref(), Some("false"));
        assert_eq!(
            value(d, "LANGFUSE_S3_EVENT_UPLOAD_BUCKET").as_deref(),
            Some("langfuse-events")
        );
    }
}

#[test]
fn migrations_stay_off_until_enabled_even_if_v2_had_them_on() {
    let (web, worker) = build(&spec(), false, true);
    assert_eq!(value(&web, MIGRATIONS_ENV).as_deref(), Some("false"));
    assert_eq!(value(&worker, MIGRATIONS_ENV).as_deref(), Some("false"));
    assert!(!migrations_enabled(&worker));
    let (web, worker) = build(&spec(), true, true);
    assert!(migrations_enabled(&web) && migrations_enabled(&worker));
}

#[test]
fn ports_probes_and_hostname() {
    let (web, worker) = build(&spec(), false, true);
    let c = &pod(&web).containers[0];
    assert_eq!(c.name, "langfuse-web");
    assert_eq!(value(&web, "HOSTNAME").as_deref(), Some("0.0.0.0"));
    assert_eq!(value(&web, "PORT").as_deref(), Some("3000"));
    let port = &c.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("http"), 3000),
        "the Service's named targetPort resolves"
    );
    let path = |p: &Option<Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone().unwrap();
    assert_eq!(path(&c.readiness_probe), "/api/public/ready");
    assert_eq!(path(&c.liveness_probe), "/api/public/health");
    let w = &pod(&worker).containers[0];
    assert_eq!(w.name, "langfuse-worker");
    assert_eq!(
        value(&worker, "PORT").as_deref(),
        Some("3030"),
        "v2's PORT=3000 must not reach the worker"
    );
    assert_eq!(path(&w.liveness_probe), "/api/health");
    assert_eq!(
        w.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap().port,
        IntOrString::Int(3030)
    );
}

#[test]
fn scheduling_and_identity_come_from_v2() {
    let (web, worker) = build(&spec(), false, true);
    for d in [&web, &worker] {
        let p = pod(d);
        assert_eq!(p.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
        assert_eq!(p.service_account_name.as_deref(), Some("prod-langfuse"));
        assert_eq!(
            p.node_selector.as_ref().unwrap().get("pool").map(String::as_str),
            Some("apps")
        );
        assert_eq!(p.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("dedicated"));
    }
    assert_eq!(
        pod(&web).containers[0].image.as_deref(),
        Some("ghcr.io/langfuse/langfuse:3.29.0")
    );
    assert_eq!(
        pod(&worker).containers[0].image.as_deref(),
        Some("ghcr.io/langfuse/langfuse-worker:3.29.0")
    );
    assert_eq!(web.metadata.name.as_deref(), Some("prod-langfuse-web"));
    assert_eq!(worker.metadata.name.as_deref(), Some("prod-langfuse-worker"));
}

#[test]
fn v3_pods_are_invisible_to_the_v2_selector_and_selectors_are_consistent() {
    let (web, worker) = build(&spec(), false, true);
    for d in [&web, &worker] {
        let s = d.spec.as_ref().unwrap();
        let labels = s.template.metadata.as_ref().unwrap().labels.clone().unwrap();
        assert!(!selector_matches(&chart_selector(), &labels));
        assert!(
            selector_matches(s.selector.match_labels.as_ref().unwrap(), &labels),
            "Deployment selector must match its pods"
        );
    }
    let web_selector = web.spec.as_ref().unwrap().selector.match_labels.clone().unwrap();
    let worker_labels = worker
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert!(!selector_matches(&web_selector, &worker_labels));
}

#[test]
fn extra_env_wins_over_inherited_env() {
    let mut s = spec();
    s.target.extra_env = vec![
        EnvVar {
            name: "NEXTAUTH_URL".into(),
            value: Some("https://new".into()),
            value_from: None,
        },
        EnvVar {
            name: "NODE_OPTIONS".into(),
            value: Some("--max-old-space-size=3072".into()),
            value_from: None,
        },
    ];
    let (web, worker) = build(&s, false, true);
    assert_eq!(value(&web, "NEXTAUTH_URL").as_deref(), Some("https://new"));
    assert_eq!(
        value(&worker, "NODE_OPTIONS").as_deref(),
        Some("--max-old-space-size=3072")
    );
}

#[test]
fn hash_is_stable_and_tracks_what_matters() {
    let (a, _) = build(&spec(), false, true);
    let (b, _) = build(&spec(), false, true);
    assert_eq!(applied_hash(&a), applied_hash(&b));
    let (c, _) = build(&spec(), true, true);
    assert_ne!(
        applied_hash(&a),
        applied_hash(&c),
        "enabling migrations must be written"
    );
    let (d, _) = build(&spec(), false, false);
    assert_ne!(
        applied_hash(&a),
        applied_hash(&d),
        "releasing the owner must be written"
    );
    assert!(d.metadata.owner_references.is_none());
    assert_eq!(a.metadata.owner_references.as_ref().unwrap()[0].uid, UID);
}

/// The official chart's web behind a sidecar injected first: its Langfuse container is the one
/// running Langfuse's image; a pod where none does is refused with what to set.
#[test]
fn the_langfuse_container_is_found_behind_a_sidecar() {
    use k8s_openapi::api::core::v1::Container;
    let spec = crate::testing::spec();
    let mut d = crate::testing::v2_deployment(1);
    let pod = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    pod.containers[0].name = "langfuse-web".into();
    pod.containers[0].image = Some("ghcr.io/langfuse/langfuse:3.225.4".into());
    let sidecar = Container {
        name: "istio-proxy".into(),
        image: Some("docker.io/istio/proxyv2:1.22.3".into()),
        ..Default::default()
    };
    pod.containers.insert(0, sidecar.clone());
    assert_eq!(source_container(&spec, &d).unwrap().name, "langfuse-web");
    let pod = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    pod.containers[1].image = Some("registry.local/mirror/other:1".into());
    let err = source_container(&spec, &d).unwrap_err();
    assert!(err.contains("spec.source.container"), "{err}");
}
