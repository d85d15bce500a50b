//! brume's token chain: one trait with ERC-20 semantics, [`Chain`], and the
//! embedded dev chain that implements it, [`DevChain`].
//!
//! # The trait
//!
//! [`Chain`] is what settlement sees of a token: `totalSupply`, `balanceOf`,
//! `allowance`, `approve`, `transfer` and `transferFrom`, where transfers
//! carry a 32-byte [`Anchor`] (the ledger aggregate they settle). It has no
//! dev-chain type in it, so that an EVM backend over JSON-RPC can implement
//! it too; its futures are boxed so that `Arc<dyn Chain>` works.
//!
//! - Amounts are token base units in `u128` (an EVM backend refuses values
//!   over `u128::MAX` with [`ChainError::Other`]). Addresses are
//!   [`Address`].
//! - Writes are signed by an [`Identity`] and sent in batches:
//!   [`send`](Chain::send) takes many calls from one signer, gives them
//!   consecutive nonces in order, and returns one result per call once they
//!   are durable (in a block). A call that would fail (say, an insufficient
//!   balance) gets its typed error, uses no nonce and does not stop the
//!   others. [`transfer`](Chain::transfer), [`approve`](Chain::approve) and
//!   [`transfer_from`](Chain::transfer_from) are one-call conveniences.
//! - Transactions signed elsewhere go through [`submit`](Chain::submit);
//!   there the nonce is the caller's ([`nonce`](Chain::nonce) tells the
//!   next one), and a wrong one is [`ChainError::Nonce`].
//! - Every accepted call returns a [`Receipt`]: tx hash, block number and
//!   block hash, position in the block.
//! - Reconciliation after a crash: [`transfers_by_anchor`](Chain::transfers_by_anchor)
//!   answers "did my transfers with anchor X land?", and
//!   [`receipt`](Chain::receipt) looks one tx up by hash. An audit pages
//!   through an account's [`history`](Chain::history).
//!
//! # The dev chain
//!
//! See [`dev`] for the storage, [`tx`] for the canonical transaction
//! encoding and signatures, and [`verify`] for the replay that checks a
//! chain from genesis.
//!
//! ```no_run
//! # async fn demo() -> Result<(), brume_chain::ChainError> {
//! use std::sync::Arc;
//! use brume_chain::{Chain, DevChain, DevConfig};
//! use brume_identity::Identity;
//!
//! let payer = Identity::random();
//! let config = DevConfig::devnet(vec![(payer.address(), 1_000_000)]);
//! let chain: Arc<dyn Chain> = Arc::new(DevChain::open("chain".as_ref(), &config)?);
//! let to = Identity::random().address();
//! let receipt = chain.transfer(&payer, to, 250, [7u8; 32].into()).await?;
//! assert_eq!(chain.balance_of(to).await?, 250);
//! let landed = chain.transfers_by_anchor([7u8; 32].into()).await?;
//! assert_eq!(landed[0].tx_hash, receipt.tx_hash);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;

pub use alloy_primitives::{Address, B256};
use brume_identity::Identity;
use serde::{Deserialize, Serialize};

pub mod dev;
pub mod settlement;
mod state;
pub mod tx;
pub mod verify;

pub use dev::{DevChain, DevConfig};
pub use settlement::{Collection, DevSettlement, MoveKind, Moved, Movement, Settlement};
pub use tx::{Anchor, Call, DecodeError, SignedTx, Tx};

