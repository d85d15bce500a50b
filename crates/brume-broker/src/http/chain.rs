//! The chain routes (`/v1/chain/...`): public reads, signed transactions
//! (the signature is the auth: no API key), and the devnet faucet.

use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use brume_api::ErrorCode;
use brume_api::chain::{
    AccountInfo, ChainInfo, FaucetRequest, RawTx, TransferInfo, TransferList, TxReceipt,
};
use brume_chain::{
    Address, B256, Call, ChainError, MAX_HISTORY_PAGE, Receipt, SignedTx, Transfer, Tx, TxPos,
};
use bytes::Bytes;
use serde::Deserialize;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;

use super::{Fail, Res, Sh};
use crate::Shared;

/// The largest `POST /v1/chain/tx` body.
const MAX_TX_BODY: usize = 64 << 10;

pub(crate) fn routes() -> OpenApiRouter<Arc<Shared>> {
    OpenApiRouter::new()
        .routes(routes!(info))
        .routes(routes!(block))
        .routes(routes!(tx))
        .routes(routes!(submit).layer(DefaultBodyLimit::max(MAX_TX_BODY)))
        .routes(routes!(account))
        .routes(routes!(account_transfers))
        .routes(routes!(anchor_transfers))
        .routes(routes!(hub_proof))
        .routes(routes!(faucet).layer(DefaultBodyLimit::max(MAX_TX_BODY)))
}

/// A chain error as a response: the typed errors keep their codes. (By
/// value, so that it reads `.map_err(chain_fail)`.)
#[allow(clippy::needless_pass_by_value)]
pub(crate) fn chain_fail(e: ChainError) -> Fail {
    let code = match &e {
        ChainError::InsufficientBalance { .. } => ErrorCode::InsufficientBalance,
        ChainError::InsufficientAllowance { .. } => ErrorCode::InsufficientAllowance,
        ChainError::BadSignature(_) => ErrorCode::BadSignature,
        ChainError::Nonce { .. } => ErrorCode::BadNonce,
        ChainError::AlreadyKnown(_) => ErrorCode::AlreadyKnown,
        ChainError::WrongChain { .. }
        | ChainError::Invalid(_)
        | ChainError::Overflow(_)
        | ChainError::AnchorUsed(_) => ErrorCode::InvalidTx,
        ChainError::FaucetDisabled => ErrorCode::FaucetDisabled,
        ChainError::Corrupt(_)
        | ChainError::Storage(_)
        | ChainError::Closed
        | ChainError::Other(_) => {
            tracing::error!(code = e.code(), "chain: {e}");
            ErrorCode::Internal
        }
    };
    Fail::new(code, e.to_string())
}

fn bad(what: &str, msg: impl std::fmt::Display) -> Fail {
    Fail::new(ErrorCode::InvalidRequest, format!("{what}: {msg}"))
}

/// The largest integer the API takes in a path or a query: 2^53 - 1, the
/// last that every JSON reader (and `double`) holds exactly.
pub(super) const MAX_SAFE: u64 = (1 << 53) - 1;

fn address(s: &str) -> Res<Address> {
    s.strip_prefix("0x")
        .filter(|h| h.len() == 40)
        .and_then(|_| s.parse().ok())
        .ok_or_else(|| bad("address", format!("{s:?} is not 0x + 40 hex digits")))
}

fn hex_bytes(what: &str, s: &str) -> Res<Vec<u8>> {
    hex::decode(s.trim().strip_prefix("0x").unwrap_or(s.trim()))
        .map_err(|e| bad(what, format!("not hex: {e}")))
}

fn receipt(r: Receipt) -> TxReceipt {
    TxReceipt {
        tx_hash: r.tx_hash.to_string(),
        block_number: r.block_number,
        block_hash: r.block_hash.to_string(),
        index: r.index,
        from: r.from.to_string(),
        nonce: r.nonce,
    }
}

