//! Prisma connection URLs as libpq (and so sqlx) reads them: Prisma's own parameters taken out.

use super::secrets::percent_decode;

pub(super) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The URL with only the query parameters sqlx understands as libpq does. Prisma's own
/// (`schema`, `pgbouncer`, `connection_limit`, `sslaccept`, `sslidentity`, `sslpassword`, ...)
/// are dropped: sqlx would log unknown ones with their values, and Prisma's `sslcert` names a
/// root CA where libpq's names a client certificate (kept only next to a libpq `sslkey`).
pub(super) fn libpq_url(url: &str) -> String {
    let Some((base, rest)) = url.split_once('?') else {
        return url.to_string();
    };
    let query = rest.split('#').next().unwrap_or("");
    let pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    let key = |p: &str| p.split_once('=').map(|(k, _)| k).unwrap_or(p).to_string();
    let client_cert = pairs.iter().any(|p| matches!(key(p).as_str(), "sslkey" | "ssl-key"));
    let kept: Vec<&str> = pairs
        .into_iter()
        .filter(|p| {
            let k = key(p);
            matches!(
                k.as_str(),
                "sslmode"
                    | "ssl-mode"
                    | "sslrootcert"
                    | "ssl-root-cert"
                    | "ssl-ca"
                    | "statement-cache-capacity"
                    | "host"
                    | "hostaddr"
                    | "port"
                    | "dbname"
                    | "user"
                    | "password"
                    | "application_name"
                    | "options"
            ) || k.starts_with("options[")
                || (client_cert && matches!(k.as_str(), "sslcert" | "ssl-cert" | "sslkey" | "ssl-key"))
        })
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The Prisma-only parameters of Langfuse's `DATABASE_URL` that change how to talk to it.
#[derive(Debug, Default, PartialEq)]
pub(super) struct PrismaParams {
    /// `schema=` (Prisma's search path; `public` when absent).
    pub(super) schema: Option<String>,
    /// `pgbouncer=true`: a transaction-pooling PgBouncer sits in front.
    pub(super) pgbouncer: bool,
}

impl PrismaParams {
    pub(super) fn parse(url: &str) -> Self {
        let mut params = Self::default();
        let Some((_, query)) = url.split_once('?') else {
            return params;
        };
        for pair in query.split('#').next().unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("schema", v)) if !v.is_empty() => params.schema = Some(percent_decode(v)),
                Some(("pgbouncer", v)) => params.pgbouncer = v.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        params
    }
}
