//! The release catalog from a ConfigMap, followed while the operator runs: a changed catalog is
//! checked and put in force without a restart (every upgrade woken); an invalid one is refused
//! with the reason (an Event on the ConfigMap, an error line) and the last good one kept.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tracing::{error, info, warn};

use crate::catalog::Catalog;

/// What a ConfigMap's text does to the catalog in force.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Checked and different from the one in force: put in force.
    Install(String),
    /// The same text as the one in force.
    Unchanged,
    /// Not usable: the reason; the one in force stays.
    Refused(String),
}

/// The verdict on `text` (the ConfigMap's `key`), against the revision in force. Pure.
pub fn judge(text: Option<&str>, key: &str, in_force: &str) -> (Verdict, Option<Catalog>) {
    let Some(text) = text else {
        return (Verdict::Refused(format!("the ConfigMap has no key {key:?}")), None);
    };
    match Catalog::from_yaml(text) {
        Ok(c) if c.revision == in_force => (Verdict::Unchanged, None),
        Ok(c) => (Verdict::Install(c.revision.clone()), Some(c)),
        Err(e) => (Verdict::Refused(e), None),
    }
}

/// Follow ConfigMap `name` in `namespace` until the process ends.
pub async fn follow(client: Client, namespace: String, name: String, key: String, recorder: Recorder) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let cm = match event {
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => cm,
            Ok(watcher::Event::Delete(_)) => {
                warn!(configmap = %name, "the catalog ConfigMap was deleted; the catalog in force stays");
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                warn!(error = %e, configmap = %name, "watching the catalog ConfigMap");
                continue;
            }
        };
        let text = cm.data.as_ref().and_then(|d| d.get(&key)).map(String::as_str);
        let (verdict, catalog) = judge(text, &key, &Catalog::current().revision);
        let event = match (verdict, catalog) {
            (Verdict::Install(revision), Some(c)) => {
                info!(configmap = %name, %revision, v3 = %c.known.v3, v4 = %c.known.v4, "release catalog in force");
                let note = format!(
                    "catalog {revision} in force (newest v3 {}, v4 {}); every upgrade plans its next hop with it",
                    c.known.v3, c.known.v4
                );
                Catalog::install(c);
                Event {
                    type_: EventType::Normal,
                    reason: "CatalogLoaded".into(),
                    note: Some(note),
                    action: "Load".into(),
                    secondary: None,
                }
            }
            (Verdict::Refused(why), _) => {
                let kept = Catalog::current().revision.clone();
                error!(configmap = %name, error = %why, kept = %kept, "release catalog refused");
                Event {
                    type_: EventType::Warning,
                    reason: "CatalogRefused".into(),
                    note: Some(format!("{why}; catalog {kept} stays in force")),
                    action: "Load".into(),
                    secondary: None,
                }
            }
            _ => continue,
        };
        if let Err(e) = recorder.publish(&event, &cm.object_ref(&())).await {
            warn!(error = %e, "publishing the catalog Event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_text_is_installed_the_same_is_not_and_a_bad_one_is_refused_with_why() {
        let builtin = Catalog::builtin();
        let (v, c) = judge(Some(crate::catalog::BUILTIN), "langfuse.yaml", &builtin.revision);
        assert_eq!((v, c.is_some()), (Verdict::Unchanged, false));
        let newer = crate::catalog::BUILTIN.replace("v4: 4.16.0", "v4: 4.17.0");
        let (v, c) = judge(Some(&newer), "langfuse.yaml", &builtin.revision);
        assert!(matches!(v, Verdict::Install(ref r) if r != &builtin.revision), "{v:?}");
        assert_eq!(c.unwrap().known.v4.to_string(), "4.17.0");
        let (v, _) = judge(Some("known: nope"), "langfuse.yaml", &builtin.revision);
        assert!(
            matches!(v, Verdict::Refused(ref why) if why.starts_with("catalog:")),
            "{v:?}"
        );
        let (v, _) = judge(None, "langfuse.yaml", &builtin.revision);
        assert_eq!(v, Verdict::Refused("the ConfigMap has no key \"langfuse.yaml\"".into()));
    }
}
