//! brume's PostgreSQL plumbing, shared by the stores that have a
//! PostgreSQL backend (the ledger first).
//!
//! - [`connect`] opens a connection from a `postgres://` URL and drives it
//!   on a task of its own. A [`tokio_postgres::Client`] pipelines the
//!   queries of concurrent callers over that one connection.
//! - [`migrate`] brings a component's tables to its newest layout:
//!   numbered [`Migration`]s, each applied once, in order, in a
//!   transaction of its own, under an advisory lock, and recorded in
//!   `brume_migrations (component, version)`. A database whose layout is
//!   newer than this brume knows is refused, and so is one that is behind
//!   when the connected role may not change it.
//! - [`Cluster`] (in [`cluster`]) starts a throwaway PostgreSQL server in a
//!   temp dir, for the tests and benchmarks: Debian's `postgresql`
//!   binaries, `initdb` and `pg_ctl`.
//!
//! - [`tls`]: TLS with rustls when the URL's `sslmode` asks for it (or,
//!   with `prefer`, the default, when the server offers it); the server's
//!   certificate is always verified, against the web roots and
//!   `PGSSLROOTCERT`'s certificates.

pub mod cluster;
pub mod tls;

pub use cluster::{Cluster, Database};
pub use tokio_postgres;

use std::sync::OnceLock;

use tokio_postgres::Client;

/// Every error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Layout(String),
    #[error("postgres cluster: {0}")]
    Cluster(String),
    #[error("postgres cluster: {0}")]
    Io(#[from] std::io::Error),
    #[error("postgres TLS: {0}")]
    Tls(#[from] brume_tls::TlsError),
    /// Connecting failed; the detail has every cause (refused, TLS, auth).
    #[error("postgres: {0}")]
    Connect(String),
}

/// An error and its sources, joined by `: `.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// Is this a PostgreSQL URL (`postgres://` or `postgresql://`)?
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// A command-line value that must be a PostgreSQL URL (clap's
/// `value_parser`).
pub fn url_arg(s: &str) -> Result<String, String> {
    if is_url(s) {
        Ok(s.to_string())
    } else {
        Err("a postgres:// or postgresql:// URL".into())
    }
}

/// Connects to `url` and drives the connection on a task of the current
/// runtime; the task ends when the client is dropped or the server goes.
/// TLS as [`tls`] says, trusting `PGSSLROOTCERT` (read once).
pub async fn connect(url: &str) -> Result<Client, Error> {
    static TLS: OnceLock<Result<tls::MakeRustls, String>> = OnceLock::new();
    let tls = TLS
        .get_or_init(|| tls::MakeRustls::from_env().map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| Error::Layout(format!("PGSSLROOTCERT: {e}")))?;
    connect_with(url, tls).await
}

/// [`connect`] with this TLS trust.
pub async fn connect_with(url: &str, tls: tls::MakeRustls) -> Result<Client, Error> {
    let (client, conn) = tokio_postgres::connect(url, tls)
        .await
        .map_err(|e| Error::Connect(with_causes(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

/// One step of a component's layout.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// 1, 2, …: the layout once this step is applied.
    pub version: i32,
    /// Statements, run in one transaction.
    pub sql: &'static str,
}

const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS brume_migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
)";

/// The layout version of `component` in the database (0: none).
pub async fn layout_version(client: &Client, component: &str) -> Result<i32, Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('brume_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM brume_migrations WHERE component = $1",
            &[&component],
        )
        .await?;
    Ok(row.get(0))
}

/// Applies the `migrations` of `component` that the database lacks, and
/// returns its layout version (the last migration's). Concurrent callers
/// are serialised by an advisory lock. A database whose layout is newer
/// than the last migration is refused.
pub async fn migrate(
    client: &mut Client,
    component: &str,
    migrations: &[Migration],
) -> Result<i32, Error> {
    let newest = migrations.last().map_or(0, |m| m.version);
    let current = layout_version(client, component).await?;
    if current > newest {
        return Err(Error::Layout(format!(
            "the {component} tables have layout {current}; this brume knows layouts up to \
             {newest}: upgrade brume"
        )));
    }
    if current == newest {
        return Ok(newest);
    }
    let tx = client.transaction().await?;
    // One migrator at a time, whatever the component (the key is arbitrary
    // but fixed: "brume" in ASCII).
    tx.execute("SELECT pg_advisory_xact_lock(1651864941)", &[])
        .await?;
    tx.batch_execute(MIGRATIONS_TABLE).await.map_err(|e| {
        Error::Layout(format!(
            "the {component} tables need layout {newest} (they have {current}), and this role \
             may not create them: connect once as the tables' owner ({e})"
        ))
    })?;
    tx.commit().await?;
    for m in migrations {
        apply(client, component, m).await?;
    }
    Ok(newest)
}

/// Applies one migration unless it is recorded, in a transaction.
async fn apply(client: &mut Client, component: &str, m: &Migration) -> Result<(), Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(1651864941)", &[])
        .await?;
    let done = tx
        .query_opt(
            "SELECT 1 FROM brume_migrations WHERE component = $1 AND version = $2",
            &[&component, &m.version],
        )
        .await?
        .is_some();
    if done {
        return Ok(());
    }
    tx.batch_execute(m.sql).await.map_err(|e| {
        Error::Layout(format!(
            "{component} migration {}: {}",
            m.version,
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string())
        ))
    })?;
    tx.execute(
        "INSERT INTO brume_migrations (component, version) VALUES ($1, $2)",
        &[&component, &m.version],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(component, version = m.version, "postgres migration applied");
    Ok(())
}

/// `url` without its password, for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = url[s + 3..at].split(':').next().unwrap_or_default();
            format!("{}{user}{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Raises the session's `synchronous_commit` to `on` if the server's
/// default is weaker (`off`, `local`), so that a commit returns only once
/// flushed; a stronger setting (`remote_write`, `remote_apply`) is kept.
pub async fn durable_commits(client: &Client) -> Result<(), tokio_postgres::Error> {
    let level: String = client
        .query_one("SHOW synchronous_commit", &[])
        .await?
        .get(0);
    if matches!(level.as_str(), "off" | "local") {
        client.batch_execute("SET synchronous_commit TO on").await?;
    }
    Ok(())
}

/// The SQLSTATE of a database error, if it is one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_redacted_url_keeps_its_user_and_loses_its_password() {
        assert_eq!(
            super::redacted("postgres://app:s3cret@db:5432/brume"),
            "postgres://app@db:5432/brume"
        );
        assert_eq!(
            super::redacted("postgres://app@db/brume"),
            "postgres://app@db/brume"
        );
        assert_eq!(
            super::redacted("postgres://db/brume"),
            "postgres://db/brume"
        );
    }
}
