//! The registry's SQL: tables `service_versions` and `aliases`, and the
//! migration from the one-version-per-name `services` table of older
//! brokers. Module files live beside the database (the store's blobs).

use brume_api::names::AliasInfo;
use brume_api::rest::ServiceInfo;
use bytes::Bytes;
use rusqlite::{Connection, params};

use super::{Loaded, RegistryStore, Version};
use crate::StoreFuture;
use crate::store::Store;

/// The registry's tables, made when the registry opens.
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

/// Makes the tables and migrates old ones, in the caller's transaction.
fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    migrate_services(conn)
}

/// Moves the services of an older broker (table `services`, one version
/// per name, columns added over time) into `service_versions` as version
/// 1, each in the namespace of its `developer` column: the publishing
/// key's account (its label when it had no address), or the signer of a
/// signed upload. The old table is kept, renamed `services_v1`.
fn migrate_services(conn: &Connection) -> rusqlite::Result<()> {
    let exists: bool = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'services'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !exists {
        return Ok(());
    }
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('services')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let has = |c: &str| columns.iter().any(|n| n == c);
    let developer = if has("developer") { "developer" } else { "''" };
    let (signed_by, signature) = if has("signed_by") {
        ("signed_by", "signature")
    } else {
        ("NULL", "NULL")
    };
    {
        let tx = conn;
        let mut old = tx.prepare(&format!(
            "SELECT name, kind, digest, size_bytes, created_at_ms, {developer}, {signed_by}, {signature} FROM services"
        ))?;
        let mut insert = tx.prepare(
            "INSERT OR IGNORE INTO service_versions (owner, name, version, kind, digest, size_bytes, created_at_ms, developer, signed_by, signature) VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?1, ?7, ?8)",
        )?;
        let mut rows = old.query([])?;
        while let Some(r) = rows.next()? {
            let developer: String = r.get(5)?;
            let owner = match developer.as_str() {
                "" => LEGACY_NAMESPACE.to_string(),
                d => super::account_key(d),
            };
            insert.execute(params![
                owner,
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<Vec<u8>>>(7)?,
            ])?;
        }
    }
    conn.execute_batch("ALTER TABLE services RENAME TO services_v1")
}

fn load(conn: &Connection) -> rusqlite::Result<Loaded> {
    let mut stmt = conn.prepare(
        "SELECT owner, name, version, kind, digest, size_bytes, created_at_ms, developer, signed_by, signature, retired_at_ms FROM service_versions",
    )?;
    let versions = stmt
        .query_map([], |r| {
            let kind: String = r.get(3)?;
            let signed_by: Option<String> = r.get(8)?;
            let signature: Option<Vec<u8>> = r.get(9)?;
            let (developer_address, signature) = match (signed_by, signature) {
                (Some(a), Some(s)) => (Some(a), Some(s)),
                _ => (None, None),
            };
            let info = ServiceInfo {
                owner: r.get(0)?,
                name: r.get(1)?,
                version: r.get::<_, i64>(2)? as u64,
                kind: kind.parse().unwrap_or(brume_api::ServiceKind::Command),
                digest: r.get(4)?,
                size_bytes: r.get::<_, i64>(5)? as u64,
                created_at_ms: r.get::<_, i64>(6)? as u64,
                retired: r.get::<_, Option<i64>>(10)?.is_some(),
                signed: developer_address.is_some(),
                module_signature: signature.as_ref().map(|s| format!("0x{}", hex::encode(s))),
                developer_address,
            };
            Ok(Version {
                info,
                developer: r.get(7)?,
                signature,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let aliases = conn
        .prepare("SELECT alias, account, created_at_ms FROM aliases")?
        .query_map([], |r| {
            Ok(AliasInfo {
                alias: r.get(0)?,
                account: r.get(1)?,
                created_at_ms: r.get::<_, i64>(2)? as u64,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Loaded { versions, aliases })
}

impl RegistryStore for Store {
    fn load(&self) -> StoreFuture<'_, Loaded> {
        Box::pin(async move {
            self.write(|tx| prepare(tx)).await?;
            self.read(load).await
        })
    }

    fn put_version(&self, v: Version) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |tx| {
            let i = &v.info;
            tx.execute(
                "INSERT INTO service_versions (owner, name, version, kind, digest, size_bytes, created_at_ms, developer, signed_by, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![i.owner, i.name, i.version as i64, i.kind.as_str(), i.digest, i.size_bytes as i64, i.created_at_ms as i64, v.developer, i.developer_address, v.signature],
            )?;
            Ok(())
        }))
    }

    fn retire(
        &self,
        owner: String,
        name: String,
        version: Option<u64>,
        at_ms: u64,
    ) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |tx| {
            tx.execute(
                "UPDATE service_versions SET retired_at_ms = coalesce(retired_at_ms, ?4) WHERE owner = ?1 AND name = ?2 AND (?3 IS NULL OR version = ?3)",
                params![owner, name, version.map(|v| v as i64), at_ms as i64],
            )?;
            Ok(())
        }))
    }

    fn move_service(&self, from: String, name: String, to: String) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |tx| {
            tx.execute(
                "UPDATE service_versions SET owner = ?3, developer = CASE WHEN signed_by IS NULL THEN ?3 ELSE developer END WHERE owner = ?1 AND name = ?2",
                params![from, name, to],
            )?;
            Ok(())
        }))
    }

    fn put_alias(&self, a: AliasInfo) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |tx| {
            tx.execute(
                "INSERT INTO aliases (alias, account, created_at_ms) VALUES (?1, ?2, ?3)",
                params![a.alias, a.account, a.created_at_ms as i64],
            )?;
            Ok(())
        }))
    }

    fn put_module(&self, digest: String, bytes: Bytes) -> StoreFuture<'_, ()> {
        Box::pin(self.put_blob(digest, bytes))
    }

    fn module(&self, digest: String) -> StoreFuture<'_, Option<Bytes>> {
        Box::pin(async move { self.get_blob(&digest).await })
    }
}
