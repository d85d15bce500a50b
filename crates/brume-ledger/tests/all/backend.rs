//! The store suites run on both backends: SQLite in a temp dir, and
//! PostgreSQL in a fresh database of a throwaway cluster (one per test
//! binary), connected as a role that owns nothing.

use std::ops::Deref;

use brume_ledger::store::postgres::PgStore;
use brume_ledger::store::{LedgerStore, SqliteStore};
use brume_pg::{Cluster, Database, cluster::APP_ROLE};

pub enum Backend {
    Sqlite(tempfile::TempDir, SqliteStore),
    Postgres(Database, PgStore),
}

/// The shared cluster (started on first use, off the runtime's threads).
pub async fn cluster() -> &'static Cluster {
    tokio::task::spawn_blocking(Cluster::shared)
        .await
        .expect("join")
        .expect("a PostgreSQL cluster (Debian's postgresql)")
}

impl Backend {
    pub fn sqlite() -> Backend {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        Backend::Sqlite(dir, store)
    }

    /// A fresh database: its owner creates the tables and grants the
    /// broker's role; the store connects as that role.
    pub async fn postgres() -> Backend {
        let db = cluster().await.database("ledger").await.expect("database");
        drop(
            PgStore::open(&db.owner_url)
                .await
                .expect("migrate as owner"),
        );
        PgStore::grant(&db.owner_url, APP_ROLE)
            .await
            .expect("grant");
        let store = PgStore::open(&db.app_url).await.expect("open as app");
        Backend::Postgres(db, store)
    }

    /// The same database, opened anew.
    pub async fn reopen(self) -> Backend {
        match self {
            Backend::Sqlite(dir, store) => {
                store.close();
                drop(store);
                let store = SqliteStore::open(dir.path()).expect("reopen");
                Backend::Sqlite(dir, store)
            }
            Backend::Postgres(db, store) => {
                drop(store);
                let store = PgStore::open(&db.app_url).await.expect("reopen");
                Backend::Postgres(db, store)
            }
        }
    }
}

impl Deref for Backend {
    type Target = dyn LedgerStore;

    fn deref(&self) -> &(dyn LedgerStore + 'static) {
        match self {
            Backend::Sqlite(_, s) => s,
            Backend::Postgres(_, s) => s,
        }
    }
}

/// `async fn name(store: Backend)` tests, once on each backend:
/// `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::backend::Backend::sqlite()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::backend::Backend::postgres().await).await
                }
            )*
        }
    };
}
