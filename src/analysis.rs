//! The error-ratio analysis (pure): what to ask Prometheus, and what its answer means. From the
//! shift until v2 is retired, v3 web's error ratio above the threshold for a whole window rolls
//! the upgrade back; a short spike does not, and missing data never does.

use std::time::Duration;

/// What the next observation asks Prometheus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorRatioQuery {
    pub prometheus_url: String,
    pub query: String,
    /// Also read the window's lowest value and its number of points: only once the shift is at
    /// least a window old (before that, v2's errors would be judged as v3's).
    pub window: Option<Duration>,
    pub step: Duration,
}

impl ErrorRatioQuery {
    /// `min_over_time` of the query over the window, at the subquery's step.
    pub fn window_min(&self, window: Duration) -> String {
        format!(
            "min_over_time(({})[{}s:{}s])",
            self.query,
            window.as_secs(),
            self.step.as_secs()
        )
    }
    pub fn window_points(&self, window: Duration) -> String {
        format!(
            "count_over_time(({})[{}s:{}s])",
            self.query,
            window.as_secs(),
            self.step.as_secs()
        )
    }
}

/// What Prometheus answered.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ErrorRatioFacts {
    /// The ratio now (`None`: the query returned nothing, e.g. no traffic).
    pub now: Option<f64>,
    pub window_min: Option<f64>,
    pub window_points: Option<f64>,
}

/// What the analysis concludes.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// At or below the threshold now (or not judged yet).
    Healthy { now: Option<f64> },
    /// Above the threshold now, not (yet) for a whole window.
    Above { now: f64 },
    /// Above the threshold at every point of a whole window: roll back.
    Sustained { lowest: f64, points: f64 },
    /// No answer to judge by: never a reason to roll back.
    Unavailable(String),
}

/// The subquery step: twenty points per window, at least one second apart.
pub fn step(window: Duration) -> Duration {
    Duration::from_secs((window.as_secs() / 20).max(1))
}

/// A window counts as covered when at least this share of its points exist.
const COVERED: f64 = 0.8;

pub fn judge(threshold: f64, window: Duration, facts: &Result<ErrorRatioFacts, String>) -> Verdict {
    let facts = match facts {
        Ok(f) => f,
        Err(why) => return Verdict::Unavailable(why.clone()),
    };
    let expected = (window.as_secs() / step(window).as_secs()) as f64;
    if let (Some(lowest), Some(points)) = (facts.window_min, facts.window_points)
        && lowest > threshold
        && points >= expected * COVERED
    {
        return Verdict::Sustained { lowest, points };
    }
    match facts.now {
        Some(now) if now.is_finite() && now > threshold => Verdict::Above { now },
        Some(now) if now.is_nan() => Verdict::Healthy { now: None },
        now => Verdict::Healthy { now },
    }
}

/// The single value of a Prometheus instant-query answer (`/api/v1/query`): `Ok(None)` when the
/// result is empty, an error when the query returns several series or failed.
pub fn single_value(body: &str) -> Result<Option<f64>, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("not a Prometheus answer: {e}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "Prometheus refused the query: {} {}",
            v["errorType"].as_str().unwrap_or_default(),
            v["error"].as_str().unwrap_or_default()
        ));
    }
    let data = &v["data"];
    let value = match data["resultType"].as_str() {
        Some("scalar") => Some(&data["result"]),
        Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
            Some([]) | None => None,
            Some([one]) => Some(&one["value"]),
            Some(many) => {
                return Err(format!(
                    "the query returns {} series; it must return one value (aggregate it, e.g. with sum)",
                    many.len()
                ));
            }
        },
        other => {
            return Err(format!(
                "the query returns a {}, not a value",
                other.unwrap_or("nothing")
            ));
        }
    };
    let Some(value) = value else { return Ok(None) };
    value[1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .map(Some)
        .ok_or_else(|| format!("unreadable sample {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(600);

    fn facts(now: Option<f64>, min: Option<f64>, points: Option<f64>) -> Result<ErrorRatioFacts, String> {
        Ok(ErrorRatioFacts {
            now,
            window_min: min,
            window_points: points,
        })
    }

    #[test]
    fn only_a_whole_covered_window_above_the_threshold_rolls_back() {
        assert_eq!(
            judge(0.05, W, &facts(Some(0.2), Some(0.06), Some(20.0))),
            Verdict::Sustained {
                lowest: 0.06,
                points: 20.0
            }
        );
        // A spike: the window's lowest point is healthy.
        assert_eq!(
            judge(0.05, W, &facts(Some(0.2), Some(0.01), Some(20.0))),
            Verdict::Above { now: 0.2 }
        );
        // Not judged yet (the shift is younger than the window): above now only.
        assert_eq!(
            judge(0.05, W, &facts(Some(0.2), None, None)),
            Verdict::Above { now: 0.2 }
        );
        // Sparse data never rolls back.
        assert_eq!(
            judge(0.05, W, &facts(Some(0.2), Some(0.3), Some(5.0))),
            Verdict::Above { now: 0.2 }
        );
        assert_eq!(judge(0.05, W, &facts(None, None, None)), Verdict::Healthy { now: None });
        // Exactly at the threshold is not above it; 0/0 (no traffic) is no error.
        assert_eq!(
            judge(0.05, W, &facts(Some(0.05), Some(0.05), Some(20.0))),
            Verdict::Healthy { now: Some(0.05) }
        );
        assert_eq!(
            judge(0.05, W, &facts(Some(f64::NAN), None, None)),
            Verdict::Healthy { now: None }
        );
        assert!(matches!(
            judge(0.05, W, &Err("connection refused".into())),
            Verdict::Unavailable(_)
        ));
    }

    #[test]
    fn prometheus_answers_are_read_strictly() {
        let vector = |r: &str| format!(r#"{{"status":"success","data":{{"resultType":"vector","result":{r}}}}}"#);
        assert_eq!(single_value(&vector("[]")), Ok(None));
        assert_eq!(
            single_value(&vector(r#"[{"metric":{},"value":[1700000000,"0.125"]}]"#)),
            Ok(Some(0.125))
        );
        assert!(
            single_value(&vector(
                r#"[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"1"]}]"#
            ))
            .unwrap_err()
            .contains("2 series")
        );
        assert!(
            single_value(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#)
                .unwrap_err()
                .contains("parse error")
        );
        assert_eq!(
            single_value(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"0.5"]}}"#),
            Ok(Some(0.5))
        );
        assert!(single_value("<html>").is_err());
    }

    #[test]
    fn the_window_is_asked_as_a_subquery() {
        let q = ErrorRatioQuery {
            prometheus_url: "http://p".into(),
            query: "sum(a)/sum(b)".into(),
            window: Some(W),
            step: step(W),
        };
        assert_eq!(q.window_min(W), "min_over_time((sum(a)/sum(b))[600s:30s])");
        assert_eq!(step(Duration::from_secs(10)), Duration::from_secs(1));
    }
}
