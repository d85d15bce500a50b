//! The broker's durable state in SQLite: API keys, services, jobs and their
//! events, and the operator's word on providers (`provider_trust`, bans). Module bytes live beside it as files (`blobs/{sha256}`).
//!
//! A [`brume_sqlite::Db`]: one writer thread owns the write connection.
//! Writes are closures sent to it; it runs everything queued in one
//! transaction, each write under its own savepoint (a failing write is
//! rolled back alone), and commits once (group commit), then acknowledges
//! each write. The batch is whatever queued while the previous commit was
//! syncing, so latency stays one commit at worst. Reads use pooled
//! connections on blocking threads (WAL lets them run beside the writer).
//! Nothing here blocks the async runtime.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the database writer has stopped")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A group commit failed (nothing of its batch is stored), or a write
    /// panicked (and was rolled back).
    #[error("database: {0}")]
    Db(#[source] brume_sqlite::Error),
    /// A stored record that does not decode.
    #[error("database: a corrupt record: {0}")]
    Corrupt(String),
}

impl From<brume_sql::Error> for StoreError {
    fn from(e: brume_sql::Error) -> StoreError {
        match e {
            brume_sql::Error::Sqlite(e) => StoreError::Sql(e),
            brume_sql::Error::Column(m) => StoreError::Corrupt(m),
            // The broker's store has no PostgreSQL backend yet; one would
            // give these a variant of their own rather than "corrupt".
            e @ brume_sql::Error::Pg(_) => StoreError::Corrupt(e.to_string()),
        }
    }
}

impl From<brume_sqlite::Error> for StoreError {
    fn from(e: brume_sqlite::Error) -> StoreError {
        match e {
            brume_sqlite::Error::Open(e) => e.into(),
            brume_sqlite::Error::Sql(e) => StoreError::Sql(e),
            brume_sqlite::Error::Closed => StoreError::Closed,
            brume_sqlite::Error::Spawn(e) => StoreError::Io(e),
            e => StoreError::Db(e),
        }
    }
}

impl From<brume_sqlite::OpenError> for StoreError {
    fn from(e: brume_sqlite::OpenError) -> StoreError {
        StoreError::Open {
            path: e.path.display().to_string(),
            source: e.source,
        }
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: brume_sqlite::Db,
    blobs: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("blobs", &self.blobs)
            .finish_non_exhaustive()
    }
}

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

