//! The broker's chain: configuration (`[broker.chain]`), opening the
//! backend, provider stake, and slashing.
//!
//! The broker's own identity (`broker.key`) is the **payout account**: it
//! collects escrowed charges and is the spender of every allowance the
//! broker uses. Requesters' escrow and providers' stake are both ERC-20
//! allowances to it (one allowance per owner on the dev chain: an account
//! that is both requester and provider shares it between the two uses).
//!
//! Other code sees the chain as `Arc<dyn Chain>` ([`ChainHandle::chain`]),
//! so an EVM backend can replace the dev chain (`kind = "dev"`, the only
//! kind so far) without touching settlement.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use brume_chain::{Address, Chain, ChainError, DevChain, DevConfig, DevSettlement, Settlement};
use brume_identity::Identity;

/// The `[broker.chain]` section.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainConfig {
    /// The backend.
    pub kind: ChainKind,
    /// The dev chain's id (default: `brume_chain::dev::DEFAULT_CHAIN_ID`).
    pub chain_id: Option<u64>,
    /// Genesis allocations of a new dev chain. Changing them (or `faucet`)
    /// later makes the existing chain refuse to open.
    pub genesis: Vec<GenesisAlloc>,
    /// Whether `POST /v1/chain/faucet` mints (devnets only).
    pub faucet: bool,
    /// Refuse paid work to accounts that are not addresses (plain API key
    /// names, which can't escrow). Default: on; off runs such accounts'
    /// work unescrowed (a broker among people who trust each other).
    pub require_allowance: bool,
    /// The least stake (allowance to the payout account, base units) a
    /// provider needs to get work.
    #[serde(with = "amount")]
    pub min_stake: u128,
    /// How often providers' stakes are read again, in milliseconds.
    pub stake_refresh_ms: u64,
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            kind: ChainKind::Dev,
            chain_id: None,
            genesis: Vec::new(),
            faucet: false,
            require_allowance: true,
            min_stake: 0,
            stake_refresh_ms: 5_000,
        }
    }
}

/// The chain backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainKind {
    /// The embedded dev chain, at `<data>/chain/chain.db`.
    Dev,
}

/// One genesis allocation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAlloc {
    pub address: Address,
    /// Base units (an integer, or a decimal string for big amounts).
    #[serde(with = "amount")]
    pub amount: u128,
}

/// Amounts in TOML: an integer, or a string of base units.
pub(crate) mod amount {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum A {
            N(u64),
            S(String),
        }
        match A::deserialize(d)? {
            A::N(n) => Ok(u128::from(n)),
            A::S(s) => s.trim().parse().map_err(|_| {
                serde::de::Error::custom(format!("{s:?} is not a whole number of base units"))
            }),
        }
    }
}

/// The open chain.
#[derive(Clone)]
pub struct ChainHandle {
    /// The token chain.
    chain: Arc<dyn Chain>,
    /// Settlement's operations on it: escrow, collections, payouts, stake
    /// and slashing.
    settlement: Arc<dyn Settlement>,
    /// The dev chain itself, for the block and tx routes.
    dev: Option<DevChain>,
    kind: ChainKind,
}

impl std::fmt::Debug for ChainHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainHandle")
            .field("kind", &self.kind)
            .field("dev", &self.dev)
            .finish_non_exhaustive()
    }
}

impl ChainHandle {
    /// The chain (balances, the wallet routes).
    pub fn chain(&self) -> &Arc<dyn Chain> {
        &self.chain
    }

    /// Settlement's operations: escrow (what may be collected), stake,
    /// slashing, collections and payouts.
    pub fn settlement(&self) -> &Arc<dyn Settlement> {
        &self.settlement
    }

    /// The dev chain itself (for the block and tx routes), if that is the
    /// backend.
    pub fn dev(&self) -> Option<&DevChain> {
        self.dev.as_ref()
    }

    pub fn kind(&self) -> ChainKind {
        self.kind
    }

    /// Opens (creating) the configured chain under `dir`, with `payout`
    /// signing settlement and slashes going to `operator`. Blocking.
    pub fn open(
        dir: &Path,
        config: &ChainConfig,
        payout: Arc<Identity>,
        operator: Address,
    ) -> Result<ChainHandle, ChainError> {
        match config.kind {
            ChainKind::Dev => {
                let dev = DevChain::open(
                    dir,
                    &DevConfig {
                        chain_id: config
                            .chain_id
                            .unwrap_or(brume_chain::dev::DEFAULT_CHAIN_ID),
                        faucet: config.faucet,
                        genesis: config
                            .genesis
                            .iter()
                            .map(|g| (g.address, g.amount))
                            .collect(),
                    },
                )?;
                let chain: Arc<dyn Chain> = Arc::new(dev.clone());
                Ok(ChainHandle {
                    settlement: Arc::new(DevSettlement::new(chain.clone(), payout, operator)),
                    chain,
                    dev: Some(dev),
                    kind: ChainKind::Dev,
                })
            }
        }
    }

