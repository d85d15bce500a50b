//! The `brume` command: a thin front-end over the libraries. Each
//! subcommand lives in its own module and only turns flags, `BRUME_*`
//! variables and the config file into library calls.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod accounts;
mod bench;
mod broker;
mod chain;
mod config;
mod devnet;
mod directory;
mod discover;
mod exec;
mod files;
mod hub;
mod keys;
mod lease;
mod ledger;
mod logging;
mod offers;
mod progress;
mod proof;
mod provide;
mod requester;
mod tls;
mod wallet;

#[derive(Debug, Parser)]
#[command(
    name = "brume",
    version,
    about = "brume: a decentralized compute exchange"
)]
struct Cli {
    /// TOML config file (default: ~/.config/brume/config.toml if present).
    #[arg(long, global = true, env = "BRUME_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a WebAssembly module in the metered sandbox, like `wasmtime run`.
    Exec(Box<exec::ExecArgs>),
    /// Run a regional broker, or manage its API keys.
    Broker(broker::BrokerArgs),
    /// Run a provider daemon, or ask a running one for its status.
    Provide(provide::ProvideArgs),
    /// Start a local network (a broker and N providers) on loopback.
    Devnet(devnet::DevnetArgs),
    /// Publish and inspect services.
    Service(requester::ServiceArgs),
    /// Call a function service and print its output.
    Invoke(requester::InvokeArgs),
    /// The brokers of the federation, ranked by distance and free capacity.
    Directory(directory::DirectoryArgs),
    /// Which brokers serve a service, and how to call it there.
    Locate(directory::LocateArgs),
    /// Upload a module, run it as a job, show progress, exit with its code.
    Run(requester::RunArgs),
    /// What the broker's providers offer: resources, price, place,
    /// reputation; filtered and sorted.
    Offers(offers::OffersArgs),
    /// Settle now: collect from payers, pay beneficiaries, on the chain.
    Settle(requester::SettleArgs),
    /// Inspect and cancel jobs.
    Job(requester::JobArgs),
    /// Leases: a wasi:http service kept running on a provider, paid from
    /// an escrow that drips per second.
    Lease(lease::LeaseArgs),
    /// Measure a component against a baseline in the same run.
    Bench(bench::BenchArgs),
    /// Export a broker's ledger, or audit every row hash.
    Ledger(ledger::LedgerArgs),
    /// Manage the keyring: keystores whose addresses are accounts.
    Keys(keys::KeysArgs),
    /// Inspect and verify the embedded dev chain.
    Chain(chain::ChainArgs),
    /// Check a proof of cheat (or a signed receipt, or a call's receipt
    /// proof) offline.
    VerifyProof(proof::VerifyProofArgs),
    /// An account's tokens through a broker: balance, approve (escrow),
    /// stake, history.
    Wallet(wallet::WalletArgs),
    /// A broker's hub wallet on an EVM network: deploy, status, the hub's
    /// and the DAO's calls.
    Hub(hub::HubArgs),
    /// Print a shell completion script: `brume completions bash >
    /// /etc/bash_completion.d/brume` (or zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// An error and its causes, as `{:#}` prints them, but without a cause
/// whose text the message already holds. The libraries' errors put their
/// source's text in their own message (`"GET {url}: {source}"`) and also
/// return it from `source()`, so `{:#}` alone would print it twice.
pub(crate) fn report(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = match config::load(cli.config.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Exec(args) => exec::main(*args).await,
            Command::Completions { shell } => {
                use clap::CommandFactory as _;
                use std::io::Write as _;
                // Into memory first: a closed pipe is an error, not a panic.
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "brume", &mut script);
                match std::io::stdout().write_all(&script) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Broker(args) => broker::main(args, &file.broker).await,
            Command::Provide(args) => provide::main(args, &file.provider).await,
            Command::Devnet(args) => devnet::main(args).await,
            Command::Service(args) => requester::service(args, &file.client).await,
            Command::Invoke(args) => requester::invoke(args, &file.client).await,
            Command::Directory(args) => directory::directory(args, &file.client).await,
            Command::Locate(args) => directory::locate(args, &file.client).await,
            Command::Run(args) => requester::run(args, &file.client).await,
            Command::Settle(args) => requester::settle(args, &file.client).await,
            Command::Job(args) => requester::job(args, &file.client).await,
            Command::Lease(args) => lease::main(args, &file.client).await,
            Command::Offers(args) => offers::main(args, &file.client).await,
            Command::Bench(args) => bench::main(args).await,
            Command::Ledger(args) => ledger::main(args).await,
            Command::Keys(args) => keys::main(args),
            Command::Chain(args) => chain::main(args).await,
            Command::VerifyProof(args) => proof::main(&args).await,
            Command::Wallet(args) => wallet::main(args, &file.client).await,
            Command::Hub(args) => hub::main(args).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::report;

    #[test]
    fn reports_name_each_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        // A library error that shows its source and returns it.
        let e = anyhow::Error::new(brume_identity::IdentityError::Io {
            path: "/k".into(),
            source: io(),
        });
        assert_eq!(format!("{e:#}"), "/k: gone: gone");
        assert_eq!(report(&e), "/k: gone");
        // Context that does not show its cause.
        let e = anyhow::Error::new(io()).context("read key");
        assert_eq!(report(&e), "read key: gone");
        let e = anyhow::Error::new(brume_identity::IdentityError::Io {
            path: "/k".into(),
            source: io(),
        })
        .context("load");
        assert_eq!(report(&e), "load: /k: gone");
    }
}
