//! Preflight's Redis and S3 probes against real servers (tests/db/up.sh): Debian's redis-server
//! with a password and a TLS port, and SeaweedFS's S3 with a full and a read-only identity.
//! Each wrong setting gives its own problem, and the message never carries a secret.

use lfu_testkit::support;

use langfuse_upgrade_operator::databases::stores::{redis_fix, s3_fix};
use langfuse_upgrade_operator::databases::{
    Databases, Live, RedisProblem, RedisTarget, S3Problem, S3Target, SecretString,
};

fn redis(url: &str) -> RedisTarget {
    RedisTarget {
        url: SecretString::new(url),
    }
}

fn s3(key: &str, secret: &str) -> S3Target {
    let env = support::env();
    S3Target {
        bucket: env.s3_bucket.clone(),
        region: env.s3_region.clone(),
        endpoint: Some(env.s3_endpoint.clone()),
        prefix: "events/".into(),
        path_style: true,
        access_key_id: SecretString::new(key),
        secret_access_key: SecretString::new(secret),
        write_marker: true,
    }
}

/// No secret of the test servers appears in what a person would read.
fn assert_no_secret(text: &str) {
    let env = support::env();
    for secret in [
        &env.redis_password,
        &env.s3_secret_access_key,
        &env.s3_ro_secret_access_key,
    ] {
        assert!(!text.contains(secret.as_str()), "a secret leaked into {text:?}");
    }
}

#[tokio::test]
#[ignore = "needs the test servers: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn redis_is_reached_as_v3_would_and_each_wrong_setting_says_what_to_fix() {
    let env = support::env();
    let live = Live::default();
    let ok = live.redis(&redis(&env.redis_url)).await.expect("the right settings");
    let (major, _) = langfuse_upgrade_operator::databases::stores::redis_major_minor(&ok.version).unwrap();
    assert!(major >= 7, "Debian's Redis is 7.x: {ok:?}");
    assert!(!ok.tls);
    assert_eq!(ok.eviction_policy.as_deref(), Some("noeviction"), "Redis's default");
    // A Redis that evicts (allkeys-lru, as caches are often set up) is read as such.
    let set_policy = async |policy: &str| {
        let client = redis::Client::open(env.redis_url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(policy)
            .query_async(&mut conn)
            .await
            .unwrap();
    };
    set_policy("allkeys-lru").await;
    let evicting = live.redis(&redis(&env.redis_url)).await.expect("the right settings");
    set_policy("noeviction").await;
    assert_eq!(evicting.eviction_policy.as_deref(), Some("allkeys-lru"));

    let (host, port, pw) = (&env.redis_host, &env.redis_port, &env.redis_password);
    type Case = (&'static str, String, fn(&RedisProblem) -> bool, &'static str);
    let cases: Vec<Case> = vec![
        (
            "wrong password",
            format!("redis://default:not-{pw}@{host}:{port}/0"),
            |p| matches!(p, RedisProblem::Auth { .. }),
            "wrong user or password",
        ),
        (
            "no password",
            format!("redis://{host}:{port}/0"),
            |p| matches!(p, RedisProblem::Auth { .. }),
            "requires a password",
        ),
        (
            "nothing listens",
            format!("redis://default:{pw}@127.0.0.1:1/0"),
            |p| matches!(p, RedisProblem::Unreachable { .. }),
            "127.0.0.1:1",
        ),
        (
            "TLS with a certificate nobody trusts",
            format!("rediss://default:{pw}@{host}:{}/0", env.redis_tls_port),
            |p| matches!(p, RedisProblem::Tls { .. }),
            "TLS",
        ),
        (
            "plain text to the TLS port",
            format!("redis://default:{pw}@{host}:{}/0", env.redis_tls_port),
            |p| matches!(p, RedisProblem::Unreachable { .. }),
            "tlsEnabled",
        ),
    ];
    for (what, url, expected, words) in cases {
        let problem = live.redis(&redis(&url)).await.expect_err(what);
        let text = format!("{problem}: {}", redis_fix(&problem, true));
        eprintln!("{what}: {text}");
        assert!(expected(&problem), "{what}: {problem:?}");
        assert!(text.contains(words), "{what}: {text}");
        assert_no_secret(&text);
    }
}

#[tokio::test]
#[ignore = "needs the test servers: run `make db` (tests/db/run-tests.sh), which starts them and passes --include-ignored"]
async fn the_event_bucket_is_written_and_each_wrong_setting_says_what_to_fix() {
    let env = support::env();
    let live = Live::default();
    let ok = live
        .s3(&s3(&env.s3_access_key_id, &env.s3_secret_access_key))
        .await
        .expect("the right settings");
    let marker = ok.marker.expect("a marker written");
    assert!(marker.starts_with("events/lfu-preflight-"), "{marker}");
    // ... and deleted again: nothing of the operator's stays in the user's bucket.
    let bucket = s3::Bucket::new(
        &env.s3_bucket,
        s3::Region::Custom {
            region: env.s3_region.clone(),
            endpoint: env.s3_endpoint.clone(),
        },
        s3::creds::Credentials::new(
            Some(&env.s3_access_key_id),
            Some(&env.s3_secret_access_key),
            None,
            None,
            None,
        )
        .unwrap(),
    )
    .unwrap()
    .with_path_style();
    match bucket.head_object(&marker).await {
        Err(s3::error::S3Error::HttpFailWithBody(404, _)) => {}
        other => panic!("the marker is still there: {other:?}"),
    }
    // Without the marker (kubectl lfu plan): listed only.
    let mut read_only_run = s3(&env.s3_access_key_id, &env.s3_secret_access_key);
    read_only_run.write_marker = false;
    assert_eq!(live.s3(&read_only_run).await.unwrap().marker, None);

    let mut missing = s3(&env.s3_access_key_id, &env.s3_secret_access_key);
    missing.bucket = "no-such-bucket".into();
    let mut unreachable = s3(&env.s3_access_key_id, &env.s3_secret_access_key);
    unreachable.endpoint = Some("http://127.0.0.1:1".into());
    type Case = (&'static str, S3Target, fn(&S3Problem) -> bool, &'static str);
    let cases: Vec<Case> = vec![
        (
            "read-only key",
            s3(&env.s3_ro_access_key_id, &env.s3_ro_secret_access_key),
            |p| matches!(p, S3Problem::Denied { action: "write", .. }),
            "s3:PutObject",
        ),
        (
            "wrong secret",
            s3(&env.s3_access_key_id, "not-the-secret"),
            |p| matches!(p, S3Problem::BadCredentials { .. }),
            "accessKeyIdSecretRef",
        ),
        (
            "unknown key",
            s3("AKIANOBODY", "whatever"),
            |p| matches!(p, S3Problem::BadCredentials { .. }),
            "accessKeyIdSecretRef",
        ),
        (
            "missing bucket",
            missing,
            |p| matches!(p, S3Problem::NoSuchBucket { .. }),
            "create the bucket or fix spec.s3.bucket",
        ),
        (
            "nothing listens",
            unreachable,
            |p| matches!(p, S3Problem::Unreachable { .. }),
            "spec.s3.endpoint",
        ),
    ];
    for (what, target, expected, words) in cases {
        let problem = live.s3(&target).await.expect_err(what);
        let text = format!("{problem}: {}", s3_fix(&problem));
        eprintln!("{what}: {text}");
        assert!(expected(&problem), "{what}: {problem:?}");
        assert!(text.contains(words), "{what}: {text}");
        assert_no_secret(&text);
    }
}
