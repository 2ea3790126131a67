//! Redis and S3 as the v3 containers will find them: what preflight asks for and what it gets
//! back, as plain data. The live probes are in `live::redis` and `live::s3`.

use super::SecretString;

/// How to reach Redis: the URL Langfuse would connect with (`redis://` or `rediss://`).
#[derive(Clone, Debug)]
pub struct RedisTarget {
    pub url: SecretString,
}

/// What Redis answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisFacts {
    /// `redis_version` of `INFO server`.
    pub version: String,
    pub tls: bool,
    /// `maxmemory_policy` of `INFO memory` (`None`: the server did not say).
    pub eviction_policy: Option<String>,
}

/// Why Redis could not be checked, each with the setting a person fixes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RedisProblem {
    #[error("cannot reach Redis at {target}: {detail}")]
    Unreachable { target: String, detail: String },
    #[error("Redis at {target} refused the credentials: {detail}")]
    Auth { target: String, detail: String },
    #[error("TLS with Redis at {target} failed: {detail}")]
    Tls { target: String, detail: String },
    #[error("Redis at {target}: {detail}")]
    Other { target: String, detail: String },
}

/// How to reach the event bucket, as `LANGFUSE_S3_EVENT_UPLOAD_*` would.
#[derive(Clone, Debug)]
pub struct S3Target {
    pub bucket: String,
    pub region: String,
    /// `None`: AWS's own endpoint for the region.
    pub endpoint: Option<String>,
    pub prefix: String,
    pub path_style: bool,
    pub access_key_id: SecretString,
    pub secret_access_key: SecretString,
    /// Write and delete a marker object under the prefix (the operator does; `kubectl lfu plan`,
    /// which changes nothing, does not).
    pub write_marker: bool,
}

/// What S3 answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Facts {
    /// The marker object written and deleted again (`None`: not tried).
    pub marker: Option<String>,
}

/// Why the bucket could not be used, each with the setting a person fixes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum S3Problem {
    #[error("cannot reach S3 at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("bucket {bucket} does not exist at {endpoint}")]
    NoSuchBucket { bucket: String, endpoint: String },
    #[error("S3 at {endpoint} rejected the access key or its secret ({code})")]
    BadCredentials { endpoint: String, code: String },
    #[error("the credentials may not {action} under {bucket}/{prefix} ({code})")]
    Denied {
        bucket: String,
        prefix: String,
        action: &'static str,
        code: String,
    },
    #[error("S3 at {endpoint}: {detail}")]
    Other { endpoint: String, detail: String },
    #[error("the endpoint {endpoint} is an IP address: the bucket cannot be a subdomain of it")]
    NeedsPathStyle { endpoint: String },
}

/// Virtual-hosted addressing puts the bucket in the host name, which an IP address cannot
/// take: said before any request (the S3 client's own error is "invalid IPv4 address").
pub fn needs_path_style(target: &S3Target) -> Option<S3Problem> {
    let endpoint = target.endpoint.as_ref().filter(|_| !target.path_style)?;
    let rest = endpoint.split_once("://").map_or(endpoint.as_str(), |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.parse::<std::net::IpAddr>()
        .is_ok()
        .then(|| S3Problem::NeedsPathStyle {
            endpoint: endpoint.clone(),
        })
}

/// The S3 error code of an error response body (`<Code>NoSuchBucket</Code>`), if any.
pub fn s3_error_code(body: &str) -> Option<&str> {
    let start = body.find("<Code>")? + "<Code>".len();
    let len = body[start..].find("</Code>")?;
    Some(&body[start..start + len])
}

/// An S3 answer that is not a success, in the words of [`S3Problem`]; `action` is what was
/// being done (`read`, `write`, `delete`).
pub fn s3_problem(target: &S3Target, action: &'static str, status: u16, body: &str) -> S3Problem {
    let endpoint = target
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("AWS {}", target.region));
    let code = s3_error_code(body).unwrap_or_default().to_string();
    match (status, code.as_str()) {
        (_, "NoSuchBucket") => S3Problem::NoSuchBucket {
            bucket: target.bucket.clone(),
            endpoint,
        },
        (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken" | "ExpiredToken") => {
            S3Problem::BadCredentials { endpoint, code }
        }
        (403, _) => S3Problem::Denied {
            bucket: target.bucket.clone(),
            prefix: target.prefix.clone(),
            action,
            code: if code.is_empty() { "HTTP 403".into() } else { code },
        },
        // A HEAD answer has no body: a 404 on the bucket itself is a missing bucket.
        (404, "") if action == "read" => S3Problem::NoSuchBucket {
            bucket: target.bucket.clone(),
            endpoint,
        },
        _ => S3Problem::Other {
            endpoint,
            detail: format!(
                "HTTP {status}{}",
                if code.is_empty() {
                    String::new()
                } else {
                    format!(" {code}")
                }
            ),
        },
    }
}