/// Opens (creating if needed) `dir/broker.db` and the schema, synchronously.
/// Used by the broker at start-up and by `brume broker keys`. WAL and
/// `synchronous=FULL`: a commit is on disk before it is acknowledged (group
/// commit keeps the fsync count down).
pub fn open_sync(dir: &Path) -> Result<Connection, StoreError> {
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

impl Store {
    /// Opens the database under `dir` and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let write = open_sync(dir)?;
        let blobs = dir.join("blobs");
        std::fs::create_dir_all(&blobs)?;
        let db = brume_sqlite::Db::start(
            "brume-db-writer",
            write,
            &dir.join(DB_FILE),
            &brume_sqlite::Options::new(),
        )?;
        Ok(Store { db, blobs })
    }

    /// Runs `f` in the next group commit and waits until it is durable. If
    /// `f` fails, its changes are rolled back (the other writes of the
    /// batch still commit) and its error is returned.
    pub async fn write(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send + 'static,
    ) -> Result<(), StoreError> {
        self.write_with(move |tx| f(tx).map_err(StoreError::Sql))
            .await
    }

    /// [`Store::write`] for a write that returns a value.
    pub async fn write_with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.db.write(f).await
    }

    /// Queues `f` for the next group commit without waiting. Writes are
    /// applied in the order they were queued. A failure is logged (and
    /// the write rolled back).
    pub fn write_later(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send + 'static,
    ) {
        if self.db.write_later(f).is_err() {
            tracing::error!("database writer has stopped; a write was dropped");
        }
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        Ok(self.db.flush().await?)
    }

    /// Runs a read on a blocking thread, with a pooled connection.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.db.read(move |c| f(c).map_err(StoreError::Sql)).await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.blobs.join(digest)
    }

    /// Writes a module file atomically (temp file, fsync, rename).
    pub async fn put_blob(&self, digest: String, bytes: bytes::Bytes) -> Result<(), StoreError> {
        let path = self.blob_path(&digest);
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            if path.exists() {
                return Ok(());
            }
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            {
                use std::io::Write as _;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            Ok(())
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    pub async fn get_blob(&self, digest: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        match tokio::fs::read(self.blob_path(digest)).await {
            Ok(b) => Ok(Some(b.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The store as a [`brume_sql::Backend`]: components whose SQL is written
/// over [`brume_sql::Sql`] (leases so far) run on it as they would on any
/// other backend.
impl brume_sql::Backend for Store {
    type Error = StoreError;

    fn location(&self) -> String {
        self.path().display().to_string()
    }

    fn run<T: Send + 'static>(
        &self,
        write: bool,
        op: brume_sql::Op<T, StoreError>,
    ) -> brume_sql::OpFuture<'_, T, StoreError> {
        if write {
            Box::pin(self.write_with(move |tx| op(&mut brume_sql::Lite(tx))))
        } else {
            Box::pin(self.db.read(move |c| op(&mut brume_sql::Lite(c))))
        }
    }
}

/// API keys: `brk_` + 64 hex digits (256 random bits). Only the sha256 of a
/// key is stored; its public id is the first 8 bytes of that hash, in hex.
pub mod keys {
    use super::*;
    use rand::Rng as _;
    use sha2::{Digest as _, Sha256};

    pub use brume_api::rest::Scope;

    pub fn hash(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// A key's public id: the first 8 bytes of its hash, in hex.
    pub fn id_of(hash: &[u8; 32]) -> String {
        hex::encode(&hash[..8])
    }

    /// What a new key may do and for how long.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct NewKey {
        /// A label (who or what uses it).
        pub name: String,
        /// The account address it is bound to, if any.
        pub account: Option<String>,
        pub scopes: Vec<Scope>,
        /// When it stops working (ms since the epoch), if ever.
        pub expires_at_ms: Option<u64>,
    }

    /// Mints a key, stores its hash, returns the key (shown once).
    pub fn create(conn: &Connection, new: &NewKey) -> Result<String, StoreError> {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = format!("brk_{}", hex::encode(raw));
        let hash = hash(&token);
        conn.execute(
            "INSERT INTO api_keys (hash, name, created_at_ms, account, id, scopes, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                hash.to_vec(),
                new.name,
                crate::now_ms() as i64,
                new.account.as_deref().unwrap_or(""),
                id_of(&hash),
                Scope::join(&new.scopes),
                new.expires_at_ms.map(|t| t as i64),
            ],
        )?;
        Ok(token)
    }

    /// One key as `brume broker keys list` and `GET /v1/keys` show it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct KeyInfo {
        pub id: String,
        pub name: String,
        pub created_at_ms: u64,
        /// The bound account address, if any.
        pub account: Option<String>,
        pub scopes: Vec<Scope>,
        pub expires_at_ms: Option<u64>,
        pub revoked_at_ms: Option<u64>,
    }

    impl KeyInfo {
        /// The account the key speaks for: its bound address, else its name.
        pub fn speaks_for(&self) -> &str {
            self.account.as_deref().unwrap_or(&self.name)
        }

        /// Whether it works at `now_ms`.
        pub fn is_live(&self, now_ms: u64) -> bool {
            self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|t| now_ms < t)
        }
    }

    const COLUMNS: &str = "id, name, created_at_ms, account, scopes, expires_at_ms, revoked_at_ms";

    fn info(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyInfo> {
        let account: String = r.get(3)?;
        let scopes: String = r.get(4)?;
        Ok(KeyInfo {
            id: r.get(0)?,
            name: r.get(1)?,
            created_at_ms: r.get::<_, i64>(2)? as u64,
            account: (!account.is_empty()).then_some(account),
            scopes: Scope::parse_list(&scopes).unwrap_or_default(),
            expires_at_ms: r.get::<_, Option<i64>>(5)?.map(|t| t as u64),
            revoked_at_ms: r.get::<_, Option<i64>>(6)?.map(|t| t as u64),
        })
    }

    /// Every key, oldest first.
    pub fn list(conn: &Connection) -> rusqlite::Result<Vec<KeyInfo>> {
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM api_keys ORDER BY created_at_ms"
        ))?;
        let rows = stmt.query_map([], info)?;
        rows.collect()
    }

    /// Every live key's hash and what it is.
    pub fn all_live(conn: &Connection) -> rusqlite::Result<Vec<([u8; 32], KeyInfo)>> {
        let now = crate::now_ms();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS}, hash FROM api_keys WHERE revoked_at_ms IS NULL"
        ))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(7)?, info(r)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (h, k) = row?;
            if let Ok(arr) = <[u8; 32]>::try_from(h.as_slice())
                && k.is_live(now)
            {
                out.push((arr, k));
            }
        }
        Ok(out)
    }

    /// The key with this hash, if there is one (live or not).
    pub fn by_hash(conn: &Connection, hash: &[u8; 32]) -> rusqlite::Result<Option<KeyInfo>> {
        conn.query_row(
            &format!("SELECT {COLUMNS} FROM api_keys WHERE hash = ?1"),
            [hash.to_vec()],
            info,
        )
        .optional()
    }

    /// Revokes the key with public id `id`; returns it, or `None` if there
    /// is none. Revoking twice keeps the first time.
    pub fn revoke(conn: &Connection, id: &str) -> Result<Option<KeyInfo>, StoreError> {
        conn.execute(
            "UPDATE api_keys SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
            params![id, crate::now_ms() as i64],
        )?;
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
                [id],
                info,
            )
            .optional()?)
    }
}