/// Every error of a chain. [`code`](ChainError::code) is stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("insufficient balance: {account} has {balance}, needs {needed}")]
    InsufficientBalance {
        account: Address,
        balance: u128,
        needed: u128,
    },
    #[error(
        "insufficient allowance: {spender} may spend {allowance} of {owner}'s tokens, needs {needed}"
    )]
    InsufficientAllowance {
        owner: Address,
        spender: Address,
        allowance: u128,
        needed: u128,
    },
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("nonce {got} for {account}: the next nonce is {expected}")]
    Nonce {
        account: Address,
        expected: u64,
        got: u64,
    },
    /// This very transaction is already in a block (a replay).
    #[error("transaction {0} is already on the chain")]
    AlreadyKnown(B256),
    #[error("transaction for chain {got}, this is chain {expected}")]
    WrongChain { expected: u64, got: u64 },
    /// The call is not allowed (a transfer to the zero address, a mint
    /// outside the faucet).
    #[error("invalid transaction: {0}")]
    Invalid(String),
    /// A balance or the total supply would exceed `u128::MAX`.
    #[error("amount overflow: {0}")]
    Overflow(String),
    #[error("the faucet is disabled on this chain (it is only for devnets)")]
    FaucetDisabled,
    /// A settlement operation under an anchor already used.
    #[error("anchor {0} is already used")]
    AnchorUsed(Anchor),
    /// The stored chain does not decode, or is not the one configured.
    #[error("chain data is corrupt: {0}")]
    Corrupt(String),
    #[error("chain storage: {0}")]
    Storage(String),
    #[error("the chain has stopped")]
    Closed,
    #[error("{0}")]
    Other(String),
}

impl ChainError {
    /// Whether the chain refused the operation for good, moving nothing
    /// (a balance or allowance too small, an invalid call), as opposed to
    /// an outcome not known (the node unreachable, the transaction's fate
    /// unknown), which must be looked up again before anything is re-sent.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ChainError::InsufficientBalance { .. }
                | ChainError::InsufficientAllowance { .. }
                | ChainError::Invalid(_)
                | ChainError::Overflow(_)
        )
    }

    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ChainError::InsufficientBalance { .. } => "insufficient_balance",
            ChainError::InsufficientAllowance { .. } => "insufficient_allowance",
            ChainError::BadSignature(_) => "bad_signature",
            ChainError::Nonce { .. } => "bad_nonce",
            ChainError::AlreadyKnown(_) => "already_known",
            ChainError::WrongChain { .. } => "wrong_chain",
            ChainError::Invalid(_) => "invalid_tx",
            ChainError::Overflow(_) => "overflow",
            ChainError::FaucetDisabled => "faucet_disabled",
            ChainError::AnchorUsed(_) => "anchor_used",
            ChainError::Corrupt(_) => "corrupt",
            ChainError::Storage(_) => "storage",
            ChainError::Closed => "closed",
            ChainError::Other(_) => "other",
        }
    }
}

impl From<rusqlite::Error> for ChainError {
    fn from(e: rusqlite::Error) -> ChainError {
        ChainError::Storage(e.to_string())
    }
}

impl From<std::io::Error> for ChainError {
    fn from(e: std::io::Error) -> ChainError {
        ChainError::Storage(e.to_string())
    }
}

impl From<brume_sqlite::Error> for ChainError {
    fn from(e: brume_sqlite::Error) -> ChainError {
        match e {
            brume_sqlite::Error::Closed => ChainError::Closed,
            e => ChainError::Storage(e.to_string()),
        }
    }
}

/// A boxed future (so that `dyn Chain` works).
pub type ChainFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ChainError>> + Send + 'a>>;

/// A transaction's place on the chain; positions order the chain's txs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxPos {
    pub block: u64,
    pub index: u32,
}

/// Proof that a transaction landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub tx_hash: B256,
    pub block_number: u64,
    pub block_hash: B256,
    /// The tx's index in its block.
    pub index: u32,
    pub from: Address,
    pub nonce: u64,
}

impl Receipt {
    pub fn pos(&self) -> TxPos {
        TxPos {
            block: self.block_number,
            index: self.index,
        }
    }
}

/// One movement of tokens: a transfer, a transferFrom or a mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub tx_hash: B256,
    pub block_number: u64,
    pub index: u32,
    /// The tokens' owner (the zero address for a mint).
    pub from: Address,
    pub to: Address,
    #[serde(with = "tx::amount")]
    pub amount: u128,
    /// Zero for a mint.
    pub anchor: Anchor,
    /// The sender of a transferFrom (who spent `from`'s allowance).
    pub spender: Option<Address>,
}

impl Transfer {
    pub fn pos(&self) -> TxPos {
        TxPos {
            block: self.block_number,
            index: self.index,
        }
    }
}

