//! The broker's chain: configuration (`[broker.chain]`), opening the
//! backend, provider stake, and slashing.
//!
//! The broker's own identity (`broker.key`) is the **payout account**: it
//! collects escrowed charges and is the spender of every allowance the
//! broker uses. Requesters' escrow and providers' stake are both ERC-20
//! allowances to it (one allowance per owner on the dev chain: an account
//! that is both requester and provider shares it between the two uses).
//!
//! Settlement, escrow, stake and slashing see the chain as
//! `Arc<dyn Settlement>` ([`ChainHandle::settlement`]), so both backends
//! serve them alike:
//! - `kind = "dev"` (the default): the embedded dev chain; the broker's
//!   key is the payout account;
//! - `kind = "evm"`: brume's contracts on an EVM chain (`rpc`,
//!   `deployment`, `operator_key`); the `Settlement` contract is the
//!   payout account, and escrow is an allowance to it; the operator key
//!   signs collections, payouts and slashes. Accounts sign their own
//!   approvals and stake (`brume wallet --rpc`); `/v1/chain` shows
//!   balances, allowances and stake but no blocks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use brume_chain::{Address, Chain, ChainError, DevChain, DevConfig, DevSettlement, Settlement};
use brume_evm::{Deployment, EvmChain, EvmConfig, EvmWallet};
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
    /// `kind = "evm"`: the chain's JSON-RPC URL.
    pub rpc: Option<String>,
    /// `kind = "evm"`: where brume's contracts are: the JSON file `brume
    /// chain deploy --json` printed (relative to the data dir).
    pub deployment: Option<std::path::PathBuf>,
    /// `kind = "evm"`: the operator's key (the contracts' operator): a
    /// Web3 v3 keystore, its password in `operator_password_file` or
    /// `BRUME_OPERATOR_PASSWORD`, or a 0600 file of the hex key (relative
    /// to the data dir).
    pub operator_key: Option<std::path::PathBuf>,
    /// The keystore's password, in a file's first line.
    pub operator_password_file: Option<std::path::PathBuf>,
    /// `kind = "evm"`: how deep a write must be before it counts.
    pub confirmations: u64,
    /// The broker's hub wallet (`contracts/HubWallet.sol`, on any EVM
    /// chain), advertised in `/v1/status` for providers to check.
    pub hub_wallet: Option<Address>,
    /// The wallet's hub key, which signs the providers' proof requests:
    /// a hex key file, or a keystore unlocked with `BRUME_HUB_PASSWORD`
    /// (relative to the data dir).
    pub hub_key: Option<std::path::PathBuf>,
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
            rpc: None,
            deployment: None,
            operator_key: None,
            operator_password_file: None,
            confirmations: 2,
            hub_wallet: None,
            hub_key: None,
        }
    }
}

/// The chain backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainKind {
    /// The embedded dev chain, at `<data>/chain/chain.db`.
    Dev,
    /// brume's contracts on an EVM chain, over JSON-RPC.
    Evm,
}

/// The operator's key password variable (`kind = "evm"`).
pub const OPERATOR_PASSWORD_ENV: &str = "BRUME_OPERATOR_PASSWORD";

/// The hub key's password variable.
pub const HUB_PASSWORD_ENV: &str = "BRUME_HUB_PASSWORD";

/// A hub wallet and the key that proves it is this broker's.
#[derive(Clone)]
pub struct Hub {
    pub wallet: Address,
    key: Arc<Identity>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("wallet", &self.wallet)
            .field("hub", &self.key.address())
            .finish()
    }
}

impl Hub {
    /// Loads `[broker.chain] hub_wallet` and `hub_key` (both, or
    /// neither). Blocking.
    pub fn load(data: &Path, config: &ChainConfig) -> Result<Option<Hub>, ChainError> {
        let bad = |what: String| ChainError::Invalid(format!("[broker.chain] {what}"));
        match (&config.hub_wallet, &config.hub_key) {
            (None, None) => Ok(None),
            (Some(wallet), Some(key)) => {
                let key = if key.is_absolute() {
                    key.clone()
                } else {
                    data.join(key)
                };
                let key = load_key(&key, None, HUB_PASSWORD_ENV)
                    .map_err(|e| bad(format!("hub_key: {e}")))?;
                Ok(Some(Hub {
                    wallet: *wallet,
                    key: Arc::new(key),
                }))
            }
            _ => Err(bad("hub_wallet and hub_key go together".into())),
        }
    }

