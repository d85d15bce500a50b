//! Invocation receipts, checked in batches (`brume_api::batch`).
//!
//! An invocation's `Done` carries its receipt's leaf. The session rebuilds
//! the receipt from its own assignment and the outcome it was given, and a
//! leaf that doesn't match is a bad result (retried elsewhere, like a bad
//! signature). The leaves of a session wait in its [`Pending`] batch until
//! the provider's `Root`: the broker folds the same tree and checks the one
//! signature. A root over other leaves, a batch over [`MAX_LEAVES`], or
//! leaves left unsigned for [`ROOT_GRACE`] end the session.
//!
//! Checked batches are kept in [`Receipts`], bounded to the last
//! [`KEPT_RECEIPTS`] calls, so that a caller can fetch the proof of its
//! call (`GET /v1/receipts/{work_id}`) and check it offline.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brume_api::WorkId;
use brume_api::batch::{self, Hash, MAX_LEAVES, ReceiptInclusion, RootClaim, SignedRoot};
use brume_api::receipt::Receipt;
use brume_api::wire;

use crate::Shared;
use crate::metrics::OutcomeLabels;

/// How long a leaf may wait for its provider's signed root.
pub(crate) const ROOT_GRACE: Duration = Duration::from_secs(10);

/// How many calls' receipts the broker keeps proofs for.
pub(crate) const KEPT_RECEIPTS: usize = 16_384;

/// Why a provider's batch of receipts is refused (its session ends).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RootError {
    #[error("a Done without its receipt's signature or leaf")]
    NoLeaf,
    #[error("a receipt leaf of {0} bytes (32 expected)")]
    LeafSize(usize),
    #[error("more than {MAX_LEAVES} receipts without a signed root")]
    TooMany,
    #[error("receipts left unsigned for {0:?}")]
    Overdue(Duration),
    #[error("receipt root {got} where batch {expected} was due")]
    OutOfOrder { got: u64, expected: u64 },
    #[error("a receipt root over {claimed} leaves; {sent} were sent")]
    Size { claimed: u32, sent: usize },
    #[error("batch {0}: the signed root is not the root of the receipts sent")]
    Mismatch(u64),
    #[error("batch {0}: the root's signature does not verify")]
    BadSignature(u64),
}

/// A leaf, and the receipt it was rebuilt from when the broker still had
/// the work (a late result's leaf is taken as sent).
struct Leaf {
    hash: Hash,
    receipt: Option<(Receipt, Arc<str>)>,
}

/// One session's leaves since its provider's last root.
#[derive(Default)]
pub(crate) struct Pending {
    batch: u64,
    leaves: Vec<Leaf>,
    since: Option<Instant>,
}

