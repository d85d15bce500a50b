//! A broker's hub wallet (`contracts/HubWallet.sol`, the SONM seed's):
//! its deployment, what anyone can read of it ([`HubView`], what a
//! provider checks before joining), and the hub's and the DAO's calls
//! ([`EvmHub`]), each signed locally and sent to the RPC.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;

use crate::{EvmError, HubWallet, Url, saturate_u256};

/// A hub wallet's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubPhase {
    Created,
    Registered,
    Idle,
    Suspected,
    Punished,
}

impl HubPhase {
    fn from_u8(v: u8) -> Option<HubPhase> {
        Some(match v {
            0 => HubPhase::Created,
            1 => HubPhase::Registered,
            2 => HubPhase::Idle,
            3 => HubPhase::Suspected,
            4 => HubPhase::Punished,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HubPhase::Created => "created",
            HubPhase::Registered => "registered",
            HubPhase::Idle => "idle",
            HubPhase::Suspected => "suspected",
            HubPhase::Punished => "punished",
        }
    }
}

/// A hub wallet's terms, fixed when it is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubTerms {
    /// The broker's operator: registers, pays, makes payday, withdraws.
    pub hub: Address,
    /// May suspect, rehabilitate, ban and claim.
    pub dao: Address,
    /// Share of each payout locked until payday (ppm).
    pub lock_fee_ppm: u32,
    /// Share of the bond and locks paid to the DAO at payday (ppm).
    pub payday_fee_ppm: u32,
    pub payout_period_s: u64,
    /// How late a payday may be before it counts as missed.
    pub payday_grace_s: u64,
    /// How long the DAO must wait after suspecting before it may ban.
    pub suspect_period_s: u64,
    /// How long a banned hub's tokens stay frozen before the DAO claims.
    pub dao_freeze_period_s: u64,
}

const DAY: u64 = 86_400;

impl HubTerms {
    /// The seed's terms: a 30 % lock fee, 30-day payout periods, 0.5 % to
    /// the DAO at payday, 120 days of suspicion before a ban; and brume's
    /// own: a week's grace for payday, 30 days' freeze of what a ban
    /// expropriates.
    pub fn seed(hub: Address, dao: Address) -> HubTerms {
        HubTerms {
            hub,
            dao,
            lock_fee_ppm: 300_000,
            payday_fee_ppm: 5_000,
            payout_period_s: 30 * DAY,
            payday_grace_s: 7 * DAY,
            suspect_period_s: 120 * DAY,
            dao_freeze_period_s: 30 * DAY,
        }
    }
}

/// Deploys a hub wallet over `token` from `provider`'s default sender.
pub async fn deploy_hub<P: Provider>(
    provider: &P,
    token: Address,
    terms: &HubTerms,
) -> Result<Address, EvmError> {
    let wallet = HubWallet::deploy(
        provider,
        token,
        terms.hub,
        terms.dao,
        terms.lock_fee_ppm,
        terms.payday_fee_ppm,
        terms.payout_period_s,
        terms.payday_grace_s,
        terms.suspect_period_s,
        terms.dao_freeze_period_s,
    )
    .await
    .map_err(hub_error)?;
    Ok(*wallet.address())
}

/// A hub call's error, its revert decoded (the wallet's errors, or the
/// token's under it).
pub fn hub_error(e: alloy::contract::Error) -> EvmError {
    match e.as_decoded_interface_error::<HubWallet::HubWalletErrors>() {
        Some(x) => EvmError::Hub(x),
        None => crate::token_error(e),
    }
}

/// What anyone can read of a hub wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubView {
    pub wallet: Address,
    pub hub: Address,
    pub dao: Address,
    pub phase: HubPhase,
    /// Tokens the wallet holds.
    pub balance: u128,
    /// Frozen at registration.
    pub bond: u128,
    /// This period's lock fees.
    pub locked: u128,
    pub registered_at: u64,
    /// When this period's payday may be made (registered + period).
    pub payday_due: u64,
    /// The payday is past its grace and not made.
    pub payday_overdue: bool,
    pub paydays: u32,
    /// Paydays made after their grace.
    pub missed_paydays: u32,
}

