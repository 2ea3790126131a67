//! Producers `events_only` would break, classified as Langfuse's own v4 migration page does
//! (§4.2 "Client inventory"): per project, SDK name and version, public key and source as seen
//! in `events_core`. Python SDKs before major 4 and JS/TS before major 5 need an update; an
//! unknown SDK or version on the ingestion API needs one too; OTel is fine only in real time
//! (source `otel`, not the delayed `otel-dual-write`).

use crate::api::ProducerStatus;

/// One (project, source, SDK name, SDK version, public key) series seen in `events_core`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerRow {
    pub project: String,
    pub source: String,
    pub sdk_name: String,
    pub sdk_version: String,
    pub public_key: String,
    pub events: u64,
}

/// The SDK families whose versions are judged, with the first compatible major.
fn family(sdk_name: &str) -> Option<(&'static str, u64)> {
    const JS: [&str; 14] = [
        "javascript",
        "js",
        "typescript",
        "ts",
        "langfuse-js",
        "langfuse-ts",
        "@langfuse/client",
        "@langfuse/browser",
        "@langfuse/core",
        "@langfuse/langchain",
        "@langfuse/otel",
        "@langfuse/openai",
        "@langfuse/tracing",
        "@langfuse/vercel-ai-sdk",
    ];
    let name = sdk_name.trim().to_lowercase();
    match name.as_str() {
        "python" | "langfuse-python" => Some(("Python", 4)),
        n if JS.contains(&n) => Some(("JS/TS", 5)),
        _ => None,
    }
}

/// `1.2.3`, `v1.2.3`, `1.2.3-beta.1`, `1.2.3rc1`: its major, else `None`.
fn major(version: &str) -> Option<u64> {
    let v = version.trim().to_lowercase();
    let v = v.strip_prefix('v').unwrap_or(&v);
    let mut parts = v.splitn(3, '.');
    let (a, b, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let suffix = &rest[digits..];
    let suffix_ok = suffix.is_empty()
        || suffix.starts_with(['-', '+']) && suffix.len() > 1
        || ["a", "b", "rc"].iter().any(|p| {
            suffix
                .strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        });
    let numeric = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    (numeric(a) && numeric(b) && digits > 0 && suffix_ok)
        .then(|| a.parse().ok())
        .flatten()
}

/// What to do about a producer before the cutover; `None` when it keeps working.
pub fn remedy(row: &ProducerRow) -> Option<String> {
    if let Some((family, first)) = family(&row.sdk_name) {
        return match major(&row.sdk_version) {
            Some(m) if m >= first => None,
            Some(_) => Some(format!("update the {family} SDK to v{first} or later")),
            None => Some(format!(
                "its {family} SDK version {:?} is not recognised: update it to v{first} or later",
                row.sdk_version
            )),
        };
    }
    if row.source.starts_with("otel") {
        return (row.source != "otel").then(|| {
            "send its OpenTelemetry spans with the header x-langfuse-ingestion-version: 4 (they reach the events tables only through the dual write today)".to_string()
        });
    }
    Some("an unknown producer on the batch ingestion API, which events_only rejects: move it to a v4 SDK or OpenTelemetry".into())
}

/// The producers that need action, most events first.
pub fn incompatible(rows: &[ProducerRow]) -> Vec<ProducerStatus> {
    let mut out: Vec<ProducerStatus> = rows
        .iter()
        .filter_map(|r| {
            Some(ProducerStatus {
                remedy: remedy(r)?,
                project: r.project.clone(),
                sdk_name: r.sdk_name.clone(),
                sdk_version: r.sdk_version.clone(),
                public_key: r.public_key.clone(),
                source: r.source.clone(),
                events: r.events,
            })
        })
        .collect();
    out.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.project.cmp(&b.project)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sdk: &str, version: &str, source: &str) -> ProducerRow {
        ProducerRow {
            project: "p".into(),
            source: source.into(),
            sdk_name: sdk.into(),
            sdk_version: version.into(),
            public_key: "pk-lf-1".into(),
            events: 1,
        }
    }

    #[test]
    fn sdks_are_judged_by_major_as_langfuse_does() {
        assert_eq!(remedy(&row("python", "4.7.1", "otel")), None);
        assert_eq!(remedy(&row("langfuse-python", "v4.0.0", "otel-dual-write")), None);
        assert!(
            remedy(&row("python", "3.14.0", "otel-dual-write"))
                .unwrap()
                .contains("Python SDK to v4")
        );
        assert!(remedy(&row("python", "2.60.3", "ingestion-api-dual-write")).is_some());
        assert_eq!(remedy(&row("@langfuse/tracing", "5.4.0", "otel")), None);
        assert_eq!(remedy(&row("langfuse-js", "5.0.0rc1", "otel")), None);
        assert!(
            remedy(&row("javascript", "4.2.0", "otel-dual-write"))
                .unwrap()
                .contains("JS/TS")
        );
        assert!(
            remedy(&row("python", "unknown", "otel"))
                .unwrap()
                .contains("not recognised")
        );
    }

    #[test]
    fn otel_is_fine_in_real_time_only_and_unknown_batch_producers_break() {
        assert_eq!(remedy(&row("opentelemetry", "1.30.0", "otel")), None);
        assert!(remedy(&row("opentelemetry", "1.30.0", "otel-dual-write")).is_some());
        assert!(
            remedy(&row("dify", "1.9.0", "ingestion-api-dual-write"))
                .unwrap()
                .contains("batch ingestion")
        );
        let rows = [
            row("dify", "1.9.0", "ingestion-api-dual-write"),
            ProducerRow {
                events: 40,
                ..row("python", "2.1.0", "ingestion-api-dual-write")
            },
            row("python", "4.7.0", "otel"),
        ];
        let bad = incompatible(&rows);
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].events, 40);
    }
}
