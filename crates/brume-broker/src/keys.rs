//! API keys and signed requests: who a request speaks for.
//!
//! Keys are stored hashed (sha256) and cached in memory by hash. A key
//! minted by `brume broker keys create` while the broker runs is found on
//! its first use (the store is asked at most once a second). Signed
//! requests are remembered within the skew window so that a replay is
//! refused.
//!
//! It reaches storage only through [`KeyStore`]; the SQLite implementation
//! is the broker's [`Store`].

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::StoreFuture;
use crate::store::{self, Store, StoreError};

/// The sha256 of a key: all that is stored of it.
pub(crate) type KeyHash = [u8; 32];

/// The storage keys need. No SQLite type in it.
pub(crate) trait KeyStore: Send + Sync {
    /// Every key's hash and account.
    fn all(&self) -> StoreFuture<'_, Vec<(KeyHash, String)>>;
    /// The account of the key with this hash, if there is one.
    fn account_of(&self, hash: KeyHash) -> StoreFuture<'_, Option<String>>;
    /// Mints and stores a key named `name` (bound to `account`, if given);
    /// returns the key, durable.
    fn create(&self, name: String, account: Option<String>) -> StoreFuture<'_, String>;
}

/// The keys component.
pub(crate) struct Keys {
    store: Box<dyn KeyStore>,
    /// Key hash to the key's account: its bound address, else its name.
    cache: parking_lot::RwLock<HashMap<KeyHash, String>>,
    /// When the store was last asked for an unknown key.
    refreshed: parking_lot::Mutex<Instant>,
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

/// How often an unknown key sends the broker to the store.
const REFRESH: Duration = Duration::from_secs(1);

impl Keys {
    /// Loads every key's hash.
    pub async fn open(store: Box<dyn KeyStore>) -> Result<Keys, StoreError> {
        let cache = store.all().await?.into_iter().collect();
        Ok(Keys {
            store,
            cache: parking_lot::RwLock::new(cache),
            refreshed: parking_lot::Mutex::new(Instant::now()),
            seen: Default::default(),
        })
    }

    /// The account `token` speaks for, if it is a valid key.
    pub async fn account(&self, token: &str) -> Result<Option<String>, StoreError> {
        let hash = store::keys::hash(token);
        if let Some(account) = self.cache.read().get(&hash) {
            return Ok(Some(account.clone()));
        }
        // Keys minted by `brume broker keys create` while we run: look in
        // the store, at most once a second.
        {
            let mut refreshed = self.refreshed.lock();
            if refreshed.elapsed() < REFRESH {
                return Ok(None);
            }
            *refreshed = Instant::now();
        }
        let found = self.store.account_of(hash).await?;
        if let Some(account) = &found {
            self.cache.write().insert(hash, account.clone());
        }
        Ok(found)
    }

    /// Mints a key (bound to `account`, if given) and returns it.
    pub async fn create(&self, name: &str, account: Option<String>) -> Result<String, StoreError> {
        let key_account = account.clone().unwrap_or_else(|| name.to_string());
        let token = self.store.create(name.to_string(), account).await?;
        self.cache
            .write()
            .insert(store::keys::hash(&token), key_account);
        Ok(token)
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
    fn all(&self) -> StoreFuture<'_, Vec<(KeyHash, String)>> {
        Box::pin(self.read(store::keys::all_hashes))
    }

    fn account_of(&self, hash: KeyHash) -> StoreFuture<'_, Option<String>> {
        Box::pin(self.read(move |c| store::keys::name_of(c, &hash)))
    }

    fn create(&self, name: String, account: Option<String>) -> StoreFuture<'_, String> {
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.write(move |t| {
                let token =
                    store::keys::create(t, &name, account.as_deref()).map_err(|e| match e {
                        StoreError::Sql(e) => e,
                        other => rusqlite::Error::InvalidParameterName(other.to_string()),
                    })?;
                let _ = tx.send(token);
                Ok(())
            })
            .await?;
            rx.await.map_err(|_| StoreError::Closed)
        })
    }
}
