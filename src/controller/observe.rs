//! Observe: read the cluster and the databases into plain [`Observed`] facts. Reads only.

use jiff::Timestamp;
use kube::Client;

use super::cache::Caches;
use super::objects::{ApiObjects, CachedObjects, ObjectSource};
pub use super::observed::{Endpoint, Observed, PostgresError, ReadTimes, Reading};
use super::plan::Needs;
use super::secrets::read_opt;
pub use super::secrets::{SecretReader, postgres_url, referenced_secrets};
use crate::api::LangfuseUpgrade;
use crate::databases::stores::{redis_target, s3_target};
use crate::databases::{ClickHouseConnection, Databases};
use crate::error::{Error, Result};
use crate::resources::deployments::{deployment_name, views};
use crate::resources::labels::{Role, v3_selector};

async fn timed<T, E>(
    read: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> std::result::Result<(T, std::time::Duration), E> {
    let started = std::time::Instant::now();
    let out = read.await?;
    Ok((out, started.elapsed()))
}

/// Read what `needs` asks for: the cluster's objects (from the caches when given), then the
/// Secrets, then the databases and stores at once.
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
    let mut observed = match caches {
        Some(c) => cluster(&CachedObjects::new(c, client, ns), upgrade, name, needs).await?,
        None => cluster(&ApiObjects::new(client, ns), upgrade, name, needs).await?,
    };
    let secrets = SecretReader::new(client, ns);
    if needs.secrets {
        observed.missing_secret_keys = missing_secret_keys(&secrets, upgrade).await?;
    }
    databases(client, db, &secrets, upgrade, needs, &mut observed).await?;
    observed.read_at = Some(Timestamp::now());
    Ok(observed)
}

/// The cluster's objects the plan looks at, read at once from `objects`.
async fn cluster<S: ObjectSource>(
    objects: &S,
    upgrade: &LangfuseUpgrade,
    name: &str,
    needs: &Needs,
) -> Result<Observed> {
    let spec = &upgrade.spec;
    let (web_name, worker_name) = (
        deployment_name(&spec.source.deployment, Role::Web),
        deployment_name(&spec.source.deployment, Role::Worker),
    );
    let web_selector = v3_selector(name, Role::Web);
    let hpas = async {
        match needs.hpas {
            true => objects.hpas().await,
            false => Ok(Vec::new()),
        }
    };
    let (source, service, mut web, mut worker, slices, v3_web_pods, hpas) = tokio::try_join!(
        objects.deployment(&spec.source.deployment),
        objects.service(&spec.source.service),
        objects.deployment(&web_name),
        objects.deployment(&worker_name),
        objects.slices_of(&spec.source.service),
        objects.pods_matching(&web_selector),
        hpas,
    )?;
    // A source already on v3/v4 is its own web; its worker sits beside it (the chart's
    // `<fullname>-worker`). The in-place hops move these two.
    if let Some(d) = source.as_ref().filter(|d| views::runs_v3_or_later(d)) {
        web = Some(d.clone());
        worker = match views::worker_name(spec) {
            Some(name) => objects.deployment(&name).await?,
            None => None,
        };
    }
    let (chart_web, chart_worker) = match &spec.handoff {
        Some(h) => {
            let name = |role| crate::handoff::chart::deployment(&h.release, h.fullname_override.as_deref(), role);
            let (web, worker) = (name(Role::Web), name(Role::Worker));
            let (web, worker) = tokio::try_join!(objects.deployment(&web), objects.deployment(&worker))?;
            (web.map(Box::new), worker.map(Box::new))
        }
        None => (None, None),
    };
    let endpoints = slices
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
    let hpas_on_source = hpas
        .iter()
        .filter(|h| {
            h.spec.as_ref().is_some_and(|s| {
                s.scale_target_ref.kind == "Deployment" && s.scale_target_ref.name == spec.source.deployment
            })
        })
        .filter_map(|h| h.metadata.name.clone())
        .collect();
    Ok(Observed {
        source,
        service,
        web,
        worker,
        chart_web,
        chart_worker,
        endpoints,
        v3_web_pods,
        hpas_on_source,
        ..Observed::default()
    })
}

