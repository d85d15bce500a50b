//! The bodies of the chain routes (`/v1/chain/...`). Amounts are token base
//! units (10^-18 token) as decimal strings, because they overflow JSON
//! numbers; addresses are `0x` + 40 hex digits (EIP-55 checksummed when the
//! broker writes them); hashes and anchors are `0x` + 64 hex digits.
//!
//! Blocks and transactions (`GET /v1/chain/blocks/{n}`,
//! `GET /v1/chain/tx/{hash}`) are served in `brume-chain`'s own JSON (the
//! chain owns its tx format, as the ledger owns its rows), so they have no
//! type here.

use serde::{Deserialize, Serialize};

/// `GET /v1/chain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChainInfo {
    /// The backend: `dev` (the embedded dev chain).
    pub kind: String,
    pub chain_id: u64,
    /// The latest block's number.
    pub head_block: u64,
    /// The broker's address: the payout account that collects escrowed
    /// charges, and the spender of requesters' escrow and providers' stake.
    pub payout_account: String,
    /// Whether `POST /v1/chain/faucet` mints (devnets only).
    pub faucet: bool,
    pub total_supply: String,
    /// Token decimals (18: 1 token = 10^18 base units).
    pub decimals: u8,
    /// The least stake a provider needs to get work (0: none).
    pub min_stake: String,
    /// Whether accounts that are not addresses (plain API key names) are
    /// refused paid work.
    pub require_allowance: bool,
}

/// `GET /v1/chain/accounts/{address}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccountInfo {
    pub address: String,
    pub balance: String,
    /// The nonce its next transaction must carry.
    pub nonce: u64,
    /// Its allowance to the payout account: a requester's escrow, a
    /// provider's stake (one ERC-20 allowance on the dev chain).
    pub allowance: String,
    /// The spender of that allowance (the payout account).
    pub spender: String,
    /// Charges billed to it and not yet collected, plus reservations of its
    /// work in flight (the broker's escrow view).
    pub outstanding: String,
    /// `allowance - outstanding` (0 if negative): what new work may reserve.
    pub available: String,
}

/// One token movement (transfer, transferFrom, or a faucet mint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransferInfo {
    pub tx_hash: String,
    pub block_number: u64,
    pub index: u32,
    /// The tokens' owner (the zero address for a mint).
    pub from: String,
    pub to: String,
    pub amount: String,
    /// The 32-byte anchor (zero for a mint).
    pub anchor: String,
    /// Who spent `from`'s allowance, for a transferFrom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spender: Option<String>,
}

/// `GET /v1/chain/transfers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransferList {
    pub transfers: Vec<TransferInfo>,
    /// Pass as `after` for the next page of an account's history
    /// (`BLOCK:INDEX`); `null` when this page was not full.
    pub next_after: Option<String>,
}

/// `POST /v1/chain/tx`, JSON form: the canonical encoding of the tx and its
/// 65-byte EIP-191 signature over the tx hash, both `0x` hex. (The body may
/// also be `brume-chain`'s signed-tx JSON, or plain text `0x` + the
/// encoding followed by the signature.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RawTx {
    /// The transaction's encoding: `0x` and hex.
    #[schema(pattern = "^0x(?:[0-9a-fA-F]{2})+$")]
    pub raw: String,
    /// The sender's signature over its hash: `0x` and 130 hex digits.
    #[schema(pattern = "^0x[0-9a-fA-F]{130}$")]
    pub signature: String,
}

/// What `POST /v1/chain/tx` and `POST /v1/chain/faucet` answer: the receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TxReceipt {
    pub tx_hash: String,
    pub block_number: u64,
    pub block_hash: String,
    pub index: u32,
    pub from: String,
    pub nonce: u64,
}

/// `POST /v1/chain/faucet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaucetRequest {
    /// The account to mint to: not the zero address.
    #[schema(pattern = "^0x(?!0{40}$)[0-9a-fA-F]{40}$")]
    pub address: String,
    /// Base units, decimal: 1 to 30 digits, no leading zero.
    #[schema(pattern = "^[1-9][0-9]{0,29}$")]
    pub amount: String,
}
