//! `brume hub`: a broker's hub wallet (`contracts/HubWallet.sol`) on an
//! EVM network: deploy it, read it, and make the hub's calls (register,
//! pay, payday, withdraw) and the DAO's (suspect, rehabilitate, ban,
//! claim), each signed locally by `--key` and sent to `--rpc`.
//!
//! Exit codes: 0 done, 1 the contract (or the network) refused, 2 usage.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use brume_evm::{Address, EvmHub, HubTerms, HubTx, HubView};
use serde_json::json;

use crate::wallet::{KeyArgs, Usage};

#[derive(Debug, clap::Args)]
pub struct HubArgs {
    /// The network's JSON-RPC endpoint (http or https).
    #[arg(long, global = true, value_name = "URL", env = "BRUME_RPC")]
    rpc: Option<String>,
    /// Print one JSON object.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: HubCommand,
}

#[derive(Debug, clap::Subcommand)]
enum HubCommand {
    /// Deploy a hub wallet over brume's token; --key pays the gas.
    Deploy(DeployArgs),
    /// What anyone can read of a hub wallet (what providers check).
    Status(WalletArg),
    /// Hub: freeze a bond and open a payout period.
    Register(AmountArgs),
    /// Hub: pay a provider from the wallet (30 % of it locked until payday).
    Pay(PayArgs),
    /// Hub: the period's payday (0.5 % to the DAO; the wallet goes idle).
    Payday(Signed),
    /// Hub, idle: take tokens back.
    Withdraw(AmountArgs),
    /// DAO: suspect a registered hub (freezes every token).
    Suspect(Signed),
    /// DAO: clear a suspected hub.
    Rehabilitate(Signed),
    /// DAO: ban a hub suspected for the whole suspect period.
    Ban(Signed),
    /// DAO: claim a banned hub's tokens after the freeze.
    Claim(Signed),
}

#[derive(Debug, clap::Args)]
struct WalletArg {
    /// The hub wallet's address.
    #[arg(long, value_name = "ADDRESS")]
    wallet: Address,
}

#[derive(Debug, clap::Args)]
struct Signed {
    #[command(flatten)]
    wallet: WalletArg,
    #[command(flatten)]
    keys: KeyArgs,
}

#[derive(Debug, clap::Args)]
struct AmountArgs {
    #[command(flatten)]
    signed: Signed,
    /// Base units, or tokens with a decimal point or `tok`.
    amount: String,
}

#[derive(Debug, clap::Args)]
struct PayArgs {
    #[command(flatten)]
    signed: Signed,
    /// The provider paid.
    #[arg(long, value_name = "ADDRESS")]
    to: Address,
    /// Base units, or tokens with a decimal point or `tok`.
    amount: String,
}

#[derive(Debug, clap::Args)]
struct DeployArgs {
    #[command(flatten)]
    keys: KeyArgs,
    /// brume's token (what `brume chain deploy --json` printed as `token`).
    #[arg(long, value_name = "ADDRESS")]
    token: Address,
    /// The DAO: may suspect, rehabilitate, ban and claim.
    #[arg(long, value_name = "ADDRESS")]
    dao: Address,
    /// The hub (default: --key's address): registers, pays, makes payday.
    #[arg(long, value_name = "ADDRESS")]
    hub: Option<Address>,
    /// Share of each payout locked until payday, in ppm.
    #[arg(long, default_value_t = 300_000)]
    lock_fee_ppm: u32,
    /// Share of bond and locks paid to the DAO at payday, in ppm.
    #[arg(long, default_value_t = 5_000)]
    payday_fee_ppm: u32,
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    payout_period: Duration,
    /// How late a payday may be before it counts as missed.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    payday_grace: Duration,
    /// How long the DAO waits after suspecting before it may ban.
    #[arg(long, default_value = "120d", value_parser = humantime::parse_duration)]
    suspect_period: Duration,
    /// How long a ban's tokens stay frozen before the DAO may claim them.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    dao_freeze: Duration,
}

