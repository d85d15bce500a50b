//! The broker's store on PostgreSQL, [`PgDb`].
//!
//! - **Layout** (component `broker`, versioned by [`brume_pg::migrate`]):
//!   the SQLite tables of every component, in a schema of their own
//!   (`brume_broker`), so that they share a database with the ledger and
//!   the settlement journal without sharing names. Integers are `BIGINT`,
//!   bytes `BYTEA`; ids and addresses sort bytewise (`COLLATE "C"`), as in
//!   SQLite.
//! - **One writer connection**, on a thread of its own (a
//!   [`brume_sqlite::GroupCommit`]): what queued while the previous commit
//!   ran goes into one transaction, each write under its own savepoint,
//!   and is acknowledged once `COMMIT` returned, with `synchronous_commit`
//!   at least `on` (so in the server's flushed WAL). Writes apply in the
//!   order they were queued, those nobody waits for included.
//! - **Readers**: a few connections, each used by one read at a time on a
//!   blocking thread.
//! - A connection the server dropped is replaced by the next operation; the
//!   operation in flight fails (a write batch in it is rolled back).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use brume_pg::Migration;
use brume_pg::tokio_postgres::{Client, Statement};
use brume_sql::{Pg, Sql};
use tokio::sync::oneshot;

use super::{StoreError, Work};

/// The schema the broker's tables live in.
pub const SCHEMA: &str = "brume_broker";

/// How many read connections a broker keeps.
const READERS: usize = 4;

