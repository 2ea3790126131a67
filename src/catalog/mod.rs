//! The Langfuse release facts an upgrade needs, as data (`catalog/langfuse.yaml`), not as `if`s
//! in the code: ClickHouse schema heights, background-migration rows and their env gates,
//! required stops, irreversible steps, infrastructure minimums. Compiled in; a platform team
//! can pass an edited copy at run time. Every catalog is checked for consistency when loaded.

pub mod admission;
pub mod env_defaults;
pub mod generate;
pub mod road;

use serde::Deserialize;

use crate::version::Version;

/// The catalog compiled into this build.
pub const BUILTIN: &str = include_str!("../../catalog/langfuse.yaml");

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Catalog {
    /// Which text this is (`rev-` and a hash of the YAML): recorded with each hop it plans.
    #[serde(skip)]
    pub revision: String,
    pub known: Known,
    #[serde(rename = "minimumV2", deserialize_with = "version")]
    pub minimum_v2: Version,
    #[serde(deserialize_with = "version")]
    pub parallel_version: Version,
    pub clickhouse_heights: Vec<Height>,
    pub background_migrations: Vec<BackgroundMigration>,
    /// Rows registered outside Prisma whose scripts a later release removed (older catalogs
    /// without it: none known).
    #[serde(default)]
    pub orphan_rows: Vec<OrphanRow>,
    /// What an unset variable is, per release (older catalogs without it: no defaults known).
    #[serde(default)]
    pub env_defaults: Vec<env_defaults::EnvDefault>,
    pub required_stops: Vec<RequiredStop>,
    pub irreversible: Vec<Irreversible>,
    pub requirements: Vec<Requirement>,
}

/// The newest release of each line the catalog knows.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Known {
    #[serde(deserialize_with = "version")]
    pub v2: Version,
    #[serde(deserialize_with = "version")]
    pub v3: Version,
    #[serde(deserialize_with = "version")]
    pub v4: Version,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Height {
    #[serde(deserialize_with = "version")]
    pub from: Version,
    pub height: u32,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackgroundMigration {
    pub name: String,
    /// The worker script that runs it (`background_migrations.script`).
    pub script: String,
    #[serde(deserialize_with = "version")]
    pub from: Version,
    #[serde(default, deserialize_with = "optional_version")]
    pub removed_in: Option<Version>,
    /// The env var that must be `"true"` in the worker for it to run the row.
    #[serde(default)]
    pub gate: Option<String>,
    /// The Postgres table it copies to ClickHouse, if it is a copy.
    #[serde(default)]
    pub copies: Option<String>,
}

/// A background-migration row a hand-run script registered, whose script a later release
/// removed: unfinished, no worker from `script_removed_in` on can run it (or any row after it).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrphanRow {
    pub name: String,
    pub script: String,
    #[serde(deserialize_with = "version")]
    pub from: Version,
    #[serde(deserialize_with = "version")]
    pub script_removed_in: Version,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredStop {
    #[serde(deserialize_with = "version")]
    pub before: Version,
    #[serde(deserialize_with = "version")]
    pub stop: Version,
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Irreversible {
    #[serde(deserialize_with = "version")]
    pub at: Version,
    pub drops: String,
    /// Whether what it drops holds data (tables) rather than what only v2 reads (views): a hop
    /// across such a step waits for a backup acknowledged for it.
    #[serde(default = "yes")]
    pub data_loss: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub major: u64,
    pub clickhouse: String,
    pub postgres: String,
    #[serde(default)]
    pub redis: Option<String>,
}

/// `rev-` and twelve hex digits of the text's FNV-1a hash: stable across builds and machines.
fn revision(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("rev-{:012x}", hash >> 16)
}

fn version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
    let text = String::deserialize(d)?;
    Version::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a version like 3.29.0")))
}

fn optional_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Version>, D::Error> {
    version(d).map(Some)
}

/// The catalog in force; replaced whole when a new one is installed (a reconcile keeps the one
/// it started with).
static INSTALLED: std::sync::LazyLock<std::sync::RwLock<std::sync::Arc<Catalog>>> =
    std::sync::LazyLock::new(|| std::sync::RwLock::new(std::sync::Arc::new(Catalog::builtin())));

static CHANGES: std::sync::LazyLock<tokio::sync::watch::Sender<String>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::channel(String::new()).0);

