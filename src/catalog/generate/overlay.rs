//! What history cannot say, written by hand (`catalog/overlay.yaml`).

use std::collections::BTreeMap;

use serde::Deserialize;

pub use crate::catalog::Requirement;
use crate::version::Version;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Overlay {
    /// The oldest v2 the road starts from.
    #[serde(rename = "minimumV2")]
    pub minimum_v2: String,
    /// The only v3 that runs beside v2 (the schema heights are listed from it on).
    pub parallel_version: String,
    /// Which Postgres table each copying row copies, by row name.
    #[serde(default)]
    pub copies: BTreeMap<String, String>,
    #[serde(default)]
    pub orphan_rows: Vec<OrphanRow>,
    pub required_stops: Vec<RequiredStop>,
    pub irreversible: Vec<Irreversible>,
    /// Drops in releases up to this one were reviewed: each one that matters is an
    /// irreversible step; a drop in a later release is reported for a person to classify.
    pub drops_reviewed_through: String,
    pub requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrphanRow {
    pub name: String,
    pub script: String,
    pub from: String,
    pub script_removed_in: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredStop {
    pub before: String,
    pub stop: String,
    pub why: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Irreversible {
    pub at: String,
    pub drops: String,
    #[serde(default)]
    pub data_loss: Option<bool>,
    /// A comment written above `dataLoss` in the catalog.
    #[serde(default)]
    pub note: Option<String>,
}

fn version(s: &str, what: &str) -> Result<Version, String> {
    Version::parse(s).ok_or_else(|| format!("overlay: {what} {s:?} is not a release (x.y.z)"))
}

impl Overlay {
    pub fn from_yaml(text: &str) -> Result<Overlay, String> {
        serde_yaml::from_str(text).map_err(|e| format!("overlay: {e}"))
    }

    pub fn parallel(&self) -> Result<Version, String> {
        version(&self.parallel_version, "parallelVersion")
    }

    pub fn drops_reviewed_through(&self) -> Result<Version, String> {
        version(&self.drops_reviewed_through, "dropsReviewedThrough")
    }
}
