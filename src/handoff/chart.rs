//! Which official chart line a version belongs to, and where its values differ.

use crate::version::Version;

/// The official chart's lines whose layout the operator knows (langfuse-k8s 1.x and 2.x).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChartLine {
    /// 1.x (1.5.41, appVersion 3.224.1): Bitnami stores, `clickhouse.clusterEnabled`.
    V1,
    /// 2.x (2.0.0, appVersion 4.4.0): new bundled stores, `clickhouse.cluster.enabled`, an app
    /// Secret that generates any of salt, encryption key and NextAuth secret not given.
    V2,
}

impl ChartLine {
    /// The line of chart `version`, or why it is not one the operator can write values for.
    pub fn of(version: &str) -> Result<ChartLine, String> {
        let v = Version::parse(version)
            .ok_or_else(|| format!("--chart {version:?} is not a chart version (x.y.z, e.g. 1.5.41 or 2.0.0)"))?;
        match v.major {
            1 => Ok(ChartLine::V1),
            2 => Ok(ChartLine::V2),
            m => Err(format!(
                "chart {version}: the operator knows the layout of the official chart 1.x and 2.x, not {m}.x"
            )),
        }
    }

    /// Where the ClickHouse cluster switch lives in the values.
    pub fn cluster_key(self) -> &'static [&'static str] {
        match self {
            ChartLine::V1 => &["clickhouse", "clusterEnabled"],
            ChartLine::V2 => &["clickhouse", "cluster", "enabled"],
        }
    }
}

/// The chart's `langfuse.fullname` for a release (names unchanged since chart 0.9.0): the
/// override if set; the release itself if its name contains `langfuse`; else
/// `<release>-langfuse`; at most 63 characters.
pub fn fullname(release: &str, fullname_override: Option<&str>) -> String {
    let full = match fullname_override {
        Some(f) => f.to_string(),
        None if release.contains("langfuse") => release.to_string(),
        None => format!("{release}-langfuse"),
    };
    full.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

/// The chart's Deployment of `role` for a release.
pub fn deployment(release: &str, fullname_override: Option<&str>, role: crate::resources::labels::Role) -> String {
    format!("{}-{}", fullname(release, fullname_override), role.as_str())
}

/// The chart's web and worker selector (immutable in the chart, `app.kubernetes.io/name` from
/// `nameOverride`, which the handoff does not set).
pub fn selector(release: &str, role: crate::resources::labels::Role) -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "langfuse".to_string()),
        ("app.kubernetes.io/instance".to_string(), release.to_string()),
        ("app".to_string(), role.as_str().to_string()),
    ])
}
