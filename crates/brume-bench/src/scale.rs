//! `brume bench scale`: one broker, many provider sessions.
//!
//! The broker runs as a child process (`brume broker`, its own open-files
//! limit and its own RSS); this process opens `--sessions` real provider
//! WebSocket sessions to it, each a light protocol client: a signed
//! handshake, the broker's fitness, memory and bandwidth challenges
//! answered (natively: the same functions the broker checks with, and the
//! fuel of one sandboxed run), heartbeats both ways, and every assignment
//! answered at once with a signed result (or a leaf and a signed root, for
//! a call) as a provider running a trivial guest would.
//!
//! Phases: a same-run baseline (calls with one session connected), then
//! every session; the broker's RSS per session; its CPU while only
//! heartbeats flow; one job per session, counting the sessions work
//! reached; the scheduler's matching time (`brume_match_duration_seconds`
//! on `/metrics`); and calls at that scale.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use brume_api::receipt::Receipt;
use brume_api::rest::{JobSpec, Output};
use brume_api::wire::{
    self, Assign, CONTROL, Capabilities, Done, FromProvider, Hello, MeasureDone, MemoryAnswer,
    Outcome, ToProvider,
};
use brume_api::{ServiceKind, Usage};
use brume_client::Client;
use brume_identity::Identity;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::{Samples, round};

/// Sessions by default (the figure).
pub const DEFAULT_SESSIONS: usize = 10_000;
/// Handshakes in flight at once.
const CONNECTING: usize = 64;
/// The broker's heartbeat (and the sessions' own pings).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long only heartbeats flow while the broker's CPU is sampled.
const IDLE_WINDOW: Duration = Duration::from_secs(5);

/// What every session shares.
struct Shared {
    url: String,
    /// The broker's HTTP base URL (bandwidth probes are fetched there).
    http: String,
    /// With TLS: the WebSocket connector pinning the broker's certificate.
    ws_tls: Option<tokio_tungstenite::Connector>,
    /// HTTP(S) to the broker (probes, metrics), pinned alike.
    client: reqwest::Client,
    /// The fuel of the fitness challenge (one sandboxed run).
    fuel: u64,
    /// Sessions that got at least one assignment.
    reached: AtomicU64,
    /// Jobs held, and results sent.
    held: AtomicU64,
    done: AtomicU64,
    /// Held jobs are answered once this is cancelled.
    release: CancellationToken,
    stop: CancellationToken,
}

/// The broker child: its process, URL and API key.
struct Broker {
    child: tokio::process::Child,
    pid: u32,
    url: String,
    key: String,
    /// With TLS: the trust pinning its self-signed certificate.
    trust: Option<brume_tls::Trust>,
    _dir: tempfile::TempDir,
}

