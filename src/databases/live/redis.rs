//! The Redis probe: connect and authenticate as v3 will (TLS with `rediss://`), read the version.

use std::time::Duration;

use crate::databases::stores::{RedisFacts, RedisProblem, RedisTarget};

/// The client for `target`, the address as shown in messages (no password), and whether TLS.
fn client(target: &RedisTarget) -> Result<(redis::Client, String, bool), RedisProblem> {
    let client = redis::Client::open(target.url.expose()).map_err(|e| RedisProblem::Other {
        target: "(unparsable URL)".into(),
        // The kind only: the error's detail may quote the URL and its password.
        detail: format!("the Redis URL is not valid: {:?}", e.kind()),
    })?;
    let addr = client.get_connection_info().addr().clone();
    let tls = matches!(addr, redis::ConnectionAddr::TcpTls { .. });
    let shown = match &addr {
        redis::ConnectionAddr::Tcp(host, port) | redis::ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        other => other.to_string(),
    };
    Ok((client, shown, tls))
}

/// One connection, `INFO server` and `INFO memory` (read where `CONFIG GET` is refused, as
/// managed services do), within `budget`; the password never leaves `target.url`.
pub async fn probe(target: &RedisTarget, budget: Duration) -> Result<RedisFacts, RedisProblem> {
    let (client, shown, tls) = client(target)?;
    let work = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let server = redis::cmd("INFO")
            .arg("server")
            .query_async::<String>(&mut conn)
            .await?;
        let memory = redis::cmd("INFO")
            .arg("memory")
            .query_async::<String>(&mut conn)
            .await?;
        Ok::<_, redis::RedisError>(format!("{server}\n{memory}"))
    };
    let info = match tokio::time::timeout(budget, work).await {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => return Err(problem(&shown, tls, &e)),
        Err(_) => {
            return Err(RedisProblem::Unreachable {
                target: shown,
                detail: format!("no answer within {}s", budget.as_secs()),
            });
        }
    };
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    Ok(RedisFacts {
        version: field("redis_version:").unwrap_or_default(),
        tls,
        eviction_policy: field("maxmemory_policy:"),
    })
}

/// GET the propagation job's two keys (`None` where unset), within `budget`.
pub async fn propagation_keys(
    target: &RedisTarget,
    budget: Duration,
) -> Result<crate::data_model::PropagationKeys, RedisProblem> {
    use crate::data_model::{CURSOR_KEY, HEARTBEAT_KEY, PropagationKeys};
    let (client, shown, tls) = client(target)?;
    let work = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let (cursor, heartbeat): (Option<String>, Option<String>) = redis::pipe()
            .get(CURSOR_KEY)
            .get(HEARTBEAT_KEY)
            .query_async(&mut conn)
            .await?;
        Ok::<_, redis::RedisError>(PropagationKeys {
            cursor,
            heartbeat_ms: heartbeat.and_then(|h| h.trim().parse().ok()),
        })
    };
    match tokio::time::timeout(budget, work).await {
        Ok(Ok(keys)) => Ok(keys),
        Ok(Err(e)) => Err(problem(&shown, tls, &e)),
        Err(_) => Err(RedisProblem::Unreachable {
            target: shown,
            detail: format!("no answer within {}s", budget.as_secs()),
        }),
    }
}

fn problem(target: &str, tls: bool, e: &redis::RedisError) -> RedisProblem {
    let target = target.to_string();
    // The crate sends AUTH itself when the URL has a password and turns any refusal into
    // AuthenticationFailed; without one, the first command gets the server's NOAUTH.
    let text = e.to_string();
    let code = e.code().unwrap_or_default();
    let said = |c: &str| code == c || text.contains(c);
    if matches!(e.kind(), redis::ErrorKind::AuthenticationFailed) || said("WRONGPASS") || said("NOAUTH") {
        let detail = if said("NOAUTH") {
            "it requires a password and none was given"
        } else {
            "wrong user or password"
        };
        return RedisProblem::Auth {
            target,
            detail: detail.to_string(),
        };
    }
    let lower = text.to_lowercase();
    if tls && (lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")) {
        return RedisProblem::Tls { target, detail: text };
    }
    if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped() {
        let hint = if tls || e.is_connection_refusal() {
            ""
        } else {
            " (if this Redis requires TLS, set spec.redis.tlsEnabled or use rediss://)"
        };
        return RedisProblem::Unreachable {
            target,
            detail: format!("{text}{hint}"),
        };
    }
    RedisProblem::Other { target, detail: text }
}
