//! API keys and signed requests: who a request speaks for.
//!
//! Keys are stored hashed (sha256) and cached in memory by hash. A key
//! minted by `brume broker keys create` while the broker runs is found on
//! its first use: a key not in the cache is looked up in the store. Keys
//! the store does not know are remembered for [`NEGATIVE_TTL`] (at most
//! [`NEGATIVE_MAX`] of them), so that a flood of bad keys costs one lookup
//! each per that time. Signed requests are remembered within the skew
//! window so that a replay is refused.
//!
//! It reaches storage only through [`KeyStore`]; the SQLite implementation
//! is the broker's [`Store`].

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::StoreFuture;
use crate::store::keys::{KeyInfo, NewKey, Scope};
use crate::store::{self, Store, StoreError};

/// The sha256 of a key: all that is stored of it.
pub(crate) type KeyHash = [u8; 32];

/// The storage keys need. No SQLite type in it.
pub(crate) trait KeyStore: Send + Sync {
    /// Every live key's hash and what it is.
    fn all_live(&self) -> StoreFuture<'_, Vec<(KeyHash, KeyInfo)>>;
    /// The key with this hash, if there is one (live or not).
    fn by_hash(&self, hash: KeyHash) -> StoreFuture<'_, Option<KeyInfo>>;
    /// Mints and stores a key; returns it, durable.
    fn create(&self, new: NewKey) -> StoreFuture<'_, String>;
    /// Every key, oldest first.
    fn list(&self) -> StoreFuture<'_, Vec<KeyInfo>>;
    /// Revokes the key with this id, durably; `None` if there is none.
    fn revoke(&self, id: String) -> StoreFuture<'_, Option<KeyInfo>>;
}

/// Who a request speaks for: its account and what its key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The account: a key's bound address, else its name; a signer's
    /// address.
    pub account: String,
    pub scopes: Vec<Scope>,
}

impl Caller {
    fn of(k: &KeyInfo) -> Caller {
        Caller {
            account: k.speaks_for().to_string(),
            scopes: k.scopes.clone(),
        }
    }
}

/// The account the control token speaks for.
pub(crate) const OPERATOR: &str = "operator";

/// The file in the data dir that holds the control token.
pub const CONTROL_TOKEN_FILE: &str = "control.token";

/// The keys component.
pub(crate) struct Keys {
    store: Box<dyn KeyStore>,
    /// Live keys by hash.
    cache: parking_lot::RwLock<HashMap<KeyHash, KeyInfo>>,
    /// Keys the store did not know, and when it was asked.
    unknown: parking_lot::Mutex<HashMap<KeyHash, Instant>>,
    /// This run's control token: every scope, for the operator's commands
    /// on the data dir (`brume broker keys revoke` tells a running broker
    /// with it). Written to [`CONTROL_TOKEN_FILE`], readable by its owner
    /// only; a new one each run.
    control: String,
    /// Signed requests seen within the skew window: (timestamp, sha256 of
    /// the signature). A signature covers its timestamp, so a replay has
    /// both.
    seen: parking_lot::Mutex<BTreeSet<(u64, [u8; 32])>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("cached", &self.cache.read().len())
            .finish_non_exhaustive()
    }
}

/// How long a key the store did not know is refused without asking again.
pub(crate) const NEGATIVE_TTL: Duration = Duration::from_millis(250);
/// The most unknown keys remembered.
pub(crate) const NEGATIVE_MAX: usize = 10_000;

