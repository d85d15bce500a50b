//! The broker's store on SQLite: `DATA/broker.db`, WAL, one writer thread
//! ([`brume_sqlite::Db`]) and a pool of readers.
//!
//! The layout of the tables every broker has is here; a component's own
//! tables (the registry's, accounts', federation's) are made by that
//! component when it opens, in its `prepare`.

use std::path::Path;

use rusqlite::Connection;

use super::{StoreError, Work};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    hash BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    provider TEXT,
    error TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    exit_code INTEGER,
    stdout BLOB,
    stderr BLOB,
    usage TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, id);
CREATE TABLE IF NOT EXISTS job_confirmations (
    job_id TEXT PRIMARY KEY,
    confirmed_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS provider_bans (
    address TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    proof BLOB,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS provider_trust (
    address TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS provider_reputation (
    address TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
";

/// The file name of the database in its directory.
const DB_FILE: &str = "broker.db";

/// Opens (creating if needed) `dir/broker.db` and the schema, synchronously:
/// the writer's connection. WAL and `synchronous=FULL`: a commit is on disk
/// before it is acknowledged (group commit keeps the fsync count down).
fn open_sync(dir: &Path) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(dir)?;
    let conn = brume_sqlite::open(&dir.join(DB_FILE), &brume_sqlite::Options::new())?;
    conn.execute_batch(SCHEMA)?;
    migrate(&conn)?;
    Ok(conn)
}

/// Columns added after the first schema. Each is added only if missing
/// (`pragma table_info`), so old databases open and new ones are untouched.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let has = |table: &str, column: &str| -> rusqlite::Result<bool> {
        let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
        let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
        for n in names {
            if n? == column {
                return Ok(true);
            }
        }
        Ok(false)
    };
    // The account address an API key is bound to ('' for none): the
    // ledger's requester and developer for that key.
    if !has("api_keys", "account")? {
        conn.execute_batch("ALTER TABLE api_keys ADD COLUMN account TEXT NOT NULL DEFAULT ''")?;
    }
    // A job's signed receipt (JSON), for results kept from a provider.
    if !has("jobs", "receipt")? {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN receipt TEXT")?;
    }
    // How a replicated job's result was decided (JSON).
    if !has("jobs", "verification")? {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN verification TEXT")?;
    }
    // The output files a job left (JSON references; the bytes are blobs).
    if !has("jobs", "outputs")? {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN outputs TEXT")?;
    }
    // Keys have a public id (the first 8 bytes of their hash, in hex),
    // scopes, an expiry and a revocation time. Keys made before scopes
    // existed keep what they could do: every scope.
    if !has("api_keys", "id")? {
        conn.execute_batch(
            "ALTER TABLE api_keys ADD COLUMN id TEXT NOT NULL DEFAULT '';
             UPDATE api_keys SET id = lower(hex(substr(hash, 1, 8)));
             ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'invoke,jobs,publish,read,admin';
             ALTER TABLE api_keys ADD COLUMN expires_at_ms INTEGER;
             ALTER TABLE api_keys ADD COLUMN revoked_at_ms INTEGER;
             CREATE INDEX IF NOT EXISTS api_keys_by_id ON api_keys(id);",
        )?;
    }
    // The account that submitted a job: only it (and admin keys) sees it.
    if !has("jobs", "account")? {
        conn.execute_batch(
            "ALTER TABLE jobs ADD COLUMN account TEXT NOT NULL DEFAULT '';
             UPDATE jobs SET account = coalesce(json_extract(spec, '$.requester'), '');
             CREATE INDEX IF NOT EXISTS jobs_by_account ON jobs(account, id);",
        )?;
    }
    Ok(())
}

/// The SQLite database.
#[derive(Clone)]
pub(crate) struct Lite {
    db: brume_sqlite::Db,
}

impl Lite {
    /// Opens the database under `dir` and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Lite, StoreError> {
        let write = open_sync(dir)?;
        let db = brume_sqlite::Db::start(
            "brume-db-writer",
            write,
            &dir.join(DB_FILE),
            &brume_sqlite::Options::new(),
        )?;
        Ok(Lite { db })
    }

    pub fn path(&self) -> &Path {
        self.db.path()
    }

    pub async fn write<T: Send + 'static>(&self, f: Work<T>) -> Result<T, StoreError> {
        self.db.write(move |tx| f(&mut brume_sql::Lite(tx))).await
    }

    pub fn write_later(&self, f: Work<()>) -> Result<(), brume_sqlite::Closed> {
        self.db.write_later(move |tx| f(&mut brume_sql::Lite(tx)))
    }

    pub async fn read<T: Send + 'static>(&self, f: Work<T>) -> Result<T, StoreError> {
        self.db.read(move |c| f(&mut brume_sql::Lite(c))).await
    }
}
