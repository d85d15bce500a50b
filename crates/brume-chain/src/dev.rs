//! The dev chain: the default [`Chain`], embedded in the broker and in
//! `brume devnet`, with one SQLite file per chain (`DIR/chain.db`).
//!
//! # Blocks
//!
//! Block 0 is the genesis. It has no transactions; its `tx_root` is the
//! genesis commitment, `keccak256` of:
//!
//! `"brume-dev-gen-v1\n"` (17 bytes) `|| chain_id (u64) || faucet (u8: 0|1)
//! || n (u32) || n × (address (20) || amount (uint256))`, with the
//! allocations sorted by address (an address appears once), integers
//! big-endian. The total supply at genesis is the sum of the allocations.
//!
//! Every later block holds 1 to [`MAX_BLOCK_TXS`] transactions and names
//! its parent. Its hash is `keccak256` of:
//!
//! `"brume-dev-blk-v1\n"` (17 bytes) `|| number (u64) || parent_hash (32)
//! || tx_root (32) || timestamp_ms (u64) || tx_count (u32)`,
//!
//! where `tx_root = keccak256(tx_hash_0 || tx_hash_1 || …)` in block order
//! (see [`crate::tx`] for the tx hash). The timestamps never go back.
//!
//! # Writing
//!
//! - One writer thread ([`brume_sqlite::GroupCommit`]) owns the write
//!   connection and the state (balances,
//!   allowances, nonces, supply, in memory). Calls queue requests to it; it
//!   takes everything queued (up to [`MAX_BLOCK_TXS`] txs), applies each tx
//!   in order (a failing one gets its error and is left out), puts the
//!   accepted ones in as many blocks as needed, writes blocks, txs and the
//!   touched accounts in one SQLite transaction, commits, and only then
//!   answers. There is no timer: a block is whatever queued during the
//!   previous commit, and no empty block is made.
//! - [`send`](Chain::send) signs in the writer, so that nonces are
//!   consecutive; [`submit`](Chain::submit) checks signatures on a blocking
//!   thread before queueing.
//! - WAL, `synchronous=FULL`: an answered tx survives `kill -9` and power
//!   loss. If a commit fails, the writer reloads the state from the tables
//!   and every call of the batch gets the storage error.
//! - Triggers refuse any `UPDATE` or `DELETE` of blocks, txs, the genesis
//!   and the chain's settings. Accounts, allowances and the supply are the
//!   state, rewritten by each block; [`crate::verify`] replays the chain
//!   from genesis and checks them.
//! - Reads run on `spawn_blocking` with pooled connections of their own
//!   (a [`brume_sqlite::ReadPool`]).

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use alloy_primitives::{Address, B256, U256, keccak256};
use brume_identity::Identity;
use brume_sqlite::{GroupCommit, Handler, Options, ReadPool};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::state::State;
use crate::tx::{Call, SignedTx, Tx};
use crate::{Anchor, Chain, ChainError, ChainFuture, MAX_HISTORY_PAGE, Receipt, Transfer, TxPos};

/// The file name of the database in the chain's directory.
pub const DB_FILE: &str = "chain.db";

/// At most this many txs in one block.
pub const MAX_BLOCK_TXS: usize = 4096;

/// The chain id of a dev chain unless configured (`"brum"` in ASCII).
pub const DEFAULT_CHAIN_ID: u64 = 0x6272_756d;

const GENESIS_DOMAIN: &[u8; 17] = b"brume-dev-gen-v1\n";
const BLOCK_DOMAIN: &[u8; 17] = b"brume-dev-blk-v1\n";

/// What a new dev chain starts with. Stored at creation; reopening with a
/// different genesis fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevConfig {
    pub chain_id: u64,
    /// Whether [`Chain::faucet`] mints (devnets only).
    pub faucet: bool,
    /// The genesis allocations: (address, amount in base units).
    pub genesis: Vec<(Address, u128)>,
}

impl DevConfig {
    /// A devnet: the faucet on.
    pub fn devnet(genesis: Vec<(Address, u128)>) -> DevConfig {
        DevConfig {
            chain_id: DEFAULT_CHAIN_ID,
            faucet: true,
            genesis,
        }
    }

    /// A fixed supply: the faucet off.
    pub fn fixed_supply(genesis: Vec<(Address, u128)>) -> DevConfig {
        DevConfig {
            chain_id: DEFAULT_CHAIN_ID,
            faucet: false,
            genesis,
        }
    }

    /// The allocations sorted by address; an address twice, the zero
    /// address or a sum over `u128::MAX` is an error.
    fn sorted_genesis(&self) -> Result<Vec<(Address, u128)>, ChainError> {
        let mut g = self.genesis.clone();
        g.sort_by_key(|(a, _)| *a);
        if let Some(w) = g.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ChainError::Invalid(format!(
                "genesis: {} is allocated twice",
                w[0].0
            )));
        }
        if g.iter().any(|(a, _)| a.is_zero()) {
            return Err(ChainError::Invalid(
                "genesis: an allocation to the zero address".into(),
            ));
        }
        g.iter()
            .try_fold(0u128, |s, (_, v)| s.checked_add(*v))
            .ok_or_else(|| ChainError::Overflow("genesis total supply".into()))?;
        Ok(g)
    }
}

