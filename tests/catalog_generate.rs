//! `catalog generate` over a small git repository built from `tests/catalog/history.yaml` in
//! Langfuse's layout: it reproduces the committed catalog byte for byte, ignores pre-release and
//! foreign tags, and keeps up with a release the catalog does not know yet (its rows, defaults
//! and heights taken, a drop it cannot classify reported). `make catalog` regenerates the
//! catalog (from a Langfuse checkout with LANGFUSE_CHECKOUT, else from this history).

use std::path::{Path, PathBuf};
use std::process::Command;

use langfuse_upgrade_operator::catalog::generate::{
    CLICKHOUSE_CLUSTERED, CLICKHOUSE_UNCLUSTERED, Overlay, PRISMA_MIGRATIONS, WORKER_ENV, generate, git::Git,
};
use serde::Deserialize;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Release {
    tag: String,
    #[serde(default)]
    clickhouse: Option<u32>,
    #[serde(default)]
    insert: Vec<Row>,
    #[serde(default)]
    delete_ids: Vec<String>,
    #[serde(default)]
    delete_names: Vec<String>,
    #[serde(default)]
    drops: Vec<String>,
    /// In the order the worker's env schema lists them (the catalog keeps that order).
    #[serde(default)]
    env: serde_yaml::Mapping,
    /// Only for `ignoredTags`: the release it is tagged after.
    #[serde(default)]
    after: Option<String>,
}

#[derive(Deserialize, Clone)]
struct Row {
    id: String,
    name: String,
    script: String,
    #[serde(default)]
    gate: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct History {
    releases: Vec<Release>,
    #[serde(default)]
    ignored_tags: Vec<Release>,
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "fixture")
        .env("GIT_AUTHOR_EMAIL", "fixture@example.com")
        .env("GIT_COMMITTER_NAME", "fixture")
        .env("GIT_COMMITTER_EMAIL", "fixture@example.com")
        .env("GIT_AUTHOR_DATE", "2026-12-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-12-01T00:00:00Z")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(dir: &Path, path: &str, text: &str) {
    let p = dir.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// An INSERT in one of the two shapes Langfuse's migrations use (multi-line with a comment and
/// a jsonb cast; one line with quoted identifiers).
fn insert_sql(row: &Row, multi_line: bool) -> String {
    let args = match &row.gate {
        Some(g) => format!("{{\"envGate\": \"{g}\"}}"),
        None => "{}".into(),
    };
    match multi_line {
        true => format!(
            "-- registers {}; the worker runs it\nINSERT INTO background_migrations (id, name, script, args)\nVALUES (\n  '{}',\n  '{}',\n  '{}',\n  '{args}'::jsonb\n);\n",
            row.name, row.id, row.name, row.script
        ),
        false => format!(
            "INSERT INTO \"background_migrations\" (\"id\", \"name\", \"script\", \"args\") VALUES ('{}', '{}', '{}', '{args}');\n",
            row.id, row.name, row.script
        ),
    }
}

/// The worker's env schema with `env`'s defaults, in both key shapes, among variables the
/// catalog does not follow.
fn env_ts(env: &[(String, String)]) -> String {
    let mut t = String::from(
        "import { z } from \"zod\";\n\nconst EnvSchema = z.object({\n  NODE_ENV: z.enum([\"development\", \"production\"]).default(\"production\"),\n",
    );
    for (i, (name, value)) in env.iter().enumerate() {
        match i % 2 {
            0 => t.push_str(&format!(
                "  {name}: z\n    .enum([\"a\", \"b\"])\n    .default(\"{value}\"),\n"
            )),
            _ => t.push_str(&format!(
                "  // {name} explained\n  {name}: z.enum([\"a\", \"b\"]).default(\"{value}\"),\n"
            )),
        }
    }
    t.push_str("  LANGFUSE_MIGRATION_V4_SOME_CUTOFF: z.iso.date().optional(),\n});\n");
    t
}

fn apply(dir: &Path, r: &Release, index: usize, env: &mut Vec<(String, String)>) {
    if let Some(h) = r.clickhouse {
        for n in 1..=h {
            for root in [CLICKHOUSE_UNCLUSTERED, CLICKHOUSE_CLUSTERED] {
                write(dir, &format!("{root}/{n:04}_step_{n}.up.sql"), "SELECT 1;\n");
                write(dir, &format!("{root}/{n:04}_step_{n}.down.sql"), "SELECT 1;\n");
            }
        }
    }
    let migration = |k: usize, slug: &str| format!("{PRISMA_MIGRATIONS}/2024{index:04}{k:02}0000_{slug}/migration.sql");
    for (k, row) in r.insert.iter().enumerate() {
        write(
            dir,
            &migration(k, "add_background_migration"),
            &insert_sql(row, (index + k) % 2 == 0),
        );
    }
    let ids: String = r
        .delete_ids
        .iter()
        .map(|id| format!("DELETE FROM background_migrations WHERE id = '{id}';\n"))
        .collect();
    if !ids.is_empty() {
        write(dir, &migration(50, "remove_background_migration"), &ids);
    }
    let drops: String = r
        .drops
        .iter()
        .map(|d| {
            let (kind, name) = d.split_once(' ').unwrap();
            format!("DROP {} IF EXISTS \"{name}\";\n", kind.to_uppercase())
        })
        .collect();
    if !r.delete_names.is_empty() {
        let names: Vec<String> = r.delete_names.iter().map(|n| format!("  '{n}'")).collect();
        let sql = format!(
            "{drops}\nDELETE FROM \"background_migrations\"\nWHERE \"name\" IN (\n{}\n);\n",
            names.join(",\n")
        );
        write(dir, &migration(60, "drop_legacy_tables"), &sql);
    } else if !r.drops.is_empty() {
        write(dir, &migration(60, "drop_views"), &drops);
    }
    // Something else each release: a migration the catalog does not care about.
    write(dir, &migration(90, "unrelated"), "CREATE TABLE \"x\" (\"a\" TEXT);\n");
    for (k, v) in &r.env {
        let (k, v) = (k.as_str().unwrap().to_string(), v.as_str().unwrap().to_string());
        match env.iter_mut().find(|(n, _)| *n == k) {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        }
    }
    if !env.is_empty() {
        write(dir, WORKER_ENV, &env_ts(env));
    }
}

/// A git repository with `history`'s releases as tags, in a fresh directory.
fn build(history: &History, label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lfu-catalog-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "--quiet", "--initial-branch=main"]);
    write(&dir, "README.md", "a Langfuse-shaped history\n");
    let mut env = Vec::new();
    for (i, r) in history.releases.iter().enumerate() {
        apply(&dir, r, i, &mut env);
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "--quiet", "--allow-empty", "-m", &r.tag]);
        git(&dir, &["tag", &r.tag]);
        for ignored in history
            .ignored_tags
            .iter()
            .filter(|t| t.after.as_deref() == Some(&r.tag))
        {
            apply(&dir, ignored, 9000 + i, &mut env);
            git(&dir, &["add", "-A"]);
            git(&dir, &["commit", "--quiet", "--allow-empty", "-m", &ignored.tag]);
            git(&dir, &["tag", &ignored.tag]);
        }
    }
    dir
}

