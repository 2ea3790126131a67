//! Preflight (DESIGN §3): every check is a line a person can act on. Nothing is touched until
//! all pass; once provisioning starts they are not re-run (v3 web itself moves the schemas).

use super::workloads::{source_container, source_selector};
use super::{Gate, Hold, Planner, Stage, wait};
use crate::api::conditions::{self as cond, reason};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;

use crate::api::{CheckResult, LangfuseUpgradeSpec, PARALLEL_VERSION, Phase, PreflightCheck, WaivableCheck};
use crate::controller::observe::{Observed, PostgresError};
use crate::controller::validate::Settings;
use crate::migrations::{DEFAULT_BATCH_SIZE, V3_MIGRATIONS};
use crate::resources::deployments::{applied_hash, deployment_name};
use crate::resources::images::{Origin, v3_images};
use crate::resources::labels::{Role, UPGRADE_LABEL, selector_matches, v3_pod_labels};
use crate::resources::service::{resolve_web_port, selector_of};
use crate::verify::SCHEMA_VERSION_3_29;
use crate::version::{ImageVersion, Version, image_version};

pub const MIN_SOURCE: Version = Version::new(2, 92, 0);
const MIN_POSTGRES_NUM: i64 = 120000;
const MIN_CLICKHOUSE: (u64, u64) = (24, 3);
/// 26.8 changed how numeric DateTime64 input is read, which 3.29.0 relies on.
const CLICKHOUSE_BREAKS_3_29: (u64, u64) = (26, 8);

pub(super) fn gate(p: &mut Planner, _settings: &Settings) -> Gate {
    if p.stage() > Stage::Preflight {
        return Ok(());
    }
    let checks = checks(p.name(), p.spec, p.obs);
    let failed: Vec<&PreflightCheck> = checks.iter().filter(|c| c.result == CheckResult::Fail).collect();
    let summary = failed
        .iter()
        .map(|c| format!("{}: {}", c.name, c.message))
        .collect::<Vec<_>>()
        .join("; ");
    let source = p.obs.source.as_ref();
    // The version comes from the Langfuse container only, never from a sidecar's image.
    let image = source
        .and_then(|d| source_container(p.spec, d).ok())
        .and_then(|c| c.image.clone());
    p.status.source_version = image.map(|i| match image_version(&i) {
        ImageVersion::Exact(v) => v.to_string(),
        ImageVersion::Floating(t) => t,
        ImageVersion::Untagged => "latest".into(),
    });
    p.status.checks = checks.clone();
    if !failed.is_empty() {
        p.condition(cond::PREFLIGHT_PASSED, false, reason::PREFLIGHT_FAILED, summary.clone());
        return Err(Hold::new(
            Phase::Blocked,
            reason::PREFLIGHT_FAILED,
            format!("preflight failed, nothing was changed: {summary}"),
            wait::PERSON,
        ));
    }
    // Every check passed: record the facts that make the upgrade resumable, then provision.
    p.status.provisioning_started_at = Some(p.now_time());
    let container = source.and_then(|d| source_container(p.spec, d).ok());
    p.status.images = Some(v3_images(p.spec, container).0);
    p.status.source_replicas = source
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas)
        .or(Some(1));
    // Rows sharing one created_at beyond the batch size would stall the copy: plan a batch
    // size above the largest group, set before the migrations start.
    if let Some(Ok(pg)) = &p.obs.postgres {
        for (table, group) in &pg.same_created_at_groups {
            let name = crate::migrations::migration_for_table(*table);
            p.status.planned_batch_sizes.insert(name.to_string(), group + 1);
        }
    }
    p.condition(
        cond::PREFLIGHT_PASSED,
        true,
        reason::CHECKS_PASSED,
        format!("{} checks passed or were waived", checks.len()),
    );
    Ok(())
}

struct Report<'a> {
    spec: &'a LangfuseUpgradeSpec,
    lines: Vec<PreflightCheck>,
}

impl Report<'_> {
    fn line(&mut self, name: &str, result: CheckResult, message: impl Into<String>) {
        self.lines.push(PreflightCheck {
            name: name.into(),
            result,
            message: message.into(),
        });
    }
    /// A waivable check: a person's waiver turns it into `Skipped` whatever it found.
    fn waivable(&mut self, check: WaivableCheck, name: &str, result: CheckResult, message: impl Into<String>) {
        if self.spec.preflight.skip.contains(&check) {
            self.line(
                name,
                CheckResult::Skipped,
                format!(
                    "waived by spec.preflight.skip (would have been {result:?}: {})",
                    message.into()
                ),
            );
        } else {
            self.line(name, result, message);
        }
    }
}

/// What every check reads: the spec and the observation, with v2's Deployment and its
/// Langfuse container chosen once.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    upgrade: &'a str,
    spec: &'a LangfuseUpgradeSpec,
    obs: &'a Observed,
    source: Option<&'a Deployment>,
    container: Option<&'a Container>,
}

