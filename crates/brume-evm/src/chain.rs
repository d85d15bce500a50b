//! [`EvmChain`]: the operator's side of brume's contracts over JSON-RPC.
//!
//! Every write goes through one pipeline ([`EvmChain::send`]):
//!
//! 1. **Estimate.** `eth_estimateGas` runs the call first, so a revert
//!    comes back as a typed error ([`EvmError::Settlement`],
//!    [`EvmError::Stake`], [`EvmError::Token`]) and no nonce is spent on it.
//! 2. **Sign.** An EIP-1559 transaction, signed locally with the operator's
//!    key, under the nonce lock. The nonce is the chain's pending count
//!    the first time (so a restarted broker picks up where the chain is),
//!    then counted locally; a send the node refuses for its nonce
//!    re-reads the chain's count and signs again.
//! 3. **Wait.** The receipt is polled until it is `confirmations` blocks
//!    deep. A transaction the node no longer knows (dropped from its pool,
//!    or un-mined by a reorg) is sent again, the same signed bytes, so it
//!    can only land once. A receipt with a failed status is
//!    [`EvmError::Reverted`].
//!
//! Reads (balances, allowances, stake, the anchors' events) are plain
//! calls and `eth_getLogs`.

use std::time::Duration;

use alloy::eips::eip2718::Encodable2718 as _;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder as _, TransactionBuilder as _};
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider as _};
use alloy::rpc::types::{Filter, TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent};
use tokio::sync::Mutex;

use crate::{
    BrumeToken, Deployment, EvmError, Settlement, Stake, settlement_error, stake_error, token_error,
};

/// Blocks per log query of [`brume_chain::Settlement::movements`].
const LOG_WINDOW: u64 = 10_000;

/// How an [`EvmChain`] reaches its chain.
#[derive(Debug, Clone)]
pub struct EvmConfig {
    /// The JSON-RPC endpoint.
    pub rpc: alloy::transports::http::reqwest::Url,
    /// Where brume's contracts are.
    pub deployment: Deployment,
    /// How deep a receipt must be before a write counts as done (1: in a
    /// block).
    pub confirmations: u64,
    /// How often a pending transaction is looked at.
    pub poll: Duration,
    /// How many looks a transaction may be missing from the node before
    /// it is sent again.
    pub resend_after: u32,
}

impl EvmConfig {
    /// Defaults for a public chain: 2 confirmations, a look a second, a
    /// resend after 30 looks without the transaction.
    pub fn new(rpc: alloy::transports::http::reqwest::Url, deployment: Deployment) -> EvmConfig {
        EvmConfig {
            rpc,
            deployment,
            confirmations: 2,
            poll: Duration::from_secs(1),
            resend_after: 30,
        }
    }
}

/// A landed, confirmed write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    pub tx_hash: B256,
    pub block: u64,
    pub gas_used: u64,
    /// How often the signed transaction was sent again after the node lost
    /// it.
    pub resends: u32,
}

/// One token movement the settlement contract logged under an anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchoredTransfer {
    /// The payer of a `Collected`, the beneficiary of a `Paid`.
    pub party: Address,
    pub amount: u128,
    pub anchor: B256,
    pub tx_hash: Option<B256>,
    pub block: Option<u64>,
}

/// The operator's handle on brume's contracts.
pub struct EvmChain {
    rpc: DynProvider,
    wallet: EthereumWallet,
    operator: Address,
    chain_id: u64,
    config: EvmConfig,
    /// The next nonce to sign with; `None` until read from the chain.
    nonce: Mutex<Option<u64>>,
}

