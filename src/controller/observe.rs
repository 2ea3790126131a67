//! Observe: read the cluster and the databases into plain [`Observed`] facts. Reads only.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};

use super::cache::Caches;
pub use super::observed::{Endpoint, Observed, PostgresError, ReadTimes};
use super::plan::Needs;
use super::secrets::read_opt;
pub use super::secrets::{SecretReader, postgres_url, referenced_secrets};
use crate::api::LangfuseUpgrade;
use crate::databases::stores::{redis_target, s3_target};
use crate::databases::{ClickHouseConnection, Databases};
use crate::error::{Error, Result};
use crate::resources::deployments::deployment_name;
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