type Check = fn(&mut Report, &Ctx);

/// The checks, in the order their lines appear.
const CHECKS: [Check; 12] = [
    target_version,
    source_deployment,
    images,
    source_version,
    service,
    names,
    secrets,
    cluster_mode,
    postgres,
    clickhouse,
    hpa,
    backup,
];

/// All preflight lines, in a fixed order.
pub fn checks(upgrade: &str, spec: &LangfuseUpgradeSpec, obs: &Observed) -> Vec<PreflightCheck> {
    let source = obs.source.as_ref();
    let ctx = Ctx {
        upgrade,
        spec,
        obs,
        source,
        container: source.and_then(|d| source_container(spec, d).ok()),
    };
    let mut r = Report {
        spec,
        lines: Vec::new(),
    };
    for check in CHECKS {
        check(&mut r, &ctx);
    }
    r.lines
}

/// The target runs next to v2 only at the parallel version (invariant 3).
fn target_version(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { spec, .. } = *c;
    let target_ok = spec.target.version == PARALLEL_VERSION;
    r.line(
        "targetVersion",
        if target_ok { Pass } else { Fail },
        if target_ok {
            format!("v3 runs {PARALLEL_VERSION} next to v2")
        } else {
            format!(
                "spec.target.version is {}, but only {PARALLEL_VERSION} runs safely next to v2 (3.29.1+ drops views v2 reads); set target.version: {PARALLEL_VERSION} and finalVersion: {}",
                spec.target.version, spec.target.version
            )
        },
    );
}

/// The v2 Deployment and its Langfuse container exist.
fn source_deployment(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { spec, obs, .. } = *c;
    let source = obs.source.as_ref();
    match source {
        None => r.line(
            "sourceDeployment",
            Fail,
            format!("Deployment {:?} not found in this namespace", spec.source.deployment),
        ),
        Some(d) => match source_container(spec, d) {
            Ok(c) => r.line("sourceDeployment", Pass, format!("container {:?} found", c.name)),
            Err(e) => r.line("sourceDeployment", Fail, e),
        },
    }
}

/// Which images v3 will run, and from where.
fn images(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { spec, container, .. } = *c;
    let (images, origin) = v3_images(spec, container);
    let from = match origin {
        Origin::Spec => "as spec.target names them".to_string(),
        Origin::SourceRegistry => "from v2's registry".to_string(),
        Origin::DockerHub => format!(
            "Docker Hub's names: v2's image {:?} is not named langfuse; set spec.target.web.image and worker.image if the cluster pulls from elsewhere",
            container.and_then(|c| c.image.clone()).unwrap_or_default()
        ),
    };
    r.line(
        "images",
        if origin == Origin::DockerHub { Warn } else { Pass },
        format!(
            "v3 web {}:{}, worker {}:{} ({from})",
            images.web, spec.target.version, images.worker, spec.target.version
        ),
    );
}

/// v2 is at least the release whose Prisma migrations register the v3 rows.
fn source_version(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { container, .. } = *c;
    if let Some(c) = container {
        let image = c.image.clone().unwrap_or_default();
        let (result, message) = match image_version(&image) {
            ImageVersion::Exact(v) if v.major == 2 && v >= MIN_SOURCE => (Pass, format!("v2 runs {v}")),
            ImageVersion::Exact(v) if v.major == 2 => (
                Fail,
                format!("v2 runs {v}; upgrade v2 to {MIN_SOURCE} or newer (ideally 2.95.x) first"),
            ),
            ImageVersion::Exact(v) => (Fail, format!("the source runs {v}, which is not Langfuse v2")),
            ImageVersion::Floating(tag) => (
                Warn,
                format!("image tag {tag:?} does not pin a version; cannot confirm v2 is at least {MIN_SOURCE}"),
            ),
            ImageVersion::Untagged => (
                Warn,
                format!("image {image:?} has no tag; cannot confirm v2 is at least {MIN_SOURCE}"),
            ),
        };
        r.waivable(WaivableCheck::SourceVersion, "sourceVersion", result, message);
    }
}

