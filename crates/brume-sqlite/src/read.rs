//! Reads on blocking threads: [`ReadPool`].

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::{Error, Options};

/// Runs reads on `tokio::task::spawn_blocking`, each with a connection of
/// its own. Cheap to clone; clones share the pool.
///
/// At most `size` reads run at once (the others wait, asynchronously, for
/// a turn), so at most `size` connections are open. Connections are opened
/// on demand with the pool's [`Options`] and kept for later reads.
#[derive(Clone)]
pub struct ReadPool {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    options: Options,
    idle: Mutex<Vec<Connection>>,
    turns: Arc<Semaphore>,
    size: usize,
}

impl std::fmt::Debug for ReadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadPool")
            .field("path", &self.inner.path)
            .field("size", &self.inner.size)
            .finish_non_exhaustive()
    }
}

impl ReadPool {
    /// The pool size brume's stores use.
    pub const DEFAULT_SIZE: usize = 8;

    /// A pool of at most `size` (at least 1) connections to `path`. Opens
    /// nothing yet.
    pub fn new(path: &Path, options: &Options, size: usize) -> ReadPool {
        let size = size.max(1);
        ReadPool {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                options: options.clone(),
                idle: Mutex::new(Vec::with_capacity(size)),
                turns: Arc::new(Semaphore::new(size)),
                size,
            }),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` with a pooled connection on a blocking thread and returns
    /// what it returns. Failing to open a connection is
    /// [`Error::Open`]; a panic in `f` is [`Error::Panicked`] (and that
    /// connection is dropped).
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let turn = self
            .inner
            .turns
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| E::from(Error::Closed))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let pooled = inner.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match pooled {
                Some(c) => c,
                None => crate::open(&inner.path, &inner.options).map_err(Error::from)?,
            };
            let out = std::panic::catch_unwind(AssertUnwindSafe(|| f(&conn)))
                .map_err(|_| Error::Panicked)?;
            inner
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            out
        })
        .await
        // A blocking task that never ran: the runtime is shutting down.
        .map_err(|_| E::from(Error::Closed))?
    }
}
