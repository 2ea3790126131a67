//! `kubectl lfu road --from X --to Y`: answered without a cluster.

use std::process::ExitCode;

/// The road, without a cluster: exit 0 with the road, 1 when there is none.
pub fn road(from: &str, to: &str, catalog: Option<&std::path::Path>, accept_unknown: bool) -> Result<ExitCode, String> {
    use langfuse_upgrade_operator::catalog::Catalog;
    let catalog = match catalog {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the catalog {}: {e}", path.display()))
            .and_then(|text| Catalog::from_yaml(&text))?,
        None => Catalog::builtin(),
    };
    match langfuse_upgrade_operator::cli::road::road_text(&catalog, from, to, accept_unknown) {
        Ok(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            eprintln!("no road: {why}");
            Ok(ExitCode::from(1))
        }
    }
}
