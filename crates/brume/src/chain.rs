//! `brume chain blocks|tx|balance|verify`: read the dev chain in a data
//! directory, or replay it from genesis and name what was tampered with.
//! `brume chain deploy`: deploy brume's contracts to an EVM network.
//!
//! Exit codes: 0 done (or clean), 1 not found (`tx`), the replay found
//! problems (named on stderr, or in the `--json` report) or the deployment
//! failed, 2 the chain could not be read (or a usage error).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use brume_chain::dev::{Block, DB_FILE, DevChain, StoredTx};
use brume_chain::verify::{self, VerifyReport};
use brume_chain::{Address, B256, Chain as _};

#[derive(Debug, clap::Args)]
pub struct ChainArgs {
    #[command(subcommand)]
    command: ChainCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ChainCommand {
    /// List blocks (optionally with their transactions).
    Blocks(BlocksArgs),
    /// Show one transaction by hash, with its block.
    Tx(TxArgs),
    /// Show an address's balance and nonce.
    Balance(BalanceArgs),
    /// Replay the chain from genesis: every signature, nonce, hash link and
    /// tx root, and the final state; exit 1 naming what does not hold.
    Verify(VerifyArgs),
    /// Deploy BrumeToken, Settlement and Stake to an EVM network over its
    /// JSON-RPC, signed by --key (which pays the gas), and print their
    /// addresses.
    Deploy(DeployArgs),
}

#[derive(Debug, clap::Args)]
struct DeployArgs {
    /// The network's JSON-RPC endpoint (http or https).
    #[arg(long, value_name = "URL")]
    rpc: String,
    #[command(flatten)]
    keys: crate::wallet::KeyArgs,
    /// The key that may collect, pay out and slash (default: --key's
    /// address).
    #[arg(long, value_name = "ADDRESS")]
    operator: Option<Address>,
    /// Who receives the token's whole supply (default: --key's address).
    #[arg(long, value_name = "ADDRESS")]
    holder: Option<Address>,
    /// The token's supply: base units, or tokens with a decimal point or
    /// `tok` (as for `brume wallet approve`).
    #[arg(long, default_value = "1000000000tok")]
    supply: String,
    /// How long a stake withdrawal waits.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    unbonding_delay: std::time::Duration,
    /// The token's name.
    #[arg(long, default_value = "Brume")]
    name: String,
    /// The token's symbol.
    #[arg(long, default_value = "BRM")]
    symbol: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Where the chain is.
#[derive(Debug, clap::Args)]
struct Source {
    /// The chain's directory (holding chain.db), or a broker data dir
    /// (reads DIR/chain), or a devnet data dir (reads DIR/broker/chain).
    #[arg(long)]
    data: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct BlocksArgs {
    #[command(flatten)]
    source: Source,
    /// The first block (default: the last `--limit` blocks).
    #[arg(long)]
    from: Option<u64>,
    /// How many blocks.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Include each block's transactions.
    #[arg(long)]
    txs: bool,
}

#[derive(Debug, clap::Args)]
struct TxArgs {
    #[command(flatten)]
    source: Source,
    /// The tx hash (0x + 64 hex digits).
    hash: B256,
}

#[derive(Debug, clap::Args)]
struct BalanceArgs {
    #[command(flatten)]
    source: Source,
    /// The address (0x + 40 hex digits).
    address: Address,
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    source: Source,
}

pub async fn main(args: ChainArgs) -> ExitCode {
    let result = match args.command {
        ChainCommand::Blocks(a) => blocks(a).await,
        ChainCommand::Tx(a) => tx(a).await,
        ChainCommand::Balance(a) => balance(a).await,
        ChainCommand::Verify(a) => run_verify(a).await,
        ChainCommand::Deploy(a) => match deploy(a).await {
            Ok(code) => Ok(code),
            Err(e) if e.downcast_ref::<crate::wallet::Usage>().is_some() => {
                eprintln!("error: chain deploy: {}", crate::report(&e));
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("error: chain deploy: {}", crate::report(&e));
                return ExitCode::FAILURE;
            }
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: chain: {}", crate::report(&e));
            ExitCode::from(2)
        }
    }
}

/// The chain directory of a chain, broker or devnet data dir.
fn chain_dir(data: &Path) -> anyhow::Result<PathBuf> {
    for dir in [
        data.to_path_buf(),
        data.join("chain"),
        data.join("broker").join("chain"),
    ] {
        if dir.join(DB_FILE).is_file() {
            return Ok(dir);
        }
    }
    bail!(
        "no chain under {} (looked for {DB_FILE}, chain/{DB_FILE} and broker/chain/{DB_FILE})",
        data.display()
    )
}

async fn open(data: &Path) -> anyhow::Result<DevChain> {
    let dir = chain_dir(data)?;
    tokio::task::spawn_blocking(move || DevChain::open_existing(&dir))
        .await
        .context("open task")?
        .context("open the chain")
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v).context("encode JSON")?);
    Ok(())
}

fn block_line(b: &Block) -> String {
    format!(
        "#{} {} parent {} txs {} time_ms {}",
        b.number, b.hash, b.parent_hash, b.tx_count, b.timestamp_ms
    )
}

fn tx_line(t: &StoredTx) -> String {
    let s = &t.tx;
    let detail = serde_json::to_value(s.tx.call)
        .ok()
        .and_then(|v| {
            v.as_object().map(|o| {
                o.iter()
                    .filter(|(k, _)| k.as_str() != "call")
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(&v.to_string())))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        })
        .unwrap_or_default();
    format!(
        "  {} {} {} from {} nonce {} {detail}",
        t.index,
        s.hash,
        s.tx.call.name(),
        s.tx.from,
        s.tx.nonce
    )
}

async fn blocks(args: BlocksArgs) -> anyhow::Result<ExitCode> {
    let chain = open(&args.source.data).await?;
    let limit = args.limit.max(1);
    let from = match args.from {
        Some(f) => f,
        None => {
            let head = chain.block_number().await.context("read the head")?;
            (head + 1).saturating_sub(limit as u64)
        }
    };
    let blocks = chain.blocks(from, limit).await.context("read blocks")?;
    let mut json = Vec::new();
    for b in &blocks {
        let txs = if args.txs {
            chain
                .block_txs(b.number)
                .await
                .with_context(|| format!("read block {}'s txs", b.number))?
        } else {
            Vec::new()
        };
        if args.source.json {
            let mut v = serde_json::to_value(b)?;
            if args.txs
                && let Some(o) = v.as_object_mut()
            {
                o.insert("txs".into(), serde_json::to_value(&txs)?);
            }
            json.push(v);
        } else {
            println!("{}", block_line(b));
            for t in &txs {
                println!("{}", tx_line(t));
            }
        }
    }
    if args.source.json {
        print_json(&json)?;
    }
    chain.close();
    Ok(ExitCode::SUCCESS)
}

async fn tx(args: TxArgs) -> anyhow::Result<ExitCode> {
    let chain = open(&args.source.data).await?;
    let found = chain.tx(args.hash).await.context("read the tx")?;
    let receipt = chain.receipt(args.hash).await.context("read the receipt")?;
    chain.close();
    let (Some(t), Some(r)) = (found, receipt) else {
        eprintln!("error: chain: no transaction {}", args.hash);
        return Ok(ExitCode::from(1));
    };
    if args.source.json {
        let mut v = serde_json::to_value(t)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("block_hash".into(), serde_json::to_value(r.block_hash)?);
        }
        print_json(&v)?;
    } else {
        println!("block #{} {}", r.block_number, r.block_hash);
        println!("{}", tx_line(&t));
        println!("  signature 0x{}", hex(&t.tx.signature));
    }
    Ok(ExitCode::SUCCESS)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

async fn balance(args: BalanceArgs) -> anyhow::Result<ExitCode> {
    let chain = open(&args.source.data).await?;
    let a = args.address;
    let balance = chain.balance_of(a).await.context("read the balance")?;
    let nonce = chain.nonce(a).await.context("read the nonce")?;
    chain.close();
    if args.source.json {
        print_json(&serde_json::json!({
            "address": a,
            "balance": balance.to_string(),
            "nonce": nonce,
        }))?;
    } else {
        println!("{a} balance {balance} nonce {nonce}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    // Straight on the file: no writer, nothing written.
    let path = chain_dir(&args.source.data)?.join(DB_FILE);
    let report: VerifyReport = tokio::task::spawn_blocking(move || verify::verify_path(&path))
        .await
        .context("verify task")?
        .context("read the chain")?;
    if args.source.json {
        print_json(&report)?;
    } else {
        println!(
            "chain {}: {} blocks, {} txs replayed, head {}",
            report.chain_id, report.blocks, report.txs, report.head
        );
        for p in &report.problems {
            eprintln!("bad {p}");
        }
    }
    if report.is_clean() {
        return Ok(ExitCode::SUCCESS);
    }
    if !args.source.json {
        eprintln!(
            "verify failed: {} problem(s){}",
            report.problems.len(),
            if report.truncated {
                " (and more not listed)"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::from(1))
}

async fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    use crate::wallet::Usage;
    let rpc = crate::wallet::rpc_url(&args.rpc)?;
    let supply = crate::wallet::parse_amount(&args.supply).map_err(Usage)?;
    let signer = crate::wallet::signer(&args.keys)?;
    let me = signer.address();
    let config = brume_evm::DeployConfig {
        name: args.name,
        symbol: args.symbol,
        holder: args.holder.unwrap_or(me),
        supply: brume_evm::U256::from(supply),
        operator: args.operator.unwrap_or(me),
        unbonding_delay_s: args.unbonding_delay.as_secs(),
    };
    let provider = brume_evm::signing_provider(rpc.clone(), signer);
    let deployed = brume_evm::deploy(&provider, &config)
        .await
        .with_context(|| format!("deploy to {rpc}"))?;
    if args.json {
        print_json(&serde_json::json!({
            "rpc": rpc.to_string(),
            "deployer": me.to_string(),
            "operator": config.operator.to_string(),
            "holder": config.holder.to_string(),
            "supply": supply.to_string(),
            "unbonding_delay_s": config.unbonding_delay_s,
            "token": deployed.token.to_string(),
            "settlement": deployed.settlement.to_string(),
            "stake": deployed.stake.to_string(),
        }))?;
    } else {
        println!("token       {}", deployed.token);
        println!("settlement  {}", deployed.settlement);
        println!("stake       {}", deployed.stake);
        println!("operator    {}", config.operator);
        println!("holder      {} ({supply} base units)", config.holder);
    }
    Ok(ExitCode::SUCCESS)
}