/// `secret/key` references of the spec that do not resolve.
async fn missing_secret_keys(secrets: &SecretReader, upgrade: &LangfuseUpgrade) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for selector in referenced_secrets(upgrade) {
        if secrets.key(selector).await?.is_none() {
            missing.push(format!("{}/{}", selector.name, selector.key));
        }
    }
    Ok(missing)
}

/// The databases and stores `needs` asks for, read at once into `observed`.
async fn databases<D: Databases>(
    client: &Client,
    db: &D,
    secrets: &SecretReader,
    upgrade: &LangfuseUpgrade,
    needs: &Needs,
    observed: &mut Observed,
) -> Result<()> {
    let ns = upgrade.metadata.namespace.as_deref().unwrap_or_default();
    let spec = &upgrade.spec;
    if let Some(q) = &needs.error_ratio {
        observed.error_ratio = Box::pin(db.error_ratio(q)).await.into();
    }
    // Redis and S3, Postgres and ClickHouse answer independently: read them all at once.
    let stores = async {
        if !needs.stores && !needs.redis && !needs.propagation {
            return Ok::<_, crate::error::Error>(((None, None), None));
        }
        let r = &spec.redis;
        let (conn, auth) = (
            read_opt(secrets, r.connection_string_secret_ref.as_ref()).await?,
            read_opt(secrets, r.auth_secret_ref.as_ref()).await?,
        );
        let s3 = &spec.s3;
        // The bucket's Secrets only when the bucket is to be read (not for a v4 hop's Redis).
        let (key, secret) = match needs.stores {
            true => (
                read_opt(secrets, s3.access_key_id_secret_ref.as_ref()).await?,
                read_opt(secrets, s3.secret_access_key_secret_ref.as_ref()).await?,
            ),
            false => (None, None),
        };
        // A missing Secret key is the secrets line's failure; no probe without the settings.
        let target = redis_target(r, conn, auth);
        let redis = async {
            match &target {
                Some(target) if needs.stores || needs.redis => Some(db.redis(target).await),
                _ => None,
            }
        };
        let keys = async {
            match &target {
                Some(target) if needs.propagation => Some(db.propagation_keys(target).await),
                _ => None,
            }
        };
        let bucket = async {
            match (key, secret) {
                (Some(key), Some(secret)) => Some(db.s3(&s3_target(s3, key, secret, needs.s3_marker)).await),
                _ => None,
            }
        };
        let (redis, bucket, keys) = tokio::join!(redis, bucket, keys);
        Ok(((redis, bucket), keys))
    };
    let source = observed.source.as_ref();
    let postgres = async {
        if needs.postgres.is_empty() {
            return Ok(None);
        }
        Ok::<_, crate::error::Error>(Some(match postgres_url(client, ns, secrets, upgrade, source).await? {
            Ok(url) => {
                let facts = db
                    .postgres(&url, &needs.postgres)
                    .await
                    .map_err(|e| PostgresError::Unreachable(e.to_string()));
                (facts, Some(url))
            }
            Err(why) => (Err(PostgresError::Settings(why)), None),
        }))
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
    let ((((redis, s3), keys), stores_took), (postgres, postgres_took), (clickhouse, clickhouse_took)) = tokio::try_join!(
        Box::pin(timed(stores)),
        Box::pin(timed(postgres)),
        Box::pin(timed(clickhouse))
    )?;
    observed.took = ReadTimes {
        postgres: postgres_took,
        clickhouse: clickhouse_took,
        stores: stores_took,
    };
    observed.redis = redis.map(Reading::from).unwrap_or_default();
    observed.propagation = keys.map(Reading::from).unwrap_or_default();
    observed.s3 = s3.map(Reading::from).unwrap_or_default();
    if let Some((facts, url)) = postgres {
        observed.postgres = facts.into();
        observed.postgres_url = url;
    }
    observed.clickhouse = clickhouse.map(Reading::from).unwrap_or_default();
    Ok(())
}
