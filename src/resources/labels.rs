//! Pod labels of v3 and selector matching (invariant 1: the v2 Service never selects a v3 pod
//! before the operator switches it).

use std::collections::BTreeMap;

pub type Labels = BTreeMap<String, String>;

pub const UPGRADE_LABEL: &str = "upgrades.lfu-operator.dev/upgrade";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";
/// The official v3 chart selects on `app: web|worker`.
pub const APP_LABEL: &str = "app";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Web,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Web => "web",
            Role::Worker => "worker",
        }
    }
}

/// A Service selector matches a pod when every key is present with the same value. An empty
/// selector on a Service selects nothing (its endpoints are managed by hand).
pub fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The immutable selector of a v3 Deployment, and the Service selector after the shift. It
/// carries the operator's own label, which no v2 pod has.
pub fn v3_selector(upgrade: &str, role: Role) -> Labels {
    Labels::from([
        (UPGRADE_LABEL.to_string(), upgrade.to_string()),
        (COMPONENT_LABEL.to_string(), role.as_str().to_string()),
        (APP_LABEL.to_string(), role.as_str().to_string()),
    ])
}

/// Pod labels of a v3 Deployment: its selector plus the chart's name label, unless the v2
/// selector would then match. The v2 Deployment's selector is immutable, so the result is stable
/// for the life of the upgrade; `app.kubernetes.io/instance` is never copied, because the
/// chart-era v2 selector is exactly name + instance.
pub fn v3_pod_labels(upgrade: &str, role: Role, source_selector: &Labels) -> Labels {
    let mut labels = v3_selector(upgrade, role);
    labels.insert(NAME_LABEL.to_string(), "langfuse".to_string());
    if selector_matches(source_selector, &labels) {
        labels.remove(NAME_LABEL);
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The v2-era chart (<= 0.8.0): selector and pod labels are name + instance, nothing else.
    fn chart_v2_selector() -> Labels {
        labels(&[(NAME_LABEL, "langfuse"), (INSTANCE_LABEL, "prod")])
    }

    #[test]
    fn chart_era_v2_selector_matches_v2_pods_only() {
        let v2_pod = chart_v2_selector();
        assert!(selector_matches(&chart_v2_selector(), &v2_pod));
        for role in [Role::Web, Role::Worker] {
            let v3 = v3_pod_labels("upgrade-1", role, &chart_v2_selector());
            assert!(
                !selector_matches(&chart_v2_selector(), &v3),
                "{role:?} pods would join the v2 Service"
            );
        }
    }

    #[test]
    fn official_v3_chart_labels_would_be_selected_which_is_why_we_differ() {
        // What the v3 chart puts on its pods: name + instance + app. The v2 selector matches them,
        // so copying the chart's labels verbatim would send v2 traffic to the worker.
        let chart_v3_worker = labels(&[
            (NAME_LABEL, "langfuse"),
            (INSTANCE_LABEL, "prod"),
            (APP_LABEL, "worker"),
        ]);
        assert!(selector_matches(&chart_v2_selector(), &chart_v3_worker));
    }

    #[test]
    fn switched_selector_picks_v3_web_and_nothing_else() {
        let after = v3_selector("upgrade-1", Role::Web);
        let web = v3_pod_labels("upgrade-1", Role::Web, &chart_v2_selector());
        let worker = v3_pod_labels("upgrade-1", Role::Worker, &chart_v2_selector());
        assert!(selector_matches(&after, &web));
        assert!(!selector_matches(&after, &worker));
        assert!(
            !selector_matches(&after, &chart_v2_selector()),
            "v2 pods must leave the Service"
        );
        // Another upgrade's web pods in the same namespace are not picked either.
        assert!(!selector_matches(
            &after,
            &v3_pod_labels("other", Role::Web, &chart_v2_selector())
        ));
    }

    #[test]
    fn name_only_selector_drops_the_name_label() {
        let narrow = labels(&[(NAME_LABEL, "langfuse")]);
        let web = v3_pod_labels("u", Role::Web, &narrow);
        assert!(!web.contains_key(NAME_LABEL));
        assert!(!selector_matches(&narrow, &web));
        // With the chart selector the name label is kept, for dashboards and the chart.
        assert_eq!(
            v3_pod_labels("u", Role::Web, &chart_v2_selector())
                .get(NAME_LABEL)
                .map(String::as_str),
            Some("langfuse")
        );
    }

    #[test]
    fn empty_selector_selects_nothing() {
        assert!(!selector_matches(&Labels::new(), &chart_v2_selector()));
    }
}
