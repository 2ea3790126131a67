//! The committed CRD matches the Rust types, and its schema rules reject what they should.

use kube::CustomResourceExt;
use kube::core::cel::validate_cel_schema;
use langfuse_upgrade_operator::api::{LangfuseUpgrade, crd_yaml};
use serde_json::{Value, json};

const COMMITTED: &str = include_str!("../crds/langfuseupgrades.yaml");
const IN_CHART: &str = include_str!("../charts/langfuse-upgrade-operator/crds/langfuseupgrades.yaml");

#[test]
fn committed_crd_matches_the_types() {
    assert!(
        COMMITTED == crd_yaml(),
        "crds/langfuseupgrades.yaml is stale: run `cargo run -- crd > crds/langfuseupgrades.yaml`"
    );
}

#[test]
fn the_reference_page_matches_the_types() {
    let committed = include_str!("../docs/reference.md");
    assert!(
        committed == langfuse_upgrade_operator::api::reference::reference_markdown(),
        "docs/reference.md is stale: run `make crd`"
    );
}

#[test]
fn the_chart_ships_the_same_crd() {
    assert!(COMMITTED == IN_CHART, "the chart's CRD is stale: run `make crd`");
}

#[test]
fn crd_has_status_printer_columns_and_short_name() {
    let crd = serde_json::to_value(LangfuseUpgrade::crd()).unwrap();
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["lfu"]));
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Phase", "Source", "Target", "Migrations", "Age"]);
    let conditions = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    assert!(
        !crd["spec"]["group"].as_str().unwrap().contains("langfuse.com"),
        "not Langfuse's domain"
    );
}

#[test]
fn no_secret_value_is_a_plain_field() {
    // Every field whose name speaks of a credential must be a Secret reference.
    fn walk(path: &str, schema: &Value, out: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                let lower = name.to_lowercase();
                let sensitive = ["password", "secret", "token", "accesskey", "auth", "connectionstring"]
                    .iter()
                    .any(|w| lower.contains(w));
                if sensitive && !lower.ends_with("secretref") && sub.get("type") == Some(&json!("string")) {
                    out.push(format!("{path}.{name}"));
                }
                walk(&format!("{path}.{name}"), sub, out);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(path, items, out);
        }
    }
    let crd = serde_json::to_value(LangfuseUpgrade::crd()).unwrap();
    let mut plain = Vec::new();
    walk(
        "",
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"],
        &mut plain,
    );
    assert!(plain.is_empty(), "plain secret fields: {plain:?}");
}

fn valid() -> Value {
    json!({
        "apiVersion": "upgrades.lfu-operator.dev/v1alpha1",
        "kind": "LangfuseUpgrade",
        "metadata": { "name": "to-v3", "namespace": "langfuse" },
        "spec": {
            "source": { "deployment": "prod-langfuse", "service": "prod-langfuse" },
            "target": { "version": "3.29.0" },
            "clickhouse": {
                "url": "http://clickhouse:8123",
                "migrationUrl": "clickhouse://clickhouse:9000",
                "userSecretRef": { "name": "ch", "key": "user" },
                "passwordSecretRef": { "name": "ch", "key": "password" }
            },
            "redis": { "connectionStringSecretRef": { "name": "redis", "key": "url" } },
            "s3": { "bucket": "events" }
        }
    })
}

fn check(value: &Value, old: Option<&Value>) -> Result<(), String> {
    validate_cel_schema::<LangfuseUpgrade>(value, old).map_err(|e| format!("{e:?}"))
}

#[test]
fn cel_accepts_a_valid_spec() {
    check(&valid(), None).unwrap();
}

#[test]
fn cel_rejects_contradictory_settings() {
    let cases = [
        ("/spec/redis/host", json!("redis"), "exactly one of redis"),
        (
            "/spec/s3/accessKeyIdSecretRef",
            json!({ "name": "s3", "key": "id" }),
            "set both s3",
        ),
        (
            "/spec/target/extraEnv",
            json!([{ "name": "LANGFUSE_ENABLE_BACKGROUND_MIGRATIONS", "value": "true" }]),
            "managed by the operator",
        ),
    ];
    for (pointer, value, message) in cases {
        let mut v = valid();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        v.pointer_mut(parent).unwrap()[key] = value;
        let err = check(&v, None).expect_err(pointer);
        assert!(err.contains(message), "{pointer}: {err}");
    }
}

#[test]
fn target_version_is_frozen_once_provisioning_started() {
    let mut old = valid();
    let mut new = valid();
    new["spec"]["target"]["version"] = json!("3.30.0");
    // Before provisioning: free to change.
    check(&new, Some(&old)).unwrap();
    old["status"] = json!({ "provisioningStartedAt": "2026-11-21T10:00:00Z" });
    new["status"] = old["status"].clone();
    let err = check(&new, Some(&old)).expect_err("version change after provisioning");
    assert!(err.contains("cannot change once provisioning has started"), "{err}");
    // Other fields stay editable (e.g. approval, pause).
    let mut approve = old.clone();
    approve["spec"]["paused"] = json!(true);
    check(&approve, Some(&old)).unwrap();
}

/// The chart's admission policy is the one the release catalog generates.
#[test]
fn the_chart_admission_policy_is_generated_from_the_catalog() {
    use langfuse_upgrade_operator::catalog::{Catalog, admission};
    let committed = include_str!("../charts/langfuse-upgrade-operator/templates/admission-policy.yaml");
    assert!(
        committed == admission::policy(&Catalog::builtin(), &admission::Scope::Helm),
        "charts/langfuse-upgrade-operator/templates/admission-policy.yaml is stale: run `make crd`"
    );
}
