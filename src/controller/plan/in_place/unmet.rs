//! Why a hop cannot start yet, as a closed set of kinds, each told to a person in its words.

use super::rows::Unsettled;

/// One gate a hop does not meet yet, by kind: what holds it is chosen (and shown in preflight's
/// lines) by the kind, and told to a person in its words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Unmet {
    /// ClickHouse or PostgreSQL below the minimum of the release, or its version not read.
    Infrastructure(String),
    /// The hop drops data and its backup was not acknowledged.
    Backup(String),
    /// The release left has not run to its end (rows not registered, schema not raised).
    NotRan(String),
    /// Its background migrations have not settled.
    Migrations(Unsettled),
    /// The v4 flags as the worker would run them, or one that cannot be judged.
    V4Flags(String),
    /// The copy check has not read both databases yet.
    CopiesPending(String),
    /// ClickHouse lacks rows of a copy whose PostgreSQL source the hop drops.
    CopiesMissing(String),
}

impl std::fmt::Display for Unmet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unmet::Infrastructure(why)
            | Unmet::Backup(why)
            | Unmet::NotRan(why)
            | Unmet::V4Flags(why)
            | Unmet::CopiesPending(why)
            | Unmet::CopiesMissing(why) => f.write_str(why),
            Unmet::Migrations(why) => why.fmt(f),
        }
    }
}

/// The gates' words, one after the other.
pub(crate) fn words(unmet: &[Unmet]) -> String {
    unmet.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}
