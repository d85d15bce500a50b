//! An account's own side of brume's contracts: what it holds, and the
//! transactions only it signs (an allowance to `Settlement`, stake
//! deposits and withdrawals). They are signed locally and sent straight
//! to the chain's RPC; no broker relays them.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;

use crate::chain::saturate;
use crate::{BrumeToken, Deployment, EvmError, Stake, Url, stake_error, token_error};

/// Sends a contract call and waits for its receipt: its tx hash, a revert
/// read with `$decode`, or [`EvmError::Reverted`].
macro_rules! land {
    ($call:expr, $decode:expr) => {
        landed(&$call.send().await.map_err($decode)?.get_receipt().await?)
    };
}

/// What an account holds on brume's contracts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub address: Address,
    /// Its token balance.
    pub balance: u128,
    /// How much settlement may still collect from it.
    pub settlement_allowance: u128,
    /// Its bonded stake.
    pub staked: u128,
    /// Stake waiting out the unbonding delay (still slashable).
    pub unbonding: u128,
    /// When the unbonding stake can be withdrawn (unix seconds; 0: none).
    pub unbonding_ready_at: u64,
}

/// Reads `who`'s balances from the chain.
pub async fn account<P: Provider>(
    rpc: &P,
    d: &Deployment,
    who: Address,
) -> Result<AccountView, EvmError> {
    let token = BrumeToken::new(d.token, rpc);
    let stake = Stake::new(d.stake, rpc);
    let balance = token.balanceOf(who).call().await.map_err(token_error)?;
    let allowance = token
        .allowance(who, d.settlement)
        .call()
        .await
        .map_err(token_error)?;
    let staked = stake.staked(who).call().await.map_err(stake_error)?;
    let unbonding = stake.unbonding(who).call().await.map_err(stake_error)?;
    Ok(AccountView {
        address: who,
        balance: saturate(balance),
        settlement_allowance: saturate(allowance),
        staked: saturate(staked),
        unbonding: saturate(unbonding.amount),
        unbonding_ready_at: unbonding.readyAt,
    })
}

/// An account signing its own transactions.
pub struct EvmWallet {
    rpc: DynProvider,
    deployment: Deployment,
    address: Address,
}

impl std::fmt::Debug for EvmWallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmWallet")
            .field("address", &self.address)
            .field("deployment", &self.deployment)
            .finish_non_exhaustive()
    }
}

impl EvmWallet {
    pub fn new(rpc: Url, signer: PrivateKeySigner, deployment: Deployment) -> EvmWallet {
        let address = signer.address();
        EvmWallet {
            rpc: crate::signing_provider(rpc, signer),
            deployment,
            address,
        }
    }

    pub fn address(&self) -> Address {
        self.address
    }

    /// What this account holds.
    pub async fn view(&self) -> Result<AccountView, EvmError> {
        account(&self.rpc, &self.deployment, self.address).await
    }

    /// Sets what settlement may collect from this account (it sets, it
    /// does not add).
    pub async fn approve(&self, amount: u128) -> Result<B256, EvmError> {
        let token = BrumeToken::new(self.deployment.token, &self.rpc);
        let call = token.approve(self.deployment.settlement, U256::from(amount));
        land!(call, token_error)
    }

    /// Deposits `amount` as stake: lets the stake contract take it, then
    /// deposits. Returns both transactions.
    pub async fn stake(&self, amount: u128) -> Result<[B256; 2], EvmError> {
        let token = BrumeToken::new(self.deployment.token, &self.rpc);
        let approve = token.approve(self.deployment.stake, U256::from(amount));
        let approved = land!(approve, token_error)?;
        let stake = Stake::new(self.deployment.stake, &self.rpc);
        let deposit = stake.deposit(U256::from(amount));
        let deposited = land!(deposit, stake_error)?;
        Ok([approved, deposited])
    }

    /// Starts unbonding `amount` of the stake (it joins what already
    /// waits, and the delay starts again).
    pub async fn unstake(&self, amount: u128) -> Result<B256, EvmError> {
        let stake = Stake::new(self.deployment.stake, &self.rpc);
        let call = stake.requestWithdrawal(U256::from(amount));
        land!(call, stake_error)
    }

    /// Withdraws the stake whose unbonding delay is over.
    pub async fn withdraw(&self) -> Result<B256, EvmError> {
        let stake = Stake::new(self.deployment.stake, &self.rpc);
        let call = stake.withdraw();
        land!(call, stake_error)
    }
}

/// A receipt's tx hash, or [`EvmError::Reverted`].
fn landed(receipt: &alloy::rpc::types::TransactionReceipt) -> Result<B256, EvmError> {
    if receipt.status() {
        Ok(receipt.transaction_hash)
    } else {
        Err(EvmError::Reverted {
            tx_hash: receipt.transaction_hash,
        })
    }
}
