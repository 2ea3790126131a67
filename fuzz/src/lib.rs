//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`, nightly, cargo-fuzz) and of their
//! replay test (`tests/fuzz_corpus.rs`, stable), one copy for both: bad input never panics.
//!
//! - [`spec`]: bytes as JSON and as YAML, read as a `LangfuseUpgradeSpec` and as a whole
//!   `LangfuseUpgrade` (what the apiserver hands over, what `kubectl lfu plan -f` reads), then
//!   validation, the reads the plan asks for, the plan itself against a few clusters, the status
//!   it writes and what `kubectl lfu status` shows of it.
//! - [`version`]: each line as a version and as an image reference through every parser, the
//!   road between every two versions found (builtin catalog, both `acceptUnknownRelease`), and
//!   the whole input as a catalog (`--catalog FILE`).
//! - [`migration_row`]: the columns of one `background_migrations` row (see [`Columns`]), decoded
//!   as `migrations::postgres` decodes them, then every method the controller calls on the row,
//!   and the row in a simulated upgrade that is migrating (`world.rs`), planned twice.
//!
//! Only crates the operator itself depends on are used here, so that the replay test compiles
//! this file as part of the main package.

use jiff::Timestamp;
use langfuse_upgrade_operator::api::{LangfuseUpgrade, LangfuseUpgradeSpec};
use langfuse_upgrade_operator::catalog::Catalog;
use langfuse_upgrade_operator::catalog::road::{HopMode, road};
use langfuse_upgrade_operator::cli::render::{Style, status_text};
use langfuse_upgrade_operator::cli::view::status_view;
use langfuse_upgrade_operator::controller::plan::{needs, plan, stage_of};
use langfuse_upgrade_operator::controller::report::next_status;
use langfuse_upgrade_operator::controller::validate::{object_names, validate, validate_spec};
use langfuse_upgrade_operator::migrations::postgres::{copied_table, iso_millis, parse_batch_size, parse_cursor};
use langfuse_upgrade_operator::migrations::{MigrationRow, OpenGates, table_for_migration};
use langfuse_upgrade_operator::precision::{bound_after, millis_floor, newest_seen};
use langfuse_upgrade_operator::version::{ImageVersion, Version, image_repository, image_tag, image_version};

#[path = "world.rs"]
mod world;

pub use world::simulation;

/// The targets, each with its corpus in `fuzz/corpus/<name>/`.
pub const TARGETS: [&str; 3] = ["spec", "version", "migration_row"];

/// One input through one target, by its name.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "spec" => spec(data),
        "version" => version(data),
        "migration_row" => migration_row(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// The decision's `now` in every plan here (the CLI fixtures' `lfu.test/now`).
fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("in range")
}

// ---------------------------------------------------------------------------------------------
// spec

pub fn spec(data: &[u8]) {
    // Each distinct object once (JSON is YAML too: most inputs read the same both ways).
    let mut specs: Vec<LangfuseUpgradeSpec> = Vec::new();
    let mut upgrades: Vec<LangfuseUpgrade> = Vec::new();
    fn add<T: PartialEq>(all: &mut Vec<T>, one: T) {
        if !all.contains(&one) {
            all.push(one);
        }
    }
    if let Ok(spec) = serde_json::from_slice::<LangfuseUpgradeSpec>(data) {
        add(&mut specs, spec);
    }
    if let Ok(upgrade) = serde_json::from_slice::<LangfuseUpgrade>(data) {
        add(&mut upgrades, upgrade);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(spec) = serde_yaml::from_str::<LangfuseUpgradeSpec>(text) {
            add(&mut specs, spec);
        }
        // As `kubectl lfu plan -f FILE` reads it: YAML, then the object (its status dropped).
        if let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(text)
            && let Ok(upgrade) = serde_yaml::from_value::<LangfuseUpgrade>(value)
        {
            let mut fresh = upgrade.clone();
            fresh.status = None;
            add(&mut upgrades, upgrade);
            add(&mut upgrades, fresh);
        }
    }
    for spec in specs {
        add(&mut upgrades, check_spec(spec));
    }
    for upgrade in upgrades {
        check_upgrade(upgrade);
    }
}

/// Validation of the spec alone; then the spec as the object the operator reads.
fn check_spec(spec: LangfuseUpgradeSpec) -> LangfuseUpgrade {
    let names = object_names(&spec);
    let settings = validate_spec(&spec);
    if names.is_err() {
        assert!(settings.is_err(), "object_names refused what validate_spec let through");
    }
    // What the apiserver stores is what was sent: the same spec, the same answer.
    let stored = serde_json::to_value(&spec).expect("a spec serializes");
    let back: LangfuseUpgradeSpec = serde_json::from_value(stored).expect("a serialized spec reads back");
    assert_eq!(back, spec, "a spec changed through a JSON round trip");
    let mut upgrade = LangfuseUpgrade::new("to-v3", spec);
    upgrade.metadata.namespace = Some("langfuse".into());
    upgrade.metadata.uid = Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427".into());
    upgrade.metadata.generation = Some(1);
    upgrade
}