impl Catalog {
    /// The catalog in force: the last one installed (`--catalog`, the watched ConfigMap), else
    /// the compiled-in one.
    pub fn current() -> std::sync::Arc<Catalog> {
        INSTALLED.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Put a (checked) catalog in force; the next reconcile plans with it, and every upgrade is
    /// woken (a road the old catalog refused may exist now).
    pub fn install(catalog: Catalog) {
        let revision = catalog.revision.clone();
        *INSTALLED.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(catalog);
        CHANGES.send_replace(revision);
    }

    /// The revision in force, told on each change.
    pub fn changes() -> tokio::sync::watch::Receiver<String> {
        CHANGES.subscribe()
    }

    /// The compiled-in catalog (checked by the tests, so this cannot fail in a release).
    pub fn builtin() -> Catalog {
        Catalog::from_yaml(BUILTIN).expect("the compiled-in catalog is consistent")
    }

    /// A catalog from YAML, checked; the error names the first inconsistency.
    pub fn from_yaml(text: &str) -> Result<Catalog, String> {
        let mut catalog: Catalog = serde_yaml::from_str(text).map_err(|e| format!("catalog: {e}"))?;
        catalog.check()?;
        catalog.revision = revision(text);
        Ok(catalog)
    }

    /// Ordered, heights never falling, every stop and step a release the catalog knows.
    pub fn check(&self) -> Result<(), String> {
        let k = &self.known;
        if !(k.v2.major == 2 && k.v3.major == 3 && k.v4.major == 4) {
            return Err("catalog: known.v2/v3/v4 must be releases of lines 2, 3 and 4".into());
        }
        let knows = |v: Version| self.newest_of(v.major).is_some_and(|n| v <= n);
        for pair in self.clickhouse_heights.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if !(a.from < b.from && a.height < b.height) {
                return Err(format!(
                    "catalog: clickhouseHeights must rise with the release: {} (height {}) then {} (height {})",
                    a.from, a.height, b.from, b.height
                ));
            }
        }
        if let Some(h) = self.clickhouse_heights.iter().find(|h| !knows(h.from)) {
            return Err(format!(
                "catalog: clickhouseHeights names {}, newer than the catalog knows",
                h.from
            ));
        }
        for m in &self.background_migrations {
            if let Some(t) = m
                .copies
                .as_deref()
                .filter(|t| crate::migrations::copies::CopiedTable::parse(t).is_none())
            {
                return Err(format!(
                    "catalog: background migration {} copies {t:?}, not one of traces, observations, scores, dataset_run_items",
                    m.name
                ));
            }
            if m.removed_in.is_some_and(|r| r <= m.from) {
                return Err(format!(
                    "catalog: background migration {} is removed before it is added",
                    m.name
                ));
            }
        }
        env_defaults::check(&self.env_defaults)?;
        if let Some(o) = self.orphan_rows.iter().find(|o| o.script_removed_in <= o.from) {
            return Err(format!(
                "catalog: orphan row {} loses its script before it is added",
                o.name
            ));
        }
        for s in &self.required_stops {
            if !(s.stop < s.before && knows(s.stop)) {
                return Err(format!(
                    "catalog: required stop {} before {} must be an older release the catalog knows",
                    s.stop, s.before
                ));
            }
        }
        if !(self.minimum_v2 <= k.v2 && knows(self.parallel_version) && self.parallel_version.major == 3) {
            return Err("catalog: minimumV2 and parallelVersion must be known v2 and v3 releases".into());
        }
        for major in [3, 4] {
            if self.requirement(major).is_none() {
                return Err(format!("catalog: no requirements for v{major}"));
            }
        }
        Ok(())
    }

    /// The orphan row of this name whose script `worker` no longer ships.
    pub fn orphan_for(&self, name: &str, worker: Version) -> Option<&OrphanRow> {
        self.orphan_rows
            .iter()
            .find(|o| o.name == name && worker >= o.script_removed_in)
    }

    /// The newest release of this line the catalog knows.
    pub fn newest_of(&self, major: u64) -> Option<Version> {
        match major {
            2 => Some(self.known.v2),
            3 => Some(self.known.v3),
            4 => Some(self.known.v4),
            _ => None,
        }
    }

    /// Whether the catalog can speak for `v`: a release up to the newest of its line, or a
    /// patch release of a required stop's line above it (v3 gets security fixes after the
    /// catalog was written: 3.225.5 ships 3.225.4's migrations, its facts are the stop's).
    pub fn knows(&self, v: Version) -> bool {
        self.newest_of(v.major).is_some_and(|n| v <= n) || self.patch_of_stop(v)
    }

    /// `v` is a patch above a required stop, in the stop's minor line.
    pub fn patch_of_stop(&self, v: Version) -> bool {
        self.required_stops
            .iter()
            .any(|s| s.stop.major == v.major && s.stop.minor == v.minor && v >= s.stop)
    }

    /// The stop a road takes before `s.before`: the newest release of the stop's line the
    /// catalog knows, at least the stop itself ("the newest v3", not a fixed number).
    pub fn stop_release(&self, s: &RequiredStop) -> Version {
        self.newest_of(s.stop.major)
            .filter(|n| *n > s.stop && *n < s.before)
            .unwrap_or(s.stop)
    }

