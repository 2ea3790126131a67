//! What a Prisma migration does to `background_migrations` and which tables and views it drops,
//! read from its SQL: `INSERT INTO background_migrations (cols) VALUES (...)[, (...)]`, `DELETE
//! FROM background_migrations WHERE id = '…'` or `WHERE "name" IN ('…', …)`, `DROP TABLE|VIEW`.
//! Identifiers may be quoted, statements span lines, values carry casts (`'{}'::jsonb`).

/// One row a migration inserts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inserted {
    pub id: String,
    pub name: String,
    pub script: String,
    /// `args.envGate`, if the row is gated.
    pub gate: Option<String>,
}

/// What a delete names its rows by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deleted {
    Ids(Vec<String>),
    Names(Vec<String>),
}

/// What one migration file does that the catalog cares about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    pub inserted: Vec<Inserted>,
    pub deleted: Vec<Deleted>,
    /// `table x` / `view x`, in the order dropped.
    pub drops: Vec<String>,
}

/// The statements of `sql` without `--` comments, split at `;` outside string literals.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_string = false;
    for line in sql.lines() {
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if !in_string && c == '-' && chars.peek() == Some(&'-') {
                break;
            }
            if c == '\'' {
                in_string = !in_string;
            }
            if c == ';' && !in_string {
                out.push(std::mem::take(&mut current));
                continue;
            }
            current.push(c);
        }
        current.push('\n');
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The string literals of `text`, in order (`''` is a quote inside one).
fn literals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut s = String::new();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    s.push('\'');
                    continue;
                }
                break;
            }
            s.push(c);
        }
        out.push(s);
    }
    out
}

/// A statement's words, lowercased, quotes dropped from identifiers (for matching its shape).
fn shape(statement: &str) -> String {
    let mut plain = String::new();
    let mut in_string = false;
    for c in statement.chars() {
        if c == '\'' {
            in_string = !in_string;
            plain.push('\'');
            continue;
        }
        if !in_string && c != '"' {
            plain.push(c.to_ascii_lowercase());
        }
    }
    plain.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The names between the first parentheses of `text` (a column list).
fn columns(text: &str) -> Vec<String> {
    let inner = text
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(c, _)| c)
        .unwrap_or_default();
    inner
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
        .collect()
}

/// The parenthesised tuples after `VALUES`, each as its string literals.
fn tuples(values: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let (mut depth, mut in_string, mut current) = (0, false, String::new());
    for c in values.chars() {
        if c == '\'' {
            in_string = !in_string;
        }
        if !in_string && c == '(' {
            depth += 1;
            if depth == 1 {
                current.clear();
                continue;
            }
        }
        if !in_string && c == ')' {
            depth -= 1;
            if depth == 0 {
                out.push(literals(&current));
                continue;
            }
        }
        if depth >= 1 {
            current.push(c);
        }
    }
    out
}

fn insert(statement: &str) -> Vec<Inserted> {
    let lower = statement.to_ascii_lowercase();
    let Some(at) = lower.find("values") else {
        return Vec::new();
    };
    let cols = columns(&statement[..at]);
    let position = |name: &str| cols.iter().position(|c| c == name);
    let (Some(id), Some(name), Some(script)) = (position("id"), position("name"), position("script")) else {
        return Vec::new();
    };
    let args = position("args");
    tuples(&statement[at + "values".len()..])
        .into_iter()
        .filter(|t| t.len() == cols.len())
        .map(|t| Inserted {
            id: t[id].clone(),
            name: t[name].clone(),
            script: t[script].clone(),
            gate: args
                .and_then(|a| serde_json::from_str::<serde_json::Value>(&t[a]).ok())
                .and_then(|v| v.get("envGate").and_then(|g| g.as_str()).map(String::from)),
        })
        .collect()
}

/// Everything `sql` does to `background_migrations`, and what it drops.
pub fn effects(sql: &str) -> Effects {
    let mut out = Effects::default();
    for statement in statements(sql) {
        let s = shape(&statement);
        if s.starts_with("insert into background_migrations") {
            out.inserted.extend(insert(&statement));
        } else if let Some(rest) = s.strip_prefix("delete from background_migrations where ") {
            let named = literals(&statement);
            match rest.starts_with("id ") || rest.starts_with("id=") || rest.starts_with("id in") {
                true => out.deleted.push(Deleted::Ids(named)),
                false => out.deleted.push(Deleted::Names(named)),
            }
        } else if let Some(rest) = s.strip_prefix("drop ") {
            let mut words = rest.split(' ');
            let kind = words.next().unwrap_or_default();
            if kind == "table" || kind == "view" {
                let name = words.find(|w| !matches!(*w, "if" | "exists")).unwrap_or_default();
                out.drops.push(format!("{kind} {}", name.trim_end_matches(',')));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_deletes_and_drops_are_read_in_every_shape_langfuse_writes_them() {
        let sql = "-- a comment; with a semicolon\nINSERT INTO background_migrations (id, name, script, args)\nVALUES (\n  'aa-1',\n  '20260701_step_1',\n  'stepOne',\n  '{\"envGate\": \"GATE_ONE\"}'::jsonb\n);\nINSERT INTO \"background_migrations\" (\"id\", \"name\", \"script\", \"args\") VALUES ('bb-2', 'it''s', 'two', '{}'), ('cc-3', 'three', 'three', '{}');\nDELETE FROM background_migrations WHERE id = 'dd-4';\nDELETE FROM \"background_migrations\"\nWHERE \"name\" IN (\n  'x',\n  'y'\n);\nDROP VIEW IF EXISTS \"traces_view\";\nDROP TABLE \"scores\";\nCREATE TABLE t (a int);";
        let e = effects(sql);
        let names: Vec<&str> = e.inserted.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["20260701_step_1", "it's", "three"]);
        assert_eq!(e.inserted[0].gate.as_deref(), Some("GATE_ONE"));
        assert_eq!(e.inserted[1].gate, None);
        assert_eq!(e.inserted[2].id, "cc-3");
        assert_eq!(
            e.deleted,
            [
                Deleted::Ids(vec!["dd-4".into()]),
                Deleted::Names(vec!["x".into(), "y".into()])
            ]
        );
        assert_eq!(e.drops, ["view traces_view", "table scores"]);
    }
}
