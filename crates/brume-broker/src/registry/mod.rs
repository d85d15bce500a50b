//! The service registry: every version of every service, in its owner's
//! namespace, the aliases that name namespaces, and the module files. It
//! also holds the tokens with which provider sessions download modules.
//!
//! The rules (see `brume_api::names` for how references are written):
//! - a service belongs to the account that first published it; only that
//!   account publishes new versions or retires it (an `admin` key may
//!   retire or move any);
//! - every publish is a new, immutable version (1, 2, …);
//! - the developer paid royalties is the module's signer if anyone signed
//!   its digest, else the owner, never whoever uploaded last;
//! - an unqualified name resolves in the caller's own namespace;
//! - an alias is first come, first served, and can't shadow a namespace
//!   that exists.
//!
//! It reaches storage only through [`RegistryStore`]; the SQLite
//! implementation is in `sql.rs`.

mod sql;

use std::collections::{HashMap, HashSet};

use brume_api::error::{ApiError, ErrorCode};
use brume_api::names::{self, AliasInfo, ServiceRef, VersionSel};
use brume_api::rest::ServiceInfo;
use brume_api::wire::ModuleSignature;
use bytes::Bytes;

use crate::StoreFuture;
use crate::store::StoreError;

/// What the registry loads at start-up.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Every version, with its developer account and raw signature.
    pub versions: Vec<Version>,
    pub aliases: Vec<AliasInfo>,
}

/// The storage the registry needs. No SQLite type in it.
pub(crate) trait RegistryStore: Send + Sync {
    /// Makes (or migrates) the tables, then loads every version and alias.
    fn load(&self) -> StoreFuture<'_, Loaded>;
    /// Records a new version, durably.
    fn put_version(&self, v: Version) -> StoreFuture<'_, ()>;
    /// Marks versions retired (`None`: every version), durably.
    fn retire(
        &self,
        owner: String,
        name: String,
        version: Option<u64>,
        at_ms: u64,
    ) -> StoreFuture<'_, ()>;
    /// Moves every version of a service to another owner, durably.
    fn move_service(&self, from: String, name: String, to: String) -> StoreFuture<'_, ()>;
    fn put_alias(&self, a: AliasInfo) -> StoreFuture<'_, ()>;
    /// Stores a module's bytes under its digest, durably (idempotent).
    fn put_module(&self, digest: String, bytes: Bytes) -> StoreFuture<'_, ()>;
    /// A module's bytes, if stored.
    fn module(&self, digest: String) -> StoreFuture<'_, Option<Bytes>>;
}

/// One version of a service, as stored.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub info: ServiceInfo,
    /// The account the ledger pays the developer's share to, as published:
    /// the signer, else the owner.
    pub developer: String,
    /// The raw signature of a signed upload.
    pub signature: Option<Vec<u8>>,
}

/// A reference resolved to one version.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub info: ServiceInfo,
    /// `owner~name@N`: what rows and jobs record.
    pub reference: String,
    /// The royalty payee.
    pub developer: String,
    /// The signature every assignment of this module carries, if any.
    pub module_signature: Option<ModuleSignature>,
}

#[derive(Debug, Default)]
struct State {
    /// (owner, name) → versions, oldest first.
    services: HashMap<(String, String), Vec<Version>>,
    /// alias → its record.
    aliases: HashMap<String, AliasInfo>,
    /// account → its alias.
    alias_of: HashMap<String, String>,
}

/// The services, by owner and name.
pub(crate) struct Registry {
    state: parking_lot::RwLock<State>,
    /// Serializes changes, so versions are numbered without gaps or twins.
    changes: tokio::sync::Mutex<()>,
    /// Tokens of the provider sessions that may download modules.
    download_tokens: parking_lot::RwLock<HashSet<String>>,
    store: Box<dyn RegistryStore>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("services", &self.state.read().services.len())
            .finish_non_exhaustive()
    }
}

