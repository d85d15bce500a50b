//! `brume offers`: what the broker's connected providers offer, filtered
//! and sorted (`GET /v1/offers`), as a table or JSON; with `--probe`, a
//! service called on the top offers (Kumo's probe jobs), which are then
//! ranked by the latency and speed measured.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use brume_api::rest::{Offer, OfferList};
use brume_api::{ServiceKind, headers};
use brume_client::Client;
use bytes::Bytes;
use serde::Serialize;

use crate::config::ClientSection;
use crate::requester::{ClientOpts, Failure, emit_json, finish};

#[derive(Debug, clap::Args)]
pub struct OffersArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// Only providers that run this: `wasm` or `oci`.
    #[arg(long, value_parser = ["wasm", "oci"])]
    runtime: Option<String>,
    /// At least this many slots free now.
    #[arg(long, value_name = "N")]
    min_slots: Option<u32>,
    /// At least this much memory, e.g. `4GiB`.
    #[arg(long, value_name = "SIZE")]
    min_memory: Option<bytesize::ByteSize>,
    /// At least this many GPUs.
    #[arg(long, value_name = "N")]
    gpu: Option<u32>,
    /// Only this region.
    #[arg(long)]
    region: Option<String>,
    /// Your location, `LAT,LON` in degrees: shows distances, and
    /// `--sort distance` ranks by them.
    #[arg(long, value_name = "LAT,LON")]
    near: Option<String>,
    /// An ask at most this (micro-tokens per 10^9 fuel).
    #[arg(long, value_name = "PRICE")]
    max_price: Option<u64>,
    /// Only providers with this module or image digest cached.
    #[arg(long, value_name = "SHA256")]
    image: Option<String>,
    /// `price` (cheapest first), `distance` (nearest first, with `--near`)
    /// or `reputation` (best first).
    #[arg(long, value_parser = ["price", "distance", "reputation"])]
    sort: Option<String>,
    /// At most this many (default 50, at most 200).
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Skip this many (the next page's offset is printed).
    #[arg(long, value_name = "N")]
    offset: Option<u64>,
    /// Call this service on the top offers (each pinned with
    /// `x-brume-provider`) and rank them by the median latency measured,
    /// then speed: a command service with `--probe-data` as stdin, or an
    /// http service with `GET /`.
    #[arg(long, value_name = "SERVICE")]
    probe: Option<String>,
    /// How many of the top offers to probe.
    #[arg(long, value_name = "N", default_value_t = 3, requires = "probe")]
    probe_top: usize,
    /// Calls per provider (the median counts).
    #[arg(long, value_name = "N", default_value_t = 3, requires = "probe")]
    probe_calls: usize,
    /// The probe's stdin (command services).
    #[arg(long, value_name = "TEXT", default_value = "", requires = "probe")]
    probe_data: String,
}

/// One probed provider (`brume offers --probe --json`: `{"probes": [...]}`,
/// best first).
#[derive(Debug, Serialize)]
struct Probe {
    address: String,
    region: String,
    price_ask: u64,
    /// Calls answered, of those made.
    answered: usize,
    calls: usize,
    /// The median round trip of the answered calls, in µs.
    latency_us: Option<u64>,
    /// The median call's fuel over its round trip: millions of
    /// instructions a second, network included.
    speed_mips: Option<u64>,
    /// The last error, if a call failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub async fn main(args: OffersArgs, file: &ClientSection) -> ExitCode {
    finish(run(args, file).await)
}