pub async fn main(args: HubArgs) -> ExitCode {
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Usage>().is_some() => {
            eprintln!("error: hub: {}", crate::report(&e));
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: hub: {}", crate::report(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: HubArgs) -> anyhow::Result<()> {
    let rpc = args
        .rpc
        .as_deref()
        .ok_or_else(|| Usage("--rpc URL is required (or BRUME_RPC)".into()))?;
    let url = crate::wallet::rpc_url(rpc)?;
    let json_out = args.json;
    let amount = |a: &str| crate::wallet::parse_amount(a).map_err(Usage);
    let hub = |s: &Signed| -> anyhow::Result<EvmHub> {
        Ok(EvmHub::new(
            url.clone(),
            crate::wallet::signer(&s.keys)?,
            s.wallet.wallet,
        ))
    };
    let (what, tx) = match args.command {
        HubCommand::Deploy(a) => return deploy(url, a, json_out).await,
        HubCommand::Status(w) => {
            let view = brume_evm::hub_view(&brume_evm::read_provider(url), w.wallet)
                .await
                .with_context(|| format!("read the hub wallet {}", w.wallet))?;
            print_view(&view, json_out);
            return Ok(());
        }
        HubCommand::Register(a) => (
            "register",
            hub(&a.signed)?.register(amount(&a.amount)?).await,
        ),
        HubCommand::Pay(a) => ("pay", hub(&a.signed)?.pay(a.to, amount(&a.amount)?).await),
        HubCommand::Payday(s) => ("payday", hub(&s)?.payday().await),
        HubCommand::Withdraw(a) => (
            "withdraw",
            hub(&a.signed)?.withdraw(amount(&a.amount)?).await,
        ),
        HubCommand::Suspect(s) => ("suspect", hub(&s)?.suspect().await),
        HubCommand::Rehabilitate(s) => ("rehabilitate", hub(&s)?.rehabilitate().await),
        HubCommand::Ban(s) => ("ban", hub(&s)?.ban().await),
        HubCommand::Claim(s) => ("claim", hub(&s)?.claim().await),
    };
    let HubTx { tx_hash, gas_used } = tx.with_context(|| format!("{what} on {rpc}"))?;
    if json_out {
        println!(
            "{}",
            json!({"call": what, "tx_hash": tx_hash.to_string(), "gas_used": gas_used})
        );
    } else {
        println!("{what}: tx {tx_hash} ({gas_used} gas)");
    }
    Ok(())
}

async fn deploy(url: brume_evm::Url, a: DeployArgs, json_out: bool) -> anyhow::Result<()> {
    let signer = crate::wallet::signer(&a.keys)?;
    let terms = HubTerms {
        hub: a.hub.unwrap_or(signer.address()),
        dao: a.dao,
        lock_fee_ppm: a.lock_fee_ppm,
        payday_fee_ppm: a.payday_fee_ppm,
        payout_period_s: a.payout_period.as_secs(),
        payday_grace_s: a.payday_grace.as_secs(),
        suspect_period_s: a.suspect_period.as_secs(),
        dao_freeze_period_s: a.dao_freeze.as_secs(),
    };
    let provider = brume_evm::signing_provider(url.clone(), signer);
    let wallet = brume_evm::deploy_hub(&provider, a.token, &terms)
        .await
        .with_context(|| format!("deploy to {url}"))?;
    if json_out {
        println!(
            "{}",
            json!({"wallet": wallet.to_string(), "token": a.token.to_string(), "hub": terms.hub.to_string(), "dao": terms.dao.to_string()})
        );
    } else {
        println!("hub wallet  {wallet}");
        println!("hub         {}", terms.hub);
        println!("dao         {}", terms.dao);
    }
    Ok(())
}

fn print_view(v: &HubView, json_out: bool) {
    if json_out {
        println!(
            "{}",
            json!({
                "wallet": v.wallet.to_string(),
                "hub": v.hub.to_string(),
                "dao": v.dao.to_string(),
                "phase": v.phase.as_str(),
                "balance": v.balance.to_string(),
                "bond": v.bond.to_string(),
                "locked": v.locked.to_string(),
                "registered_at": v.registered_at,
                "payday_due": v.payday_due,
                "payday_overdue": v.payday_overdue,
                "paydays": v.paydays,
                "missed_paydays": v.missed_paydays,
            })
        );
        return;
    }
    println!("hub wallet  {} ({})", v.wallet, v.phase.as_str());
    println!("hub         {}", v.hub);
    println!("dao         {}", v.dao);
    println!("balance     {} base units", v.balance);
    println!("bond        {} frozen, {} locked", v.bond, v.locked);
    println!(
        "paydays     {} made, {} late{}",
        v.paydays,
        v.missed_paydays,
        if v.payday_overdue {
            ", one overdue now"
        } else {
            ""
        }
    );
}
