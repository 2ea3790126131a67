//! A source whose image tag floats (`langfuse:3`, `:3.225`, `:latest`, a digest alone) cannot say
//! which release runs: `:3` served v4.27.0 in September 2026. On a database a v3 or v4 has
//! migrated, the road would start from a guess: preflight refuses, names the releases that can
//! be running from ClickHouse's schema height, and says how to pin the exact one.

use crate::api::{CheckId, CheckResult, PreflightCheck};
use crate::catalog::Catalog;
use crate::controller::plan::Planner;
use crate::version::{ImageVersion, image_version};

/// The line, when the source floats on a database a v3 or v4 migrated (`None` otherwise: an
/// exact tag, or a v2, whose own line warns).
pub(super) fn line(p: &Planner) -> Option<PreflightCheck> {
    let source = p.obs.source.as_ref()?;
    let image = crate::resources::deployments::views::source_container(p.spec, source)
        .ok()?
        .image
        .clone()?;
    let tag = match image_version(&image) {
        ImageVersion::Exact(_) => return None,
        ImageVersion::Floating(t) => t,
        ImageVersion::Untagged => "no tag".into(),
    };
    let height = p.obs.clickhouse.answered()?.schema?.0;
    if height <= 0 {
        return None;
    }
    let deployment = source.metadata.name.clone().unwrap_or_default();
    Some(PreflightCheck {
        name: CheckId::SourceVersion.as_str().into(),
        result: CheckResult::Fail,
        message: format!(
            "the source runs {image} ({tag}), which does not say which release runs; ClickHouse's schema is at height {height}, which {}. Pin web and worker to the release that runs (kubectl -n {} set image deployment/{deployment} ... :<release>, the same for the worker, through your chart or Git), then apply again",
            range(p.catalog, height),
            p.namespace()
        ),
    })
}

/// The releases that ship exactly this schema height, in words.
fn range(c: &Catalog, height: i64) -> String {
    let heights = &c.clickhouse_heights;
    let Some(i) = heights.iter().position(|h| i64::from(h.height) == height) else {
        return match heights.last() {
            Some(top) if height > i64::from(top.height) => format!(
                "no release the catalog knows ships (newer than {}): a release newer than the catalog",
                c.newest_of(4).unwrap_or(top.from)
            ),
            _ => "no release the catalog knows ships exactly".into(),
        };
    };
    let from = heights[i].from;
    match heights.get(i + 1) {
        Some(next) => format!("releases {from} up to, not including, {} ship", next.from),
        None => format!(
            "releases {from} and later ship (the catalog knows up to {})",
            c.newest_of(from.major).unwrap_or(from)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_height_names_the_releases_that_ship_it() {
        let c = Catalog::builtin();
        assert_eq!(range(&c, 37), "releases 3.223.0 up to, not including, 4.0.0 ship");
        assert_eq!(
            range(&c, 46),
            "releases 4.0.0 and later ship (the catalog knows up to 4.16.0)"
        );
        assert!(range(&c, 50).contains("newer than 4.16.0"), "{}", range(&c, 50));
    }
}
