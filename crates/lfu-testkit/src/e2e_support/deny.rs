//! A deterministic "lost status write": a ValidatingAdmissionPolicy that refuses the status
//! write of one namespace's LangfuseUpgrades that first records a given status field, until it
//! is lifted (or dropped). The apiserver answers such a write with an error, exactly as it
//! would a write lost to a conflict or a timeout: whatever the operator does next is on a view
//! without that fact.

use super::kubectl_status;

pub struct DenyStatusFact {
    name: String,
    lifted: bool,
}

impl DenyStatusFact {
    /// Refuse, in namespace `ns`, every status write that sets `status.<field>` while the
    /// object before it had none.
    pub fn install(ns: &str, field: &str) -> DenyStatusFact {
        let name = format!("lfu-deny-{field}-{ns}").to_lowercase();
        let policy = serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": { "name": name },
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": { "resourceRules": [{
                    "apiGroups": ["upgrades.lfu-operator.dev"], "apiVersions": ["*"],
                    "operations": ["UPDATE"], "resources": ["langfuseupgrades/status"],
                }]},
                "validations": [{
                    "expression": format!(
                        "!has(object.status) || !has(object.status.{field}) || (has(oldObject.status) && has(oldObject.status.{field}))"
                    ),
                    "message": format!("test: status.{field} may not be recorded yet"),
                }],
            },
        });
        let binding = serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": { "name": name },
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": { "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": ns } } },
            },
        });
        for object in [policy, binding] {
            let (out, ok) = kubectl_status(&["apply", "-f", "-"], Some(&object.to_string()));
            assert!(ok, "installing the admission policy: {out}");
        }
        DenyStatusFact { name, lifted: false }
    }

    /// The writes go through again.
    pub fn lift(mut self) {
        self.remove();
    }

    fn remove(&mut self) {
        if self.lifted {
            return;
        }
        self.lifted = true;
        for kind in ["validatingadmissionpolicybinding", "validatingadmissionpolicy"] {
            let _ = kubectl_status(
                &["delete", kind, &self.name, "--ignore-not-found", "--wait=false"],
                None,
            );
        }
    }
}

impl Drop for DenyStatusFact {
    fn drop(&mut self) {
        self.remove();
    }
}
