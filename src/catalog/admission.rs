//! The catalog's road as a `ValidatingAdmissionPolicy` (CEL, run by the apiserver: no webhook
//! server): an update of a Deployment that runs a Langfuse image is refused when the new tag
//! skips a required stop or goes below an irreversible step, with the stop to take first. A
//! `helm upgrade` of the official chart then fails before anything is migrated, instead of the
//! operator flagging `StopSkipped` afterwards.
//!
//! Generated, never hand-edited: the chart's template (`make crd` writes it) and the plain policy
//! the e2e test applies come from [`policy`].

use super::Catalog;
use crate::version::Version;

/// How the policy and its binding are named and scoped.
pub enum Scope {
    /// The chart's template: names, selectors, failure policy and the operator's own account
    /// from its values.
    Helm,
    /// Concrete YAML: `name`, the namespace `namespace` (every one when `None`), and the
    /// operator's account `exempt` (`ns:name`).
    Plain {
        name: String,
        exempt: String,
        namespace: Option<String>,
    },
}

/// A Langfuse image with an exact release: the repository path ends in `langfuse/langfuse` or
/// `langfuse/langfuse-worker` (any registry), the tag is `x.y.z`. Floating tags and digests are
/// not judged here (preflight refuses a floating tag on a migrated database).
const IMAGE_RE: &str = r"^(.+/)?langfuse/langfuse(-worker)?:[0-9]+[.][0-9]+[.][0-9]+$";

/// `x < v` for `x` a CEL list `[major, minor, patch]`.
fn lt(x: &str, v: Version) -> String {
    let (a, b, c) = (v.major, v.minor, v.patch);
    format!("({x}[0] < {a} || ({x}[0] == {a} && ({x}[1] < {b} || ({x}[1] == {b} && {x}[2] < {c}))))")
}

/// The validations, one per required stop and per irreversible step, in catalog order.
fn validations(c: &Catalog) -> Vec<(String, String)> {
    let (from, to) = ("variables.from[0]", "variables.to[0]");
    let judged = "size(variables.from) == 0 || size(variables.to) == 0";
    let moves = "'Langfuse ' + variables.before[0] + ' -> ' + variables.after[0]";
    let mut out = Vec::new();
    for s in &c.required_stops {
        out.push((
            format!("{judged} || !({} && !{})", lt(from, s.stop), lt(to, s.before)),
            format!(
                "{moves} + ' skips the required stop {stop}: set {stop} first and let its background migrations finish, then go on (or let langfuse-upgrade-operator walk the road). {why}'",
                stop = s.stop,
                why = cel_text(&s.why)
            ),
        ));
    }
    for i in &c.irreversible {
        out.push((
            format!("{judged} || !(!{} && {})", lt(from, i.at), lt(to, i.at)),
            format!(
                "{moves} + ' goes below {at}, which cannot be undone once it ran ({drops}): restore the databases from the backup taken before it instead'",
                at = i.at,
                drops = cel_text(&i.drops)
            ),
        ));
    }
    out
}

/// Text inside a single-quoted CEL string.
fn cel_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

