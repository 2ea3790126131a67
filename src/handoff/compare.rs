//! Whether the chart's pods would run what runs: the same image, the same value (or Secret
//! reference) of every variable of the running Langfuse container, nothing set that changes the
//! app's secrets or the v4 data model, the same ServiceAccount. Each difference one line.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar};

use crate::resources::deployments::views::{Role, langfuse_container};

/// The chart's own: its pods set them from their port, the values say nothing about them.
const THE_CHARTS_OWN: [&str; 2] = ["PORT", "HOSTNAME"];

/// Variables the chart may set although the running pods do not: each changes what runs (a new
/// salt breaks API keys; a v4 flag moves the data model). Not ENCRYPTION_KEY: chart 2.x
/// generates one when none is given, and pods that ran without one encrypted nothing.
const MUST_NOT_APPEAR: [&str; 7] = [
    "SALT",
    "NEXTAUTH_SECRET",
    "CLICKHOUSE_CLUSTER_ENABLED",
    "LANGFUSE_MIGRATION_V4_WRITE_MODE",
    "LANGFUSE_MIGRATION_V4_NATIVE_OTEL_BEHAVIOUR",
    "LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN",
    "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL",
];

/// As Kubernetes reads a list with a name twice: the last one.
fn last<'e>(env: &'e [EnvVar], name: &str) -> Option<&'e EnvVar> {
    env.iter().rev().find(|e| e.name == name)
}

/// What a variable is set to, in words that never hold a secret's value: a literal is named
/// only for the variables whose value is not a secret.
fn shown(e: Option<&EnvVar>) -> String {
    let Some(e) = e else { return "unset".into() };
    if let Some(r) = e.value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref()) {
        return format!("Secret {}/{}", r.name, r.key);
    }
    if e.value_from.is_some() {
        return "a reference".into();
    }
    match may_hold_a_secret(&e.name) {
        true => "another literal value".into(),
        false => format!("{:?}", e.value.clone().unwrap_or_default()),
    }
}

/// A name whose value may be (or contain) a secret: a URL can carry a password.
fn may_hold_a_secret(name: &str) -> bool {
    [
        "KEY",
        "SECRET",
        "PASSWORD",
        "TOKEN",
        "SALT",
        "URL",
        "AUTH",
        "CONNECTION",
        "CREDENTIAL",
    ]
    .iter()
    .any(|w| name.contains(w))
}

fn container(d: &Deployment, role: Role) -> Option<&Container> {
    langfuse_container(d, role)
}

/// Every difference between `ours` and the chart's `theirs` for `role`; empty when the chart's
/// pods run what runs.
pub fn differences(role: Role, ours: &Deployment, theirs: &Deployment) -> Vec<String> {
    let who = role.as_str();
    let (Some(oc), Some(tc)) = (container(ours, role), container(theirs, role)) else {
        return vec![format!("{who}: no Langfuse container in the chart's Deployment")];
    };
    let mut found = Vec::new();
    if oc.image != tc.image {
        found.push(format!(
            "{who}: image {} where {} runs (set langfuse.image.tag and the repository)",
            tc.image.as_deref().unwrap_or("unset"),
            oc.image.as_deref().unwrap_or("unset")
        ));
    }
    let (oe, te) = (oc.env.clone().unwrap_or_default(), tc.env.clone().unwrap_or_default());
    let mut names: Vec<&str> = oe.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names.into_iter().filter(|n| !THE_CHARTS_OWN.contains(n)) {
        let (o, t) = (last(&oe, name), last(&te, name));
        if o != t {
            found.push(format!("{who}: {name} is {} where {} runs", shown(t), shown(o)));
        }
    }
    for name in MUST_NOT_APPEAR {
        if last(&oe, name).is_none() && last(&te, name).is_some() {
            found.push(format!(
                "{who}: {name} is {} where it is unset in what runs",
                shown(last(&te, name))
            ));
        }
    }
    let account = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.service_account_name.clone())
            .unwrap_or_else(|| "default".into())
    };
    if account(ours) != account(theirs) {
        found.push(format!(
            "{who}: ServiceAccount {} where {} runs (langfuse.serviceAccount.name)",
            account(theirs),
            account(ours)
        ));
    }
    found
}
