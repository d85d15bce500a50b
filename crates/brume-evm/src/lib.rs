//! brume's contracts on an EVM chain: Rust bindings (alloy's `sol!`, from
//! the committed artifacts in `contracts/out/`), their deployment, and
//! their reverts as typed errors.
//!
//! - [`BrumeToken`]: the ERC-20 brume pays in.
//! - [`Settlement`]: the payout account. Requesters approve it; only the
//!   operator calls `collect(payer, amount, anchor)` and
//!   `payout(beneficiaries, amounts, anchor)`; each anchor is usable once,
//!   and every transfer emits it (`Collected`, `Paid`).
//! - [`Stake`]: providers' stake, slashed by the operator with an evidence
//!   hash (`Slashed`), withdrawn after an unbonding delay (and slashable
//!   while it waits).
//!
//! [`EvmChain`] is the operator's side of them over JSON-RPC: EIP-1559
//! transactions, a nonce that survives restarts, confirmation depth,
//! resending of dropped transactions, reverts as [`EvmError`]s.
//!
//! [`EvmWallet`] is an account's own side: its balances, and the
//! transactions only it signs (`approve` to settlement, stake deposits and
//! withdrawals), sent straight to the RPC.
//!
//! The contracts' sources are `contracts/*.sol`; `cargo xtask contracts`
//! rebuilds the artifacts, and `cargo xtask check` fails when they drift.

mod chain;
mod hub;
mod local;
mod wallet;

pub use chain::{AnchoredTransfer, EvmChain, EvmConfig, Landed};
pub use hub::{EvmHub, HubPhase, HubTerms, HubTx, HubView, deploy_hub, hub_error, hub_view};
pub use local::LocalAnvil;
pub use wallet::{AccountView, EvmWallet, account};

pub use alloy::primitives::{Address, B256, U256};
pub use alloy::signers::local::PrivateKeySigner;
pub use alloy::transports::http::reqwest::Url;

use alloy::network::Network;
use alloy::providers::Provider;
use alloy::sol;

sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    BrumeToken,
    "../../contracts/out/BrumeToken.json"
);

sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    Settlement,
    "../../contracts/out/Settlement.json"
);

sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    Stake,
    "../../contracts/out/Stake.json"
);

sol!(
    #[allow(clippy::too_many_arguments)]
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    HubWallet,
    "../../contracts/out/HubWallet.json"
);

/// What a contract call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EvmError {
    /// The settlement contract reverted with one of its errors.
    #[error("the settlement contract refused: {0:?}")]
    Settlement(Settlement::SettlementErrors),
    /// The stake contract reverted with one of its errors.
    #[error("the stake contract refused: {0:?}")]
    Stake(Stake::StakeErrors),
    /// A hub wallet reverted with one of its errors.
    #[error("the hub wallet refused: {0:?}")]
    Hub(HubWallet::HubWalletErrors),
    /// The token reverted (an allowance or a balance too small), directly
    /// or under a settlement or stake call.
    #[error("the token refused: {0:?}")]
    Token(BrumeToken::BrumeTokenErrors),
    /// Any other failure: the RPC, a revert without known data, gas.
    #[error("contract call: {0}")]
    Call(#[from] alloy::contract::Error),
    /// The transaction was sent but its receipt did not come.
    #[error("transaction: {0}")]
    Pending(#[from] alloy::providers::PendingTransactionError),
    /// The transaction landed and failed (it passed its gas estimate, so
    /// the chain changed between the two).
    #[error("transaction {tx_hash} reverted on chain")]
    Reverted { tx_hash: alloy::primitives::B256 },
    /// The transaction was lost and its nonce went to another one.
    #[error("transaction {tx_hash} was replaced: another transaction took its nonce")]
    Replaced { tx_hash: alloy::primitives::B256 },
    /// The transaction could not be signed.
    #[error("signing: {0}")]
    Sign(String),
    /// A log that does not decode as the contract's event.
    #[error("undecodable log: {0}")]
    Log(String),
    /// A local anvil could not be found or started.
    #[error("anvil: {0}")]
    Anvil(String),
}

impl EvmError {
    /// A stable code, for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            EvmError::Anvil(_) => "anvil",
            EvmError::Hub(_) => "hub_revert",
            EvmError::Settlement(_) => "settlement_revert",
            EvmError::Stake(_) => "stake_revert",
            EvmError::Token(_) => "token_revert",
            EvmError::Call(_) => "evm_call",
            EvmError::Pending(_) => "evm_pending",
            EvmError::Reverted { .. } => "evm_reverted",
            EvmError::Replaced { .. } => "evm_replaced",
            EvmError::Sign(_) => "evm_sign",
            EvmError::Log(_) => "evm_log",
        }
    }
}