/// The Service selects v2 by a selector, targets a port v3 web will serve, and selects no v3 pod.
fn service(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx {
        upgrade,
        spec,
        obs,
        source,
        container,
        ..
    } = *c;
    match &obs.service {
        None => r.line(
            "service",
            Fail,
            format!("Service {:?} not found in this namespace", spec.source.service),
        ),
        Some(svc) => {
            let selector = selector_of(svc);
            let pod_labels = source
                .and_then(|d| d.spec.as_ref())
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            if selector.is_empty() {
                r.line(
                    "service",
                    Fail,
                    "the Service has no selector (endpoints managed by hand); the operator can only switch a selector",
                );
            } else if source.is_some() && !selector_matches(&selector, &pod_labels) {
                r.line(
                    "service",
                    Fail,
                    format!(
                        "the Service selector {} does not select the v2 pods",
                        super::labels_text(&selector)
                    ),
                );
            } else if let Some(c) = container {
                match resolve_web_port(svc, c) {
                    Ok(port) => r.line(
                        "service",
                        Pass,
                        format!("targets port {} ({}) which v3 web will serve", port.name, port.number),
                    ),
                    Err(e) => r.line("service", Fail, e),
                }
            }
            if let Some(d) = source {
                let v2_selector = source_selector(d);
                let leaks: Vec<&str> = [Role::Web, Role::Worker]
                    .into_iter()
                    .filter(|role| selector_matches(&selector, &v3_pod_labels(upgrade, *role, &v2_selector)))
                    .map(|role| role.as_str())
                    .collect();
                if leaks.is_empty() {
                    r.line("selectorIsolation", Pass, "the v2 Service selector matches no v3 pod");
                } else {
                    r.line("selectorIsolation", Fail, format!("the Service selector {} would also select v3 {} pods; narrow it to the v2 Deployment's selector", super::labels_text(&selector), leaks.join(" and ")));
                }
            }
        }
    }
}

/// The v3 Deployment names are free (or already this upgrade's).
fn names(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { upgrade, spec, obs, .. } = *c;
    let taken: Vec<String> = [(Role::Web, &obs.web), (Role::Worker, &obs.worker)]
        .into_iter()
        .filter_map(|(role, d)| d.as_ref().map(|d| (role, d)))
        .filter(|(_, d)| {
            let ours = d
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(UPGRADE_LABEL))
                .is_some_and(|v| v == upgrade);
            !ours || applied_hash(d).is_none()
        })
        .map(|(role, _)| deployment_name(&spec.source.deployment, role))
        .collect();
    if taken.is_empty() {
        r.line("names", Pass, "the v3 Deployment names are free");
    } else {
        r.line(
            "names",
            Fail,
            format!(
                "Deployment {} already exists and was not created by this upgrade",
                taken.join(", ")
            ),
        );
    }
}

/// Every Secret key the spec refers to exists.
fn secrets(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { obs, .. } = *c;
    if obs.missing_secret_keys.is_empty() {
        r.line("secrets", Pass, "every referenced Secret key exists");
    } else {
        r.line(
            "secrets",
            Fail,
            format!("missing Secret keys: {}", obs.missing_secret_keys.join(", ")),
        );
    }
}

/// v2 and the spec agree on ClickHouse cluster mode.
fn cluster_mode(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { spec, container, .. } = *c;
    if let Some(c) = container {
        let cluster = c
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "CLICKHOUSE_CLUSTER_ENABLED")
            .and_then(|e| e.value.clone());
        match cluster {
            Some(v) if (v == "true") != spec.clickhouse.cluster_enabled => r.line(
                "clusterMode",
                Fail,
                format!(
                    "v2 sets CLICKHOUSE_CLUSTER_ENABLED={v} but spec.clickhouse.clusterEnabled is {}; make them agree",
                    spec.clickhouse.cluster_enabled
                ),
            ),
            _ => r.line(
                "clusterMode",
                Pass,
                format!("CLICKHOUSE_CLUSTER_ENABLED={}", spec.clickhouse.cluster_enabled),
            ),
        }
    }
}

/// Postgres: reachable, the four v3 rows, its version, the same-`created_at` scan.
fn postgres(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { obs, .. } = *c;
    match &obs.postgres {
        None => r.line("postgres", Fail, "Postgres was not observed"),
        Some(Err(PostgresError::Settings(e))) => {
            r.line("postgres", Fail, format!("Postgres connection settings missing: {e}"))
        }
        Some(Err(PostgresError::Unreachable(e))) => r.line("postgres", Fail, format!("Postgres unreachable: {e}")),
        Some(Ok(pg)) => {
            let missing: Vec<&str> = V3_MIGRATIONS
                .iter()
                .copied()
                .filter(|n| !pg.migrations.iter().any(|m| m.name == *n))
                .collect();
            if missing.is_empty() {
                r.line("postgres", Pass, "background_migrations holds the four v3 rows");
            } else {
                r.line("postgres", Fail, format!("background_migrations lacks {}; only v2 >= {MIN_SOURCE}'s Prisma migrations insert them (upgrade v2, do not insert by hand)", missing.join(", ")));
            }
            match pg.server_version_num {
                Some(n) if n >= MIN_POSTGRES_NUM => r.waivable(
                    WaivableCheck::PostgresVersion,
                    "postgresVersion",
                    Pass,
                    format!("Postgres {}", n / 10000),
                ),
                Some(n) => r.waivable(
                    WaivableCheck::PostgresVersion,
                    "postgresVersion",
                    Fail,
                    format!("Postgres {} is older than 12", n / 10000),
                ),
                None => r.waivable(
                    WaivableCheck::PostgresVersion,
                    "postgresVersion",
                    Warn,
                    "server version unknown",
                ),
            }
            let groups: Vec<String> = pg
                .same_created_at_groups
                .iter()
                .map(|(t, n)| format!("{t}: {n} rows"))
                .collect();
            if groups.is_empty() {
                r.waivable(
                    WaivableCheck::StuckCursorScan,
                    "stuckCursorScan",
                    Pass,
                    format!("no {DEFAULT_BATCH_SIZE}+ rows share one created_at"),
                );
            } else {
                let largest = pg.same_created_at_groups.iter().map(|(_, n)| *n).max().unwrap_or(0);
                r.waivable(
                    WaivableCheck::StuckCursorScan,
                    "stuckCursorScan",
                    Warn,
                    format!("rows sharing one created_at ({}) would stall a {DEFAULT_BATCH_SIZE}-row batch; planned args.batchSize {}", groups.join(", "), largest + 1),
                );
            }
        }
    }
}

