//! `brume directory` and `brume locate`: the federation's brokers as a
//! broker knows them; and picking one for `brume invoke --near/--region`.

use std::process::ExitCode;

use brume_api::federation::{Directory, Located};
use brume_client::Client;

use crate::config::ClientSection;
use crate::requester::{ClientOpts, Failure, emit_json, finish};

#[derive(Debug, clap::Args)]
pub struct DirectoryArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// Only brokers serving this service (`owner~name`).
    #[arg(long)]
    service: Option<String>,
    /// Rank by distance from this point.
    #[arg(long, value_name = "LAT,LON", allow_hyphen_values = true, value_parser = brume_federation::parse_point)]
    near: Option<(f64, f64)>,
    /// Only brokers with at least this many free slots.
    #[arg(long)]
    min_free: Option<u64>,
    /// Only brokers in this region.
    #[arg(long)]
    region: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct LocateArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// The service: `owner~name`, or the owner then the name.
    service: String,
    name: Option<String>,
}

pub async fn directory(args: DirectoryArgs, file: &ClientSection) -> ExitCode {
    finish(directory_inner(args, file).await)
}

async fn directory_inner(args: DirectoryArgs, file: &ClientSection) -> Result<ExitCode, Failure> {
    let client = args.opts.client(file)?;
    let dir = client
        .directory(
            args.service.as_deref(),
            args.near,
            args.min_free,
            args.region.as_deref(),
        )
        .await?;
    if args.opts.json {
        emit_json(&dir);
    } else {
        print!("{}", directory_text(&dir));
    }
    Ok(ExitCode::SUCCESS)
}

fn directory_text(dir: &Directory) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if dir.brokers.is_empty() {
        let _ = writeln!(out, "no broker matches");
    }
    for e in &dir.brokers {
        let a = &e.announcement.announcement;
        let distance = e
            .distance_km
            .map(|d| format!("{d:.0} km"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{}{}  {}  region {}  {distance}  slots {}/{} free  queued {}  services {}",
            a.broker,
            if e.local { " (this broker)" } else { "" },
            a.url,
            a.region,
            a.capacity.slots_free,
            a.capacity.slots_total,
            a.queued,
            a.services.len(),
        );
    }
    out
}

pub async fn locate(args: LocateArgs, file: &ClientSection) -> ExitCode {
    finish(locate_inner(args, file).await)
}

async fn locate_inner(args: LocateArgs, file: &ClientSection) -> Result<ExitCode, Failure> {
    let (owner, name) = match (&args.name, args.service.split_once('~')) {
        (Some(n), _) => (args.service.clone(), n.clone()),
        (None, Some((o, n))) => (o.to_string(), n.to_string()),
        (None, None) => {
            return Err(Failure::Usage(format!(
                "{:?}: name the service as owner~name, or give the owner and the name",
                args.service
            )));
        }
    };
    let client = args.opts.client(file)?;
    let located = client.locate(&owner, &name).await?;
    if args.opts.json {
        emit_json(&located);
    } else {
        print!("{}", located_text(&located));
    }
    Ok(ExitCode::SUCCESS)
}

fn located_text(l: &Located) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for b in &l.brokers {
        let protocol = match b.protocol {
            brume_api::ServiceKind::Command => "command",
            brume_api::ServiceKind::Http => "http",
            brume_api::ServiceKind::Oci => "oci",
        };
        let _ = writeln!(
            out,
            "{}  {protocol}  {}  region {}  slots free {}",
            b.broker, b.endpoint, b.region, b.slots_free
        );
    }
    out
}

/// The best broker for `service` near `near` or in `region`, as the
/// configured broker's directory ranks them (that broker itself if it
/// ranks first).
pub(crate) async fn pick_broker(
    opts: &ClientOpts,
    file: &ClientSection,
    via: &Client,
    service: &str,
    near: Option<(f64, f64)>,
    region: Option<&str>,
) -> Result<Client, Failure> {
    // An unqualified name is the caller's own: the directory lists names
    // with their owner, so only a qualified one filters.
    let filter = service.contains('~').then_some(service);
    let dir = via.directory(filter, near, None, region).await?;
    let Some(best) = dir.brokers.first() else {
        return Err(Failure::Local(format!(
            "no broker in {}'s directory matches (service {service}{})",
            via.base_url(),
            region.map(|r| format!(", region {r}")).unwrap_or_default()
        )));
    };
    let a = &best.announcement.announcement;
    if !opts.json {
        eprintln!(
            "using broker {} at {} (region {}{})",
            a.broker,
            a.url,
            a.region,
            best.distance_km
                .map(|d| format!(", {d:.0} km"))
                .unwrap_or_default()
        );
    }
    if best.local {
        return Ok(via.clone());
    }
    opts.client_at(file, Some((&a.url, a.tls_sha256.as_deref())))
}
