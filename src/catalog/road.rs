//! The road from the release that runs to the one the user names: the stops and, for each hop,
//! what must hold before it is taken. Pure: the catalog and two versions in, the road (or why
//! there is none) out. Nothing is touched to compute it.

use crate::migrations::copies::CopiedTable;
use std::fmt;

use super::Catalog;
use crate::version::Version;

/// How a hop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopMode {
    /// v3 beside v2, traffic switched, v2 retired after verification (the first hop from v2).
    BesideV2,
    /// The image moves on the same Deployments: web first, then the worker.
    InPlace,
}

/// What must hold before a hop starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HopGate {
    /// Every background migration the running release registered and its worker runs has
    /// finished (dormant, env-gated rows excepted).
    MigrationsFinished,
    /// The infrastructure the target major needs.
    Infrastructure {
        clickhouse: String,
        postgres: String,
        redis: Option<String>,
    },
    /// The hop cannot be undone: a backup acknowledged for this hop, saying what is dropped.
    Backup { drops: String },
    /// The hop deletes the rows of copies and drops their PostgreSQL source: ClickHouse must
    /// hold every row of it, counted on both sides.
    CopiesVerified { tables: Vec<CopiedTable> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub from: Version,
    pub to: Version,
    pub mode: HopMode,
    pub gates: Vec<HopGate>,
    /// Why this release is a stop, when it is one the road requires.
    pub required_because: Option<String>,
    /// What the hop destroys for good, in words (`None`: it can be undone).
    pub irreversible: Option<String>,
}

impl fmt::Display for HopGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HopGate::MigrationsFinished => f.write_str(
                "every background migration of the release it leaves has finished (dormant, env-gated rows excepted)",
            ),
            HopGate::Infrastructure {
                clickhouse,
                postgres,
                redis,
            } => write!(
                f,
                "ClickHouse >= {clickhouse}, PostgreSQL >= {postgres}{}",
                redis
                    .as_ref()
                    .map(|r| format!(
                        ", Redis >= {r} with noeviction, ClickHouse in UTC with the system and cluster grants v4 uses"
                    ))
                    .unwrap_or_default()
            ),
            HopGate::Backup { drops } => write!(
                f,
                "a backup of PostgreSQL and ClickHouse acknowledged for this hop (it drops {drops})"
            ),
            HopGate::CopiesVerified { tables } => write!(
                f,
                "ClickHouse holds every PostgreSQL row of the copies whose source it drops ({}), counted on both sides",
                tables.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// Why there is no road.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoadError {
    /// v2 older than the release that registers the v3 background migrations.
    SourceTooOld { from: Version, minimum: Version },
    /// A release the catalog does not know (newer than its newest, or another line).
    Unknown { to: Version, newest: Option<Version> },
    /// Going down past what the database already holds.
    Downgrade { from: Version, to: Version, why: String },
    /// Not a destination a road leads to (v2, or from v4 back to v3).
    NotADestination { to: Version },
    /// A major the catalog has no infrastructure minimums for.
    UnknownMajor { major: u64 },
}

impl fmt::Display for RoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoadError::SourceTooOld { from, minimum } => write!(
                f,
                "Langfuse {from} is older than {minimum}, the oldest v2 whose database migrations prepare v3; upgrade v2 to {minimum} or newer (ideally the newest 2.95.x) first"
            ),
            RoadError::Unknown { to, newest } => write!(
                f,
                "Langfuse {to} is newer than the operator's release catalog knows{}; add it to a copy of catalog/langfuse.yaml (its ClickHouse schema height, background migrations, irreversible steps) and pass it with --catalog, or set spec.target.acceptUnknownRelease: true to go without those checks",
                newest.map(|n| format!(" (newest known: {n})")).unwrap_or_default()
            ),
            RoadError::Downgrade { from, to, why } => write!(
                f,
                "refusing to go from {from} down to {to}: {why}; a way back exists only by restoring the backup taken before the upgrade"
            ),
            RoadError::NotADestination { to } => write!(f, "{to} is not a release an upgrade can end on"),
            RoadError::UnknownMajor { major } => write!(
                f,
                "the release catalog has no infrastructure minimums for Langfuse v{major} (ClickHouse, PostgreSQL, Redis); add them to a copy of catalog/langfuse.yaml and pass it with --catalog: acceptUnknownRelease does not cover a new major"
            ),
        }
    }
}

