//! `brume broker`: run a broker; `brume broker keys create|list`: manage
//! API keys; `brume broker providers approve|suspend|ban|list`: the
//! operator's word on providers. Both work on the data dir, whether or not
//! the broker is running (a running broker applies provider changes within
//! a second).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use brume_broker::{Broker, BrokerConfig};
use serde_json::json;

use crate::config::BrokerSection;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BrokerArgs {
    #[command(subcommand)]
    command: Option<BrokerCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
enum BrokerCommand {
    /// Manage the API keys requesters authenticate with.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Approve, suspend or ban provider addresses, and list them. A running
    /// broker closes the session of a suspended or banned provider and
    /// refuses its reconnects (close code 4005, with the reason).
    #[command(subcommand)]
    Providers(ProvidersCommand),
}

#[derive(Debug, clap::Subcommand)]
enum ProvidersCommand {
    /// Record an address as operator-approved (tier 2; lifts a suspension).
    Approve(Standing),
    /// Disconnect an address and refuse it until it is approved.
    Suspend(Standing),
    /// Disconnect an address and refuse it for good.
    Ban(Standing),
    /// The reviewed addresses and every ban (with its reason).
    List {
        #[arg(long, env = "BRUME_DATA_DIR")]
        data: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct Standing {
    /// The provider's address (0x + 40 hex digits).
    address: brume_chain::Address,
    /// Why (shown to the provider when it is refused).
    #[arg(long, default_value = "by the operator")]
    reason: String,
    #[arg(long, env = "BRUME_DATA_DIR")]
    data: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    /// Mint a key. It is printed once; only its hash is stored.
    Create {
        #[arg(long, env = "BRUME_DATA_DIR")]
        data: Option<PathBuf>,
        /// A label for the key (who or what uses it).
        #[arg(long, default_value = "default")]
        name: String,
        /// Bind the key to an account address (0x + 40 hex digits): the
        /// ledger then names the address, not the label, as the requester
        /// (and developer), and the address's escrow pays for its work.
        #[arg(long, value_name = "0xADDRESS")]
        account: Option<brume_chain::Address>,
        #[arg(long)]
        json: bool,
    },
    /// List keys (labels and creation times; never the keys).
    List {
        #[arg(long, env = "BRUME_DATA_DIR")]
        data: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "BRUME_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory: database, modules, the broker's key.
    #[arg(long, env = "BRUME_DATA_DIR")]
    data: Option<PathBuf>,
    #[arg(long, env = "BRUME_REGION")]
    region: Option<String>,
    #[arg(long, env = "BRUME_LATITUDE", allow_hyphen_values = true)]
    latitude: Option<f64>,
    #[arg(long, env = "BRUME_LONGITUDE", allow_hyphen_values = true)]
    longitude: Option<f64>,
    /// Heartbeat interval with providers (silent for 3 intervals = gone).
    #[arg(long, env = "BRUME_HEARTBEAT", value_parser = humantime::parse_duration)]
    heartbeat: Option<Duration>,
    /// How long a provider has to acknowledge an assignment.
    #[arg(long, env = "BRUME_ACK_TIMEOUT", value_parser = humantime::parse_duration)]
    ack_timeout: Option<Duration>,
    /// Print machine-readable JSON lines.
    #[arg(long)]
    json: bool,
}

fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/brume/broker"),
        None => PathBuf::from("brume-broker"),
    }
}

pub async fn main(args: BrokerArgs, file: &BrokerSection) -> ExitCode {
    match args.command {
        Some(BrokerCommand::Keys(k)) => keys(k, file),
        Some(BrokerCommand::Providers(p)) => providers(p, file),
        None => run(args.run, file).await,
    }
}

fn keys(cmd: KeysCommand, file: &BrokerSection) -> ExitCode {
    let data_of = |d: Option<PathBuf>| {
        d.or_else(|| file.data_dir.clone())
            .unwrap_or_else(default_data_dir)
    };
    let result = match cmd {
        KeysCommand::Create {
            data,
            name,
            account,
            json,
        } => {
            let dir = data_of(data);
            let account = account.map(|a| a.to_string());
            brume_broker::store::open_sync(&dir)
                .and_then(|c| brume_broker::store::keys::create(&c, &name, account.as_deref()))
                .map(|token| {
                    if json {
                        println!(
                            "{}",
                            json!({"api_key": token, "name": name, "account": account})
                        );
                    } else {
                        println!("{token}");
                        eprintln!(
                            "API key {name:?} created in {}; it is shown only once.",
                            dir.display()
                        );
                    }
                })
        }
        KeysCommand::List { data, json } => {
            let dir = data_of(data);
            brume_broker::store::open_sync(&dir)
                .and_then(|c| brume_broker::store::keys::list(&c))
                .map(|keys| {
                    if json {
                        let keys: Vec<_> = keys
                            .iter()
                            .map(|k| json!({"name": k.name, "created_at_ms": k.created_at_ms, "account": k.account}))
                            .collect();
                        println!("{}", json!({ "keys": keys }));
                    } else {
                        for k in keys {
                            match &k.account {
                                Some(a) => println!("{}\tcreated {}\taccount {a}", k.name, k.created_at_ms),
                                None => println!("{}\tcreated {}", k.name, k.created_at_ms),
                            }
                        }
                    }
                })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn providers(cmd: ProvidersCommand, file: &BrokerSection) -> ExitCode {
    use brume_broker::store::{self, Standing as S, providers as p};
    let data_of = |d: Option<PathBuf>| {
        d.or_else(|| file.data_dir.clone())
            .unwrap_or_else(default_data_dir)
    };
    let (args, status) = match cmd {
        ProvidersCommand::Approve(a) => (a, S::Approved),
        ProvidersCommand::Suspend(a) => (a, S::Suspended),
        ProvidersCommand::Ban(a) => (a, S::Banned),
        ProvidersCommand::List { data, json } => {
            let listed = store::open_sync(&data_of(data)).and_then(|c| {
                let trust = p::list(&c)?;
                let bans = p::bans(&c)?;
                Ok((trust, bans))
            });
            return match listed {
                Ok((trust, bans)) => {
                    print_providers(&trust, &bans, json);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let address = args.address.to_string();
    let dir = data_of(args.data);
    let set = store::open_sync(&dir)
        .map_err(p::TrustError::from)
        .and_then(|c| p::set(&c, &address, status, &args.reason));
    match set {
        Ok(t) => {
            if args.json {
                println!(
                    "{}",
                    json!({"address": t.address, "status": t.status.as_str(), "reason": t.reason, "at_ms": t.at_ms})
                );
            } else {
                println!("{} {}", t.address, t.status.as_str());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_providers(
    trust: &[brume_broker::store::providers::TrustInfo],
    bans: &[brume_broker::store::providers::BanInfo],
    json_out: bool,
) {
    if json_out {
        let providers: Vec<_> = trust
            .iter()
            .map(|t| json!({"address": t.address, "status": t.status.as_str(), "reason": t.reason, "at_ms": t.at_ms}))
            .collect();
        let bans: Vec<_> = bans
            .iter()
            .map(|b| json!({"address": b.address, "reason": b.reason, "proof": b.has_proof, "at_ms": b.at_ms}))
            .collect();
        println!("{}", json!({"providers": providers, "bans": bans}));
        return;
    }
    if trust.is_empty() && bans.is_empty() {
        eprintln!("no reviewed or banned providers");
        return;
    }
    for t in trust {
        println!("{}\t{}\t{}", t.address, t.status.as_str(), t.reason);
    }
    for b in bans {
        let proof = if b.has_proof {
            " (proof of cheat recorded)"
        } else {
            ""
        };
        println!("{}\tban\t{}{proof}", b.address, b.reason);
    }
}

async fn run(a: RunArgs, file: &BrokerSection) -> ExitCode {
    crate::logging::init();
    let mut config = BrokerConfig::default();
    if let Some(l) = a.listen {
        config.listen = l;
    } else if let Some(l) = &file.listen {
        match l.parse() {
            Ok(l) => config.listen = l,
            Err(e) => {
                eprintln!("error: config broker.listen {l:?}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    config.data_dir = a
        .data
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(default_data_dir);
    if let Some(r) = a.region.or_else(|| file.region.clone()) {
        config.region = r;
    }
    config.latitude = a.latitude.or(file.latitude).unwrap_or(0.0);
    config.longitude = a.longitude.or(file.longitude).unwrap_or(0.0);
    if let Some(l) = &file.ledger {
        config.ledger = l.clone();
    }
    if let Some(c) = &file.chain {
        config.chain = c.clone();
    }
    if let Some(s) = &file.settlement {
        config.settlement = s.clone();
    }
    if let Some(t) = &file.trust {
        config.trust = t.clone();
    }
    if let Some(h) = a.heartbeat {
        config.heartbeat = h;
    }
    if let Some(t) = a.ack_timeout {
        config.ack_timeout = t;
    }
    let data = config.data_dir.clone();
    let broker = match Broker::start(config).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if a.json {
        println!(
            "{}",
            json!({"event": "ready", "url": broker.url(), "broker_id": broker.broker_id(), "data": data})
        );
    } else {
        println!(
            "broker {} listening on {} (data {})",
            broker.broker_id(),
            broker.url(),
            data.display()
        );
    }
    crate::logging::flush_stdout();
    crate::logging::shutdown_signal().await;
    broker.shutdown();
    match broker.wait().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