    /// The ClickHouse schema height a release ships (0 before v3).
    pub fn schema_height(&self, v: Version) -> u32 {
        self.clickhouse_heights
            .iter()
            .take_while(|h| h.from <= v)
            .last()
            .map_or(0, |h| h.height)
    }

    /// The first release whose schema reaches `height`: the one that ships that migration.
    pub fn release_of_height(&self, height: u32) -> Option<Version> {
        self.clickhouse_heights
            .iter()
            .find(|h| h.height >= height)
            .map(|h| h.from)
    }

    /// The background-migration rows present in a database a release last migrated.
    pub fn rows_at(&self, v: Version) -> impl Iterator<Item = &BackgroundMigration> {
        self.background_migrations
            .iter()
            .filter(move |m| m.from <= v && m.removed_in.is_none_or(|r| v < r))
    }

    /// Whether release `v`'s Prisma migrations delete the row `name` (its script is gone).
    pub fn removed_by(&self, v: Version, name: &str) -> bool {
        self.background_migrations
            .iter()
            .any(|m| m.name == name && m.removed_in.is_some_and(|r| r <= v))
    }

    /// The irreversible steps a move from `from` to `to` (upwards) runs.
    pub fn irreversible_between(&self, from: Version, to: Version) -> impl Iterator<Item = &Irreversible> {
        self.irreversible.iter().filter(move |i| from < i.at && i.at <= to)
    }

    pub fn requirement(&self, major: u64) -> Option<&Requirement> {
        self.requirements.iter().find(|r| r.major == major)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn the_builtin_catalog_is_consistent() {
        let c = Catalog::builtin();
        assert_eq!(c.known.v3, v("3.225.4"));
        assert_eq!(c.parallel_version, v("3.29.0"));
    }

    #[test]
    fn schema_heights_follow_the_releases() {
        let c = Catalog::builtin();
        assert_eq!(c.schema_height(v("2.95.9")), 0);
        assert_eq!(c.schema_height(v("3.29.0")), 8);
        assert_eq!(c.schema_height(v("3.37.9")), 8);
        // Migration 9 ships in 3.38.0, not 3.40.0 (the correction of the facts).
        assert_eq!(c.schema_height(v("3.38.0")), 9);
        assert_eq!(c.schema_height(v("3.225.4")), 37);
        assert_eq!(c.schema_height(v("4.16.0")), 46);
    }

    #[test]
    fn rows_come_and_go_with_the_releases() {
        let c = Catalog::builtin();
        let names = |x: &str| c.rows_at(v(x)).map(|m| m.name.clone()).collect::<Vec<_>>();
        assert_eq!(names("3.29.0").len(), 4);
        assert!(names("3.95.0").contains(&"20250731_1001_migrate_dataset_run_items_pg_to_ch".to_string()));
        assert!(!names("3.98.0").contains(&"20250731_1001_migrate_dataset_run_items_pg_to_ch".to_string()));
        let newest_v3 = c.rows_at(v("3.225.4")).collect::<Vec<_>>();
        assert_eq!(newest_v3.iter().filter(|m| m.gate.is_some()).count(), 5);
        // v4.0.0 deletes the copy rows; the gated backfill rows stay.
        let v4 = names("4.16.0");
        assert!(v4.iter().all(|n| !n.contains("_from_pg_to_ch")), "{v4:?}");
        assert_eq!(v4.len(), 9);
        assert!(c.removed_by(v("4.0.0"), "20241024_1730_migrate_traces_from_pg_to_ch"));
        assert!(!c.removed_by(v("3.225.4"), "20241024_1730_migrate_traces_from_pg_to_ch"));
        assert!(!c.removed_by(v("4.16.0"), "20260701_v4_step_1_create_root_spans_from_traces"));
        assert!(!c.removed_by(v("4.16.0"), "a row the catalog does not know"));
    }

    #[test]
    fn inconsistent_catalogs_are_refused_with_the_reason() {
        let cases = [
            (
                "height falls",
                BUILTIN.replace("{ from: 3.38.0, height: 9 }", "{ from: 3.38.0, height: 7 }"),
                "must rise",
            ),
            (
                "unknown stop",
                BUILTIN.replace("stop: 3.225.4", "stop: 3.300.0"),
                "required stop",
            ),
            (
                "not a version",
                BUILTIN.replace("v4: 4.16.0", "v4: latest"),
                "not a version",
            ),
            (
                "no v4 requirements",
                BUILTIN.replace("  - { major: 4,", "  - { major: 5,"),
                "no requirements for v4",
            ),
            (
                "unknown field",
                BUILTIN.replace("minimumV2:", "minimumv2:"),
                "unknown field",
            ),
        ];
        for (what, text, words) in cases {
            let err = Catalog::from_yaml(&text).expect_err(what);
            assert!(err.contains(words), "{what}: {err}");
        }
    }
}