impl Keys {
    /// Loads every key's hash.
    pub async fn open(store: Box<dyn KeyStore>) -> Result<Keys, StoreError> {
        let cache = store.all_live().await?.into_iter().collect();
        let mut raw = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut raw);
        Ok(Keys {
            control: format!("brc_{}", hex::encode(raw)),
            store,
            cache: parking_lot::RwLock::new(cache),
            unknown: Default::default(),
            seen: Default::default(),
        })
    }

    /// Who `token` speaks for, if it is a live key (not revoked, not
    /// expired).
    pub async fn caller(&self, token: &str) -> Result<Option<Caller>, StoreError> {
        if token == self.control {
            return Ok(Some(Caller {
                account: OPERATOR.to_string(),
                scopes: Scope::ALL.to_vec(),
            }));
        }
        let hash = store::keys::hash(token);
        let now = crate::now_ms();
        if let Some(k) = self.cache.read().get(&hash) {
            return Ok(k.is_live(now).then(|| Caller::of(k)));
        }
        // Keys minted by `brume broker keys create` while we run are in the
        // store only.
        if self
            .unknown
            .lock()
            .get(&hash)
            .is_some_and(|t| t.elapsed() < NEGATIVE_TTL)
        {
            return Ok(None);
        }
        match self.store.by_hash(hash).await? {
            Some(k) if k.is_live(now) => {
                let caller = Caller::of(&k);
                self.cache.write().insert(hash, k);
                self.unknown.lock().remove(&hash);
                Ok(Some(caller))
            }
            _ => {
                let mut unknown = self.unknown.lock();
                if unknown.len() >= NEGATIVE_MAX {
                    unknown.retain(|_, t| t.elapsed() < NEGATIVE_TTL);
                }
                if unknown.len() < NEGATIVE_MAX {
                    unknown.insert(hash, Instant::now());
                }
                Ok(None)
            }
        }
    }

    /// Writes this run's control token to `dir/`[`CONTROL_TOKEN_FILE`],
    /// readable by its owner only. Blocking (call it at start-up).
    pub fn write_control_token(&self, dir: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write as _;
        let path = dir.join(CONTROL_TOKEN_FILE);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&path)?;
        f.write_all(self.control.as_bytes())?;
        f.sync_all()
    }

    /// Mints a key and returns it with what it is.
    pub async fn create(&self, new: NewKey) -> Result<(String, KeyInfo), StoreError> {
        let token = self.store.create(new).await?;
        let hash = store::keys::hash(&token);
        let info = self.store.by_hash(hash).await?.ok_or(StoreError::Closed)?;
        self.cache.write().insert(hash, info.clone());
        Ok((token, info))
    }

    /// Every key, oldest first.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, StoreError> {
        self.store.list().await
    }

    /// Revokes the key with public id `id`: refused from now on.
    pub async fn revoke(&self, id: &str) -> Result<Option<KeyInfo>, StoreError> {
        let revoked = self.store.revoke(id.to_string()).await?;
        self.forget(id);
        Ok(revoked)
    }

    /// Drops the key with public id `id` from the cache (it was revoked in
    /// the store by someone else: `brume broker keys revoke`).
    pub fn forget(&self, id: &str) {
        self.cache.write().retain(|_, k| k.id != id);
    }

    /// Remembers a signature made at `timestamp_ms`; false if it was seen
    /// before (a replay). Forgets those older than `oldest_ms`.
    pub fn first_use(&self, timestamp_ms: u64, signature_hash: [u8; 32], oldest_ms: u64) -> bool {
        let mut seen = self.seen.lock();
        *seen = seen.split_off(&(oldest_ms, [0; 32]));
        seen.insert((timestamp_ms, signature_hash))
    }
}

impl KeyStore for Store {
    fn all_live(&self) -> StoreFuture<'_, Vec<(KeyHash, KeyInfo)>> {
        Box::pin(self.read(store::keys::all_live))
    }

    fn by_hash(&self, hash: KeyHash) -> StoreFuture<'_, Option<KeyInfo>> {
        Box::pin(self.read(move |c| store::keys::by_hash(c, &hash)))
    }

    fn create(&self, new: NewKey) -> StoreFuture<'_, String> {
        Box::pin(self.write(move |t| store::keys::create(t, &new)))
    }

    fn list(&self) -> StoreFuture<'_, Vec<KeyInfo>> {
        Box::pin(self.read(store::keys::list))
    }

    fn revoke(&self, id: String) -> StoreFuture<'_, Option<KeyInfo>> {
        Box::pin(self.write(move |t| store::keys::revoke(t, &id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_made_beside_a_running_broker_works_at_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let keys = Keys::open(Box::new(store)).await.expect("keys");
        let account = |c: Option<Caller>| c.map(|c| c.account);
        assert_eq!(keys.caller("brk_nope").await.expect("lookup"), None);
        // What `brume broker keys create` does: its own handle.
        let cli = Store::open(dir.path()).expect("cli store");
        let new = |name: &str, account: Option<&str>| NewKey {
            name: name.into(),
            account: account.map(String::from),
            scopes: Scope::DEFAULT.to_vec(),
            expires_at_ms: None,
        };
        let later = new("later", None);
        let token = cli
            .write(move |c| store::keys::create(c, &later))
            .await
            .expect("create");
        assert_eq!(
            account(keys.caller(&token).await.expect("lookup")).as_deref(),
            Some("later"),
            "found in the store on its first use"
        );
        // Minted through the broker: cached, bound to its account.
        let (bound, info) = keys
            .create(new("acme", Some("0xabc")))
            .await
            .expect("create");
        let caller = keys.caller(&bound).await.expect("lookup").expect("live");
        assert_eq!(caller.account, "0xabc");
        assert_eq!(caller.scopes, Scope::DEFAULT);
        assert!(!caller.scopes.contains(&Scope::Admin));
        // Revoked: refused at once, and after a reload from the store.
        keys.revoke(&info.id).await.expect("revoke");
        assert_eq!(keys.caller(&bound).await.expect("lookup"), None);
        // Expired: refused.
        let mut old = new("old", None);
        old.expires_at_ms = Some(1);
        let (expired, _) = keys.create(old).await.expect("create");
        assert_eq!(keys.caller(&expired).await.expect("lookup"), None);
        // Bad keys are remembered, never accepted.
        for _ in 0..3 {
            assert_eq!(keys.caller("brk_nope").await.expect("lookup"), None);
        }
        assert!(
            keys.unknown
                .lock()
                .contains_key(&store::keys::hash("brk_nope"))
        );
    }

    #[test]
    fn a_signature_is_accepted_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = rt
            .block_on(Keys::open(Box::new(
                Store::open(dir.path()).expect("store"),
            )))
            .expect("keys");
        assert!(keys.first_use(1_000, [1; 32], 0));
        assert!(!keys.first_use(1_000, [1; 32], 0), "a replay");
        assert!(keys.first_use(1_000, [2; 32], 0));
        // Past the window it is forgotten (and its timestamp is stale anyway).
        assert!(keys.first_use(1_000, [1; 32], 2_000));
    }
}