/// Validation, the reads the plan asks for, the plan against each cluster, the status it
/// writes (through the API) and what `kubectl lfu status` shows.
fn check_upgrade(upgrade: LangfuseUpgrade) {
    let _ = validate(&upgrade);
    let now = now();
    let status = upgrade.status.clone().unwrap_or_default();
    let _ = stage_of(&upgrade.spec, &status);
    let _ = needs(&upgrade, now);
    for observed in world::clusters() {
        let decision = plan(&upgrade, observed, now);
        for action in &decision.actions {
            let _ = action.describe();
        }
        let mut next = upgrade.clone();
        next.status = Some(next_status(&upgrade, &decision, now));
        serde_json::to_string(&next).expect("a decided status serializes");
        let view = status_view(&next, now);
        let _ = status_text(&view, Style { terminal: false });
    }
    let view = status_view(&upgrade, now);
    let _ = status_text(&view, Style { terminal: true });
}

// ---------------------------------------------------------------------------------------------
// version

pub fn version(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let builtin = Catalog::current();
    let mut versions = Vec::new();
    for line in text.lines().take(8) {
        read_version_string(line, &mut versions);
    }
    roads(&builtin, &versions);
    // The whole input as a catalog passed with --catalog: once it loads, every road it plans.
    if text.contains("known")
        && let Ok(catalog) = Catalog::from_yaml(&text)
    {
        let mut probes = versions.clone();
        probes.extend([
            catalog.minimum_v2,
            catalog.parallel_version,
            catalog.known.v2,
            catalog.known.v3,
            catalog.known.v4,
        ]);
        probes.extend(catalog.clickhouse_heights.iter().map(|h| h.from));
        probes.extend(catalog.required_stops.iter().flat_map(|s| [s.stop, s.before]));
        probes.extend(catalog.irreversible.iter().map(|i| i.at));
        probes.truncate(24);
        roads(&catalog, &probes);
    }
}

/// One string as a version and as an image reference, through every parser.
fn read_version_string(s: &str, versions: &mut Vec<Version>) {
    if let Some(v) = Version::parse(s) {
        assert_eq!(Version::parse(&v.to_string()), Some(v), "{s:?} does not read back");
        versions.push(v);
    }
    let repository = image_repository(s);
    assert!(
        s.starts_with(repository),
        "{s:?}: repository {repository:?} is not its start"
    );
    if let Some(tag) = image_tag(s) {
        assert!(s.contains(tag));
    }
    match image_version(s) {
        ImageVersion::Exact(v) => versions.push(v),
        ImageVersion::Floating(tag) => assert!(Version::parse(&tag).is_none()),
        ImageVersion::Untagged => {}
    }
}