/// The operator's standing of a provider address (`brume broker providers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    /// Operator-approved (tier 2).
    Approved,
    /// Refused at the handshake and disconnected until approved.
    Suspended,
    /// Refused for good (also recorded in `provider_bans`).
    Banned,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Approved => "approved",
            Standing::Suspended => "suspended",
            Standing::Banned => "banned",
        }
    }

    fn parse(s: &str) -> Option<Standing> {
        match s {
            "approved" => Some(Standing::Approved),
            "suspended" => Some(Standing::Suspended),
            "banned" => Some(Standing::Banned),
            _ => None,
        }
    }

    /// Whether a provider with this standing may connect.
    pub fn may_connect(self) -> bool {
        self == Standing::Approved
    }
}

/// A provider's standing and its reason: banned if `provider_bans` has the
/// address (a proven cheat, or the operator's ban), else what
/// `provider_trust` says, else `None` (never reviewed: tier 4).
pub fn provider_status(
    conn: &Connection,
    address: &str,
) -> rusqlite::Result<Option<(Standing, String)>> {
    let address = address.to_ascii_lowercase();
    let ban: Option<String> = conn
        .query_row(
            "SELECT reason FROM provider_bans WHERE address = ?1",
            [&address],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(reason) = ban {
        return Ok(Some((Standing::Banned, reason)));
    }
    let row: Option<(String, String)> = conn
        .query_row(
            "SELECT status, reason FROM provider_trust WHERE address = ?1",
            [&address],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.and_then(|(s, reason)| Standing::parse(&s).map(|s| (s, reason))))
}

/// `brume broker providers`: the operator's standing of provider
/// addresses (`provider_trust`), and the bans (`provider_bans`).
/// Providers' track records (`brume_api::rest::Reputation`, as JSON), by
/// lowercase address: what adaptive verification and matching rank by,
/// kept across restarts.
pub(crate) mod reputation {
    use brume_api::rest::Reputation;

    use super::*;

    pub fn load(c: &Connection) -> rusqlite::Result<Vec<(String, Reputation)>> {
        let mut stmt = c.prepare("SELECT address, body FROM provider_reputation")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (address, body) = row?;
            match serde_json::from_str(&body) {
                Ok(rep) => out.push((address, rep)),
                Err(e) => tracing::warn!(%address, "a stored reputation does not parse: {e}"),
            }
        }
        Ok(out)
    }

    pub fn save(tx: &Transaction<'_>, records: &[(String, Reputation)]) -> rusqlite::Result<()> {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO provider_reputation (address, body) VALUES (?1, ?2)
             ON CONFLICT(address) DO UPDATE SET body = excluded.body",
        )?;
        for (address, rep) in records {
            let body = serde_json::to_string(rep).unwrap_or_default();
            stmt.execute(params![address, body])?;
        }
        Ok(())
    }
}

