//! `brume wallet --rpc URL --deployment FILE …`: the account's side of
//! brume's contracts on an EVM chain, signed here and sent to the RPC.

use anyhow::{Context as _, bail};
use brume_evm::{AccountView, Deployment, EvmWallet, PrivateKeySigner, Url};
use serde_json::json;

use super::{Usage, WalletArgs, WalletCommand, account, parse_amount, tokens};

/// `--rpc TEXT` as an http(s) URL, else a usage error.
pub(crate) fn rpc_url(text: &str) -> anyhow::Result<Url> {
    let url: Url = text
        .parse()
        .map_err(|e| Usage(format!("--rpc {text}: not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!(Usage(format!("--rpc {url}: only http and https endpoints")));
    }
    Ok(url)
}

pub(super) async fn run(args: &WalletArgs, rpc: &str) -> anyhow::Result<()> {
    let url = rpc_url(rpc)?;
    let deployment = deployment(args)?;
    match &args.command {
        WalletCommand::Balance { address } => {
            let who = account(args, *address)?;
            let reader = brume_evm::read_provider(url);
            let view = brume_evm::account(&reader, &deployment, who)
                .await
                .with_context(|| format!("read {who} on {rpc}"))?;
            print_view(&view, args.json);
            Ok(())
        }
        WalletCommand::History { .. } => bail!(Usage(
            "history is the dev chain's; on an EVM chain use its explorer (or `brume wallet balance`)".into()
        )),
        command => {
            let wallet = EvmWallet::new(url, signer(&args.keys)?, deployment);
            let (what, amount, txs) = match command {
                WalletCommand::Approve { amount } => {
                    let amount = parse_amount(amount).map_err(Usage)?;
                    ("approve", Some(amount), vec![wallet.approve(amount).await?])
                }
                WalletCommand::Stake { amount } => {
                    let amount = parse_amount(amount).map_err(Usage)?;
                    ("stake", Some(amount), wallet.stake(amount).await?.to_vec())
                }
                WalletCommand::Unstake { amount } => {
                    let amount = parse_amount(amount).map_err(Usage)?;
                    ("unstake", Some(amount), vec![wallet.unstake(amount).await?])
                }
                _ => ("withdraw", None, vec![wallet.withdraw().await?]),
            };
            let view = wallet.view().await?;
            if args.json {
                println!(
                    "{}",
                    json!({
                        "account": view.address.to_string(),
                        "action": what,
                        "amount": amount.map(|a| a.to_string()),
                        "txs": txs.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                        "balance": view.balance.to_string(),
                        "settlement_allowance": view.settlement_allowance.to_string(),
                        "staked": view.staked.to_string(),
                        "unbonding": view.unbonding.to_string(),
                        "unbonding_ready_at": view.unbonding_ready_at,
                    })
                );
            } else {
                for tx in &txs {
                    println!("{what}: tx {tx}");
                }
                print_view(&view, false);
            }
            Ok(())
        }
    }
}

/// The contracts' addresses from `--deployment`.
fn deployment(args: &WalletArgs) -> anyhow::Result<Deployment> {
    read_deployment(args.deployment.as_deref())
}

/// The contracts' addresses from a deployment file (what `brume chain
/// deploy --json` printed); `None` is the usage error of `--rpc` alone.
pub(crate) fn read_deployment(path: Option<&std::path::Path>) -> anyhow::Result<Deployment> {
    let path = path.ok_or_else(|| {
        Usage("--rpc needs --deployment FILE (what `brume chain deploy --json` printed)".into())
    })?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the deployment {}", path.display()))?;
    Ok(Deployment::from_json(&text).map_err(|e| Usage(format!("{}: {e}", path.display())))?)
}

/// The --key, unlocked, as an EVM signer.
pub(crate) fn signer(keys: &super::KeyArgs) -> anyhow::Result<PrivateKeySigner> {
    keys.load()?
        .to_hex()
        .parse()
        .context("the key is not a signing key")
}

fn print_view(view: &AccountView, json_out: bool) {
    if json_out {
        println!(
            "{}",
            json!({
                "account": view.address.to_string(),
                "balance": view.balance.to_string(),
                "settlement_allowance": view.settlement_allowance.to_string(),
                "staked": view.staked.to_string(),
                "unbonding": view.unbonding.to_string(),
                "unbonding_ready_at": view.unbonding_ready_at,
            })
        );
        return;
    }
    println!("account      {}", view.address);
    println!("balance      {}", tokens(view.balance));
    println!(
        "allowance    {} to the settlement contract (escrow)",
        tokens(view.settlement_allowance)
    );
    println!("staked       {}", tokens(view.staked));
    if view.unbonding > 0 {
        println!(
            "unbonding    {} (withdrawable from unix time {})",
            tokens(view.unbonding),
            view.unbonding_ready_at
        );
    }
}
