//! `brume devnet --brokers N`: N brokers in regions far apart, each with
//! its providers and its own dev chain, finding each other over libp2p on
//! loopback from the first one. Each broker's address is funded and
//! escrowed at every other (a forwarding broker pays its peer), and one
//! requester account (one key, copied to every broker's data dir) is
//! funded at all of them. `--demo` shows the directory and a call
//! forwarded by a broker whose providers went away.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use brume_api::ServiceKind;
use brume_api::federation::headers as fh;
use brume_client::Client;
use brume_localnet::LocalNet;
use bytes::Bytes;
use serde_json::json;

use super::{DevnetArgs, DevnetChain, Site};

/// Far-apart regions: name, latitude, longitude.
const REGIONS: [(&str, f64, f64); 8] = [
    ("eu-west", 48.85, 2.35),
    ("us-east", 40.71, -74.01),
    ("ap-northeast", 35.68, 139.69),
    ("sa-east", -23.55, -46.63),
    ("af-south", -33.92, 18.42),
    ("oc-east", -33.87, 151.21),
    ("ap-south", 19.08, 72.88),
    ("us-west", 37.77, -122.42),
];

/// What each broker's address gets at every other broker, escrowed to
/// that broker's payout account: 1000 tokens.
const BROKER_FUNDS: u128 = 1_000 * 1_000_000_000_000_000_000;

/// How often the devnet's brokers announce themselves, and how long an
/// announcement lasts.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(500);
const ANNOUNCE_TTL: Duration = Duration::from_secs(5);

/// The most the brokers may take to find each other.
const CONVERGE_WITHIN: Duration = Duration::from_secs(60);

pub(super) async fn main(args: &DevnetArgs) -> ExitCode {
    if !args.demo {
        crate::logging::init();
    }
    if args.chain == DevnetChain::Anvil {
        eprintln!(
            "error: devnet: --brokers with --chain anvil is not supported yet (each broker settles on its own dev chain)"
        );
        return ExitCode::from(2);
    }
    let (base, _tmp) = match &args.data {
        Some(d) => (d.clone(), None),
        None => match tempfile::Builder::new().prefix("brume-devnet-").tempdir() {
            Ok(t) => (t.path().to_path_buf(), Some(t)),
            Err(e) => {
                eprintln!("error: devnet: a temporary directory: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let nets = match start_all(args, &base).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: devnet: {}", crate::report(&e));
            return ExitCode::FAILURE;
        }
    };
    banner(&nets, args.json);
    crate::logging::flush_stdout();
    let code = super::demo_or_serve(args.demo.then(|| demo(&nets, args.json))).await;
    for net in nets {
        let _ = net.stop().await;
    }
    code
}

/// Starts the brokers one by one (each after the first bootstraps from
/// the first), funds them at each other, and waits until every broker's
/// directory lists all the others.
async fn start_all(args: &DevnetArgs, base: &Path) -> anyhow::Result<Vec<LocalNet>> {
    let mut nets: Vec<LocalNet> = Vec::new();
    let mut boot = Vec::new();
    for i in 0..args.brokers as usize {
        let (name, latitude, longitude) = REGIONS[i % REGIONS.len()];
        let region = match i / REGIONS.len() {
            0 => name.to_string(),
            k => format!("{name}-{k}"),
        };
        let data = base.join(&region);
        std::fs::create_dir_all(&data).with_context(|| format!("create {}", data.display()))?;
        if let Some(first) = nets.first() {
            // One requester account across the network: services have the
            // same owner~name at every broker.
            let key = first.data_dir().join("requester.key");
            std::fs::copy(&key, data.join("requester.key")).context("copy requester.key")?;
        }
        let site = Site {
            region,
            latitude,
            longitude,
            listen: if i == 0 {
                args.listen
            } else {
                "127.0.0.1:0".parse()?
            },
            data: Some(data.clone()),
            federation: Some(settings(&data, boot.clone())?),
        };
        let net = super::start(args, site, None).await?;
        if i == 0
            && let Some(f) = net.broker().federation()
        {
            boot = f.listen_addrs();
        }
        nets.push(net);
    }
    for payer in &nets {
        for payee in nets.iter().filter(|n| !std::ptr::eq(*n, payer)) {
            payee
                .broker()
                .fund_devnet_account(payer.broker().identity(), BROKER_FUNDS)
                .await
                .context("fund a broker at its peer")?;
        }
    }
    converge(&nets).await?;
    Ok(nets)
}

fn settings(
    data: &Path,
    peers: Vec<brume_federation::Multiaddr>,
) -> anyhow::Result<brume_broker::federation::FederationSettings> {
    Ok(brume_broker::federation::FederationSettings {
        p2p: brume_federation::FederationConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            peers,
            announce_every: ANNOUNCE_EVERY,
            ttl: ANNOUNCE_TTL,
            key_file: data.join("broker").join("p2p.key"),
        },
        ..Default::default()
    })
}

/// Waits until every broker knows every other (on directory changes).
async fn converge(nets: &[LocalNet]) -> anyhow::Result<()> {
    let others = nets.len() - 1;
    let end = Instant::now() + CONVERGE_WITHIN;
    for net in nets {
        let Some(f) = net.broker().federation() else {
            continue;
        };
        let mut changed = f.directory().subscribe();
        while f.directory().live(Instant::now()).len() < others {
            let left = end.saturating_duration_since(Instant::now());
            tokio::time::timeout(left, changed.changed())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "the brokers did not find each other within {CONVERGE_WITHIN:?}"
                    )
                })?
                .context("the federation node stopped")?;
        }
    }
    Ok(())
}

