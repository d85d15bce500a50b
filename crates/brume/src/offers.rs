//! `brume offers`: what the broker's connected providers offer, filtered
//! and sorted (`GET /v1/offers`), as a table or JSON.

use std::process::ExitCode;

use brume_api::rest::{Offer, OfferList};

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
    if args.opts.json {
        emit_json(&list);
    } else {
        print_table(&list);
    }
    Ok(ExitCode::SUCCESS)
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
