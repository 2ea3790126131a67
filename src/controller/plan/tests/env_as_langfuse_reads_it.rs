//! Gates and v4 flags read as Langfuse reads them: from the Langfuse container (the official
//! chart lists extra containers first), an unset variable at the running release's default.

use super::*;
use crate::resources::deployments::views::Role;
use k8s_openapi::api::core::v1::{Container, EnvVar};

const BACKFILL: &str = "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL";

fn var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// A worker Deployment with a sidecar first (as the chart renders `extraContainers`).
fn worker(release: &str, env: Vec<EnvVar>) -> Deployment {
    let mut d = v2_deployment(1);
    d.metadata.name = Some("langfuse-worker".into());
    let pod = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    pod.containers = vec![
        Container {
            name: "cloud-sql-proxy".into(),
            image: Some("gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.14.0".into()),
            env: Some(vec![var(BACKFILL, "true")]),
            ..Default::default()
        },
        Container {
            name: "langfuse-worker".into(),
            image: Some(format!("langfuse/langfuse-worker:{release}")),
            env: Some(env),
            ..Default::default()
        },
    ];
    d
}

fn gate_open(worker: Deployment) -> bool {
    let u = upgrade(spec(), Default::default());
    let obs = Observed {
        worker: Some(worker),
        ..untouched()
    };
    let p = Planner::new(&u, &obs, crate::testing::catalog(), t(0));
    migrate::open_gates(&p).is_open(BACKFILL)
}

#[test]
fn a_sidecar_first_is_not_read_for_the_gates() {
    // The sidecar says "true"; the v3 worker sets nothing and v3 defaults the gate closed.
    assert!(!gate_open(worker("3.225.4", vec![])));
    assert_eq!(
        crate::resources::deployments::views::langfuse_container(&worker("3.225.4", vec![]), Role::Worker)
            .map(|c| c.name.as_str()),
        Some("langfuse-worker")
    );
}

#[test]
fn an_unset_gate_takes_the_running_release_default() {
    assert!(!gate_open(worker("3.225.4", vec![])), "closed by default on v3");
    assert!(gate_open(worker("4.16.0", vec![])), "open by default on v4");
    assert!(
        !gate_open(worker("4.16.0", vec![var(BACKFILL, "false")])),
        "set: as set"
    );
    assert!(gate_open(worker("3.225.4", vec![var(BACKFILL, "true")])), "set: as set");
    // From a Secret: not known here, counted closed (nothing waits on what may not run).
    let from_secret = EnvVar {
        name: BACKFILL.into(),
        value: None,
        value_from: Some(Default::default()),
    };
    assert!(!gate_open(worker("4.16.0", vec![from_secret])));
}
