//! Which images v3 runs. By default they come from where v2 comes from: the official v2 chart
//! pulls `ghcr.io/langfuse/langfuse`, and a cluster allowed to pull only from there (or from a
//! mirror of it) cannot fetch Docker Hub's `langfuse/langfuse`.

use k8s_openapi::api::core::v1::Container;

use crate::api::{LangfuseUpgradeSpec, V3Images};
use crate::version::image_repository;

/// Docker Hub's names, used when v2's image says nothing better.
pub const DOCKER_HUB_WEB: &str = "langfuse/langfuse";
pub const DOCKER_HUB_WORKER: &str = "langfuse/langfuse-worker";

/// Where the repositories came from, for the preflight line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Both named in the spec.
    Spec,
    /// Derived from v2's repository (`…/langfuse` → `…/langfuse` and `…/langfuse-worker`).
    SourceRegistry,
    /// v2's repository is not named `langfuse`: Docker Hub's names are used.
    DockerHub,
}

/// The v3 repositories: the spec's where given, else v2's registry and path.
pub fn v3_images(spec: &LangfuseUpgradeSpec, v2: Option<&Container>) -> (V3Images, Origin) {
    let v2_repository = v2.and_then(|c| c.image.as_deref()).map(image_repository);
    let derived = v2_repository
        .filter(|r| *r == "langfuse" || r.ends_with("/langfuse"))
        .map(|r| (r.to_string(), format!("{r}-worker")));
    let origin = match (&spec.target.web.image, &spec.target.worker.image, &derived) {
        (Some(_), Some(_), _) => Origin::Spec,
        (_, _, Some(_)) => Origin::SourceRegistry,
        _ => Origin::DockerHub,
    };
    let (web, worker) = derived.unwrap_or_else(|| (DOCKER_HUB_WEB.into(), DOCKER_HUB_WORKER.into()));
    let images = V3Images {
        web: spec.target.web.image.clone().unwrap_or(web),
        worker: spec.target.worker.image.clone().unwrap_or(worker),
    };
    (images, origin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::spec;

    fn container(image: &str) -> Container {
        Container {
            name: "langfuse".into(),
            image: Some(image.into()),
            ..Default::default()
        }
    }

    #[test]
    fn v3_follows_v2s_registry() {
        let cases = [
            (
                "ghcr.io/langfuse/langfuse:2.95.9",
                "ghcr.io/langfuse/langfuse",
                Origin::SourceRegistry,
            ),
            (
                "mirror.corp:5000/ghcr/langfuse/langfuse:2.95.9",
                "mirror.corp:5000/ghcr/langfuse/langfuse",
                Origin::SourceRegistry,
            ),
            ("langfuse/langfuse:2.95.9", "langfuse/langfuse", Origin::SourceRegistry),
            (
                "registry.corp/team/observability:2.95.9",
                "langfuse/langfuse",
                Origin::DockerHub,
            ),
        ];
        for (v2, web, origin) in cases {
            let (images, got) = v3_images(&spec(), Some(&container(v2)));
            assert_eq!(images.web, web, "{v2}");
            assert_eq!(images.worker, format!("{web}-worker"), "{v2}");
            assert_eq!(got, origin, "{v2}");
        }
    }

    #[test]
    fn the_spec_wins() {
        let mut s = spec();
        s.target.web.image = Some("registry.corp/lf/web".into());
        let (images, origin) = v3_images(&s, Some(&container("ghcr.io/langfuse/langfuse:2.95.9")));
        assert_eq!(images.web, "registry.corp/lf/web");
        assert_eq!(images.worker, "ghcr.io/langfuse/langfuse-worker");
        assert_eq!(origin, Origin::SourceRegistry);
        s.target.worker.image = Some("registry.corp/lf/worker".into());
        assert_eq!(v3_images(&s, None).1, Origin::Spec);
    }
}
