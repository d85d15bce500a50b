//! Batched receipts: how an invocation's receipt is signed without an
//! ECDSA operation per call.
//!
//! A job's (or audited call's) receipt is signed on its own. An ordinary
//! invocation's is not: its `Done` carries the receipt's *leaf*, and every
//! [`MAX_LEAVES`] leaves, or every [`ROOT_EVERY_MS`] if fewer, the provider
//! signs one [`RootClaim`]: the Merkle root over the leaves of its `Done`
//! frames since the last root, in the order it sent them. The broker
//! rebuilds each leaf from its own assignment and the outcome it was given,
//! folds the same tree, and checks the one signature. A provider that signs
//! another root, or none in time, loses its session.
//!
//! One receipt is then proved offline, to anyone, by a
//! [`ReceiptInclusion`]: the receipt, its index, its Merkle path and the
//! signed root. The signature names the provider, the path binds the
//! receipt to the root.
//!
//! # Tree
//!
//! RFC 6962 §2.1 (Certificate Transparency), with sha256:
//! - a leaf is `sha256(0x00 ‖ message)`, where `message` is
//!   [`Receipt::message`];
//! - an inner node is `sha256(0x01 ‖ left ‖ right)`;
//! - a tree of n > 1 leaves splits at the largest power of two below n.
//!
//! # Root message (EIP-191)
//!
//! ```text
//! brume receipt root v1
//! provider: <0x address>
//! broker: <0x address>
//! batch: <n, from 0 on each session>
//! size: <number of leaves>
//! root: <sha256 hex>
//! ```

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::receipt::{Receipt, signed_by, unhex};

/// A batch is signed once it has this many leaves.
pub const MAX_LEAVES: usize = 256;

/// A batch with fewer leaves is signed this long after its first one.
pub const ROOT_EVERY_MS: u64 = 500;

/// A 32-byte tree hash.
pub type Hash = [u8; 32];

/// The leaf of a receipt.
pub fn leaf(r: &Receipt) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(r.message().as_bytes());
    h.finalize().into()
}

