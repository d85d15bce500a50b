//! `verify`: replays a dev chain from genesis and names what does not hold.
//!
//! In one read transaction (a consistent snapshot, beside the writer):
//!
//! 1. The genesis: the stored allocations give block 0's `tx_root` (the
//!    genesis commitment of [`crate::dev`]), with the stored chain id and
//!    faucet flag; block 0 has no parent, no txs and timestamp 0.
//! 2. Every block, in order: numbers have no gap; `parent_hash` is the
//!    previous block's hash; the timestamps never go back; the hash is the
//!    hash of the header; the txs are numbered 0..n with n = `tx_count`;
//!    `tx_root` is the root of the hashes recomputed from the txs' content.
//! 3. Every tx: its stored hash is the hash of its content; its signature
//!    recovers to its sender (a mint: zero address, unsigned, faucet on); it
//!    applies to the replayed state (nonce, balance, allowance).
//! 4. No tx belongs to a block that does not exist.
//! 5. The replayed state (supply, balances, nonces, allowances) is the one
//!    the tables hold.
//!
//! Each finding is a [`Problem`] naming the block and, for a tx, its index
//! and stored hash. The report stops listing after [`MAX_PROBLEMS`].

use std::path::Path;

use alloy_primitives::{Address, B256};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::ChainError;
use crate::dev::{
    BLOCK_COLS, Block, TX_COLS, genesis_commitment, open_conn, read_block_row, read_genesis,
    read_meta, read_state, read_tx_row, tx_root,
};
use crate::state::State;
use crate::tx::SignedTx;

/// At most this many problems are listed.
pub const MAX_PROBLEMS: usize = 1000;

/// One thing that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The block it is in (none for the state tables).
    pub block: Option<u64>,
    /// The tx's index in its block.
    pub tx_index: Option<u32>,
    /// The tx's hash as stored.
    pub tx_hash: Option<B256>,
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.block, self.tx_index) {
            (Some(b), Some(i)) => write!(f, "block {b} tx {i}")?,
            (Some(b), None) => write!(f, "block {b}")?,
            (None, _) => write!(f, "state")?,
        }
        if let Some(h) = self.tx_hash {
            write!(f, " ({h})")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// What a replay found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub chain_id: u64,
    /// Blocks read, genesis included.
    pub blocks: u64,
    pub txs: u64,
    /// The hash of the last block read.
    pub head: B256,
    pub problems: Vec<Problem>,
    /// More problems than [`MAX_PROBLEMS`] were found.
    pub truncated: bool,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, block: Option<u64>, tx: Option<(u32, B256)>, detail: String) {
        if self.problems.len() >= MAX_PROBLEMS {
            self.truncated = true;
            return;
        }
        self.problems.push(Problem {
            block,
            tx_index: tx.map(|t| t.0),
            tx_hash: tx.map(|t| t.1),
            detail,
        });
    }
}

/// Opens `path` (a `chain.db`) and verifies it. Blocking.
pub fn verify_path(path: &Path) -> Result<VerifyReport, ChainError> {
    verify(&open_conn(path)?)
}

