//! The S3 probe: the event bucket, reached with the settings v3 will get; a marker object
//! written and deleted under the prefix, so a read-only key is found before v3 needs to write.

use std::time::Duration;

use s3::creds::Credentials;
use s3::{Bucket, Region};

use crate::databases::stores::{S3Facts, S3Problem, S3Target, needs_path_style, s3_problem};

pub async fn probe(target: &S3Target, budget: Duration) -> Result<S3Facts, S3Problem> {
    if let Some(problem) = needs_path_style(target) {
        return Err(problem);
    }
    let endpoint = target
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("AWS {}", target.region));
    let other = |detail: String| S3Problem::Other {
        endpoint: endpoint.clone(),
        detail,
    };
    let region = match &target.endpoint {
        Some(url) => Region::Custom {
            region: target.region.clone(),
            endpoint: url.trim_end_matches('/').to_string(),
        },
        None => target
            .region
            .parse()
            .map_err(|_| other(format!("unknown region {}", target.region)))?,
    };
    let credentials = Credentials::new(
        Some(target.access_key_id.expose()),
        Some(target.secret_access_key.expose()),
        None,
        None,
        None,
    )
    .map_err(|_| other("the access key or secret cannot be used".into()))?;
    let mut bucket = Bucket::new(&target.bucket, region, credentials)
        .map_err(|e| other(e.to_string()))?
        .with_request_timeout(budget)
        .map_err(|e| other(e.to_string()))?;
    if target.path_style {
        bucket = bucket.with_path_style();
    }
    let unreachable = |e: s3::error::S3Error| match e {
        s3::error::S3Error::HttpFailWithBody(status, body) => (status, body),
        e => (0, super::errors::error_chain(&e)),
    };
    // Listing one key under the prefix: the bucket exists and the key may read it.
    let (body, status) = match bucket.list_page(target.prefix.clone(), None, None, None, Some(1)).await {
        Ok((_, status)) => (String::new(), status),
        Err(e) => {
            let (status, body) = unreachable(e);
            (body, status)
        }
    };
    if status == 0 {
        return Err(S3Problem::Unreachable { endpoint, detail: body });
    }
    if !(200..300).contains(&status) {
        return Err(s3_problem(target, "read", status, &body));
    }
    if !target.write_marker {
        return Ok(S3Facts { marker: None });
    }
    let marker = format!("{}lfu-preflight-{:016x}", target.prefix, rand::random::<u64>());
    let put = bucket.put_object(&marker, b"langfuse-upgrade-operator preflight").await;
    let (status, body) = match put {
        Ok(r) => (r.status_code(), String::from_utf8_lossy(r.as_slice()).into_owned()),
        Err(e) => unreachable(e),
    };
    if status == 0 {
        return Err(S3Problem::Unreachable { endpoint, detail: body });
    }
    if !(200..300).contains(&status) {
        return Err(s3_problem(target, "write", status, &body));
    }
    let del = bucket.delete_object(&marker).await;
    let (status, body) = match del {
        Ok(r) => (r.status_code(), String::from_utf8_lossy(r.as_slice()).into_owned()),
        Err(e) => unreachable(e),
    };
    if !(200..300).contains(&status) {
        return Err(s3_problem(target, "delete", status, &body));
    }
    Ok(S3Facts { marker: Some(marker) })
}

/// How long one probe may take.
pub const BUDGET: Duration = Duration::from_secs(10);