impl std::fmt::Debug for EvmChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmChain")
            .field("operator", &self.operator)
            .field("chain_id", &self.chain_id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EvmChain {
    /// Connects to `config.rpc` as `operator` and reads its chain id.
    pub async fn connect(config: EvmConfig, operator: PrivateKeySigner) -> Result<Self, EvmError> {
        let rpc = crate::read_provider(config.rpc.clone());
        let chain_id = rpc.get_chain_id().await.map_err(rpc_error)?;
        Ok(EvmChain {
            rpc,
            operator: operator.address(),
            wallet: EthereumWallet::from(operator),
            chain_id,
            config,
            nonce: Mutex::new(None),
        })
    }

    /// Connects for reads only (an audit): it holds a throwaway key, so
    /// any write is the contracts' `NotOperator` refusal.
    pub async fn reader(config: EvmConfig) -> Result<Self, EvmError> {
        EvmChain::connect(config, PrivateKeySigner::random()).await
    }

    pub fn operator(&self) -> Address {
        self.operator
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    pub fn deployment(&self) -> Deployment {
        self.config.deployment
    }

    pub fn config(&self) -> &EvmConfig {
        &self.config
    }

    /// The RPC, for reads this type has no method for.
    pub fn rpc(&self) -> &DynProvider {
        &self.rpc
    }

    /// Pulls `amount` from `payer` (who approved the settlement contract)
    /// into the payout account, under `anchor`.
    pub async fn collect(
        &self,
        payer: Address,
        amount: u128,
        anchor: B256,
    ) -> Result<Landed, EvmError> {
        let call = Settlement::collectCall {
            payer,
            amount: U256::from(amount),
            anchor,
        };
        self.send(self.config.deployment.settlement, call, settlement_error)
            .await
    }

    /// Pays every `(beneficiary, amount)` from the payout account in one
    /// transaction, under `anchor`.
    pub async fn payout(
        &self,
        payments: &[(Address, u128)],
        anchor: B256,
    ) -> Result<Landed, EvmError> {
        let call = Settlement::payoutCall {
            beneficiaries: payments.iter().map(|(to, _)| *to).collect(),
            amounts: payments.iter().map(|(_, a)| U256::from(*a)).collect(),
            anchor,
        };
        self.send(self.config.deployment.settlement, call, settlement_error)
            .await
    }

    /// Takes `amount` of `provider`'s stake to the operator, with the
    /// proof's hash as evidence.
    pub async fn slash(
        &self,
        provider: Address,
        amount: u128,
        evidence: B256,
    ) -> Result<Landed, EvmError> {
        let call = Stake::slashCall {
            provider,
            amount: U256::from(amount),
            evidence,
        };
        self.send(self.config.deployment.stake, call, stake_error)
            .await
    }

    /// Sends `amount` tokens from the operator to `to` (funding, tests).
    pub async fn transfer(&self, to: Address, amount: u128) -> Result<Landed, EvmError> {
        let call = BrumeToken::transferCall {
            to,
            value: U256::from(amount),
        };
        self.send(self.config.deployment.token, call, token_error)
            .await
    }

    /// Sends `wei` of the chain's own currency from the operator to `to`
    /// (a devnet funding an account's gas).
    pub async fn send_value(&self, to: Address, wei: U256) -> Result<Landed, EvmError> {
        let request = TransactionRequest::default()
            .with_from(self.operator)
            .with_to(to)
            .with_value(wei);
        self.send_request(request).await
    }

    /// The latest block's number.
    pub async fn block_number(&self) -> Result<u64, EvmError> {
        self.rpc.get_block_number().await.map_err(rpc_error)
    }

    /// `account`'s transaction count (its next nonce, mined).
    pub async fn nonce_of(&self, account: Address) -> Result<u64, EvmError> {
        self.rpc
            .get_transaction_count(account)
            .await
            .map_err(rpc_error)
    }

    /// The token's total supply.
    pub async fn total_supply(&self) -> Result<u128, EvmError> {
        let token = BrumeToken::new(self.config.deployment.token, &self.rpc);
        let supply = token.totalSupply().call().await.map_err(token_error)?;
        Ok(saturate(supply))
    }

    /// `balanceOf(account)` on the token.
    pub async fn balance_of(&self, account: Address) -> Result<u128, EvmError> {
        let token = BrumeToken::new(self.config.deployment.token, &self.rpc);
        let balance = token.balanceOf(account).call().await.map_err(token_error)?;
        Ok(saturate(balance))
    }

    /// How much `owner` lets the settlement contract collect.
    pub async fn allowance(&self, owner: Address) -> Result<u128, EvmError> {
        let token = BrumeToken::new(self.config.deployment.token, &self.rpc);
        let allowance = token
            .allowance(owner, self.config.deployment.settlement)
            .call()
            .await
            .map_err(token_error)?;
        Ok(saturate(allowance))
    }

    /// `provider`'s stake that can still be slashed (bonded and
    /// unbonding).
    pub async fn slashable(&self, provider: Address) -> Result<u128, EvmError> {
        let stake = Stake::new(self.config.deployment.stake, &self.rpc);
        let amount = stake
            .slashable(provider)
            .call()
            .await
            .map_err(stake_error)?;
        Ok(saturate(amount))
    }

    /// Whether the settlement contract has used `anchor`.
    pub async fn anchor_used(&self, anchor: B256) -> Result<bool, EvmError> {
        let settlement = Settlement::new(self.config.deployment.settlement, &self.rpc);
        settlement
            .used(anchor)
            .call()
            .await
            .map_err(settlement_error)
    }

    /// Every `Collected` under `anchor`, in chain order.
    pub async fn collected(&self, anchor: B256) -> Result<Vec<AnchoredTransfer>, EvmError> {
        self.anchored(anchor, |e: &Settlement::Collected| {
            (e.payer, e.amount, e.anchor)
        })
        .await
    }

    /// Every `Paid` under `anchor`, in chain order.
    pub async fn paid(&self, anchor: B256) -> Result<Vec<AnchoredTransfer>, EvmError> {
        self.anchored(anchor, |e: &Settlement::Paid| {
            (e.beneficiary, e.amount, e.anchor)
        })
        .await
    }

    /// The settlement contract's `Collected` and `Paid` events after
    /// `after`, in chain order, at most `limit`; read in windows of
    /// [`LOG_WINDOW`] blocks (public nodes bound a log query's range).
    async fn movements_after(
        &self,
        after: Option<brume_chain::TxPos>,
        limit: usize,
    ) -> Result<Vec<brume_chain::Movement>, EvmError> {
        use brume_chain::{MoveKind, Movement, TxPos};
        let head = self.rpc.get_block_number().await.map_err(rpc_error)?;
        let mut from = after.map_or(0, |p| p.block);
        let mut out: Vec<Movement> = Vec::new();
        while from <= head && out.len() < limit {
            let to = from.saturating_add(LOG_WINDOW - 1).min(head);
            let filter = Filter::new()
                .address(self.config.deployment.settlement)
                .event_signature(vec![
                    Settlement::Collected::SIGNATURE_HASH,
                    Settlement::Paid::SIGNATURE_HASH,
                ])
                .from_block(from)
                .to_block(to);
            let mut logs = self.rpc.get_logs(&filter).await.map_err(rpc_error)?;
            logs.sort_by_key(|l| (l.block_number, l.log_index));
            for log in logs {
                let pos = TxPos {
                    block: log.block_number.unwrap_or_default(),
                    index: u32::try_from(log.log_index.unwrap_or_default()).unwrap_or(u32::MAX),
                };
                if after.is_some_and(|a| (pos.block, pos.index) <= (a.block, a.index)) {
                    continue;
                }
                let (kind, party, amount, anchor) =
                    if log.topic0() == Some(&Settlement::Collected::SIGNATURE_HASH) {
                        let e = log
                            .log_decode::<Settlement::Collected>()
                            .map_err(|e| EvmError::Log(e.to_string()))?;
                        let d = e.inner.data;
                        (MoveKind::Collected, d.payer, d.amount, d.anchor)
                    } else {
                        let e = log
                            .log_decode::<Settlement::Paid>()
                            .map_err(|e| EvmError::Log(e.to_string()))?;
                        let d = e.inner.data;
                        (MoveKind::Paid, d.beneficiary, d.amount, d.anchor)
                    };
                out.push(Movement {
                    kind,
                    party,
                    amount: saturate(amount),
                    anchor,
                    tx_hash: log.transaction_hash.unwrap_or_default(),
                    pos,
                });
                if out.len() == limit {
                    break;
                }
            }
            from = to + 1;
        }
        Ok(out)
    }

    /// The settlement contract's `E` events whose second topic (both
    /// events index the anchor there) is `anchor`.
    async fn anchored<E: SolEvent>(
        &self,
        anchor: B256,
        fields: fn(&E) -> (Address, U256, B256),
    ) -> Result<Vec<AnchoredTransfer>, EvmError> {
        let filter = Filter::new()
            .address(self.config.deployment.settlement)
            .event_signature(E::SIGNATURE_HASH)
            .topic2(anchor)
            .from_block(0);
        let logs = self.rpc.get_logs(&filter).await.map_err(rpc_error)?;
        logs.iter()
            .map(|log| {
                let event = log
                    .log_decode::<E>()
                    .map_err(|e| EvmError::Log(e.to_string()))?;
                let (party, amount, anchor) = fields(&event.inner.data);
                Ok(AnchoredTransfer {
                    party,
                    amount: saturate(amount),
                    anchor,
                    tx_hash: log.transaction_hash,
                    block: log.block_number,
                })
            })
            .collect()
    }

    /// Estimates, signs, sends and waits for `call` to `to`, its revert
    /// read with `decode`.
    async fn send<C: SolCall>(
        &self,
        to: Address,
        call: C,
        decode: fn(alloy::contract::Error) -> EvmError,
    ) -> Result<Landed, EvmError> {
        let request = TransactionRequest::default()
            .with_from(self.operator)
            .with_to(to)
            .with_input(Bytes::from(call.abi_encode()));
        self.estimated(request, decode).await
    }

    /// [`EvmChain::send`] of a request with no call to decode a revert of.
    async fn send_request(&self, request: TransactionRequest) -> Result<Landed, EvmError> {
        self.estimated(request, EvmError::Call).await
    }

    /// Estimates (a revert read with `decode`), prices, signs, sends and
    /// waits for `request`.
    async fn estimated(
        &self,
        request: TransactionRequest,
        decode: fn(alloy::contract::Error) -> EvmError,
    ) -> Result<Landed, EvmError> {
        // A revert shows here, before any nonce is taken.
        let gas = self
            .rpc
            .estimate_gas(request.clone())
            .await
            .map_err(|e| decode(alloy::contract::Error::TransportError(e)))?;
        let fees = self.rpc.estimate_eip1559_fees().await.map_err(rpc_error)?;
        let request = request
            .with_chain_id(self.chain_id)
            // Headroom over the estimate: a payout's gas depends on which
            // beneficiaries already hold tokens.
            .with_gas_limit(gas.saturating_add(gas / 5))
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        let (tx_hash, raw) = self.sign_and_send(request).await?;
        self.wait(tx_hash, &raw).await
    }

    /// Signs `request` with the next nonce and sends it; the nonce counts
    /// only once the node took the transaction.
    async fn sign_and_send(&self, request: TransactionRequest) -> Result<(B256, Bytes), EvmError> {
        let mut next = self.nonce.lock().await;
        let mut resynced = false;
        loop {
            let nonce = match *next {
                Some(n) => n,
                None => self.chain_nonce().await?,
            };
            let envelope = request
                .clone()
                .with_nonce(nonce)
                .build(&self.wallet)
                .await
                .map_err(|e| EvmError::Sign(e.to_string()))?;
            let raw = Bytes::from(envelope.encoded_2718());
            let tx_hash = *envelope.tx_hash();
            match self.rpc.send_raw_transaction(&raw).await {
                Ok(_) => {
                    *next = Some(nonce + 1);
                    return Ok((tx_hash, raw));
                }
                Err(e) if is_already_known(&e.to_string()) => {
                    *next = Some(nonce + 1);
                    return Ok((tx_hash, raw));
                }
                Err(e) if !resynced && is_nonce_error(&e.to_string()) => {
                    // Another process (or this one before a restart) moved
                    // the account on: read where the chain is and sign again.
                    tracing::warn!(nonce, error = %e, "nonce refused, re-reading the chain's");
                    *next = None;
                    resynced = true;
                }
                Err(e) => {
                    // Taken or not, the chain decides the next nonce.
                    *next = None;
                    return Err(rpc_error(e));
                }
            }
        }
    }

    /// The operator's pending transaction count.
    async fn chain_nonce(&self) -> Result<u64, EvmError> {
        self.rpc
            .get_transaction_count(self.operator)
            .pending()
            .await
            .map_err(rpc_error)
    }

    /// Waits until `tx_hash` is `confirmations` deep, sending `raw` again
    /// whenever the node has lost it.
    async fn wait(&self, tx_hash: B256, raw: &Bytes) -> Result<Landed, EvmError> {
        let mut missing = 0u32;
        let mut resends = 0u32;
        let mut interval = tokio::time::interval(self.config.poll);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Some(receipt) = self
                .rpc
                .get_transaction_receipt(tx_hash)
                .await
                .map_err(rpc_error)?
            {
                missing = 0;
                if let Some(landed) = self.confirmed(&receipt, resends).await? {
                    return Ok(landed);
                }
                continue;
            }
            let known = self
                .rpc
                .get_transaction_by_hash(tx_hash)
                .await
                .map_err(rpc_error)?
                .is_some();
            if known {
                missing = 0;
                continue;
            }
            missing += 1;
            if missing >= self.config.resend_after {
                missing = 0;
                match self.rpc.send_raw_transaction(raw).await {
                    Ok(_) => {
                        resends += 1;
                        tracing::warn!(%tx_hash, resends, "transaction was dropped; sent again");
                    }
                    Err(e) if is_already_known(&e.to_string()) => {}
                    // It landed meanwhile, or another transaction took its
                    // nonce.
                    Err(e) if is_nonce_error(&e.to_string()) => {
                        if self
                            .rpc
                            .get_transaction_receipt(tx_hash)
                            .await
                            .map_err(rpc_error)?
                            .is_none()
                        {
                            return Err(EvmError::Replaced { tx_hash });
                        }
                    }
                    Err(e) => return Err(rpc_error(e)),
                }
            }
        }
    }

    /// `Some` once `receipt` is deep enough (and still there).
    async fn confirmed(
        &self,
        receipt: &TransactionReceipt,
        resends: u32,
    ) -> Result<Option<Landed>, EvmError> {
        let Some(block) = receipt.block_number else {
            return Ok(None);
        };
        let head = self.rpc.get_block_number().await.map_err(rpc_error)?;
        if head + 1 < block + self.config.confirmations.max(1) {
            return Ok(None);
        }
        if !receipt.status() {
            return Err(EvmError::Reverted {
                tx_hash: receipt.transaction_hash,
            });
        }
        Ok(Some(Landed {
            tx_hash: receipt.transaction_hash,
            block,
            gas_used: receipt.gas_used,
            resends,
        }))
    }
}

/// A transport error as an [`EvmError`].
fn rpc_error(e: alloy::transports::TransportError) -> EvmError {
    EvmError::Call(alloy::contract::Error::TransportError(e))
}

/// Whether a node refused a transaction for its nonce (geth, anvil,
/// reth and erigon say "nonce too low" / "nonce too high").
fn is_nonce_error(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("nonce too low") || m.contains("nonce too high")
}

/// Whether a node already holds these very bytes in its pool.
fn is_already_known(message: &str) -> bool {
    message.to_ascii_lowercase().contains("already known")
}

/// brume's amounts are u128; a token amount above that is read as the
/// most there can be.
pub(crate) fn saturate(v: U256) -> u128 {
    u128::try_from(v).unwrap_or(u128::MAX)
}

/// The `Settlement` operations on the contract: the payout account is its
/// balance, the operator signs, and the contract itself refuses a used
/// anchor.
impl brume_chain::Settlement for EvmChain {
    fn payout_account(&self) -> Address {
        self.config.deployment.settlement
    }

    fn balance_of(&self, account: Address) -> brume_chain::ChainFuture<'_, u128> {
        Box::pin(async move {
            EvmChain::balance_of(self, account)
                .await
                .map_err(chain_error)
        })
    }

    fn collectable(&self, owner: Address) -> brume_chain::ChainFuture<'_, u128> {
        Box::pin(async move { self.allowance(owner).await.map_err(chain_error) })
    }

    fn collect(
        &self,
        payer: Address,
        amount: u128,
        anchor: B256,
    ) -> brume_chain::ChainFuture<'_, B256> {
        Box::pin(async move {
            EvmChain::collect(self, payer, amount, anchor)
                .await
                .map(|l| l.tx_hash)
                .map_err(|e| match chain_error(e) {
                    // The token's error does not name the owner; it is the payer.
                    brume_chain::ChainError::InsufficientAllowance {
                        spender,
                        allowance,
                        needed,
                        ..
                    } => brume_chain::ChainError::InsufficientAllowance {
                        owner: payer,
                        spender,
                        allowance,
                        needed,
                    },
                    other => other,
                })
        })
    }

    fn payout<'a>(
        &'a self,
        payments: &'a [(Address, u128)],
        anchor: B256,
    ) -> brume_chain::ChainFuture<'a, Vec<B256>> {
        Box::pin(async move {
            EvmChain::payout(self, payments, anchor)
                .await
                .map(|l| vec![l.tx_hash; payments.len()])
                .map_err(chain_error)
        })
    }

    fn movements(
        &self,
        after: Option<brume_chain::TxPos>,
        limit: usize,
    ) -> brume_chain::ChainFuture<'_, Vec<brume_chain::Movement>> {
        Box::pin(async move {
            self.movements_after(after, limit)
                .await
                .map_err(chain_error)
        })
    }

    fn stake_of(&self, provider: Address) -> brume_chain::ChainFuture<'_, u128> {
        Box::pin(async move { self.slashable(provider).await.map_err(chain_error) })
    }

    fn slash(
        &self,
        provider: Address,
        amount: u128,
        evidence: B256,
    ) -> brume_chain::ChainFuture<'_, B256> {
        Box::pin(async move {
            EvmChain::slash(self, provider, amount, evidence)
                .await
                .map(|l| l.tx_hash)
                .map_err(chain_error)
        })
    }

    fn anchored(&self, anchor: B256) -> brume_chain::ChainFuture<'_, Vec<brume_chain::Moved>> {
        Box::pin(async move {
            let account = self.config.deployment.settlement;
            let mut moved: Vec<(Option<u64>, brume_chain::Moved)> = Vec::new();
            for t in self.collected(anchor).await.map_err(chain_error)? {
                moved.push((t.block, moved_of(&t, t.party, account)));
            }
            for t in self.paid(anchor).await.map_err(chain_error)? {
                moved.push((t.block, moved_of(&t, account, t.party)));
            }
            // An anchor is used by one transaction, so its events share a
            // block; collected and paid never mix under one anchor.
            moved.sort_by_key(|(block, _)| *block);
            Ok(moved.into_iter().map(|(_, m)| m).collect())
        })
    }
}

