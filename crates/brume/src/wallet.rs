//! `brume wallet balance|approve|stake|history`: an account's tokens, seen
//! and moved through a broker's chain routes (`/v1/chain/...`). Keys come
//! from the keyring (`brume keys`); transactions are built and signed here
//! and only the signed bytes are sent.
//!
//! Escrow and stake are **one** ERC-20 allowance on the dev chain: the
//! account's allowance to the broker's payout account. `approve` and
//! `stake` both set it (approve *sets*, it does not add); a requester
//! reads it as escrow, a provider as stake. An account that is both shares
//! the one allowance between the two uses.
//!
//! Amounts: a whole number is **base units** (`1000` = 1000 base units =
//! 10^-15 token); a number with a decimal point, or the suffix `tok`, is
//! **tokens** (`1.5`, `1.5tok`, `2tok` = 1.5·10^18, 1.5·10^18, 2·10^18 base
//! units; at most 18 decimals).
//!
//! With `--rpc URL --deployment FILE`, the account's side of brume's
//! contracts on an EVM chain instead (`FILE`: what `brume chain deploy
//! --json` printed): transactions are signed here and sent to the RPC, no
//! broker involved. There `approve` sets the allowance to `Settlement`
//! (escrow), `stake` deposits into `Stake` (approve, then deposit),
//! `unstake` starts the unbonding delay and `withdraw` takes what has
//! waited it out.
//!
//! Exit codes: 0 done, 1 failed (the broker's error is printed as
//! `error: CODE: message`), 2 a usage error (a bad amount, no key).

pub(crate) mod evm;

pub(crate) use evm::{rpc_url, signer};

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use brume_chain::{Address, Call, Tx};
use brume_client::Client;
use brume_identity::keyring::Keyring;
use serde_json::json;

use crate::config::ClientSection;

/// The variable a password is read from when there is no password file.
const PASSWORD_ENV: &str = "BRUME_KEY_PASSWORD";

/// Base units per token.
const UNIT: u128 = 1_000_000_000_000_000_000;

#[derive(Debug, clap::Args)]
pub struct WalletArgs {
    /// The broker (default: $BRUME_BROKER, the config's client.broker, else
    /// http://127.0.0.1:7700).
    #[arg(long, global = true, env = "BRUME_BROKER")]
    broker: Option<String>,
    #[command(flatten)]
    keys: KeyArgs,
    /// Use brume's contracts on the EVM chain at URL (JSON-RPC) instead of
    /// the broker's chain; needs --deployment.
    #[arg(long, global = true, env = "BRUME_RPC", value_name = "URL")]
    rpc: Option<String>,
    /// With --rpc: the contracts' addresses, as `brume chain deploy --json`
    /// printed them.
    #[arg(long, global = true, env = "BRUME_DEPLOYMENT", value_name = "FILE")]
    deployment: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    tls: crate::tls::GlobalTrustArgs,
    #[command(subcommand)]
    command: WalletCommand,
}

