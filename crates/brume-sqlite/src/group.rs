//! The writer thread: [`GroupCommit`] and its [`Handler`].

use std::ops::ControlFlow;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use crate::Error;

/// What a [`GroupCommit`] thread does with its batches. It owns the
/// writer's state (a connection, and whatever else only the writer
/// touches).
pub trait Handler: Send + 'static {
    /// One caller's request, usually with a `oneshot::Sender` to answer on.
    type Request: Send + 'static;

    /// How much a request weighs (rows, transactions). A batch stops
    /// growing once its weight reaches the limit given to
    /// [`GroupCommit::start`]. One by default.
    fn weight(&self, request: &Self::Request) -> usize {
        let _ = request;
        1
    }

    /// Commits one batch (at least one request, in the order they were
    /// sent) and answers its callers. [`ControlFlow::Break`] ends the
    /// thread: the requests still queued are dropped, and later sends
    /// fail with [`Closed`].
    fn handle(&mut self, batch: Vec<Self::Request>) -> ControlFlow<()>;
}

/// The writer has stopped: [`GroupCommit::close`] was called, or its thread
/// ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the database writer has stopped")]
pub struct Closed;

/// A named writer thread that hands whatever is queued to a [`Handler`], in
/// batches. Cheap to clone; every clone sends to the same thread.
///
/// The thread takes the first queued request, then everything else queued
/// until the batch weighs `max_weight` or more, and calls
/// [`Handler::handle`]. Requests are handled in the order they were sent.
/// It ends when the handler breaks, or once [`close`](GroupCommit::close)
/// was called (or every clone dropped) and the queue is empty.
pub struct GroupCommit<R> {
    shared: Arc<Shared<R>>,
}

struct Shared<R> {
    name: String,
    /// `None` once closed.
    tx: Mutex<Option<Sender<R>>>,
}

impl<R> Clone for GroupCommit<R> {
    fn clone(&self) -> Self {
        GroupCommit {
            shared: self.shared.clone(),
        }
    }
}

impl<R> std::fmt::Debug for GroupCommit<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<R: Send + 'static> GroupCommit<R> {
    /// Starts the thread `name` with `handler`. A batch stops growing once
    /// it weighs `max_weight` (so it weighs less than `max_weight` plus one
    /// request).
    pub fn start<H>(name: &str, max_weight: usize, handler: H) -> Result<GroupCommit<R>, Error>
    where
        H: Handler<Request = R>,
    {
        let (tx, rx) = std::sync::mpsc::channel::<R>();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(handler, rx, max_weight))
            .map_err(Error::Spawn)?;
        Ok(GroupCommit {
            shared: Arc::new(Shared {
                name: name.to_string(),
                tx: Mutex::new(Some(tx)),
            }),
        })
    }

    /// Queues a request for the next batch. Never blocks.
    pub fn send(&self, request: R) -> Result<(), Closed> {
        let tx = self.shared.tx.lock().unwrap_or_else(|p| p.into_inner());
        tx.as_ref().ok_or(Closed)?.send(request).map_err(|_| Closed)
    }

    /// Stops accepting requests, for every clone: later sends fail with
    /// [`Closed`]. The thread handles what is already queued, then ends.
    pub fn close(&self) {
        self.shared
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

fn run<H: Handler>(mut handler: H, rx: Receiver<H::Request>, max_weight: usize) {
    while let Ok(first) = rx.recv() {
        let mut weight = handler.weight(&first);
        let mut batch = vec![first];
        while weight < max_weight {
            match rx.try_recv() {
                Ok(r) => {
                    weight = weight.saturating_add(handler.weight(&r));
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        if handler.handle(batch).is_break() {
            break;
        }
    }
    // Refuse sends (and drop what is still queued) before the handler and
    // its connection go.
    drop(rx);
    drop(handler);
}
