//! `docs/reference.md`: every field of the spec and the status, with its type, default and the
//! words of its doc comment, generated from the CRD (itself generated from the Rust types), so
//! the page cannot drift from what the apiserver accepts (tests/crd.rs holds it to that).

use kube::CustomResourceExt;
use serde_json::Value;

use super::LangfuseUpgrade;

/// The reference page, exactly as committed under `docs/`.
pub fn reference_markdown() -> String {
    let crd = serde_json::to_value(LangfuseUpgrade::crd()).expect("the CRD serializes");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut out = String::from(
        "# LangfuseUpgrade reference\n\n\
         Generated from the CRD by `langfuse-upgrade-operator reference` (`make crd`); do not edit.\n\
         Group `upgrades.lfu-operator.dev`, version `v1alpha1`, kind `LangfuseUpgrade` (short name `lfu`).\n",
    );
    for part in ["spec", "status"] {
        let node = &schema["properties"][part];
        out.push_str(&format!("\n## {part}\n\n{}\n\n", one_line(node)));
        out.push_str("| field | type | default | description |\n|---|---|---|---|\n");
        fields(node, part, &mut out);
    }
    out
}

/// Every property under `node`, depth first, as table rows named by their dotted path.
fn fields(node: &Value, path: &str, out: &mut String) {
    let Some(props) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, child) in props {
        let here = format!("{path}.{name}");
        let mark = if required.contains(&name.as_str()) {
            " (required)"
        } else {
            ""
        };
        let default = child.get("default").map(|d| format!("`{d}`")).unwrap_or_default();
        out.push_str(&format!(
            "| `{here}`{mark} | {} | {default} | {} |\n",
            type_of(child),
            one_line(child).replace('|', "\\|")
        ));
        fields(child, &here, out);
        if let Some(items) = child.get("items") {
            fields(items, &format!("{here}[]"), out);
        }
    }
}

fn type_of(node: &Value) -> String {
    let base = node.get("type").and_then(Value::as_str).unwrap_or("object");
    match (
        base,
        node.get("items").and_then(|i| i.get("type")).and_then(Value::as_str),
    ) {
        ("array", Some(item)) => format!("array of {item}"),
        _ => match node.get("enum").and_then(Value::as_array) {
            Some(values) => {
                let words: Vec<String> = values
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|v| format!("`{v}`"))
                    .collect();
                format!("{base}: {}", words.join(", "))
            }
            None => base.to_string(),
        },
    }
}

/// A description on one line (table cells hold no line breaks).
fn one_line(node: &Value) -> String {
    let text = node.get("description").and_then(Value::as_str).unwrap_or("");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
