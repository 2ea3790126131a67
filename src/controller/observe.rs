//! Observe: read the cluster and the databases into plain [`Observed`] facts. Reads only.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, SecretKeySelector, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};
use tokio::sync::OnceCell;

use super::cache::Caches;
pub use super::observed::{Endpoint, Observed, PostgresError, ReadTimes};
use super::plan::Needs;
use crate::api::LangfuseUpgrade;
use crate::databases::stores::{redis_target, s3_target};
use crate::databases::{ClickHouseConnection, Databases, SecretString};
use crate::error::{Error, Result};
use crate::resources::deployments::deployment_name;
use crate::resources::deployments::views::source_container;
use crate::resources::labels::{Role, v3_selector};

async fn timed<T, E>(
    read: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> std::result::Result<(T, std::time::Duration), E> {
    let started = std::time::Instant::now();
    let out = read.await?;
    Ok((out, started.elapsed()))
}

pub async fn observe<D: Databases>(
    client: &Client,
    db: &D,
    upgrade: &LangfuseUpgrade,
    needs: &Needs,
    caches: Option<&Caches>,
) -> Result<Observed> {
    let ns = upgrade
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = upgrade
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingField("metadata.name"))?;
    if needs.nothing {
        return Ok(Observed::default());
    }
    let spec = &upgrade.spec;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);

    let web_selector = v3_selector(name, Role::Web)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let slice_selector = format!("{}={}", super::cache::SERVICE_NAME_LABEL, spec.source.service);
    let (web_name, worker_name) = (
        deployment_name(&spec.source.deployment, Role::Web),
        deployment_name(&spec.source.deployment, Role::Worker),
    );
    let (slice_params, pod_params, hpa_params) = (
        ListParams::default().labels(&slice_selector),
        ListParams::default().labels(&web_selector),
        ListParams::default(),
    );
    let hpa_list = async {
        match needs.hpas {
            true => hpas.list(&hpa_params).await.map(|l| l.items),
            false => Ok(Vec::new()),
        }
    };
    let (source, service, mut web, mut worker, slice_list, v3_web_pods, hpa_list) = match caches {
        // The watch caches: what the API showed a moment ago, without a round trip; an object
        // they do not hold is read from the API. Every write the plan makes is idempotent or
        // guarded (server-side apply, uid and resourceVersion preconditions, compare-and-swap
        // on this object), so a cache a moment behind costs at most a repeated no-op write.
        Some(c) => {
            let (source, service, web, worker) = tokio::try_join!(
                c.deployment(&deployments, ns, &spec.source.deployment),
                c.service(&services, ns, &spec.source.service),
                c.deployment(&deployments, ns, &web_name),
                c.deployment(&deployments, ns, &worker_name),
            )?;
            let hpa_list = match needs.hpas {
                true => c.hpas_in(ns),
                false => Vec::new(),
            };
            let slices = c.slices_of(ns, &spec.source.service);
            let pods = c.pods_matching(ns, &v3_selector(name, Role::Web));
            let slices = slices.iter().map(|s| s.as_ref().clone()).collect::<Vec<_>>();
            (
                source,
                service,
                web,
                worker,
                slices,
                pods.into_iter().collect::<BTreeSet<_>>(),
                hpa_list,
            )
        }
        None => {
            let (source, service, web, worker, slice_list, pod_list, hpa_list) = tokio::try_join!(
                deployments.get_opt(&spec.source.deployment),
                services.get_opt(&spec.source.service),
                deployments.get_opt(&web_name),
                deployments.get_opt(&worker_name),
                slices.list(&slice_params),
                pods.list_metadata(&pod_params),
                hpa_list,
            )?;
            let pods = pod_list.items.iter().filter_map(|p| p.metadata.name.clone()).collect();
            (source, service, web, worker, slice_list.items, pods, hpa_list)
        }
    };

    // A source already on v3/v4 is its own web; its worker sits beside it (the chart's
    // `<fullname>-worker`). The in-place hops move these two.
    if let Some(d) = source
        .as_ref()
        .filter(|d| crate::resources::deployments::views::runs_v3_or_later(d))
    {
        web = Some(d.clone());
        worker = match crate::resources::deployments::views::worker_name(spec) {
            Some(name) => match caches {
                Some(c) => c.deployment(&deployments, ns, &name).await?,
                None => deployments.get_opt(&name).await?,
            },
            None => None,
        };
    }
    let endpoints = slice_list
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .map(|e| Endpoint {
            pod: e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.clone()),
            ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false),
        })
        .collect();
    let hpas_on_source = hpa_list
        .iter()
        .filter(|h| {
            h.spec.as_ref().is_some_and(|s| {
                s.scale_target_ref.kind == "Deployment" && s.scale_target_ref.name == spec.source.deployment
            })
        })
        .filter_map(|h| h.metadata.name.clone())
        .collect();

    let secrets = SecretReader::new(client, ns);
    let mut missing_secret_keys = Vec::new();
    if needs.secrets {
        for selector in referenced_secrets(upgrade) {
            if secrets.key(selector).await?.is_none() {
                missing_secret_keys.push(format!("{}/{}", selector.name, selector.key));
            }
        }
    }

    let mut observed = Observed {
        source,
        service,
        web,
        worker,
        endpoints,
        v3_web_pods,
        missing_secret_keys,
        hpas_on_source,
        postgres: None,
        postgres_url: None,
        clickhouse: None,
        redis: None,
        s3: None,
        error_ratio: None,
        read_at: None,
        took: ReadTimes::default(),
    };
    if let Some(q) = &needs.error_ratio {
        observed.error_ratio = Some(Box::pin(db.error_ratio(q)).await);
    }
    // Redis and S3, Postgres and ClickHouse answer independently: read them all at once.
    let stores = async {
        if !needs.stores {
            return Ok::<_, crate::error::Error>((None, None));
        }
        let r = &spec.redis;
        let (conn, auth) = (
            read_opt(&secrets, r.connection_string_secret_ref.as_ref()).await?,
            read_opt(&secrets, r.auth_secret_ref.as_ref()).await?,
        );
        let s3 = &spec.s3;
        let (key, secret) = (
            read_opt(&secrets, s3.access_key_id_secret_ref.as_ref()).await?,
            read_opt(&secrets, s3.secret_access_key_secret_ref.as_ref()).await?,
        );
        // A missing Secret key is the secrets line's failure; no probe without the settings.
        let redis = async {
            match redis_target(r, conn, auth) {
                Some(target) => Some(db.redis(&target).await),
                None => None,
            }
        };
        let bucket = async {
            match (key, secret) {
                (Some(key), Some(secret)) => Some(db.s3(&s3_target(s3, key, secret, needs.s3_marker)).await),
                _ => None,
            }
        };
        Ok(tokio::join!(redis, bucket))
    };
    let source = observed.source.as_ref();
    let postgres = async {
        if needs.postgres.is_empty() {
            return Ok(None);
        }
        Ok::<_, crate::error::Error>(Some(
            match postgres_url(client, ns, &secrets, upgrade, source).await? {
                Ok(url) => {
                    let facts = db
                        .postgres(&url, &needs.postgres)
                        .await
                        .map_err(|e| PostgresError::Unreachable(e.to_string()));
                    (facts, Some(url))
                }
                Err(why) => (Err(PostgresError::Settings(why)), None),
            },
        ))
    };
    let clickhouse = async {
        if needs.clickhouse.is_empty() {
            return Ok(None);
        }
        let ch = &spec.clickhouse;
        let user = secrets.key(&ch.user_secret_ref).await?;
        let password = secrets.key(&ch.password_secret_ref).await?;
        Ok::<_, crate::error::Error>(Some(match (user, password) {
            (Some(user), Some(password)) => {
                let conn = ClickHouseConnection {
                    url: ch.url.clone(),
                    user,
                    password,
                    database: ch.database.clone(),
                };
                db.clickhouse(&conn, &needs.clickhouse).await.map_err(|e| e.to_string())
            }
            _ => Err("the ClickHouse user or password Secret key is missing".into()),
        }))
    };
    // The first API error (a Secret) still ends the observation at once. Each read on the
    // heap: the database clients' futures are most of a reconcile's size (68 KB inline), and
    // one that has answered (a refused Redis) frees its share while another still waits.
    let (((redis, s3), stores_took), (postgres, postgres_took), (clickhouse, clickhouse_took)) = tokio::try_join!(
        Box::pin(timed(stores)),
        Box::pin(timed(postgres)),
        Box::pin(timed(clickhouse))
    )?;
    observed.took = ReadTimes {
        postgres: postgres_took,
        clickhouse: clickhouse_took,
        stores: stores_took,
    };
    (observed.redis, observed.s3) = (redis, s3);
    if let Some((facts, url)) = postgres {
        observed.postgres = Some(facts);
        observed.postgres_url = url;
    }
    observed.clickhouse = clickhouse;
    observed.read_at = Some(Timestamp::now());
    Ok(observed)
}