fn banner(nets: &[LocalNet], json_out: bool) {
    let Some(first) = nets.first() else { return };
    if json_out {
        let brokers: Vec<_> = nets
            .iter()
            .map(|n| {
                let b = n.broker();
                let s = b.status();
                json!({
                    "url": b.url(),
                    "broker_id": b.broker_id(),
                    "region": s.region,
                    "latitude": s.latitude,
                    "longitude": s.longitude,
                    "api_key": n.api_key(),
                    "p2p": b.federation().map(|f| f.listen_addrs().iter().map(ToString::to_string).collect::<Vec<_>>()),
                    "providers": n.providers().iter().map(|p| p.address()).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            json!({"event": "ready", "brokers": brokers, "requester": first.requester().map(|r| r.address().to_string())})
        );
        return;
    }
    println!("brume devnet is up: {} federated brokers", nets.len());
    for n in nets {
        let b = n.broker();
        let s = b.status();
        println!(
            "  {:<13} {}  ({}, {} providers)  API key {}",
            s.region,
            b.url(),
            b.broker_id(),
            s.providers_connected,
            n.api_key()
        );
    }
    println!();
    println!("Try, in another terminal:");
    println!(
        "  brume directory --broker {} --near 51.5,-0.13",
        first.url()
    );
    println!(
        "  brume locate --broker {} {} NAME",
        first.url(),
        first
            .requester()
            .map(|r| r.address().to_string())
            .unwrap_or_default()
    );
    println!(
        "  (API keys are per broker; the requester's key, {}/requester.key,",
        first.data_dir().display()
    );
    println!("   signs requests any broker takes: brume keys import, then --key)");
    println!();
    println!("Ctrl-C stops the network.");
}

async fn demo(nets: &[LocalNet], json_out: bool) -> anyhow::Result<()> {
    let say = |s: String| {
        if !json_out {
            println!("{s}");
        }
    };
    let first = &nets[0];
    let client = |n: &LocalNet| -> anyhow::Result<Client> {
        Ok(Client::new(n.url(), Some(n.api_key().to_string()))?.with_tls(n.trust())?)
    };
    say("\n== publish echo at every broker (one owner, one name)".into());
    let mut owner = String::new();
    for n in nets {
        let info = client(n)?
            .publish(
                "echo",
                ServiceKind::Command,
                Bytes::from_static(test_programs_artifacts::ECHO_P1_BYTES),
            )
            .await?;
        owner = info.owner;
    }
    let service = format!("{owner}~echo");
    let c0 = client(first)?;
    let dir = wait_served(&c0, &service, nets.len()).await?;
    say(format!(
        "\n== directory at {} for {service}, nearest London first",
        first.broker().status().region
    ));
    for e in &dir.brokers {
        let a = &e.announcement.announcement;
        say(format!(
            "  {:<13} {:>6.0} km  {}/{} slots free  {}{}",
            a.region,
            e.distance_km.unwrap_or(0.0),
            a.capacity.slots_free,
            a.capacity.slots_total,
            a.url,
            if e.local { "  (this broker)" } else { "" }
        ));
    }

    say(format!(
        "\n== {}'s providers go offline; its calls are forwarded",
        first.broker().status().region
    ));
    for p in first.providers() {
        p.shutdown();
    }
    let end = Instant::now() + CONVERGE_WITHIN;
    while first.broker().status().providers_connected > 0 {
        anyhow::ensure!(Instant::now() < end, "the providers did not leave");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = c0
        .relay(
            http::Method::POST,
            &format!("/v1/functions/{service}/invoke?arg=forwarded"),
            http::HeaderMap::new(),
            Bytes::from_static(b"hello from far away\n"),
        )
        .await?;
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    anyhow::ensure!(
        resp.status().is_success(),
        "the forwarded call failed: {} {}",
        resp.status(),
        String::from_utf8_lossy(resp.body())
    );
    let by = h(fh::BROKER);
    let ran_at = nets
        .iter()
        .find(|n| n.broker().broker_id().eq_ignore_ascii_case(&by))
        .context("the answer names no broker of this network")?;
    say(format!(
        "  -> {:?}\n  ran at {} ({}), forwarded by {}, provider {}, cost {} base units",
        String::from_utf8_lossy(resp.body()),
        ran_at.broker().status().region,
        by,
        h(fh::FORWARDED_BY),
        h("x-brume-provider"),
        h("x-brume-cost"),
    ));
    if json_out {
        println!(
            "{}",
            json!({"event": "forwarded", "broker": by, "forwarded_by": h(fh::FORWARDED_BY), "work_id": h("x-brume-work-id"), "cost": h("x-brume-cost")})
        );
    }
    say("\ndemo complete.".into());
    Ok(())
}

/// Waits until `client`'s broker lists `n` brokers serving `service`;
/// the directory ranked from London.
async fn wait_served(
    client: &Client,
    service: &str,
    n: usize,
) -> anyhow::Result<brume_api::federation::Directory> {
    let end = Instant::now() + CONVERGE_WITHIN;
    loop {
        let d = client
            .directory(Some(service), Some((51.5, -0.13)), None, None)
            .await?;
        if d.brokers.len() >= n {
            return Ok(d);
        }
        anyhow::ensure!(
            Instant::now() < end,
            "only {} of {n} brokers announce {service}",
            d.brokers.len()
        );
        tokio::time::sleep(ANNOUNCE_EVERY / 4).await;
    }
}