    /// The hub key's signature over `nonce` (`brume_api::rest::hub_proof_message`).
    pub fn prove(&self, nonce: &str) -> Result<brume_api::rest::HubProof, ChainError> {
        let wallet = self.wallet.to_string();
        let message = brume_api::rest::hub_proof_message(&wallet, nonce);
        let signature = self
            .key
            .sign_message(message.as_bytes())
            .map_err(|e| ChainError::Other(format!("sign the hub proof: {e}")))?;
        Ok(brume_api::rest::HubProof {
            wallet,
            hub: self.key.address().to_string(),
            nonce: nonce.to_string(),
            signature: format!("0x{}", hex::encode(signature)),
        })
    }
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
    /// The dev chain's token (`None` on an EVM chain).
    chain: Option<Arc<dyn Chain>>,
    /// The EVM backend (`None` on the dev chain).
    evm: Option<Arc<EvmChain>>,
    chain_id: u64,
    /// `faucet` on an EVM chain (devnet funding from the operator).
    faucet: bool,
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
    /// The dev chain's token (the wallet routes, the faucet); `None` on
    /// an EVM chain, whose accounts use its RPC.
    pub fn chain(&self) -> Option<&Arc<dyn Chain>> {
        self.chain.as_ref()
    }

    /// The EVM backend, on an EVM chain.
    pub fn evm(&self) -> Option<&Arc<EvmChain>> {
        self.evm.as_ref()
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
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

    /// Opens (creating) the configured chain: the dev chain under
    /// `data/chain`, with `payout` signing settlement and slashes going to
    /// `operator`; or the EVM chain `config` names, whose operator key
    /// signs instead.
    pub async fn open(
        data: &Path,
        config: &ChainConfig,
        payout: Arc<Identity>,
        operator: Address,
    ) -> Result<ChainHandle, ChainError> {
        match config.kind {
            ChainKind::Dev => {
                let (dir, config) = (data.join("chain"), config.clone());
                tokio::task::spawn_blocking(move || {
                    ChainHandle::open_dev(&dir, &config, payout, operator)
                })
                .await
                .map_err(|e| ChainError::Other(e.to_string()))?
            }
            ChainKind::Evm => ChainHandle::open_evm(data, config).await,
        }
    }

    /// The dev chain under `dir`. Blocking.
    pub fn open_dev(
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
                    chain_id: chain.chain_id(),
                    faucet: false,
                    chain: Some(chain),
                    evm: None,
                    dev: Some(dev),
                    kind: ChainKind::Dev,
                })
            }
            ChainKind::Evm => Err(ChainError::Invalid(
                "open_dev: the configured chain is an EVM chain".into(),
            )),
        }
    }

    /// brume's contracts on the EVM chain `config` names.
    async fn open_evm(data: &Path, config: &ChainConfig) -> Result<ChainHandle, ChainError> {
        let bad =
            |what: String| ChainError::Invalid(format!("[broker.chain] kind = \"evm\": {what}"));
        let rpc = config
            .rpc
            .as_deref()
            .ok_or_else(|| bad("needs rpc, the chain's JSON-RPC URL".into()))?;
        let url: brume_evm::Url = rpc
            .parse()
            .map_err(|e| bad(format!("rpc {rpc:?} is not a URL: {e}")))?;
        let at = |p: &std::path::PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                data.join(p)
            }
        };
        let deployment = config.deployment.as_ref().map(at).ok_or_else(|| {
            bad("needs deployment, the file `brume chain deploy --json` printed".into())
        })?;
        let key = config
            .operator_key
            .as_ref()
            .map(at)
            .ok_or_else(|| bad("needs operator_key, the contracts' operator key".into()))?;
        let password = config.operator_password_file.as_ref().map(at);
        // A keystore's key derivation is slow: off the runtime.
        let (deployment, operator) = tokio::task::spawn_blocking(move || {
            let text = std::fs::read_to_string(&deployment)
                .map_err(|e| bad(format!("read {}: {e}", deployment.display())))?;
            let deployment = Deployment::from_json(&text)
                .map_err(|e| bad(format!("{}: {e}", deployment.display())))?;
            let operator =
                load_key(&key, password.as_deref(), OPERATOR_PASSWORD_ENV).map_err(bad)?;
            Ok::<_, ChainError>((deployment, operator))
        })
        .await
        .map_err(|e| ChainError::Other(e.to_string()))??;
        let signer: brume_evm::PrivateKeySigner = operator
            .to_hex()
            .parse()
            .map_err(|e| bad(format!("the operator key: {e}")))?;
        let mut evm_config = EvmConfig::new(url, deployment);
        evm_config.confirmations = config.confirmations.max(1);
        let evm = EvmChain::connect(evm_config, signer)
            .await
            .map_err(|e| bad(format!("reach {rpc}: {e}")))?;
        let evm = Arc::new(evm);
        Ok(ChainHandle {
            settlement: evm.clone(),
            chain_id: evm.chain_id(),
            faucet: config.faucet,
            chain: None,
            evm: Some(evm),
            dev: None,
            kind: ChainKind::Evm,
        })
    }

    /// On a devnet (the faucet on): gives `account` `funds` tokens (and,
    /// on an EVM chain, gas money from the operator, who holds the
    /// supply), and approves the payout account to collect them: a
    /// requester ready to pay.
    pub async fn fund_devnet_account(
        &self,
        account: &Identity,
        funds: u128,
    ) -> Result<(), ChainError> {
        if !self.faucet_enabled() {
            return Err(ChainError::FaucetDisabled);
        }
        if let Some(chain) = &self.chain {
            let payout = self.settlement.payout_account();
            let held = chain.balance_of(account.address()).await?;
            if held < funds {
                chain.faucet(account.address(), funds - held).await?;
            }
            chain.approve(account, payout, funds).await?;
            return Ok(());
        }
        let evm = self.evm.as_ref().ok_or(ChainError::Closed)?;
        let fail = |e: brume_evm::EvmError| ChainError::Other(format!("{}: {e}", e.code()));
        evm.send_value(account.address(), brume_evm::U256::from(DEVNET_GAS_MONEY))
            .await
            .map_err(fail)?;
        let held = evm.balance_of(account.address()).await.map_err(fail)?;
        if held < funds {
            evm.transfer(account.address(), funds - held)
                .await
                .map_err(fail)?;
        }
        let signer = account
            .to_hex()
            .parse()
            .map_err(|e| ChainError::Other(format!("the account's key: {e}")))?;
        EvmWallet::new(evm.config().rpc.clone(), signer, evm.deployment())
            .approve(funds)
            .await
            .map_err(fail)?;
        Ok(())
    }

    /// Whether devnet funding is on: the dev chain's faucet, or `faucet
    /// = true` on an EVM chain (the operator funds accounts from its own).
    pub fn faucet_enabled(&self) -> bool {
        match &self.dev {
            Some(dev) => dev.faucet_enabled(),
            None => self.faucet,
        }
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
    let config = &shared.config.chain;
    let settlement = shared.chain.settlement();
    let payout = settlement.payout_account();
    let address = operator.address();
    let Some(chain) = shared.chain.chain() else {
        return ready_evm_operator(shared, &operator).await;
    };
    if chain.allowance(address, payout).await? < u128::MAX / 2 {
        chain.approve(&operator, payout, u128::MAX).await?;
        tracing::info!(operator = %address, "approved the payout account to collect what the operator absorbs");
    }
    let balance = chain.balance_of(address).await?;
    if balance == 0 && config.faucet {
        chain.faucet(address, OPERATOR_DEVNET_FUNDS).await?;
    } else if balance == 0 {
        warn_unfunded(address);
    }
    Ok(())
}