/// The token's own revert, if `e` is one.
fn token_revert(e: alloy::contract::Error) -> EvmError {
    match e.as_decoded_interface_error::<BrumeToken::BrumeTokenErrors>() {
        Some(x) => EvmError::Token(x),
        None => EvmError::Call(e),
    }
}

/// A token call's error, its revert decoded.
pub fn token_error(e: alloy::contract::Error) -> EvmError {
    token_revert(e)
}

/// A settlement call's error, its revert decoded (the settlement
/// contract's errors, or the token's under it). Contracts' errors share
/// selectors (`NotOperator`), so each call is read with its contract's.
pub fn settlement_error(e: alloy::contract::Error) -> EvmError {
    match e.as_decoded_interface_error::<Settlement::SettlementErrors>() {
        Some(x) => EvmError::Settlement(x),
        None => token_revert(e),
    }
}

/// A stake call's error, its revert decoded (the stake contract's errors,
/// or the token's under it).
pub fn stake_error(e: alloy::contract::Error) -> EvmError {
    match e.as_decoded_interface_error::<Stake::StakeErrors>() {
        Some(x) => EvmError::Stake(x),
        None => token_revert(e),
    }
}

/// A `uint256` as `u128`, saturating.
pub(crate) fn saturate_u256(v: U256) -> u128 {
    chain::saturate(v)
}

/// Where brume's contracts are deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployment {
    pub token: Address,
    pub settlement: Address,
    pub stake: Address,
}

impl Deployment {
    /// The contracts' addresses from a deployment file's text: the JSON
    /// object `brume chain deploy --json` prints (`token`, `settlement`
    /// and `stake`; other keys are ignored).
    pub fn from_json(text: &str) -> Result<Deployment, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let address = |k: &str| {
            v[k].as_str()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| format!("no address \"{k}\""))
        };
        Ok(Deployment {
            token: address("token")?,
            settlement: address("settlement")?,
            stake: address("stake")?,
        })
    }
}

/// What a deployment is made with.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    pub name: String,
    pub symbol: String,
    /// Who receives the whole supply.
    pub holder: Address,
    /// In base units.
    pub supply: U256,
    /// The only key that may collect, pay out and slash.
    pub operator: Address,
    /// Seconds a stake withdrawal waits.
    pub unbonding_delay_s: u64,
}

/// Deploys the token, then the settlement and stake contracts over it,
/// from `provider`'s default sender.
pub async fn deploy<P: Provider<N>, N: Network>(
    provider: &P,
    config: &DeployConfig,
) -> Result<Deployment, EvmError> {
    let token = BrumeToken::deploy(
        provider,
        config.name.clone(),
        config.symbol.clone(),
        config.holder,
        config.supply,
    )
    .await
    .map_err(token_error)?;
    let settlement = Settlement::deploy(provider, *token.address(), config.operator)
        .await
        .map_err(settlement_error)?;
    let stake = Stake::deploy(
        provider,
        *token.address(),
        config.operator,
        config.unbonding_delay_s,
    )
    .await
    .map_err(stake_error)?;
    Ok(Deployment {
        token: *token.address(),
        settlement: *settlement.address(),
        stake: *stake.address(),
    })
}

/// A provider at `rpc` whose transactions `signer` signs: gas estimated,
/// EIP-1559 fees, the chain id fetched, and the nonce read from the chain
/// for every transaction (alloy's default cache counts a nonce for a call
/// whose estimate reverted, and the next send then waits behind the gap).
pub fn signing_provider(
    rpc: alloy::transports::http::reqwest::Url,
    signer: alloy::signers::local::PrivateKeySigner,
) -> alloy::providers::DynProvider {
    alloy::providers::ProviderBuilder::default()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(alloy::network::EthereumWallet::from(signer))
        .connect_http(rpc)
        .erased()
}

/// A provider at `rpc` for reads only.
pub fn read_provider(rpc: alloy::transports::http::reqwest::Url) -> alloy::providers::DynProvider {
    alloy::providers::ProviderBuilder::default()
        .connect_http(rpc)
        .erased()
}

/// The `anvil` binary: on `PATH`, else in the workspace's `node_modules`
/// (`npm ci` installs it there, from `package.json`).
pub fn find_anvil() -> Result<std::path::PathBuf, String> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("anvil"))
            .find(|p| p.is_file())
    });
    let in_repo =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../node_modules/.bin/anvil");
    on_path
        .or_else(|| in_repo.is_file().then_some(in_repo))
        .ok_or_else(|| {
            "anvil is not on PATH nor in node_modules/.bin: run `npm ci` in the repository (it installs @foundry-rs/anvil-linux-amd64), or install Foundry".to_string()
        })
}
