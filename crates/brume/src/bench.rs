//! `brume bench <name>`: product path against a same-run baseline.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Which benchmark: `sandbox`, `invoke`, `job`, `container`, `mixed`,
    /// `ledger`, `lease`, `scale`, `settle`, `verify`, `evm-payout` or
    /// `federation`.
    name: String,
    /// `settle`: how many ledger rows to generate and settle.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// `ledger`, `job`: the store: `sqlite`, `postgres` (a throwaway
    /// cluster in a temp dir; needs PostgreSQL's server binaries) or a
    /// `postgres://` URL (a fresh database on that server, dropped after;
    /// the role needs CREATEDB). `job` on PostgreSQL keeps the broker's
    /// store, ledger and journal there, against the same jobs on SQLite.
    #[arg(long, default_value = "sqlite")]
    store: brume_bench::ledger::Store,
    /// `scale`: the broker serves HTTPS and WSS (a self-signed certificate
    /// the sessions pin), so memory per session includes TLS's.
    #[arg(long)]
    tls: bool,
    /// `scale`: how many provider sessions to open on one broker.
    #[arg(long, default_value_t = brume_bench::scale::DEFAULT_SESSIONS)]
    sessions: usize,
    /// `evm-payout`: how many beneficiaries to pay (at most 100,000).
    #[arg(long, default_value_t = 2_000)]
    payouts: u64,
    /// `federation`: how many calls to make at each broker (forwarded and
    /// local).
    #[arg(long, default_value_t = brume_bench::federation::DEFAULT_CALLS)]
    calls: u64,
    /// `settle`: the chain: `dev` (embedded) or `anvil` (brume's contracts
    /// on a local anvil, from PATH or node_modules).
    #[arg(long, default_value = "dev")]
    chain: ChainArg,
    /// Time budget for the whole run (`federation`: the most any one wait
    /// for the brokers may take).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// Print every figure as one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ChainArg {
    Dev,
    Anvil,
}

pub async fn main(args: BenchArgs) -> ExitCode {
    // On a terminal, a spinner shows the phase under way (its line also
    // prints above it); elsewhere the lines alone.
    let bar = (std::io::IsTerminal::is_terminal(&std::io::stdout())
        && crate::progress::enabled(args.json))
    .then(|| crate::progress::spinner("starting"));
    let mut say = |line: &str| match &bar {
        Some(b) => {
            b.println(line);
            b.set_message(line.trim().to_string());
        }
        None => println!("{line}"),
    };
    let result = match args.name.as_str() {
        "sandbox" => brume_bench::sandbox::run(args.duration, &mut say).await,
        "invoke" => brume_bench::net::invoke(args.duration, &mut say).await,
        "job" => brume_bench::net::job(args.duration, args.store, &mut say).await,
        "container" => brume_bench::container::run(args.duration, &mut say).await,
        "mixed" => brume_bench::mixed::run(args.duration, &mut say).await,
        "ledger" => brume_bench::ledger::run(args.duration, args.store, &mut say).await,
        "settle" => {
            let backend = match args.chain {
                ChainArg::Dev => brume_bench::settle::Backend::Dev,
                ChainArg::Anvil => brume_bench::settle::Backend::Anvil,
            };
            brume_bench::settle::run(args.duration, args.rows, backend, &mut say).await
        }
        "verify" => brume_bench::verify::run(args.duration, &mut say).await,
        "lease" => brume_bench::lease::run(args.duration, &mut say).await,
        "scale" => brume_bench::scale::run(args.duration, args.sessions, args.tls, &mut say).await,
        "evm-payout" => brume_bench::evm::run(args.duration, args.payouts, &mut say).await,
        "federation" => brume_bench::federation::run(args.duration, args.calls, &mut say).await,
        other => Err(anyhow::anyhow!(
            "unknown benchmark {other:?} (known: sandbox, invoke, job, container, mixed, ledger, lease, scale, settle, verify, evm-payout, federation)"
        )),
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match result {
        Ok(figures) => {
            if args.json {
                println!("{figures}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: bench {}: {}", args.name, crate::report(&e));
            ExitCode::FAILURE
        }
    }
}
