//! The session's batch of receipts (`brume_api::batch`): an invocation's
//! `Done` carries its receipt's leaf, and the batch is signed once, as a
//! `Root` on the control channel, when it is full or
//! [`ROOT_EVERY_MS`](brume_api::batch::ROOT_EVERY_MS) after its first leaf.
//!
//! A leaf joins the batch under the same lock that queues its `Done`, so
//! the broker reads the leaves in the order they were hashed.

use std::time::{Duration, Instant};

use brume_api::batch::{self, Hash, MAX_LEAVES, RootClaim};
use brume_api::wire::{self, FromProvider};
use bytes::Bytes;

use crate::work::{Outbox, send};
use crate::{Fault, Shared};

/// How long a batch may wait for more leaves.
pub(crate) const ROOT_EVERY: Duration = Duration::from_millis(batch::ROOT_EVERY_MS);

/// One session's open batch.
pub(crate) struct Roots {
    /// The broker's address, from its challenge.
    broker: String,
    open: parking_lot::Mutex<Open>,
}

#[derive(Default)]
struct Open {
    batch: u64,
    leaves: Vec<Hash>,
    since: Option<Instant>,
}

impl Roots {
    pub(crate) fn new(broker: String) -> Roots {
        Roots {
            broker,
            open: parking_lot::Mutex::new(Open::default()),
        }
    }

    /// Queues `done` (whose leaf is `leaf`) and adds the leaf to the batch;
    /// signs the batch if that filled it.
    pub(crate) fn done(
        &self,
        shared: &Shared,
        out: &Outbox,
        channel: u32,
        leaf: Hash,
        done: wire::Done,
    ) {
        let mut open = self.open.lock();
        send(out, channel, &FromProvider::Done(Box::new(done)));
        open.leaves.push(leaf);
        open.since.get_or_insert_with(Instant::now);
        if open.leaves.len() >= MAX_LEAVES {
            self.seal(shared, out, &mut open);
        }
    }

    /// Signs the batch if its first leaf has waited [`ROOT_EVERY`], or at
    /// once with `now` (a session that ends).
    pub(crate) fn flush(&self, shared: &Shared, out: &Outbox, now: bool) {
        let mut open = self.open.lock();
        let due = open.since.is_some_and(|t| now || t.elapsed() >= ROOT_EVERY);
        if due {
            self.seal(shared, out, &mut open);
        }
    }

    fn seal(&self, shared: &Shared, out: &Outbox, open: &mut Open) {
        let mut root = batch::root(&open.leaves);
        if shared.config.fault == Some(Fault::BadRoot) {
            root[0] ^= 1;
        }
        let claim = RootClaim {
            provider: shared.address.clone(),
            broker: self.broker.clone(),
            batch: open.batch,
            size: open.leaves.len() as u32,
            root: hex::encode(root),
        };
        let signature = match shared.identity.sign_message(claim.message().as_bytes()) {
            Ok(sig) => Bytes::copy_from_slice(&sig),
            Err(e) => {
                tracing::error!("sign a batch of receipts: {e}");
                Bytes::new()
            }
        };
        let frame = wire::Root {
            batch: open.batch,
            size: claim.size,
            root: Bytes::copy_from_slice(&root),
            signature,
        };
        send(out, wire::CONTROL, &FromProvider::Root(frame));
        open.batch += 1;
        open.leaves.clear();
        open.since = None;
    }
}
