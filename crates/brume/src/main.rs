//! The `brume` command: a thin front-end over the libraries.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod exec;

#[derive(Debug, Parser)]
#[command(
    name = "brume",
    version,
    about = "brume: a decentralized compute exchange"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a WebAssembly module in the metered sandbox, like `wasmtime run`.
    Exec(Box<exec::ExecArgs>),
    /// Measure a component against a baseline in the same run.
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Which benchmark: `sandbox`.
    name: String,
    /// Time budget for the whole run.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// Print every figure as one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Exec(args) => runtime.block_on(exec::main(*args)),
        Command::Bench(args) => runtime.block_on(bench(args)),
    }
}

async fn bench(args: BenchArgs) -> ExitCode {
    let result = match args.name.as_str() {
        "sandbox" => brume_bench::sandbox::run(args.duration, &mut |line| println!("{line}")).await,
        other => Err(anyhow::anyhow!(
            "unknown benchmark {other:?} (known: sandbox)"
        )),
    };
    match result {
        Ok(figures) => {
            if args.json {
                println!("{figures}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: bench {}: {e:#}", args.name);
            ExitCode::FAILURE
        }
    }
}
