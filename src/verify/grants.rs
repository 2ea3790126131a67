//! The ClickHouse user's privileges, from `SHOW GRANTS FINAL` (its own grants and its roles',
//! merged; needs no privilege, unlike `system.grants`), judged against what Langfuse's docs ask
//! of it: SELECT, INSERT, ALTER, CREATE and DELETE on its database. Pure: text in, verdict out.

/// The user's own grants with its roles' merged in; needs no privilege.
pub const GRANTS_SQL: &str = "SHOW GRANTS FINAL";

/// A privilege Langfuse needs on its database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Needed {
    Select,
    Insert,
    /// Its migrations add columns and indexes; its deletions are mutations.
    Alter,
    /// Its migrations create tables.
    Create,
    /// Data deletion (`ALTER DELETE`, also what a lightweight `DELETE FROM` needs).
    Delete,
}

impl Needed {
    pub const ALL: [Needed; 5] = [
        Needed::Select,
        Needed::Insert,
        Needed::Alter,
        Needed::Create,
        Needed::Delete,
    ];

    /// The name to put in a `GRANT` statement.
    pub fn grant_name(self) -> &'static str {
        match self {
            Needed::Select => "SELECT",
            Needed::Insert => "INSERT",
            Needed::Alter => "ALTER",
            Needed::Create => "CREATE TABLE",
            Needed::Delete => "ALTER DELETE",
        }
    }

    /// Whether a grant of `privilege` (as `SHOW GRANTS` spells it) includes this one, along
    /// ClickHouse's hierarchy (ALL ⊃ ALTER ⊃ ALTER TABLE ⊃ ALTER DELETE; CREATE ⊃ CREATE TABLE).
    fn covered_by(self, privilege: &str) -> bool {
        let p = privilege.trim().to_ascii_uppercase();
        if p == "ALL" || p == "ALL PRIVILEGES" {
            return true;
        }
        let names: &[&str] = match self {
            Needed::Select => &["SELECT"],
            Needed::Insert => &["INSERT"],
            Needed::Alter => &["ALTER", "ALTER TABLE"],
            Needed::Create => &["CREATE", "CREATE TABLE"],
            Needed::Delete => &["ALTER", "ALTER TABLE", "ALTER DELETE", "DELETE"],
        };
        names.contains(&p.as_str())
    }
}

/// One `GRANT … ON target TO …` or `REVOKE … ON target FROM …` line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Line {
    revoke: bool,
    /// Privileges as written; a column-restricted one (`SELECT(a, b)`) is kept with its
    /// columns, so it covers nothing table-wide.
    privileges: Vec<String>,
    /// `None` is `*` (every database).
    database: Option<String>,
    /// `None` is `*` (every table).
    table: Option<String>,
    /// `ON REMOTE`, `ON S3`: a source (ClickHouse 25.x's source grants), not a table.
    source: Option<String>,
}

/// The parsed output of `SHOW GRANTS FINAL`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Grants {
    lines: Vec<Line>,
}

impl Grants {
    /// Each line of `SHOW GRANTS FINAL`. Lines granting roles (no `ON`) and lines this parser
    /// does not know are skipped: FINAL has already merged the roles' privileges in.
    pub fn parse(rows: &[String]) -> Grants {
        Grants {
            lines: rows.iter().filter_map(|r| parse_line(r)).collect(),
        }
    }

    /// What Langfuse needs on `database` that these grants do not give, in [`Needed::ALL`]
    /// order. A privilege revoked on one table of the database counts as missing (a Langfuse
    /// table may be that one).
    pub fn missing_on(&self, database: &str) -> Vec<Needed> {
        Needed::ALL
            .into_iter()
            .filter(|need| !self.gives(*need, database))
            .collect()
    }

    /// Whether one of `privileges` (as `SHOW GRANTS` spells them; ALL always counts) is granted
    /// on `database.table` and not revoked there. `None` asks for `*`: a grant on one database
    /// or table does not cover every one.
    pub fn gives_on(&self, privileges: &[&str], database: Option<&str>, table: Option<&str>) -> bool {
        let named = |l: &Line| l.privileges.iter().any(|p| is_one_of(p, privileges));
        let covers = |have: &Option<String>, want: Option<&str>| match (have, want) {
            (None, _) => true,
            (Some(h), Some(w)) => h == w,
            (Some(_), None) => false,
        };
        let place = |l: &Line| l.source.is_none() && covers(&l.database, database) && covers(&l.table, table);
        let granted = self.lines.iter().any(|l| !l.revoke && place(l) && named(l));
        let revoked = self.lines.iter().any(|l| {
            l.revoke && l.source.is_none() && named(l) && {
                // A revoke narrower than what is asked still takes part of it away.
                let hits = |have: &Option<String>, want: Option<&str>| match (have, want) {
                    (Some(h), Some(w)) => h == w,
                    _ => true,
                };
                hits(&l.database, database) && hits(&l.table, table)
            }
        });
        granted && !revoked
    }

