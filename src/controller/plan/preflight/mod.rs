//! Preflight (DESIGN §3): every check is a line a person can act on. Nothing is touched until
//! all pass; once provisioning starts they are not re-run (v3 web itself moves the schemas).

mod cluster;
mod floating;
mod road;
mod storage;
mod stores;

use crate::api::conditions::{self as cond, reason};
use crate::controller::plan::{Gate, Hold, Planner, Stage, wait};
use crate::resources::deployments::views::source_container;
use cluster::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;
use storage::*;
use stores::*;

use crate::api::{CheckId, CheckResult, LangfuseUpgradeSpec, Phase, PreflightCheck, WaivableCheck};
use crate::controller::observed::Observed;
use crate::controller::observed::Reading;
use crate::controller::plan::facts::Fact;
use crate::controller::validate::Settings;
use crate::resources::images::v3_images;
use crate::version::{ImageVersion, Version, image_version};

pub const MIN_SOURCE: Version = Version::new(2, 92, 0);

/// The release the source runs, from its Langfuse container's image (never a sidecar's);
/// read while preflight runs and frozen after it: it decides which road is walked.
pub(super) fn read_source_version(p: &mut Planner) {
    if p.stage() > Stage::Preflight {
        return;
    }
    let source = p.obs.source.as_ref();
    let image = source
        .and_then(|d| source_container(p.spec, d).ok())
        .and_then(|c| c.image.clone());
    p.status.source_version = image.map(|i| match image_version(&i) {
        ImageVersion::Exact(v) => v.to_string(),
        ImageVersion::Floating(t) => t,
        ImageVersion::Untagged => "latest".into(),
    });
}

/// Every line of the report: the road's own checks, then the road and its gates.
fn all_lines(p: &Planner, in_place: bool) -> Vec<PreflightCheck> {
    let mut checks = match in_place {
        true => in_place_checks(p),
        false => checks(p.name(), p.spec, p.obs, p.catalog),
    };
    checks.extend(road::lines(p));
    // A floating tag on a database a v3/v4 migrated: its own refusal replaces the v2 warning.
    if let Some(floating) = floating::line(p) {
        checks.retain(|c| c.name != floating.name);
        checks.push(floating);
    }
    checks
}

pub(super) fn gate(p: &mut Planner, _settings: &Settings) -> Gate {
    if p.stage() > Stage::Preflight {
        return Ok(());
    }
    let in_place = p.road().is_in_place();
    let checks = all_lines(p, in_place);
    let failed: Vec<&PreflightCheck> = checks.iter().filter(|c| c.result == CheckResult::Fail).collect();
    let summary = failed
        .iter()
        .map(|c| format!("{}: {}", c.name, c.message))
        .collect::<Vec<_>>()
        .join("; ");
    let source = p.obs.source.as_ref();
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
    p.record_now(Fact::ProvisioningStarted);
    if in_place {
        p.condition(
            cond::PREFLIGHT_PASSED,
            true,
            reason::CHECKS_PASSED,
            format!("{} checks passed", checks.len()),
        );
        return Ok(());
    }
    let container = source.and_then(|d| source_container(p.spec, d).ok());
    p.status.images = Some(v3_images(p.spec, container).0);
    p.status.source_replicas = source
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas)
        .or(Some(1));
    // Rows sharing one created_at beyond the batch size would stall the copy: plan a batch
    // size above the largest group, set before the migrations start.
    if let Reading::Answered(pg) = &p.obs.postgres {
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

pub(super) struct Report<'a> {
    spec: &'a LangfuseUpgradeSpec,
    lines: Vec<PreflightCheck>,
}

impl Report<'_> {
    pub(super) fn line(&mut self, id: CheckId, result: CheckResult, message: impl Into<String>) {
        self.lines.push(PreflightCheck {
            name: id.as_str().into(),
            result,
            message: message.into(),
        });
    }
    /// A waivable check: a person's waiver turns it into `Skipped` whatever it found.
    pub(super) fn waivable(&mut self, check: WaivableCheck, result: CheckResult, message: impl Into<String>) {
        let name = CheckId::from(check);
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
pub(super) struct Ctx<'a> {
    upgrade: &'a str,
    spec: &'a LangfuseUpgradeSpec,
    obs: &'a Observed,
    catalog: &'a crate::catalog::Catalog,
    source: Option<&'a Deployment>,
    container: Option<&'a Container>,
}

type Check = fn(&mut Report, &Ctx);

/// The checks, in the order their lines appear.
const CHECKS: [Check; 14] = [
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
    redis,
    s3,
    hpa,
    backup,
];

/// The checks of a source already on v3/v4 that do not depend on the road (its lines follow).
const IN_PLACE_CHECKS: [Check; 2] = [source_deployment, secrets];

fn in_place_checks(p: &Planner) -> Vec<PreflightCheck> {
    run(p.name(), p.spec, p.obs, p.catalog, &IN_PLACE_CHECKS)
}

/// All preflight lines, in a fixed order.
pub fn checks(
    upgrade: &str,
    spec: &LangfuseUpgradeSpec,
    obs: &Observed,
    catalog: &crate::catalog::Catalog,
) -> Vec<PreflightCheck> {
    run(upgrade, spec, obs, catalog, &CHECKS)
}

fn run(
    upgrade: &str,
    spec: &LangfuseUpgradeSpec,
    obs: &Observed,
    catalog: &crate::catalog::Catalog,
    list: &[Check],
) -> Vec<PreflightCheck> {
    let source = obs.source.as_ref();
    let ctx = Ctx {
        upgrade,
        spec,
        obs,
        catalog,
        source,
        container: source.and_then(|d| source_container(spec, d).ok()),
    };
    let mut r = Report {
        spec,
        lines: Vec::new(),
    };
    for check in list {
        check(&mut r, &ctx);
    }
    r.lines
}