fn transfer(t: &Transfer) -> TransferInfo {
    TransferInfo {
        tx_hash: t.tx_hash.to_string(),
        block_number: t.block_number,
        index: t.index,
        from: t.from.to_string(),
        to: t.to.to_string(),
        amount: t.amount.to_string(),
        anchor: t.anchor.to_string(),
        spender: t.spender.map(|s| s.to_string()),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ProofQuery {
    /// 32 fresh bytes of the asker's: `0x` and 64 hex digits.
    #[param(pattern = "^0x[0-9a-fA-F]{64}$")]
    nonce: String,
}

/// `GET /v1/hub/proof?nonce=0x…`: the hub key signs the asker's nonce.
#[utoipa::path(get, path = "/v1/hub/proof", tag = "chain", params(ProofQuery),
    responses((status = 200, description = "The hub wallet's signature over the nonce", body = brume_api::rest::HubProof)))]
async fn hub_proof(
    State(shared): Sh,
    query: Result<Query<ProofQuery>, QueryRejection>,
) -> Res<axum::Json<brume_api::rest::HubProof>> {
    let Query(q) = query.map_err(|e| bad("query", e.body_text()))?;
    let hub = shared.hub.as_ref().ok_or_else(|| {
        Fail::new(
            ErrorCode::NotFound,
            "this broker has no hub wallet ([broker.chain] hub_wallet)",
        )
    })?;
    let nonce = q
        .nonce
        .strip_prefix("0x")
        .map(|h| hex_bytes("nonce", h))
        .transpose()?
        .unwrap_or_default();
    if nonce.len() != 32 {
        return Err(bad("nonce", "expected 0x + 64 hex digits (32 fresh bytes)"));
    }
    let proof = hub
        .prove(&format!("0x{}", hex::encode(&nonce)))
        .map_err(chain_fail)?;
    Ok(axum::Json(proof))
}

fn kind(shared: &Shared) -> &'static str {
    match shared.chain.kind() {
        crate::chain::ChainKind::Dev => "dev",
        crate::chain::ChainKind::Evm => "evm",
    }
}

/// The dev chain's token, or the error an EVM chain's broker gives for
/// what its accounts do on the chain itself.
fn dev_token<'a>(shared: &'a Shared, what: &str) -> Res<&'a Arc<dyn brume_chain::Chain>> {
    shared.chain.chain().ok_or_else(|| {
        Fail::new(
            ErrorCode::NotFound,
            format!(
                "the {} chain backend does not serve {what}: use the chain's JSON-RPC \
                 (`brume wallet --rpc URL --deployment FILE`)",
                kind(shared)
            ),
        )
    })
}

fn evm_fail(e: &brume_evm::EvmError) -> Fail {
    chain_fail(ChainError::Other(format!("{}: {e}", e.code())))
}

#[utoipa::path(get, path = "/v1/chain", tag = "chain", operation_id = "chain_info",
    responses((status = 200, description = "The token chain this broker settles on", body = ChainInfo)))]
async fn info(State(shared): Sh) -> Res<axum::Json<ChainInfo>> {
    let (head_block, total_supply) = match (shared.chain.chain(), shared.chain.evm()) {
        (Some(chain), _) => (
            chain.block_number().await.map_err(chain_fail)?,
            chain.total_supply().await.map_err(chain_fail)?,
        ),
        (None, Some(evm)) => (
            evm.block_number().await.map_err(|e| evm_fail(&e))?,
            evm.total_supply().await.map_err(|e| evm_fail(&e))?,
        ),
        (None, None) => return Err(chain_fail(ChainError::Closed)),
    };
    Ok(axum::Json(ChainInfo {
        kind: kind(&shared).into(),
        chain_id: shared.chain.chain_id(),
        head_block,
        payout_account: shared.chain.settlement().payout_account().to_string(),
        faucet: shared.chain.faucet_enabled(),
        total_supply: total_supply.to_string(),
        decimals: 18,
        min_stake: shared.config.chain.min_stake.to_string(),
        require_allowance: shared.config.chain.require_allowance,
    }))
}

