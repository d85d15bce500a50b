//! `brume provide`: run a provider daemon; `brume provide status`: ask a
//! running one how it is doing.
//!
//! Each flag also comes from its `BRUME_*` variable, then from the
//! `[provider]` section of the config file, then from the defaults.
//!
//! Test faults stay out of release binaries: the hidden `--fault` flag (a
//! provider that lies on purpose, for the broker's verification tests)
//! exists only in builds with `debug_assertions` (the test binaries); a
//! release `brume provide --fault ...` is an unknown argument. Library users
//! set [`ProviderConfig::fault`] directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[cfg(debug_assertions)]
use brume_provider::Fault;
use brume_provider::{BlacklistSource, Connection, Provider, ProviderConfig};
use serde_json::json;

use crate::config::ProviderSection;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ProvideArgs {
    #[command(subcommand)]
    command: Option<ProvideCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
enum ProvideCommand {
    /// Print a running provider's status (from its control port).
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// The provider's data directory (its control.addr file).
    #[arg(long, env = "BRUME_DATA_DIR")]
    data: Option<PathBuf>,
    /// The control port's address (instead of --data).
    #[arg(long, env = "BRUME_CONTROL")]
    control: Option<SocketAddr>,
    /// Print the status JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The broker's URL (default http://127.0.0.1:7700).
    #[arg(long, env = "BRUME_BROKER")]
    broker: Option<String>,
    /// Data directory: key, module cache, control.addr
    /// (default ~/.local/share/brume/provider).
    #[arg(long, env = "BRUME_DATA_DIR")]
    data: Option<PathBuf>,
    /// Concurrent executions (default: the number of cores).
    #[arg(long, env = "BRUME_SLOTS")]
    slots: Option<u32>,
    /// Memory offered across all slots, e.g. 2GiB (default 2 GiB).
    #[arg(long, env = "BRUME_MEMORY")]
    memory: Option<bytesize::ByteSize>,
    #[arg(long, env = "BRUME_REGION")]
    region: Option<String>,
    /// Where this machine is (with --longitude): --discover prefers the
    /// nearest broker.
    #[arg(
        long,
        env = "BRUME_LATITUDE",
        allow_hyphen_values = true,
        requires = "longitude"
    )]
    latitude: Option<f64>,
    #[arg(
        long,
        env = "BRUME_LONGITUDE",
        allow_hyphen_values = true,
        requires = "latitude"
    )]
    longitude: Option<f64>,
    /// Join the best broker for this provider from --broker's directory
    /// (its region, else the nearest, with queued work; with a hub wallet
    /// under --min-hub-bond), and move to the next best when it goes away.
    #[arg(long)]
    discover: bool,
    /// With --discover: how long the broker may be unreachable before the
    /// provider moves.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    rediscover_after: std::time::Duration,
    /// Price asked, in micro-tokens per 10^9 fuel.
    #[arg(long, env = "BRUME_PRICE_ASK")]
    price_ask: Option<u64>,
    /// The least fee per compute hour (an hour at 1 KMIPS) to work for, in
    /// micro-tokens: work bidding less is declined and goes elsewhere.
    #[arg(long, value_name = "MICROS")]
    min_fee_per_hour: Option<u64>,
    /// Which queued work to take first: `fifo` (the broker's order) or
    /// `profit` (the highest bid of the account whose turn it is).
    #[arg(long, value_enum)]
    policy: Option<PolicyArg>,
    /// How batch work yields the CPU to functions: `idle` (the SCHED_IDLE
    /// policy: batch runs only on cores nothing else wants; default),
    /// `nice` or `nice=N` (a nice value from 1 to 19).
    #[arg(long, value_name = "PRIORITY", env = "BRUME_BATCH_PRIORITY")]
    batch_priority: Option<brume_provider::BatchPriority>,
    /// Accept only this service (repeatable; default: any).
    #[arg(long = "allow", value_name = "SERVICE")]
    allow: Vec<String>,
    /// Control port address (default 127.0.0.1:0).
    #[arg(long, env = "BRUME_CONTROL")]
    control: Option<SocketAddr>,
    /// How long a drain (SIGTERM, SIGINT) waits for in-flight work.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    drain_grace: Duration,
    /// Refuse this module digest (repeatable).
    #[arg(long = "blacklist", value_name = "DIGEST")]
    blacklist: Vec<brume_sandbox::Digest>,
    /// Refuse the module digests in this file: one per line, `#` comments
    /// (repeatable).
    #[arg(long = "blacklist-file", value_name = "FILE")]
    blacklist_file: Vec<PathBuf>,
    /// Subscribe to the signed blacklist at URL, signed by SIGNER
    /// (repeatable).
    #[arg(long = "blacklist-url", value_name = "URL@0xSIGNER")]
    blacklist_url: Vec<BlacklistSource>,
    /// How often subscribed blacklists are fetched again.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    blacklist_refresh: Duration,
    /// Run only modules signed by this developer (repeatable; default: any
    /// module).
    #[arg(long = "require-signed-by", value_name = "0xADDRESS")]
    require_signed_by: Vec<brume_identity::EthAddress>,
    /// The organisation whose private pool this provider joins (trust
    /// tier 1): it then runs only work from that organisation's accounts.
    #[arg(long, value_name = "NAME")]
    org: Option<String>,
    /// Take OCI container jobs, run under bubblewrap (which must be
    /// installed). `brume provide status` says what is enforced.
    #[arg(long)]
    containers: bool,
    /// The host uid containers run as when the provider runs as root (a
    /// uid no other process uses, so a process cap counts only them).
    #[arg(long, value_name = "UID")]
    container_uid: Option<u32>,
    /// A URL prefix jobs' input files may be fetched from (repeatable;
    /// default: only the broker's blob store).
    #[arg(long = "data-url", value_name = "PREFIX")]
    data_urls: Vec<String>,
    /// The size cap of the input file cache (default 1GiB).
    #[arg(long, value_name = "SIZE")]
    data_cache: Option<bytesize::ByteSize>,
    /// How long a cached input file is kept unless its job says (default 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    data_ttl: Option<Duration>,
    /// Take work only while the host's 1-minute load average is at most
    /// this (pauses, keeping the session, above it).
    #[arg(long, value_name = "LOAD")]
    max_load: Option<f64>,
    /// Take work only within these UTC hours, e.g. `22-6`.
    #[arg(long, value_name = "START-END")]
    hours: Option<String>,
    /// The GPU benchmark run at start-up where an NVIDIA GPU exists: a
    /// command (words split on spaces, no quoting) whose last line of
    /// output is the GPU's FP32 TFLOP/s (default: a PyTorch matrix
    /// multiply under python3). GPU time is billed at that speed.
    #[arg(long, value_name = "COMMAND")]
    gpu_bench: Option<String>,
    /// Let container jobs that ask for the network reach it, through this
    /// host's network (default: they get none, and go to other providers).
    #[arg(long)]
    allow_network: bool,
    /// A registry container images may be pulled from, as a base URL
    /// (`https://ghcr.io`, `http://127.0.0.1:5000`; repeatable; default:
    /// none, images come from the broker only).
    #[arg(long = "registry", value_name = "URL")]
    registries: Vec<String>,
    /// Where this machine is, `LAT,LON` in degrees (e.g. `48.85,2.35`):
    /// requesters look for offers near them (`brume offers --near`).
    #[arg(long, value_name = "LAT,LON", value_parser = parse_location)]
    location: Option<(f64, f64)>,
    /// A file of attestation evidence for the broker (trust tier 3): `KIND`
    /// on the first line, the evidence in hex on the second (`test`: the
    /// broker's test authority's signature; see docs/verification.md).
    #[arg(long, value_name = "FILE")]
    attestation: Option<PathBuf>,
    /// Join only a broker whose hub wallet (read on this chain's JSON-RPC)
    /// bonds at least this many base units, is registered or idle, and
    /// missed no payday. Needs --hub-rpc.
    #[arg(long, value_name = "BASE_UNITS", requires = "hub_rpc")]
    min_hub_bond: Option<u128>,
    /// The JSON-RPC URL of the chain the broker's hub wallet is on.
    #[arg(long, value_name = "URL", requires = "min_hub_bond")]
    hub_rpc: Option<String>,
    /// How often the hub wallet is checked again while joined.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    hub_check_every: Duration,
    /// Test mode: misbehave on purpose (wrong-output, wrong-output-tenth,
    /// wrong-fuel, stall, drop, inflate-mips). Debug builds only (see the
    /// module docs).
    #[cfg(debug_assertions)]
    #[arg(long, hide = true, value_name = "MODE")]
    fault: Option<Fault>,
    #[command(flatten)]
    tls: crate::tls::TrustArgs,
    /// Print machine-readable JSON lines on stdout.
    #[arg(long)]
    json: bool,
}

fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/brume/provider"),
        None => PathBuf::from("brume-provider"),
    }
}

pub async fn main(args: ProvideArgs, file: &ProviderSection) -> ExitCode {
    match args.command {
        Some(ProvideCommand::Status(s)) => status(s, file).await,
        None => run(args.run, file).await,
    }
}

/// `LAT,LON` in degrees, each in range.
/// `--policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PolicyArg {
    Fifo,
    Profit,
}

pub(crate) fn parse_location(s: &str) -> Result<(f64, f64), String> {
    let (lat, lon) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?}: expected LAT,LON, e.g. 48.85,2.35"))?;
    let num = |x: &str| x.trim().parse::<f64>().ok().filter(|v| v.is_finite());
    match (num(lat), num(lon)) {
        (Some(lat), Some(lon)) if lat.abs() <= 90.0 && lon.abs() <= 180.0 => Ok((lat, lon)),
        _ => Err(format!(
            "{s:?}: latitude -90 to 90, longitude -180 to 180, in degrees"
        )),
    }
}

/// The registries from the flags, else the config file: base URLs.
fn registries(flags: Vec<String>, file: &ProviderSection) -> Result<Vec<String>, String> {
    let all = if flags.is_empty() {
        file.registries.clone().unwrap_or_default()
    } else {
        flags
    };
    for r in &all {
        let host = r
            .strip_prefix("https://")
            .or_else(|| r.strip_prefix("http://"))
            .map(|h| h.trim_end_matches('/'));
        if host.is_none_or(|h| h.is_empty() || h.contains('/')) {
            return Err(format!(
                "--registry {r:?}: give the registry's base URL, e.g. https://ghcr.io"
            ));
        }
    }
    Ok(all)
}