/// Verifies the chain in `conn`. Blocking. An error means the database
/// could not be read; what it holds that is wrong is in the report.
pub fn verify(conn: &Connection) -> Result<VerifyReport, ChainError> {
    let snapshot = conn.unchecked_transaction()?;
    let mut report = VerifyReport::default();
    let g = Some(0);
    let (chain_id, faucet) = match read_meta(conn) {
        Ok(m) => m,
        Err(e) => {
            report.problem(g, None, e.to_string());
            return Ok(report);
        }
    };
    report.chain_id = chain_id;
    let mut state = State::new(chain_id, faucet);
    let genesis = match read_genesis(conn) {
        Ok(allocs) => allocs,
        Err(e) => {
            report.problem(g, None, format!("genesis: {e}"));
            Vec::new()
        }
    };
    for (a, v) in &genesis {
        if let Err(e) = state.allocate(*a, *v) {
            report.problem(g, None, format!("genesis: {e}"));
        }
    }
    let commitment = genesis_commitment(chain_id, faucet, &genesis);

    let mut blocks = conn.prepare(&format!("SELECT {BLOCK_COLS} FROM blocks ORDER BY number"))?;
    let mut txs_of = conn.prepare(&format!(
        "SELECT {TX_COLS} FROM txs WHERE block_number = ?1 ORDER BY idx"
    ))?;
    let mut rows = blocks.query([])?;
    let mut prev: Option<Block> = None;
    let mut expected_number = 0u64;
    while let Some(r) = rows.next()? {
        report.blocks += 1;
        let b = match read_block_row(r) {
            Ok(b) => b,
            Err(e) => {
                let n = r.get::<_, i64>(0).ok().and_then(|n| u64::try_from(n).ok());
                report.problem(n, None, format!("the header does not decode: {e}"));
                prev = None;
                expected_number = n.map_or(expected_number, |n| n + 1);
                continue;
            }
        };
        let at = Some(b.number);
        if b.number != expected_number {
            report.problem(
                at,
                None,
                format!("expected block {expected_number} here: blocks are missing"),
            );
        }
        expected_number = b.number + 1;
        if b.number == 0 {
            if b.parent_hash != B256::ZERO || b.tx_count != 0 || b.timestamp_ms != 0 {
                report.problem(
                    at,
                    None,
                    "the genesis block has a parent, txs or a time".into(),
                );
            }
            if b.tx_root != commitment {
                report.problem(
                    at,
                    None,
                    format!(
                        "the genesis commitment {} is not that of the stored chain id, faucet \
                         and allocations ({commitment})",
                        b.tx_root
                    ),
                );
            }
        } else if let Some(p) = &prev {
            if b.parent_hash != p.hash {
                report.problem(
                    at,
                    None,
                    format!(
                        "parent_hash {} is not block {}'s hash {}",
                        b.parent_hash, p.number, p.hash
                    ),
                );
            }
            if b.timestamp_ms < p.timestamp_ms {
                report.problem(at, None, "the timestamp goes back".into());
            }
        }
        let computed = Block::compute_hash(
            b.number,
            b.parent_hash,
            b.tx_root,
            b.timestamp_ms,
            b.tx_count,
        );
        if computed != b.hash {
            report.problem(
                at,
                None,
                format!(
                    "the stored hash {} is not the header's hash {computed}",
                    b.hash
                ),
            );
        }
        // The block's txs.
        let mut txs: Vec<(u32, B256, SignedTx)> = Vec::with_capacity(b.tx_count as usize);
        let mut trows = txs_of.query([i64::try_from(b.number).unwrap_or(i64::MAX)])?;
        let mut expected_index = 0u32;
        while let Some(tr) = trows.next()? {
            report.txs += 1;
            match read_tx_row(tr, chain_id) {
                Ok(row) => {
                    let id = Some((row.pos.index, row.stored_hash));
                    if row.pos.index != expected_index {
                        report.problem(
                            at,
                            id,
                            format!("expected tx {expected_index} here: txs are missing"),
                        );
                    }
                    expected_index = row.pos.index.saturating_add(1);
                    if row.stored_hash != row.tx.hash {
                        report.problem(
                            at,
                            id,
                            format!(
                                "the stored hash is not the hash of the tx's content ({})",
                                row.tx.hash
                            ),
                        );
                    }
                    txs.push((row.pos.index, row.stored_hash, row.tx));
                }
                Err(e) => {
                    let i = tr.get::<_, i64>(1).ok().and_then(|i| u32::try_from(i).ok());
                    report.problem(at, None, format!("tx {i:?} does not decode: {e}"));
                    if let Some(i) = i {
                        expected_index = i.saturating_add(1);
                    }
                }
            }
        }
        drop(trows);
        let sigs = check_signatures(&txs);
        for ((index, stored, t), sig) in txs.iter().zip(sigs) {
            let id = Some((*index, *stored));
            if let Err(e) = sig {
                report.problem(at, id, e.to_string());
            }
            if let Err(e) = state.apply(&t.tx) {
                report.problem(at, id, format!("does not apply: {e}"));
            }
        }
        if txs.len() != b.tx_count as usize || (b.number > 0 && txs.is_empty()) {
            report.problem(
                at,
                None,
                format!(
                    "{} txs are stored, the header says {}",
                    txs.len(),
                    b.tx_count
                ),
            );
        }
        if b.number > 0 {
            let root = tx_root(txs.iter().map(|(_, _, t)| t.hash));
            if root != b.tx_root {
                report.problem(
                    at,
                    None,
                    format!(
                        "tx_root {} is not the root of the stored txs ({root})",
                        b.tx_root
                    ),
                );
            }
        }
        report.head = b.hash;
        prev = Some(b);
    }
    drop(rows);
    if report.blocks == 0 {
        report.problem(g, None, "there is no genesis block".into());
    }

    let mut orphans = conn.prepare(
        "SELECT DISTINCT block_number FROM txs
         WHERE block_number NOT IN (SELECT number FROM blocks) ORDER BY block_number",
    )?;
    let mut rows = orphans.query([])?;
    while let Some(r) = rows.next()? {
        let n = r.get::<_, i64>(0).ok().and_then(|n| u64::try_from(n).ok());
        report.problem(n, None, "txs of a block that is not stored".into());
    }
    drop(rows);

    match read_state(conn) {
        Err(e) => report.problem(None, None, e.to_string()),
        Ok(stored) => compare_state(&mut report, &state.normalized(), &stored.normalized()),
    }
    snapshot.rollback()?;
    Ok(report)
}

