//! What must survive `helm uninstall` of the release that installed v2: the Service that serves,
//! the Secrets and ServiceAccount the running pods read, and a database that release deployed.
//! Each gets `helm.sh/resource-policy: keep`, which Helm honours on uninstall and on an upgrade
//! that drops the object (`official-chart-v3-v4-layout.md` §6).

use k8s_openapi::api::apps::v1::Deployment;

pub const KEEP_ANNOTATION: &str = "helm.sh/resource-policy";

/// The kinds the handoff protects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeptKind {
    Service,
    Secret,
    ServiceAccount,
    StatefulSet,
}

impl KeptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeptKind::Service => "Service",
            KeptKind::Secret => "Secret",
            KeptKind::ServiceAccount => "ServiceAccount",
            KeptKind::StatefulSet => "StatefulSet",
        }
    }
}

/// One object to keep, in the upgrade's namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Kept {
    pub kind: KeptKind,
    pub name: String,
}

impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.name)
    }
}

/// The objects to keep: `service`, every Secret the pods of `running` read (env, envFrom,
/// volumes), their ServiceAccount, and the in-cluster database `database_host` names (the
/// bundled PostgreSQL of chart 0.8.0: its StatefulSet, Services and Secret share the name).
pub fn targets(service: &str, running: &[&Deployment], database_host: Option<&str>) -> Vec<Kept> {
    let mut out = vec![Kept {
        kind: KeptKind::Service,
        name: service.to_string(),
    }];
    let mut add = |kind, name: &str| {
        out.push(Kept {
            kind,
            name: name.to_string(),
        })
    };
    for pod in running
        .iter()
        .filter_map(|d| d.spec.as_ref().and_then(|s| s.template.spec.as_ref()))
    {
        if let Some(sa) = pod.service_account_name.as_deref().filter(|s| *s != "default") {
            add(KeptKind::ServiceAccount, sa);
        }
        for c in pod.containers.iter().chain(pod.init_containers.iter().flatten()) {
            for e in c.env.iter().flatten() {
                if let Some(r) = e.value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref()) {
                    add(KeptKind::Secret, &r.name);
                }
            }
            for f in c.env_from.iter().flatten() {
                if let Some(r) = &f.secret_ref {
                    add(KeptKind::Secret, &r.name);
                }
            }
        }
        for v in pod.volumes.iter().flatten() {
            if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
                add(KeptKind::Secret, name);
            }
        }
    }
    if let Some(name) = database_host.and_then(in_cluster_name) {
        for kind in [KeptKind::StatefulSet, KeptKind::Service, KeptKind::Secret] {
            add(kind, &name);
        }
        add(KeptKind::Service, &format!("{name}-hl"));
    }
    out.sort();
    out.dedup();
    out
}

/// The Service name of an in-cluster host (`db`, `db.ns`, `db.ns.svc...`); `None` for an IP
/// address or a host outside the cluster.
fn in_cluster_name(host: &str) -> Option<String> {
    let host = host.split(':').next().unwrap_or(host);
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() || host == "localhost" {
        return None;
    }
    let mut labels = host.split('.');
    let first = labels.next()?;
    let rest: Vec<&str> = labels.collect();
    let in_cluster = match rest.len() {
        0 | 1 => true,
        _ => rest.get(1) == Some(&"svc"),
    };
    in_cluster.then(|| first.to_string())
}

/// The host of a Postgres URL (`postgresql://user:pw@host:port/db`), never its credentials.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host = rest.split(['/', '?']).next()?;
    Some(host.split(':').next().unwrap_or(host)).filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_cluster_hosts_name_their_service_and_others_name_nothing() {
        assert_eq!(in_cluster_name("prod-postgresql"), Some("prod-postgresql".into()));
        assert_eq!(
            in_cluster_name("prod-postgresql.langfuse:5432"),
            Some("prod-postgresql".into())
        );
        assert_eq!(
            in_cluster_name("prod-postgresql.langfuse.svc.cluster.local"),
            Some("prod-postgresql".into())
        );
        assert_eq!(in_cluster_name("db.example.com"), None);
        assert_eq!(in_cluster_name("mydb.abc.eu-west-1.rds.amazonaws.com"), None);
        assert_eq!(in_cluster_name("10.0.0.5"), None);
        assert_eq!(in_cluster_name("localhost"), None);
    }

    #[test]
    fn a_url_gives_its_host_and_never_its_password() {
        assert_eq!(url_host("postgresql://u:p@ss@db:5432/x?sslmode=disable"), Some("db"));
        assert_eq!(url_host("postgres://db.ns/x"), Some("db.ns"));
        assert_eq!(url_host("not a url"), None);
    }

    #[test]
    fn the_service_secrets_account_and_bundled_database_are_kept_once_each() {
        let (web, worker) = crate::testing::v3_pair(&crate::testing::spec(), "3.225.4", true, false);
        let kept = targets("prod-langfuse", &[&web, &worker], Some("prod-postgresql"));
        let names: Vec<String> = kept.iter().map(ToString::to_string).collect();
        for wanted in [
            "Service/prod-langfuse",
            "Secret/prod-langfuse-nextauth",
            "StatefulSet/prod-postgresql",
            "Service/prod-postgresql-hl",
            "Secret/prod-postgresql",
        ] {
            assert!(names.contains(&wanted.to_string()), "{wanted}: {names:?}");
        }
        let mut sorted = names.clone();
        sorted.dedup();
        assert_eq!(sorted, names, "each once");
    }
}
