//! The registry's SQL (SQLite and PostgreSQL): tables `service_versions` and `aliases`, and the
//! migration from the one-version-per-name `services` table of older
//! brokers. Module files live beside the database (the store's blobs).

use brume_api::names::AliasInfo;
use brume_api::rest::ServiceInfo;
use brume_sql::{Dialect, Sql, V};
use bytes::Bytes;

use super::{Loaded, RegistryStore, Version};
use crate::StoreFuture;
use crate::store::{self, Store, StoreError};

/// The registry's tables on SQLite, made when the registry opens
/// (PostgreSQL's are made by its migrations).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS service_versions (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    digest TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    developer TEXT NOT NULL,
    signed_by TEXT,
    signature BLOB,
    retired_at_ms INTEGER,
    PRIMARY KEY (owner, name, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    alias TEXT PRIMARY KEY,
    account TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL
);
";

/// The namespace of an old service whose publisher is unknown.
pub(crate) const LEGACY_NAMESPACE: &str = "legacy";

/// Makes the tables and migrates old ones (SQLite), in the caller's
/// transaction.
fn prepare(c: &mut dyn Sql) -> Result<(), StoreError> {
    store::sqlite_layout(c, SCHEMA)?;
    if c.dialect() == Dialect::Sqlite {
        migrate_services(c)?;
    }
    Ok(())
}

/// Moves the services of an older broker (table `services`, one version
/// per name, columns added over time) into `service_versions` as version
/// 1, each in the namespace of its `developer` column: the publishing
/// key's account (its label when it had no address), or the signer of a
/// signed upload. The old table is kept, renamed `services_v1`.
fn migrate_services(c: &mut dyn Sql) -> Result<(), StoreError> {
    let exists = c
        .one(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'services'",
            &[],
        )?
        .map(|r| r.i(0))
        .transpose()?
        .is_some_and(|n| n > 0);
    if !exists {
        return Ok(());
    }
    let columns = c.query("SELECT name FROM pragma_table_info('services')", &[])?;
    let columns = columns
        .iter()
        .map(|r| r.t(0))
        .collect::<Result<Vec<_>, _>>()?;
    let has = |name: &str| columns.iter().any(|n| n == name);
    let developer = if has("developer") { "developer" } else { "''" };
    let (signed_by, signature) = if has("signed_by") {
        ("signed_by", "signature")
    } else {
        ("NULL", "NULL")
    };
    let old = c.query(
        &format!(
            "SELECT name, kind, digest, size_bytes, created_at_ms, {developer}, {signed_by}, {signature} FROM services"
        ),
        &[],
    )?;
    for r in &old {
        let owner = match r.t(5)?.as_str() {
            "" => LEGACY_NAMESPACE.to_string(),
            d => super::account_key(d),
        };
        let (name, kind, digest) = (r.t(0)?, r.t(1)?, r.t(2)?);
        let (signed_by, signature) = (r.ot(6)?, r.ob(7)?);
        c.exec(
            "INSERT OR IGNORE INTO service_versions (owner, name, version, kind, digest, size_bytes, created_at_ms, developer, signed_by, signature) VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?1, ?7, ?8)",
            &[
                V::T(&owner),
                V::T(&name),
                V::T(&kind),
                V::T(&digest),
                V::I(r.i(3)?),
                V::I(r.i(4)?),
                signed_by.as_ref().into(),
                signature.as_deref().into(),
            ],
        )?;
    }
    c.batch("ALTER TABLE services RENAME TO services_v1")?;
    Ok(())
}

