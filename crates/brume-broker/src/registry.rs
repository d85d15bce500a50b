//! The service registry: every published service, its module's digest,
//! its developer (the royalty payee: the signer of a signed upload, else
//! the account of the key that published it) and the developer's
//! signature. It owns the `services` table.

use std::collections::HashMap;

use brume_api::rest::ServiceInfo;
use brume_api::wire::ModuleSignature;

use crate::store::{Store, StoreError};

#[derive(Debug, Clone)]
struct Entry {
    info: ServiceInfo,
    /// The account the ledger pays the developer's share to.
    developer: String,
}

/// The services by name.
#[derive(Debug)]
pub(crate) struct Registry {
    services: parking_lot::RwLock<HashMap<String, Entry>>,
    store: Store,
}

/// A service to publish: its info, its developer account and, for a signed
/// upload, the raw signature.
#[derive(Debug)]
pub(crate) struct Publish {
    pub info: ServiceInfo,
    pub developer: String,
    pub signature: Option<Vec<u8>>,
}

impl Registry {
    /// Loads the services from the store.
    pub async fn open(store: Store) -> Result<Registry, StoreError> {
        let loaded = store.read(crate::store::load_services).await?;
        let services = loaded
            .into_iter()
            .map(|(info, developer)| (info.name.clone(), Entry { info, developer }))
            .collect();
        Ok(Registry {
            services: parking_lot::RwLock::new(services),
            store,
        })
    }

    /// Records a service (replacing one of the same name) once durable.
    pub async fn publish(&self, p: Publish) -> Result<(), StoreError> {
        let row = p.info.clone();
        let (dev, signed_by, signature) = (
            p.developer.clone(),
            p.info.developer_address.clone(),
            p.signature,
        );
        self.store
            .write(move |tx| {
                tx.execute(
                    "INSERT OR REPLACE INTO services (name, kind, digest, size_bytes, created_at_ms, developer, signed_by, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    rusqlite::params![row.name, row.kind.as_str(), row.digest, row.size_bytes as i64, row.created_at_ms as i64, dev, signed_by, signature],
                )?;
                Ok(())
            })
            .await?;
        self.services.write().insert(
            p.info.name.clone(),
            Entry {
                info: p.info,
                developer: p.developer,
            },
        );
        Ok(())
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