fn warn_unfunded(operator: Address) {
    tracing::warn!(
        %operator,
        "the operator's account holds no tokens: rows where the operator absorbs a part (subsidy, cap with downgrade) are deferred until it is funded"
    );
}

/// On an EVM chain the operator's account approves the settlement
/// contract itself, paying the gas; a devnet funds it first. Failing that
/// is a warning: the rows it absorbs a part of wait.
async fn ready_evm_operator(
    shared: &crate::Shared,
    operator: &Identity,
) -> Result<(), crate::BrokerError> {
    let (settlement, address) = (shared.chain.settlement(), operator.address());
    if shared.config.chain.faucet && settlement.balance_of(address).await? == 0 {
        shared
            .chain
            .fund_devnet_account(operator, OPERATOR_DEVNET_FUNDS)
            .await?;
        tracing::info!(operator = %address, "funded the operator's account on the devnet");
        return Ok(());
    }
    if settlement.collectable(address).await? >= u128::MAX / 2 {
        return Ok(());
    }
    let Some(evm) = shared.chain.evm() else {
        return Ok(());
    };
    let signer = operator
        .to_hex()
        .parse()
        .map_err(|e| ChainError::Other(format!("the operator's key: {e}")))?;
    match EvmWallet::new(evm.config().rpc.clone(), signer, evm.deployment())
        .approve(u128::MAX)
        .await
    {
        Ok(_) => {
            tracing::info!(operator = %address, "approved the settlement contract to collect what the operator absorbs")
        }
        Err(e) => tracing::warn!(
            operator = %address,
            code = e.code(),
            "the operator's account could not approve the settlement contract ({e}); rows where it absorbs a part wait until it does"
        ),
    }
    if settlement.balance_of(address).await? == 0 {
        warn_unfunded(address);
    }
    Ok(())
}