/// ClickHouse: reachable, its schema not past 3.29.0 nor dirty nor damaged, its version.
fn clickhouse(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { obs, .. } = *c;
    match &obs.clickhouse {
        None => r.line("clickhouse", Fail, "ClickHouse was not observed"),
        Some(Err(e)) => r.line("clickhouse", Fail, format!("ClickHouse unreachable: {e}")),
        Some(Ok(ch)) => {
            match ch.schema {
                Some((v, true)) => r.line("clickhouse", Fail, format!("schema_migrations is dirty at version {v}: fix and force the version as the Langfuse FAQ describes")),
                Some((v, _)) if v > SCHEMA_VERSION_3_29 => r.line(
                    "clickhouse",
                    Fail,
                    format!("schema_migrations is at {v}, past {SCHEMA_VERSION_3_29}: a newer v3 already migrated it and 3.29.0 would crash-loop"),
                ),
                Some((v, _)) if !ch.missing_tables.is_empty() => r.line(
                    "clickhouse",
                    Fail,
                    format!(
                        "schema_migrations is at {v} but table {} is missing: the schema is damaged; restore it before upgrading",
                        super::reading::names(&ch.missing_tables)
                    ),
                ),
                Some((v, _)) => r.line("clickhouse", Pass, format!("schema_migrations at {v}, clean")),
                None => r.line("clickhouse", Pass, "empty: v3 web will create the schema"),
            }
            let parsed = ch.version.as_deref().and_then(|v| {
                let mut it = v.split('.');
                Some((it.next()?.parse::<u64>().ok()?, it.next()?.parse::<u64>().ok()?))
            });
            let (result, message) = match parsed {
                Some(v) if v < MIN_CLICKHOUSE => (
                    Fail,
                    format!(
                        "ClickHouse {} is older than 24.3",
                        ch.version.clone().unwrap_or_default()
                    ),
                ),
                Some(v) if v >= CLICKHOUSE_BREAKS_3_29 => (
                    Warn,
                    format!(
                        "ClickHouse {} reads numeric DateTime64 input differently (26.8+); pin 24.x-25.x for 3.29.0",
                        ch.version.clone().unwrap_or_default()
                    ),
                ),
                Some(_) => (Pass, format!("ClickHouse {}", ch.version.clone().unwrap_or_default())),
                None => (Warn, "ClickHouse version unknown".to_string()),
            };
            r.waivable(WaivableCheck::ClickHouseVersion, "clickhouseVersion", result, message);
        }
    }
}

/// A HorizontalPodAutoscaler on v2 would scale it back up after retirement.
fn hpa(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { obs, .. } = *c;
    if !obs.hpas_on_source.is_empty() {
        r.waivable(
            WaivableCheck::HorizontalPodAutoscaler,
            "horizontalPodAutoscaler",
            Warn,
            format!("HorizontalPodAutoscaler {} targets v2 and would scale it back up after retirement; the operator will report it, not delete it", obs.hpas_on_source.join(", ")),
        );
    }
}

/// A backup is acknowledged.
fn backup(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let Ctx { spec, .. } = *c;
    if spec.backup.acknowledged {
        r.waivable(
            WaivableCheck::Backup,
            "backup",
            Pass,
            format!(
                "acknowledged{}",
                spec.backup
                    .reference
                    .as_ref()
                    .map(|x| format!(": {x}"))
                    .unwrap_or_default()
            ),
        );
    } else {
        r.waivable(
            WaivableCheck::Backup,
            "backup",
            Fail,
            "take a Postgres backup, then set spec.backup.acknowledged: true",
        );
    }
}
