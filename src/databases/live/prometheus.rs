//! Prometheus' instant-query API, for the error-ratio analysis.

use std::time::Duration;

use crate::analysis::{ErrorRatioFacts, ErrorRatioQuery, single_value};

pub async fn error_ratio(client: &reqwest::Client, q: &ErrorRatioQuery) -> Result<ErrorRatioFacts, String> {
    let now = instant(client, &q.prometheus_url, &q.query).await?;
    let (window_min, window_points) = match q.window {
        Some(w) => (
            instant(client, &q.prometheus_url, &q.window_min(w)).await?,
            instant(client, &q.prometheus_url, &q.window_points(w)).await?,
        ),
        None => (None, None),
    };
    Ok(ErrorRatioFacts {
        now,
        window_min,
        window_points,
    })
}

async fn instant(client: &reqwest::Client, base: &str, query: &str) -> Result<Option<f64>, String> {
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let response = client
        .get(&url)
        .query(&[("query", query)])
        .timeout(BUDGET)
        .send()
        .await
        .map_err(|e| format!("cannot reach Prometheus at {base}: {}", super::errors::error_chain(&e)))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| format!("Prometheus at {base}: {}", super::errors::error_chain(&e)))?;
    // Prometheus answers a bad query with 400 and a JSON error: read it for the words.
    match single_value(&body) {
        Err(why) if !status.is_success() && !body.starts_with('{') => {
            Err(format!("Prometheus at {base}: HTTP {status}: {why}"))
        }
        other => other,
    }
}

const BUDGET: Duration = Duration::from_secs(5);