    /// Whether one of `privileges` is granted on the source `source` (`READ ON REMOTE`), or
    /// one of `legacy` on `*.*` (before 25.x a source was one privilege: `REMOTE ON *.*`).
    pub fn gives_source(&self, privileges: &[&str], source: &str, legacy: &[&str]) -> bool {
        let on_source = self.lines.iter().any(|l| {
            !l.revoke
                && l.source.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(source))
                && l.privileges.iter().any(|p| is_one_of(p, privileges))
        });
        on_source || self.gives_on(legacy, None, None)
    }

    fn gives(&self, need: Needed, database: &str) -> bool {
        let on_database = |l: &Line| l.source.is_none() && l.database.as_deref().is_none_or(|d| d == database);
        let covers = |l: &Line| l.privileges.iter().any(|p| need.covered_by(p));
        let granted = self
            .lines
            .iter()
            .any(|l| !l.revoke && on_database(l) && l.table.is_none() && covers(l));
        let revoked = self.lines.iter().any(|l| l.revoke && on_database(l) && covers(l));
        granted && !revoked
    }
}

/// `privilege` as written is ALL or one of `names` (a column-restricted `SELECT(a, b)` counts as
/// SELECT: Langfuse's docs grant the system tables it reads column by column).
fn is_one_of(privilege: &str, names: &[&str]) -> bool {
    let p = privilege.trim();
    let bare = p.split('(').next().unwrap_or(p).trim().to_ascii_uppercase();
    bare == "ALL" || bare == "ALL PRIVILEGES" || names.iter().any(|n| n.eq_ignore_ascii_case(&bare))
}

fn parse_line(row: &str) -> Option<Line> {
    let row = row.trim();
    let (revoke, rest) = if let Some(rest) = strip_word(row, "GRANT") {
        (false, rest)
    } else {
        (true, strip_word(row, "REVOKE")?)
    };
    let (privileges, rest) = split_keyword(rest, " ON ")?;
    let target_end = if revoke { " FROM " } else { " TO " };
    let (target, _) = split_keyword(rest, target_end)?;
    let target = target.trim();
    let privileges = split_top_level(privileges);
    // A bare word is a source (`ON REMOTE`); `*` alone (table engines) is none of ours.
    if !target.contains('.') {
        let source = target.trim_matches('`');
        return (source != "*" && !source.is_empty()).then(|| Line {
            revoke,
            privileges,
            database: None,
            table: None,
            source: Some(source.to_string()),
        });
    }
    let (database, table) = parse_target(target)?;
    Some(Line {
        revoke,
        privileges,
        database,
        table,
        source: None,
    })
}

fn strip_word<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let head = s.get(..word.len())?;
    (head.eq_ignore_ascii_case(word) && s[word.len()..].starts_with(' ')).then(|| &s[word.len() + 1..])
}

/// Split at the first `keyword` outside backquotes and parentheses (case-insensitive).
fn split_keyword<'a>(s: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let (mut depth, mut quoted) = (0i32, false);
    for (i, c) in s.char_indices() {
        match c {
            '`' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            _ => {}
        }
        if !quoted
            && depth == 0
            && s.get(i..i + keyword.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(keyword))
        {
            return Some((&s[..i], &s[i + keyword.len()..]));
        }
    }
    None
}