async fn run(args: OffersArgs, file: &ClientSection) -> Result<ExitCode, Failure> {
    let client = args.opts.client(file)?;
    let mut query: Vec<(&str, String)> = Vec::new();
    let mut put = |name, value: Option<String>| {
        if let Some(v) = value {
            query.push((name, v));
        }
    };
    put("runtime", args.runtime.clone());
    put("min_slots", args.min_slots.map(|n| n.to_string()));
    put(
        "min_memory",
        args.min_memory.map(|m| m.as_u64().to_string()),
    );
    put("gpu", args.gpu.map(|n| n.to_string()));
    put("region", args.region.clone());
    put("near", args.near.clone());
    put("max_price", args.max_price.map(|n| n.to_string()));
    put("image", args.image.clone());
    put("sort", args.sort.clone());
    put("limit", args.limit.map(|n| n.to_string()));
    put("offset", args.offset.map(|n| n.to_string()));
    let list = client.offers(&query).await?;
    if let Some(service) = &args.probe {
        let top: Vec<&Offer> = list.offers.iter().take(args.probe_top.max(1)).collect();
        let probes = probe_all(&client, service, &top, &args).await?;
        if args.opts.json {
            emit_json(&serde_json::json!({ "probes": probes }));
        } else {
            print_probes(&probes);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.opts.json {
        emit_json(&list);
    } else {
        print_table(&list);
    }
    Ok(ExitCode::SUCCESS)
}

async fn probe_all(
    client: &Client,
    service: &str,
    top: &[&Offer],
    args: &OffersArgs,
) -> Result<Vec<Probe>, Failure> {
    let kind = client.service(service).await?.kind;
    if kind == ServiceKind::Oci {
        return Err(Failure::Local(format!(
            "{service} is a container image: probe with a command or http service"
        )));
    }
    let mut probes = Vec::with_capacity(top.len());
    for offer in top {
        probes.push(probe_one(client, service, kind, offer, args).await);
    }
    // Answered first, then by latency, then by speed.
    probes.sort_by_key(|p| {
        (
            p.latency_us.is_none(),
            p.latency_us,
            std::cmp::Reverse(p.speed_mips),
        )
    });
    Ok(probes)
}

async fn probe_one(
    client: &Client,
    service: &str,
    kind: ServiceKind,
    offer: &Offer,
    args: &OffersArgs,
) -> Probe {
    let mut pinned = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&offer.address) {
        pinned.insert(headers::PROVIDER, v);
    }
    let calls = args.probe_calls.max(1);
    let mut answered: Vec<(Duration, u64)> = Vec::with_capacity(calls);
    let mut error = None;
    for _ in 0..calls {
        let started = Instant::now();
        let meta = match kind {
            ServiceKind::Http => client
                .call_http(
                    http::Method::GET,
                    service,
                    "/",
                    pinned.clone(),
                    Bytes::new(),
                )
                .await
                .map(|r| (r.meta.provider, r.meta.fuel)),
            _ => client
                .invoke_with(
                    service,
                    &[],
                    Bytes::from(args.probe_data.clone()),
                    pinned.clone(),
                )
                .await
                .map(|r| (r.provider, r.fuel)),
        };
        let elapsed = started.elapsed();
        match meta {
            Ok((Some(by), fuel)) if by.eq_ignore_ascii_case(&offer.address) => {
                answered.push((elapsed, fuel.unwrap_or(0)))
            }
            Ok((by, _)) => error = Some(format!("answered by {by:?}, not the provider probed")),
            Err(e) => error = Some(e.to_string()),
        }
    }
    answered.sort();
    let median = answered.get(answered.len() / 2).copied();
    Probe {
        address: offer.address.clone(),
        region: offer.region.clone(),
        price_ask: offer.price_ask,
        answered: answered.len(),
        calls,
        latency_us: median.map(|(d, _)| d.as_micros() as u64),
        speed_mips: median.map(|(d, fuel)| fuel / (d.as_micros() as u64).max(1)),
        error,
    }
}

fn print_probes(probes: &[Probe]) {
    println!(
        "{:<42} {:<10} {:>8} {:>11} {:>10} {:>8}",
        "PROVIDER", "REGION", "ASK", "LATENCY_MS", "MIPS", "CALLS"
    );
    for p in probes {
        println!(
            "{:<42} {:<10} {:>8} {:>11} {:>10} {:>8}",
            p.address,
            p.region,
            p.price_ask,
            p.latency_us
                .map_or("-".into(), |us| format!("{:.2}", us as f64 / 1000.0)),
            p.speed_mips.map_or("-".into(), |m| m.to_string()),
            format!("{}/{}", p.answered, p.calls),
        );
        if let Some(e) = &p.error {
            println!("  last error: {e}");
        }
    }
}

fn print_table(list: &OfferList) {
    if list.offers.is_empty() {
        println!("no offers match ({} providers in all)", list.total);
        return;
    }
    println!(
        "{:<42} {:<10} {:<8} {:>5} {:>9} {:>8} {:>7} {:>4} {:>8} {:>6} {:>9}",
        "PROVIDER",
        "REGION",
        "RUNS",
        "FREE",
        "MEMORY",
        "MIPS",
        "MBIT/S",
        "GPU",
        "ASK",
        "REP%",
        "KM"
    );
    for o in &list.offers {
        println!("{}", row(o));
    }
    match list.next_offset {
        Some(next) => println!(
            "{} of {} offers; next page: --offset {next}",
            list.offers.len(),
            list.total
        ),
        None => println!("{} of {} offers", list.offers.len(), list.total),
    }
}

fn row(o: &Offer) -> String {
    format!(
        "{:<42} {:<10} {:<8} {:>5} {:>9} {:>8} {:>7} {:>4} {:>8} {:>6.1} {:>9}",
        o.address,
        o.region,
        o.runtimes.join(","),
        format!("{}/{}", o.slots_free, o.slots),
        bytesize::ByteSize(o.memory_bytes).to_string(),
        o.measured_mips,
        o.measured_mbps,
        o.gpus.as_ref().map_or(0, |g| g.count),
        o.price_ask,
        o.reputation_ppm as f64 / 10_000.0,
        o.distance_km.map_or("-".to_string(), |d| format!("{d:.0}")),
    )
}
