//! The remedies the operator counts in `status.remedies` (each bounded in attempts), as a
//! closed set. The map's keys are part of the status API: `workerRestart`, `idleRestart`,
//! `lateWriteRerun`, and per migration `napi/<name>`, `resume/<name>`, `stuck/<name>`.

use super::LangfuseUpgradeStatus;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemedyKind<'a> {
    /// Any rollout restart of the v3 worker (every remedy that restarts it counts here too).
    WorkerRestart,
    /// A restart because no migration was running (stale lock, never picked up).
    IdleRestart,
    /// A bounded re-copy of rows v2 wrote after the migrations started.
    LateWriteRerun,
    /// A lower `args.batchSize` after a "napi string" failure of this migration.
    Napi(&'a str),
    /// A resume from the cursor after another failure of this migration.
    Resume(&'a str),
    /// A larger `args.batchSize` for this migration, stuck on one `created_at`.
    Stuck(&'a str),
}

impl RemedyKind<'_> {
    pub fn key(&self) -> String {
        match self {
            RemedyKind::WorkerRestart => "workerRestart".into(),
            RemedyKind::IdleRestart => "idleRestart".into(),
            RemedyKind::LateWriteRerun => "lateWriteRerun".into(),
            RemedyKind::Napi(name) => format!("napi/{name}"),
            RemedyKind::Resume(name) => format!("resume/{name}"),
            RemedyKind::Stuck(name) => format!("stuck/{name}"),
        }
    }
}

impl LangfuseUpgradeStatus {
    /// How often this remedy was applied.
    pub fn remedies_used(&self, kind: RemedyKind) -> i32 {
        self.remedies.get(&kind.key()).copied().unwrap_or(0)
    }

    /// Count one more use.
    pub fn count_remedy(&mut self, kind: RemedyKind) {
        *self.remedies.entry(kind.key()).or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_status_api() {
        let mut s = LangfuseUpgradeStatus::default();
        s.count_remedy(RemedyKind::WorkerRestart);
        s.count_remedy(RemedyKind::WorkerRestart);
        s.count_remedy(RemedyKind::Napi("m1"));
        assert_eq!(s.remedies.get("workerRestart"), Some(&2));
        assert_eq!(s.remedies.get("napi/m1"), Some(&1));
        assert_eq!(s.remedies_used(RemedyKind::Stuck("m1")), 0);
        assert_eq!(RemedyKind::LateWriteRerun.key(), "lateWriteRerun");
    }
}