/// The idle conditions from the flags, else the config file.
fn idle_policy(
    max_load: &Option<f64>,
    hours: &Option<String>,
    file: &ProviderSection,
) -> Result<Option<std::sync::Arc<dyn brume_provider::idle::IdleProbe>>, String> {
    let max_load = max_load.or(file.max_load);
    let hours = match hours.as_deref().or(file.hours.as_deref()) {
        Some(h) => Some(
            brume_provider::idle::IdlePolicy::parse_hours(h).map_err(|e| format!("--hours {e}"))?,
        ),
        None => None,
    };
    if max_load.is_some_and(|l| !l.is_finite() || l < 0.0) {
        return Err("--max-load: a load average is a number of at least 0".into());
    }
    Ok((max_load.is_some() || hours.is_some()).then(|| {
        std::sync::Arc::new(brume_provider::idle::IdlePolicy { max_load, hours })
            as std::sync::Arc<dyn brume_provider::idle::IdleProbe>
    }))
}

fn config(args: RunArgs, file: &ProviderSection) -> Result<ProviderConfig, String> {
    let d = ProviderConfig::default();
    let control = match (args.control, &file.control) {
        (Some(a), _) => a,
        (None, Some(s)) => s
            .parse()
            .map_err(|e| format!("config [provider] control {s:?}: {e}"))?,
        (None, None) => d.control_listen,
    };
    let mut blacklist = args.blacklist;
    for path in &args.blacklist_file {
        blacklist.extend(read_blacklist_file(path)?);
    }
    let tls = args
        .tls
        .trust(file.ca.as_deref(), file.pin_sha256.as_deref())
        .map_err(|e| crate::report(&e))?;
    let allowed = if args.allow.is_empty() {
        file.allowed_services.clone()
    } else {
        Some(args.allow)
    };
    Ok(ProviderConfig {
        broker_url: args
            .broker
            .or_else(|| file.broker.clone())
            .unwrap_or(d.broker_url),
        tls,
        data_dir: args
            .data
            .or_else(|| file.data_dir.clone())
            .unwrap_or_else(default_data_dir),
        slots: args.slots.or(file.slots).unwrap_or(d.slots),
        memory_bytes: args
            .memory
            .or(file.memory)
            .map_or(d.memory_bytes, |m| m.as_u64()),
        region: args
            .region
            .or_else(|| file.region.clone())
            .unwrap_or(d.region),
        allowed_services: allowed,
        price_ask: args.price_ask.or(file.price_ask).unwrap_or(d.price_ask),
        control_listen: control,
        drain_grace: args.drain_grace,
        sandbox: None,
        blacklist,
        blacklist_sources: args.blacklist_url,
        blacklist_refresh: args.blacklist_refresh,
        require_signed_by: args.require_signed_by,
        org: args.org,
        containers: args.containers || file.containers.unwrap_or(false),
        container_uid: args
            .container_uid
            .or(file.container_uid)
            .unwrap_or(d.container_uid),
        data_urls: if args.data_urls.is_empty() {
            file.data_urls.clone().unwrap_or_default()
        } else {
            args.data_urls
        },
        data_cache_bytes: args
            .data_cache
            .or(file.data_cache)
            .map_or(d.data_cache_bytes, |s| s.as_u64()),
        data_ttl: args.data_ttl.unwrap_or(d.data_ttl),
        idle: idle_policy(&args.max_load, &args.hours, file)?,
        idle_every: d.idle_every,
        allow_network: args.allow_network || file.allow_network.unwrap_or(false),
        registries: registries(args.registries, file)?,
        min_fee_per_hour: args.min_fee_per_hour.or(file.min_fee_per_hour).unwrap_or(0),
        policy: match args.policy.or(file.policy) {
            Some(PolicyArg::Profit) => brume_api::wire::Policy::Profit,
            Some(PolicyArg::Fifo) | None => brume_api::wire::Policy::Fifo,
        },
        batch_priority: match (args.batch_priority, &file.batch_priority) {
            (Some(p), _) => p,
            (None, Some(s)) => s.parse().map_err(|e| format!("batch_priority: {e}"))?,
            (None, None) => d.batch_priority,
        },
        location: match (args.location, &file.location) {
            (Some(l), _) => Some(l),
            (None, Some(s)) => Some(parse_location(s).map_err(|e| format!("location: {e}"))?),
            (None, None) => None,
        },
        gpu_bench: match &args.gpu_bench {
            Some(cmd) => cmd.split_whitespace().map(String::from).collect(),
            None => file.gpu_bench.clone().unwrap_or_default(),
        },
        hub: match (args.min_hub_bond, args.hub_rpc) {
            (Some(min_bond), Some(rpc)) => Some(brume_provider::HubRequirement {
                rpc,
                min_bond,
                every: args.hub_check_every,
            }),
            _ => None,
        },
        attestation: match &args.attestation {
            Some(path) => Some(read_attestation(path)?),
            None => None,
        },
        #[cfg(debug_assertions)]
        fault: args.fault,
        #[cfg(not(debug_assertions))]
        fault: None,
        gpus: Default::default(),
    })
}

