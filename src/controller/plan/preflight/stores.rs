//! Redis and S3 as v3 will find them: reached with the settings the v3 containers get, each
//! failure naming the setting to fix. Waivable: an operator fenced off by a NetworkPolicy
//! cannot reach what v3's pods can.

use crate::api::{CheckResult, WaivableCheck};
use crate::databases::stores::{redis_fix, redis_major_minor, s3_fix};

use super::{Ctx, Report};
use crate::controller::observed::Reading;

/// v3 needs Redis 7 (BullMQ); the compatibility matrix users follow lists 7.0 to 7.4.
const MIN_REDIS: (u64, u64) = (7, 0);
const NEWEST_LISTED_REDIS: (u64, u64) = (7, 4);

pub(super) fn redis(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let line = WaivableCheck::Redis;
    match &c.obs.redis {
        // The secrets line already says which Secret key is missing.
        Reading::NotAsked => r.waivable(
            line,
            Fail,
            "not checked: the Redis settings are incomplete (see the secrets line)",
        ),
        Reading::Failed(e) => r.waivable(
            line,
            Fail,
            format!(
                "{e}: {}",
                redis_fix(e, c.spec.redis.connection_string_secret_ref.is_some())
            ),
        ),
        Reading::Answered(facts) if facts.eviction_policy.as_deref().is_some_and(|p| p != "noeviction") => {
            r.waivable(
                line,
                Fail,
                format!(
                    "Redis runs maxmemory-policy {}: Langfuse needs noeviction (its queues lose jobs when keys are evicted); set maxmemory-policy noeviction (redis.conf, CONFIG SET, or your provider's parameter group)",
                    facts.eviction_policy.as_deref().unwrap_or_default()
                ),
            )
        }
        Reading::Answered(facts) => {
            let tls = if facts.tls { ", over TLS" } else { "" };
            match redis_major_minor(&facts.version) {
                Some(v) if v < MIN_REDIS => r.waivable(
                    line,
                    Fail,
                    format!("Redis {} is older than 7.0, which Langfuse v3 needs: upgrade Redis first", facts.version),
                ),
                Some(v) if v > NEWEST_LISTED_REDIS => r.waivable(
                    line,
                    Warn,
                    format!(
                        "Redis {}{tls}: authenticated; newer than 7.4, the last release Langfuse's compatibility matrix lists",
                        facts.version
                    ),
                ),
                Some(_) => r.waivable(line, Pass, format!("Redis {}{tls}: authenticated", facts.version)),
                None => r.waivable(
                    line,
                    Warn,
                    format!("authenticated{tls}, but the server reported no version Langfuse lists ({:?})", facts.version),
                ),
            }
        }
    }
}

pub(super) fn s3(r: &mut Report, c: &Ctx) {
    use CheckResult::*;
    let line = WaivableCheck::S3;
    let bucket = &c.spec.s3.bucket;
    match &c.obs.s3 {
        Reading::NotAsked if c.spec.s3.access_key_id_secret_ref.is_none() => r.waivable(
            line,
            Warn,
            format!(
                "bucket {bucket} not checked: v3 uses its pods' ambient identity, which the operator does not have"
            ),
        ),
        Reading::NotAsked => r.waivable(
            line,
            Fail,
            "not checked: the S3 credentials are incomplete (see the secrets line)",
        ),
        Reading::Failed(e) => r.waivable(line, Fail, format!("{e}: {}", s3_fix(e))),
        Reading::Answered(facts) => match &facts.marker {
            Some(marker) => r.waivable(
                line,
                Pass,
                format!("bucket {bucket}: listed, and {marker} written and deleted"),
            ),
            None => r.waivable(
                line,
                Pass,
                format!("bucket {bucket}: listed (writing not tried: this run changes nothing)"),
            ),
        },
    }
}
