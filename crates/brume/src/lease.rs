//! `brume lease`: an http service kept running on a provider, paid from an
//! escrow of its own that drips per second of running time
//! (`/v1/leases`). `create`, `top-up`, `status`, `logs` and `stop` each
//! make one client call and print the lease (or its list, or its events)
//! as text, or its JSON body with `--json`.

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use brume_api::lease::{LeaseEvent, LeaseInfo, LeaseList, LeaseSpec};

use crate::config::ClientSection;
use crate::requester::{ClientOpts, Failure, emit_json, finish};

#[derive(Debug, clap::Args)]
pub struct LeaseArgs {
    #[command(flatten)]
    opts: ClientOpts,
    #[command(subcommand)]
    command: LeaseCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LeaseCommand {
    /// Start a lease of an http service, with an escrow to begin with.
    Create {
        /// The http service (`name`, `owner~name`, with `@VERSION` if
        /// wanted).
        service: String,
        /// The escrow to start with, in token base units (10^-18 token).
        #[arg(long, value_name = "BASE_UNITS", value_parser = parse_amount)]
        deposit: u128,
        /// Its traffic needs an API key of your account (default: public).
        #[arg(long)]
        private: bool,
    },
    /// Add base units to a lease's escrow; a halted lease resumes.
    TopUp {
        id: String,
        /// Token base units to add (10^-18 token).
        #[arg(long, value_name = "BASE_UNITS", value_parser = parse_amount)]
        amount: u128,
    },
    /// Show a lease, or list your account's leases (newest first).
    Status { id: Option<String> },
    /// Print a lease's events, oldest first.
    Logs { id: String },
    /// Stop a lease for good: what ran is billed.
    Stop { id: String },
}

/// A positive whole number of base units, in decimal.
fn parse_amount(s: &str) -> Result<u128, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{s:?} is not a whole number of base units (decimal digits only)"
        ));
    }
    match s.parse::<u128>() {
        Ok(0) => Err("must be at least 1 base unit".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s} is too large (at most {})", u128::MAX)),
    }
}

pub async fn main(args: LeaseArgs, file: &ClientSection) -> ExitCode {
    finish(run(args, file).await)
}

async fn run(args: LeaseArgs, file: &ClientSection) -> Result<ExitCode, Failure> {
    let client = args.opts.client(file)?;
    let json = args.opts.json;
    let lease = match args.command {
        LeaseCommand::Create {
            service,
            deposit,
            private,
        } => {
            let spec = LeaseSpec {
                service,
                deposit: deposit.to_string(),
                private,
            };
            client.create_lease(&spec).await?
        }
        LeaseCommand::TopUp { id, amount } => client.top_up_lease(&id, amount).await?,
        LeaseCommand::Status { id: Some(id) } => client.lease(&id).await?,
        LeaseCommand::Status { id: None } => {
            let list = client.leases().await?;
            if json {
                emit_json(&list);
            } else {
                print_list(&list);
            }
            return Ok(ExitCode::SUCCESS);
        }
        LeaseCommand::Logs { id } => {
            let events = client.lease_events(&id).await?;
            if json {
                emit_json(&events);
            } else {
                for ev in &events.events {
                    println!("{}", event_line(ev));
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        LeaseCommand::Stop { id } => client.stop_lease(&id).await?,
    };
    if json {
        emit_json(&lease);
    } else {
        print_lease(&lease);
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- output

fn print_lease(l: &LeaseInfo) {
    println!("id        {}", l.id);
    println!("state     {}", l.state.as_str());
    println!("service   {} (sha256:{})", l.service, l.digest);
    if let Some(p) = &l.provider {
        println!("provider  {p}");
    }
    println!("rate/s    {}", l.rate_per_s);
    println!("deposit   {}", l.deposit);
    println!("billed    {}", l.billed);
    println!("balance   {}", l.balance);
    println!("running   {} ({} rows)", running(l.running_ms), l.rows);
    println!("traffic   {}", if l.private { "private" } else { "public" });
    println!("url       {}", l.url);
    println!("account   {}", l.account);
    println!("created   {}", crate::requester::when(l.created_at_ms));
}

fn print_list(list: &LeaseList) {
    if list.leases.is_empty() {
        eprintln!("no leases");
        return;
    }
    let header = [
        "ID", "SERVICE", "STATE", "PROVIDER", "BALANCE", "RATE/S", "RUNNING",
    ];
    let rows: Vec<[String; 7]> = list
        .leases
        .iter()
        .map(|l| {
            [
                l.id.clone(),
                l.service.clone(),
                l.state.as_str().to_string(),
                l.provider.as_deref().map(short_addr).unwrap_or_default(),
                l.balance.clone(),
                l.rate_per_s.clone(),
                running(l.running_ms),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut s = String::new();
        for (cell, w) in cells.iter().zip(widths) {
            s.push_str(&format!("{cell:<w$}  "));
        }
        println!("{}", s.trim_end());
    };
    line(header);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
}

/// One event as one line: its time (UTC), its kind, its message.
fn event_line(ev: &LeaseEvent) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ev.at_ms);
    format!(
        "{} {:<9} {}",
        humantime::format_rfc3339_millis(t),
        ev.kind,
        ev.message
    )
}

/// Running time, to the second: `1h 2m 3s`.
fn running(ms: u64) -> String {
    humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
}

/// `0x1234567890abcdef...` as `0x1234…cdef`.
fn short_addr(addr: &str) -> String {
    if addr.len() > 14 && addr.is_ascii() {
        format!("{}…{}", &addr[..6], &addr[addr.len() - 4..])
    } else {
        addr.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_positive_decimal_base_units() {
        assert_eq!(parse_amount("1"), Ok(1));
        assert_eq!(
            parse_amount("1000000000000000000"),
            Ok(1_000_000_000_000_000_000)
        );
        assert_eq!(parse_amount(&u128::MAX.to_string()), Ok(u128::MAX));
        for bad in ["", "0", "000", "-5", "+5", "1.5", "1e18", " 7", "abc"] {
            assert!(parse_amount(bad).is_err(), "{bad:?}");
        }
        let too_big = format!("{}0", u128::MAX);
        assert!(
            parse_amount(&too_big)
                .expect_err("too big")
                .contains("too large")
        );
    }

    #[test]
    fn events_print_time_kind_message() {
        let ev = LeaseEvent {
            at_ms: 1_700_000_000_123,
            kind: "halted".into(),
            message: "escrow empty".into(),
        };
        assert_eq!(
            event_line(&ev),
            "2023-11-14T22:13:20.123Z halted    escrow empty"
        );
    }
}
