//! The service registry: every published service, its module's digest,
//! its developer (the royalty payee: the signer of a signed upload, else
//! the account of the key that published it) and the developer's
//! signature. It owns the module files, and the tokens with which provider
//! sessions download them.
//!
//! It reaches storage only through [`RegistryStore`]; the SQLite
//! implementation is the broker's [`Store`] (table `services`, module files
//! beside the database).

use std::collections::{HashMap, HashSet};

use brume_api::rest::ServiceInfo;
use brume_api::wire::ModuleSignature;
use bytes::Bytes;

use crate::StoreFuture;
use crate::store::{Store, StoreError};

/// The storage the registry needs. No SQLite type in it.
pub(crate) trait RegistryStore: Send + Sync {
    /// Every service and its developer account.
    fn services(&self) -> StoreFuture<'_, Vec<(ServiceInfo, String)>>;
    /// Records a service (replacing one of the same name), durably.
    fn put_service(&self, p: Publish) -> StoreFuture<'_, ()>;
    /// Stores a module's bytes under its digest, durably (idempotent).
    fn put_module(&self, digest: String, bytes: Bytes) -> StoreFuture<'_, ()>;
    /// A module's bytes, if stored.
    fn module(&self, digest: String) -> StoreFuture<'_, Option<Bytes>>;
}

#[derive(Debug, Clone)]
struct Entry {
    info: ServiceInfo,
    /// The account the ledger pays the developer's share to.
    developer: String,
}

/// The services by name.
pub(crate) struct Registry {
    services: parking_lot::RwLock<HashMap<String, Entry>>,
    /// Tokens of the provider sessions that may download modules.
    download_tokens: parking_lot::RwLock<HashSet<String>>,
    store: Box<dyn RegistryStore>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("services", &self.services.read().len())
            .finish_non_exhaustive()
    }
}

/// A service to publish: its info, its developer account and, for a signed
/// upload, the raw signature.
#[derive(Debug, Clone)]
pub(crate) struct Publish {
    pub info: ServiceInfo,
    pub developer: String,
    pub signature: Option<Vec<u8>>,
}

impl Registry {
    /// Loads the services from the store.
    pub async fn open(store: Box<dyn RegistryStore>) -> Result<Registry, StoreError> {
        let loaded = store.services().await?;
        let services = loaded
            .into_iter()
            .map(|(info, developer)| (info.name.clone(), Entry { info, developer }))
            .collect();
        Ok(Registry {
            services: parking_lot::RwLock::new(services),
            download_tokens: Default::default(),
            store,
        })
    }

    /// Records a service (replacing one of the same name) once durable.
    pub async fn publish(&self, p: Publish) -> Result<(), StoreError> {
        self.store.put_service(p.clone()).await?;
        self.services.write().insert(
            p.info.name.clone(),
            Entry {
                info: p.info,
                developer: p.developer,
            },
        );
        Ok(())
    }

    /// Stores a module's bytes (before a service names it).
    pub async fn put_module(&self, digest: String, bytes: Bytes) -> Result<(), StoreError> {
        self.store.put_module(digest, bytes).await
    }

    /// A module's bytes, if stored.
    pub async fn module(&self, digest: String) -> Result<Option<Bytes>, StoreError> {
        self.store.module(digest).await
    }

    /// Lets the holder of `token` (a provider session) download modules.
    pub fn allow_downloads(&self, token: String) {
        self.download_tokens.write().insert(token);
    }

    /// Ends what [`allow_downloads`](Self::allow_downloads) allowed.
    pub fn revoke_downloads(&self, token: &str) {
        self.download_tokens.write().remove(token);
    }

    /// Whether `token` may download modules.
    pub fn may_download(&self, token: &str) -> bool {
        self.download_tokens.read().contains(token)
    }

    pub fn get(&self, name: &str) -> Option<ServiceInfo> {
        self.services.read().get(name).map(|e| e.info.clone())
    }

    /// Every service, by name.
    pub fn list(&self) -> Vec<ServiceInfo> {
        let mut all: Vec<ServiceInfo> = self
            .services
            .read()
            .values()
            .map(|e| e.info.clone())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The kind of a service with this digest, if any.
    pub fn kind_of_digest(&self, digest: &str) -> Option<brume_api::ServiceKind> {
        self.services
            .read()
            .values()
            .find(|e| e.info.digest == digest)
            .map(|e| e.info.kind)
    }

    /// The developer of a service (its signer if the upload was signed,
    /// else the account of the key that published it), or, when there is
    /// no name, of a service with this digest (a signed one first).
    pub fn developer(&self, name: Option<&str>, digest: &str) -> String {
        let services = self.services.read();
        if let Some(name) = name {
            return services
                .get(name)
                .map(|e| e.developer.clone())
                .unwrap_or_default();
        }
        let with_digest = || services.values().filter(|e| e.info.digest == digest);
        with_digest()
            .find_map(|e| e.info.developer_address.clone())
            .or_else(|| with_digest().map(|e| e.developer.clone()).next())
            .unwrap_or_default()
    }

    /// The developer signature that goes with every assignment of
    /// `digest`: the named service's if it was signed (over this digest),
    /// else that of any signed service with this digest (a signature covers
    /// the module, not the name). `None` for a module nobody signed.
    pub fn module_signature(&self, name: Option<&str>, digest: &str) -> Option<ModuleSignature> {
        let services = self.services.read();
        let of = |e: &Entry| -> Option<ModuleSignature> {
            let s = &e.info;
            if s.digest != digest {
                return None;
            }
            let developer = s.developer_address.clone()?;
            let sig = s.module_signature.as_deref()?;
            let signature = hex::decode(sig.strip_prefix("0x").unwrap_or(sig)).ok()?;
            Some(ModuleSignature {
                developer,
                signature: signature.into(),
            })
        };
        name.and_then(|n| services.get(n))
            .and_then(of)
            .or_else(|| services.values().find_map(of))
    }
}

impl RegistryStore for Store {
    fn services(&self) -> StoreFuture<'_, Vec<(ServiceInfo, String)>> {
        Box::pin(self.read(crate::store::load_services))
    }

    fn put_service(&self, p: Publish) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let Publish {
                info: row,
                developer: dev,
                signature,
            } = p;
            self.write(move |tx| {
                tx.execute(
                    "INSERT OR REPLACE INTO services (name, kind, digest, size_bytes, created_at_ms, developer, signed_by, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    rusqlite::params![row.name, row.kind.as_str(), row.digest, row.size_bytes as i64, row.created_at_ms as i64, dev, row.developer_address, signature],
                )?;
                Ok(())
            })
            .await
        })
    }

    fn put_module(&self, digest: String, bytes: Bytes) -> StoreFuture<'_, ()> {
        Box::pin(self.put_blob(digest, bytes))
    }

    fn module(&self, digest: String) -> StoreFuture<'_, Option<Bytes>> {
        Box::pin(async move { self.get_blob(&digest).await })
    }
}
