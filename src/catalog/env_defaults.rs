//! What an unset variable is in the release that runs it. Langfuse reads its validated env: a
//! gate or a v4 flag the container does not set takes the image's default, which changes with
//! the major (the historic backfill is open by default on v4 images, closed on v3).

use serde::Deserialize;

use super::Catalog;
use crate::version::Version;

/// From `from` on (until a later entry of the same variable), an unset `name` is `value`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvDefault {
    pub name: String,
    #[serde(deserialize_with = "super::version")]
    pub from: Version,
    pub value: String,
}

impl Catalog {
    /// The default of `name` in `release`; `None` when that release does not read it (or the
    /// catalog does not say).
    pub fn env_default(&self, name: &str, release: Version) -> Option<&str> {
        self.env_defaults
            .iter()
            .filter(|d| d.name == name && d.from <= release)
            .max_by_key(|d| d.from)
            .map(|d| d.value.as_str())
    }
}

/// Each variable's entries rise with the release, one value per release.
pub(super) fn check(defaults: &[EnvDefault]) -> Result<(), String> {
    for (i, a) in defaults.iter().enumerate() {
        if let Some(b) = defaults[i + 1..].iter().find(|b| b.name == a.name && b.from <= a.from) {
            return Err(format!(
                "catalog: envDefaults of {} must rise with the release: {} then {}",
                a.name, a.from, b.from
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn the_backfill_gate_is_closed_by_default_on_v3_and_open_on_v4() {
        let c = Catalog::builtin();
        let gate = "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL";
        assert_eq!(c.env_default(gate, v("3.100.0")), None, "not read before 3.203.0");
        assert_eq!(c.env_default(gate, v("3.225.4")), Some("false"));
        assert_eq!(c.env_default(gate, v("4.0.0")), Some("true"));
        assert_eq!(c.env_default(gate, v("4.16.0")), Some("true"));
        let mode = "LANGFUSE_MIGRATION_V4_WRITE_MODE";
        assert_eq!(c.env_default(mode, v("3.225.4")), Some("legacy"));
        assert_eq!(c.env_default(mode, v("4.16.0")), Some("events_only"));
        assert_eq!(
            c.env_default(
                "LANGFUSE_BACKGROUND_MIGRATION_V4_DROP_PID_TID_SORTING_TABLES",
                v("4.16.0")
            ),
            Some("false")
        );
    }

    #[test]
    fn defaults_out_of_order_are_refused() {
        let text = super::super::BUILTIN.replace(
            "- { name: LANGFUSE_MIGRATION_V4_WRITE_MODE, from: 4.0.0, value: events_only }",
            "- { name: LANGFUSE_MIGRATION_V4_WRITE_MODE, from: 3.100.0, value: events_only }",
        );
        let err = Catalog::from_yaml(&text).unwrap_err();
        assert!(err.contains("envDefaults of LANGFUSE_MIGRATION_V4_WRITE_MODE"), "{err}");
    }
}