/// Gas money a devnet account gets on an EVM chain: 1 ether.
pub const DEVNET_GAS_MONEY: u128 = 1_000_000_000_000_000_000;

/// A key: a Web3 v3 keystore (JSON), unlocked with the password file's
/// first line or the variable `env`, or a hex key file. Blocking.
fn load_key(path: &Path, password: Option<&Path>, env: &str) -> Result<Identity, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    if !text.trim_start().starts_with('{') {
        return Identity::from_hex_key(text.trim())
            .map_err(|e| format!("the key {}: {e}", path.display()));
    }
    let password = match password {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| format!("read the password file {}: {e}", p.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        None => std::env::var(env).map_err(|_| {
            format!(
                "the keystore {} needs a password file or {env}",
                path.display()
            )
        })?,
    };
    Identity::from_keystore(path, password.as_bytes())
        .map_err(|e| format!("unlock the keystore {}: {e}", path.display()))
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
/// allowance to the payout account; `None` if the chain could not be
/// read; logged).
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
        let handle = ChainHandle::open(dir.path(), &config, broker.clone(), operator)
            .await
            .expect("open");
        let chain = handle.chain().expect("the dev chain").as_ref();
        let settlement = handle.settlement.as_ref();
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

    #[tokio::test]
    async fn an_evm_chain_names_what_its_configuration_lacks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = |config: ChainConfig| {
            let dir = dir.path().to_path_buf();
            async move {
                ChainHandle::open(&dir, &config, Arc::new(Identity::random()), Address::ZERO)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        };
        let evm = ChainConfig {
            kind: ChainKind::Evm,
            ..ChainConfig::default()
        };
        let err = open(evm.clone()).await.expect_err("no rpc");
        assert!(err.contains("needs rpc"), "{err}");
        let err = open(ChainConfig {
            rpc: Some("http://127.0.0.1:9".into()),
            ..evm.clone()
        })
        .await
        .expect_err("no deployment");
        assert!(err.contains("needs deployment"), "{err}");
        std::fs::write(dir.path().join("d.json"), "{\"token\": \"0x1\"}").expect("write");
        std::fs::write(dir.path().join("k"), Identity::random().to_hex().as_str()).expect("key");
        let err = open(ChainConfig {
            rpc: Some("http://127.0.0.1:9".into()),
            deployment: Some("d.json".into()),
            operator_key: Some("k".into()),
            ..evm.clone()
        })
        .await
        .expect_err("a bad deployment");
        assert!(err.contains("no address"), "{err}");
        let zero = "0x0000000000000000000000000000000000000001";
        std::fs::write(
            dir.path().join("d.json"),
            format!("{{\"token\": \"{zero}\", \"settlement\": \"{zero}\", \"stake\": \"{zero}\"}}"),
        )
        .expect("write");
        let err = open(ChainConfig {
            rpc: Some("http://127.0.0.1:9".into()),
            deployment: Some("d.json".into()),
            operator_key: Some("k".into()),
            ..evm
        })
        .await
        .expect_err("nothing listens");
        assert!(err.contains("reach http://127.0.0.1:9"), "{err}");
    }
}
