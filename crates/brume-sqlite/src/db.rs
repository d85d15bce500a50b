//! Closures in group commits: [`Db`].

use std::future::Future;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use crate::group::{Closed, GroupCommit, Handler};
use crate::{Error, Options, ReadPool};

/// A database used through closures: writes run on one writer thread in
/// group commits, reads on a [`ReadPool`]. Cheap to clone.
///
/// Each batch is one transaction (`BEGIN IMMEDIATE`), committed once. Each
/// write in it runs under its own savepoint: a write that fails (returns
/// `Err` or panics) is rolled back alone, and the others of the batch
/// still commit. If the transaction itself fails (to begin, to keep a
/// savepoint, or to commit), nothing of the batch is stored and every
/// caller of the batch gets [`Error::Commit`].
#[derive(Clone)]
pub struct Db {
    writer: GroupCommit<Box<dyn Job>>,
    reads: ReadPool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.reads.path())
            .field("writer", &self.writer.name())
            .finish_non_exhaustive()
    }
}

/// At most this many writes in one group commit.
const MAX_BATCH: usize = 512;

impl Db {
    /// Opens `path` with `options` and starts the writer thread `name`.
    /// Blocking.
    pub fn open(name: &str, path: &Path, options: &Options) -> Result<Db, Error> {
        let conn = crate::open(path, options)?;
        Db::start(name, conn, path, options)
    }

    /// Starts the writer thread `name` on `writer`, a connection to `path`
    /// already set up (opened with [`open`](crate::open), schema created),
    /// with a reader pool of [`ReadPool::DEFAULT_SIZE`] connections
    /// opened with `options`.
    pub fn start(
        name: &str,
        writer: Connection,
        path: &Path,
        options: &Options,
    ) -> Result<Db, Error> {
        Ok(Db {
            writer: GroupCommit::start(name, MAX_BATCH, Writer { conn: writer })?,
            reads: ReadPool::new(path, options, ReadPool::DEFAULT_SIZE),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.reads.path()
    }

    /// Runs `f` in the next group commit, under its own savepoint, and
    /// resolves once the batch is committed (durable), to what `f`
    /// returned. If `f` fails, its changes are rolled back, the batch's
    /// other writes still commit, and the future resolves to `f`'s error.
    ///
    /// The write is queued when `write` is called, not when the future is
    /// first polled, so writes apply in the order of the calls. Dropping
    /// the future doesn't withdraw it. A closed writer gives
    /// [`Error::Closed`], a failed commit [`Error::Commit`].
    pub fn write<T, E, F>(&self, f: F) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let (done, wait) = oneshot::channel();
        let sent = self.writer.send(Box::new(Write {
            f: Some(f),
            out: None,
            done,
        }));
        async move {
            sent.map_err(|Closed| E::from(Error::Closed))?;
            wait.await.unwrap_or_else(|_| Err(E::from(Error::Closed)))
        }
    }

    /// Queues `f` for the next group commit without waiting. Writes apply in
    /// the order they were queued (with [`write`](Db::write)'s too). A
    /// failure is logged.
    pub fn write_later<E, F>(&self, f: F) -> Result<(), Closed>
    where
        F: FnOnce(&Transaction<'_>) -> Result<(), E> + Send + 'static,
        E: std::fmt::Display + 'static,
    {
        self.writer.send(Box::new(Later {
            f: Some(f),
            _error: std::marker::PhantomData::<fn() -> E>,
        }))
    }

    /// Resolves once everything queued before the call is committed.
    pub async fn flush(&self) -> Result<(), Error> {
        self.write(|_| Ok(())).await
    }

    /// Runs `f` on a blocking thread with a pooled reader connection; see
    /// [`ReadPool::read`]. A read sees every write that was acknowledged
    /// before it started.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        self.reads.read(f).await
    }

    /// Stops accepting writes, for every clone: later ones fail with
    /// [`Error::Closed`]. The writes already queued still commit, then the
    /// writer thread ends. Reads go on.
    pub fn close(&self) {
        self.writer.close();
    }
}

/// One queued write, type-erased.
trait Job: Send {
    /// Runs the write under its savepoint and keeps its outcome. `Err`: the
    /// savepoint itself failed, so the batch's transaction is unusable.
    fn apply(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()>;

    /// Answers the caller once the batch's fate is known.
    fn answer(self: Box<Self>, committed: &Result<(), Arc<rusqlite::Error>>);
}

/// A write whose caller waits.
struct Write<F, T, E> {
    f: Option<F>,
    out: Option<Result<T, E>>,
    done: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> Job for Write<F, T, E>
where
    F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send,
    T: Send,
    E: From<Error> + Send,
{
    fn apply(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        if let Some(f) = self.f.take() {
            let out = in_savepoint(tx, f)?;
            self.out = Some(out.unwrap_or_else(|()| Err(E::from(Error::Panicked))));
        }
        Ok(())
    }

    fn answer(self: Box<Self>, committed: &Result<(), Arc<rusqlite::Error>>) {
        let out = match (committed, self.out) {
            (Ok(()), Some(out)) => out,
            // Not applied, yet the batch committed: cannot happen, every
            // job is applied before the commit.
            (Ok(()), None) => Err(E::from(Error::Closed)),
            (Err(e), _) => Err(E::from(Error::Commit(e.clone()))),
        };
        // The caller may have stopped waiting.
        let _ = self.done.send(out);
    }
}

/// A write nobody waits for: failures are logged.
struct Later<F, E> {
    f: Option<F>,
    _error: std::marker::PhantomData<fn() -> E>,
}

impl<F, E> Job for Later<F, E>
where
    F: FnOnce(&Transaction<'_>) -> Result<(), E> + Send,
    E: std::fmt::Display,
{
    fn apply(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        if let Some(f) = self.f.take() {
            match in_savepoint(tx, f)? {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("a database write failed and was rolled back: {e}"),
                Err(()) => tracing::error!("a database write panicked and was rolled back"),
            }
        }
        Ok(())
    }

    fn answer(self: Box<Self>, _committed: &Result<(), Arc<rusqlite::Error>>) {
        // A failed commit is logged by the writer.
    }
}

/// Runs `f` under a savepoint, rolled back if `f` fails or panics
/// (`Err(())`). The outer `Err` is a failure of the savepoint itself.
fn in_savepoint<T, E>(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
) -> rusqlite::Result<Result<Result<T, E>, ()>> {
    tx.prepare_cached("SAVEPOINT brume_write")?.execute([])?;
    let out = std::panic::catch_unwind(AssertUnwindSafe(|| f(tx))).map_err(|_| ());
    if !matches!(out, Ok(Ok(_))) {
        tx.prepare_cached("ROLLBACK TO brume_write")?.execute([])?;
    }
    tx.prepare_cached("RELEASE brume_write")?.execute([])?;
    Ok(out)
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
}

impl Writer {
    fn commit(&mut self, batch: &mut [Box<dyn Job>]) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for job in batch.iter_mut() {
            job.apply(&tx)?;
        }
        tx.commit()
    }
}

impl Handler for Writer {
    type Request = Box<dyn Job>;

    fn handle(&mut self, mut batch: Vec<Box<dyn Job>>) -> ControlFlow<()> {
        // On an error the transaction was dropped, which rolled it back.
        let committed = self.commit(&mut batch).map_err(Arc::new);
        if let Err(e) = &committed {
            tracing::error!(
                writes = batch.len(),
                "a database group commit failed, none of its writes is stored: {e}"
            );
        }
        for job in batch {
            job.answer(&committed);
        }
        ControlFlow::Continue(())
    }
}
