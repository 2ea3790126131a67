//! `catalog generate`: the release catalog derived from Langfuse's own history (its release
//! tags), merged with a small hand-written overlay for what history cannot say (the required
//! stop and why, the infrastructure minimums, which rows copy which table, rows registered
//! outside Prisma, what each irreversible step means). Pure over a [`History`]; the git reads
//! are in `git.rs`.

pub mod emit;
pub mod env_ts;
pub mod git;
pub mod overlay;
pub mod sql;

use std::collections::{BTreeMap, BTreeSet};

use crate::version::Version;
pub use overlay::Overlay;

pub const CLICKHOUSE_UNCLUSTERED: &str = "packages/shared/clickhouse/migrations/unclustered";
pub const CLICKHOUSE_CLUSTERED: &str = "packages/shared/clickhouse/migrations/clustered";
pub const PRISMA_MIGRATIONS: &str = "packages/shared/prisma/migrations";
pub const WORKER_ENV: &str = "worker/src/env.ts";

/// A repository's history as the generator reads it.
pub trait History {
    /// Every tag name.
    fn tags(&self) -> Result<Vec<String>, String>;
    /// The names of the entries of `dir` at `tag` (empty when it does not exist there).
    fn list(&self, tag: &str, dir: &str) -> Result<Vec<String>, String>;
    /// The text of `path` at `tag`, if it exists there.
    fn read(&self, tag: &str, path: &str) -> Result<Option<String>, String>;
}

/// A row as derived: where it was first inserted and first deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    pub script: String,
    pub from: Version,
    pub removed_in: Option<Version>,
    pub gate: Option<String>,
}

/// What history says, before the overlay is merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Derived {
    /// The newest release of lines 2, 3 and 4.
    pub newest: BTreeMap<u64, Version>,
    /// The first release of each ClickHouse schema height, from the parallel version on.
    pub heights: Vec<(Version, u32)>,
    pub rows: Vec<Row>,
    /// Per variable (in order of first appearance): each release its default changed in.
    pub env_defaults: Vec<(String, Vec<(Version, String)>)>,
    /// What each release's Prisma migrations drop (`table x`, `view y`).
    pub drops: BTreeMap<Version, Vec<String>>,
    /// Things a person should look at (a height that differs between the clustered and
    /// unclustered migrations, a drop in a release the overlay has not reviewed).
    pub warnings: Vec<String>,
}

/// The release tags (`vX.Y.Z`, no pre-releases), oldest first, up to `until`.
fn releases(h: &dyn History, until: Option<Version>) -> Result<Vec<(Version, String)>, String> {
    let mut out: Vec<(Version, String)> = h
        .tags()?
        .into_iter()
        .filter_map(|t| {
            let v = Version::parse(t.strip_prefix('v')?)?;
            (v.to_string() == t[1..]).then_some((v, t))
        })
        .filter(|(v, _)| until.is_none_or(|u| *v <= u))
        .collect();
    out.sort();
    Ok(out)
}

/// The highest migration number among `*.up.sql` names.
fn height(names: &[String]) -> u32 {
    names
        .iter()
        .filter(|n| n.ends_with(".up.sql"))
        .filter_map(|n| n.split('_').next()?.parse::<u32>().ok())
        .max()
        .unwrap_or(0)
}

/// Read history: every release tag up to `until`.
pub fn derive(h: &dyn History, overlay: &Overlay, until: Option<Version>) -> Result<Derived, String> {
    let tags = releases(h, until)?;
    let mut d = Derived::default();
    for (v, _) in &tags {
        let newest = d.newest.entry(v.major).or_insert(*v);
        *newest = (*newest).max(*v);
    }
    heights(h, &tags, overlay.parallel()?, &mut d)?;
    rows(h, &tags, &mut d)?;
    env_defaults(h, &tags, &mut d)?;
    let reviewed = overlay.drops_reviewed_through()?;
    for (v, drops) in &d.drops {
        if *v > reviewed {
            d.warnings.push(format!(
                "{v} drops {}: classify it in the overlay's irreversible steps (or raise dropsReviewedThrough)",
                drops.join(", ")
            ));
        }
    }
    Ok(d)
}