impl Pending {
    /// Adds a `Done`'s leaf; `receipt` (and the call's account) if the
    /// broker rebuilt it.
    pub fn push(
        &mut self,
        leaf: &[u8],
        receipt: Option<(Receipt, Arc<str>)>,
    ) -> Result<(), RootError> {
        let hash: Hash = leaf
            .try_into()
            .map_err(|_| RootError::LeafSize(leaf.len()))?;
        if self.leaves.len() >= MAX_LEAVES {
            return Err(RootError::TooMany);
        }
        self.leaves.push(Leaf { hash, receipt });
        self.since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Unsigned leaves older than [`ROOT_GRACE`] are a refusal to sign.
    pub fn check_overdue(&self, shared: &Shared) -> Result<(), RootError> {
        match self.since {
            Some(t) if t.elapsed() > ROOT_GRACE => {
                count(shared, "overdue");
                Err(RootError::Overdue(t.elapsed()))
            }
            _ => Ok(()),
        }
    }

    /// Checks the provider's root over the pending leaves; keeps the batch.
    pub fn close(
        &mut self,
        shared: &Shared,
        provider: &str,
        root: &wire::Root,
    ) -> Result<(), RootError> {
        let checked = self.check(shared, provider, root);
        count(
            shared,
            if checked.is_ok() {
                "checked"
            } else {
                "refused"
            },
        );
        let signed = checked?;
        let leaves = std::mem::take(&mut self.leaves);
        shared.receipts.keep(signed, leaves);
        self.batch += 1;
        self.since = None;
        Ok(())
    }

    fn check(
        &self,
        shared: &Shared,
        provider: &str,
        root: &wire::Root,
    ) -> Result<SignedRoot, RootError> {
        if root.batch != self.batch {
            return Err(RootError::OutOfOrder {
                got: root.batch,
                expected: self.batch,
            });
        }
        if root.size as usize != self.leaves.len() {
            return Err(RootError::Size {
                claimed: root.size,
                sent: self.leaves.len(),
            });
        }
        let hashes: Vec<Hash> = self.leaves.iter().map(|l| l.hash).collect();
        if root.root.as_ref() != batch::root(&hashes) {
            return Err(RootError::Mismatch(root.batch));
        }
        let claim = RootClaim {
            provider: provider.to_string(),
            broker: shared.broker_id.clone(),
            batch: root.batch,
            size: root.size,
            root: hex::encode(&root.root),
        };
        if brume_identity::verify(claim.message().as_bytes(), &root.signature, provider).is_err() {
            return Err(RootError::BadSignature(root.batch));
        }
        Ok(SignedRoot {
            claim,
            signature: format!("0x{}", hex::encode(&root.signature)),
        })
    }
}

fn count(shared: &Shared, outcome: &str) {
    shared
        .metrics
        .receipt_roots
        .get_or_create(&OutcomeLabels {
            outcome: outcome.to_string(),
        })
        .inc();
}

/// A checked batch.
struct Batch {
    root: SignedRoot,
    leaves: Vec<Hash>,
    receipts: Vec<Option<(Receipt, Arc<str>)>>,
}

#[derive(Default)]
struct Kept {
    batches: VecDeque<Arc<Batch>>,
    /// Calls in `batches`, by work id: their batch and index.
    index: HashMap<WorkId, (Arc<Batch>, usize)>,
    count: usize,
}

/// The last [`KEPT_RECEIPTS`] calls' receipts, in checked batches.
#[derive(Default)]
pub(crate) struct Receipts(parking_lot::Mutex<Kept>);

impl Receipts {
    fn keep(&self, root: SignedRoot, leaves: Vec<Leaf>) {
        let (leaves, receipts) = leaves.into_iter().map(|l| (l.hash, l.receipt)).unzip();
        let batch = Arc::new(Batch {
            root,
            leaves,
            receipts,
        });
        let mut k = self.0.lock();
        for (i, r) in batch.receipts.iter().enumerate() {
            if let Some((r, _)) = r {
                k.index.insert(r.work_id, (batch.clone(), i));
            }
        }
        k.count += batch.leaves.len();
        k.batches.push_back(batch);
        while k.count > KEPT_RECEIPTS {
            let Some(old) = k.batches.pop_front() else {
                break;
            };
            k.count -= old.leaves.len();
            for r in old.receipts.iter().flatten() {
                // A retried call may be indexed in a newer batch.
                if k.index
                    .get(&r.0.work_id)
                    .is_some_and(|(b, _)| Arc::ptr_eq(b, &old))
                {
                    k.index.remove(&r.0.work_id);
                }
            }
        }
    }

    /// The proof of `id`'s receipt, with the account that made the call.
    pub fn proof(&self, id: WorkId) -> Option<(ReceiptInclusion, Arc<str>)> {
        let (batch, i) = self.0.lock().index.get(&id).cloned()?;
        let (receipt, account) = batch.receipts[i].clone()?;
        let proof = ReceiptInclusion::new(receipt, &batch.leaves, i, batch.root.clone());
        Some((proof, account))
    }
}
