//! Console accounts: an email and a password (Argon2id, stored as a PHC
//! string, never in clear), each mapped to one account address; and the
//! console's sessions. A session is a random token in an HttpOnly,
//! SameSite=Strict cookie; the database keeps its sha256, the account it
//! speaks for, its scopes and its CSRF token. Failed sign-ins are
//! rate-limited per email and per client address.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use brume_api::rest::Scope;
use brume_sql::{Sql, V};
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

use crate::StoreError;
use crate::store::Store;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS console_accounts (
    email TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    password TEXT NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS console_sessions (
    token_hash BLOB PRIMARY KEY,
    account TEXT NOT NULL,
    label TEXT NOT NULL,
    scopes TEXT NOT NULL,
    csrf TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
";

/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed sign-ins allowed per email, and per client address, in
/// [`FAILURE_WINDOW`].
const MAX_FAILURES_PER_EMAIL: u32 = 5;
const MAX_FAILURES_PER_CLIENT: u32 = 20;
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The longest password hashed (Argon2 takes any, but a megabyte of
/// password is an attack on the CPU, not a password).
pub const MAX_PASSWORD_BYTES: usize = 1024;
pub const MIN_PASSWORD_CHARS: usize = 10;

/// Why an account can't be made or used.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("an account with email {0} exists")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<brume_sql::Error> for AccountError {
    fn from(e: brume_sql::Error) -> AccountError {
        AccountError::Store(e.into())
    }
}

/// What a signed-in console user may do, as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The account it speaks for: an address, or an API key's label.
    pub account: String,
    /// Who signed in: an email, or `API key <id>`.
    pub label: String,
    pub scopes: Vec<Scope>,
    /// Every form carries it back; a POST without it is refused.
    pub csrf: String,
}

/// Checks an email and a password for a new account.
fn check_new(email: &str, address: &str, password: &str) -> Result<(), AccountError> {
    let bad = |m: &str| Err(AccountError::Invalid(m.to_string()));
    let at = email.find('@');
    if email.len() > 254
        || at.is_none_or(|i| i == 0 || i + 1 == email.len())
        || email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return bad("email: not an email address");
    }
    if !brume_api::names::looks_like_address(address) {
        return bad("address: 0x and 40 hex digits");
    }
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return bad("password: at least 10 characters (and at most 1 KiB)");
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String, AccountError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Invalid(format!("password: {e}")))
}

/// Inserts an account unless its email is taken; whether it did.
fn insert(
    c: &mut dyn Sql,
    email: &str,
    address: &str,
    phc: &str,
    admin: bool,
) -> Result<bool, StoreError> {
    let n = c.exec(
        "INSERT INTO console_accounts (email, address, password, admin, created_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (email) DO NOTHING",
        &[
            V::T(email),
            V::T(address),
            V::T(phc),
            V::I(admin.into()),
            V::I(crate::now_ms() as i64),
        ],
    )?;
    Ok(n == 1)
}

/// Makes the tables on SQLite (PostgreSQL's are made by its migrations).
fn prepare(c: &mut dyn Sql) -> Result<(), StoreError> {
    crate::store::sqlite_layout(c, SCHEMA)
}