/// The road from `from` to `to`. `accept_unknown`: the user accepts a destination newer than
/// the catalog knows (the hop's facts then come from the newest known release of its line).
pub fn road(c: &Catalog, from: Version, to: Version, accept_unknown: bool) -> Result<Vec<Hop>, RoadError> {
    if !c.knows(to) && !accept_unknown {
        return Err(RoadError::Unknown {
            to,
            newest: c.newest_of(to.major),
        });
    }
    if to.major < 3 {
        return Err(RoadError::NotADestination { to });
    }
    // Every major the road enters needs its infrastructure minimums: accepting an unknown
    // release does not cover an unknown major (found by fuzzing: it panicked below).
    if let Some(major) = (from.major.max(2) + 1..=to.major).find(|m| c.requirement(*m).is_none()) {
        return Err(RoadError::UnknownMajor { major });
    }
    let mut hops = Vec::new();
    let mut at = from;
    if from.major == 2 {
        if from < c.minimum_v2 {
            return Err(RoadError::SourceTooOld {
                from,
                minimum: c.minimum_v2,
            });
        }
        hops.push(Hop {
            from,
            to: c.parallel_version,
            mode: HopMode::BesideV2,
            gates: vec![HopGate::MigrationsFinished, infrastructure(c, 3)],
            required_because: Some(format!(
                "the only v3 that runs beside v2: {} and later drop what v2 reads",
                first_irreversible_after(c, c.parallel_version)
                    .map_or_else(|| "newer releases".into(), |v| v.to_string())
            )),
            irreversible: None,
        });
        at = c.parallel_version;
    }
    if to < at {
        return downgrade(c, at, to).map(|hop| vec![hop]);
    }
    let start = at;
    // Each stop is the newest of its line the catalog knows; a source at or above the stop
    // itself (a patch of it) has taken it.
    for stop in c.required_stops.iter().filter(|s| start < s.stop && s.before <= to) {
        let release = c.stop_release(stop);
        hops.push(in_place(c, at, release, Some(stop.why.clone())));
        at = release;
    }
    if at < to {
        hops.push(in_place(c, at, to, None));
    }
    Ok(hops)
}

fn in_place(c: &Catalog, from: Version, to: Version, required_because: Option<String>) -> Hop {
    let mut gates = vec![HopGate::MigrationsFinished];
    if to.major > from.major {
        gates.push(infrastructure(c, to.major));
    }
    let words = |data_only: bool| {
        let drops: Vec<String> = c
            .irreversible_between(from, to)
            .filter(|i| i.data_loss || !data_only)
            .map(|i| format!("{} ({})", i.drops, i.at))
            .collect();
        (!drops.is_empty()).then(|| drops.join("; "))
    };
    // Only a drop of data needs a backup; a drop of what v2 alone reads does not, once v2 is gone.
    if let Some(drops) = words(true) {
        gates.push(HopGate::Backup { drops });
    }
    let mut tables: Vec<CopiedTable> = c
        .background_migrations
        .iter()
        .filter(|m| m.removed_in.is_some_and(|r| from < r && r <= to))
        .filter_map(|m| m.copies.as_deref().and_then(CopiedTable::parse))
        .collect();
    tables.sort();
    tables.dedup();
    if !tables.is_empty() {
        gates.push(HopGate::CopiesVerified { tables });
    }
    Hop {
        from,
        to,
        mode: HopMode::InPlace,
        gates,
        required_because,
        irreversible: words(false),
    }
}

/// A move down is possible only while the older image knows the schema the database holds
/// and no irreversible step lies between.
fn downgrade(c: &Catalog, from: Version, to: Version) -> Result<Hop, RoadError> {
    let (held, known) = (c.schema_height(from), c.schema_height(to));
    if known < held {
        return Err(RoadError::Downgrade {
            from,
            to,
            why: format!(
                "ClickHouse holds schema height {held} and {to} knows only {known} (it would crash-loop with \"no migration found for version {held}\")"
            ),
        });
    }
    if let Some(step) = c.irreversible_between(to, from).next() {
        return Err(RoadError::Downgrade {
            from,
            to,
            why: format!("{} dropped {}", step.at, step.drops),
        });
    }
    Ok(in_place(c, from, to, None))
}

fn first_irreversible_after(c: &Catalog, v: Version) -> Option<Version> {
    c.irreversible.iter().map(|i| i.at).filter(|at| *at > v).min()
}

