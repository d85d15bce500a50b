//! [`LocalAnvil`]: a throwaway anvil with brume's contracts, what `brume
//! devnet --chain anvil` settles on.

use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;

use crate::{DeployConfig, Deployment, EvmError, Url};

/// An anvil child process (stopped when this is dropped) with brume
/// deployed: its first key is the contracts' operator and holds the whole
/// supply and plenty of ether.
pub struct LocalAnvil {
    anvil: AnvilInstance,
    pub operator: PrivateKeySigner,
    pub deployment: Deployment,
}

impl std::fmt::Debug for LocalAnvil {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAnvil")
            .field("url", &self.url())
            .field("operator", &self.operator.address())
            .field("deployment", &self.deployment)
            .finish_non_exhaustive()
    }
}

/// The supply a local anvil's operator holds: a billion tokens.
pub const LOCAL_SUPPLY: u128 = 1_000_000_000 * 1_000_000_000_000_000_000;

impl LocalAnvil {
    /// Starts anvil ([`crate::find_anvil`]) on a free port and deploys
    /// brume's contracts (a day's unbonding delay).
    pub async fn start() -> Result<LocalAnvil, EvmError> {
        let path = crate::find_anvil().map_err(EvmError::Anvil)?;
        let anvil = Anvil::new()
            .path(path)
            .try_spawn()
            .map_err(|e| EvmError::Anvil(format!("start: {e}")))?;
        let operator: PrivateKeySigner = anvil
            .keys()
            .first()
            .cloned()
            .ok_or_else(|| EvmError::Anvil("it has no keys".into()))?
            .into();
        let provider = crate::signing_provider(anvil.endpoint_url(), operator.clone());
        let deployment = crate::deploy(
            &provider,
            &DeployConfig {
                name: "Brume".into(),
                symbol: "BRM".into(),
                holder: operator.address(),
                supply: U256::from(LOCAL_SUPPLY),
                operator: operator.address(),
                unbonding_delay_s: 86_400,
            },
        )
        .await?;
        Ok(LocalAnvil {
            anvil,
            operator,
            deployment,
        })
    }

    /// Its funded keys, the operator's first.
    pub fn keys(&self) -> Vec<PrivateKeySigner> {
        self.anvil.keys().iter().cloned().map(Into::into).collect()
    }

    /// Its JSON-RPC endpoint.
    pub fn url(&self) -> Url {
        self.anvil.endpoint_url()
    }

    pub fn chain_id(&self) -> u64 {
        self.anvil.chain_id()
    }
}