/// An `--attestation` file: the kind, then the evidence in hex.
fn read_attestation(path: &std::path::Path) -> Result<brume_api::wire::Attestation, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("read --attestation {}: {e}", path.display()))?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let (Some(kind), Some(hex)) = (lines.next(), lines.next()) else {
        return Err(format!(
            "--attestation {}: expected the kind on one line and the evidence in hex on the next",
            path.display()
        ));
    };
    let evidence = hex::decode(hex.strip_prefix("0x").unwrap_or(hex)).map_err(|e| {
        format!(
            "--attestation {}: the evidence is not hex: {e}",
            path.display()
        )
    })?;
    Ok(brume_api::wire::Attestation {
        kind: kind.to_string(),
        evidence: evidence.into(),
    })
}

/// A `--blacklist-file`: one digest a line; blank lines and `#` comments
/// are skipped.
fn read_blacklist_file(path: &std::path::Path) -> Result<Vec<brume_sandbox::Digest>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("read blacklist file {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| (i, line.split('#').next().unwrap_or("").trim()))
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            line.parse()
                .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

async fn run(args: RunArgs, file: &ProviderSection) -> ExitCode {
    crate::logging::init();
    let json = args.json;
    let discover = args.discover.then(|| crate::discover::Discover {
        near: args.latitude.zip(args.longitude),
        rediscover_after: args.rediscover_after,
        json,
    });
    let config = match config(args, file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(d) = discover {
        return crate::discover::run(config, d).await;
    }
    let broker = config.broker_url.clone();
    let running = match Provider::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!(
            "{}",
            json!({
                "event": "ready",
                "address": running.address(),
                "control": running.control_addr().to_string(),
                "fitness_mips": running.fitness_mips(),
            })
        );
    } else {
        println!(
            "provider {} ready: fitness {} MIPS, control http://{}",
            running.address(),
            running.fitness_mips(),
            running.control_addr()
        );
    }
    crate::logging::flush_stdout();

    let handle = running.handle();
    // Announce every (re)connection on stdout.
    let announcer = {
        let mut rx = handle.watch();
        rx.mark_changed(); // Already connected when we subscribe: still announce it.
        let broker = broker.clone();
        tokio::spawn(async move {
            let mut was_connected = false;
            while rx.changed().await.is_ok() {
                let now = *rx.borrow_and_update();
                let connected = matches!(now, Connection::Connected);
                if connected && !was_connected {
                    if json {
                        println!("{}", json!({"event": "connected", "broker": broker}));
                    } else {
                        println!("connected to {broker}");
                    }
                    crate::logging::flush_stdout();
                }
                was_connected = connected || matches!(now, Connection::Draining);
            }
        })
    };
    // First signal: drain; second: stop now.
    let signals = {
        let handle = handle.clone();
        tokio::spawn(async move {
            crate::logging::shutdown_signal().await;
            eprintln!("draining (signal again to stop now)");
            handle.drain();
            crate::logging::shutdown_signal().await;
            handle.shutdown();
        })
    };
    let result = running.wait().await;
    signals.abort();
    announcer.abort();
    match result {
        Ok(()) => {
            if json {
                println!("{}", json!({"event": "stopped"}));
            }
            crate::logging::flush_stdout();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn status(args: StatusArgs, file: &ProviderSection) -> ExitCode {
    let addr = match args.control {
        Some(a) => Ok(a),
        None => {
            let dir = args
                .data
                .or_else(|| file.data_dir.clone())
                .unwrap_or_else(default_data_dir);
            brume_provider::read_control_addr(&dir)
        }
    };
    let status = match addr {
        Ok(a) => brume_provider::fetch_status(a).await,
        Err(e) => Err(e),
    };
    let s = match status {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Earnings: what settlement has paid this address, from the broker's
    // chain API (the provider itself keeps no books).
    let earnings = match brume_client::Client::new(&s.broker_url, None) {
        Ok(c) => c.chain_account(&s.address).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if args.json {
        let mut v = serde_json::to_value(&s).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "earnings".into(),
                match &earnings {
                    Ok(a) => serde_json::json!({
                        "balance": a.balance,
                        "stake": a.allowance,
                    }),
                    Err(e) => serde_json::json!({ "error": e }),
                },
            );
        }
        println!("{v}");
        return ExitCode::SUCCESS;
    }
    let since = s
        .connected_since_ms
        .map(|ms| {
            let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
            format!(" since {}", humantime::format_rfc3339_seconds(t))
        })
        .unwrap_or_default();
    println!("provider {}", s.address);
    println!("  broker        {} ({}{since})", s.broker_url, s.connection);
    println!("  fitness       {} MIPS", s.fitness_mips);
    println!("  slots         {} ({} in flight)", s.slots, s.in_flight);
    println!(
        "  work          {} done, {} failed",
        s.work_done, s.work_failed
    );
    println!("  instructions  {}", s.instructions_executed);
    println!("  modules       {} cached", s.modules_cached);
    match &earnings {
        Ok(a) => println!(
            "  earnings      balance {} base units (settlement pays here), stake {}",
            a.balance, a.allowance
        ),
        Err(e) => println!("  earnings      unknown: {e}"),
    }
    if let Some(h) = &s.hub {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(h.checked_ms);
        println!(
            "  hub wallet    {} at {}: {}",
            if h.ok { "passed" } else { "FAILED" },
            humantime::format_rfc3339_seconds(at),
            h.detail
        );
    }
    println!(
        "  uptime        {}",
        humantime::format_duration(Duration::from_secs(s.uptime_s))
    );
    print_containers(&s);
    ExitCode::SUCCESS
}

/// Whether it is paused, and what it enforces on containers.
fn print_containers(s: &brume_api::rest::ProviderStatus) {
    if let Some(why) = &s.paused {
        println!("  paused        {why}");
    }
    let Some(c) = &s.containers else { return };
    match &c.error {
        Some(e) => println!("  containers    off: {e}"),
        None => {
            let uid = c
                .uid
                .map_or("the provider's".to_string(), |u| u.to_string());
            let cgroups = if c.cgroups.is_empty() {
                "none".to_string()
            } else {
                c.cgroups.join(", ")
            };
            println!(
                "  containers    {}, uid {uid}, cgroup v1: {cgroups}",
                c.runtime
            );
            for note in &c.notes {
                println!("                {note}");
            }
        }
    }
}