/// `major.minor` of a Redis version string.
pub fn redis_major_minor(version: &str) -> Option<(u64, u64)> {
    let mut it = version.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The URL v3 connects with, from the spec and the Secret values it names: the connection
/// string as it is, else `redis[s]://[default:<auth>@]host:port` (REDIS_HOST, REDIS_PORT,
/// REDIS_AUTH, REDIS_TLS_ENABLED).
pub fn redis_target(
    spec: &crate::api::RedisSpec,
    connection_string: Option<SecretString>,
    auth: Option<SecretString>,
) -> Option<RedisTarget> {
    if let Some(url) = connection_string {
        return Some(RedisTarget { url });
    }
    let host = spec.host.as_deref()?;
    let scheme = if spec.tls_enabled { "rediss" } else { "redis" };
    let port = spec.port.unwrap_or(6379);
    let login = auth
        .map(|a| format!("default:{}@", percent_encode(a.expose())))
        .unwrap_or_default();
    Some(RedisTarget {
        url: SecretString::new(format!("{scheme}://{login}{host}:{port}")),
    })
}

/// The bucket as `LANGFUSE_S3_EVENT_UPLOAD_*` names it (region defaults to us-east-1, the
/// prefix to none, as in Langfuse).
pub fn s3_target(
    spec: &crate::api::S3Spec,
    access_key_id: SecretString,
    secret_access_key: SecretString,
    write_marker: bool,
) -> S3Target {
    S3Target {
        bucket: spec.bucket.clone(),
        region: spec.region.clone().unwrap_or_else(|| "us-east-1".into()),
        endpoint: spec.endpoint.clone(),
        prefix: spec.prefix.clone().unwrap_or_default(),
        path_style: spec.force_path_style,
        access_key_id,
        secret_access_key,
        write_marker,
    }
}

/// What preflight tells a person to fix for a Redis problem.
pub fn redis_fix(problem: &RedisProblem, from_connection_string: bool) -> &'static str {
    match (problem, from_connection_string) {
        (RedisProblem::Auth { .. }, true) => "fix the password in the Secret of spec.redis.connectionStringSecretRef",
        (RedisProblem::Auth { .. }, false) => "fix the password in the Secret of spec.redis.authSecretRef",
        (RedisProblem::Tls { .. }, _) => {
            "the server's certificate must be trusted by the system roots and match its host; or turn TLS off (spec.redis.tlsEnabled / redis://)"
        }
        (RedisProblem::Unreachable { .. }, true) => {
            "fix the host and port in the Secret of spec.redis.connectionStringSecretRef"
        }
        (RedisProblem::Unreachable { .. }, false) => "fix spec.redis.host and spec.redis.port",
        (RedisProblem::Other { .. }, _) => "check the Redis settings in spec.redis",
    }
}

/// What preflight tells a person to fix for an S3 problem.
pub fn s3_fix(problem: &S3Problem) -> &'static str {
    match problem {
        S3Problem::Unreachable { .. } => "fix spec.s3.endpoint (and spec.s3.region)",
        S3Problem::NoSuchBucket { .. } => "create the bucket or fix spec.s3.bucket",
        S3Problem::BadCredentials { .. } => {
            "fix the Secrets of spec.s3.accessKeyIdSecretRef and spec.s3.secretAccessKeySecretRef"
        }
        S3Problem::Denied { .. } => {
            "v3 writes every event there: grant the key s3:PutObject, s3:GetObject, s3:DeleteObject and s3:ListBucket on the bucket and prefix"
        }
        S3Problem::Other { .. } => "check spec.s3",
        S3Problem::NeedsPathStyle { .. } => "set spec.s3.forcePathStyle: true",
    }
}