fn history() -> History {
    let text = std::fs::read_to_string(format!("{ROOT}/tests/catalog/history.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn overlay() -> Overlay {
    Overlay::from_yaml(&std::fs::read_to_string(format!("{ROOT}/catalog/overlay.yaml")).unwrap()).unwrap()
}

#[test]
fn the_fixture_history_generates_the_committed_catalog_byte_for_byte() {
    let dir = build(&history(), "committed");
    let (text, warnings) = generate(&Git { dir: dir.clone() }, &overlay(), None).unwrap();
    let committed = std::fs::read_to_string(format!("{ROOT}/catalog/langfuse.yaml")).unwrap();
    assert!(
        text == committed,
        "catalog/langfuse.yaml is not what `make catalog` generates; run it and review the diff"
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_release_the_catalog_does_not_know_is_taken_and_its_unreviewed_drop_reported() {
    let mut h = history();
    h.releases.push(Release {
        tag: "v4.17.0".into(),
        clickhouse: Some(47),
        insert: vec![Row {
            id: "00000000-0000-4000-8000-000000000099".into(),
            name: "20260901_v4_step_6_compact_events".into(),
            script: "compactEvents".into(),
            gate: Some("LANGFUSE_BACKGROUND_MIGRATION_V4_COMPACT".into()),
        }],
        delete_ids: Vec::new(),
        delete_names: Vec::new(),
        drops: vec!["table blob_storage_file_log".into()],
        env: serde_yaml::from_str("LANGFUSE_BACKGROUND_MIGRATION_V4_COMPACT: \"false\"").unwrap(),
        after: None,
    });
    let dir = build(&h, "newer");
    let (text, warnings) = generate(&Git { dir: dir.clone() }, &overlay(), None).unwrap();
    let catalog = langfuse_upgrade_operator::catalog::Catalog::from_yaml(&text).unwrap();
    assert_eq!(catalog.known.v4.to_string(), "4.17.0");
    assert!(text.contains("  - { from: 4.17.0, height: 47 }"), "{text}");
    assert!(
        text.contains("name: 20260901_v4_step_6_compact_events, script: compactEvents, from: 4.17.0, gate: LANGFUSE_BACKGROUND_MIGRATION_V4_COMPACT"),
        "{text}"
    );
    assert!(
        text.contains("name: LANGFUSE_BACKGROUND_MIGRATION_V4_COMPACT, from: 4.17.0, value: \"false\""),
        "{text}"
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("4.17.0 drops table blob_storage_file_log"),
        "{warnings:?}"
    );
    // Capped at the release it was reviewed for, the same history gives the committed catalog.
    let until = langfuse_upgrade_operator::version::Version::parse("4.16.0");
    let (capped, _) = generate(&Git { dir: dir.clone() }, &overlay(), until).unwrap();
    assert_eq!(
        capped,
        std::fs::read_to_string(format!("{ROOT}/catalog/langfuse.yaml")).unwrap()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_overlay_naming_a_row_history_never_registered_is_refused() {
    let mut o = overlay();
    o.copies.insert("20990101_no_such_row".into(), "traces".into());
    let dir = build(&history(), "bad-overlay");
    let err = generate(&Git { dir: dir.clone() }, &o, None).unwrap_err();
    assert!(err.contains("20990101_no_such_row"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `make catalog` without a Langfuse checkout: the catalog from this history.
#[test]
#[ignore = "writes catalog/langfuse.yaml: run by `make catalog`"]
fn write_catalog() {
    let dir = build(&history(), "write");
    let (text, warnings) = generate(&Git { dir: dir.clone() }, &overlay(), None).unwrap();
    for w in warnings {
        eprintln!("warning: {w}");
    }
    std::fs::write(format!("{ROOT}/catalog/langfuse.yaml"), text).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// `make catalog LANGFUSE_CHECKOUT=…`: this test's history written from a real Langfuse
/// checkout (the releases where something the catalog reads changes, the newest of each line,
/// a pre-release and a foreign tag), so the fixture keeps reproducing the regenerated catalog.
#[test]
#[ignore = "writes tests/catalog/history.yaml from $LANGFUSE_CHECKOUT: run by `make catalog`"]
fn write_history() {
    use langfuse_upgrade_operator::catalog::generate::derive;
    let from = std::env::var("LANGFUSE_CHECKOUT").expect("LANGFUSE_CHECKOUT: a Langfuse git checkout");
    let o = overlay();
    let d = derive(&Git { dir: from.into() }, &o, None).unwrap();
    let mut by: std::collections::BTreeMap<langfuse_upgrade_operator::version::Version, serde_yaml::Mapping> =
        Default::default();
    let v = |s: &str| langfuse_upgrade_operator::version::Version::parse(s).unwrap();
    for version in d
        .newest
        .values()
        .copied()
        .chain([v(&o.minimum_v2), v(&o.parallel_version)])
    {
        by.entry(version).or_default();
    }
    let key = |s: &str| serde_yaml::Value::from(s);
    for (version, height) in &d.heights {
        by.entry(*version)
            .or_default()
            .insert(key("clickhouse"), (*height).into());
    }
    let mut removals: std::collections::BTreeMap<_, Vec<(String, String)>> = Default::default();
    for (i, r) in d.rows.iter().enumerate() {
        let id = format!("00000000-0000-4000-8000-{:012}", i + 1);
        let mut row = serde_yaml::Mapping::new();
        row.insert(key("id"), id.clone().into());
        row.insert(key("name"), r.name.clone().into());
        row.insert(key("script"), r.script.clone().into());
        if let Some(g) = &r.gate {
            row.insert(key("gate"), g.clone().into());
        }
        let entry = by.entry(r.from).or_default();
        let list = entry
            .entry(key("insert"))
            .or_insert(serde_yaml::Value::Sequence(Vec::new()));
        list.as_sequence_mut().unwrap().push(row.into());
        if let Some(at) = r.removed_in {
            removals.entry(at).or_default().push((id, r.name.clone()));
        }
    }
    // One removal alone by id, several by name: the two shapes Langfuse writes.
    for (at, rows) in removals {
        let (field, values): (&str, Vec<String>) = match rows.len() {
            1 => ("deleteIds", rows.into_iter().map(|(id, _)| id).collect()),
            _ => ("deleteNames", rows.into_iter().map(|(_, n)| n).collect()),
        };
        by.entry(at).or_default().insert(key(field), values.into());
    }
    for step in &o.irreversible {
        let at = v(&step.at);
        let drops = d.drops.get(&at).cloned().unwrap_or_default();
        by.entry(at).or_default().insert(key("drops"), drops.into());
    }
    for (name, changes) in &d.env_defaults {
        for (at, value) in changes {
            let entry = by.entry(*at).or_default();
            let env = entry
                .entry(key("env"))
                .or_insert(serde_yaml::Value::Mapping(Default::default()));
            env.as_mapping_mut().unwrap().insert(key(name), value.clone().into());
        }
    }
    let releases: Vec<serde_yaml::Value> = by
        .into_iter()
        .map(|(version, fields)| {
            let mut m = serde_yaml::Mapping::new();
            m.insert(key("tag"), format!("v{version}").into());
            m.extend(fields);
            m.into()
        })
        .collect();
    let newest_v3 = format!("v{}", d.newest[&3]);
    let ignored = format!(
        "ignoredTags:\n- {{ tag: v4.0.0-rc.2, after: {newest_v3}, clickhouse: {} }}\n- {{ tag: langfuse-web-1.0.0, after: v{} }}\n",
        d.heights.last().unwrap().1,
        o.parallel_version
    );
    let header = std::fs::read_to_string(format!("{ROOT}/tests/catalog/history.yaml"))
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    let body = serde_yaml::to_string(&serde_yaml::Value::Mapping(serde_yaml::Mapping::from_iter([(
        key("releases"),
        releases.into(),
    )])))
    .unwrap();
    std::fs::write(format!("{ROOT}/tests/catalog/history.yaml"), header + &body + &ignored).unwrap();
}