pub mod providers {
    use super::*;

    /// Bans `address` (lowercase) for `reason`, with the proof of cheat if
    /// there is one. A ban is final: a later one only replaces the record.
    pub fn record_ban(
        tx: &Transaction<'_>,
        address: &str,
        reason: &str,
        proof: Option<&[u8]>,
        at_ms: u64,
    ) -> rusqlite::Result<()> {
        tx.execute(
            "INSERT OR REPLACE INTO provider_bans (address, reason, proof, at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![address, reason, proof, at_ms as i64],
        )?;
        Ok(())
    }

    /// Every banned address (lowercase) and why.
    pub fn bans_by_address(c: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
        let mut stmt = c.prepare("SELECT address, reason FROM provider_bans")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    /// One reviewed address.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TrustInfo {
        /// Lowercase `0x` address.
        pub address: String,
        pub status: Standing,
        pub reason: String,
        pub at_ms: u64,
    }

    /// One banned address.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct BanInfo {
        pub address: String,
        pub reason: String,
        /// Whether a proof of cheat is recorded with the ban.
        pub has_proof: bool,
        pub at_ms: u64,
    }

    /// Why a standing couldn't be changed.
    #[derive(Debug, thiserror::Error)]
    pub enum TrustError {
        #[error("{address} is banned ({reason}); a ban is final")]
        Banned { address: String, reason: String },
        #[error(transparent)]
        Store(#[from] StoreError),
    }

    impl From<rusqlite::Error> for TrustError {
        fn from(e: rusqlite::Error) -> TrustError {
            TrustError::Store(e.into())
        }
    }

    /// Sets `address`'s standing. A ban also goes to `provider_bans` (an
    /// existing ban row, perhaps with a proof, is kept); a banned address
    /// can't be approved or suspended.
    pub fn set(
        conn: &Connection,
        address: &str,
        status: Standing,
        reason: &str,
    ) -> Result<TrustInfo, TrustError> {
        let address = address.to_ascii_lowercase();
        if status != Standing::Banned
            && let Some((Standing::Banned, reason)) = provider_status(conn, &address)?
        {
            return Err(TrustError::Banned { address, reason });
        }
        let at_ms = crate::now_ms();
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO provider_trust (address, status, reason, at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![address, status.as_str(), reason, at_ms as i64],
        )?;
        if status == Standing::Banned {
            tx.execute(
                "INSERT OR IGNORE INTO provider_bans (address, reason, proof, at_ms) VALUES (?1, ?2, NULL, ?3)",
                params![address, reason, at_ms as i64],
            )?;
        }
        tx.commit()?;
        Ok(TrustInfo {
            address,
            status,
            reason: reason.to_string(),
            at_ms,
        })
    }

    /// Every reviewed address, by address.
    pub fn list(conn: &Connection) -> Result<Vec<TrustInfo>, StoreError> {
        let mut stmt = conn.prepare(
            "SELECT address, status, reason, at_ms FROM provider_trust ORDER BY address",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (address, status, reason, at_ms) = row?;
            if let Some(status) = Standing::parse(&status) {
                out.push(TrustInfo {
                    address,
                    status,
                    reason,
                    at_ms: at_ms as u64,
                });
            }
        }
        Ok(out)
    }

    /// Every ban, by address.
    pub fn bans(conn: &Connection) -> Result<Vec<BanInfo>, StoreError> {
        let mut stmt = conn.prepare(
            "SELECT address, reason, proof IS NOT NULL, at_ms FROM provider_bans ORDER BY address",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(BanInfo {
                address: r.get(0)?,
                reason: r.get(1)?,
                has_proof: r.get(2)?,
                at_ms: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The addresses that may not connect, with why: the bans and the
    /// suspensions.
    pub fn refused(conn: &Connection) -> rusqlite::Result<Vec<(String, Standing, String)>> {
        let mut stmt = conn.prepare(
            "SELECT address, 'banned', reason FROM provider_bans
             UNION ALL
             SELECT address, status, reason FROM provider_trust
             WHERE status = 'suspended' AND address NOT IN (SELECT address FROM provider_bans)",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (address, status, reason) = row?;
            if let Some(s) = Standing::parse(&status) {
                out.push((address, s, reason));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::providers::{self, TrustError};
    use super::*;

    #[test]
    fn standings_bans_and_refusals() {
        let dir = tempfile::tempdir().expect("tmp");
        let conn = open_sync(dir.path()).expect("open");
        let (a, b, c) = ("0xAA00", "0xbb00", "0xcc00");
        assert_eq!(provider_status(&conn, a).expect("status"), None);

        providers::set(&conn, a, Standing::Approved, "known").expect("approve");
        providers::set(&conn, b, Standing::Suspended, "slow").expect("suspend");
        providers::set(&conn, c, Standing::Banned, "fraud").expect("ban");
        let status = |x| provider_status(&conn, x).expect("status");
        assert_eq!(status("0xaa00"), Some((Standing::Approved, "known".into())));
        assert_eq!(status("0xBB00"), Some((Standing::Suspended, "slow".into())));
        assert_eq!(status(c), Some((Standing::Banned, "fraud".into())));

        // A ban is final; a suspension is lifted by approval.
        let err = providers::set(&conn, c, Standing::Approved, "").expect_err("banned");
        assert!(matches!(err, TrustError::Banned { .. }), "{err}");
        let mut refused = providers::refused(&conn).expect("refused");
        refused.sort();
        assert_eq!(
            refused,
            [
                ("0xbb00".into(), Standing::Suspended, "slow".into()),
                ("0xcc00".into(), Standing::Banned, "fraud".into()),
            ]
        );
        providers::set(&conn, b, Standing::Approved, "ok").expect("approve");
        assert_eq!(providers::refused(&conn).expect("refused").len(), 1);

        // A broker's own ban (a proof of cheat) is a ban too, and the
        // operator's ban keeps its proof.
        conn.execute(
            "INSERT INTO provider_bans (address, reason, proof, at_ms) VALUES ('0xdd00', 'proven cheat', x'00', 1)",
            [],
        )
        .expect("insert");
        assert_eq!(
            status("0xdd00"),
            Some((Standing::Banned, "proven cheat".into()))
        );
        providers::set(&conn, "0xdd00", Standing::Banned, "again").expect("ban");
        let bans = providers::bans(&conn).expect("bans");
        let dd = bans.iter().find(|b| b.address == "0xdd00").expect("dd");
        assert!(dd.has_proof && dd.reason == "proven cheat", "{dd:?}");
    }

    /// A write that fails is rolled back whole: its earlier statements
    /// don't reach the database, and later writes go on.
    #[tokio::test]
    async fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let insert = |tx: &Transaction<'_>, name: &str| {
            tx.execute(
                "INSERT INTO api_keys (hash, name, created_at_ms) VALUES (?1, ?1, 0)",
                [name],
            )
        };
        let err = store
            .write(move |tx| {
                insert(tx, "partial")?;
                insert(tx, "partial")?; // the same primary key: fails
                Ok(())
            })
            .await
            .expect_err("a duplicate key");
        assert!(matches!(err, StoreError::Sql(_)), "{err}");
        store
            .write(move |tx| insert(tx, "whole").map(drop))
            .await
            .expect("write");
        let names: Vec<String> = store
            .read(|c| {
                let mut stmt = c.prepare("SELECT name FROM api_keys ORDER BY name")?;
                stmt.query_map([], |r| r.get::<_, String>(0))?.collect()
            })
            .await
            .expect("read");
        assert_eq!(names, ["whole"]);
    }
}