#[derive(Debug, clap::Subcommand)]
enum WalletCommand {
    /// Balance, nonce, allowance to the broker (escrow/stake) and what the
    /// broker holds against it (default: the --key's address).
    Balance { address: Option<Address> },
    /// Set the escrow allowance to the broker's payout account: what work
    /// may cost before settlement collects it. AMOUNT: a whole number is
    /// base units; `1.5` or `1.5tok` is tokens (×10^18).
    Approve { amount: String },
    /// Set a provider's stake: the same allowance to the payout account as
    /// `approve` (on the dev chain escrow and stake are one allowance).
    /// With --rpc: deposit AMOUNT into the stake contract. AMOUNT as for
    /// `approve`.
    Stake { amount: String },
    /// With --rpc: start unbonding AMOUNT of the stake (withdrawable after
    /// the contract's delay, slashable until then).
    Unstake { amount: String },
    /// With --rpc: withdraw the stake whose unbonding delay is over.
    Withdraw,
    /// Token movements to, from or spent by an account (default: --key's).
    History {
        address: Option<Address>,
        /// Continue after this `BLOCK:INDEX` (a page's `next_after`).
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// Parses an amount: a whole number is base units; with a decimal point or
/// the suffix `tok`, tokens.
pub fn parse_amount(text: &str) -> Result<u128, String> {
    let t = text.trim();
    let (num, tokens) = match t.strip_suffix("tok") {
        Some(n) => (n.trim(), true),
        None => (t, t.contains('.')),
    };
    let bad = || format!("{text:?}: expected base units (1000) or tokens (1.5, 2tok)");
    if num.is_empty() || !num.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return Err(bad());
    }
    if !tokens {
        return num.parse().map_err(|_| bad());
    }
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if frac.contains('.') || frac.len() > 18 || (whole.is_empty() && frac.is_empty()) {
        return Err(bad());
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_units: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u128>().map_err(|_| bad())? * 10u128.pow(18 - frac.len() as u32)
    };
    whole
        .checked_mul(UNIT)
        .and_then(|w| w.checked_add(frac_units))
        .ok_or_else(|| format!("{text:?}: too large"))
}

/// Base units as tokens: `1.5 tok`.
pub fn tokens(units: u128) -> String {
    let (w, f) = (units / UNIT, units % UNIT);
    if f == 0 {
        return format!("{w} tok");
    }
    let frac = format!("{f:018}");
    format!("{w}.{} tok", frac.trim_end_matches('0'))
}

fn units(text: &str) -> u128 {
    text.parse().unwrap_or(0)
}

pub async fn main(args: WalletArgs, file: &ClientSection) -> ExitCode {
    let broker = args
        .broker
        .clone()
        .or_else(|| file.broker.clone())
        .unwrap_or_else(|| "http://127.0.0.1:7700".into());
    let trust = match args
        .tls
        .trust(file.ca.as_deref(), file.pin_sha256.as_deref())
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}", crate::report(&e));
            return ExitCode::from(2);
        }
    };
    match run(&args, &broker, &trust).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<brume_client::ClientError>() {
                Some(brume_client::ClientError::Api { error, .. }) => {
                    eprintln!("error: {}: {}", error.code, error.message);
                }
                _ => eprintln!("error: {}", crate::report(&e)),
            }
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Which key of the keyring signs, and how it is unlocked.
#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    /// The keyring directory (default: $BRUME_KEYS_DIR, else
    /// ~/.config/brume/keys).
    #[arg(long, global = true, env = "BRUME_KEYS_DIR", value_name = "DIR")]
    keys_dir: Option<PathBuf>,
    /// The key (its address or name in the keyring): the account.
    #[arg(long, global = true, env = "BRUME_KEY", value_name = "ADDRESS|NAME")]
    key: Option<String>,
    /// Read the key's password from the first line of FILE (default:
    /// $BRUME_KEY_PASSWORD, else a prompt on the terminal).
    #[arg(long, global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

impl KeyArgs {
    fn ring(&self) -> anyhow::Result<Keyring> {
        let dir = self
            .keys_dir
            .clone()
            .or_else(Keyring::default_dir)
            .ok_or_else(|| {
                Usage("no keyring directory: set HOME or BRUME_KEYS_DIR, or pass --keys-dir".into())
            })?;
        Ok(Keyring::new(dir))
    }

    fn query(&self) -> anyhow::Result<&str> {
        self.key
            .as_deref()
            .ok_or_else(|| Usage("--key ADDRESS|NAME is required (or BRUME_KEY)".into()).into())
    }

    /// The key's address (no password needed).
    pub fn address(&self) -> anyhow::Result<Address> {
        Ok(self.ring()?.find(self.query()?)?.address)
    }

    /// The key, unlocked.
    pub fn load(&self) -> anyhow::Result<brume_identity::Identity> {
        let ring = self.ring()?;
        let query = self.query()?;
        ring.find(query)?;
        Ok(ring.load(query, self.password()?.as_bytes())?)
    }

    fn password(&self) -> anyhow::Result<String> {
        if let Some(path) = &self.password_file {
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(64 << 10).read_to_string(&mut text))
                .with_context(|| format!("read password file {}", path.display()))?;
            let line = text.split('\n').next().unwrap_or_default();
            return Ok(line.strip_suffix('\r').unwrap_or(line).to_string());
        }
        if let Ok(p) = std::env::var(PASSWORD_ENV) {
            return Ok(p);
        }
        match brume_identity::keyring::prompt_password("key password: ")? {
            Some(p) => Ok(p),
            None => bail!(Usage(format!(
                "no password: pass --password-file FILE or set {PASSWORD_ENV}"
            ))),
        }
    }
}

/// A usage error (exit 2).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The account: ADDRESS if given, else the --key's address (no password
/// needed).
fn account(args: &WalletArgs, given: Option<Address>) -> anyhow::Result<Address> {
    match given {
        Some(a) => Ok(a),
        None => args.keys.address(),
    }
}

