//! [`LeaseStore`] over any [`brume_sql::Backend`] (the broker's SQLite
//! database today): one row per lease, its record as JSON, replaced at
//! every save. The statements are in the dialect SQLite and PostgreSQL
//! share.

use brume_sql::{Backend, V};

use super::{Lease, LeaseStore};
use crate::StoreFuture;
use crate::store::StoreError;

impl<B: Backend<Error = StoreError> + std::fmt::Debug> LeaseStore for B {
    fn save(&self, lease: Lease) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let body = serde_json::to_string(&lease)
                .map_err(|e| StoreError::Corrupt(format!("lease {}: {e}", lease.id)))?;
            let op = move |c: &mut dyn brume_sql::Sql| {
                c.exec(
                    "INSERT INTO leases (id, account, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                    &[V::T(&lease.id), V::T(&lease.account), V::T(&body)],
                )?;
                Ok(())
            };
            self.run(true, Box::new(op)).await
        })
    }

    fn load(&self) -> StoreFuture<'_, Vec<Lease>> {
        Box::pin(async move {
            let op = |c: &mut dyn brume_sql::Sql| {
                let rows = c.query("SELECT body FROM leases ORDER BY id", &[])?;
                Ok(rows.iter().map(|r| r.t(0)).collect::<Result<Vec<_>, _>>()?)
            };
            let bodies = self.run(false, Box::new(op)).await?;
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
