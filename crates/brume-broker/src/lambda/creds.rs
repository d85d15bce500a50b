//! Lambda credentials: an access key id, minted for an account, and a
//! secret that is never stored. The secret is HMAC-SHA256 of the key id
//! under the broker's master key (`DATA/lambda.master`, 32 random bytes,
//! mode 0600), so the broker recomputes it to check a signature; the
//! database holds only the key id and its account.

use std::path::Path;

use base64::Engine as _;
use brume_sql::{Sql, V};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::StoreError;
use crate::store::Store;

/// The master key's file in the data dir.
pub const MASTER_FILE: &str = "lambda.master";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lambda_keys (
    key_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
";

/// The master key that derives every secret.
#[derive(Clone)]
pub struct Master([u8; 32]);

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Master(<redacted>)")
    }
}

impl Master {
    /// Loads `dir/lambda.master`, or creates it (mode 0600).
    pub fn load_or_create(dir: &Path) -> Result<Master, StoreError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = dir.join(MASTER_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok());
                bytes.map(Master).ok_or_else(|| {
                    StoreError::Io(std::io::Error::other(format!(
                        "{}: not 32 bytes of hex",
                        path.display()
                    )))
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                std::fs::create_dir_all(dir)?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                f.write_all(hex::encode(key).as_bytes())?;
                f.sync_all()?;
                Ok(Master(key))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The secret of `key_id`.
    pub fn secret(&self, key_id: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"brume lambda secret v1\n");
        mac.update(key_id.as_bytes());
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

/// Makes the table on SQLite (PostgreSQL's is made by its migrations).
fn prepare(c: &mut dyn Sql) -> Result<(), StoreError> {
    crate::store::sqlite_layout(c, SCHEMA)
}

/// Mints a credential for `account` in `store`, with the master key under
/// `dir`: the key id and its secret (shown once; the secret is never
/// stored).
pub async fn mint(
    dir: &Path,
    store: &Store,
    account: &str,
) -> Result<(String, String), StoreError> {
    let master = Master::load_or_create(dir)?;
    let suffix: [u8; 8] = rand::random();
    let key_id = format!("BRUME{}", hex::encode_upper(suffix));
    let (id, account) = (key_id.clone(), account.to_string());
    store
        .write(move |c| {
            prepare(c)?;
            c.exec(
                "INSERT INTO lambda_keys (key_id, account, created_at_ms) VALUES (?1, ?2, ?3)",
                &[V::T(&id), V::T(&account), V::I(crate::now_ms() as i64)],
            )?;
            Ok(())
        })
        .await?;
    let secret = master.secret(&key_id);
    Ok((key_id, secret))
}

/// One credential, as `brume broker lambda-keys list` shows it (never
/// its secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyRecord {
    pub key_id: String,
    pub account: String,
    pub created_at_ms: u64,
    pub revoked_at_ms: Option<u64>,
}

/// Every credential in `store`, oldest first.
pub async fn list(store: &Store) -> Result<Vec<KeyRecord>, StoreError> {
    store.write(prepare).await?;
    store
        .read(|c| {
            let rows = c.query(
                "SELECT key_id, account, created_at_ms, revoked_at_ms FROM lambda_keys \
                 ORDER BY created_at_ms, key_id",
                &[],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(KeyRecord {
                        key_id: r.t(0)?,
                        account: r.t(1)?,
                        created_at_ms: r.i(2)? as u64,
                        revoked_at_ms: r.oi(3)?.map(|t| t as u64),
                    })
                })
                .collect()
        })
        .await
}

/// Revokes a credential in `store`: a running broker refuses its next
/// signature. `false`: no live credential has that id.
pub async fn revoke(store: &Store, key_id: &str) -> Result<bool, StoreError> {
    let id = key_id.to_string();
    store
        .write(move |c| {
            prepare(c)?;
            let n = c.exec(
                "UPDATE lambda_keys SET revoked_at_ms = ?2 WHERE key_id = ?1 AND revoked_at_ms IS NULL",
                &[V::T(&id), V::I(crate::now_ms() as i64)],
            )?;
            Ok(n == 1)
        })
        .await
}

/// The broker's view: the master key, and the database it reads a key
/// id's account from on every request (so a revocation, made by the CLI
/// beside a running broker, holds at once).
pub(crate) struct Credentials {
    master: Master,
    store: Store,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

impl Credentials {
    pub async fn open(dir: &Path, store: Store) -> Result<Credentials, StoreError> {
        let master = Master::load_or_create(dir)?;
        store.write(prepare).await?;
        Ok(Credentials { master, store })
    }

    /// The account and secret of a live key id.
    pub async fn lookup(&self, key_id: &str) -> Result<Option<(String, String)>, StoreError> {
        if key_id.len() > 64 {
            return Ok(None);
        }
        let id = key_id.to_string();
        let account = self.store.read(move |c| account_of(c, &id)).await?;
        Ok(account.map(|a| (a, self.master.secret(key_id))))
    }
}

fn account_of(c: &mut dyn Sql, key_id: &str) -> Result<Option<String>, StoreError> {
    let row = c.one(
        "SELECT account FROM lambda_keys WHERE key_id = ?1 AND revoked_at_ms IS NULL",
        &[V::T(key_id)],
    )?;
    Ok(row.map(|r| r.t(0)).transpose()?)
}