/// Creates an account in `store` (the operator's `brume broker accounts
/// create`; the broker may be running).
pub async fn create(
    store: &Store,
    email: &str,
    address: &str,
    password: &str,
    admin: bool,
) -> Result<(), AccountError> {
    let email = email.trim().to_ascii_lowercase();
    check_new(&email, address, password)?;
    let phc = hash_password(password)?;
    let (e, address) = (email.clone(), address.to_string());
    let inserted = store
        .write(move |c| {
            prepare(c)?;
            insert(c, &e, &address, &phc, admin)
        })
        .await?;
    if inserted {
        Ok(())
    } else {
        Err(AccountError::Exists(email))
    }
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn scopes_text(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Failed sign-ins in the current window, by key.
#[derive(Default)]
struct Failures(HashMap<String, (u32, Instant)>);

impl Failures {
    fn count(&mut self, key: &str) -> u32 {
        match self.0.get(key) {
            Some((n, since)) if since.elapsed() < FAILURE_WINDOW => *n,
            _ => 0,
        }
    }

    fn add(&mut self, key: &str) {
        let now = Instant::now();
        let e = self.0.entry(key.to_string()).or_insert((0, now));
        if e.1.elapsed() >= FAILURE_WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
        if self.0.len() > 100_000 {
            self.0
                .retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
    }
}

/// How a sign-in went.
#[derive(Debug)]
pub enum SignIn {
    /// The new session's token (the cookie) and the session.
    Ok(String, Session),
    Refused,
    /// Too many failures: try again later.
    Limited,
}

/// The broker's view of console accounts and sessions.
pub(crate) struct Accounts {
    store: Store,
    failures: Mutex<Failures>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").finish_non_exhaustive()
    }
}

impl Accounts {
    pub async fn open(store: Store) -> Result<Accounts, StoreError> {
        store.write(prepare).await?;
        Ok(Accounts {
            store,
            failures: Mutex::new(Failures::default()),
        })
    }

    /// Sign-up (when the operator allows it): a new account, not admin.
    pub async fn sign_up(
        &self,
        email: &str,
        address: &str,
        password: &str,
    ) -> Result<(), AccountError> {
        let email = email.trim().to_ascii_lowercase();
        check_new(&email, address, password)?;
        let password = password.to_string();
        let phc = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| AccountError::Invalid(format!("hashing: {e}")))??;
        let address = address.to_string();
        let e = email.clone();
        let inserted = self
            .store
            .write(move |c| insert(c, &e, &address, &phc, false))
            .await?;
        if inserted {
            Ok(())
        } else {
            Err(AccountError::Exists(email))
        }
    }

    /// Checks a password (Argon2id, on a blocking thread) and opens a
    /// session. `client` is the caller's address, for the rate limit.
    pub async fn sign_in(
        &self,
        email: &str,
        password: &str,
        client: &str,
    ) -> Result<SignIn, StoreError> {
        let email = email.trim().to_ascii_lowercase();
        {
            let mut f = self.failures.lock();
            if f.count(&email) >= MAX_FAILURES_PER_EMAIL
                || f.count(&format!("client {client}")) >= MAX_FAILURES_PER_CLIENT
            {
                return Ok(SignIn::Limited);
            }
        }
        let e = email.clone();
        let found: Option<(String, String, bool)> = self
            .store
            .read(move |c| {
                let row = c.one(
                    "SELECT address, password, admin FROM console_accounts WHERE email = ?1",
                    &[V::T(&e)],
                )?;
                row.map(|r| Ok((r.t(0)?, r.t(1)?, r.i(2)? != 0)))
                    .transpose()
            })
            .await?;
        let password = password.to_string();
        let phc = found.as_ref().map(|(_, p, _)| p.clone());
        // A missing account costs the same hash as a wrong password.
        let ok = tokio::task::spawn_blocking(move || {
            let dummy;
            let phc = match &phc {
                Some(p) => p.as_str(),
                None => {
                    dummy = hash_password("not a password of anyone's").unwrap_or_default();
                    dummy.as_str()
                }
            };
            password.len() <= MAX_PASSWORD_BYTES
                && PasswordHash::new(phc).is_ok_and(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
        })
        .await
        .unwrap_or(false);
        let Some((address, _, admin)) = found.filter(|_| ok) else {
            let mut f = self.failures.lock();
            f.add(&email);
            f.add(&format!("client {client}"));
            return Ok(SignIn::Refused);
        };
        let mut scopes = Scope::DEFAULT.to_vec();
        if admin {
            scopes.push(Scope::Admin);
        }
        let (token, session) = self.open_session(address, email, scopes).await?;
        Ok(SignIn::Ok(token, session))
    }

    /// A session for an API key's account and scopes (sign-in with a key).
    pub async fn open_session(
        &self,
        account: String,
        label: String,
        scopes: Vec<Scope>,
    ) -> Result<(String, Session), StoreError> {
        let token = hex::encode(rand::random::<[u8; 32]>());
        let csrf = hex::encode(rand::random::<[u8; 16]>());
        let session = Session {
            account,
            label,
            scopes,
            csrf,
        };
        let s = session.clone();
        let hash = token_hash(&token);
        let expires = crate::now_ms() + SESSION_TTL.as_millis() as u64;
        self.store
            .write(move |c| {
                c.exec(
                    "DELETE FROM console_sessions WHERE expires_at_ms < ?1",
                    &[V::I(crate::now_ms() as i64)],
                )?;
                c.exec(
                    "INSERT INTO console_sessions (token_hash, account, label, scopes, csrf, expires_at_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    &[
                        V::B(&hash),
                        V::T(&s.account),
                        V::T(&s.label),
                        V::T(&scopes_text(&s.scopes)),
                        V::T(&s.csrf),
                        V::I(expires as i64),
                    ],
                )?;
                Ok(())
            })
            .await?;
        Ok((token, session))
    }

    /// The live session of a cookie's token.
    pub async fn session(&self, token: &str) -> Result<Option<Session>, StoreError> {
        if token.len() != 64 {
            return Ok(None);
        }
        let hash = token_hash(token);
        self.store
            .read(move |c| {
                let row = c.one(
                    "SELECT account, label, scopes, csrf FROM console_sessions \
                     WHERE token_hash = ?1 AND expires_at_ms > ?2",
                    &[V::B(&hash), V::I(crate::now_ms() as i64)],
                )?;
                row.map(|r| {
                    Ok(Session {
                        account: r.t(0)?,
                        label: r.t(1)?,
                        scopes: r.t(2)?.split(',').filter_map(|s| s.parse().ok()).collect(),
                        csrf: r.t(3)?,
                    })
                })
                .transpose()
            })
            .await
    }

    /// Ends a session (sign-out).
    pub async fn end(&self, token: &str) -> Result<(), StoreError> {
        let hash = token_hash(token);
        self.store
            .write(move |c| {
                c.exec(
                    "DELETE FROM console_sessions WHERE token_hash = ?1",
                    &[V::B(&hash)],
                )?;
                Ok(())
            })
            .await
    }
}
