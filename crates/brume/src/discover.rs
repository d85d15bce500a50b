//! `brume provide --discover`: the provider asks a broker's directory for
//! the best broker to join (its region, else the nearest, with queued
//! work; one with a hub wallet when it demands a bond), joins it, and when
//! that broker goes away (not connected for `--rediscover-after`), asks
//! the directory again and joins the next best.

use std::process::ExitCode;
use std::time::Duration;

use brume_api::federation::DirectoryEntry;
use brume_provider::{Connection, Provider, ProviderConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// How to discover.
#[derive(Debug, Clone)]
pub struct Discover {
    /// The provider's position, to rank brokers by distance.
    pub near: Option<(f64, f64)>,
    /// How long its broker may be unreachable before it moves.
    pub rediscover_after: Duration,
    pub json: bool,
}

/// Why a provider stopped serving its broker.
enum Ended {
    /// A signal: drain and exit.
    Stopped,
    /// The broker went away: find another.
    Lost,
}

pub async fn run(mut config: ProviderConfig, d: Discover) -> ExitCode {
    let seed = (config.broker_url.clone(), config.tls.clone());
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            crate::logging::shutdown_signal().await;
            eprintln!("draining (signal again to stop now)");
            stop.cancel();
        });
    }
    let mut known: Vec<DirectoryEntry> = Vec::new();
    let mut left: Vec<String> = Vec::new();
    loop {
        let best = match choose(&seed, &mut known, &left, &config, &d).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: discover a broker: {e}");
                return ExitCode::FAILURE;
            }
        };
        let a = &best.announcement.announcement;
        config.broker_url = a.url.clone();
        config.tls = match a.tls_sha256.as_deref().map(str::parse) {
            Some(Ok(pin)) => brume_tls::Trust::pinned(pin),
            _ => seed.1.clone(),
        };
        say(
            &d,
            &json!({"event": "discovered", "broker": a.broker, "url": a.url, "region": a.region}),
            &format!(
                "joining broker {} at {} (region {})",
                a.broker, a.url, a.region
            ),
        );
        match serve(config.clone(), &d, &stop).await {
            Ok(Ended::Stopped) => return ExitCode::SUCCESS,
            Ok(Ended::Lost) => {
                say(
                    &d,
                    &json!({"event": "lost", "broker": a.broker}),
                    &format!("broker {} went away: looking for another", a.broker),
                );
                left.push(a.broker.clone());
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
}

fn say(d: &Discover, v: &serde_json::Value, text: &str) {
    if d.json {
        println!("{v}");
    } else {
        println!("{text}");
    }
    crate::logging::flush_stdout();
}

/// The best broker not yet left, from the seed's directory, else from any
/// broker known from an earlier directory (the seed may be the one gone).
async fn choose(
    seed: &(String, brume_tls::Trust),
    known: &mut Vec<DirectoryEntry>,
    left: &[String],
    config: &ProviderConfig,
    d: &Discover,
) -> Result<DirectoryEntry, String> {
    let mut asked = vec![seed.clone()];
    for e in known.iter() {
        let a = &e.announcement.announcement;
        if left.iter().any(|l| l.eq_ignore_ascii_case(&a.broker)) {
            continue;
        }
        let trust = match a.tls_sha256.as_deref().map(str::parse) {
            Some(Ok(pin)) => brume_tls::Trust::pinned(pin),
            _ => seed.1.clone(),
        };
        asked.push((a.url.clone(), trust));
    }
    let mut errors = Vec::new();
    for (url, trust) in asked {
        let client = brume_client::Client::new(&url, None)
            .and_then(|c| c.with_tls(&trust))
            .map_err(|e| e.to_string())?;
        match client.directory(None, d.near, None, None).await {
            Ok(dir) => {
                *known = dir.brokers.clone();
                let ranked = brume_federation::for_provider(
                    dir.brokers,
                    &config.region,
                    d.near,
                    left,
                    config.hub.is_some(),
                );
                return ranked.into_iter().next().ok_or_else(|| {
                    format!("{url}'s directory lists no broker this provider may join")
                });
            }
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    Err(errors.join("; "))
}

/// Runs a provider on `config.broker_url` until a signal (drained) or until
/// it has not been connected for `rediscover_after`.
async fn serve(
    config: ProviderConfig,
    d: &Discover,
    stop: &CancellationToken,
) -> Result<Ended, String> {
    let broker = config.broker_url.clone();
    let running = Provider::start(config).await.map_err(|e| e.to_string())?;
    say(
        d,
        &json!({"event": "ready", "address": running.address(), "control": running.control_addr().to_string(), "fitness_mips": running.fitness_mips()}),
        &format!(
            "provider {} ready: fitness {} MIPS, control http://{}",
            running.address(),
            running.fitness_mips(),
            running.control_addr()
        ),
    );
    let handle = running.handle();
    let mut rx = handle.watch();
    rx.mark_changed();
    let mut away_since = Some(tokio::time::Instant::now());
    let ended = loop {
        let deadline = away_since.map(|t| t + d.rediscover_after);
        tokio::select! {
            _ = stop.cancelled() => {
                handle.drain();
                break Ended::Stopped;
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    break Ended::Lost;
                }
                let now = *rx.borrow_and_update();
                if now == Connection::Connected {
                    if away_since.is_some() {
                        say(d, &json!({"event": "connected", "broker": broker}), &format!("connected to {broker}"));
                    }
                    away_since = None;
                } else if away_since.is_none() && now == Connection::Connecting {
                    away_since = Some(tokio::time::Instant::now());
                }
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => {
                handle.shutdown();
                break Ended::Lost;
            }
        }
    };
    running.wait().await.map_err(|e| e.to_string())?;
    Ok(ended)
}