fn no_blocks(shared: &Shared) -> Fail {
    Fail::new(
        ErrorCode::NotFound,
        format!("the {} chain backend does not serve blocks", kind(shared)),
    )
}

/// A block header and its transactions, in `brume-chain`'s JSON.
#[utoipa::path(get, path = "/v1/chain/blocks/{n}", tag = "chain",
    params(("n" = u64, Path, maximum = 9007199254740991_i64, description = "The block number")),
    responses((status = 200, description = "The dev chain's block header and its transactions", body = Object)))]
async fn block(State(shared): Sh, Path(n): Path<String>) -> Res<axum::Json<serde_json::Value>> {
    let n: u64 = n.parse().ok().filter(|n| *n <= MAX_SAFE).ok_or_else(|| {
        bad(
            "block",
            format!("{n:?} is not a block number (0 to 2^53-1)"),
        )
    })?;
    let dev = shared.chain.dev().ok_or_else(|| no_blocks(&shared))?;
    let header = dev
        .blocks(n, 1)
        .await
        .map_err(chain_fail)?
        .into_iter()
        .next()
        .filter(|b| b.number == n)
        .ok_or_else(|| Fail::new(ErrorCode::NotFound, format!("no block {n}")))?;
    let txs = dev.block_txs(n).await.map_err(chain_fail)?;
    let mut v =
        serde_json::to_value(header).map_err(|e| Fail::new(ErrorCode::Internal, e.to_string()))?;
    if let serde_json::Value::Object(m) = &mut v {
        m.insert(
            "txs".into(),
            serde_json::to_value(txs).map_err(|e| Fail::new(ErrorCode::Internal, e.to_string()))?,
        );
    }
    Ok(axum::Json(v))
}

/// One transaction with its place, in `brume-chain`'s JSON.
#[utoipa::path(get, path = "/v1/chain/tx/{hash}", tag = "chain",
    params(("hash" = String, Path, pattern = "^0x[0-9a-fA-F]{64}$", description = "The transaction hash")),
    responses((status = 200, description = "The dev chain's transaction and its receipt", body = Object)))]
async fn tx(State(shared): Sh, Path(hash): Path<String>) -> Res<axum::Json<serde_json::Value>> {
    let h: B256 = hash
        .parse()
        .map_err(|_| bad("hash", format!("{hash:?} is not 0x + 64 hex digits")))?;
    let dev = shared.chain.dev().ok_or_else(|| no_blocks(&shared))?;
    let stored = dev
        .tx(h)
        .await
        .map_err(chain_fail)?
        .ok_or_else(|| Fail::new(ErrorCode::NotFound, format!("no transaction {h}")))?;
    serde_json::to_value(stored)
        .map(axum::Json)
        .map_err(|e| Fail::new(ErrorCode::Internal, e.to_string()))
}

#[utoipa::path(get, path = "/v1/chain/accounts/{address}", tag = "chain",
    params(("address" = String, Path, pattern = "^0x[0-9a-fA-F]{40}$", description = "The account's address")),
    responses((status = 200, description = "Balance, nonce, and the allowance to this broker", body = AccountInfo)))]