/// `tls`: the broker serves HTTPS and WSS (self-signed; the sessions and
/// the client pin it), so the memory per session includes TLS's.
pub async fn run(
    duration: Duration,
    sessions: usize,
    tls: bool,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<serde_json::Value> {
    let limit = raise_open_files();
    out(&format!(
        "open files: {limit} for this process (the broker's is raised alike)"
    ));
    let broker = start_broker(tls).await?;
    let trust = broker.trust.clone().unwrap_or_default();
    let client = Client::new(&broker.url, Some(broker.key.clone()))?.with_tls(&trust)?;
    client
        .publish(
            "echo",
            ServiceKind::Command,
            Bytes::from_static(test_programs_artifacts::ECHO_P1_BYTES),
        )
        .await?;
    let shared = Arc::new(Shared {
        url: format!(
            "{}/v1/provider/connect",
            broker
                .url
                .replacen("https://", "wss://", 1)
                .replacen("http://", "ws://", 1)
        ),
        http: broker.url.clone(),
        ws_tls: broker
            .trust
            .as_ref()
            .map(|t| t.ws_connector())
            .transpose()?,
        client: trust.reqwest(reqwest::Client::builder())?.build()?,
        fuel: challenge_fuel().await?,
        reached: AtomicU64::new(0),
        held: AtomicU64::new(0),
        done: AtomicU64::new(0),
        release: CancellationToken::new(),
        stop: CancellationToken::new(),
    });
    let rss_before = rss_kb(broker.pid)?;

    // Baseline: calls with one session.
    connect(&shared, 1).await?;
    let calls = calls_for(duration / 6);
    let alone = invoke_samples(&client, calls).await?;
    out(&format!("one session: invoke p50 {:.0} µs", alone.us(0.5)));

    // Every session.
    let t = Instant::now();
    connect(&shared, sessions.saturating_sub(1)).await?;
    let connect_s = t.elapsed().as_secs_f64();
    out(&format!(
        "{sessions} sessions connected in {connect_s:.1} s"
    ));
    let rss_after = rss_kb(broker.pid)?;
    let per_session_kb = rss_after.saturating_sub(rss_before) as f64 / sessions.max(1) as f64;
    out(&format!(
        "broker RSS {rss_before} → {rss_after} kB: {per_session_kb:.1} kB a session"
    ));

    // Heartbeats alone.
    let cpu0 = cpu_seconds(broker.pid)?;
    let t = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let heartbeat_share = (cpu_seconds(broker.pid)? - cpu0) / t.elapsed().as_secs_f64();
    out(&format!(
        "heartbeats only: the broker uses {:.1} % of a core",
        heartbeat_share * 100.0
    ));

    // One job a session.
    let reached = jobs_everywhere(&client, &shared, sessions).await?;
    out(&format!(
        "{sessions} jobs reached {reached} sessions ({:.1} %)",
        reached as f64 * 100.0 / sessions.max(1) as f64
    ));
    let (match_p50, match_p99) = matching(&shared.client, &broker).await?;
    out(&format!(
        "matching: p50 ≤ {match_p50:.2} µs, p99 ≤ {match_p99:.2} µs"
    ));
    let at_scale = invoke_samples(&client, calls).await?;
    out(&format!(
        "{sessions} sessions: invoke p50 {:.0} µs p99 {:.0} µs",
        at_scale.us(0.5),
        at_scale.us(0.99)
    ));
    shared.stop.cancel();
    stop_broker(broker).await;
    Ok(json!({
        "bench": "scale",
        "sessions": sessions,
        "connect_seconds": round(connect_s, 2),
        "broker_rss_per_session_kb": round(per_session_kb, 2),
        "heartbeat_cpu_share": round(heartbeat_share, 4),
        "match_p50_us": round(match_p50, 3),
        "match_p99_us": round(match_p99, 3),
        "invoke_p50_us": round(at_scale.us(0.5), 1),
        "invoke_p99_us": round(at_scale.us(0.99), 1),
        "invoke_one_session_p50_us": round(alone.us(0.5), 1),
        "ratio_invoke_p50": round(at_scale.us(0.5) / alone.us(0.5).max(1e-9), 2),
        "reached_sessions": reached,
        "reached_ratio": round(reached as f64 / sessions.max(1) as f64, 4),
        "tls": tls,
    }))
}

fn calls_for(budget: Duration) -> usize {
    (budget.as_millis() as usize).clamp(100, 5_000)
}

async fn invoke_samples(client: &Client, calls: usize) -> anyhow::Result<Samples> {
    let mut s = Samples::new();
    for i in 0..calls {
        let t = Instant::now();
        let r = client
            .invoke("echo", &[], Bytes::from(format!("call {i}")))
            .await?;
        if r.status != 200 {
            bail!("call {i} answered {}", r.status);
        }
        s.record(t.elapsed());
    }
    Ok(s)
}

/// Submits one job per session; the sessions hold their jobs (as a guest
/// that runs a while would) until every job is placed or a minute passes,
/// then answer them. Returns how many sessions got work.
async fn jobs_everywhere(client: &Client, shared: &Arc<Shared>, n: usize) -> anyhow::Result<u64> {
    let spec = JobSpec {
        service: Some("echo".into()),
        stdin: Some(Output(Bytes::from_static(b"scale"))),
        ..JobSpec::default()
    };
    let before = shared.done.load(Ordering::Relaxed);
    let gate = Arc::new(Semaphore::new(64));
    let mut submits = Vec::with_capacity(n);
    for _ in 0..n {
        let (client, spec, gate) = (client.clone(), spec.clone(), gate.clone());
        submits.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            client.submit(&spec).await
        }));
    }
    for s in submits {
        s.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.held.load(Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reached = shared.reached.load(Ordering::Relaxed);
    shared.release.cancel();
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.done.load(Ordering::Relaxed) < before + n as u64 {
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(reached)
}

/// The p50 and p99 of the scheduler's matching time, in µs, from the
/// histogram's buckets (each figure is its bucket's upper bound).
async fn matching(client: &reqwest::Client, broker: &Broker) -> anyhow::Result<(f64, f64)> {
    let body = get(
        client,
        &format!("{}/metrics", broker.url),
        Some(&broker.key),
    )
    .await?;
    let text = String::from_utf8_lossy(&body);
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("brume_match_duration_seconds_bucket{le=\"") else {
            continue;
        };
        let Some((le, count)) = rest.split_once("\"} ") else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse()?
        };
        buckets.push((le, count.trim().parse()?));
    }
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    if total == 0.0 {
        let head: String = text.chars().take(300).collect();
        bail!("no matching time on /metrics: {head}");
    }
    let at = |q: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= q * total)
            .map_or(f64::INFINITY, |(le, _)| le * 1e6)
    };
    Ok((at(0.5), at(0.99)))
}