/// The broker's migrations (component `broker`).
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sql: r#"
CREATE SCHEMA brume_broker;
CREATE TABLE brume_broker.api_keys (
    hash BYTEA PRIMARY KEY,
    name TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    account TEXT NOT NULL DEFAULT '',
    id TEXT COLLATE "C" NOT NULL,
    scopes TEXT NOT NULL,
    expires_at_ms BIGINT,
    revoked_at_ms BIGINT
);
CREATE INDEX api_keys_by_id ON brume_broker.api_keys (id);
CREATE TABLE brume_broker.jobs (
    id TEXT COLLATE "C" PRIMARY KEY,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    provider TEXT,
    error TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    exit_code BIGINT,
    stdout BYTEA,
    stderr BYTEA,
    usage TEXT,
    receipt TEXT,
    verification TEXT,
    outputs TEXT,
    account TEXT NOT NULL DEFAULT ''
);
CREATE INDEX jobs_by_state ON brume_broker.jobs (state, id);
CREATE INDEX jobs_by_account ON brume_broker.jobs (account, id);
CREATE TABLE brume_broker.job_confirmations (
    job_id TEXT PRIMARY KEY,
    confirmed_ms BIGINT NOT NULL
);
CREATE TABLE brume_broker.job_events (
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE brume_broker.provider_bans (
    address TEXT COLLATE "C" PRIMARY KEY,
    reason TEXT NOT NULL,
    proof BYTEA,
    at_ms BIGINT NOT NULL
);
CREATE TABLE brume_broker.provider_trust (
    address TEXT COLLATE "C" PRIMARY KEY,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE TABLE brume_broker.provider_reputation (
    address TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE brume_broker.leases (
    id TEXT COLLATE "C" PRIMARY KEY,
    account TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE brume_broker.service_versions (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    kind TEXT NOT NULL,
    digest TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    developer TEXT NOT NULL,
    signed_by TEXT,
    signature BYTEA,
    retired_at_ms BIGINT,
    PRIMARY KEY (owner, name, version)
);
CREATE TABLE brume_broker.aliases (
    alias TEXT PRIMARY KEY,
    account TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE brume_broker.console_accounts (
    email TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    password TEXT NOT NULL,
    admin BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE brume_broker.console_sessions (
    token_hash BYTEA PRIMARY KEY,
    account TEXT NOT NULL,
    label TEXT NOT NULL,
    scopes TEXT NOT NULL,
    csrf TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE TABLE brume_broker.lambda_keys (
    key_id TEXT COLLATE "C" PRIMARY KEY,
    account TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);
CREATE TABLE brume_broker.forwarded_jobs (
    id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    peer TEXT NOT NULL,
    url TEXT NOT NULL,
    tls_sha256 TEXT,
    cap TEXT NOT NULL,
    billed BIGINT NOT NULL DEFAULT 0
);
"#,
}];

/// What a broker's role needs of its tables. `{role}` is the role.
pub const APP_GRANTS: &str = "GRANT USAGE ON SCHEMA brume_broker TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA brume_broker TO {role};
GRANT SELECT ON brume_migrations TO {role};";

/// Makes (or brings up to date) the broker's tables as their owner
/// (`owner_url`), and grants `role`, if given, what a broker needs.
pub async fn setup(owner_url: &str, role: Option<&str>) -> Result<(), StoreError> {
    let mut client = brume_pg::connect(owner_url)
        .await
        .map_err(|e| pg_error(owner_url, &e))?;
    brume_pg::migrate(&mut client, "broker", MIGRATIONS)
        .await
        .map_err(|e| pg_error(owner_url, &e))?;
    let Some(role) = role else { return Ok(()) };
    if role.is_empty() || !role.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(pg_error(owner_url, &"a role: letters, digits and _ only"));
    }
    client
        .batch_execute(&APP_GRANTS.replace("{role}", role))
        .await
        .map_err(|e| pg_error(owner_url, &e))
}

fn pg_error(url: &str, e: &dyn std::fmt::Display) -> StoreError {
    StoreError::Pg {
        location: brume_pg::redacted(url),
        message: e.to_string(),
    }
}

/// Connects and readies a session: the broker's schema on the search path
/// (so not before its migrations made it), and commits that return only
/// once durable.
async fn connect(url: &str) -> Result<Client, StoreError> {
    let client = brume_pg::connect(url)
        .await
        .map_err(|e| pg_error(url, &e))?;
    ready(url, &client).await?;
    Ok(client)
}

async fn ready(url: &str, client: &Client) -> Result<(), StoreError> {
    client
        .batch_execute(&format!("SET search_path TO {SCHEMA}"))
        .await
        .map_err(|e| pg_error(url, &e))?;
    brume_pg::durable_commits(client)
        .await
        .map_err(|e| pg_error(url, &e))
}

/// A connection and its prepared statements.
#[derive(Default)]
struct Conn {
    client: Option<Client>,
    statements: HashMap<String, Statement>,
}

impl Conn {
    /// The client, connected again if the server dropped it.
    async fn ready(&mut self, url: &str) -> Result<(), StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.statements.clear();
            self.client = Some(connect(url).await?);
        }
        Ok(())
    }
}

/// The PostgreSQL store; cheap to clone.
#[derive(Clone)]
pub(crate) struct PgDb {
    url: Arc<str>,
    writer: brume_sqlite::GroupCommit<Box<dyn Job>>,
    readers: Arc<[Arc<tokio::sync::Mutex<Conn>>]>,
    next_reader: Arc<AtomicUsize>,
}

impl PgDb {
    /// Connects to `url`, brings the broker's tables to the newest layout
    /// (if this role may; a role that owns nothing needs them current),
    /// and starts the writer.
    pub async fn open(url: &str) -> Result<PgDb, StoreError> {
        let mut client = brume_pg::connect(url)
            .await
            .map_err(|e| pg_error(url, &e))?;
        brume_pg::migrate(&mut client, "broker", MIGRATIONS)
            .await
            .map_err(|e| pg_error(url, &e))?;
        ready(url, &client).await?;
        let writer = Writer {
            url: url.to_string(),
            rt: tokio::runtime::Handle::current(),
            conn: Conn {
                client: Some(client),
                statements: HashMap::new(),
            },
        };
        let writer = brume_sqlite::GroupCommit::start("brume-pg-writer", 1024, writer)
            .map_err(|e| pg_error(url, &e))?;
        let readers = (0..READERS)
            .map(|_| Arc::new(tokio::sync::Mutex::new(Conn::default())))
            .collect();
        Ok(PgDb {
            url: url.into(),
            writer,
            readers,
            next_reader: Arc::default(),
        })
    }

    pub fn location(&self) -> String {
        brume_pg::redacted(&self.url)
    }

    pub async fn write<T: Send + 'static>(&self, f: Work<T>) -> Result<T, StoreError> {
        let (done, wait) = oneshot::channel();
        self.writer
            .send(Box::new(Write {
                f: Some(f),
                out: None,
                done,
            }))
            .map_err(|_| StoreError::Closed)?;
        wait.await.unwrap_or(Err(StoreError::Closed))
    }

    pub fn write_later(&self, f: Work<()>) -> Result<(), brume_sqlite::Closed> {
        self.writer.send(Box::new(Later(Some(f))))
    }

    pub async fn read<T: Send + 'static>(&self, f: Work<T>) -> Result<T, StoreError> {
        // A free connection if there is one, else the next in turn.
        let free = self
            .readers
            .iter()
            .find_map(|c| c.clone().try_lock_owned().ok());
        let mut conn = match free {
            Some(c) => c,
            None => {
                let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
                self.readers[i].clone().lock_owned().await
            }
        };
        conn.ready(&self.url).await?;
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let Conn { client, statements } = &mut *conn;
            let client = client.as_ref().ok_or(StoreError::Closed)?;
            f(&mut Pg {
                client,
                rt: &rt,
                cache: statements,
            })
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(format!("a database read: {e}"))))?
    }
}

/// One queued write, type-erased.
trait Job: Send {
    /// Runs the write under its savepoint and keeps its outcome. `Err`: the
    /// savepoint itself failed, so the batch's transaction is unusable.
    fn apply(&mut self, c: &mut dyn Sql) -> Result<(), brume_sql::Error>;

