//! A dirty ClickHouse schema (a web pod killed mid-migration: "Dirty database version N"), told
//! with the repair for its height: which release's migration it was, and the documented fix
//! (undo or finish that migration's statements by hand, then force the version before it).

use crate::catalog::Catalog;

/// The repair of a schema left dirty at `height`, in words and statements a person runs.
pub(crate) fn repair(catalog: &Catalog, height: i64, clustered: bool) -> String {
    let before = height - 1;
    let file = match (
        u32::try_from(height).ok().and_then(|h| catalog.release_of_height(h)),
        clustered,
    ) {
        (Some(release), c) => format!(
            "migration {height:04} (shipped by {release}: packages/shared/clickhouse/migrations/{}/{height:04}_*.up.sql at tag v{release})",
            if c { "clustered" } else { "unclustered" }
        ),
        (None, _) => format!("migration {height:04}, which this operator's catalog does not know"),
    };
    format!(
        "ClickHouse's schema_migrations is dirty at {height}: a web pod stopped in the middle of {file}. Scale web to one pod, compare that file's statements with the tables and undo (or finish) the ones that ran, then force the version before it: INSERT INTO schema_migrations (version, dirty, sequence) VALUES ({before}, 0, toUnixTimestamp64Nano(now64(9))); the next web start runs {height:04} again (Langfuse's FAQ, \"ClickHouse handling failed migrations\")"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repair_names_the_release_the_file_and_the_version_to_force() {
        let c = Catalog::builtin();
        let text = repair(&c, 37, false);
        let release = c.release_of_height(37).unwrap();
        assert!(c.schema_height(release) >= 37, "{release}");
        for words in [
            "dirty at 37",
            &format!("shipped by {release}"),
            "unclustered/0037_*.up.sql",
            "VALUES (36, 0,",
        ] {
            assert!(text.contains(words), "{words}: {text}");
        }
        assert!(repair(&c, 9, true).contains("clustered/0009_"));
        assert!(repair(&c, 999, false).contains("does not know"));
    }
}
