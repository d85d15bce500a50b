//! [`LeaseStore`] over the broker's SQLite database: one row per lease,
//! its record as JSON, replaced at every save.

use super::{Lease, LeaseStore};
use crate::StoreFuture;
use crate::store::{Store, StoreError};

impl LeaseStore for Store {
    fn save(&self, lease: Lease) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let body = serde_json::to_string(&lease)
                .map_err(|e| StoreError::Corrupt(format!("lease {}: {e}", lease.id)))?;
            self.write(move |tx| {
                tx.execute(
                    "INSERT INTO leases (id, account, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                    rusqlite::params![lease.id, lease.account, body],
                )
                .map(drop)
            })
            .await
        })
    }

    fn load(&self) -> StoreFuture<'_, Vec<Lease>> {
        Box::pin(async move {
            let bodies = self
                .read(|c| {
                    let mut stmt = c.prepare("SELECT body FROM leases ORDER BY id")?;
                    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
                    rows.collect::<rusqlite::Result<Vec<String>>>()
                })
                .await?;
            bodies
                .iter()
                .map(|b| {
                    serde_json::from_str(b)
                        .map_err(|e| StoreError::Corrupt(format!("a lease: {e}")))
                })
                .collect()
        })
    }
}