/// `GET url` (with `key` as bearer): the body.
async fn get(client: &reqwest::Client, url: &str, key: Option<&str>) -> anyhow::Result<Bytes> {
    let mut req = client.get(url);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await?;
    if !resp.status().is_success() {
        bail!("GET {url}: {}", resp.status());
    }
    Ok(resp.bytes().await?)
}

/// Opens `n` sessions, `CONNECTING` handshakes at a time; returns once
/// every one is registered (its `Welcome` came).
async fn connect(shared: &Arc<Shared>, n: usize) -> anyhow::Result<()> {
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let mut ready = Vec::with_capacity(n);
    for _ in 0..n {
        let (shared, gate) = (shared.clone(), gate.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            match handshake(&shared).await {
                Ok((ws, me)) => {
                    drop(permit);
                    let _ = tx.send(Ok(()));
                    serve(&shared, ws, me).await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        ready.push(rx);
    }
    for r in ready {
        r.await.context("a session task ended")??;
    }
    Ok(())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A session's identity, its broker's id and its batch count.
struct Me {
    identity: Identity,
    address: String,
    broker: String,
    batch: u64,
    reached: bool,
    /// Jobs waiting for [`Shared::release`].
    held: Vec<(u32, Box<Assign>)>,
}

async fn handshake(shared: &Shared) -> anyhow::Result<(Ws, Me)> {
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        &shared.url,
        None,
        false,
        shared.ws_tls.clone(),
    )
    .await?;
    let identity = Identity::random();
    let address = identity.address().to_string();
    let challenge = match next(&mut ws).await? {
        (_, ToProvider::Challenge(c)) => c,
        (_, other) => bail!("expected a Challenge, got {other:?}"),
    };
    let message = wire::handshake_message(&challenge.broker_id, &challenge.nonce);
    let signature = identity.sign_message(message.as_bytes())?;
    let hello = FromProvider::Hello(Hello {
        protocol: brume_api::PROTOCOL_VERSION,
        address: address.clone(),
        signature: Bytes::copy_from_slice(&signature),
        capabilities: Capabilities {
            slots: 1,
            memory_bytes: 1 << 30,
            fitness_mips: 1_000,
            region: "local".into(),
            allowed_services: None,
            cached: Vec::new(),
            org: None,
            attestation: None,
            containers: false,
            gpus: None,
            network: false,
            hours: None,
            location: None,
            policy: Default::default(),
        },
        price_ask: 0,
    });
    ws.send(Message::Binary(hello.encode(CONTROL))).await?;
    loop {
        match next(&mut ws).await? {
            (_, ToProvider::Welcome(_)) => break,
            (ch, ToProvider::Measure(mut m)) => {
                if let Some(token) = &m.probe {
                    let url = format!("{}/v1/provider/probe/{token}", shared.http);
                    m.blob = get(&shared.client, &url, None).await?;
                }
                let done = FromProvider::MeasureDone(answer(shared.fuel, &m));
                ws.send(Message::Binary(done.encode(ch))).await?;
            }
            (ch, ToProvider::Ping(n)) => {
                ws.send(Message::Binary(FromProvider::Pong(n).encode(ch)))
                    .await?
            }
            (_, other) => bail!("expected a Welcome, got {other:?}"),
        }
    }
    let me = Me {
        identity,
        address,
        broker: challenge.broker_id,
        batch: 0,
        reached: false,
        held: Vec::new(),
    };
    Ok((ws, me))
}

/// The broker's challenge, answered natively.
fn answer(fuel: u64, m: &wire::Measure) -> MeasureDone {
    use sha2::Digest as _;
    if !m.blob.is_empty() {
        return MeasureDone {
            stdout: Bytes::new(),
            fuel: 0,
            error: None,
            memory: None,
            blob_sha256: Some(hex::encode(sha2::Sha256::digest(&m.blob))),
        };
    }
    let memory = (m.memory_pages > 0).then(|| MemoryAnswer {
        granted_pages: m.memory_pages,
        fold: brume_exec::fitness::memory_expected(m.seed, m.memory_pages),
    });
    MeasureDone {
        stdout: Bytes::copy_from_slice(&brume_exec::fitness::expected(m.seed, m.rounds)),
        fuel,
        error: None,
        memory,
        blob_sha256: None,
    }
}

/// A session's life once registered: heartbeats, and every assignment
/// answered at once.
async fn serve(shared: &Shared, mut ws: Ws, mut me: Me) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut ping = 0u64;
    loop {
        let msg = tokio::select! {
            () = shared.stop.cancelled() => {
                let _ = ws.close(None).await;
                return;
            }
            _ = tick.tick() => {
                ping += 1;
                Message::Binary(FromProvider::Ping(ping).encode(CONTROL))
            }
            () = shared.release.cancelled(), if !me.held.is_empty() => {
                for (ch, a) in std::mem::take(&mut me.held) {
                    if answer_assign(shared, &mut ws, &mut me, ch, &a).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            m = ws.next() => match m {
                Some(Ok(Message::Binary(b))) => match ToProvider::decode(&b) {
                    Ok((ch, ToProvider::Ping(n))) => Message::Binary(FromProvider::Pong(n).encode(ch)),
                    Ok((ch, ToProvider::Assign(a))) => {
                        if !me.reached {
                            me.reached = true;
                            shared.reached.fetch_add(1, Ordering::Relaxed);
                        }
                        if !a.batched_receipt && !shared.release.is_cancelled() {
                            // Running: accepted now, answered on release.
                            shared.held.fetch_add(1, Ordering::Relaxed);
                            me.held.push((ch, a));
                            Message::Binary(FromProvider::Accepted.encode(ch))
                        } else {
                            if answer_assign(shared, &mut ws, &mut me, ch, &a).await.is_err() {
                                return;
                            }
                            continue;
                        }
                    }
                    Ok(_) => continue,
                    Err(_) => return,
                },
                Some(Ok(_)) => continue,
                _ => return,
            },
        };
        if ws.send(msg).await.is_err() {
            return;
        }
    }
}

/// Sends the result of `a` on `channel`.
async fn answer_assign(
    shared: &Shared,
    ws: &mut Ws,
    me: &mut Me,
    channel: u32,
    a: &Assign,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    for frame in result(me, channel, a) {
        ws.feed(frame).await?;
    }
    ws.flush().await?;
    shared.done.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// A trivial guest's result for `a`: its stdin back, signed (a job), or a
/// leaf and a root of one signed (a call).
fn result(me: &mut Me, channel: u32, a: &Assign) -> Vec<Message> {
    let outcome = Outcome::Exited {
        exit_code: 0,
        stdout: a.stdin.clone(),
        stderr: Bytes::new(),
        usage: Usage {
            fuel: 1_000,
            wall_us: 10,
            ..Usage::default()
        },
        outputs: Vec::new(),
    };
    let receipt = Receipt::new(a, &me.address, &outcome);
    if !a.batched_receipt {
        let Ok(signature) = me.identity.sign_message(receipt.message().as_bytes()) else {
            return Vec::new();
        };
        let done = Done {
            outcome,
            signature: Bytes::copy_from_slice(&signature),
            leaf: None,
        };
        return vec![Message::Binary(
            FromProvider::Done(Box::new(done)).encode(channel),
        )];
    }
    let leaf = brume_api::batch::leaf(&receipt);
    let done = Done {
        outcome,
        signature: Bytes::new(),
        leaf: Some(Bytes::copy_from_slice(&leaf)),
    };
    let batch = me.batch;
    me.batch += 1;
    let claim = brume_api::batch::RootClaim {
        provider: me.address.clone(),
        broker: me.broker.clone(),
        batch,
        size: 1,
        root: hex::encode(leaf),
    };
    let Ok(signature) = me.identity.sign_message(claim.message().as_bytes()) else {
        return Vec::new();
    };
    let root = wire::Root {
        batch,
        size: 1,
        root: Bytes::copy_from_slice(&leaf),
        signature: Bytes::copy_from_slice(&signature),
    };
    vec![
        Message::Binary(FromProvider::Done(Box::new(done)).encode(channel)),
        Message::Binary(FromProvider::Root(root).encode(CONTROL)),
    ]
}

async fn next(ws: &mut Ws) -> anyhow::Result<(u32, ToProvider)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("no frame from the broker within 60 s")?;
        match m {
            Some(Ok(Message::Binary(b))) => return Ok(ToProvider::decode(&b)?),
            Some(Ok(Message::Close(f))) => bail!("the broker closed the session: {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("the broker closed the session"),
        }
    }
}

/// The fitness challenge's fuel, from one run in a sandbox of our own (the
/// broker learns it the same way).
async fn challenge_fuel() -> anyhow::Result<u64> {
    let sandbox = brume_sandbox::Sandbox::new(brume_sandbox::SandboxConfig::default())?;
    let challenges = brume_exec::fitness::Challenges::load(&sandbox).map_err(anyhow::Error::msg)?;
    let m = wire::Measure {
        seed: 1,
        rounds: brume_exec::fitness::ROUNDS,
        memory_pages: 0,
        blob: Bytes::new(),
        probe: None,
    };
    let done = brume_exec::fitness::answer(&sandbox, &challenges, &m).await;
    if let Some(e) = done.error {
        bail!("the fitness challenge: {e}");
    }
    Ok(done.fuel)
}

/// `brume broker` as a child process on a free port, with an API key
/// (and a self-signed certificate if `tls`).
async fn start_broker(tls: bool) -> anyhow::Result<Broker> {
    let exe = std::env::current_exe()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("broker");
    let keys = std::process::Command::new(&exe)
        .args([
            "broker", "keys", "create", "--name", "default", "--scope", "all", "--json", "--data",
        ])
        .arg(&data)
        .env("HOME", dir.path())
        .output()?;
    if !keys.status.success() {
        bail!(
            "brume broker keys create: {}",
            String::from_utf8_lossy(&keys.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&keys.stdout)?;
    let key = v["api_key"]
        .as_str()
        .context("no api_key in `keys create --json`")?
        .to_string();
    // Its API key is a plain account: its work runs unescrowed.
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, "[broker.chain]\nrequire_allowance = false\n")?;
    let heartbeat = format!("{}ms", HEARTBEAT.as_millis());
    let mut child = tokio::process::Command::new(&exe)
        .arg("--config")
        .arg(&config)
        .args([
            "broker",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--heartbeat",
            &heartbeat,
        ])
        .arg("--data")
        .arg(&data)
        .args(tls.then_some("--tls-self-signed"))
        .env("HOME", dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("the broker has no pid")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let (url, pin) = loop {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .context("the broker did not start within 120 s")??
            .context("the broker exited before it was ready")?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["event"] == "ready" {
            let url = v["url"].as_str().context("no url")?.to_string();
            break (url, v["tls_sha256"].as_str().map(str::to_string));
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let trust = pin
        .map(|hex| hex.parse().map(brume_tls::Trust::pinned))
        .transpose()?;
    Ok(Broker {
        child,
        pid,
        url,
        key,
        trust,
        _dir: dir,
    })
}

async fn stop_broker(mut b: Broker) {
    // SAFETY: signalling our own child by its pid.
    unsafe {
        libc::kill(b.pid as libc::pid_t, libc::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(30), b.child.wait())
        .await
        .is_err()
    {
        let _ = b.child.kill().await;
    }
}

/// Raises this process's soft open-files limit to its hard limit (a child
/// inherits it); returns the limit now.
fn raise_open_files() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        }
    }
    l.rlim_cur
}

/// A process's resident set, in kB.
fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// A process's CPU time (user and system), in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command's closing parenthesis: utime is the 12th,
    // stime the 13th (counting the state as the 1st).
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).context("utime")?.parse::<f64>()? + f.get(12).context("stime")?.parse::<f64>()?;
    // SAFETY: a plain libc query.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks / hz)
}