/// Names every difference between the replayed and the stored state.
fn compare_state(report: &mut VerifyReport, replayed: &State, stored: &State) {
    if replayed.supply != stored.supply {
        report.problem(
            None,
            None,
            format!(
                "the stored total supply {} is not the replayed {}",
                stored.supply, replayed.supply
            ),
        );
    }
    let mut accounts: Vec<Address> = replayed
        .balances
        .keys()
        .chain(replayed.nonces.keys())
        .chain(stored.balances.keys())
        .chain(stored.nonces.keys())
        .copied()
        .collect();
    accounts.sort();
    accounts.dedup();
    for a in accounts {
        let (rb, sb) = (replayed.balance(&a), stored.balance(&a));
        let (rn, sn) = (replayed.nonce(&a), stored.nonce(&a));
        if rb != sb || rn != sn {
            report.problem(
                None,
                None,
                format!(
                    "account {a}: stored balance {sb} nonce {sn}, replayed balance {rb} nonce {rn}"
                ),
            );
        }
    }
    let mut pairs: Vec<(Address, Address)> = replayed
        .allowances
        .keys()
        .chain(stored.allowances.keys())
        .copied()
        .collect();
    pairs.sort();
    pairs.dedup();
    for (o, s) in pairs {
        let (r, st) = (replayed.allowance(&o, &s), stored.allowance(&o, &s));
        if r != st {
            report.problem(
                None,
                None,
                format!("allowance of {s} over {o}: stored {st}, replayed {r}"),
            );
        }
    }
}

/// Checks signatures, on several threads for a large block.
fn check_signatures(txs: &[(u32, B256, SignedTx)]) -> Vec<Result<(), ChainError>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if txs.len() < 64 || threads == 1 {
        return txs.iter().map(|(_, _, t)| t.check_signature()).collect();
    }
    let chunk = txs.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = txs
            .chunks(chunk)
            .map(|c| {
                let h = s.spawn(move || {
                    c.iter()
                        .map(|(_, _, t)| t.check_signature())
                        .collect::<Vec<_>>()
                });
                (c.len(), h)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(n, h)| {
                h.join().unwrap_or_else(|_| {
                    vec![Err(ChainError::Other("signature check panicked".into())); n]
                })
            })
            .collect()
    })
}