    /// Runs the write as the whole transaction (no savepoint); whether it
    /// succeeded, so that the caller commits or rolls back.
    fn apply_alone(&mut self, c: &mut dyn Sql) -> bool;

    /// Answers the caller once the batch's fate is known.
    fn answer(self: Box<Self>, committed: &Result<(), String>);
}

/// A write whose caller waits.
struct Write<T> {
    f: Option<Work<T>>,
    out: Option<Result<T, StoreError>>,
    done: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send> Job for Write<T> {
    fn apply(&mut self, c: &mut dyn Sql) -> Result<(), brume_sql::Error> {
        if let Some(f) = self.f.take() {
            self.out = Some(in_savepoint(c, f)?);
        }
        Ok(())
    }

    fn apply_alone(&mut self, c: &mut dyn Sql) -> bool {
        if let Some(f) = self.f.take() {
            self.out = Some(guarded(c, f));
        }
        matches!(self.out, Some(Ok(_)))
    }

    fn answer(self: Box<Self>, committed: &Result<(), String>) {
        let out = match (committed, self.out) {
            (Ok(()), Some(out)) => out,
            (Ok(()), None) => Err(StoreError::Closed),
            (Err(e), _) => Err(StoreError::Pg {
                location: "postgres".into(),
                message: format!("the commit failed: {e}"),
            }),
        };
        // The caller may have stopped waiting.
        let _ = self.done.send(out);
    }
}

/// A write nobody waits for: failures are logged.
struct Later(Option<Work<()>>);

impl Job for Later {
    fn apply(&mut self, c: &mut dyn Sql) -> Result<(), brume_sql::Error> {
        if let Some(f) = self.0.take()
            && let Err(e) = in_savepoint(c, f)?
        {
            tracing::error!("a database write failed and was rolled back: {e}");
        }
        Ok(())
    }

    fn apply_alone(&mut self, c: &mut dyn Sql) -> bool {
        match self.0.take().map(|f| guarded(c, f)) {
            Some(Err(e)) => {
                tracing::error!("a database write failed and was rolled back: {e}");
                false
            }
            _ => true,
        }
    }

    fn answer(self: Box<Self>, _committed: &Result<(), String>) {
        // A failed commit is logged by the writer.
    }
}

/// Runs `f`; a panic is an error.
fn guarded<T>(c: &mut dyn Sql, f: Work<T>) -> Result<T, StoreError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut *c)))
        .unwrap_or_else(|_| Err(StoreError::Corrupt("a database write panicked".into())))
}

/// Runs `f` under a savepoint, rolled back if `f` fails or panics. The
/// outer `Err` is a failure of the savepoint itself.
fn in_savepoint<T>(c: &mut dyn Sql, f: Work<T>) -> Result<Result<T, StoreError>, brume_sql::Error> {
    c.batch("SAVEPOINT brume_write")?;
    let out = std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut *c)))
        .unwrap_or_else(|_| Err(StoreError::Corrupt("a database write panicked".into())));
    if out.is_err() {
        c.batch("ROLLBACK TO SAVEPOINT brume_write")?;
    }
    c.batch("RELEASE SAVEPOINT brume_write")?;
    Ok(out)
}

/// The writer thread's state.
struct Writer {
    url: String,
    rt: tokio::runtime::Handle,
    conn: Conn,
}

impl Writer {
    fn commit(&mut self, batch: &mut [Box<dyn Job>]) -> Result<(), String> {
        let rt = self.rt.clone();
        rt.block_on(self.conn.ready(&self.url))
            .map_err(|e| e.to_string())?;
        let Conn { client, statements } = &mut self.conn;
        let client = client.as_mut().ok_or("no connection")?;
        let mut run = || -> Result<(), brume_sql::Error> {
            let tx = rt.block_on(client.transaction())?;
            let mut pg = Pg {
                client: &tx,
                rt: &rt,
                cache: statements,
            };
            // A write alone is the whole transaction: no savepoint (two
            // round trips fewer); if it fails, nothing is committed.
            if let [job] = batch {
                if !job.apply_alone(&mut pg) {
                    return Ok(rt.block_on(tx.rollback())?);
                }
            } else {
                for job in batch.iter_mut() {
                    job.apply(&mut pg)?;
                }
            }
            rt.block_on(tx.commit())?;
            Ok(())
        };
        run().map_err(|e| e.to_string())
    }
}

impl brume_sqlite::Handler for Writer {
    type Request = Box<dyn Job>;

    fn handle(&mut self, mut batch: Vec<Box<dyn Job>>) -> ControlFlow<()> {
        let committed = self.commit(&mut batch);
        if let Err(e) = &committed {
            tracing::error!(
                writes = batch.len(),
                "a database group commit failed, none of its writes is stored: {e}"
            );
        }
        for job in batch {
            job.answer(&committed);
        }
        ControlFlow::Continue(())
    }
}