/// Every road between two of the versions, and the catalog's other questions about them.
fn roads(catalog: &Catalog, versions: &[Version]) {
    let versions = &versions[..versions.len().min(24)];
    for &from in versions {
        let _ = catalog.schema_height(from);
        let _ = catalog.rows_at(from).count();
        let _ = catalog.removed_by(from, "20241024_1730_migrate_traces_from_pg_to_ch");
        let _ = catalog.newest_of(from.major);
        let _ = catalog.requirement(from.major);
        for &to in versions {
            let _ = catalog.irreversible_between(from, to).count();
            for accept_unknown in [false, true] {
                match road(catalog, from, to, accept_unknown) {
                    Ok(hops) => {
                        for pair in hops.windows(2) {
                            assert_eq!(pair[0].to, pair[1].from, "{from} -> {to}: the hops do not chain");
                        }
                        if let Some(last) = hops.last() {
                            assert_eq!(last.to, to, "{from} -> {to}: the road ends elsewhere");
                        }
                        for (i, hop) in hops.iter().enumerate() {
                            assert!(hop.mode == HopMode::InPlace || i == 0, "BesideV2 after the first hop");
                            for gate in &hop.gates {
                                let _ = gate.to_string();
                            }
                        }
                    }
                    Err(e) => {
                        let _ = e.to_string();
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// migration_row

/// The columns of one `background_migrations` row as `MIGRATIONS_SQL` selects them (the jsonb
/// `state` and `args` whole, before `->>` picks from them), plus the `now` and progress start
/// the controller judges the row with. One line each, in this order; a missing line, or text
/// that is not an integer in a millisecond line, is SQL NULL:
///
/// ```text
/// name | script | state (JSON) | args (JSON) | finished_ms | failed_ms | failed_reason |
/// locked_ms | worker_id | oldest_ms | now_ms | start_ms | open gates (comma-separated)
/// ```
#[derive(Debug, Default)]
pub struct Columns {
    pub name: String,
    pub script: String,
    pub state: Option<serde_json::Value>,
    pub args: Option<serde_json::Value>,
    pub finished_ms: Option<i64>,
    pub failed_ms: Option<i64>,
    pub failed_reason: Option<String>,
    pub locked_ms: Option<i64>,
    pub worker_id: Option<String>,
    /// The copied table's oldest `created_at` (`traces_ms`, `observations_ms` or `scores_ms`).
    pub oldest_ms: Option<i64>,
    pub now_ms: Option<i64>,
    pub start_ms: Option<i64>,
    pub open_gates: Vec<String>,
}

impl Columns {
    pub fn from_bytes(data: &[u8]) -> Self {
        let text = String::from_utf8_lossy(data);
        let mut lines = text.split('\n');
        let mut next = || lines.next();
        let text_col = |l: Option<&str>| l.map(str::to_string);
        let json_col = |l: Option<&str>| l.and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
        let ms_col = |l: Option<&str>| l.and_then(|l| l.trim().parse::<i64>().ok());
        let name = next().unwrap_or_default().to_string();
        let script = next().unwrap_or_default().to_string();
        Columns {
            name,
            script,
            state: json_col(next()),
            args: json_col(next()),
            finished_ms: ms_col(next()),
            failed_ms: ms_col(next()),
            failed_reason: text_col(next()).filter(|r| !r.is_empty()),
            locked_ms: ms_col(next()),
            worker_id: text_col(next()).filter(|w| !w.is_empty()),
            oldest_ms: ms_col(next()),
            now_ms: ms_col(next()),
            start_ms: ms_col(next()),
            open_gates: next()
                .map(|g| g.split(',').filter(|g| !g.is_empty()).map(str::to_string).collect())
                .unwrap_or_default(),
        }
    }
}

/// Postgres's `jsonb ->> 'key'`: NULL unless an object with that key holding a non-null value;
/// a string unquoted, anything else as JSON text.
fn pg_text(json: Option<&serde_json::Value>, key: &str) -> Option<String> {
    match json?.as_object()?.get(key)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The row as `migrations::postgres::migration_row` makes it from the selected columns (that
/// function takes a `PgRow` and is private: this follows it step by step with its public parts);
/// `None` where it answers a decoding error (a timestamp out of range).
pub fn decode(c: &Columns) -> Option<MigrationRow> {
    let suffix = match c.script.as_str() {
        "migrateObservationsFromPostgresToClickhouse" => pg_text(c.args.as_ref(), "stateSuffix").unwrap_or_default(),
        _ => String::new(),
    };
    let max_date = pg_text(c.state.as_ref(), &format!("maxDate{suffix}"));
    let batch_size = pg_text(c.args.as_ref(), "batchSize");
    let env_gate = pg_text(c.args.as_ref(), "envGate");
    let oldest_ms = copied_table(&c.script, &c.name).and(c.oldest_ms);
    let ts = |ms: Option<i64>| ms.map(Timestamp::from_millisecond).transpose().ok();
    Some(MigrationRow {
        name: c.name.clone(),
        finished_at: ts(c.finished_ms)?,
        failed_at: ts(c.failed_ms)?,
        failed_reason: c.failed_reason.clone(),
        locked_at: ts(c.locked_ms)?,
        cursor: max_date.as_deref().and_then(parse_cursor),
        oldest_row: ts(oldest_ms)?,
        batch_size: batch_size.as_deref().and_then(parse_batch_size),
        env_gate,
        taken: c.worker_id.is_some(),
    })
}

pub fn migration_row(data: &[u8]) {
    let columns = Columns::from_bytes(data);
    // The text parsers on their own, as they see the `->>` text.
    for text in [&columns.name, &columns.script] {
        let _ = parse_cursor(text);
        let _ = parse_batch_size(text);
    }
    let Some(row) = decode(&columns) else {
        return;
    };
    let now = columns
        .now_ms
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or_else(now);
    let start = columns.start_ms.and_then(|ms| Timestamp::from_millisecond(ms).ok());
    let env: Vec<k8s_openapi::api::core::v1::EnvVar> = columns
        .open_gates
        .iter()
        .map(|name| k8s_openapi::api::core::v1::EnvVar {
            name: name.clone(),
            value: Some("true".into()),
            value_from: None,
        })
        .collect();
    let gates = OpenGates::from_env(&env);
    let _ = row.state(now).as_str();
    let _ = row.state_with(now, &gates).as_str();
    if let Some(p) = row.progress(start) {
        assert!((0.0..=1.0).contains(&p), "progress {p} outside 0..=1");
        let _ = (p * 100.0).floor() as i32;
    }
    if let Some(cursor) = row.cursor {
        let _ = cursor.to_string();
        let _ = iso_millis(cursor);
        let _ = millis_floor(cursor);
        let _ = newest_seen(cursor);
        let _ = bound_after(cursor);
    }
    let _ = table_for_migration(&row.name);
    // The row in an upgrade that is migrating, planned twice 11 minutes apart (past
    // `stuckAfter`), its times kept as old relative to each `now` as to the input's `now`.
    world::migrating_with(&row, now);
}