    pub fn faucet_enabled(&self) -> bool {
        self.dev.as_ref().is_some_and(DevChain::faucet_enabled)
    }
}

/// The operator pays the parts of rows it absorbs (a subsidy deal's, a
/// cap with downgrade's) like any payer: from its own account, through an
/// allowance to the payout account. The broker holds the operator's key
/// (`operator.key` in its data dir), so it approves that allowance itself
/// at start (unlimited, once); failing that, the broker doesn't start. On
/// a devnet (faucet on), an empty operator account is funded from the
/// faucet. Elsewhere an empty one is a warning: rows it absorbs a part of
/// are deferred, and `/v1/status` flags the account, until it is funded.
pub(crate) async fn ready_operator(shared: &crate::Shared) -> Result<(), crate::BrokerError> {
    let operator = Identity::load_or_create(&shared.config.data_dir.join("operator.key"))?;
    let (chain, config) = (shared.chain.chain(), &shared.config.chain);
    let payout = shared.identity.address();
    let address = operator.address();
    if chain.allowance(address, payout).await? < u128::MAX / 2 {
        chain.approve(&operator, payout, u128::MAX).await?;
        tracing::info!(operator = %address, "approved the payout account to collect what the operator absorbs");
    }
    let balance = chain.balance_of(address).await?;
    if balance == 0 && config.faucet {
        chain.faucet(address, OPERATOR_DEVNET_FUNDS).await?;
    } else if balance == 0 {
        tracing::warn!(
            operator = %address,
            "the operator's account holds no tokens: rows where the operator absorbs a part (subsidy, cap with downgrade) are deferred until it is funded"
        );
    }
    Ok(())
}

/// What a devnet's operator account gets from the faucet: 1000 tokens.
pub const OPERATOR_DEVNET_FUNDS: u128 = 1_000 * 1_000_000_000_000_000_000;

/// Reads every connected provider's stake every `stake_refresh_ms` (never
/// on a request's path) and tells the scheduler. Runs for the life of the
/// broker.
pub(crate) async fn stake_watcher(shared: Arc<crate::Shared>) {
    let period = Duration::from_millis(shared.config.chain.stake_refresh_ms.max(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let providers: Vec<(u64, String)> = shared.lifecycle.read(|s| {
            s.providers
                .iter()
                .map(|(id, p)| (*id, p.address.clone()))
                .collect()
        });
        for (id, address) in providers {
            if let Some(stake) = read_stake(&shared, &address).await {
                shared.with_sched(|s, after| s.set_stake(id, stake, after));
            }
        }
    }
}

/// A provider's stake ([`Settlement::stake_of`]: on the dev chain its
/// allowance to the payout account, as far as its balance covers it;
/// `None` if the chain could not be read; logged).
pub(crate) async fn read_stake(shared: &crate::Shared, address: &str) -> Option<u128> {
    let Ok(owner) = address.parse::<Address>() else {
        return Some(0);
    };
    match shared.chain.settlement().stake_of(owner).await {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(provider = %address, code = e.code(), "read stake: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brume_chain::Anchor;

    #[tokio::test]
    async fn slashing_moves_stake_to_the_operator_anchored_with_the_evidence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Arc::new(Identity::random());
        let provider = Identity::random();
        let operator = Identity::random().address();
        let config = ChainConfig {
            genesis: vec![GenesisAlloc {
                address: provider.address(),
                amount: 1_000,
            }],
            ..ChainConfig::default()
        };
        let handle =
            ChainHandle::open(dir.path(), &config, broker.clone(), operator).expect("open");
        let (chain, settlement) = (handle.chain.as_ref(), handle.settlement.as_ref());
        chain
            .approve(&provider, broker.address(), 300)
            .await
            .expect("stake");
        assert_eq!(
            settlement.stake_of(provider.address()).await.ok(),
            Some(300)
        );
        let evidence = Anchor::repeat_byte(0xe7);
        let tx = settlement
            .slash(provider.address(), 120, evidence)
            .await
            .expect("slash");
        assert_eq!(chain.balance_of(provider.address()).await.ok(), Some(880));
        assert_eq!(chain.balance_of(operator).await.ok(), Some(120));
        assert_eq!(
            settlement.stake_of(provider.address()).await.ok(),
            Some(180),
            "the stake shrinks by what was slashed"
        );
        let landed = chain
            .transfers_by_anchor(evidence)
            .await
            .expect("by anchor");
        assert_eq!(landed.len(), 1);
        assert_eq!(landed[0].tx_hash, tx);
        assert_eq!(landed[0].spender, Some(broker.address()));
        // More than the stake: a typed error, nothing moves.
        let err = settlement.slash(provider.address(), 181, evidence).await;
        assert!(
            matches!(err, Err(ChainError::InsufficientAllowance { .. })),
            "{err:?}"
        );
        assert_eq!(chain.balance_of(provider.address()).await.ok(), Some(880));
    }
}
