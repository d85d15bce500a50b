//! `brume ledger export|audit`: read a ledger from a data directory or from
//! a broker's public API, print it, or re-verify every row hash.
//!
//! Exit codes: 0 clean (or exported), 1 the audit found bad rows (they are
//! named on stderr, or in the `--json` report), 2 the ledger could not be
//! read.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use brume_ledger::audit::{self, AuditReport, Finding, Problem};
use brume_ledger::row::LedgerRow;
use brume_ledger::store::{LedgerStore, ListQuery, MAX_PAGE, RowFilter};

#[derive(Debug, clap::Args)]
pub struct LedgerArgs {
    #[command(subcommand)]
    command: LedgerCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LedgerCommand {
    /// Print the rows (public columns and hashes) as CSV or JSON lines.
    Export(ExportArgs),
    /// Recompute every row hash; exit non-zero naming the rows that differ.
    Audit(AuditArgs),
}

/// Where the ledger is read from.
#[derive(Debug, clap::Args)]
struct Source {
    /// A broker data dir (reads DIR/ledger) or a devnet data dir (reads
    /// DIR/broker/ledger).
    #[arg(long, conflicts_with_all = ["broker", "store"], required_unless_present_any = ["broker", "store"])]
    data: Option<PathBuf>,
    /// A broker's URL: pages through its public API (`/v1/ledger/rows`).
    #[arg(long, conflicts_with = "store")]
    broker: Option<String>,
    /// A ledger kept in PostgreSQL: its `postgres://` URL (read directly;
    /// a role with SELECT on the ledger's tables is enough).
    #[arg(long, value_parser = brume_pg::url_arg)]
    store: Option<String>,
    #[command(flatten)]
    tls: crate::tls::TrustArgs,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    #[command(flatten)]
    source: Source,
    /// `csv` (a header row of public columns; payouts as JSON in one
    /// column) or `jsonl` (one row object a line).
    #[arg(long, default_value = "jsonl")]
    format: Format,
    /// Only rows at or after this time (ms since the Unix epoch).
    #[arg(long)]
    from_ms: Option<u64>,
    /// Only rows before this time (ms since the Unix epoch).
    #[arg(long)]
    to_ms: Option<u64>,
    /// Only rows of this requester account.
    #[arg(long)]
    account: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Csv,
    Jsonl,
}

#[derive(Debug, clap::Args)]
struct AuditArgs {
    #[command(flatten)]
    source: Source,
    /// Audit settlement on this EVM chain (JSON-RPC URL): every
    /// collection and payout the `Settlement` contract logged against the
    /// ledger's rows. Needs --data and --deployment.
    #[arg(
        long,
        visible_alias = "chain",
        requires = "deployment",
        requires = "data"
    )]
    rpc: Option<String>,
    /// The contracts' addresses (what `brume chain deploy --json` printed).
    #[arg(long, requires = "rpc")]
    deployment: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

pub async fn main(args: LedgerArgs) -> ExitCode {
    let result = match args.command {
        LedgerCommand::Export(a) => export(a).await,
        LedgerCommand::Audit(a) => run_audit(a).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: ledger: {}", crate::report(&e));
            ExitCode::from(2)
        }
    }
}

/// The ledger directory of a broker or devnet data dir.
fn ledger_dir(data: &Path) -> anyhow::Result<PathBuf> {
    let file = brume_ledger::store::DB_FILE;
    for dir in [data.join("ledger"), data.join("broker").join("ledger")] {
        if dir.join(file).is_file() {
            return Ok(dir);
        }
    }
    bail!(
        "no ledger under {} (looked for ledger/{file} and broker/ledger/{file})",
        data.display()
    )
}

async fn open(data: &Path) -> anyhow::Result<Arc<dyn LedgerStore>> {
    let dir = ledger_dir(data)?;
    brume_ledger::store::open(&dir.display().to_string())
        .await
        .context("open the ledger")
}

/// One page from a broker: rows as JSON objects, corrupt rows as findings.
struct RemotePage {
    rows: Vec<serde_json::Value>,
    corrupt: Vec<Finding>,
    next_cursor: Option<String>,
}

