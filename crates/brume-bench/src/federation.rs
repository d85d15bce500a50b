//! `brume bench federation`: what a hop between brokers costs, and how
//! fast brokers find each other.
//!
//! **Forwarding.** Two real brokers in this process (each on a tokio
//! runtime of its own, as in `brume bench invoke`), federated over libp2p
//! on loopback: broker A has no provider, broker B has one; B bootstraps
//! from A. The `echo` test program is published at both under the same
//! owner, so both announce `owner~echo`. Once A's directory shows B serving
//! it, the same call is made `--calls` times at B (local: the baseline) and
//! at A, which forwards each to B (signed with A's key; A's account is
//! funded at B so B escrows it as it would any signed requester), in
//! interleaved batches over keep-alive connections. Every forwarded answer
//! must name B in `x-brume-broker`, or the bench fails.
//!
//! **Convergence.** `n` libp2p nodes ([`brume_federation::Federation`])
//! announcing a copy of B's real announcement (each under its own key),
//! nodes 2..n bootstrapping from node 1 only. The clock starts when every
//! node is started (their tasks spawned together) and stops when every
//! node's directory lists all n-1 others (woken by the directory's change
//! notifications). Then, for the 20-node run, the announcement traffic per
//! broker (`Stats::published_bytes`) over a window in which every broker
//! announces [`STEADY_ANNOUNCEMENTS`] more times.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use brume_api::ServiceKind;
use brume_api::federation::{Announcement, headers as fh};
use brume_broker::BrokerConfig;
use brume_broker::federation::FederationSettings;
use brume_federation::{Federation, FederationConfig, Multiaddr, Source};
use brume_identity::Identity;
use bytes::Bytes;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::net::{Conn, bench_net};
use crate::{Samples, round};

/// Calls at each broker unless `--calls` says otherwise.
pub const DEFAULT_CALLS: u64 = 300;
/// How often every broker announces itself.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(200);
/// How long an announcement is kept without a refresh.
const TTL: Duration = Duration::from_secs(2);
/// Calls at each broker before measuring: the provider compiles and
/// caches the module, B reads A's allowance, connections open.
const WARMUP: u64 = 20;
/// Calls per batch; forwarded and local batches alternate.
const BATCH: u64 = 50;
/// What A's account may spend at B: 1,000 tokens.
const FUNDS: u128 = 1_000 * 1_000_000_000_000_000_000;
/// The announcement-traffic window: every broker announces this many
/// more times.
const STEADY_ANNOUNCEMENTS: u64 = 10;
/// The small and the large federation.
const SMALL: usize = 3;
const LARGE: usize = 20;