async fn run(args: &WalletArgs, broker: &str, trust: &brume_tls::Trust) -> anyhow::Result<()> {
    if let Some(rpc) = &args.rpc {
        return evm::run(args, rpc).await;
    }
    let client = Client::new(broker, None)?.with_tls(trust)?;
    match &args.command {
        WalletCommand::Balance { address } => {
            let a = account(args, *address)?;
            balance(&client, a, args.json).await
        }
        WalletCommand::Approve { amount } => approve(args, &client, amount, "escrow").await,
        WalletCommand::Stake { amount } => approve(args, &client, amount, "stake").await,
        WalletCommand::Unstake { .. } | WalletCommand::Withdraw => bail!(Usage(
            "unstake and withdraw are for a stake contract on an EVM chain (--rpc); on the dev chain stake is an allowance: `brume wallet stake 0`".into()
        )),
        WalletCommand::History {
            address,
            after,
            limit,
        } => {
            let a = account(args, *address)?;
            history(&client, a, after.as_deref(), *limit, args.json).await
        }
    }
}

async fn balance(client: &Client, a: Address, json_out: bool) -> anyhow::Result<()> {
    let info = client.chain_account(&a.to_string()).await?;
    if json_out {
        println!("{}", serde_json::to_string(&info)?);
        return Ok(());
    }
    println!("account      {}", info.address);
    println!(
        "balance      {} ({} base units)",
        tokens(units(&info.balance)),
        info.balance
    );
    println!("nonce        {}", info.nonce);
    println!(
        "allowance    {} to the payout account {} (escrow / stake)",
        tokens(units(&info.allowance)),
        info.spender
    );
    println!(
        "outstanding  {} (billed, not yet collected, and reserved)",
        tokens(units(&info.outstanding))
    );
    println!("available    {}", tokens(units(&info.available)));
    Ok(())
}

async fn approve(
    args: &WalletArgs,
    client: &Client,
    amount: &str,
    what: &str,
) -> anyhow::Result<()> {
    let amount = parse_amount(amount).map_err(Usage)?;
    let identity = args.keys.load()?;
    let chain = client.chain_info().await?;
    let payout: Address = chain
        .payout_account
        .parse()
        .context("the broker's payout account is not an address")?;
    let from = identity.address();
    let nonce = client.chain_account(&from.to_string()).await?.nonce;
    let signed = Tx {
        chain_id: chain.chain_id,
        from,
        nonce,
        call: Call::Approve {
            spender: payout,
            amount,
        },
    }
    .sign(&identity)?;
    let receipt = client
        .submit_tx(&signed.tx.encode(), &signed.signature)
        .await?;
    if args.json {
        println!(
            "{}",
            json!({
                "account": identity.address().to_string(),
                "spender": payout.to_string(),
                "allowance": amount.to_string(),
                "purpose": what,
                "receipt": receipt,
            })
        );
    } else {
        println!(
            "{from} now allows the payout account {payout} {} ({amount} base units) as {what}",
            tokens(amount)
        );
        println!("tx {} in block {}", receipt.tx_hash, receipt.block_number);
    }
    Ok(())
}

async fn history(
    client: &Client,
    a: Address,
    after: Option<&str>,
    limit: usize,
    json_out: bool,
) -> anyhow::Result<()> {
    let list = client.transfers(&a.to_string(), after, Some(limit)).await?;
    if json_out {
        println!("{}", serde_json::to_string(&list)?);
        return Ok(());
    }
    for t in &list.transfers {
        let dir = if t.to.eq_ignore_ascii_case(&a.to_string()) {
            "in "
        } else {
            "out"
        };
        println!(
            "{}:{}\t{dir}\t{}\t{} -> {}\tanchor {}\ttx {}",
            t.block_number,
            t.index,
            tokens(units(&t.amount)),
            t.from,
            t.to,
            t.anchor,
            t.tx_hash
        );
    }
    if let Some(next) = &list.next_after {
        println!("more: --after {next}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_base_units_or_tokens() {
        assert_eq!(parse_amount("1000"), Ok(1000));
        assert_eq!(parse_amount("1.5"), Ok(1_500_000_000_000_000_000));
        assert_eq!(parse_amount("2tok"), Ok(2 * UNIT));
        assert_eq!(parse_amount("0.000000000000000001"), Ok(1));
        assert!(parse_amount("0.0000000000000000001").is_err());
        assert!(parse_amount("-1").is_err());
        assert!(parse_amount("1.2.3").is_err());
        assert!(parse_amount("").is_err());
        assert_eq!(tokens(1_500_000_000_000_000_000), "1.5 tok");
        assert_eq!(tokens(3 * UNIT), "3 tok");
    }
}