fn infrastructure(c: &Catalog, major: u64) -> HopGate {
    let r = c
        .requirement(major)
        .expect("road() refused every major without requirements before building a hop");
    HopGate::Infrastructure {
        clickhouse: r.clickhouse.clone(),
        postgres: r.postgres.clone(),
        redis: r.redis.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    /// The required stop is a rule, "the newest v3 known, at least 3.225.4": a patch of the stop
    /// the catalog was written before is a valid source and destination, with the stop's facts;
    /// a catalog that knows a newer patch makes that the stop.
    #[test]
    fn the_required_stop_is_the_newest_v3_known_and_its_patches_are_known() {
        let c = Catalog::builtin();
        assert!(c.knows(v("3.225.5")) && c.knows(v("3.225.4")));
        assert!(!c.knows(v("3.226.0")) && !c.knows(v("4.17.0")));
        assert_eq!(c.schema_height(v("3.225.5")), c.schema_height(v("3.225.4")));
        // A source above the stop has taken it; a destination on its line is known.
        assert_eq!(stops("3.225.5", "4.16.0"), vec![("4.16.0".into(), HopMode::InPlace)]);
        assert_eq!(stops("3.100.0", "3.225.6"), vec![("3.225.6".into(), HopMode::InPlace)]);
        // A catalog that knows 3.225.5 stops there.
        let mut newer = c.clone();
        newer.known.v3 = v("3.225.5");
        let road = road(&newer, v("3.100.0"), v("4.16.0"), false).unwrap();
        let to: Vec<String> = road.iter().map(|h| h.to.to_string()).collect();
        assert_eq!(to, ["3.225.5", "4.16.0"]);
        assert!(road[0].required_because.is_some());
    }

    fn stops(from: &str, to: &str) -> Vec<(String, HopMode)> {
        road(&Catalog::builtin(), v(from), v(to), false)
            .unwrap()
            .iter()
            .map(|h| (h.to.to_string(), h.mode))
            .collect()
    }

    #[test]
    fn the_roads_of_the_issue() {
        use HopMode::*;
        assert_eq!(
            stops("2.95.9", "4.16.0"),
            [
                ("3.29.0".into(), BesideV2),
                ("3.225.4".into(), InPlace),
                ("4.16.0".into(), InPlace)
            ]
        );
        assert_eq!(
            stops("3.100.0", "4.16.0"),
            [("3.225.4".into(), InPlace), ("4.16.0".into(), InPlace)]
        );
        assert_eq!(stops("4.2.0", "4.16.0"), [("4.16.0".into(), InPlace)]);
        assert_eq!(stops("3.225.4", "4.16.0"), [("4.16.0".into(), InPlace)]);
        assert_eq!(stops("2.95.9", "3.29.0"), [("3.29.0".into(), BesideV2)]);
        assert_eq!(
            stops("2.95.9", "3.225.4"),
            [("3.29.0".into(), BesideV2), ("3.225.4".into(), InPlace)]
        );
        assert_eq!(stops("3.100.0", "3.150.0"), [("3.150.0".into(), InPlace)]);
        assert!(stops("4.16.0", "4.16.0").is_empty());
    }

    #[test]
    fn each_hop_says_what_must_hold() {
        let hops = road(&Catalog::builtin(), v("2.95.9"), v("4.16.0"), false).unwrap();
        // 3.29.0 -> 3.225.4 crosses the 3.29.1 view drop: irreversible (no way back to v2), but
        // it drops no data, so it needs no backup of its own.
        assert!(
            hops[1]
                .irreversible
                .as_deref()
                .is_some_and(|w| w.contains("traces_view"))
        );
        assert!(!hops[1].gates.iter().any(|g| matches!(g, HopGate::Backup { .. })));
        // The v4 hop: the newest v3 is a required stop; v4's infrastructure; a backup naming the drops.
        assert!(
            hops[1]
                .required_because
                .as_deref()
                .is_some_and(|w| w.contains("newest v3"))
        );
        let v4 = &hops[2];
        assert!(v4.gates.contains(&HopGate::MigrationsFinished));
        assert!(v4.gates.contains(&HopGate::Infrastructure {
            clickhouse: "25.12".into(),
            postgres: "15".into(),
            redis: Some("7.0".into())
        }));
        assert!(
            v4.gates
                .iter()
                .any(|g| matches!(g, HopGate::Backup { drops } if drops.contains("event_log")))
        );
        // Within v4 nothing is dropped.
        let within = road(&Catalog::builtin(), v("4.2.0"), v("4.16.0"), false).unwrap();
        assert_eq!(within[0].gates, [HopGate::MigrationsFinished]);
    }

    #[test]
    fn downgrades_past_the_database_are_refused_before_anything_is_touched() {
        let c = Catalog::builtin();
        let refused = [
            ("3.100.0", "3.50.0", "schema height 26"),
            ("4.16.0", "3.225.4", "schema height 46"),
            ("3.29.0", "2.95.9", "not a release an upgrade can end on"),
        ];
        for (from, to, words) in refused {
            let err = road(&c, v(from), v(to), false).unwrap_err();
            assert!(err.to_string().contains(words), "{from} -> {to}: {err}");
        }
        // Same schema height, nothing irreversible between: a patch-level step back is a hop.
        assert_eq!(stops("3.225.4", "3.225.0"), [("3.225.0".into(), HopMode::InPlace)]);
    }

    #[test]
    fn unknown_and_too_old_releases_are_refused_with_what_to_do() {
        let c = Catalog::builtin();
        let err = road(&c, v("3.225.4"), v("4.20.0"), false).unwrap_err();
        assert!(
            err.to_string().contains("catalog/langfuse.yaml") && err.to_string().contains("4.16.0"),
            "{err}"
        );
        assert_eq!(road(&c, v("3.225.4"), v("4.20.0"), true).unwrap().len(), 1);
        assert!(road(&c, v("3.225.4"), v("5.0.0"), false).is_err());
        // Accepting an unknown release does not cover an unknown major (it panicked once).
        for from in ["3.225.4", "2.95.9", "4.16.0"] {
            let err = road(&c, v(from), v("5.0.0"), true).unwrap_err();
            assert_eq!(err, RoadError::UnknownMajor { major: 5 }, "from {from}");
        }
        let err = road(&c, v("2.91.0"), v("3.29.0"), false).unwrap_err();
        assert!(err.to_string().contains("2.92.0"), "{err}");
    }
}
