//! What the plan looks at, as plain data: the facts one reconcile read from the cluster and the
//! databases. Filled by `observe` (the reader); the plan imports only this.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;

use crate::databases::{RedisFacts, RedisProblem, S3Facts, S3Problem, SecretString};
use crate::migrations::PostgresFacts;
pub use crate::reading::Reading;
use crate::resources::labels::Role;
use crate::verify::ClickHouseFacts;

/// One endpoint of the source Service, by the pod behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub pod: Option<String>,
    pub ready: bool,
}

/// Why Postgres facts are missing: the operator does not know how to connect, or it tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostgresError {
    /// The connection settings are missing or incomplete (nothing was tried).
    Settings(String),
    /// Connecting or querying failed.
    Unreachable(String),
}

impl std::fmt::Display for PostgresError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PostgresError::Settings(m) => write!(f, "connection settings missing: {m}"),
            PostgresError::Unreachable(m) => f.write_str(m),
        }
    }
}

/// Everything the plan looks at, as plain data.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The v2 Deployment.
    pub source: Option<Deployment>,
    pub service: Option<Service>,
    pub web: Option<Deployment>,
    pub worker: Option<Deployment>,
    /// `spec.handoff`: the chart release's web and worker Deployments (boxed: a reconcile's
    /// future holds an `Observed`, and it must fit a worker's stack).
    pub chart_web: Option<Box<Deployment>>,
    pub chart_worker: Option<Box<Deployment>>,
    /// Every endpoint of every EndpointSlice of the Service.
    pub endpoints: Vec<Endpoint>,
    /// Names of the pods carrying this upgrade's v3 web labels.
    pub v3_web_pods: BTreeSet<String>,
    /// `secret/key` references (from the spec) that do not resolve.
    pub missing_secret_keys: Vec<String>,
    /// HorizontalPodAutoscalers that scale the v2 Deployment.
    pub hpas_on_source: Vec<String>,
    pub postgres: Reading<PostgresFacts, PostgresError>,
    /// The connection those facts were read with, for the remedies the executor writes.
    pub postgres_url: Option<SecretString>,
    pub clickhouse: Reading<ClickHouseFacts>,
    pub redis: Reading<RedisFacts, RedisProblem>,
    /// The dual write's propagation cursor and heartbeat (Redis), when asked for.
    pub propagation: Reading<crate::data_model::PropagationKeys, RedisProblem>,
    pub s3: Reading<S3Facts, S3Problem>,
    pub error_ratio: Reading<crate::analysis::ErrorRatioFacts>,
    /// When the last read came back (to the millisecond; `None` when nothing was read): every
    /// fact above was true by then, and no later than the plan's decision.
    pub read_at: Option<Timestamp>,
    /// How long each outside read took (for the log: where a reconcile's time goes).
    pub took: ReadTimes,
}

impl Observed {
    /// The v3/v4 web or worker Deployment.
    pub fn deployment(&self, role: Role) -> Option<&Deployment> {
        match role {
            Role::Web => self.web.as_ref(),
            Role::Worker => self.worker.as_ref(),
        }
    }

    /// The cluster's objects as `fresh` read them, the database and store facts kept: an
    /// irreversible decision is made again on the API's view (a watch cache can lag behind a
    /// revert it has not replayed yet) without reading the databases twice.
    pub fn with_cluster_of(mut self, fresh: Observed) -> Observed {
        self.source = fresh.source;
        self.service = fresh.service;
        self.web = fresh.web;
        self.worker = fresh.worker;
        self.endpoints = fresh.endpoints;
        self.v3_web_pods = fresh.v3_web_pods;
        self.missing_secret_keys = fresh.missing_secret_keys;
        self.hpas_on_source = fresh.hpas_on_source;
        self
    }

    /// A read that failed here and had not failed in `before` (answered, or not asked): a look
    /// ahead that met it keeps the decision made without it (`plan::look_ahead`).
    pub fn failed_where_answered(&self, before: &Observed) -> bool {
        fn newly<T, E>(now: &Reading<T, E>, then: &Reading<T, E>) -> bool {
            now.failed().is_some() && then.failed().is_none()
        }
        newly(&self.postgres, &before.postgres)
            || newly(&self.clickhouse, &before.clickhouse)
            || newly(&self.redis, &before.redis)
            || newly(&self.s3, &before.s3)
            || newly(&self.error_ratio, &before.error_ratio)
    }
}

/// Wall time of the reads made at once (zero when not made).
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadTimes {
    pub postgres: std::time::Duration,
    pub clickhouse: std::time::Duration,
    /// Redis and S3.
    pub stores: std::time::Duration,
}
