//! The v2 Service: which port v3 web must serve (invariant 8) and the selector patch of the shift.

use k8s_openapi::api::core::v1::{Container, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::labels::Labels;

/// The port v3 web listens on, named and numbered so the Service's `targetPort` resolves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebPort {
    pub name: String,
    pub number: i32,
}

pub const DEFAULT_PORT_NAME: &str = "http";

/// Resolve every `targetPort` of the Service against the v2 container; they must all land on
/// one port, which v3 web then serves under the same name and number.
pub fn resolve_web_port(service: &Service, v2: &Container) -> Result<WebPort, String> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() {
        return Err("the Service has no ports".into());
    }
    let container_ports = v2.ports.clone().unwrap_or_default();
    let mut resolved: Option<WebPort> = None;
    for port in &ports {
        let target = port.target_port.clone().unwrap_or(IntOrString::Int(port.port));
        let this = match &target {
            IntOrString::String(name) => {
                let found = container_ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name.as_str()));
                match found {
                    Some(p) => WebPort {
                        name: name.clone(),
                        number: p.container_port,
                    },
                    None => {
                        return Err(format!(
                            "Service port {} targets the named port {name:?}, which the v2 container does not declare",
                            port.port
                        ));
                    }
                }
            }
            IntOrString::Int(number) => {
                let name = container_ports
                    .iter()
                    .find(|p| p.container_port == *number)
                    .and_then(|p| p.name.clone())
                    .unwrap_or_else(|| DEFAULT_PORT_NAME.to_string());
                WebPort { name, number: *number }
            }
        };
        match &resolved {
            None => resolved = Some(this),
            Some(prev) if prev.number == this.number => {}
            Some(prev) => {
                return Err(format!(
                    "the Service targets two container ports ({} and {}); Langfuse web serves one",
                    prev.number, this.number
                ));
            }
        }
    }
    resolved.ok_or_else(|| "the Service has no ports".into())
}

/// Server-side apply body that sets only `spec.selector` (an atomic map): nothing else of the
/// Service is claimed by the operator's field manager.
pub fn selector_apply_body(name: &str, namespace: &str, selector: &Labels) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": namespace },
        "spec": { "selector": selector },
    })
}

pub fn selector_of(service: &Service) -> Labels {
    service
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, ServicePort, ServiceSpec};

    fn service(target: Option<IntOrString>) -> Service {
        Service {
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    port: 3000,
                    target_port: target,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container(ports: &[(&str, i32)]) -> Container {
        Container {
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| ContainerPort {
                        name: Some(n.to_string()),
                        container_port: *p,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn named_target_port_keeps_its_name_and_number() {
        let port = resolve_web_port(
            &service(Some(IntOrString::String("http".into()))),
            &container(&[("http", 3000)]),
        );
        assert_eq!(
            port,
            Ok(WebPort {
                name: "http".into(),
                number: 3000
            })
        );
    }

    #[test]
    fn numeric_target_port_on_a_custom_number() {
        let port = resolve_web_port(&service(Some(IntOrString::Int(8080))), &container(&[]));
        assert_eq!(
            port,
            Ok(WebPort {
                name: "http".into(),
                number: 8080
            })
        );
    }

    #[test]
    fn missing_target_port_defaults_to_the_service_port() {
        let port = resolve_web_port(&service(None), &container(&[("web", 3000)]));
        assert_eq!(
            port,
            Ok(WebPort {
                name: "web".into(),
                number: 3000
            })
        );
    }

    #[test]
    fn unknown_named_port_is_an_error_that_names_it() {
        let err = resolve_web_port(
            &service(Some(IntOrString::String("web".into()))),
            &container(&[("http", 3000)]),
        );
        assert!(err.unwrap_err().contains("\"web\""));
    }

    #[test]
    fn the_selector_apply_claims_only_the_selector() {
        let selector = Labels::from([("app".to_string(), "web".to_string())]);
        let body = selector_apply_body("lf", "ns", &selector);
        assert_eq!(body["spec"].as_object().unwrap().len(), 1);
        assert_eq!(
            body["metadata"].as_object().unwrap().len(),
            2,
            "no labels or annotations"
        );
        assert_eq!(body["spec"]["selector"]["app"], "web");
    }
}
