//! What users install agrees with itself: the release workflow publishes the image the chart
//! pulls by default, builds every platform the krew manifest offers, under the names it points
//! at, and the chart's appVersion is the crate's version. No servers: plain files.

use serde_yaml::Value;

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_chart_pulls_what_the_release_publishes() {
    let workflow = yaml(".github/workflows/release.yml");
    let values = yaml("charts/langfuse-upgrade-operator/values.yaml");
    assert_eq!(workflow["env"]["IMAGE"], values["image"]["repository"]);
    let chart = yaml("charts/langfuse-upgrade-operator/Chart.yaml");
    assert_eq!(chart["appVersion"].as_str(), Some(env!("CARGO_PKG_VERSION")));
    // make image builds the same name locally.
    assert!(read("tests/image/build.sh").contains(values["image"]["repository"].as_str().unwrap()));
}

#[test]
fn every_platform_krew_offers_is_built_under_the_name_it_points_at() {
    let workflow = yaml(".github/workflows/release.yml");
    let built: Vec<String> = workflow["jobs"]["binaries"]["strategy"]["matrix"]["include"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["platform"].as_str().unwrap().to_string())
        .collect();
    let mut expected = vec!["darwin_amd64", "darwin_arm64", "linux_amd64", "linux_arm64"];
    let mut got: Vec<&str> = built.iter().map(String::as_str).collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    // The krew manifest is a template (not plain YAML until the bot fills it): read it as text.
    let krew = read("plugins/krew/lfu.yaml");
    for platform in &built {
        let (os, arch) = platform.split_once('_').unwrap();
        assert!(
            krew.contains(&format!("os: {os}, arch: {arch}")),
            "{platform} not in the krew manifest"
        );
        assert!(
            krew.contains(&format!(
                "kubectl-lfu_{{{{ .TagName | trimPrefix \\\"v\\\" }}}}_{platform}.tar.gz"
            )),
            "{platform} archive name"
        );
    }
    let archive = workflow["jobs"]["binaries"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str())
        .find(|r| r.contains("tar -czf"))
        .unwrap();
    assert!(
        archive.contains("${bin}_${version}_${{ matrix.platform }}.tar.gz"),
        "{archive}"
    );
    assert_eq!(krew.matches("bin: kubectl-lfu").count(), 4);
}