/// Every Secret key the spec refers to.
pub fn referenced_secrets(upgrade: &LangfuseUpgrade) -> Vec<&SecretKeySelector> {
    let spec = &upgrade.spec;
    let mut refs = vec![&spec.clickhouse.user_secret_ref, &spec.clickhouse.password_secret_ref];
    refs.extend(spec.redis.connection_string_secret_ref.as_ref());
    refs.extend(spec.redis.auth_secret_ref.as_ref());
    refs.extend(spec.s3.access_key_id_secret_ref.as_ref());
    refs.extend(spec.s3.secret_access_key_secret_ref.as_ref());
    refs.extend(spec.postgres.as_ref().map(|p| &p.url_secret_ref));
    refs
}

async fn read_opt(secrets: &SecretReader, selector: Option<&SecretKeySelector>) -> Result<Option<SecretString>> {
    match selector {
        Some(s) => secrets.key(s).await,
        None => Ok(None),
    }
}

/// The Secrets one observation reads, each fetched once however many keys of it the spec and
/// v2's env name (a spec usually keeps several keys in one Secret), and dropped with the
/// observation: the next one reads them fresh, so a fixed Secret is seen at the next check.
/// Reads of one name that run at the same time (Postgres and ClickHouse are observed at once)
/// share one GET.
pub struct SecretReader {
    api: Api<Secret>,
    read: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<OnceCell<Option<Secret>>>>>,
}