async fn remote_page(
    http: &reqwest::Client,
    base: &str,
    filter: &RowFilter,
    cursor: Option<&str>,
) -> anyhow::Result<RemotePage> {
    let mut query: Vec<(&str, String)> = vec![("limit", MAX_PAGE.to_string())];
    if let Some(v) = filter.from_ms {
        query.push(("from_ms", v.to_string()));
    }
    if let Some(v) = filter.to_ms {
        query.push(("to_ms", v.to_string()));
    }
    if let Some(v) = &filter.account {
        query.push(("account", v.clone()));
    }
    if let Some(c) = cursor {
        query.push(("cursor", c.to_string()));
    }
    let url = format!("{}/v1/ledger/rows", base.trim_end_matches('/'));
    let resp = http
        .get(&url)
        .query(&query)
        .send()
        .await
        .map_err(|e| crate::tls::http_error(e, format!("GET {url}")))?;
    let status = resp.status();
    let body = resp.bytes().await.with_context(|| format!("GET {url}"))?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    let mut v: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))?;
    let Some(serde_json::Value::Array(rows)) = v.get_mut("rows").map(serde_json::Value::take)
    else {
        bail!("GET {url}: no `rows` array")
    };
    let corrupt = v
        .get("corrupt")
        .and_then(|c| c.as_array())
        .map(|c| {
            c.iter()
                .map(|c| Finding {
                    work_id: c
                        .get("work_id")
                        .and_then(|w| w.as_str())
                        .unwrap_or("?")
                        .to_string(),
                    problem: Problem::Undecodable {
                        detail: c
                            .get("detail")
                            .and_then(|d| d.as_str())
                            .unwrap_or_default()
                            .to_string(),
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    let next_cursor = v
        .get("next_cursor")
        .and_then(|c| c.as_str())
        .map(str::to_string);
    Ok(RemotePage {
        rows,
        corrupt,
        next_cursor,
    })
}

/// Calls `each` with every page of rows the filter selects.
async fn for_each_page(
    source: &Source,
    filter: RowFilter,
    mut each: impl FnMut(Vec<serde_json::Value>, Vec<Finding>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut cursor: Option<String> = None;
    let local = match (&source.data, &source.store) {
        (Some(data), _) => Some(open(data).await?),
        (None, Some(url)) => Some(
            brume_ledger::store::open(url)
                .await
                .context("open the ledger database")?,
        ),
        (None, None) => None,
    };
    match (local, &source.broker) {
        (Some(store), _) => loop {
            let page = store
                .list(ListQuery {
                    filter: filter.clone(),
                    cursor: cursor.take(),
                    limit: Some(MAX_PAGE),
                    private: true,
                })
                .await
                .context("read the ledger")?;
            let rows = page
                .rows
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()?;
            let corrupt = page
                .corrupt
                .into_iter()
                .map(|c| Finding {
                    work_id: c.work_id,
                    problem: Problem::Undecodable { detail: c.detail },
                })
                .collect();
            each(rows, corrupt)?;
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        },
        (None, Some(url)) => {
            let trust = source.tls.trust(None, None)?;
            let http = trust
                .reqwest(reqwest::Client::builder())?
                .build()
                .context("HTTP client")?;
            loop {
                let page = remote_page(&http, url, &filter, cursor.as_deref()).await?;
                each(page.rows, page.corrupt)?;
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        (None, None) => bail!("give --data DIR or --broker URL"),
    }
    Ok(())
}

/// The public columns of the CSV export, in order.
const CSV_COLUMNS: &[&str] = &[
    "work_id",
    "timestamp_ms",
    "requester",
    "end_user",
    "provider",
    "developer",
    "operator",
    "charities",
    "service_digest",
    "tier",
    "fuel",
    "wall_us",
    "peak_memory_bytes",
    "bytes_in",
    "bytes_out",
    "fee_currency",
    "fee_micros",
    "token_amount",
    "rate_fiat_micros",
    "rate_token_units",
    "surcharge",
    "payers",
    "payouts",
    "private_hash",
    "custom_hash",
    "row_hash",
];

/// One CSV field, quoted when it must be (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_line(row: &LedgerRow) -> anyhow::Result<String> {
    let d = &row.data;
    let u = &d.usage;
    let fields = [
        d.work_id.clone(),
        d.timestamp_ms.to_string(),
        d.requester.clone(),
        d.end_user.clone(),
        d.provider.clone(),
        d.developer.clone(),
        d.operator.clone(),
        serde_json::to_string(&d.charities)?,
        d.service_digest.clone(),
        d.tier.clone(),
        u.fuel.to_string(),
        u.wall_us.to_string(),
        u.peak_memory_bytes.to_string(),
        u.bytes_in.to_string(),
        u.bytes_out.to_string(),
        d.fee_currency.clone(),
        d.fee_micros.to_string(),
        d.token_amount.to_string(),
        d.rate.fiat_micros.to_string(),
        d.rate.token_units.to_string(),
        d.surcharge.to_string(),
        serde_json::to_string(&d.payers)?,
        serde_json::to_string(&d.payouts)?,
        row.private_hash.to_string(),
        row.custom_hash.to_string(),
        row.row_hash.to_string(),
    ];
    Ok(fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(","))
}

async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let filter = RowFilter {
        from_ms: args.from_ms,
        to_ms: args.to_ms,
        account: args.account.clone(),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if let Format::Csv = args.format {
        writeln!(out, "{}", CSV_COLUMNS.join(","))?;
    }
    let mut skipped = 0u64;
    for_each_page(&args.source, filter, |rows, corrupt| {
        skipped += corrupt.len() as u64;
        for v in rows {
            // The export shows public columns only.
            let row: LedgerRow = serde_json::from_value(v).context("decode a row")?;
            let row = row.public();
            match args.format {
                Format::Jsonl => writeln!(out, "{}", serde_json::to_string(&row)?)?,
                Format::Csv => writeln!(out, "{}", csv_line(&row)?)?,
            }
        }
        Ok(())
    })
    .await?;
    out.flush()?;
    if skipped > 0 {
        eprintln!("warning: {skipped} undecodable row(s) left out (run `brume ledger audit`)");
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let mut report = AuditReport::default();
    for_each_page(&args.source, RowFilter::default(), |rows, corrupt| {
        report.merge(audit::audit_json(&rows));
        report.rows += corrupt.len() as u64;
        report.findings.extend(corrupt);
        Ok(())
    })
    .await?;
    // From a data dir with a settlement store: every settled group's
    // aggregate against its anchor on the chain.
    let settle = match (&args.source.data, &args.rpc) {
        (Some(data), Some(rpc)) => {
            Some(audit_evm_settlement(data, rpc, args.deployment.as_deref()).await?)
        }
        (Some(data), None) => audit_settlement(data).await?,
        (None, _) => None,
    };
    if args.json {
        let mut v = serde_json::to_value(&report).map_err(|e| anyhow!(e))?;
        if let (Some(s), Some(obj)) = (&settle, v.as_object_mut()) {
            obj.insert(
                "settlement".into(),
                serde_json::to_value(s).map_err(|e| anyhow!(e))?,
            );
        }
        println!("{v}");
    } else {
        println!(
            "{} rows audited ({} with private columns), aggregate {}",
            report.rows,
            report.private_checked,
            report.aggregate.hash()
        );
        for f in &report.findings {
            eprintln!("bad row {}: {}", f.work_id, describe(&f.problem));
        }
        if let Some(s) = &settle {
            println!(
                "{} settlement transfers audited against their rows and the chain",
                s.transfers
            );
            for m in s.mismatched.iter().chain(&s.untraced) {
                eprintln!("bad settlement transfer: {m}");
            }
        }
    }
    let settle_clean = settle
        .as_ref()
        .is_none_or(brume_settle::SettleAudit::is_clean);
    if report.is_clean() && settle_clean {
        Ok(ExitCode::SUCCESS)
    } else {
        if !args.json {
            eprintln!(
                "audit failed: {} bad row(s){}{}",
                report.bad_rows().len(),
                if report.bad_rows().is_empty() {
                    ""
                } else {
                    ": "
                },
                report.bad_rows().join(", ")
            );
            if !settle_clean {
                eprintln!("audit failed: settlement transfers do not match (see above)");
            }
        }
        Ok(ExitCode::from(1))
    }
}

/// The settlement audit of a broker data dir on the dev chain (`chain/`,
/// `ledger/`, `broker.key`: the payout account), if it has a chain. It
/// reads the ledger and the chain only, never the settlement journal.
async fn audit_settlement(data: &Path) -> anyhow::Result<Option<brume_settle::SettleAudit>> {
    let ledger = ledger_dir(data)?;
    let base = ledger.parent().map(Path::to_path_buf).unwrap_or_default();
    let (chain, key) = (base.join("chain"), base.join("broker.key"));
    if !chain.is_dir() || !key.is_file() {
        return Ok(None);
    }
    let (store, settlement) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let store = brume_ledger::store::SqliteStore::open(&ledger)?;
        let chain: std::sync::Arc<dyn brume_chain::Chain> =
            std::sync::Arc::new(brume_chain::DevChain::open_existing(&chain)?);
        let payout = std::sync::Arc::new(brume_identity::Identity::load_or_create(&key)?);
        // Reads only: the slash destination plays no part.
        let settlement = brume_chain::DevSettlement::new(chain, payout, brume_chain::Address::ZERO);
        Ok((store, settlement))
    })
    .await??;
    let audit = brume_settle::audit::audit(
        &store,
        &settlement,
        &brume_settle::addresses_only(),
        brume_settle::SettleConfig::default().page,
    )
    .await?;
    Ok(Some(audit))
}

/// The settlement audit of a ledger against an EVM chain's logs.
async fn audit_evm_settlement(
    data: &Path,
    rpc: &str,
    deployment: Option<&Path>,
) -> anyhow::Result<brume_settle::SettleAudit> {
    let deployment = crate::wallet::evm::read_deployment(deployment)?;
    let url = crate::wallet::rpc_url(rpc)?;
    let ledger = ledger_dir(data)?;
    let store =
        tokio::task::spawn_blocking(move || brume_ledger::store::SqliteStore::open(&ledger))
            .await??;
    let mut config = brume_evm::EvmConfig::new(url, deployment);
    config.confirmations = 1;
    let chain = brume_evm::EvmChain::reader(config)
        .await
        .with_context(|| format!("reach {rpc}"))?;
    Ok(brume_settle::audit::audit(
        &store,
        &chain,
        &brume_settle::addresses_only(),
        brume_settle::SettleConfig::default().page,
    )
    .await?)
}

fn describe(p: &Problem) -> String {
    serde_json::to_string(p).unwrap_or_else(|_| format!("{p:?}"))
}