/// The largest page of [`Chain::history`].
pub const MAX_HISTORY_PAGE: usize = 10_000;

/// A token with ERC-20 semantics and anchored transfers. See the crate
/// docs for the rules every implementation follows.
pub trait Chain: Send + Sync {
    /// The chain id every transaction names.
    fn chain_id(&self) -> u64;

    /// The number of the latest block.
    fn block_number(&self) -> ChainFuture<'_, u64>;

    /// ERC-20 `totalSupply()`.
    fn total_supply(&self) -> ChainFuture<'_, u128>;

    /// ERC-20 `balanceOf(account)`.
    fn balance_of(&self, account: Address) -> ChainFuture<'_, u128>;

    /// ERC-20 `allowance(owner, spender)`.
    fn allowance(&self, owner: Address, spender: Address) -> ChainFuture<'_, u128>;

    /// The nonce of `account`'s next transaction (its count of txs so far).
    fn nonce(&self, account: Address) -> ChainFuture<'_, u64>;

    /// Signs `calls` with `signer`, with consecutive nonces in order, and
    /// returns once the accepted ones are durable: one result per call. An
    /// error of the whole (storage, closed) is the outer error.
    fn send<'a>(
        &'a self,
        signer: &'a Identity,
        calls: Vec<Call>,
    ) -> ChainFuture<'a, Vec<Result<Receipt, ChainError>>>;

    /// Submits transactions signed elsewhere, in order; one result each.
    fn submit(&self, txs: Vec<SignedTx>) -> ChainFuture<'_, Vec<Result<Receipt, ChainError>>>;

    /// The receipt of a landed transaction.
    fn receipt(&self, tx_hash: B256) -> ChainFuture<'_, Option<Receipt>>;

    /// Every transfer (and transferFrom) that carries `anchor`, in chain
    /// order.
    fn transfers_by_anchor(&self, anchor: Anchor) -> ChainFuture<'_, Vec<Transfer>>;

    /// The transfers, transferFroms and mints that involve `account` (as
    /// owner, recipient or spender), in chain order, after `after`; at most
    /// `limit` (1 to [`MAX_HISTORY_PAGE`]). Genesis allocations are not
    /// transfers.
    fn history(
        &self,
        account: Address,
        after: Option<TxPos>,
        limit: usize,
    ) -> ChainFuture<'_, Vec<Transfer>>;

    /// Mints `amount` to `to`: only on a devnet, else
    /// [`ChainError::FaucetDisabled`].
    fn faucet(&self, to: Address, amount: u128) -> ChainFuture<'_, Receipt>;

    /// ERC-20 `transfer(to, amount)` with an anchor.
    fn transfer<'a>(
        &'a self,
        signer: &'a Identity,
        to: Address,
        amount: u128,
        anchor: Anchor,
    ) -> ChainFuture<'a, Receipt> {
        one(self.send(signer, vec![Call::Transfer { to, amount, anchor }]))
    }

    /// ERC-20 `approve(spender, amount)`.
    fn approve<'a>(
        &'a self,
        signer: &'a Identity,
        spender: Address,
        amount: u128,
    ) -> ChainFuture<'a, Receipt> {
        one(self.send(signer, vec![Call::Approve { spender, amount }]))
    }

    /// ERC-20 `transferFrom(owner, to, amount)` by `signer`, with an anchor.
    fn transfer_from<'a>(
        &'a self,
        signer: &'a Identity,
        owner: Address,
        to: Address,
        amount: u128,
        anchor: Anchor,
    ) -> ChainFuture<'a, Receipt> {
        one(self.send(
            signer,
            vec![Call::TransferFrom {
                owner,
                to,
                amount,
                anchor,
            }],
        ))
    }
}

/// The one result of a one-call batch.
fn one(batch: ChainFuture<'_, Vec<Result<Receipt, ChainError>>>) -> ChainFuture<'_, Receipt> {
    Box::pin(async move {
        batch
            .await?
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(ChainError::Other("no result for the call".into())))
    })
}