impl SecretReader {
    pub fn new(client: &Client, ns: &str) -> SecretReader {
        SecretReader {
            api: Api::namespaced(client.clone(), ns),
            read: Default::default(),
        }
    }

    async fn key(&self, selector: &SecretKeySelector) -> Result<Option<SecretString>> {
        let cell = self
            .read
            .lock()
            .expect("secrets lock")
            .entry(selector.name.clone())
            .or_default()
            .clone();
        // A failed GET leaves the cell empty: the next reader of that name tries again.
        let secret = cell.get_or_try_init(|| self.api.get_opt(&selector.name)).await?;
        Ok(secret.as_ref().and_then(|s| secret_key(s, &selector.key)))
    }
}

fn secret_key(secret: &Secret, key: &str) -> Option<SecretString> {
    if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(SecretString::new(String::from_utf8_lossy(&bytes.0).into_owned()));
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|s| SecretString::new(s.clone()))
}

/// The operator's Postgres URL: the explicit Secret, else what v2's Langfuse itself connects
/// with: `DATABASE_URL` when set and not empty, else the URL its entrypoint builds from
/// `DATABASE_USERNAME`, `DATABASE_PASSWORD`, `DATABASE_HOST` and `DATABASE_NAME` (plus
/// `?DATABASE_ARGS`), each as written in the pod spec (a literal, a Secret key or a ConfigMap
/// key, resolved here and never copied). `Ok(Err(..))` says which setting is missing.
pub async fn postgres_url(
    client: &Client,
    ns: &str,
    secrets: &SecretReader,
    upgrade: &LangfuseUpgrade,
    source: Option<&Deployment>,
) -> Result<std::result::Result<SecretString, String>> {
    if let Some(pg) = &upgrade.spec.postgres {
        let key = &pg.url_secret_ref;
        return Ok(secrets.key(key).await?.ok_or(format!(
            "Secret key {}/{} not found (spec.postgres.urlSecretRef)",
            key.name, key.key
        )));
    }
    let Some(container) = source.and_then(|d| source_container(&upgrade.spec, d).ok()) else {
        return Ok(Err(
            "the v2 container is not found, so its database settings cannot be read".into(),
        ));
    };
    let mut values = std::collections::BTreeMap::new();
    for name in DATABASE_ENV {
        let Some(var) = container.env.iter().flatten().find(|e| e.name == name) else {
            continue;
        };
        match env_value(client, ns, secrets, var).await? {
            Ok(v) => {
                values.insert(name, v);
            }
            Err(why) => return Ok(Err(why)),
        }
    }
    Ok(database_url(&values).map_err(|missing| {
        format!(
            "the v2 container sets no DATABASE_URL and not {missing}; set them on v2 or set spec.postgres.urlSecretRef"
        )
    }))
}

/// The env vars Langfuse v2 reads to reach Postgres.
const DATABASE_ENV: [&str; 6] = [
    "DATABASE_URL",
    "DATABASE_USERNAME",
    "DATABASE_PASSWORD",
    "DATABASE_HOST",
    "DATABASE_NAME",
    "DATABASE_ARGS",
];