/// `--duration` bounds each wait (for a directory, a convergence);
/// `calls` is how many calls are measured at each broker.
pub async fn run(
    duration: Duration,
    calls: u64,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<serde_json::Value> {
    let calls = calls.max(1);
    let hop = forwarding(duration, calls, out).await?;
    let (small, _) = convergence(SMALL, &hop.template, duration, false).await?;
    out(&format!(
        "convergence of {SMALL} brokers from one bootstrap peer: {:.1} ms",
        ms(small.converged)
    ));
    let (large, traffic) = convergence(LARGE, &hop.template, duration, true).await?;
    let traffic = traffic.context("the traffic of the large federation")?;
    out(&format!(
        "convergence of {LARGE} brokers from one bootstrap peer: {:.1} ms (announcing every {} ms)",
        ms(large.converged),
        ANNOUNCE_EVERY.as_millis()
    ));
    out(&format!(
        "announcements: {} bytes signed, {:.0} bytes/s and {:.2}/s per broker (over {:.2} s, {LARGE} brokers)",
        large.announcement_bytes,
        traffic.bytes_per_s,
        traffic.announcements_per_s,
        traffic.window.as_secs_f64()
    ));
    let (f, l) = (&hop.forwarded, &hop.local);
    Ok(json!({
        "bench": "federation",
        "calls": l.len(),
        "forwarded_calls": hop.verified,
        "forwarded_p50_us": round(f.us(0.5), 2),
        "forwarded_p99_us": round(f.us(0.99), 2),
        "forwarded_p999_us": round(f.us(0.999), 2),
        "local_p50_us": round(l.us(0.5), 2),
        "local_p99_us": round(l.us(0.99), 2),
        "local_p999_us": round(l.us(0.999), 2),
        "ratio_p50": round(f.us(0.5) / l.us(0.5), 3),
        "ratio_p99": round(f.us(0.99) / l.us(0.99), 3),
        "hop_p50_us": round(f.us(0.5) - l.us(0.5), 2),
        "convergence_ms_3": round(ms(small.converged), 2),
        "convergence_ms_20": round(ms(large.converged), 2),
        "announce_every_ms": ANNOUNCE_EVERY.as_millis() as u64,
        "announce_ttl_ms": TTL.as_millis() as u64,
        "announcement_bytes": large.announcement_bytes,
        "announce_bytes_per_s": round(traffic.bytes_per_s, 1),
        "announcements_per_s": round(traffic.announcements_per_s, 3),
        "announce_window_s": round(traffic.window.as_secs_f64(), 3),
        "brokers": LARGE,
    }))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The forwarding phase's figures.
struct Hop {
    forwarded: Samples,
    local: Samples,
    /// Forwarded answers that named B in `x-brume-broker`.
    verified: u64,
    /// B's announcement: what the convergence nodes announce.
    template: Announcement,
}

/// A broker tweak: federated, listening on a free loopback port,
/// bootstrapping from `peers`, its p2p key in its data dir.
fn federate(
    listen: Multiaddr,
    peers: Vec<Multiaddr>,
) -> impl FnOnce(&mut BrokerConfig) + Send + 'static {
    move |c| {
        c.federation = Some(FederationSettings {
            p2p: FederationConfig {
                listen: vec![listen],
                peers,
                announce_every: ANNOUNCE_EVERY,
                ttl: TTL,
                key_file: c.data_dir.join("p2p.key"),
            },
            ..FederationSettings::default()
        });
    }
}

fn loopback() -> anyhow::Result<Multiaddr> {
    "/ip4/127.0.0.1/tcp/0"
        .parse()
        .context("the loopback multiaddr")
}

fn echo() -> Bytes {
    Bytes::from_static(test_programs_artifacts::ECHO_P1_BYTES)
}

async fn forwarding(
    deadline: Duration,
    calls: u64,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<Hop> {
    // Both networks have the same name: the API key's, so the owner of
    // what each publishes.
    let a = bench_net()
        .broker(federate(loopback()?, Vec::new()))
        .publish("echo", ServiceKind::Command, echo())
        .start()
        .await
        .context("start broker A")?;
    let a_fed = a
        .broker()
        .federation()
        .cloned()
        .context("broker A runs no federation node")?;
    let b = bench_net()
        .providers(1)
        .slots(2)
        .broker(|c| c.chain.faucet = true)
        .broker(federate(loopback()?, a_fed.listen_addrs()))
        .publish("echo", ServiceKind::Command, echo())
        .start()
        .await
        .context("start broker B")?;
    let service = b.service_ref("echo");
    if a.service_ref("echo") != service {
        bail!(
            "echo is {} at A but {service} at B: not the same service",
            a.service_ref("echo")
        );
    }
    // A is a signed requester at B: B escrows what it forwards.
    b.broker()
        .fund_devnet_account(a.broker().identity(), FUNDS)
        .await
        .context("fund broker A's account at B")?;
    let b_id = b.broker().broker_id().to_string();
    let waited = Instant::now();
    until(&a_fed, deadline, "broker A sees B serve echo", |f| {
        serves(f, &b_id, &service)
    })
    .await?;
    out(&format!(
        "broker A (no provider) sees broker B serve {service} (waited {:.0} ms once B was up)",
        ms(waited.elapsed())
    ));

    let path = format!("/v1/functions/{service}/invoke");
    let mut forwarded = Conn::open(a.broker().addr(), &path, Some(a.api_key())).await?;
    let mut local = Conn::open(b.broker().addr(), &path, Some(b.api_key())).await?;
    for i in 0..WARMUP {
        let body = Bytes::from(format!("warm-up {i}"));
        answered_by(&forwarded.call(&body).await?, &b_id)?;
        local.call(&body).await?;
    }

    let mut verified = 0u64;
    let mut fwd = Samples::new();
    let mut loc = Samples::new();
    let mut i = 0u64;
    while loc.len() < calls {
        let batch = BATCH.min(calls - loc.len());
        for _ in 0..batch {
            let body = Bytes::from(format!("call {i}"));
            i += 1;
            let t = Instant::now();
            let headers = forwarded.call(&body).await?;
            fwd.record(t.elapsed());
            answered_by(&headers, &b_id)?;
            verified += 1;
        }
        for _ in 0..batch {
            let body = Bytes::from(format!("call {i}"));
            i += 1;
            let t = Instant::now();
            let headers = local.call(&body).await?;
            loc.record(t.elapsed());
            if let Some(by) = headers.get(fh::FORWARDED_BY) {
                bail!("a call at B was forwarded (by {by:?}): not a local call");
            }
        }
    }
    out(&format!(
        "forwarded A→B: p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  ({} calls, each answered by B)",
        fwd.us(0.5),
        fwd.us(0.99),
        fwd.us(0.999),
        fwd.len()
    ));
    out(&format!(
        "local at B (baseline): p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  ({} calls)",
        loc.us(0.5),
        loc.us(0.99),
        loc.us(0.999),
        loc.len()
    ));
    out(&format!(
        "ratio_p50 {:.2}  ratio_p99 {:.2}",
        fwd.us(0.5) / loc.us(0.5),
        fwd.us(0.99) / loc.us(0.99)
    ));
    let template = b
        .broker()
        .federation()
        .and_then(Federation::own)
        .context("broker B has not announced itself")?
        .announcement;
    let _ = b.stop_now().await;
    let _ = a.stop_now().await;
    Ok(Hop {
        forwarded: fwd,
        local: loc,
        verified,
        template,
    })
}

/// Fails unless a forwarded answer names `broker` as the one that ran it.
fn answered_by(headers: &http::HeaderMap, broker: &str) -> anyhow::Result<()> {
    let by = headers.get(fh::BROKER).and_then(|v| v.to_str().ok());
    if !by.is_some_and(|by| by.eq_ignore_ascii_case(broker)) {
        bail!(
            "a call at A was not forwarded to B ({broker}): {} is {by:?}",
            fh::BROKER
        );
    }
    Ok(())
}

/// Whether `fed`'s directory shows `broker` serving `service` now.
fn serves(fed: &Federation, broker: &str, service: &str) -> bool {
    fed.directory().live(Instant::now()).iter().any(|e| {
        let a = &e.announcement.announcement;
        a.broker.eq_ignore_ascii_case(broker)
            && a.services
                .iter()
                .any(|s| s.name.eq_ignore_ascii_case(service))
    })
}

/// Waits until `f` holds, re-checking on every change of `fed`'s
/// directory; fails after `deadline`.
async fn until(
    fed: &Federation,
    deadline: Duration,
    what: &str,
    f: impl Fn(&Federation) -> bool,
) -> anyhow::Result<()> {
    let mut changed = fed.directory().subscribe();
    let holds = async {
        while !f(fed) {
            changed
                .changed()
                .await
                .map_err(|_| anyhow!("{what}: the federation node stopped"))?;
        }
        Ok(())
    };
    tokio::time::timeout(deadline, holds)
        .await
        .map_err(|_| anyhow!("{what}: not within {deadline:?}"))?
}

/// Announces the same broker every time.
struct Fixed(Announcement);

impl Source for Fixed {
    fn announcement(&self) -> Announcement {
        self.0.clone()
    }
}

/// A convergence run's figures.
struct Converged {
    /// From every node started to every node knowing every other.
    converged: Duration,
    /// The JSON size of one node's signed announcement.
    announcement_bytes: usize,
}

/// Announcement traffic per broker once converged.
struct Traffic {
    bytes_per_s: f64,
    announcements_per_s: f64,
    window: Duration,
}

/// Starts `n` nodes announcing `template` (each as a broker of its own),
/// nodes 2..n bootstrapping from node 1; how long until they all know each
/// other, and, with `traffic`, what they publish afterwards.
async fn convergence(
    n: usize,
    template: &Announcement,
    deadline: Duration,
    traffic: bool,
) -> anyhow::Result<(Converged, Option<Traffic>)> {
    let dir = tempfile::tempdir()?;
    let stop = CancellationToken::new();
    let mut feds = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut runs = Vec::with_capacity(n);
    let mut boot = Vec::new();
    for i in 0..n {
        let identity = Identity::random();
        let config = FederationConfig {
            listen: vec![loopback()?],
            peers: boot.clone(),
            announce_every: ANNOUNCE_EVERY,
            ttl: TTL,
            key_file: dir.path().join(format!("p2p-{i}.key")),
        };
        let body = Announcement {
            broker: identity.address().to_string(),
            ..template.clone()
        };
        let (fed, run) = Federation::start(
            config,
            identity.clone(),
            Arc::new(Fixed(body)),
            stop.clone(),
        )
        .await
        .with_context(|| format!("start federation node {i} of {n}"))?;
        if i == 0 {
            boot = fed.listen_addrs();
        }
        ids.push(identity.address().to_string().to_ascii_lowercase());
        feds.push(fed);
        runs.push(run);
    }
    // Every node is started; none has run yet. The clock starts as they
    // all begin together.
    let start = Instant::now();
    let tasks: Vec<_> = runs.into_iter().map(tokio::spawn).collect();
    let result = measure(&feds, &ids, start, deadline, traffic).await;
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    result
}

async fn measure(
    feds: &[Federation],
    ids: &[String],
    start: Instant,
    deadline: Duration,
    traffic: bool,
) -> anyhow::Result<(Converged, Option<Traffic>)> {
    let n = feds.len();
    let waits = feds.iter().zip(ids).enumerate().map(|(i, (fed, me))| {
        let others: HashSet<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| id != me)
            .collect();
        let what = format!("node {i} of {n} knows every other");
        async move {
            until(fed, deadline, &what, |f| {
                let known: HashSet<String> = f
                    .directory()
                    .live(Instant::now())
                    .into_iter()
                    .map(|e| e.announcement.announcement.broker.to_ascii_lowercase())
                    .collect();
                others.iter().all(|o| known.contains(*o))
            })
            .await
        }
    });
    futures_util::future::try_join_all(waits).await?;
    let converged = start.elapsed();
    let own = feds
        .first()
        .and_then(Federation::own)
        .context("node 1 has not announced itself")?;
    let announcement_bytes = serde_json::to_vec(&own)?.len();
    let figures = Converged {
        converged,
        announcement_bytes,
    };
    if !traffic {
        return Ok((figures, None));
    }

    // The window: until node 1 has heard every other node announce
    // STEADY_ANNOUNCEMENTS more times.
    let published = || -> (u64, u64) {
        feds.iter().fold((0, 0), |(n, b), f| {
            let s = f.stats();
            (
                n + s.published.load(Ordering::Relaxed),
                b + s.published_bytes.load(Ordering::Relaxed),
            )
        })
    };
    let seqs = |f: &Federation| -> HashMap<String, u64> {
        f.directory()
            .live(Instant::now())
            .into_iter()
            .map(|e| {
                let a = e.announcement.announcement;
                (a.broker.to_ascii_lowercase(), a.seq)
            })
            .collect()
    };
    let first = feds.first().context("no node")?;
    let (count0, bytes0) = published();
    let t0 = Instant::now();
    let from = seqs(first);
    until(first, deadline, "every node announces again", |f| {
        let now = seqs(f);
        from.iter().all(|(b, s)| {
            now.get(b)
                .is_some_and(|seq| *seq >= s + STEADY_ANNOUNCEMENTS)
        })
    })
    .await?;
    let window = t0.elapsed();
    let (count1, bytes1) = published();
    let per = n as f64 * window.as_secs_f64();
    Ok((
        figures,
        Some(Traffic {
            bytes_per_s: (bytes1 - bytes0) as f64 / per,
            announcements_per_s: (count1 - count0) as f64 / per,
            window,
        }),
    ))
}
