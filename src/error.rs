//! The crate's error type. Variants name what failed; `kind` gives a stable label for logs and
//! metrics.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("the LangfuseUpgrade CRD is not installed: run `langfuse-upgrade-operator crd | kubectl apply -f -`")]
    CrdMissing,
    #[error("leader election: {0}")]
    Leader(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("database: {0}")]
    Database(String),
}

impl Error {
    /// The apiserver did not answer at all (refused, reset, timed out): no HTTP status.
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::HyperError(_) | kube::Error::Service(_)))
    }

    /// A compare-and-swap lost to another writer (HTTP 409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 409)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 403 => "forbidden",
            Error::Kube(kube::Error::Api(s)) if s.code == 404 => "not_found",
            Error::Kube(_) => "kube",
            Error::Serialization(_) => "serialization",
            Error::MissingField(_) => "missing_field",
            Error::CrdMissing => "crd_missing",
            Error::Leader(_) => "leader",
            Error::Io(_) => "io",
            Error::Database(_) => "database",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