/// The URL Langfuse v2 connects with, from its resolved database env (pure). `Err` names the
/// settings that are missing.
pub fn database_url(
    values: &std::collections::BTreeMap<&str, SecretString>,
) -> std::result::Result<SecretString, String> {
    let get = |k: &str| values.get(k).map(SecretString::expose).filter(|v| !v.is_empty());
    if let Some(url) = get("DATABASE_URL") {
        return Ok(SecretString::new(url));
    }
    let parts = [
        "DATABASE_USERNAME",
        "DATABASE_PASSWORD",
        "DATABASE_HOST",
        "DATABASE_NAME",
    ];
    let missing: Vec<&str> = parts.into_iter().filter(|k| get(k).is_none()).collect();
    if !missing.is_empty() {
        return Err(missing.join(", "));
    }
    let [user, password, host, name] = parts.map(|k| get(k).unwrap_or_default());
    let mut url = format!("postgresql://{user}:{password}@{host}/{name}");
    if let Some(args) = get("DATABASE_ARGS") {
        url.push('?');
        url.push_str(args);
    }
    Ok(SecretString::new(url))
}

/// One env var's value as the pod would see it: a literal, a Secret key or a ConfigMap key.
/// `Ok(Err(..))` says which reference is missing.
async fn env_value(
    client: &Client,
    ns: &str,
    secrets: &SecretReader,
    var: &k8s_openapi::api::core::v1::EnvVar,
) -> Result<std::result::Result<SecretString, String>> {
    if let Some(value) = &var.value {
        return Ok(Ok(SecretString::new(value.clone())));
    }
    let name = &var.name;
    let from = var.value_from.as_ref();
    if let Some(key) = from.and_then(|f| f.secret_key_ref.as_ref()) {
        return Ok(secrets.key(key).await?.ok_or(format!(
            "{name} refers to Secret key {}/{}, which is missing",
            key.name, key.key
        )));
    }
    if let Some(key) = from.and_then(|f| f.config_map_key_ref.as_ref()) {
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let value = maps
            .get_opt(&key.name)
            .await?
            .and_then(|m| m.data.and_then(|d| d.get(&key.key).cloned()));
        return Ok(value.map(SecretString::new).ok_or(format!(
            "{name} refers to ConfigMap key {}/{}, which is missing",
            key.name, key.key
        )));
    }
    // An empty literal: Langfuse treats it as unset.
    Ok(Ok(SecretString::new(String::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&'static str, &str)]) -> std::collections::BTreeMap<&'static str, SecretString> {
        pairs.iter().map(|(k, v)| (*k, SecretString::new(*v))).collect()
    }

    #[test]
    fn database_url_follows_langfuse_v2_precedence() {
        let parts = [
            ("DATABASE_USERNAME", "langfuse"),
            ("DATABASE_PASSWORD", "pw"),
            ("DATABASE_HOST", "db:5432"),
            ("DATABASE_NAME", "langfuse"),
        ];
        assert_eq!(
            database_url(&env(&parts)).unwrap().expose(),
            "postgresql://langfuse:pw@db:5432/langfuse"
        );
        let mut with_args = parts.to_vec();
        with_args.push(("DATABASE_ARGS", "sslmode=require"));
        assert_eq!(
            database_url(&env(&with_args)).unwrap().expose(),
            "postgresql://langfuse:pw@db:5432/langfuse?sslmode=require"
        );
        // DATABASE_URL wins when set; the chart still renders HOST and NAME next to it.
        let mut with_url = parts.to_vec();
        with_url.push(("DATABASE_URL", "postgres://u:p@other/x"));
        assert_eq!(
            database_url(&env(&with_url)).unwrap().expose(),
            "postgres://u:p@other/x"
        );
        // An empty DATABASE_URL counts as unset, as in Langfuse's entrypoint.
        with_url.pop();
        with_url.push(("DATABASE_URL", ""));
        assert!(database_url(&env(&with_url)).is_ok());
    }

    #[test]
    fn missing_database_settings_are_named() {
        let err = database_url(&env(&[("DATABASE_HOST", "db"), ("DATABASE_NAME", "langfuse")])).unwrap_err();
        assert_eq!(err, "DATABASE_USERNAME, DATABASE_PASSWORD");
        assert_eq!(
            database_url(&env(&[])).unwrap_err(),
            "DATABASE_USERNAME, DATABASE_PASSWORD, DATABASE_HOST, DATABASE_NAME"
        );
    }
}