fn heights(h: &dyn History, tags: &[(Version, String)], parallel: Version, d: &mut Derived) -> Result<(), String> {
    for (v, tag) in tags.iter().filter(|(v, _)| *v >= parallel) {
        let unclustered = height(&h.list(tag, CLICKHOUSE_UNCLUSTERED)?);
        let clustered = height(&h.list(tag, CLICKHOUSE_CLUSTERED)?);
        if clustered != unclustered {
            d.warnings.push(format!(
                "{v}: clustered migrations reach {clustered}, unclustered {unclustered}"
            ));
        }
        if d.heights.last().is_none_or(|(_, last)| *last != unclustered) {
            d.heights.push((*v, unclustered));
        }
    }
    Ok(())
}

fn rows(h: &dyn History, tags: &[(Version, String)], d: &mut Derived) -> Result<(), String> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut by_id: BTreeMap<String, String> = BTreeMap::new();
    for (v, tag) in tags {
        let mut dirs: Vec<String> = h.list(tag, PRISMA_MIGRATIONS)?;
        dirs.sort();
        for dir in dirs.into_iter().filter(|dir| seen.insert(dir.clone())) {
            let Some(text) = h.read(tag, &format!("{PRISMA_MIGRATIONS}/{dir}/migration.sql"))? else {
                continue;
            };
            let effects = sql::effects(&text);
            for row in effects.inserted {
                by_id.insert(row.id.clone(), row.name.clone());
                if d.rows.iter().all(|r| r.name != row.name) {
                    d.rows.push(Row {
                        name: row.name,
                        script: row.script,
                        from: *v,
                        removed_in: None,
                        gate: row.gate,
                    });
                }
            }
            for deleted in effects.deleted {
                let names: Vec<String> = match deleted {
                    sql::Deleted::Names(n) => n,
                    sql::Deleted::Ids(ids) => ids.iter().filter_map(|i| by_id.get(i).cloned()).collect(),
                };
                for r in d
                    .rows
                    .iter_mut()
                    .filter(|r| names.contains(&r.name) && r.removed_in.is_none())
                {
                    r.removed_in = Some(*v);
                }
            }
            if !effects.drops.is_empty() {
                d.drops.entry(*v).or_default().extend(effects.drops);
            }
        }
    }
    Ok(())
}

fn env_defaults(h: &dyn History, tags: &[(Version, String)], d: &mut Derived) -> Result<(), String> {
    for (v, tag) in tags.iter().filter(|(v, _)| v.major >= 3) {
        let Some(text) = h.read(tag, WORKER_ENV)? else { continue };
        for (name, value) in env_ts::defaults(&text) {
            let at = match d.env_defaults.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    d.env_defaults.push((name, Vec::new()));
                    d.env_defaults.len() - 1
                }
            };
            let changes = &mut d.env_defaults[at].1;
            if changes.last().is_none_or(|(_, last)| *last != value) {
                changes.push((*v, value));
            }
        }
    }
    Ok(())
}

/// The catalog text: history merged with the overlay, and what a person should look at.
pub fn generate(h: &dyn History, overlay: &Overlay, until: Option<Version>) -> Result<(String, Vec<String>), String> {
    let mut d = derive(h, overlay, until)?;
    for step in &overlay.irreversible {
        let at = Version::parse(&step.at).ok_or_else(|| format!("overlay: irreversible at {:?}", step.at))?;
        if !d.drops.contains_key(&at) {
            d.warnings.push(format!(
                "overlay: irreversible step at {at}, but no migration of {at} drops anything"
            ));
        }
    }
    for name in overlay.copies.keys() {
        if d.rows.iter().all(|r| &r.name != name) {
            return Err(format!(
                "overlay: copies names {name}, which no Prisma migration registers"
            ));
        }
    }
    let text = emit::catalog(&d, overlay)?;
    crate::catalog::Catalog::from_yaml(&text).map_err(|e| format!("the generated catalog is not valid: {e}"))?;
    Ok((text, d.warnings))
}