/// A change the registry refused, or could not store.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChangeError {
    #[error("{}", .0.message)]
    Refused(ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ApiError> for ChangeError {
    fn from(e: ApiError) -> ChangeError {
        ChangeError::Refused(e)
    }
}

/// An account as a namespace key: addresses checksummed, labels as they are.
pub(crate) fn account_key(account: &str) -> String {
    if names::looks_like_address(account)
        && let Ok(a) = account.parse::<brume_identity::EthAddress>()
    {
        return a.to_string();
    }
    account.to_string()
}

fn refused(code: ErrorCode, message: String) -> ChangeError {
    ChangeError::Refused(ApiError::new(code, message))
}

impl State {
    /// The account a written owner names: an address, an alias's account,
    /// or the label itself.
    fn owner_account(&self, written: &str) -> String {
        if names::looks_like_address(written) {
            return account_key(written);
        }
        match self.aliases.get(written) {
            Some(a) => a.account.clone(),
            None => written.to_string(),
        }
    }

    /// The signature known for `digest`: `own`'s first, else any version's.
    fn signature_for(&self, own: Option<&Version>, digest: &str) -> Option<ModuleSignature> {
        let of = |v: &Version| -> Option<ModuleSignature> {
            if v.info.digest != digest {
                return None;
            }
            Some(ModuleSignature {
                developer: v.info.developer_address.clone()?,
                signature: v.signature.clone()?.into(),
            })
        };
        own.and_then(of)
            .or_else(|| self.services.values().flat_map(|vs| vs.iter()).find_map(of))
    }

    fn resolved(&self, v: &Version) -> Resolved {
        let module_signature = self.signature_for(Some(v), &v.info.digest);
        let developer = module_signature
            .as_ref()
            .map_or_else(|| v.developer.clone(), |s| s.developer.clone());
        Resolved {
            info: v.info.clone(),
            reference: v.info.reference(),
            developer,
            module_signature,
        }
    }

    /// Services named `name` in other namespaces than `owner`: a hint.
    fn elsewhere(&self, owner: &str, name: &str) -> Vec<String> {
        let mut found: Vec<String> = self
            .services
            .keys()
            .filter(|(o, n)| n == name && o != owner)
            .map(|(o, n)| format!("{}~{n}", self.alias_of.get(o).unwrap_or(o)))
            .collect();
        found.sort();
        found.truncate(3);
        found
    }
}

impl Registry {
    /// Loads the services and aliases from the store.
    pub async fn open(store: Box<dyn RegistryStore>) -> Result<Registry, StoreError> {
        let loaded = store.load().await?;
        let mut state = State::default();
        for v in loaded.versions {
            let key = (v.info.owner.clone(), v.info.name.clone());
            state.services.entry(key).or_default().push(v);
        }
        for vs in state.services.values_mut() {
            vs.sort_by_key(|v| v.info.version);
        }
        for a in loaded.aliases {
            state.alias_of.insert(a.account.clone(), a.alias.clone());
            state.aliases.insert(a.alias.clone(), a);
        }
        Ok(Registry {
            state: parking_lot::RwLock::new(state),
            changes: tokio::sync::Mutex::new(()),
            download_tokens: Default::default(),
            store,
        })
    }

    /// Resolves `reference` for `caller` (whose namespace an unqualified
    /// name is in).
    pub fn resolve(&self, reference: &str, caller: &str) -> Result<Resolved, ApiError> {
        let r = ServiceRef::parse(reference)?;
        let state = self.state.read();
        let owner = match &r.owner {
            Some(o) => state.owner_account(o),
            None => account_key(caller),
        };
        let unknown = |what: String| {
            let hint = match state.elsewhere(&owner, &r.name).as_slice() {
                [] => String::new(),
                found => format!(" (did you mean {}?)", found.join(" or ")),
            };
            ApiError::new(ErrorCode::UnknownService, format!("{what}{hint}"))
        };
        let Some(versions) = state.services.get(&(owner.clone(), r.name.clone())) else {
            return Err(unknown(format!(
                "no service named {} in namespace {owner}",
                r.name
            )));
        };
        let found = match &r.version {
            VersionSel::Latest => versions.iter().rev().find(|v| !v.info.retired),
            VersionSel::Number(n) => versions.iter().find(|v| v.info.version == *n),
            VersionSel::Digest(d) => versions.iter().rev().find(|v| &v.info.digest == d),
        };
        match found {
            Some(v) if v.info.retired => Err(ApiError::new(
                ErrorCode::Retired,
                format!("{} was retired by its owner", v.info.reference()),
            )),
            Some(v) => Ok(state.resolved(v)),
            None if r.version == VersionSel::Latest => Err(ApiError::new(
                ErrorCode::Retired,
                format!("{owner}~{} was retired by its owner", r.name),
            )),
            None => Err(unknown(format!("{owner}~{} has no version {}", r.name, {
                let mut v = r.clone();
                v.owner = None;
                v.to_string()
            }))),
        }
    }

    /// Every version of the service `reference` names (its version part
    /// ignored), oldest first.
    pub fn versions(&self, reference: &str, caller: &str) -> Result<Vec<ServiceInfo>, ApiError> {
        let r = ServiceRef::parse(reference)?;
        let state = self.state.read();
        let owner = r
            .owner
            .as_deref()
            .map_or_else(|| account_key(caller), |o| state.owner_account(o));
        state
            .services
            .get(&(owner.clone(), r.name.clone()))
            .map(|vs| vs.iter().map(|v| v.info.clone()).collect())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnknownService,
                    format!("no service named {} in namespace {owner}", r.name),
                )
            })
    }

    /// Publishes a new version of `info.name` in `owner`'s namespace (the
    /// caller's account): `written` is the namespace the caller wrote, if
    /// any. Returns the version as stored.
    pub async fn publish(
        &self,
        owner: &str,
        written: Option<&str>,
        mut info: ServiceInfo,
        signature: Option<Vec<u8>>,
    ) -> Result<ServiceInfo, ChangeError> {
        let _serial = self.changes.lock().await;
        let owner = account_key(owner);
        {
            let state = self.state.read();
            if let Some(w) = written
                && state.owner_account(w) != owner
            {
                return Err(refused(
                    ErrorCode::NotOwner,
                    format!("namespace {w} is not yours (you are {owner}): publish to your own"),
                ));
            }
            if let Some(a) = state.aliases.get(&owner)
                && a.account != owner
            {
                return Err(refused(
                    ErrorCode::NotOwner,
                    format!(
                        "{owner} is the alias of {}: bind this key to an address to publish",
                        a.account
                    ),
                ));
            }
            info.version = state
                .services
                .get(&(owner.clone(), info.name.clone()))
                .and_then(|vs| vs.last())
                .map_or(1, |v| v.info.version + 1);
        }
        info.owner = owner.clone();
        info.retired = false;
        let developer = info.developer_address.clone().unwrap_or(owner.clone());
        let version = Version {
            info: info.clone(),
            developer,
            signature,
        };
        self.store.put_version(version.clone()).await?;
        self.state
            .write()
            .services
            .entry((owner, info.name.clone()))
            .or_default()
            .push(version);
        Ok(info)
    }

    /// Retires the service (or one version of it) that `reference` names.
    /// Only its owner, or an `admin`, may.
    pub async fn retire(
        &self,
        reference: &str,
        caller: &str,
        admin: bool,
    ) -> Result<Vec<ServiceInfo>, ChangeError> {
        let _serial = self.changes.lock().await;
        let (owner, name, version) = self.owned(reference, caller, admin, "retire")?;
        let at = crate::now_ms();
        self.store
            .retire(owner.clone(), name.clone(), version, at)
            .await?;
        let mut state = self.state.write();
        let vs = state.services.get_mut(&(owner, name)).expect("checked");
        for v in vs
            .iter_mut()
            .filter(|v| version.is_none_or(|n| n == v.info.version))
        {
            v.info.retired = true;
        }
        Ok(vs.iter().map(|v| v.info.clone()).collect())
    }

    /// The (owner, name, version number) `reference` names, if `caller`
    /// may change it.
    fn owned(
        &self,
        reference: &str,
        caller: &str,
        admin: bool,
        what: &str,
    ) -> Result<(String, String, Option<u64>), ChangeError> {
        let r = ServiceRef::parse(reference)?;
        let state = self.state.read();
        let caller = account_key(caller);
        let owner = r
            .owner
            .as_deref()
            .map_or_else(|| caller.clone(), |o| state.owner_account(o));
        let Some(vs) = state.services.get(&(owner.clone(), r.name.clone())) else {
            return Err(refused(
                ErrorCode::UnknownService,
                format!("no service named {} in namespace {owner}", r.name),
            ));
        };
        if owner != caller && !admin {
            return Err(refused(
                ErrorCode::NotOwner,
                format!("only {owner} (the owner) may {what} {owner}~{}", r.name),
            ));
        }
        let version = match r.version {
            VersionSel::Latest => None,
            VersionSel::Number(n) => Some(n),
            VersionSel::Digest(d) => vs
                .iter()
                .rev()
                .find(|v| v.info.digest == d)
                .map(|v| v.info.version),
        };
        if let Some(n) = version
            && !vs.iter().any(|v| v.info.version == n)
        {
            return Err(refused(
                ErrorCode::UnknownService,
                format!("{owner}~{} has no version {n}", r.name),
            ));
        }
        Ok((owner, r.name, version))
    }

    /// Moves a service, every version of it, to `to`'s namespace (the
    /// operator's repair for services migrated into a label namespace).
    pub async fn move_service(
        &self,
        reference: &str,
        to: &str,
    ) -> Result<Vec<ServiceInfo>, ChangeError> {
        let _serial = self.changes.lock().await;
        let (from, name, _) = self.owned(reference, "", true, "move")?;
        let to = self.state.read().owner_account(to);
        if self
            .state
            .read()
            .services
            .contains_key(&(to.clone(), name.clone()))
        {
            return Err(refused(
                ErrorCode::Conflict,
                format!("{to}~{name} exists already"),
            ));
        }
        if to == from {
            return Err(refused(
                ErrorCode::Conflict,
                format!("{from}~{name} is in {to} already"),
            ));
        }
        self.store
            .move_service(from.clone(), name.clone(), to.clone())
            .await?;
        let mut state = self.state.write();
        let mut vs = state
            .services
            .remove(&(from.clone(), name.clone()))
            .expect("checked");
        for v in &mut vs {
            v.info.owner = to.clone();
            if v.info.developer_address.is_none() {
                v.developer = to.clone();
            }
        }
        let infos = vs.iter().map(|v| v.info.clone()).collect();
        state.services.insert((to, name), vs);
        Ok(infos)
    }

    /// Registers `alias` for `account`: first come, first served; one per
    /// account; never the name of a namespace that has services.
    pub async fn register_alias(
        &self,
        account: &str,
        alias: &str,
    ) -> Result<AliasInfo, ChangeError> {
        names::validate_alias(alias)?;
        let _serial = self.changes.lock().await;
        let account = account_key(account);
        {
            let state = self.state.read();
            if let Some(a) = state.aliases.get(alias) {
                return Err(refused(
                    ErrorCode::AliasTaken,
                    format!("alias {alias} is taken (by {})", a.account),
                ));
            }
            if let Some(a) = state.alias_of.get(&account) {
                return Err(refused(
                    ErrorCode::AliasTaken,
                    format!("{account} already has the alias {a}; aliases can't be changed"),
                ));
            }
            if state.services.keys().any(|(o, _)| o == alias) {
                return Err(refused(
                    ErrorCode::AliasTaken,
                    format!("{alias} is a namespace with services already"),
                ));
            }
        }
        let info = AliasInfo {
            alias: alias.to_string(),
            account: account.clone(),
            created_at_ms: crate::now_ms(),
        };
        self.store.put_alias(info.clone()).await?;
        let mut state = self.state.write();
        state.alias_of.insert(account, alias.to_string());
        state.aliases.insert(alias.to_string(), info.clone());
        Ok(info)
    }

    /// The record of `alias`, if registered.
    pub fn alias(&self, alias: &str) -> Option<AliasInfo> {
        self.state.read().aliases.get(alias).cloned()
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

    /// The latest version of every service (retired ones flagged), by
    /// owner and name; only `owner`'s if given.
    pub fn list(&self, owner: Option<&str>) -> Vec<ServiceInfo> {
        let state = self.state.read();
        let owner = owner.map(|o| state.owner_account(o));
        let mut all: Vec<ServiceInfo> = state
            .services
            .iter()
            .filter(|((o, _), _)| owner.as_ref().is_none_or(|w| w == o))
            .filter_map(|(_, vs)| {
                let latest = vs.iter().rev().find(|v| !v.info.retired).or(vs.last());
                latest.map(|v| v.info.clone())
            })
            .collect();
        all.sort_by(|a, b| (&a.owner, &a.name).cmp(&(&b.owner, &b.name)));
        all
    }

    /// The kind of a module with this digest, if any service has it.
    pub fn kind_of_digest(&self, digest: &str) -> Option<brume_api::ServiceKind> {
        self.state
            .read()
            .services
            .values()
            .flat_map(|vs| vs.iter())
            .find(|v| v.info.digest == digest)
            .map(|v| v.info.kind)
    }

    /// The signature a job's assignments carry: its service version's if
    /// it still resolves to this digest, else any signature of the digest.
    pub fn module_signature(
        &self,
        reference: Option<&str>,
        caller: &str,
        digest: &str,
    ) -> Option<ModuleSignature> {
        match reference.and_then(|r| self.resolve(r, caller).ok()) {
            Some(r) if r.info.digest == digest => r.module_signature,
            _ => self.by_digest(digest).1,
        }
    }

    /// For work named by digest alone: the developer (the signer of the
    /// digest if anyone signed it, else the owner of its first publish)
    /// and the signature assignments carry.
    pub fn by_digest(&self, digest: &str) -> (String, Option<ModuleSignature>) {
        let state = self.state.read();
        let signature = state.signature_for(None, digest);
        let developer = match &signature {
            Some(s) => s.developer.clone(),
            None => state
                .services
                .values()
                .flat_map(|vs| vs.iter())
                .filter(|v| v.info.digest == digest)
                .min_by_key(|v| (v.info.created_at_ms, v.info.owner.clone()))
                .map(|v| v.developer.clone())
                .unwrap_or_default(),
        };
        (developer, signature)
    }
}

#[cfg(test)]
mod tests;