fn load(c: &mut dyn Sql) -> Result<Loaded, StoreError> {
    let rows = c.query(
        "SELECT owner, name, version, kind, digest, size_bytes, created_at_ms, developer, signed_by, signature, retired_at_ms FROM service_versions",
        &[],
    )?;
    let mut versions = Vec::with_capacity(rows.len());
    for r in &rows {
        let (developer_address, signature) = match (r.ot(8)?, r.ob(9)?) {
            (Some(a), Some(s)) => (Some(a), Some(s)),
            _ => (None, None),
        };
        let info = ServiceInfo {
            owner: r.t(0)?,
            name: r.t(1)?,
            version: r.i(2)? as u64,
            kind: r.t(3)?.parse().unwrap_or(brume_api::ServiceKind::Command),
            digest: r.t(4)?,
            size_bytes: r.i(5)? as u64,
            created_at_ms: r.i(6)? as u64,
            retired: r.oi(10)?.is_some(),
            signed: developer_address.is_some(),
            module_signature: signature.as_ref().map(|s| format!("0x{}", hex::encode(s))),
            developer_address,
        };
        versions.push(Version {
            info,
            developer: r.t(7)?,
            signature,
        });
    }
    let aliases = c
        .query("SELECT alias, account, created_at_ms FROM aliases", &[])?
        .iter()
        .map(|r| {
            Ok(AliasInfo {
                alias: r.t(0)?,
                account: r.t(1)?,
                created_at_ms: r.i(2)? as u64,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Loaded { versions, aliases })
}

impl RegistryStore for Store {
    fn load(&self) -> StoreFuture<'_, Loaded> {
        Box::pin(async move {
            self.write(prepare).await?;
            self.read(load).await
        })
    }

    fn put_version(&self, v: Version) -> StoreFuture<'_, ()> {
        store::writing(self, move |c| {
            let i = &v.info;
            c.exec(
                "INSERT INTO service_versions (owner, name, version, kind, digest, size_bytes, created_at_ms, developer, signed_by, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                &[
                    V::T(&i.owner),
                    V::T(&i.name),
                    V::I(i.version as i64),
                    V::T(i.kind.as_str()),
                    V::T(&i.digest),
                    V::I(i.size_bytes as i64),
                    V::I(i.created_at_ms as i64),
                    V::T(&v.developer),
                    i.developer_address.as_ref().into(),
                    v.signature.as_deref().into(),
                ],
            )?;
            Ok(())
        })
    }

    fn retire(
        &self,
        owner: String,
        name: String,
        version: Option<u64>,
        at_ms: u64,
    ) -> StoreFuture<'_, ()> {
        store::writing(self, move |c| {
            c.exec(
                "UPDATE service_versions SET retired_at_ms = coalesce(retired_at_ms, ?4)
                 WHERE owner = ?1 AND name = ?2 AND (CAST(?3 AS BIGINT) IS NULL OR version = ?3)",
                &[
                    V::T(&owner),
                    V::T(&name),
                    version.map(|v| v as i64).into(),
                    V::I(at_ms as i64),
                ],
            )?;
            Ok(())
        })
    }

    fn move_service(&self, from: String, name: String, to: String) -> StoreFuture<'_, ()> {
        store::writing(self, move |c| {
            c.exec(
                "UPDATE service_versions SET owner = ?3,
                 developer = CASE WHEN signed_by IS NULL THEN ?3 ELSE developer END
                 WHERE owner = ?1 AND name = ?2",
                &[V::T(&from), V::T(&name), V::T(&to)],
            )?;
            Ok(())
        })
    }

    fn put_alias(&self, a: AliasInfo) -> StoreFuture<'_, ()> {
        store::writing(self, move |c| {
            c.exec(
                "INSERT INTO aliases (alias, account, created_at_ms) VALUES (?1, ?2, ?3)",
                &[
                    V::T(&a.alias),
                    V::T(&a.account),
                    V::I(a.created_at_ms as i64),
                ],
            )?;
            Ok(())
        })
    }

    fn put_module(&self, digest: String, bytes: Bytes) -> StoreFuture<'_, ()> {
        Box::pin(self.put_blob(digest, bytes))
    }

    fn module(&self, digest: String) -> StoreFuture<'_, Option<Bytes>> {
        Box::pin(async move { self.get_blob(&digest).await })
    }
}