/// A YAML double-quoted scalar.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The policy and its binding as YAML (a Helm template for [`Scope::Helm`]).
pub fn policy(c: &Catalog, scope: &Scope) -> String {
    let tags = |object: &str| {
        format!(
            "{object}.spec.template.spec.containers.filter(c, has(c.image) && c.image.matches(variables.image)).map(c, c.image.substring(c.image.lastIndexOf(':') + 1))"
        )
    };
    let (name, exempt, failure, selectors, open, close) = match scope {
        Scope::Helm => (
            r#"{{ include "lfu.fullname" . }}-langfuse-road"#.to_string(),
            r#"system:serviceaccount:{{ .Release.Namespace }}:{{ include "lfu.serviceAccountName" . }}"#.to_string(),
            "{{ .Values.admissionPolicy.failurePolicy }}".to_string(),
            "    namespaceSelector:\n      {{- toYaml .Values.admissionPolicy.namespaceSelector | nindent 6 }}\n    objectSelector:\n      {{- toYaml .Values.admissionPolicy.objectSelector | nindent 6 }}\n".to_string(),
            "{{- if and .Values.admissionPolicy.enabled (.Capabilities.APIVersions.Has \"admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy\") }}\n",
            "{{- end }}\n",
        ),
        Scope::Plain { name, exempt, namespace } => (
            name.clone(),
            format!("system:serviceaccount:{exempt}"),
            "Fail".to_string(),
            namespace
                .as_ref()
                .map(|ns| format!("    namespaceSelector:\n      matchLabels:\n        kubernetes.io/metadata.name: {ns}\n"))
                .unwrap_or_default(),
            "",
            "",
        ),
    };
    let mut y = String::new();
    y.push_str(open);
    y.push_str("# Generated from the release catalog by `langfuse-upgrade-operator admission-policy`\n# (`make crd`); do not edit.\n");
    y.push_str("apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n");
    y.push_str(&format!("  name: {name}\nspec:\n  failurePolicy: {failure}\n"));
    y.push_str("  matchConstraints:\n    resourceRules:\n      - apiGroups: [\"apps\"]\n        apiVersions: [\"v1\"]\n        operations: [\"UPDATE\"]\n        resources: [\"deployments\"]\n");
    // The operator walks the road itself (and may take an in-place hop back while that is
    // still possible): its own writes are not judged here.
    y.push_str("  matchConditions:\n    - name: not-the-operator\n");
    // A block scalar: the Helm template's actions inside it keep their own double quotes.
    y.push_str(&format!(
        "      expression: >-\n        request.userInfo.username != '{exempt}'\n"
    ));
    y.push_str("  variables:\n");
    let vars = [
        ("image", format!("'{IMAGE_RE}'")),
        ("before", tags("oldObject")),
        ("after", tags("object")),
        (
            "from",
            "variables.before.map(t, t.split('.').map(x, int(x)))".to_string(),
        ),
        ("to", "variables.after.map(t, t.split('.').map(x, int(x)))".to_string()),
    ];
    for (n, e) in vars {
        y.push_str(&format!("    - name: {n}\n      expression: {}\n", quoted(&e)));
    }
    y.push_str("  validations:\n");
    for (expression, message) in validations(c) {
        y.push_str(&format!(
            "    - expression: {}\n      messageExpression: {}\n      reason: Forbidden\n",
            quoted(&expression),
            quoted(&message)
        ));
    }
    y.push_str("---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata:\n");
    y.push_str(&format!(
        "  name: {name}\nspec:\n  policyName: {name}\n  validationActions: [Deny]\n"
    ));
    y.push_str("  matchResources:\n");
    if selectors.is_empty() {
        y.push_str("    namespaceSelector: {}\n");
    } else {
        y.push_str(&selectors);
    }
    y.push_str(close);
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_per_stop_and_step_each_naming_what_to_do() {
        let c = Catalog::builtin();
        let v = validations(&c);
        assert_eq!(v.len(), c.required_stops.len() + c.irreversible.len());
        let (expr, message) = &v[0];
        assert!(expr.contains("variables.from[0][0] < 3"), "{expr}");
        assert!(message.contains("skips the required stop 3.225.4"), "{message}");
        assert!(v.iter().any(|(_, m)| m.contains("goes below 4.0.0")));
        // Quotes in the catalog's words cannot end the CEL string early.
        assert_eq!(cel_text("it's"), "it\\'s");
    }

    #[test]
    fn the_plain_policy_is_yaml_with_the_operator_exempt() {
        let text = policy(
            &Catalog::builtin(),
            &Scope::Plain {
                name: "langfuse-road".into(),
                exempt: "ops:lfu".into(),
                namespace: None,
            },
        );
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["kind"], "ValidatingAdmissionPolicy");
        let condition = docs[0]["spec"]["matchConditions"][0]["expression"].as_str().unwrap();
        assert_eq!(
            condition,
            "request.userInfo.username != 'system:serviceaccount:ops:lfu'"
        );
        assert_eq!(docs[1]["spec"]["policyName"], "langfuse-road");
    }
}
