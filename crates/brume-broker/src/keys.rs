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
    /// Keys the store did not know, and when it was asked.
    unknown: parking_lot::Mutex<HashMap<KeyHash, Instant>>,
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
        let cache = store.all().await?.into_iter().collect();
        Ok(Keys {
            store,
            cache: parking_lot::RwLock::new(cache),
            unknown: Default::default(),
            seen: Default::default(),
        })
    }

    /// The account `token` speaks for, if it is a valid key.
    pub async fn account(&self, token: &str) -> Result<Option<String>, StoreError> {
        let hash = store::keys::hash(token);
        if let Some(account) = self.cache.read().get(&hash) {
            return Ok(Some(account.clone()));
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
        let found = self.store.account_of(hash).await?;
        match &found {
            Some(account) => {
                self.cache.write().insert(hash, account.clone());
                self.unknown.lock().remove(&hash);
            }
            None => {
                let mut unknown = self.unknown.lock();
                if unknown.len() >= NEGATIVE_MAX {
                    unknown.retain(|_, t| t.elapsed() < NEGATIVE_TTL);
                }
                if unknown.len() < NEGATIVE_MAX {
                    unknown.insert(hash, Instant::now());
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_made_beside_a_running_broker_works_at_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let keys = Keys::open(Box::new(store)).await.expect("keys");
        assert_eq!(keys.account("brk_nope").await.expect("lookup"), None);
        // What `brume broker keys create` does: its own connection.
        let cli = store::open_sync(dir.path()).expect("cli connection");
        let token = store::keys::create(&cli, "later", None).expect("create");
        assert_eq!(
            keys.account(&token).await.expect("lookup").as_deref(),
            Some("later"),
            "found in the store on its first use"
        );
        // Minted through the broker: cached, bound to its account.
        let bound = keys
            .create("acme", Some("0xabc".into()))
            .await
            .expect("create");
        assert_eq!(
            keys.account(&bound).await.expect("lookup").as_deref(),
            Some("0xabc")
        );
        // Bad keys are remembered, never accepted.
        for _ in 0..3 {
            assert_eq!(keys.account("brk_nope").await.expect("lookup"), None);
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