/// The genesis commitment (block 0's `tx_root`); see the module docs.
pub fn genesis_commitment(chain_id: u64, faucet: bool, sorted: &[(Address, u128)]) -> B256 {
    let mut b = Vec::with_capacity(17 + 13 + sorted.len() * 52);
    b.extend_from_slice(GENESIS_DOMAIN);
    b.extend_from_slice(&chain_id.to_be_bytes());
    b.push(u8::from(faucet));
    b.extend_from_slice(&(sorted.len() as u32).to_be_bytes());
    for (a, v) in sorted {
        b.extend_from_slice(a.as_slice());
        b.extend_from_slice(&U256::from(*v).to_be_bytes::<32>());
    }
    keccak256(b)
}

/// `keccak256` of the concatenated tx hashes.
pub fn tx_root(hashes: impl IntoIterator<Item = B256>) -> B256 {
    let mut b = Vec::new();
    for h in hashes {
        b.extend_from_slice(h.as_slice());
    }
    keccak256(b)
}

/// A block header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub number: u64,
    pub hash: B256,
    pub parent_hash: B256,
    pub tx_root: B256,
    pub timestamp_ms: u64,
    pub tx_count: u32,
}

impl Block {
    /// The hash of a header's fields (see the module docs).
    pub fn compute_hash(
        number: u64,
        parent_hash: B256,
        tx_root: B256,
        timestamp_ms: u64,
        tx_count: u32,
    ) -> B256 {
        let mut b = Vec::with_capacity(17 + 8 + 64 + 8 + 4);
        b.extend_from_slice(BLOCK_DOMAIN);
        b.extend_from_slice(&number.to_be_bytes());
        b.extend_from_slice(parent_hash.as_slice());
        b.extend_from_slice(tx_root.as_slice());
        b.extend_from_slice(&timestamp_ms.to_be_bytes());
        b.extend_from_slice(&tx_count.to_be_bytes());
        keccak256(b)
    }

    fn new(
        number: u64,
        parent_hash: B256,
        tx_root: B256,
        timestamp_ms: u64,
        tx_count: u32,
    ) -> Block {
        Block {
            number,
            hash: Block::compute_hash(number, parent_hash, tx_root, timestamp_ms, tx_count),
            parent_hash,
            tx_root,
            timestamp_ms,
            tx_count,
        }
    }
}