async fn account(State(shared): Sh, Path(a): Path<String>) -> Res<axum::Json<AccountInfo>> {
    let owner = address(&a)?;
    let settlement = shared.chain.settlement();
    let payout = settlement.payout_account();
    let balance = settlement.balance_of(owner).await.map_err(chain_fail)?;
    let nonce = match (shared.chain.chain(), shared.chain.evm()) {
        (Some(chain), _) => chain.nonce(owner).await.map_err(chain_fail)?,
        (None, Some(evm)) => evm.nonce_of(owner).await.map_err(|e| evm_fail(&e))?,
        (None, None) => return Err(chain_fail(ChainError::Closed)),
    };
    let allowance = settlement.collectable(owner).await.map_err(chain_fail)?;
    let escrow = shared.ledger.escrow();
    escrow.set_allowance(&owner.to_string(), allowance);
    let view = escrow.view(&owner.to_string());
    let outstanding = view.outstanding.saturating_add(view.reserved);
    Ok(axum::Json(AccountInfo {
        address: owner.to_string(),
        balance: balance.to_string(),
        nonce,
        allowance: allowance.to_string(),
        spender: payout.to_string(),
        outstanding: outstanding.to_string(),
        available: allowance.saturating_sub(outstanding).to_string(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// `BLOCK:INDEX` of the last transfer seen (the previous page's
    /// `next_after`).
    #[param(pattern = "^[0-9]{1,15}:[0-9]{1,9}$")]
    after: Option<String>,
    /// At most this many (default 100, at most 10000).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    limit: Option<u32>,
}

/// `BLOCK:INDEX`, as `HistoryQuery::after`'s pattern has it.
fn tx_pos(a: &str) -> Res<TxPos> {
    let digits =
        |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    a.split_once(':')
        .filter(|(b, i)| digits(b, 15) && digits(i, 9))
        .and_then(|(b, i)| {
            Some(TxPos {
                block: b.parse().ok()?,
                index: i.parse().ok()?,
            })
        })
        .ok_or_else(|| bad("after", format!("{a:?} is not BLOCK:INDEX")))
}

/// An account's transfers, transferFroms and mints, oldest first.
#[utoipa::path(get, path = "/v1/chain/accounts/{address}/transfers", tag = "chain",
    params(("address" = String, Path, pattern = "^0x[0-9a-fA-F]{40}$", description = "The account's address"), HistoryQuery),
    responses((status = 200, description = "The account's transfers after `after`; `next_after` when the page is full", body = TransferList)))]
async fn account_transfers(
    State(shared): Sh,
    Path(a): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Res<axum::Json<TransferList>> {
    let Query(q) = query.map_err(|e| bad("query", e.body_text()))?;
    let account = address(&a)?;
    let chain = dev_token(&shared, "transfer history")?;
    let after = q.after.as_deref().map(tx_pos).transpose()?;
    let limit = (q.limit.unwrap_or(100) as usize).clamp(1, MAX_HISTORY_PAGE);
    let list = chain
        .history(account, after, limit)
        .await
        .map_err(chain_fail)?;
    let next_after = (list.len() == limit)
        .then(|| {
            list.last()
                .map(|t| format!("{}:{}", t.block_number, t.index))
        })
        .flatten();
    Ok(axum::Json(TransferList {
        transfers: list.iter().map(transfer).collect(),
        next_after,
    }))
}

/// Every transfer that carries an anchor (a settlement batch's root).
#[utoipa::path(get, path = "/v1/chain/anchors/{anchor}/transfers", tag = "chain",
    params(("anchor" = String, Path, pattern = "^0x[0-9a-fA-F]{64}$", description = "The anchor")),
    responses((status = 200, description = "The transfers with that anchor", body = TransferList)))]
async fn anchor_transfers(
    State(shared): Sh,
    Path(anchor): Path<String>,
) -> Res<axum::Json<TransferList>> {
    let chain = dev_token(&shared, "transfer history")?;
    let anchor: B256 = anchor
        .strip_prefix("0x")
        .filter(|h| h.len() == 64)
        .and_then(|_| anchor.parse().ok())
        .ok_or_else(|| bad("anchor", "expected 0x + 64 hex digits"))?;
    let list = chain
        .transfers_by_anchor(anchor)
        .await
        .map_err(chain_fail)?;
    Ok(axum::Json(TransferList {
        transfers: list.iter().map(transfer).collect(),
        next_after: None,
    }))
}

/// The body of `POST /v1/chain/tx`: `RawTx` JSON, `brume-chain`'s signed
/// tx JSON, or `0x` hex text of the encoding followed by the signature.
fn parse_tx(body: &[u8]) -> Res<SignedTx> {
    let text = std::str::from_utf8(body).map_err(|_| bad("tx", "not UTF-8"))?;
    let text = text.trim();
    if text.starts_with('{') {
        if let Ok(raw) = serde_json::from_str::<RawTx>(text) {
            let encoding = hex_bytes("raw", &raw.raw)?;
            let sig = hex_bytes("signature", &raw.signature)?;
            return from_parts(&encoding, &sig);
        }
        return serde_json::from_str::<SignedTx>(text).map_err(|e| bad("tx", e));
    }
    let bytes = hex_bytes("tx", text)?;
    if bytes.len() < 65 {
        return Err(bad(
            "tx",
            "too short for an encoding and a 65-byte signature",
        ));
    }
    let (encoding, sig) = bytes.split_at(bytes.len() - 65);
    from_parts(encoding, sig)
}

fn from_parts(encoding: &[u8], sig: &[u8]) -> Res<SignedTx> {
    let tx = Tx::decode(encoding).map_err(|e| bad("raw", e))?;
    let sig: [u8; 65] = sig
        .try_into()
        .map_err(|_| bad("signature", "a signature is 65 bytes"))?;
    Ok(SignedTx::from_parts(tx, sig))
}

#[utoipa::path(post, path = "/v1/chain/tx", tag = "chain",
    request_body(content = RawTx, description = "A signed transaction: `RawTx` JSON, or `0x` hex of the encoding and signature (text/plain)"),
    responses((status = 200, description = "Included: its receipt", body = TxReceipt)))]
