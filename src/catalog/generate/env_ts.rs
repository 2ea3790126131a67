//! The default of each v4 variable in a release's worker env schema (`worker/src/env.ts`): a zod
//! object whose keys sit at two spaces, `NAME: z` then `.enum([...])` and `.default("value")` on
//! the lines up to the next key. A variable without a default (optional) is not one.

/// The variables the catalog follows: the v4 flags and the v4 background-migration gates.
fn followed(name: &str) -> bool {
    name.starts_with("LANGFUSE_MIGRATION_V4_") || name.starts_with("LANGFUSE_BACKGROUND_MIGRATION_V4_")
}

/// `(name, default)` of each followed variable that has one, in the file's order.
pub fn defaults(env_ts: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    let mut finish = |current: &mut Option<(String, String)>| {
        if let Some((name, body)) = current.take() {
            if let Some(value) = default_in(&body) {
                out.push((name, value));
            }
        }
    };
    for line in env_ts.lines() {
        let key = line
            .strip_prefix("  ")
            .filter(|l| l.starts_with(|c: char| c.is_ascii_uppercase()))
            .and_then(|l| l.split_once(':'))
            .map(|(k, rest)| (k.trim().to_string(), rest.to_string()))
            .filter(|(k, _)| {
                k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            });
        if let Some((name, rest)) = key {
            finish(&mut current);
            if followed(&name) {
                current = Some((name, rest));
            }
            continue;
        }
        if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
        }
    }
    finish(&mut current);
    out
}

/// The string given to `.default(...)`.
fn default_in(body: &str) -> Option<String> {
    let rest = &body[body.find(".default(")? + ".default(".len()..];
    let quote = rest.trim_start().chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = rest.trim_start()[1..].to_string();
    Some(rest[..rest.find(quote)?].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_followed_variable_with_a_default_and_no_other() {
        let text = "export const EnvSchema = z.object({\n  NODE_ENV: z.enum([\"a\"]).default(\"a\"),\n  LANGFUSE_MIGRATION_V4_WRITE_MODE: z\n    .enum([\"legacy\", \"dual\", \"events_only\"])\n    .default(\"events_only\"),\n  // a comment\n  LANGFUSE_MIGRATION_V4_OTEL_DIRECT_WRITE_ORG_CREATED_CUTOFF: z.iso\n    .date()\n    .optional(),\n  LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL: z.enum([\"true\", \"false\"]).default('false'),\n});\n";
        assert_eq!(
            defaults(text),
            [
                (
                    "LANGFUSE_MIGRATION_V4_WRITE_MODE".to_string(),
                    "events_only".to_string()
                ),
                (
                    "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL".to_string(),
                    "false".to_string()
                ),
            ]
        );
    }
}