fn node(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two below `n` (`n` > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The Merkle root of `leaves` (the hash of nothing for none).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => Sha256::digest([]).into(),
        [one] => *one,
        _ => {
            let k = split(leaves.len());
            node(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `index` (RFC 6962 §2.1.1), leaf side first.
pub fn path(leaves: &[Hash], index: usize) -> Vec<Hash> {
    if leaves.len() <= 1 || index >= leaves.len() {
        return Vec::new();
    }
    let k = split(leaves.len());
    if index < k {
        let mut p = path(&leaves[..k], index);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = path(&leaves[k..], index - k);
        p.push(root(&leaves[..k]));
        p
    }
}

/// The root that `leaf` at `index` of a tree of `size` leaves folds to
/// along `path` (RFC 9162 §2.1.3.2), or `None` if the path has the wrong
/// length for that position.
pub fn fold(leaf: Hash, index: usize, size: usize, path: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf;
    for p in path {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = node(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

/// What a provider signs for a batch (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RootClaim {
    pub provider: String,
    pub broker: String,
    pub batch: u64,
    pub size: u32,
    /// sha256, lowercase hex.
    pub root: String,
}

impl RootClaim {
    /// The signed text.
    pub fn message(&self) -> String {
        format!(
            "brume receipt root v1\nprovider: {}\nbroker: {}\nbatch: {}\nsize: {}\nroot: {}",
            self.provider, self.broker, self.batch, self.size, self.root
        )
    }
}

/// A root claim and its provider's EIP-191 signature (65 bytes, `0x` hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedRoot {
    #[serde(flatten)]
    pub claim: RootClaim,
    pub signature: String,
}

impl SignedRoot {
    /// Whether the signature verifies under the claim's provider.
    pub fn verifies(&self, verify: impl Fn(&[u8], &[u8], &str) -> bool) -> bool {
        let c = &self.claim;
        signed_by(&self.signature, &c.message(), &c.provider, verify)
    }
}

/// One receipt, proved to be in a batch its provider signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptInclusion {
    pub receipt: Receipt,
    /// Its leaf's position in the batch.
    pub index: u32,
    /// Its audit path, sha256 hex, leaf side first.
    pub path: Vec<String>,
    pub root: SignedRoot,
}

/// Why an inclusion proof fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InclusionError {
    #[error("the root is signed for provider {root}, the receipt names {receipt}")]
    OtherProvider { root: String, receipt: String },
    #[error("the root's signature does not verify under {0}")]
    BadSignature(String),
    #[error("the path is not hex of 32-byte hashes")]
    BadPath,
    #[error("the receipt's path does not lead to the signed root")]
    NotIncluded,
}

fn unhash(s: &str) -> Option<Hash> {
    unhex(s)?.try_into().ok()
}

impl ReceiptInclusion {
    /// The proof of `leaves[index]`, whose receipt is `receipt`.
    pub fn new(receipt: Receipt, leaves: &[Hash], index: usize, root: SignedRoot) -> Self {
        ReceiptInclusion {
            receipt,
            index: index as u32,
            path: path(leaves, index).iter().map(hex::encode).collect(),
            root,
        }
    }

    /// Checks the proof; returns the provider whose signature it carries.
    pub fn check(
        &self,
        verify: impl Fn(&[u8], &[u8], &str) -> bool,
    ) -> Result<String, InclusionError> {
        let c = &self.root.claim;
        if !c.provider.eq_ignore_ascii_case(&self.receipt.provider) {
            return Err(InclusionError::OtherProvider {
                root: c.provider.clone(),
                receipt: self.receipt.provider.clone(),
            });
        }
        if !self.root.verifies(verify) {
            return Err(InclusionError::BadSignature(c.provider.clone()));
        }
        let path = self
            .path
            .iter()
            .map(|h| unhash(h))
            .collect::<Option<Vec<Hash>>>()
            .ok_or(InclusionError::BadPath)?;
        let folded = fold(
            leaf(&self.receipt),
            self.index as usize,
            c.size as usize,
            &path,
        );
        match folded {
            Some(r) if hex::encode(r) == c.root.to_ascii_lowercase() => Ok(c.provider.clone()),
            _ => Err(InclusionError::NotIncluded),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| Sha256::digest(i.to_be_bytes()).into())
            .collect()
    }

    #[test]
    fn small_trees_match_rfc_6962_by_hand() {
        let l = leaves(3);
        assert_eq!(root(&l[..1]), l[0]);
        assert_eq!(root(&l[..2]), node(&l[0], &l[1]));
        assert_eq!(root(&l), node(&node(&l[0], &l[1]), &l[2]));
        assert_eq!(path(&l, 2), vec![node(&l[0], &l[1])]);
        assert_eq!(path(&l, 0), vec![l[1], l[2]]);
    }

    proptest! {
        #[test]
        fn every_leaf_folds_to_its_root_and_no_other_does(n in 1usize..300, pick in 0usize..300) {
            let l = leaves(n);
            let r = root(&l);
            let i = pick % n;
            let p = path(&l, i);
            prop_assert_eq!(fold(l[i], i, n, &p), Some(r));
            // Another leaf at that place, or that leaf elsewhere, does not.
            let other: Hash = Sha256::digest(b"other").into();
            prop_assert_ne!(fold(other, i, n, &p), Some(r));
            if n > 1 {
                let j = (i + 1) % n;
                prop_assert_ne!(fold(l[i], j, n, &p), Some(r));
            }
            // A path cut short, or too long, folds to nothing.
            if !p.is_empty() {
                prop_assert_eq!(fold(l[i], i, n, &p[..p.len() - 1]), None);
            }
            let mut long = p.clone();
            long.push(other);
            prop_assert_eq!(fold(l[i], i, n, &long), None);
        }
    }
}