/// A transaction as stored, with its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTx {
    pub block_number: u64,
    pub index: u32,
    #[serde(flatten)]
    pub tx: SignedTx,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS chain_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS genesis (
    address BLOB PRIMARY KEY,
    amount TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (
    number INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    parent_hash BLOB NOT NULL,
    tx_root BLOB NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    tx_count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS txs (
    block_number INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    kind INTEGER NOT NULL,
    sender BLOB NOT NULL,
    nonce INTEGER NOT NULL,
    owner BLOB,
    recipient BLOB NOT NULL,
    amount TEXT NOT NULL,
    anchor BLOB,
    signature BLOB NOT NULL,
    PRIMARY KEY (block_number, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS txs_by_hash ON txs(hash);
CREATE INDEX IF NOT EXISTS txs_by_anchor ON txs(anchor);
CREATE INDEX IF NOT EXISTS txs_by_sender ON txs(sender, block_number, idx);
CREATE INDEX IF NOT EXISTS txs_by_recipient ON txs(recipient, block_number, idx);
CREATE INDEX IF NOT EXISTS txs_by_owner ON txs(owner, block_number, idx);
CREATE TABLE IF NOT EXISTS accounts (
    address BLOB PRIMARY KEY,
    balance TEXT NOT NULL,
    nonce INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS allowances (
    owner BLOB NOT NULL,
    spender BLOB NOT NULL,
    amount TEXT NOT NULL,
    PRIMARY KEY (owner, spender)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS token (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    supply TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS blocks_no_update BEFORE UPDATE ON blocks
BEGIN SELECT RAISE(ABORT, 'blocks are immutable'); END;
CREATE TRIGGER IF NOT EXISTS blocks_no_delete BEFORE DELETE ON blocks
BEGIN SELECT RAISE(ABORT, 'blocks are immutable'); END;
CREATE TRIGGER IF NOT EXISTS txs_no_update BEFORE UPDATE ON txs
BEGIN SELECT RAISE(ABORT, 'transactions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS txs_no_delete BEFORE DELETE ON txs
BEGIN SELECT RAISE(ABORT, 'transactions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS genesis_no_update BEFORE UPDATE ON genesis
BEGIN SELECT RAISE(ABORT, 'the genesis is immutable'); END;
CREATE TRIGGER IF NOT EXISTS genesis_no_delete BEFORE DELETE ON genesis
BEGIN SELECT RAISE(ABORT, 'the genesis is immutable'); END;
CREATE TRIGGER IF NOT EXISTS chain_meta_no_update BEFORE UPDATE ON chain_meta
BEGIN SELECT RAISE(ABORT, 'the chain settings are immutable'); END;
CREATE TRIGGER IF NOT EXISTS chain_meta_no_delete BEFORE DELETE ON chain_meta
BEGIN SELECT RAISE(ABORT, 'the chain settings are immutable'); END;
";

pub(crate) const TX_COLS: &str =
    "block_number, idx, hash, kind, sender, nonce, owner, recipient, amount, anchor, signature";

pub(crate) const BLOCK_COLS: &str = "number, hash, parent_hash, tx_root, timestamp_ms, tx_count";

/// The chain's connection settings (beside WAL and `synchronous=FULL`).
fn options() -> Options {
    Options::new().statement_cache(32)
}

/// Opens a connection with the chain's settings.
pub(crate) fn open_conn(path: &Path) -> Result<Connection, ChainError> {
    brume_sqlite::open(path, &options()).map_err(|e| brume_sqlite::Error::from(e).into())
}

// ---- decoding stored values (a tampered value is an error, not a panic) ----

fn int(r: &rusqlite::Row<'_>, i: usize, name: &str) -> Result<u64, String> {
    match r.get_ref(i).map_err(|e| e.to_string())? {
        ValueRef::Integer(n) => u64::try_from(n).map_err(|_| format!("{name} is negative")),
        _ => Err(format!("{name} is not an integer")),
    }
}

fn bytes<'r>(r: &'r rusqlite::Row<'_>, i: usize) -> Result<Option<&'r [u8]>, String> {
    Ok(match r.get_ref(i).map_err(|e| e.to_string())? {
        ValueRef::Blob(b) | ValueRef::Text(b) => Some(b),
        _ => None,
    })
}

fn fixed<const N: usize>(r: &rusqlite::Row<'_>, i: usize, name: &str) -> Result<[u8; N], String> {
    let b = bytes(r, i)?.ok_or_else(|| format!("{name} is missing"))?;
    <[u8; N]>::try_from(b).map_err(|_| format!("{name} is not {N} bytes"))
}

fn opt_fixed<const N: usize>(
    r: &rusqlite::Row<'_>,
    i: usize,
    name: &str,
) -> Result<Option<[u8; N]>, String> {
    match bytes(r, i)? {
        None => Ok(None),
        Some(b) => <[u8; N]>::try_from(b)
            .map(Some)
            .map_err(|_| format!("{name} is not {N} bytes")),
    }
}

fn amount(r: &rusqlite::Row<'_>, i: usize, name: &str) -> Result<u128, String> {
    let b = bytes(r, i)?.ok_or_else(|| format!("{name} is missing"))?;
    std::str::from_utf8(b)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{name} is not a decimal amount"))
}

/// A stored tx row (`TX_COLS`), decoded; `hash` is the stored hash, which
/// the caller compares with `tx.hash` (computed).
pub(crate) struct TxRow {
    pub pos: TxPos,
    pub stored_hash: B256,
    pub tx: SignedTx,
}

pub(crate) fn read_tx_row(r: &rusqlite::Row<'_>, chain_id: u64) -> Result<TxRow, String> {
    let block = int(r, 0, "block_number")?;
    let index = u32::try_from(int(r, 1, "idx")?).map_err(|_| "idx is out of range".to_string())?;
    let stored_hash = B256::from(fixed::<32>(r, 2, "hash")?);
    let kind = int(r, 3, "kind")?;
    let from = Address::from(fixed::<20>(r, 4, "sender")?);
    let nonce = int(r, 5, "nonce")?;
    let owner = opt_fixed::<20>(r, 6, "owner")?.map(Address::from);
    let to = Address::from(fixed::<20>(r, 7, "recipient")?);
    let value = amount(r, 8, "amount")?;
    let anchor = opt_fixed::<32>(r, 9, "anchor")?.map(B256::from);
    let signature = fixed::<65>(r, 10, "signature")?;
    let call = match (kind, owner, anchor) {
        (1, None, Some(anchor)) => Call::Transfer {
            to,
            amount: value,
            anchor,
        },
        (2, None, None) => Call::Approve {
            spender: to,
            amount: value,
        },
        (3, Some(owner), Some(anchor)) => Call::TransferFrom {
            owner,
            to,
            amount: value,
            anchor,
        },
        (4, None, None) => Call::Mint { to, amount: value },
        _ => {
            return Err(format!(
                "kind {kind} does not fit the owner and anchor columns"
            ));
        }
    };
    let tx = Tx {
        chain_id,
        from,
        nonce,
        call,
    };
    Ok(TxRow {
        pos: TxPos { block, index },
        stored_hash,
        tx: SignedTx::from_parts(tx, signature),
    })
}

pub(crate) fn read_block_row(r: &rusqlite::Row<'_>) -> Result<Block, String> {
    Ok(Block {
        number: int(r, 0, "number")?,
        hash: B256::from(fixed::<32>(r, 1, "hash")?),
        parent_hash: B256::from(fixed::<32>(r, 2, "parent_hash")?),
        tx_root: B256::from(fixed::<32>(r, 3, "tx_root")?),
        timestamp_ms: int(r, 4, "timestamp_ms")?,
        tx_count: u32::try_from(int(r, 5, "tx_count")?)
            .map_err(|_| "tx_count is out of range".to_string())?,
    })
}

/// The chain id and faucet flag.
pub(crate) fn read_meta(conn: &Connection) -> Result<(u64, bool), ChainError> {
    let get = |key: &str| -> Result<String, ChainError> {
        conn.query_row("SELECT value FROM chain_meta WHERE key = ?1", [key], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
        .ok_or_else(|| ChainError::Corrupt(format!("no {key} in chain_meta")))
    };
    let chain_id = get("chain_id")?
        .parse()
        .map_err(|_| ChainError::Corrupt("chain_id is not a number".into()))?;
    let faucet = match get("faucet")?.as_str() {
        "1" => true,
        "0" => false,
        v => return Err(ChainError::Corrupt(format!("faucet is {v:?}"))),
    };
    Ok((chain_id, faucet))
}

/// The genesis allocations as stored, in address order.
pub(crate) fn read_genesis(conn: &Connection) -> Result<Vec<(Address, u128)>, ChainError> {
    let mut stmt = conn.prepare("SELECT address, amount FROM genesis ORDER BY address")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let a = fixed::<20>(r, 0, "genesis address").map_err(ChainError::Corrupt)?;
        let v = amount(r, 1, "genesis amount").map_err(ChainError::Corrupt)?;
        out.push((Address::from(a), v));
    }
    Ok(out)
}

/// The state as the tables hold it.
pub(crate) fn read_state(conn: &Connection) -> Result<State, ChainError> {
    let (chain_id, faucet) = read_meta(conn)?;
    let mut s = State::new(chain_id, faucet);
    let corrupt = ChainError::Corrupt;
    s.supply = conn
        .query_row("SELECT supply FROM token WHERE id = 0", [], |r| {
            Ok(amount(r, 0, "supply"))
        })
        .optional()?
        .ok_or_else(|| ChainError::Corrupt("no supply".into()))?
        .map_err(corrupt)?;
    let mut stmt = conn.prepare("SELECT address, balance, nonce FROM accounts")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let a = Address::from(fixed::<20>(r, 0, "account address").map_err(corrupt)?);
        let b = amount(r, 1, "balance").map_err(corrupt)?;
        let n = int(r, 2, "nonce").map_err(corrupt)?;
        s.balances.insert(a, b);
        s.nonces.insert(a, n);
    }
    let mut stmt = conn.prepare("SELECT owner, spender, amount FROM allowances")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let o = Address::from(fixed::<20>(r, 0, "allowance owner").map_err(corrupt)?);
        let sp = Address::from(fixed::<20>(r, 1, "allowance spender").map_err(corrupt)?);
        let v = amount(r, 2, "allowance").map_err(corrupt)?;
        s.allowances.insert((o, sp), v);
    }
    s.take_dirty();
    Ok(s)
}

fn read_head(conn: &Connection) -> Result<Block, ChainError> {
    conn.query_row(
        &format!("SELECT {BLOCK_COLS} FROM blocks ORDER BY number DESC LIMIT 1"),
        [],
        |r| Ok(read_block_row(r)),
    )
    .optional()?
    .ok_or_else(|| ChainError::Corrupt("no blocks".into()))?
    .map_err(ChainError::Corrupt)
}

/// Creates the genesis in an empty database.
fn init_genesis(conn: &mut Connection, config: &DevConfig) -> Result<(), ChainError> {
    let sorted = config.sorted_genesis()?;
    let db = conn.transaction()?;
    db.execute(
        "INSERT INTO chain_meta (key, value) VALUES ('chain_id', ?1), ('faucet', ?2)",
        params![
            config.chain_id.to_string(),
            if config.faucet { "1" } else { "0" }
        ],
    )?;
    let mut supply = 0u128;
    for (a, v) in &sorted {
        db.execute(
            "INSERT INTO genesis (address, amount) VALUES (?1, ?2)",
            params![a.as_slice(), v.to_string()],
        )?;
        db.execute(
            "INSERT INTO accounts (address, balance, nonce) VALUES (?1, ?2, 0)",
            params![a.as_slice(), v.to_string()],
        )?;
        supply += v;
    }
    db.execute(
        "INSERT INTO token (id, supply) VALUES (0, ?1)",
        [supply.to_string()],
    )?;
    let g = Block::new(
        0,
        B256::ZERO,
        genesis_commitment(config.chain_id, config.faucet, &sorted),
        0,
        0,
    );
    insert_block(&db, &g)?;
    db.commit()?;
    Ok(())
}

fn insert_block(conn: &Connection, b: &Block) -> Result<(), ChainError> {
    conn.prepare_cached(
        "INSERT INTO blocks (number, hash, parent_hash, tx_root, timestamp_ms, tx_count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        to_i64(b.number)?,
        b.hash.as_slice(),
        b.parent_hash.as_slice(),
        b.tx_root.as_slice(),
        to_i64(b.timestamp_ms)?,
        b.tx_count
    ])?;
    Ok(())
}

fn insert_tx(conn: &Connection, block: u64, index: u32, t: &SignedTx) -> Result<(), ChainError> {
    let (owner, to, anchor): (Option<Address>, Address, Option<Anchor>) = match t.tx.call {
        Call::Transfer { to, anchor, .. } => (None, to, Some(anchor)),
        Call::Approve { spender, .. } => (None, spender, None),
        Call::TransferFrom {
            owner, to, anchor, ..
        } => (Some(owner), to, Some(anchor)),
        Call::Mint { to, .. } => (None, to, None),
    };
    conn.prepare_cached(
        "INSERT INTO txs (block_number, idx, hash, kind, sender, nonce, owner, recipient, amount,
             anchor, signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        to_i64(block)?,
        index,
        t.hash.as_slice(),
        t.tx.call.kind(),
        t.tx.from.as_slice(),
        to_i64(t.tx.nonce)?,
        owner.as_ref().map(|a| a.as_slice()),
        to.as_slice(),
        t.tx.call.amount().to_string(),
        anchor.as_ref().map(|a| a.as_slice()),
        t.signature.as_slice(),
    ])?;
    Ok(())
}

fn to_i64(n: u64) -> Result<i64, ChainError> {
    i64::try_from(n).map_err(|_| ChainError::Overflow(format!("{n} does not fit SQLite")))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

// ---- the writer ----

enum Op {
    Send {
        signer: Identity,
        calls: Vec<Call>,
    },
    /// Signatures already checked.
    Submit(Vec<SignedTx>),
    Faucet {
        to: Address,
        amount: u128,
    },
}

impl Op {
    fn len(&self) -> usize {
        match self {
            Op::Send { calls, .. } => calls.len(),
            Op::Submit(txs) => txs.len(),
            Op::Faucet { .. } => 1,
        }
    }
}

type Results = Vec<Result<Receipt, ChainError>>;

struct Request {
    op: Op,
    done: oneshot::Sender<Result<Results, ChainError>>,
}

struct Writer {
    conn: Connection,
    state: State,
    head: Block,
}

/// Where an accepted tx went: (block slot in this batch, index).
type Slot = Result<(usize, u32, Address, u64, B256), ChainError>;

/// Puts an accepted tx in the last block of the batch (a new one if full).
fn place(
    blocks: &mut Vec<Vec<SignedTx>>,
    in_batch: &mut HashSet<B256>,
    r: Result<SignedTx, ChainError>,
) -> Slot {
    let t = r?;
    if blocks.last().map_or(0, Vec::len) >= MAX_BLOCK_TXS {
        blocks.push(Vec::new());
    }
    let b = blocks.len() - 1;
    let i = blocks[b].len() as u32;
    in_batch.insert(t.hash);
    blocks[b].push(t);
    Ok((b, i, t.tx.from, t.tx.nonce, t.hash))
}

impl Handler for Writer {
    type Request = Request;

    /// Batches are bounded by txs ([`MAX_BLOCK_TXS`]).
    fn weight(&self, r: &Request) -> usize {
        r.op.len()
    }

    fn handle(&mut self, batch: Vec<Request>) -> ControlFlow<()> {
        if self.commit_batch(batch) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }
}

impl Writer {
    /// Applies, persists and answers one batch. False if the writer cannot
    /// go on (the state could not be reloaded after a failed commit).
    fn commit_batch(&mut self, batch: Vec<Request>) -> bool {
        let mut blocks: Vec<Vec<SignedTx>> = vec![Vec::new()];
        let mut in_batch: HashSet<B256> = HashSet::new();
        let mut slots: Vec<Vec<Slot>> = Vec::with_capacity(batch.len());
        for req in &batch {
            let mut out = Vec::with_capacity(req.op.len());
            match &req.op {
                Op::Send { signer, calls } => {
                    for call in calls {
                        let r = self.sign_and_apply(signer, *call);
                        out.push(place(&mut blocks, &mut in_batch, r));
                    }
                }
                Op::Submit(txs) => {
                    for t in txs {
                        let r = self.apply_signed(t, &in_batch);
                        out.push(place(&mut blocks, &mut in_batch, r));
                    }
                }
                Op::Faucet { to, amount } => {
                    let t = SignedTx::mint(
                        self.state.chain_id,
                        self.state.nonce(&Address::ZERO),
                        *to,
                        *amount,
                    );
                    let r = self.state.apply(&t.tx).map(|()| t);
                    out.push(place(&mut blocks, &mut in_batch, r));
                }
            }
            slots.push(out);
        }
        let headers = if blocks.iter().all(Vec::is_empty) {
            Ok(Vec::new())
        } else {
            self.persist(&blocks)
        };
        let mut go_on = true;
        let headers = match headers {
            Ok(h) => Ok(h),
            Err(e) => {
                match read_state(&self.conn).and_then(|s| Ok((s, read_head(&self.conn)?))) {
                    Ok((s, head)) => {
                        self.state = s;
                        self.head = head;
                    }
                    Err(_) => go_on = false,
                }
                Err(e)
            }
        };
        for (req, out) in batch.into_iter().zip(slots) {
            let answer = match &headers {
                Err(e) => Err(e.clone()),
                Ok(headers) => Ok(out
                    .into_iter()
                    .map(|slot| {
                        let (b, index, from, nonce, tx_hash) = slot?;
                        let block: &Block = &headers[b];
                        Ok(Receipt {
                            tx_hash,
                            block_number: block.number,
                            block_hash: block.hash,
                            index,
                            from,
                            nonce,
                        })
                    })
                    .collect()),
            };
            let _ = req.done.send(answer);
        }
        go_on
    }

    fn sign_and_apply(&mut self, signer: &Identity, call: Call) -> Result<SignedTx, ChainError> {
        if let Call::Mint { .. } = call {
            return Err(ChainError::Invalid(
                "mints come only from the faucet".into(),
            ));
        }
        let from = signer.address();
        let tx = Tx {
            chain_id: self.state.chain_id,
            from,
            nonce: self.state.nonce(&from),
            call,
        };
        self.state.check(&tx)?;
        let signed = tx.sign(signer)?;
        self.state.apply(&signed.tx)?;
        Ok(signed)
    }

    fn apply_signed(
        &mut self,
        t: &SignedTx,
        in_batch: &HashSet<B256>,
    ) -> Result<SignedTx, ChainError> {
        if let Call::Mint { .. } = t.tx.call {
            return Err(ChainError::Invalid(
                "mints come only from the faucet".into(),
            ));
        }
        match self.state.apply(&t.tx) {
            Ok(()) => Ok(*t),
            Err(ChainError::Nonce { expected, got, .. })
                if got < expected && (in_batch.contains(&t.hash) || self.is_known(&t.hash)) =>
            {
                Err(ChainError::AlreadyKnown(t.hash))
            }
            Err(e) => Err(e),
        }
    }

    fn is_known(&self, hash: &B256) -> bool {
        self.conn
            .prepare_cached("SELECT 1 FROM txs WHERE hash = ?1")
            .and_then(|mut s| s.exists([hash.as_slice()]))
            .unwrap_or(false)
    }

    /// Writes the blocks and the touched state in one transaction.
    fn persist(&mut self, blocks: &[Vec<SignedTx>]) -> Result<Vec<Block>, ChainError> {
        let (accounts, allowances) = self.state.take_dirty();
        let db = self.conn.transaction()?;
        let mut parent = self.head;
        let mut headers = Vec::with_capacity(blocks.len());
        let now = now_ms();
        for txs in blocks {
            let block = Block::new(
                parent.number + 1,
                parent.hash,
                tx_root(txs.iter().map(|t| t.hash)),
                now.max(parent.timestamp_ms),
                txs.len() as u32,
            );
            insert_block(&db, &block)?;
            for (i, t) in txs.iter().enumerate() {
                insert_tx(&db, block.number, i as u32, t)?;
            }
            headers.push(block);
            parent = block;
        }
        {
            let mut up = db.prepare_cached(
                "INSERT INTO accounts (address, balance, nonce) VALUES (?1, ?2, ?3)
                 ON CONFLICT (address) DO UPDATE SET balance = excluded.balance,
                     nonce = excluded.nonce",
            )?;
            for a in &accounts {
                up.execute(params![
                    a.as_slice(),
                    self.state.balance(a).to_string(),
                    to_i64(self.state.nonce(a))?
                ])?;
            }
            let mut up = db.prepare_cached(
                "INSERT INTO allowances (owner, spender, amount) VALUES (?1, ?2, ?3)
                 ON CONFLICT (owner, spender) DO UPDATE SET amount = excluded.amount",
            )?;
            for (o, s) in &allowances {
                up.execute(params![
                    o.as_slice(),
                    s.as_slice(),
                    self.state.allowance(o, s).to_string()
                ])?;
            }
            db.execute(
                "UPDATE token SET supply = ?1 WHERE id = 0",
                [self.state.supply.to_string()],
            )?;
        }
        db.commit()?;
        self.head = parent;
        Ok(headers)
    }
}

// ---- the handle ----

struct Inner {
    writer: GroupCommit<Request>,
    reads: ReadPool,
    path: PathBuf,
    chain_id: u64,
    faucet: bool,
}

/// The dev chain; cheap to clone.
#[derive(Clone)]
pub struct DevChain {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DevChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevChain")
            .field("path", &self.inner.path)
            .field("chain_id", &self.inner.chain_id)
            .finish_non_exhaustive()
    }
}

impl DevChain {
    /// Opens `dir/chain.db`, creating the chain from `config` if there is
    /// none; an existing chain must have `config`'s genesis. Blocking.
    pub fn open(dir: &Path, config: &DevConfig) -> Result<DevChain, ChainError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DB_FILE);
        let mut conn = open_conn(&path)?;
        conn.execute_batch(SCHEMA)?;
        let created: bool =
            conn.query_row("SELECT EXISTS (SELECT 1 FROM blocks)", [], |r| r.get(0))?;
        if created {
            let sorted = config.sorted_genesis()?;
            let want = genesis_commitment(config.chain_id, config.faucet, &sorted);
            let have: Option<Vec<u8>> = conn
                .query_row("SELECT tx_root FROM blocks WHERE number = 0", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if have.as_deref() != Some(want.as_slice()) {
                return Err(ChainError::Corrupt(format!(
                    "{} holds a chain with another genesis (chain id, faucet or allocations) \
                     than the one configured",
                    path.display()
                )));
            }
        } else {
            init_genesis(&mut conn, config)?;
        }
        DevChain::start(conn, path)
    }

    /// Opens an existing chain (as `brume chain` does). Blocking.
    pub fn open_existing(dir: &Path) -> Result<DevChain, ChainError> {
        let path = dir.join(DB_FILE);
        if !path.is_file() {
            return Err(ChainError::Storage(format!(
                "no chain at {}",
                path.display()
            )));
        }
        // No schema statement: opening to read changes nothing in the file.
        let conn = open_conn(&path)?;
        DevChain::start(conn, path)
    }

    fn start(conn: Connection, path: PathBuf) -> Result<DevChain, ChainError> {
        let state = read_state(&conn)?;
        let head = read_head(&conn)?;
        let (chain_id, faucet) = (state.chain_id, state.faucet);
        let writer = GroupCommit::start(
            "brume-chain-writer",
            MAX_BLOCK_TXS,
            Writer { conn, state, head },
        )?;
        Ok(DevChain {
            inner: Arc::new(Inner {
                writer,
                reads: ReadPool::new(&path, &options(), ReadPool::DEFAULT_SIZE),
                path,
                chain_id,
                faucet,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the faucet mints.
    pub fn faucet_enabled(&self) -> bool {
        self.inner.faucet
    }

    /// Stops accepting writes; the writer thread ends once the queued ones
    /// are committed. (Dropping every clone does the same.)
    pub fn close(&self) {
        self.inner.writer.close();
    }

    async fn write(&self, op: Op) -> Result<Results, ChainError> {
        let (done, wait) = oneshot::channel();
        self.inner
            .writer
            .send(Request { op, done })
            .map_err(|_| ChainError::Closed)?;
        wait.await.map_err(|_| ChainError::Closed)?
    }

    /// Runs a read on a blocking thread, with a pooled connection.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, u64) -> Result<T, ChainError> + Send + 'static,
    ) -> Result<T, ChainError> {
        let chain_id = self.inner.chain_id;
        self.inner.reads.read(move |conn| f(conn, chain_id)).await
    }

    /// The latest block.
    pub async fn head(&self) -> Result<Block, ChainError> {
        self.read(|conn, _| read_head(conn)).await
    }

    /// Up to `limit` blocks from number `from` on, in order.
    pub async fn blocks(&self, from: u64, limit: usize) -> Result<Vec<Block>, ChainError> {
        self.read(move |conn, _| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {BLOCK_COLS} FROM blocks WHERE number >= ?1 ORDER BY number LIMIT ?2"
            ))?;
            let mut rows = stmt.query(params![to_i64(from)?, limit as i64])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(read_block_row(r).map_err(ChainError::Corrupt)?);
            }
            Ok(out)
        })
        .await
    }

    /// The transactions of block `number`, in order.
    pub async fn block_txs(&self, number: u64) -> Result<Vec<StoredTx>, ChainError> {
        self.read(move |conn, chain_id| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {TX_COLS} FROM txs WHERE block_number = ?1 ORDER BY idx"
            ))?;
            let mut rows = stmt.query([to_i64(number)?])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(stored(r, chain_id)?);
            }
            Ok(out)
        })
        .await
    }

    /// One transaction by hash.
    pub async fn tx(&self, hash: B256) -> Result<Option<StoredTx>, ChainError> {
        self.read(move |conn, chain_id| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {TX_COLS} FROM txs WHERE hash = ?1"))?;
            let mut rows = stmt.query([hash.as_slice()])?;
            match rows.next()? {
                Some(r) => stored(r, chain_id).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    /// Replays the chain from genesis; see [`crate::verify`].
    pub async fn verify(&self) -> Result<crate::verify::VerifyReport, ChainError> {
        self.read(|conn, _| crate::verify::verify(conn)).await
    }

    /// A page of token movements, in chain order, after `after`.
    fn transfers_where(
        &self,
        by: By,
        after: Option<TxPos>,
        limit: usize,
    ) -> ChainFuture<'_, Vec<Transfer>> {
        Box::pin(self.read(move |conn, chain_id| {
            let after = after.map_or((-1i64, -1i64), |p| {
                (
                    i64::try_from(p.block).unwrap_or(i64::MAX),
                    i64::from(p.index),
                )
            });
            // One indexed arm per column, each limited, so that a page
            // costs O(limit) whatever the account's history.
            let arm = |col: &str| {
                format!(
                    "SELECT * FROM (SELECT block_number, idx FROM txs
                     WHERE {col} = ?1 AND kind != 2 AND (block_number, idx) > (?2, ?3)
                     ORDER BY block_number, idx LIMIT ?4)"
                )
            };
            let (key, sel) = match by {
                By::Anchor(a) => (a.to_vec(), arm("anchor")),
                By::Account(a) => (
                    a.to_vec(),
                    format!(
                        "{} UNION {} UNION {}",
                        arm("sender"),
                        arm("recipient"),
                        arm("owner")
                    ),
                ),
            };
            let sql = format!(
                "SELECT {TX_COLS} FROM txs WHERE (block_number, idx) IN ({sel})
                 ORDER BY block_number, idx LIMIT ?4"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![key, after.0, after.1, limit as i64])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let s = stored(r, chain_id)?;
                out.push(transfer_of(&s));
            }
            Ok(out)
        }))
    }
}

/// Which token movements.
#[derive(Debug, Clone, Copy)]
enum By {
    Anchor(Anchor),
    Account(Address),
}

fn stored(r: &rusqlite::Row<'_>, chain_id: u64) -> Result<StoredTx, ChainError> {
    let row = read_tx_row(r, chain_id).map_err(ChainError::Corrupt)?;
    if row.stored_hash != row.tx.hash {
        return Err(ChainError::Corrupt(format!(
            "tx {} of block {}: the stored hash {} is not the tx's hash",
            row.pos.index, row.pos.block, row.stored_hash
        )));
    }
    Ok(StoredTx {
        block_number: row.pos.block,
        index: row.pos.index,
        tx: row.tx,
    })
}

/// The token movement of a transfer, transferFrom or mint.
fn transfer_of(s: &StoredTx) -> Transfer {
    let t = &s.tx.tx;
    let (from, to, amount, anchor, spender) = match t.call {
        Call::Transfer { to, amount, anchor } => (t.from, to, amount, anchor, None),
        Call::TransferFrom {
            owner,
            to,
            amount,
            anchor,
        } => (owner, to, amount, anchor, Some(t.from)),
        Call::Mint { to, amount } => (Address::ZERO, to, amount, B256::ZERO, None),
        // Not selected (kind 2); shown as a zero movement if ever.
        Call::Approve { spender, .. } => (t.from, spender, 0, B256::ZERO, None),
    };
    Transfer {
        tx_hash: s.tx.hash,
        block_number: s.block_number,
        index: s.index,
        from,
        to,
        amount,
        anchor,
        spender,
    }
}

impl Chain for DevChain {
    fn chain_id(&self) -> u64 {
        self.inner.chain_id
    }

    fn block_number(&self) -> ChainFuture<'_, u64> {
        Box::pin(async move { Ok(self.head().await?.number) })
    }

    fn total_supply(&self) -> ChainFuture<'_, u128> {
        Box::pin(self.read(|conn, _| {
            conn.query_row("SELECT supply FROM token WHERE id = 0", [], |r| {
                Ok(amount(r, 0, "supply"))
            })?
            .map_err(ChainError::Corrupt)
        }))
    }

    fn balance_of(&self, account: Address) -> ChainFuture<'_, u128> {
        Box::pin(self.read(move |conn, _| {
            conn.prepare_cached("SELECT balance FROM accounts WHERE address = ?1")?
                .query_row([account.as_slice()], |r| Ok(amount(r, 0, "balance")))
                .optional()?
                .unwrap_or(Ok(0))
                .map_err(ChainError::Corrupt)
        }))
    }

    fn allowance(&self, owner: Address, spender: Address) -> ChainFuture<'_, u128> {
        Box::pin(self.read(move |conn, _| {
            conn.prepare_cached("SELECT amount FROM allowances WHERE owner = ?1 AND spender = ?2")?
                .query_row(params![owner.as_slice(), spender.as_slice()], |r| {
                    Ok(amount(r, 0, "allowance"))
                })
                .optional()?
                .unwrap_or(Ok(0))
                .map_err(ChainError::Corrupt)
        }))
    }

    fn nonce(&self, account: Address) -> ChainFuture<'_, u64> {
        Box::pin(self.read(move |conn, _| {
            conn.prepare_cached("SELECT nonce FROM accounts WHERE address = ?1")?
                .query_row([account.as_slice()], |r| Ok(int(r, 0, "nonce")))
                .optional()?
                .unwrap_or(Ok(0))
                .map_err(ChainError::Corrupt)
        }))
    }

    fn send<'a>(
        &'a self,
        signer: &'a Identity,
        calls: Vec<Call>,
    ) -> ChainFuture<'a, Vec<Result<Receipt, ChainError>>> {
        Box::pin(async move {
            if calls.is_empty() {
                return Ok(Vec::new());
            }
            self.write(Op::Send {
                signer: signer.clone(),
                calls,
            })
            .await
        })
    }

    fn submit(&self, txs: Vec<SignedTx>) -> ChainFuture<'_, Vec<Result<Receipt, ChainError>>> {
        Box::pin(async move {
            if txs.is_empty() {
                return Ok(Vec::new());
            }
            // Recovering signatures is CPU work: off the async runtime.
            let checked = tokio::task::spawn_blocking(move || {
                let errs: Vec<Option<ChainError>> =
                    txs.iter().map(|t| t.check_signature().err()).collect();
                (txs, errs)
            })
            .await
            .map_err(|_| ChainError::Closed)?;
            let (txs, errs) = checked;
            let good: Vec<SignedTx> = txs
                .iter()
                .zip(&errs)
                .filter(|(_, e)| e.is_none())
                .map(|(t, _)| *t)
                .collect();
            let mut landed = if good.is_empty() {
                Vec::new()
            } else {
                self.write(Op::Submit(good)).await?
            }
            .into_iter();
            Ok(errs
                .into_iter()
                .map(|e| match e {
                    Some(e) => Err(e),
                    None => landed
                        .next()
                        .unwrap_or_else(|| Err(ChainError::Other("no result for the tx".into()))),
                })
                .collect())
        })
    }

    fn receipt(&self, tx_hash: B256) -> ChainFuture<'_, Option<Receipt>> {
        Box::pin(self.read(move |conn, _| {
            let mut stmt = conn.prepare_cached(
                "SELECT t.block_number, t.idx, t.sender, t.nonce, b.hash FROM txs t
                 JOIN blocks b ON b.number = t.block_number WHERE t.hash = ?1",
            )?;
            let mut rows = stmt.query([tx_hash.as_slice()])?;
            let Some(r) = rows.next()? else {
                return Ok(None);
            };
            let decode = || -> Result<Receipt, String> {
                Ok(Receipt {
                    tx_hash,
                    block_number: int(r, 0, "block_number")?,
                    index: u32::try_from(int(r, 1, "idx")?)
                        .map_err(|_| "idx is out of range".to_string())?,
                    from: Address::from(fixed::<20>(r, 2, "sender")?),
                    nonce: int(r, 3, "nonce")?,
                    block_hash: B256::from(fixed::<32>(r, 4, "block hash")?),
                })
            };
            decode().map(Some).map_err(ChainError::Corrupt)
        }))
    }

    fn transfers_by_anchor(&self, anchor: Anchor) -> ChainFuture<'_, Vec<Transfer>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut after = None;
            loop {
                let page = self
                    .transfers_where(By::Anchor(anchor), after, MAX_HISTORY_PAGE)
                    .await?;
                let full = page.len() == MAX_HISTORY_PAGE;
                after = page.last().map(Transfer::pos);
                out.extend(page);
                if !full {
                    return Ok(out);
                }
            }
        })
    }

    fn history(
        &self,
        account: Address,
        after: Option<TxPos>,
        limit: usize,
    ) -> ChainFuture<'_, Vec<Transfer>> {
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        self.transfers_where(By::Account(account), after, limit)
    }

    fn faucet(&self, to: Address, amount: u128) -> ChainFuture<'_, Receipt> {
        Box::pin(async move {
            if !self.inner.faucet {
                return Err(ChainError::FaucetDisabled);
            }
            self.write(Op::Faucet { to, amount })
                .await?
                .into_iter()
                .next()
                .unwrap_or_else(|| Err(ChainError::Other("no result for the mint".into())))
        })
    }
}
