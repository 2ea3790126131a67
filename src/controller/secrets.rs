//! The credentials observe resolves, never copied anywhere: the Secret keys the spec names, and
//! the Postgres URL v2's Langfuse itself connects with (from its env, as its entrypoint builds it).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, SecretKeySelector};
use kube::{Api, Client};
use tokio::sync::OnceCell;

use crate::api::LangfuseUpgrade;
use crate::databases::SecretString;
use crate::error::Result;
use crate::resources::deployments::views::source_container;

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

pub(super) async fn read_opt(
    secrets: &SecretReader,
    selector: Option<&SecretKeySelector>,
) -> Result<Option<SecretString>> {
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

    pub async fn key(&self, selector: &SecretKeySelector) -> Result<Option<SecretString>> {
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
