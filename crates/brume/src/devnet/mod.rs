//! `brume devnet`: a broker and N providers on loopback, in this process,
//! with one data directory. `--demo` publishes the examples, calls them,
//! runs a batch job with a progress bar, prints results and usage, exits.
//! `--tls` serves HTTPS and WSS with a self-signed certificate that the
//! providers and the demo's client pin by its fingerprint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use brume_api::ServiceKind;
use brume_api::rest::{EventKind, JobSpec, LimitsSpec};
use brume_broker::RunningBroker;
use brume_client::Client;
use brume_localnet::LocalNet;
use bytes::Bytes;
use serde_json::json;

mod container;
mod federated;

#[derive(Debug, clap::Args)]
pub struct DevnetArgs {
    /// How many providers to start.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    providers: u32,
    /// Slots (concurrent executions) per provider.
    #[arg(long, default_value_t = 2)]
    slots: u32,
    /// Data directory for the broker and providers (default: a fresh
    /// temporary directory, removed on exit).
    #[arg(long, env = "BRUME_DEVNET_DATA")]
    data: Option<PathBuf>,
    /// Broker address (default: a free port on 127.0.0.1).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Publish the examples, call them, run a job, print results, exit.
    #[arg(long)]
    demo: bool,
    /// Serve HTTPS and WSS with a self-signed certificate (kept in
    /// DATA/broker/tls); the providers and the demo pin its fingerprint,
    /// which is printed.
    #[arg(long)]
    tls: bool,
    /// Print the network's details as one JSON object.
    #[arg(long)]
    json: bool,
    /// The token chain: `dev` (embedded, the default) or `anvil` (a fresh
    /// local anvil, from PATH or node_modules, with brume's contracts
    /// deployed; settlement goes through them).
    #[arg(long, default_value = "dev")]
    chain: DevnetChain,
    /// How many brokers: more than one starts a federation, brokers in
    /// regions far apart, each with --providers providers, finding each
    /// other over libp2p on loopback. `--demo` then shows the directory
    /// and a forwarded call.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    brokers: u32,
    /// Keep the broker's ledger in PostgreSQL at this `postgres://` URL
    /// (default: SQLite in the data dir). One broker only.
    #[arg(long, value_parser = brume_pg::url_arg)]
    store: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DevnetChain {
    Dev,
    Anvil,
}

/// What the devnet's requester account gets from the faucet, and approves
/// to the payout account as escrow: 1000 tokens.
const REQUESTER_FUNDS: u128 = 1_000 * 1_000_000_000_000_000_000;

/// Where one devnet broker stands.
#[derive(Debug, Clone)]
struct Site {
    region: String,
    latitude: f64,
    longitude: f64,
    listen: SocketAddr,
    data: Option<PathBuf>,
    federation: Option<brume_broker::federation::FederationSettings>,
}

impl Site {
    fn single(args: &DevnetArgs) -> Site {
        Site {
            region: "devnet".into(),
            latitude: 0.0,
            longitude: 0.0,
            listen: args.listen,
            data: args.data.clone(),
            federation: None,
        }
    }
}

/// A broker with the faucet on and settlement every 10 s, a requester
/// account funded with [`REQUESTER_FUNDS`] and escrowed to the payout
/// account, an API key bound to it (also written to `DATA/api-key`), and
/// `--providers` providers sharing one sandbox, all connected.
async fn start(
    args: &DevnetArgs,
    site: Site,
    anvil: Option<&brume_evm::LocalAnvil>,
) -> anyhow::Result<LocalNet> {
    let chain = match anvil {
        None => brume_broker::chain::ChainConfig {
            faucet: true,
            require_allowance: true,
            ..Default::default()
        },
        Some(anvil) => evm_chain_config(args, anvil)?,
    };
    let region = site.region.clone();
    let store = args.store.clone().unwrap_or_default();
    let mut builder = LocalNet::builder()
        .name("devnet")
        .broker(move |c| {
            c.listen = site.listen;
            c.region = site.region;
            c.latitude = site.latitude;
            c.longitude = site.longitude;
            c.federation = site.federation;
            c.chain = chain.clone();
            c.ledger.store = store;
            c.settlement = brume_broker::settlement::SettlementConfig {
                period_s: 10,
                ..Default::default()
            };
        })
        .requester_account(REQUESTER_FUNDS)
        .providers(args.providers as usize)
        .slots(args.slots)
        .shared_sandbox()
        .provider_config(move |_, c| c.region = region.clone());
    if let Some(data) = &site.data {
        builder = builder.data_dir(data);
    } else if container::available() {
        // Its own temporary data dir: one the sandbox's uid can reach.
        builder = builder.containers(true);
    }
    if args.tls {
        builder = builder.tls_self_signed();
    }
    let net = builder.start().await?;
    let _ = std::fs::write(
        net.data_dir().join("api-key"),
        format!("{}\n", net.api_key()),
    );
    Ok(net)
}

/// The broker's `[broker.chain]` for a local anvil: the deployment and
/// the operator's key written under `DATA/evm` (a fresh directory: a data
/// dir that settled on an earlier anvil, now gone, is refused).
fn evm_chain_config(
    args: &DevnetArgs,
    anvil: &brume_evm::LocalAnvil,
) -> anyhow::Result<brume_broker::chain::ChainConfig> {
    let base = match &args.data {
        Some(d) => d.clone(),
        None => evm_temp_dir(anvil),
    };
    let dir = base.join("evm");
    if dir.join("deployment.json").exists() {
        anyhow::bail!(
            "{} settled on an earlier anvil, which is gone: use a fresh --data with --chain anvil",
            base.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let d = anvil.deployment;
    std::fs::write(
        dir.join("deployment.json"),
        json!({
            "rpc": anvil.url().to_string(),
            "chain_id": anvil.chain_id(),
            "token": d.token.to_string(),
            "settlement": d.settlement.to_string(),
            "stake": d.stake.to_string(),
            "operator": anvil.operator.address().to_string(),
        })
        .to_string(),
    )?;
    let key = brume_identity::Identity::from_bytes(anvil.operator.to_bytes().as_slice())?;
    brume_identity::keystore::write_file(
        &dir.join("operator.key"),
        format!("{}\n", key.to_hex().as_str()).as_bytes(),
    )?;
    Ok(brume_broker::chain::ChainConfig {
        kind: brume_broker::chain::ChainKind::Evm,
        faucet: true,
        require_allowance: true,
        rpc: Some(anvil.url().to_string()),
        deployment: Some(dir.join("deployment.json")),
        operator_key: Some(dir.join("operator.key")),
        confirmations: 1,
        ..Default::default()
    })
}

/// Where the chain files go without `--data` (removed once started).
fn evm_temp_dir(anvil: &brume_evm::LocalAnvil) -> PathBuf {
    std::env::temp_dir().join(format!(
        "brume-devnet-evm-{}-{}",
        std::process::id(),
        anvil.url().port().unwrap_or_default()
    ))
}

pub async fn main(args: DevnetArgs) -> ExitCode {
    if !args.demo {
        crate::logging::init();
    }
    let anvil = match args.chain {
        DevnetChain::Dev => None,
        DevnetChain::Anvil => match brume_evm::LocalAnvil::start().await {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("error: devnet: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    if args.brokers > 1 {
        if args.store.is_some() {
            eprintln!(
                "error: devnet: --store takes one broker (each broker needs a database of its own)"
            );
            return ExitCode::FAILURE;
        }
        return federated::main(&args).await;
    }
    let net = start(&args, Site::single(&args), anvil.as_ref()).await;
    if let (Some(a), None) = (&anvil, &args.data) {
        // The broker read its chain files at start; a devnet without a
        // data dir leaves nothing behind.
        let _ = std::fs::remove_dir_all(evm_temp_dir(a));
    }
    let net = match net {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: devnet: {}", crate::report(&e));
            return ExitCode::FAILURE;
        }
    };
    let url = net.url().to_string();
    if args.json {
        let providers: Vec<_> = net
            .providers()
            .iter()
            .map(|p| json!({"address": p.address(), "control": p.control_addr(), "fitness_mips": p.fitness_mips()}))
            .collect();
        println!(
            "{}",
            json!({"event": "ready", "broker": url, "broker_id": net.broker().broker_id(), "tls_sha256": pin(&net), "api_key": net.api_key(), "requester": requester(&net), "payout_account": net.broker().payout_account().to_string(), "providers": providers, "chain": anvil.as_ref().map(|a| json!({"kind": "anvil", "rpc": a.url().to_string(), "chain_id": a.chain_id(), "token": a.deployment.token.to_string(), "settlement": a.deployment.settlement.to_string(), "stake": a.deployment.stake.to_string()}))})
        );
    } else {
        print_banner(&net, anvil.as_ref());
    }
    crate::logging::flush_stdout();
    let code = demo_or_serve(args.demo.then(|| demo(&net, args.json))).await;
    let _ = net.stop().await;
    code
}

/// Runs the demo (its outcome is the exit status), or serves until a
/// signal.
async fn demo_or_serve(demo: Option<impl Future<Output = anyhow::Result<()>>>) -> ExitCode {
    let Some(demo) = demo else {
        crate::logging::shutdown_signal().await;
        eprintln!("devnet: stopping (draining providers)...");
        return ExitCode::SUCCESS;
    };
    match demo.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: demo: {}", crate::report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The fingerprint of the broker's certificate, with `--tls`.
fn pin(net: &LocalNet) -> Option<String> {
    net.broker().tls_fingerprint().map(|f| f.to_string())
}

/// The requester account's address (the devnet always has one).
fn requester(net: &LocalNet) -> String {
    net.requester()
        .map(|r| r.address().to_string())
        .unwrap_or_default()
}

fn print_banner(net: &LocalNet, anvil: Option<&brume_evm::LocalAnvil>) {
    let url = net.url();
    println!("brume devnet is up");
    println!("  broker     {url}  ({})", net.broker().broker_id());
    let pin = pin(net);
    if let Some(pin) = &pin {
        println!("  TLS        self-signed, sha256 {pin}");
        println!("             (pinned by the providers; certificate broker/tls/self-signed.crt)");
    }
    for (i, p) in net.providers().iter().enumerate() {
        println!(
            "  provider {i} {}  {} MIPS, control http://{}",
            p.address(),
            p.fitness_mips(),
            p.control_addr()
        );
    }
    println!(
        "  API key    {}  (account {}, 1000 tok escrowed; key file requester.key)",
        net.api_key(),
        requester(net)
    );
    match anvil {
        None => println!("  chain      {url}/v1/chain  (faucet on)"),
        Some(a) => {
            println!(
                "  chain      anvil {} (chain id {}), settlement contract {}",
                a.url(),
                a.chain_id(),
                a.deployment.settlement
            );
            println!("             (deployment and operator key in DATA/evm)");
        }
    }
    println!();
    println!("Try, in another terminal:");
    println!(
        "  export BRUME_BROKER={url} BRUME_API_KEY={}",
        net.api_key()
    );
    if let Some(pin) = &pin {
        println!("  export BRUME_PIN_SHA256={pin}");
    }
    println!("  brume service publish my.wasm --name my-fn");
    println!("  echo hello | brume invoke my-fn --data -");
    println!("  brume run my.wasm -- --some-arg");
    match &pin {
        Some(_) => {
            let cert = net.data_dir().join("broker/tls/self-signed.crt");
            println!("  curl --cacert {} {url}/v1/status", cert.display());
        }
        None => println!("  curl {url}/v1/status"),
    }
    println!();
    println!("Ctrl-C stops the network.");
}

async fn demo(net: &LocalNet, json_out: bool) -> anyhow::Result<()> {
    use test_programs_artifacts as guests;
    let broker = net.broker();
    let client =
        Client::new(broker.url(), Some(net.api_key().to_string()))?.with_tls(net.trust())?;
    let say = |s: String| {
        if !json_out {
            println!("{s}");
        }
    };

    say("\n== publish".into());
    let modules: [(&str, ServiceKind, &[u8]); 3] = [
        ("echo", ServiceKind::Command, guests::ECHO_P1_BYTES),
        ("hello-http", ServiceKind::Http, guests::HTTP_HELLO_BYTES),
        (
            "monte-carlo",
            ServiceKind::Command,
            guests::MONTE_CARLO_BYTES,
        ),
    ];
    for (name, kind, bytes) in modules {
        let info = client
            .publish(name, kind, Bytes::from_static(bytes))
            .await?;
        say(format!(
            "  {:<12} {:<8} sha256:{}  {} KiB",
            info.name,
            info.kind.as_str(),
            &info.digest[..16],
            info.size_bytes / 1024
        ));
    }

    say("\n== invoke echo (a WASI command: stdin in, stdout out)".into());
    let r = client
        .invoke("echo", &[], Bytes::from_static(b"hello, brume\n"))
        .await?;
    say(format!(
        "  -> {:?}  exit {}  fuel {}  provider {}  attempts {}",
        String::from_utf8_lossy(&r.body),
        r.exit_code.unwrap_or(-1),
        r.fuel.unwrap_or(0),
        r.provider.as_deref().unwrap_or("?"),
        r.attempts.unwrap_or(0)
    ));
    // Warm: the module is compiled now; time a few calls.
    let mut best = Duration::MAX;
    for _ in 0..20 {
        let t = std::time::Instant::now();
        client.invoke("echo", &[], Bytes::from_static(b"x")).await?;
        best = best.min(t.elapsed());
    }
    say(format!(
        "  warm round trip (best of 20, incl. HTTP client): {} µs",
        best.as_micros()
    ));

    say("\n== call hello-http (a wasi:http component behind /fn/)".into());
    let h = client
        .call_http(
            http::Method::GET,
            "hello-http",
            "/greet?who=devnet",
            http::HeaderMap::new(),
            Bytes::new(),
        )
        .await?;
    say(format!(
        "  -> {} {:?}",
        h.response.status(),
        String::from_utf8_lossy(h.response.body())
    ));

    say("\n== batch job: Monte Carlo option pricing, 12M paths, deterministic".into());
    let spec = JobSpec {
        service: Some("monte-carlo".into()),
        args: [
            "--paths",
            "12000000",
            "--steps",
            "4",
            "--kind",
            "asian-call",
        ]
        .map(String::from)
        .to_vec(),
        profile: brume_api::Profile::Deterministic,
        limits: LimitsSpec {
            fuel: Some(200_000_000_000),
            timeout_ms: Some(120_000),
            ..LimitsSpec::default()
        },
        labels: [("demo".to_string(), "devnet".to_string())].into(),
        ..JobSpec::default()
    };
    let job = client.submit(&spec).await?;
    say(format!("  job {} queued", job.id));
    let bar = if json_out {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("  {spinner} {elapsed:>3} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(100));
        b
    };
    let result = client
        .wait_with(job.id, |ev| {
            let msg = match ev.kind {
                EventKind::Progress => {
                    format!("running: {} Minstr", ev.fuel.unwrap_or(0) / 1_000_000)
                }
                other => format!("{} (attempt {})", other.as_str(), ev.attempt),
            };
            bar.set_message(msg);
        })
        .await?;
    bar.finish_and_clear();
    let u = result.usage;
    if json_out {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "  state {}  exit {}",
            result.state.as_str(),
            result.exit_code.unwrap_or(-1)
        );
        println!(
            "  stdout {}",
            String::from_utf8_lossy(&result.stdout.0).trim()
        );
        println!(
            "  usage: {} instructions (fuel), peak memory {} KiB, wall {} ms, {} B in / {} B out, provider {}",
            u.fuel,
            u.peak_memory_bytes / 1024,
            u.wall_us / 1000,
            u.bytes_in,
            u.bytes_out,
            result.provider.as_deref().unwrap_or("?")
        );
    }
    if result.state != brume_api::rest::JobState::Succeeded || result.exit_code != Some(0) {
        anyhow::bail!("the demo job did not succeed: {:?}", result.error);
    }
    if net
        .providers()
        .iter()
        .any(|p| p.status().containers.is_some_and(|c| c.enabled))
    {
        container::demo(&client, &say).await?;
    }
    let status = client.status().await?;
    say(format!(
        "\n== broker status: {} providers, {}/{} slots free, uptime {} s",
        status.providers_connected,
        status.capacity.slots_free,
        status.capacity.slots_total,
        status.uptime_s
    ));
    ledger_summary(broker, &job.id.to_string(), &say).await?;
    settlement_summary(broker, &say).await?;
    say("\ndemo complete.".into());
    Ok(())
}

/// Settles everything now, prints who paid and who was paid, and audits
/// the settlement against the ledger and the chain; an unbalanced or
/// unclean settlement fails the demo.
async fn settlement_summary(broker: &RunningBroker, say: &impl Fn(String)) -> anyhow::Result<()> {
    broker.ledger_settled().await;
    let report = broker
        .settle_now()
        .await
        .map_err(|e| anyhow::anyhow!("settle: {e} ({})", e.code()))?;
    say("\n== settlement".into());
    let text = crate::requester::settle_text(&serde_json::to_value(&report)?);
    for line in text.lines() {
        say(format!("  {line}"));
    }
    if !report.balanced {
        anyhow::bail!("the settlement invariants do not hold");
    }
    let audit = broker
        .settlement_audit()
        .await
        .map_err(|e| anyhow::anyhow!("settlement audit: {e}"))?;
    if !audit.is_clean() {
        anyhow::bail!(
            "the settlement audit failed: {}",
            audit
                .mismatched
                .iter()
                .chain(&audit.untraced)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    say(format!(
        "  audit: {} settlement transfers match their rows' aggregates on the chain",
        audit.transfers
    ));
    Ok(())
}

/// Prints the ledger's rows, their total fee and the job's payout split,
/// then audits every row in-process; an unclean audit fails the demo.
async fn ledger_summary(
    broker: &RunningBroker,
    job_id: &str,
    say: &impl Fn(String),
) -> anyhow::Result<()> {
    use brume_ledger::store::{LedgerStore as _, ListQuery, MAX_PAGE, RowFilter};
    // Sync calls append their rows in the background: wait for them.
    broker.ledger_settled().await;
    let store = broker.ledger();
    let (mut rows, mut fee_micros, mut tokens, mut currency) = (0u64, 0u128, 0u128, String::new());
    let mut job_row = None;
    let mut cursor = None;
    loop {
        let page = store
            .list(ListQuery {
                filter: RowFilter::default(),
                cursor,
                limit: Some(MAX_PAGE),
                private: false,
            })
            .await
            .context("read the ledger")?;
        for r in page.rows {
            rows += 1;
            fee_micros += u128::from(r.data.fee_micros);
            tokens += r.data.token_amount;
            currency.clone_from(&r.data.fee_currency);
            if r.data.work_id == job_id {
                job_row = Some(r);
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    say(format!(
        "\n== ledger: {rows} rows, total fee {fee_micros} micro-{currency} = {tokens} token base units"
    ));
    if let Some(r) = &job_row {
        say(format!(
            "  job row {}: fee {} micro-{} ({} token base units), row hash {}",
            r.data.work_id, r.data.fee_micros, r.data.fee_currency, r.data.token_amount, r.row_hash
        ));
        for p in &r.data.payers {
            say(format!(
                "    paid by {} {}  {} token base units",
                p.kind, p.account, p.amount
            ));
        }
        for p in &r.data.payouts {
            say(format!(
                "    {:<9} {}  {} token base units",
                p.role, p.beneficiary, p.amount
            ));
        }
    }
    let report = brume_ledger::audit::audit_store(store, RowFilter::default(), true)
        .await
        .context("audit the ledger")?;
    if !report.is_clean() {
        anyhow::bail!("the ledger audit failed: {}", report.bad_rows().join(", "));
    }
    say(format!(
        "  audit: {} rows clean, aggregate {}",
        report.rows,
        report.aggregate.hash()
    ));
    if job_row.is_none() {
        anyhow::bail!("the demo job has no ledger row");
    }
    Ok(())
}
