//! Observe: read the cluster and the databases into plain [`Observed`] facts. Reads only.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, SecretKeySelector, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};

use super::plan::Needs;
use super::plan::source_container;
use crate::api::LangfuseUpgrade;
use crate::databases::{ClickHouseConnection, Databases, SecretString};
use crate::error::{Error, Result};
use crate::migrations::PostgresFacts;
use crate::resources::deployments::deployment_name;
use crate::resources::labels::{Role, v3_selector};
use crate::verify::ClickHouseFacts;

/// One endpoint of the source Service, by the pod behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub pod: Option<String>,
    pub ready: bool,
}

/// Everything the plan looks at, as plain data.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The v2 Deployment.
    pub source: Option<Deployment>,
    pub service: Option<Service>,
    pub web: Option<Deployment>,
    pub worker: Option<Deployment>,
    /// Every endpoint of every EndpointSlice of the Service.
    pub endpoints: Vec<Endpoint>,
    /// Names of the pods carrying this upgrade's v3 web labels.
    pub v3_web_pods: BTreeSet<String>,
    /// `secret/key` references (from the spec) that do not resolve.
    pub missing_secret_keys: Vec<String>,
    /// HorizontalPodAutoscalers that scale the v2 Deployment.
    pub hpas_on_source: Vec<String>,
    /// `None`: not asked this reconcile.
    pub postgres: Option<std::result::Result<PostgresFacts, String>>,
    pub clickhouse: Option<std::result::Result<ClickHouseFacts, String>>,
}

pub async fn observe<D: Databases>(
    client: &Client,
    db: &D,
    upgrade: &LangfuseUpgrade,
    needs: &Needs,
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
    let slice_selector = format!("kubernetes.io/service-name={}", spec.source.service);
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
    let (source, service, web, worker, slice_list, pod_list, hpa_list) = tokio::try_join!(
        deployments.get_opt(&spec.source.deployment),
        services.get_opt(&spec.source.service),
        deployments.get_opt(&web_name),
        deployments.get_opt(&worker_name),
        slices.list(&slice_params),
        pods.list_metadata(&pod_params),
        hpa_list,
    )?;

    let endpoints = slice_list
        .items
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
    let v3_web_pods = pod_list.items.iter().filter_map(|p| p.metadata.name.clone()).collect();
    let hpas_on_source = hpa_list
        .iter()
        .filter(|h| {
            h.spec.as_ref().is_some_and(|s| {
                s.scale_target_ref.kind == "Deployment" && s.scale_target_ref.name == spec.source.deployment
            })
        })
        .filter_map(|h| h.metadata.name.clone())
        .collect();

    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut missing_secret_keys = Vec::new();
    if needs.secrets {
        for selector in referenced_secrets(upgrade) {
            if read_secret_key(&secrets, selector).await?.is_none() {
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
        clickhouse: None,
    };
    if !needs.postgres.is_empty() {
        observed.postgres = Some(
            match postgres_url(client, ns, upgrade, observed.source.as_ref()).await? {
                Ok(url) => db.postgres(&url, &needs.postgres).await.map_err(|e| e.to_string()),
                Err(why) => Err(why),
            },
        );
    }
    if !needs.clickhouse.is_empty() {
        let ch = &spec.clickhouse;
        let user = read_secret_key(&secrets, &ch.user_secret_ref).await?;
        let password = read_secret_key(&secrets, &ch.password_secret_ref).await?;
        observed.clickhouse = Some(match (user, password) {
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
        });
    }
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

async fn read_secret_key(secrets: &Api<Secret>, selector: &SecretKeySelector) -> Result<Option<SecretString>> {
    let Some(secret) = secrets.get_opt(&selector.name).await? else {
        return Ok(None);
    };
    if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(&selector.key)) {
        return Ok(Some(SecretString::new(String::from_utf8_lossy(&bytes.0).into_owned())));
    }
    Ok(secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(&selector.key))
        .map(|s| SecretString::new(s.clone())))
}

/// The operator's Postgres URL: the explicit Secret, else v2's `DATABASE_URL` as written
/// (a literal, a Secret key or a ConfigMap key). `Ok(Err(..))` says why it cannot be found.
pub async fn postgres_url(
    client: &Client,
    ns: &str,
    upgrade: &LangfuseUpgrade,
    source: Option<&Deployment>,
) -> Result<std::result::Result<SecretString, String>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    if let Some(pg) = &upgrade.spec.postgres {
        let key = &pg.url_secret_ref;
        return Ok(read_secret_key(&secrets, key).await?.ok_or(format!(
            "Secret key {}/{} not found (spec.postgres.urlSecretRef)",
            key.name, key.key
        )));
    }
    let Some(container) = source.and_then(|d| source_container(&upgrade.spec, d).ok()) else {
        return Ok(Err(
            "the v2 container is not found, so its DATABASE_URL cannot be read".into()
        ));
    };
    let Some(var) = container.env.iter().flatten().find(|e| e.name == "DATABASE_URL") else {
        return Ok(Err("the v2 container has no DATABASE_URL env (DATABASE_HOST style is not read); set spec.postgres.urlSecretRef".into()));
    };
    if let Some(value) = &var.value {
        return Ok(Ok(SecretString::new(value.clone())));
    }
    let from = var.value_from.as_ref();
    if let Some(key) = from.and_then(|f| f.secret_key_ref.as_ref()) {
        return Ok(read_secret_key(&secrets, key).await?.ok_or(format!(
            "DATABASE_URL refers to Secret key {}/{}, which is missing",
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
            "DATABASE_URL refers to ConfigMap key {}/{}, which is missing",
            key.name, key.key
        )));
    }
    Ok(Err(
        "DATABASE_URL in the v2 container has neither a value nor a Secret or ConfigMap reference".into(),
    ))
}