fn moved_of(t: &AnchoredTransfer, from: Address, to: Address) -> brume_chain::Moved {
    brume_chain::Moved {
        from,
        to,
        amount: t.amount,
        tx_hash: t.tx_hash.unwrap_or_default(),
    }
}

/// An EVM failure in the chain's terms: the token's and the contract's
/// refusals keep their meaning, the rest is named by its code.
fn chain_error(e: EvmError) -> brume_chain::ChainError {
    use crate::BrumeToken::BrumeTokenErrors as T;
    use crate::Settlement::SettlementErrors as S;
    use brume_chain::ChainError as C;
    match e {
        // The token's error does not name the owner: `collect` fills it in.
        EvmError::Token(T::ERC20InsufficientAllowance(x)) => C::InsufficientAllowance {
            owner: Address::ZERO,
            spender: x.spender,
            allowance: saturate(x.allowance),
            needed: saturate(x.needed),
        },
        EvmError::Token(T::ERC20InsufficientBalance(x)) => C::InsufficientBalance {
            account: x.sender,
            balance: saturate(x.balance),
            needed: saturate(x.needed),
        },
        EvmError::Settlement(S::AnchorUsed(x)) => C::AnchorUsed(x.anchor),
        EvmError::Settlement(S::EmptyPayout(_)) => C::Invalid("an empty payout".into()),
        other => C::Other(format!("{}: {other}", other.code())),
    }
}