/// Reads a hub wallet.
pub async fn hub_view<P: Provider>(provider: &P, wallet: Address) -> Result<HubView, EvmError> {
    let w = HubWallet::new(wallet, provider);
    let phase = w.phase().call().await.map_err(hub_error)?;
    let token = w.token().call().await.map_err(hub_error)?;
    let balance = crate::BrumeToken::new(token, provider)
        .balanceOf(wallet)
        .call()
        .await
        .map_err(crate::token_error)?;
    let registered_at = w.registeredAt().call().await.map_err(hub_error)?;
    let period = w.payoutPeriod().call().await.map_err(hub_error)?;
    Ok(HubView {
        wallet,
        hub: w.hub().call().await.map_err(hub_error)?,
        dao: w.dao().call().await.map_err(hub_error)?,
        phase: HubPhase::from_u8(phase)
            .ok_or_else(|| EvmError::Log(format!("unknown hub phase {phase}")))?,
        balance: saturate_u256(balance),
        bond: saturate_u256(w.bond().call().await.map_err(hub_error)?),
        locked: saturate_u256(w.locked().call().await.map_err(hub_error)?),
        registered_at,
        payday_due: registered_at.saturating_add(period),
        payday_overdue: w.paydayOverdue().call().await.map_err(hub_error)?,
        paydays: w.paydays().call().await.map_err(hub_error)?,
        missed_paydays: w.missedPaydays().call().await.map_err(hub_error)?,
    })
}

/// A landed hub-wallet call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubTx {
    pub tx_hash: B256,
    pub gas_used: u64,
}

/// The hub's or the DAO's key on a hub wallet.
pub struct EvmHub {
    rpc: DynProvider,
    wallet: Address,
}

impl std::fmt::Debug for EvmHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmHub")
            .field("wallet", &self.wallet)
            .finish_non_exhaustive()
    }
}

/// Sends a wallet call and waits for its receipt; a revert is typed.
macro_rules! hub_call {
    ($call:expr) => {{
        let receipt = $call.send().await.map_err(hub_error)?.get_receipt().await?;
        if receipt.status() {
            Ok(HubTx {
                tx_hash: receipt.transaction_hash,
                gas_used: receipt.gas_used,
            })
        } else {
            Err(EvmError::Reverted {
                tx_hash: receipt.transaction_hash,
            })
        }
    }};
}

impl EvmHub {
    pub fn new(rpc: Url, signer: PrivateKeySigner, wallet: Address) -> EvmHub {
        EvmHub {
            rpc: crate::signing_provider(rpc, signer),
            wallet,
        }
    }

    pub async fn view(&self) -> Result<HubView, EvmError> {
        hub_view(&self.rpc, self.wallet).await
    }

    fn contract(&self) -> HubWallet::HubWalletInstance<&DynProvider> {
        HubWallet::new(self.wallet, &self.rpc)
    }

    /// Hub: freezes `bond` and opens a payout period.
    pub async fn register(&self, bond: u128) -> Result<HubTx, EvmError> {
        hub_call!(self.contract().register(U256::from(bond)))
    }

    /// Hub: pays a provider (locking the lock fee until payday).
    pub async fn pay(&self, to: Address, amount: u128) -> Result<HubTx, EvmError> {
        hub_call!(self.contract().transfer(to, U256::from(amount)))
    }

    /// Hub: the period's payday (the DAO's fee; the wallet goes Idle).
    pub async fn payday(&self) -> Result<HubTx, EvmError> {
        hub_call!(self.contract().payday())
    }

    /// Hub, Idle: takes `amount` back.
    pub async fn withdraw(&self, amount: u128) -> Result<HubTx, EvmError> {
        hub_call!(self.contract().withdraw(U256::from(amount)))
    }

    /// DAO: suspects a Registered hub.
    pub async fn suspect(&self) -> Result<HubTx, EvmError> {
        hub_call!(self.contract().suspect())
    }

    /// DAO: clears a suspected hub.
    pub async fn rehabilitate(&self) -> Result<HubTx, EvmError> {
        hub_call!(self.contract().rehabilitate())
    }

    /// DAO: bans a hub suspected for the whole suspect period.
    pub async fn ban(&self) -> Result<HubTx, EvmError> {
        hub_call!(self.contract().ban())
    }

    /// DAO: claims a banned hub's tokens after the freeze.
    pub async fn claim(&self) -> Result<HubTx, EvmError> {
        hub_call!(self.contract().claim())
    }
}
