//! API keys: `brk_` + 64 hex digits (256 random bits). Only the sha256 of a
//! key is stored; its public id is the first 8 bytes of that hash, in hex.

use brume_sql::{Row, Sql, V};
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

use super::StoreError;
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
pub fn create(c: &mut dyn Sql, new: &NewKey) -> Result<String, StoreError> {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("brk_{}", hex::encode(raw));
    let hash = hash(&token);
    let (id, scopes) = (id_of(&hash), Scope::join(&new.scopes));
    c.exec(
        "INSERT INTO api_keys (hash, name, created_at_ms, account, id, scopes, expires_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        &[
            V::B(&hash),
            V::T(&new.name),
            V::I(crate::now_ms() as i64),
            V::T(new.account.as_deref().unwrap_or("")),
            V::T(&id),
            V::T(&scopes),
            new.expires_at_ms.map(|t| t as i64).into(),
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

fn info(r: &Row) -> Result<KeyInfo, StoreError> {
    let account = r.t(3)?;
    Ok(KeyInfo {
        id: r.t(0)?,
        name: r.t(1)?,
        created_at_ms: r.i(2)? as u64,
        account: (!account.is_empty()).then_some(account),
        scopes: Scope::parse_list(&r.t(4)?).unwrap_or_default(),
        expires_at_ms: r.oi(5)?.map(|t| t as u64),
        revoked_at_ms: r.oi(6)?.map(|t| t as u64),
    })
}

/// Every key, oldest first.
pub fn list(c: &mut dyn Sql) -> Result<Vec<KeyInfo>, StoreError> {
    let rows = c.query(
        &format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at_ms, id"),
        &[],
    )?;
    rows.iter().map(info).collect()
}

/// Every live key's hash and what it is.
pub fn all_live(c: &mut dyn Sql) -> Result<Vec<([u8; 32], KeyInfo)>, StoreError> {
    let now = crate::now_ms();
    let rows = c.query(
        &format!("SELECT {COLUMNS}, hash FROM api_keys WHERE revoked_at_ms IS NULL"),
        &[],
    )?;
    let mut out = Vec::new();
    for r in &rows {
        let k = info(r)?;
        if let Ok(arr) = <[u8; 32]>::try_from(r.b(7)?.as_slice())
            && k.is_live(now)
        {
            out.push((arr, k));
        }
    }
    Ok(out)
}

/// The key with this hash, if there is one (live or not).
pub fn by_hash(c: &mut dyn Sql, hash: &[u8; 32]) -> Result<Option<KeyInfo>, StoreError> {
    c.one(
        &format!("SELECT {COLUMNS} FROM api_keys WHERE hash = ?1"),
        &[V::B(hash)],
    )?
    .as_ref()
    .map(info)
    .transpose()
}

/// Revokes the key with public id `id`; returns it, or `None` if there
/// is none. Revoking twice keeps the first time.
pub fn revoke(c: &mut dyn Sql, id: &str) -> Result<Option<KeyInfo>, StoreError> {
    c.exec(
        "UPDATE api_keys SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
        &[V::T(id), V::I(crate::now_ms() as i64)],
    )?;
    c.one(
        &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
        &[V::T(id)],
    )?
    .as_ref()
    .map(info)
    .transpose()
}