/// RFC 3986 userinfo encoding: a password with `@`, `:` or `/` must not end the login early.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redis_url_is_the_one_v3_builds() {
        let spec = crate::api::RedisSpec {
            connection_string_secret_ref: None,
            host: Some("redis.ns".into()),
            port: None,
            auth_secret_ref: None,
            tls_enabled: true,
        };
        let t = redis_target(&spec, None, Some(SecretString::new("p@ss:w/rd"))).unwrap();
        assert_eq!(t.url.expose(), "rediss://default:p%40ss%3Aw%2Frd@redis.ns:6379");
        let t = redis_target(&spec, Some(SecretString::new("redis://x:6380")), None).unwrap();
        assert_eq!(t.url.expose(), "redis://x:6380");
    }

    #[test]
    fn an_ip_endpoint_without_path_style_is_told_to_set_it() {
        let with = |endpoint: &str, path_style: bool| S3Target {
            endpoint: Some(endpoint.into()),
            path_style,
            ..target()
        };
        for ip in [
            "http://10.0.0.7:9000",
            "https://192.168.1.2",
            "http://[::1]:8333/",
            "10.0.0.7:9000",
        ] {
            let problem = needs_path_style(&with(ip, false)).unwrap_or_else(|| panic!("{ip}"));
            assert_eq!(s3_fix(&problem), "set spec.s3.forcePathStyle: true");
            assert!(problem.to_string().contains(ip), "{problem}");
            assert!(needs_path_style(&with(ip, true)).is_none(), "{ip} with path style");
        }
        for name in ["http://minio.storage:9000", "https://s3.eu-west-1.amazonaws.com"] {
            assert!(needs_path_style(&with(name, false)).is_none(), "{name}");
        }
        let aws = S3Target {
            endpoint: None,
            path_style: false,
            ..target()
        };
        assert!(needs_path_style(&aws).is_none());
    }

    fn target() -> S3Target {
        S3Target {
            bucket: "events".into(),
            region: "us-east-1".into(),
            endpoint: Some("http://s3:8333".into()),
            prefix: "events/".into(),
            path_style: true,
            access_key_id: SecretString::new("AKID"),
            secret_access_key: SecretString::new("s3cr3t"),
            write_marker: true,
        }
    }

    #[test]
    fn error_bodies_become_the_setting_to_fix() {
        let body =
            |code: &str| format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>");
        let t = target();
        assert!(matches!(
            s3_problem(&t, "write", 404, &body("NoSuchBucket")),
            S3Problem::NoSuchBucket { .. }
        ));
        assert!(matches!(
            s3_problem(&t, "write", 403, &body("SignatureDoesNotMatch")),
            S3Problem::BadCredentials { .. }
        ));
        assert!(matches!(
            s3_problem(&t, "write", 403, &body("InvalidAccessKeyId")),
            S3Problem::BadCredentials { .. }
        ));
        assert_eq!(
            s3_problem(&t, "write", 403, &body("AccessDenied")).to_string(),
            "the credentials may not write under events/events/ (AccessDenied)"
        );
        assert!(matches!(
            s3_problem(&t, "read", 404, ""),
            S3Problem::NoSuchBucket { .. }
        ));
        assert_eq!(
            s3_problem(&t, "write", 500, &body("InternalError")).to_string(),
            "S3 at http://s3:8333: HTTP 500 InternalError"
        );
    }

    #[test]
    fn redis_versions() {
        assert_eq!(redis_major_minor("7.0.15"), Some((7, 0)));
        assert_eq!(redis_major_minor("8"), None);
        assert_eq!(redis_major_minor("x.y"), None);
    }
}
