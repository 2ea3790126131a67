//! The environment the operator owns on a v4 container: v3 behaviour kept until a person opts
//! into the new data model, and the flag combinations that make the v4 worker exit at start.

use k8s_openapi::api::core::v1::EnvVar;

pub const WRITE_MODE: &str = "LANGFUSE_MIGRATION_V4_WRITE_MODE";
pub const NATIVE_OTEL: &str = "LANGFUSE_MIGRATION_V4_NATIVE_OTEL_BEHAVIOUR";
pub const PREVIEW_OPT_IN: &str = "LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN";
pub const HISTORIC_BACKFILL: &str = "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL";

/// v3.225.4's defaults, set explicitly because v4's own (`events_only`, `direct`, preview on)
/// turn legacy ingestion off. The backfill stays off while writes are `legacy`: it runs once.
pub const KEEP_V3_BEHAVIOUR: [(&str, &str); 4] = [
    (WRITE_MODE, "legacy"),
    (NATIVE_OTEL, "dual_write"),
    (PREVIEW_OPT_IN, "false"),
    (HISTORIC_BACKFILL, "false"),
];

/// The four variables as a v4 container gets them: the user's value (from `extraEnv`, or one
/// already on the container) where there is one, else the v3-behaviour default.
pub fn effective<'a>(user: impl Fn(&str) -> Option<&'a str>) -> Vec<(&'static str, String)> {
    KEEP_V3_BEHAVIOUR
        .iter()
        .map(|(name, default)| (*name, user(name).unwrap_or(default).to_string()))
        .collect()
}

/// Why v4.x's worker would exit at start with these values (`validateV4Flags`), if it would.
pub fn worker_exit_reason(values: &[(&'static str, String)]) -> Option<String> {
    let get = |name: &str| values.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
    let (mode, otel, preview) = (get(WRITE_MODE)?, get(NATIVE_OTEL)?, get(PREVIEW_OPT_IN)?);
    let allowed = [
        (WRITE_MODE, mode, &["legacy", "dual", "events_only"][..]),
        (NATIVE_OTEL, otel, &["dual_write", "direct"][..]),
        (PREVIEW_OPT_IN, preview, &["true", "false"][..]),
    ];
    for (name, value, values) in allowed {
        if !values.contains(&value) {
            return Some(format!("{name}={value} is not one of {}", values.join(", ")));
        }
    }
    match (mode, otel, preview) {
        ("legacy", "direct", _) => Some(format!(
            "{WRITE_MODE}=legacy with {NATIVE_OTEL}=direct makes the v4 worker exit at start; use dual_write with legacy"
        )),
        ("events_only", "dual_write", _) => Some(format!(
            "{WRITE_MODE}=events_only with {NATIVE_OTEL}=dual_write makes the v4 worker exit at start; use direct with events_only"
        )),
        ("events_only", _, "false") => Some(format!(
            "{WRITE_MODE}=events_only with {PREVIEW_OPT_IN}=false makes the v4 worker exit at start; set it to true"
        )),
        _ => None,
    }
}

/// As container env entries.
pub fn as_env(values: &[(&'static str, String)]) -> Vec<EnvVar> {
    values
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.to_string(),
            value: Some(value.clone()),
            value_from: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Vec<(&'static str, String)> {
        effective(|n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| *v))
    }

    #[test]
    fn by_default_v4_keeps_v3_behaviour_and_starts() {
        let values = with(&[]);
        assert_eq!(values[0], (WRITE_MODE, "legacy".to_string()));
        assert_eq!(values[3], (HISTORIC_BACKFILL, "false".to_string()));
        assert_eq!(worker_exit_reason(&values), None);
    }

    #[test]
    fn the_combinations_that_stop_the_v4_worker_are_named() {
        let refused = [
            (&[(NATIVE_OTEL, "direct")][..], "legacy with"),
            (&[(WRITE_MODE, "events_only")][..], "dual_write"),
            (&[(WRITE_MODE, "events_only"), (NATIVE_OTEL, "direct")][..], "=false"),
            (&[(WRITE_MODE, "Legacy")][..], "is not one of"),
        ];
        for (pairs, words) in refused {
            let why = worker_exit_reason(&with(pairs)).expect("refused");
            assert!(why.contains(words), "{pairs:?}: {why}");
        }
        let opted_in = with(&[
            (WRITE_MODE, "events_only"),
            (NATIVE_OTEL, "direct"),
            (PREVIEW_OPT_IN, "true"),
        ]);
        assert_eq!(worker_exit_reason(&opted_in), None);
        assert_eq!(worker_exit_reason(&with(&[(WRITE_MODE, "dual")])), None);
    }
}