async fn submit(
    State(shared): Sh,
    body: Result<Bytes, BytesRejection>,
) -> Res<axum::Json<TxReceipt>> {
    let body = body.map_err(|e| bad("tx", e.body_text()))?;
    let signed = parse_tx(&body)?;
    let result = dev_token(&shared, "transactions")?
        .submit(vec![signed])
        .await
        .map_err(chain_fail)?
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(ChainError::Other("no result for the tx".into())))
        .map_err(chain_fail)?;
    // An approval to the payout account is an escrow or a stake: take it
    // into account now rather than at the next read.
    if let Call::Approve { spender, amount } = signed.tx.call
        && spender == shared.identity.address()
    {
        let owner = signed.tx.from.to_string();
        shared.ledger.escrow().set_allowance(&owner, amount);
        shared.with_sched(|s, after| {
            let ids: Vec<u64> = s
                .providers
                .iter()
                .filter(|(_, p)| p.address == owner)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                s.set_stake(id, amount, after);
            }
        });
    }
    tracing::info!(tx = %result.tx_hash, from = %signed.tx.from, call = signed.tx.call.name(), "chain tx submitted");
    Ok(axum::Json(receipt(result)))
}

#[utoipa::path(post, path = "/v1/chain/faucet", tag = "chain", request_body = FaucetRequest,
    responses((status = 200, description = "Minted (devnets only)", body = TxReceipt)))]
async fn faucet(
    State(shared): Sh,
    body: Result<Bytes, BytesRejection>,
) -> Res<axum::Json<TxReceipt>> {
    if !shared.chain.faucet_enabled() {
        return Err(chain_fail(ChainError::FaucetDisabled));
    }
    let body = body.map_err(|e| bad("body", e.body_text()))?;
    let req: FaucetRequest = serde_json::from_slice(&body).map_err(|e| bad("body", e))?;
    let to = address(&req.address)?;
    let amount: u128 = Some(req.amount.as_str())
        .filter(|a| {
            (1..=30).contains(&a.len())
                && !a.starts_with('0')
                && a.bytes().all(|b| b.is_ascii_digit())
        })
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| {
            bad(
                "amount",
                "a whole number of base units from 1, at most 30 digits",
            )
        })?;
    let r = dev_token(&shared, "a faucet")?
        .faucet(to, amount)
        .await
        .map_err(chain_fail)?;
    Ok(axum::Json(receipt(r)))
}