/// `a, b(x, y), c` → `["a", "b(x, y)", "c"]`.
fn split_top_level(s: &str) -> Vec<String> {
    let (mut out, mut current, mut depth) = (Vec::new(), String::new(), 0i32);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

/// `*.*`, `db.*`, `db.table`, `` `my-db`.`t` ``; a bare `*` or name is not a table target.
fn parse_target(target: &str) -> Option<(Option<String>, Option<String>)> {
    let (db, table) = split_keyword(target, ".")?;
    let name = |s: &str| {
        let s = s.trim();
        (s != "*").then(|| s.trim_matches('`').to_string())
    };
    Some((name(db), name(table)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(text: &str) -> Grants {
        Grants::parse(&text.lines().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn an_admin_with_everything_lacks_nothing() {
        // What ClickHouse's default user shows (shortened).
        let g = grants(
            "GRANT SOURCES ON *.* TO default\n\
             GRANT TABLE ENGINE ON * TO default\n\
             GRANT SHOW, SELECT, INSERT, ALTER, CREATE, DROP, TRUNCATE, OPTIMIZE ON *.* TO default",
        );
        assert_eq!(g.missing_on("default"), vec![]);
        assert_eq!(
            grants("GRANT ALL ON *.* TO admin WITH GRANT OPTION").missing_on("x"),
            vec![]
        );
    }

    #[test]
    fn database_level_grants_count_for_that_database_only() {
        let g = grants("GRANT SELECT, INSERT, ALTER, CREATE ON langfuse.* TO lf");
        assert_eq!(g.missing_on("langfuse"), vec![]);
        assert_eq!(g.missing_on("default"), Needed::ALL.to_vec());
    }

    #[test]
    fn narrower_privileges_are_not_mistaken_for_wider_ones() {
        // ALTER DELETE alone is not ALTER; CREATE TABLE is enough to create tables.
        let g = grants("GRANT SELECT, INSERT, ALTER DELETE, CREATE TABLE ON lf.* TO u");
        assert_eq!(g.missing_on("lf"), vec![Needed::Alter]);
        // A read-only user.
        let ro = grants("GRANT SELECT ON lf.* TO ro");
        assert_eq!(
            ro.missing_on("lf"),
            vec![Needed::Insert, Needed::Alter, Needed::Create, Needed::Delete]
        );
    }

    #[test]
    fn column_restricted_and_single_table_grants_do_not_cover_the_database() {
        let g = grants(
            "GRANT SELECT(id, name), INSERT ON lf.* TO u\n\
             GRANT ALTER, CREATE ON lf.traces TO u",
        );
        assert_eq!(
            g.missing_on("lf"),
            vec![Needed::Select, Needed::Alter, Needed::Create, Needed::Delete]
        );
    }

    #[test]
    fn partial_revokes_take_away() {
        let g = grants(
            "GRANT SELECT, INSERT, ALTER, CREATE ON *.* TO u\n\
             REVOKE ALTER DELETE ON lf.scores FROM u\n\
             REVOKE INSERT ON other.* FROM u",
        );
        assert_eq!(g.missing_on("lf"), vec![Needed::Delete]);
        assert_eq!(g.missing_on("other"), vec![Needed::Insert]);
    }

    #[test]
    fn system_tables_cluster_and_sources_as_v4_needs_them() {
        let g = grants(
            "GRANT SELECT(name, active, rows, bytes_on_disk) ON system.parts TO u\n\
             GRANT SELECT ON system.processes TO u\n\
             GRANT CLUSTER ON *.* TO u\n\
             GRANT READ ON REMOTE TO u\n\
             GRANT ALTER SETTINGS ON lf.observations_pid_tid_sorting TO u",
        );
        assert!(g.gives_on(&["SELECT"], Some("system"), Some("parts")));
        assert!(!g.gives_on(&["SELECT"], Some("system"), Some("mutations")));
        assert!(g.gives_on(&["CLUSTER"], None, None));
        assert!(g.gives_source(&["READ"], "REMOTE", &["REMOTE"]));
        assert!(g.gives_on(
            &["ALTER SETTINGS", "ALTER"],
            Some("lf"),
            Some("observations_pid_tid_sorting")
        ));
        assert!(!g.gives_on(&["ALTER SETTINGS", "ALTER"], Some("lf"), None));
        // The grant on one table is not a source, nor a grant on *.*.
        assert!(!grants("GRANT SELECT ON lf.* TO u").gives_on(&["CLUSTER"], None, None));
        assert!(!grants("GRANT CLUSTER ON lf.* TO u").gives_on(&["CLUSTER"], None, None));
        // Before sources had their own grants: REMOTE on *.*.
        assert!(grants("GRANT REMOTE ON *.* TO u").gives_source(&["READ"], "REMOTE", &["REMOTE"]));
        assert!(grants("GRANT ALL ON *.* TO u").gives_on(&["SYSTEM MERGES"], Some("lf"), Some("t")));
        let revoked = grants("GRANT SELECT ON *.* TO u\nREVOKE SELECT ON system.query_log FROM u");
        assert!(!revoked.gives_on(&["SELECT"], Some("system"), Some("query_log")));
        assert!(revoked.gives_on(&["SELECT"], Some("system"), Some("parts")));
    }

    #[test]
    fn quoted_names_role_lines_and_odd_text_are_handled() {
        let g = grants(
            "GRANT langfuse_role TO u\n\
             GRANT SELECT, INSERT, ALTER, CREATE ON `lang.fuse`.* TO u\n\
             something else entirely\n\
             GRANT",
        );
        assert_eq!(g.missing_on("lang.fuse"), vec![]);
        assert_eq!(g.missing_on("lang"), Needed::ALL.to_vec());
    }
}
