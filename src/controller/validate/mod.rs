//! Spec validation the apiserver cannot do (or that an older CRD may not have enforced).
//! Pure: the spec in, parsed settings or the first offending field out.

use std::str::FromStr;
use std::time::Duration;

use k8s_openapi::api::core::v1::SecretKeySelector;

use crate::api::{LangfuseUpgrade, LangfuseUpgradeSpec};
use crate::resources::deployments::MIGRATIONS_ENV;
use crate::version::Version;

mod data_model;
pub use data_model::DataModelSettings;
use data_model::data_model;

/// The spec, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub target: Version,
    pub final_version: Option<Version>,
    pub drain_period: Duration,
    pub retire_source_after: Duration,
    pub rollback_after: Duration,
    pub stuck_after: Duration,
    pub analysis: Option<Analysis>,
    pub data_model: DataModelSettings,
}

/// `spec.strategy.analysis`, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    pub threshold: f64,
    pub window: Duration,
}

/// The analysis settings alone (the plan's observation needs them before it decides).
pub fn analysis(spec: &LangfuseUpgradeSpec) -> Result<Option<Analysis>, InvalidSpec> {
    let Some(a) = &spec.strategy.analysis else {
        return Ok(None);
    };
    let threshold = a
        .threshold
        .parse::<f64>()
        .ok()
        .filter(|t| (0.0..=1.0).contains(t))
        .ok_or_else(|| {
            invalid(
                "spec.strategy.analysis.threshold",
                format!("{:?} is not a ratio between 0 and 1, like \"0.05\"", a.threshold),
            )
        })?;
    let window = duration("spec.strategy.analysis.window", &a.window)?;
    if window < Duration::from_secs(10) {
        return Err(invalid(
            "spec.strategy.analysis.window",
            format!("{:?} is shorter than 10s: a spike would roll back", a.window),
        ));
    }
    if !(a.prometheus_url.starts_with("http://") || a.prometheus_url.starts_with("https://")) {
        return Err(invalid(
            "spec.strategy.analysis.prometheusUrl",
            "must be an http:// or https:// URL",
        ));
    }
    if a.error_ratio_query.trim().is_empty() {
        return Err(invalid("spec.strategy.analysis.errorRatioQuery", "must not be empty"));
    }
    Ok(Some(Analysis { threshold, window }))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSpec {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn invalid(field: &str, message: impl Into<String>) -> InvalidSpec {
    InvalidSpec {
        field: field.to_string(),
        message: message.into(),
    }
}

pub fn validate(upgrade: &LangfuseUpgrade) -> Result<Settings, InvalidSpec> {
    let name = upgrade.metadata.name.as_deref().unwrap_or_default();
    if name.len() > 63 {
        return Err(invalid(
            "metadata.name",
            "must be at most 63 characters: it becomes a label value on the v3 pods",
        ));
    }
    validate_spec(&upgrade.spec)
}

/// The names of objects the spec refers to: each must be a name such an object can have in
/// this namespace. Checked before anything is read with them (an impossible name makes the
/// apiserver refuse the read, which would otherwise leave no condition at all).
pub fn object_names(spec: &LangfuseUpgradeSpec) -> Result<(), InvalidSpec> {
    // `<deployment>-worker` must still be a valid Deployment name.
    dns_name(
        "spec.source.deployment",
        &spec.source.deployment,
        DnsName::Subdomain,
        246,
    )?;
    dns_name("spec.source.service", &spec.source.service, DnsName::Rfc1035Label, 63)?;
    if let Some(c) = &spec.source.container {
        dns_name("spec.source.container", c, DnsName::Label, 63)?;
    }
    if let Some(w) = &spec.source.worker {
        dns_name("spec.source.worker", w, DnsName::Subdomain, 253)?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum DnsName {
    /// Deployments, Secrets: lowercase labels joined by dots.
    Subdomain,
    /// Containers: one lowercase label.
    Label,
    /// Services: one lowercase label starting with a letter.
    Rfc1035Label,
}

fn dns_name(field: &str, value: &str, kind: DnsName, max: usize) -> Result<(), InvalidSpec> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = value.len() <= max
        && match kind {
            DnsName::Subdomain => value.split('.').all(label_ok),
            DnsName::Label => label_ok(value),
            DnsName::Rfc1035Label => label_ok(value) && value.starts_with(|c: char| c.is_ascii_lowercase()),
        };
    if ok {
        return Ok(());
    }
    let hint = if value.contains('/') {
        "; it names an object in this object's namespace, without a namespace/ prefix"
    } else {
        ""
    };
    let rule = match kind {
        DnsName::Subdomain => "lowercase letters, digits, '-' and '.'",
        DnsName::Label => "lowercase letters, digits and '-'",
        DnsName::Rfc1035Label => "lowercase letters, digits and '-', starting with a letter",
    };
    Err(invalid(
        field,
        format!("{value:?} cannot be an object name ({rule}, at most {max} characters){hint}"),
    ))
}

pub fn validate_spec(spec: &LangfuseUpgradeSpec) -> Result<Settings, InvalidSpec> {
    object_names(spec)?;
    let target = parse_v3("spec.target.version", &spec.target.version)?;
    v4_flags(spec)?;
    let final_version = match &spec.target.final_version {
        Some(v) => {
            let parsed = parse_v3("spec.target.finalVersion", v)?;
            if parsed < target {
                return Err(invalid(
                    "spec.target.finalVersion",
                    format!("{parsed} is older than spec.target.version {target}; downgrades are not supported"),
                ));
            }
            let catalog = crate::catalog::Catalog::current();
            let newest = catalog.newest_of(parsed.major);
            if !catalog.knows(parsed) && !spec.target.accept_unknown_release {
                let unknown = crate::catalog::road::RoadError::Unknown { to: parsed, newest };
                return Err(invalid("spec.target.finalVersion", unknown.to_string()));
            }
            Some(parsed)
        }
        None => None,
    };
    for (field, image) in [
        ("spec.target.web.image", &spec.target.web.image),
        ("spec.target.worker.image", &spec.target.worker.image),
    ] {
        let Some(image) = image else { continue };
        let last = image.rsplit('/').next().unwrap_or(image);
        if image.is_empty() || last.contains(':') || image.contains('@') {
            return Err(invalid(
                field,
                format!("{image:?} must be a repository without tag or digest; the tag is the target version"),
            ));
        }
    }
    for (field, replicas) in [
        ("spec.target.web.replicas", spec.target.web.replicas),
        ("spec.target.worker.replicas", spec.target.worker.replicas),
    ] {
        if replicas < 1 {
            return Err(invalid(field, "must be at least 1"));
        }
    }
    for (i, env) in spec.target.extra_env.iter().enumerate() {
        if env.name.is_empty() {
            return Err(invalid(&format!("spec.target.extraEnv[{i}].name"), "must not be empty"));
        }
        if env.name == MIGRATIONS_ENV {
            return Err(invalid(
                &format!("spec.target.extraEnv[{i}]"),
                format!("{MIGRATIONS_ENV} is managed by the operator"),
            ));
        }
    }
    let ch = &spec.clickhouse;
    if !(ch.url.starts_with("http://") || ch.url.starts_with("https://")) {
        return Err(invalid(
            "spec.clickhouse.url",
            "must be an http:// or https:// URL (port 8123 or 8443)",
        ));
    }
    if !ch.migration_url.starts_with("clickhouse://") {
        return Err(invalid(
            "spec.clickhouse.migrationUrl",
            "must be a clickhouse:// URL (port 9000 or 9440)",
        ));
    }
    secret_ref("spec.clickhouse.userSecretRef", &ch.user_secret_ref)?;
    secret_ref("spec.clickhouse.passwordSecretRef", &ch.password_secret_ref)?;
    let redis = &spec.redis;
    match (&redis.connection_string_secret_ref, &redis.host) {
        (Some(r), None) => secret_ref("spec.redis.connectionStringSecretRef", r)?,
        (None, Some(h)) if !h.is_empty() => {}
        _ => {
            return Err(invalid(
                "spec.redis",
                "set exactly one of connectionStringSecretRef and host",
            ));
        }
    }
    if let Some(r) = &redis.auth_secret_ref {
        secret_ref("spec.redis.authSecretRef", r)?;
    }
    let s3 = &spec.s3;
    if s3.bucket.is_empty() {
        return Err(invalid("spec.s3.bucket", "must not be empty"));
    }
    match (&s3.access_key_id_secret_ref, &s3.secret_access_key_secret_ref) {
        (Some(a), Some(b)) => {
            secret_ref("spec.s3.accessKeyIdSecretRef", a)?;
            secret_ref("spec.s3.secretAccessKeySecretRef", b)?;
        }
        (None, None) => {}
        _ => {
            return Err(invalid(
                "spec.s3",
                "set both accessKeyIdSecretRef and secretAccessKeySecretRef, or neither",
            ));
        }
    }
    if let Some(pg) = &spec.postgres {
        secret_ref("spec.postgres.urlSecretRef", &pg.url_secret_ref)?;
    }
    if spec.migrations.min_batch_size < 1 {
        return Err(invalid("spec.migrations.minBatchSize", "must be at least 1"));
    }
    for b in &spec.backup.hop_backups {
        if crate::version::Version::parse(&b.hop).is_none() {
            return Err(invalid(
                "spec.backup.hopBackups",
                format!("hop {:?} is not a release like 4.16.0", b.hop),
            ));
        }
        if b.taken_at.parse::<jiff::Timestamp>().is_err() {
            return Err(invalid(
                "spec.backup.hopBackups",
                format!(
                    "takenAt {:?} of {} is not an RFC 3339 time like 2026-12-05T10:00:00Z",
                    b.taken_at, b.hop
                ),
            ));
        }
        if b.reference.trim().is_empty() {
            return Err(invalid(
                "spec.backup.hopBackups",
                format!("{}: say where the backups are in reference", b.hop),
            ));
        }
    }
    for (table, rows) in &spec.migrations.accept_copy_shortfall {
        if crate::migrations::copies::CopiedTable::parse(table).is_none() {
            return Err(invalid(
                "spec.migrations.acceptCopyShortfall",
                format!("{table:?} is not a copied table: use traces, observations, scores or dataset_run_items"),
            ));
        }
        if *rows < 0 {
            return Err(invalid(
                "spec.migrations.acceptCopyShortfall",
                format!("{table}: a number of rows, at least 0"),
            ));
        }
    }
    Ok(Settings {
        target,
        final_version,
        drain_period: duration("spec.strategy.drainPeriod", &spec.strategy.drain_period)?,
        retire_source_after: duration("spec.strategy.retireSourceAfter", &spec.strategy.retire_source_after)?,
        rollback_after: duration("spec.strategy.rollbackAfter", &spec.strategy.rollback_after)?,
        stuck_after: duration("spec.migrations.stuckAfter", &spec.migrations.stuck_after)?,
        analysis: analysis(spec)?,
        data_model: data_model(spec)?,
    })
}

/// v4 flags in `extraEnv` that would make the v4 worker exit at start are refused up front.
fn v4_flags(spec: &LangfuseUpgradeSpec) -> Result<(), InvalidSpec> {
    use crate::resources::v4_env;
    let goes_to_v4 = [Some(&spec.target.version), spec.target.final_version.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|v| Version::parse(v))
        .any(|v| v.major >= 4);
    let user = |name: &str| {
        spec.target
            .extra_env
            .iter()
            .rev()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    };
    match v4_env::worker_exit_reason(&v4_env::effective(user)) {
        Some(why) if goes_to_v4 => Err(invalid("spec.target.extraEnv", why)),
        _ => Ok(()),
    }
}

/// A v3 or v4 release (v2 is only ever a source).
fn parse_v3(field: &str, value: &str) -> Result<Version, InvalidSpec> {
    match Version::parse(value) {
        Some(v) if v.major == 3 || v.major == 4 => Ok(v),
        Some(v) => Err(invalid(field, format!("{v} is not a Langfuse v3 or v4 version"))),
        None => Err(invalid(field, format!("{value:?} is not a version like 3.29.0"))),
    }
}

/// Longer than any wait an upgrade can mean.
const LONGEST: f64 = 100.0 * 365.0 * 24.0 * 3600.0;

/// Seconds a Go-style duration string spells, summed as floats (never overflows): kube's parser
/// panics on a value too long for `std::time::Duration` (found by fuzzing), so it is bounded first.
fn spelled_seconds(value: &str) -> Option<f64> {
    let body = value.trim_start_matches(['+', '-']);
    let (mut total, mut number, mut unit) = (0.0, String::new(), String::new());
    let mut flush = |number: &mut String, unit: &mut String| -> Option<()> {
        let scale = match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number.parse::<f64>().ok()? * scale;
        number.clear();
        unit.clear();
        Some(())
    };
    for c in body.chars() {
        if c.is_ascii_digit() || c == '.' {
            if !unit.is_empty() {
                flush(&mut number, &mut unit)?;
            }
            number.push(c);
        } else {
            unit.push(c);
        }
    }
    if !number.is_empty() || !unit.is_empty() {
        flush(&mut number, &mut unit)?;
    }
    Some(total)
}

fn duration(field: &str, value: &str) -> Result<Duration, InvalidSpec> {
    // Only what this parser understood reaches kube's (found by fuzzing: a Greek mu or a sign
    // inside the string slipped past and panicked there).
    match spelled_seconds(value) {
        None => {
            return Err(invalid(
                field,
                format!("{value:?} is not a duration like 90s, 5m or 1h30m"),
            ));
        }
        Some(s) if !s.is_finite() || s > LONGEST => {
            return Err(invalid(field, format!("{value:?} is longer than 100 years")));
        }
        Some(_) => {}
    }
    let parsed = kube::core::Duration::from_str(value).map_err(|e| {
        invalid(
            field,
            format!("{value:?} is not a duration like 90s, 5m or 1h30m ({e})"),
        )
    })?;
    if parsed.is_negative() {
        return Err(invalid(field, format!("{value:?} is negative")));
    }
    Ok(parsed.into())
}

fn secret_ref(field: &str, selector: &SecretKeySelector) -> Result<(), InvalidSpec> {
    if selector.name.is_empty() || selector.key.is_empty() {
        return Err(invalid(field, "needs both name and key"));
    }
    dns_name(&format!("{field}.name"), &selector.name, DnsName::Subdomain, 253)?;
    let key_ok = selector.key.len() <= 253
        && selector
            .key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !key_ok {
        return Err(invalid(
            &format!("{field}.key"),
            format!(
                "{:?} cannot be a Secret key (letters, digits, '-', '_' and '.')",
                selector.key
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod duration_tests {
    use super::*;

    #[test]
    fn a_duration_too_long_for_std_is_refused_not_a_panic() {
        for huge in [
            "99999999999999999999h",
            "-99999999999999999999h",
            "1e400s",
            "876001h",
            "1h-99999999999999999999h",
            "99999999999999999999\u{3bc}s",
        ] {
            assert!(duration("spec.strategy.drainPeriod", huge).is_err(), "{huge}");
        }
        assert_eq!(duration("f", "1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("f", "876000h").unwrap(), Duration::from_secs(876000 * 3600));
        assert!(spelled_seconds("2m5s").is_some_and(|s| (s - 125.0).abs() < 1e-9));
    }
}
