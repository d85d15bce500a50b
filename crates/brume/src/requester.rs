//! Requester commands: `service`, `invoke`, `run`, `job`. Each turns flags
//! into `brume_client` calls and prints the answer, as text or (`--json`)
//! one JSON object on stdout.
//!
//! Exit status: `invoke`, `run` and `job result` exit with the guest's own
//! exit code; a job that failed without one exits 1. API and transport
//! errors print `error: <code>: <message>` and exit 1; usage errors exit 2.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use brume_api::rest::{
    EventKind, JobEvent, JobInfo, JobResult, JobSpec, JobState, LimitsSpec, Output, ServiceInfo,
    validate_service_name,
};
use brume_api::{ErrorCode, Profile, ServiceKind, WorkId};
use brume_client::{Client, ClientError};
use bytes::Bytes;
use serde::Serialize;
use serde_json::json;

use crate::config::ClientSection;

const DEFAULT_BROKER: &str = "http://127.0.0.1:7700";
/// How often `invoke` retries an `overloaded` answer, and the longest
/// `Retry-After` it waits out.
const OVERLOAD_RETRIES: u32 = 3;
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- flags

/// Flags every requester command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientOpts {
    /// The broker's URL (default: config `client.broker`, else
    /// http://127.0.0.1:7700).
    #[arg(long, env = "BRUME_BROKER", value_name = "URL", global = true)]
    broker: Option<String>,
    /// API key (default: config `client.api_key`).
    #[arg(
        long,
        env = "BRUME_API_KEY",
        value_name = "KEY",
        hide_env_values = true,
        global = true
    )]
    api_key: Option<String>,
    /// Sign every request with this keyring key (its address or name)
    /// instead of an API key: the address is the paying account ("no
    /// account needed"); it takes precedence over an API key. The keyring
    /// is $BRUME_KEYS_DIR (else the default);
    /// the password comes from $BRUME_KEY_PASSWORD, else a prompt.
    #[arg(long, value_name = "ADDRESS|NAME", global = true)]
    key: Option<String>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(flatten)]
    tls: crate::tls::GlobalTrustArgs,
}

impl ClientOpts {
    pub(crate) fn client(&self, file: &ClientSection) -> Result<Client, Failure> {
        self.client_at(file, None)
    }

    /// A client for another broker than the configured one (found in the
    /// directory), pinned to its announced certificate if it has one; the
    /// same key or API key.
    pub(crate) fn client_at(
        &self,
        file: &ClientSection,
        at: Option<(&str, Option<&str>)>,
    ) -> Result<Client, Failure> {
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        let broker = match at {
            Some((url, _)) => url.to_string(),
            None => nonempty(&self.broker)
                .or_else(|| nonempty(&file.broker))
                .unwrap_or_else(|| DEFAULT_BROKER.to_string()),
        };
        let trust = match at {
            Some((_, Some(pin))) => brume_tls::Trust::pinned(
                pin.parse()
                    .map_err(|e| Failure::Local(format!("{broker}: announced pin: {e}")))?,
            ),
            _ => self
                .tls
                .trust(file.ca.as_deref(), file.pin_sha256.as_deref())
                .map_err(|e| Failure::Usage(crate::report(&e)))?,
        };
        let client = if let Some(key) = &self.key {
            let id = keyring_identity("--key", key, None, None)?;
            Client::with_identity(&broker, id)
        } else {
            let key = nonempty(&self.api_key).or_else(|| nonempty(&file.api_key));
            Client::new(&broker, key)
        };
        client
            .and_then(|c| c.with_tls(&trust))
            .map_err(|e| Failure::Usage(e.to_string()))
    }
}

/// A keyring key (address or name), its password from `password_file`,
/// else $BRUME_KEY_PASSWORD, else a prompt. `flag` names the option in
/// errors.
fn keyring_identity(
    flag: &str,
    key: &str,
    keys_dir: Option<PathBuf>,
    password_file: Option<&std::path::Path>,
) -> Result<brume_identity::Identity, Failure> {
    use brume_identity::keyring::Keyring;
    let dir = keys_dir.or_else(Keyring::default_dir).ok_or_else(|| {
        Failure::Usage(
            "no keyring directory: set HOME or BRUME_KEYS_DIR, or pass --keys-dir".into(),
        )
    })?;
    let ring = Keyring::new(dir);
    // Find the key first: a wrong name shouldn't ask for a password.
    ring.find(key)
        .map_err(|e| Failure::Local(format!("{flag} {key}: {e}")))?;
    let password = key_password(password_file)?;
    ring.load(key, password.as_bytes())
        .map_err(|e| Failure::Local(format!("load key {key}: {e}")))
}

/// A key's password: the first line of `file`, else $BRUME_KEY_PASSWORD,
/// else a prompt on the terminal.
fn key_password(file: Option<&std::path::Path>) -> Result<String, Failure> {
    const PASSWORD_ENV: &str = "BRUME_KEY_PASSWORD";
    if let Some(path) = file {
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(64 << 10).read_to_string(&mut text))
            .map_err(|e| Failure::Local(format!("read password file {}: {e}", path.display())))?;
        let line = text.split('\n').next().unwrap_or_default();
        return Ok(line.strip_suffix('\r').unwrap_or(line).to_string());
    }
    if let Ok(p) = std::env::var(PASSWORD_ENV) {
        return Ok(p);
    }
    match brume_identity::keyring::prompt_password("key password: ") {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(Failure::Usage(format!(
            "no password: pass --password-file FILE or set {PASSWORD_ENV}"
        ))),
        Err(e) => Err(Failure::Local(format!("read the password: {e}"))),
    }
}

#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    #[command(flatten)]
    opts: ClientOpts,
    #[command(subcommand)]
    command: ServiceCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ServiceCommand {
    /// Upload a module as a service in your namespace; publishing a name
    /// again makes a new version (`name@2`, …); old versions stay.
    Publish {
        /// The module: `.wasm` (core module or component) or `.wat` text;
        /// with `--kind oci`, an OCI image layout (a directory or its tar).
        file: PathBuf,
        /// Service name (default: the file name, made into a valid name).
        #[arg(long)]
        name: Option<String>,
        /// `command` (a WASI command, called with `brume invoke`), `http`
        /// (a wasi:http component, called at /fn/NAME/...) or `oci` (a
        /// container image, run as a job on providers that take them).
        #[arg(long, default_value = "command")]
        kind: ServiceKind,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// List the broker's services (the latest version of each).
    List {
        /// Only this namespace (an address, alias or key label).
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show one service: `[owner~]name[@version]`.
    Show { name: String },
    /// List every version of a service.
    Versions { name: String },
    /// Retire a service you own (every version), or one version
    /// (`name@N`): it can no longer be called.
    Retire { name: String },
    /// Register your namespace's alias (once; first come, first served).
    Alias { alias: String },
    /// Operator (`admin` key): move a service, every version, to another
    /// namespace.
    Move {
        name: String,
        /// The new owner: an address, alias or key label.
        #[arg(long)]
        to: String,
    },
}

/// A developer signature for `brume service publish`.
#[derive(Debug, clap::Args)]
struct SignArgs {
    /// Sign the module's digest with this keyring key (its address or
    /// name): the signer becomes the service's developer (royalty payee),
    /// and providers that require signed modules can run it.
    #[arg(long, value_name = "ADDRESS|NAME")]
    sign_with: Option<String>,
    /// The keyring directory (default: $BRUME_KEYS_DIR, else
    /// ~/.config/brume/keys).
    #[arg(
        long,
        env = "BRUME_KEYS_DIR",
        value_name = "DIR",
        requires = "sign_with"
    )]
    keys_dir: Option<PathBuf>,
    /// Read the key's password from the first line of FILE (default:
    /// $BRUME_KEY_PASSWORD, else a prompt on the terminal).
    #[arg(long, value_name = "FILE", requires = "sign_with")]
    password_file: Option<PathBuf>,
}

impl SignArgs {
    /// The developer identity from the keyring, if `--sign-with` is given.
    fn identity(&self) -> Result<Option<brume_identity::Identity>, Failure> {
        let Some(key) = &self.sign_with else {
            return Ok(None);
        };
        keyring_identity(
            "--sign-with",
            key,
            self.keys_dir.clone(),
            self.password_file.as_deref(),
        )
        .map(Some)
    }
}

#[derive(Debug, clap::Args)]
pub struct InvokeArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// The command service to call.
    service: String,
    /// The function's stdin: `@FILE`, `-` (this process's stdin) or the
    /// text itself. Default: empty.
    #[arg(long, short = 'd', value_name = "@FILE|-|TEXT", value_parser = parse_data)]
    data: Option<DataSource>,
    /// An argument for the function (repeatable; before those after `--`).
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    arg: Vec<String>,
    /// More arguments for the function.
    #[arg(last = true, value_name = "ARGS")]
    rest: Vec<String>,
    /// Call the best broker near this point (`LAT,LON`), as the
    /// configured broker's directory ranks them, instead of that broker.
    #[arg(long, value_name = "LAT,LON", allow_hyphen_values = true, value_parser = brume_federation::parse_point)]
    near: Option<(f64, f64)>,
    /// Call the best broker in this region (from the directory).
    #[arg(long)]
    region: Option<String>,
    /// A session key (`x-brume-affinity`): calls with the same key run on
    /// one provider while it lives, and share a work dir, `/session`.
    #[arg(long, value_name = "KEY")]
    affinity: Option<String>,
    /// A fee bid per compute hour, in micro-tokens
    /// (`x-brume-max-fee-per-hour`).
    #[arg(long, value_name = "MICROS")]
    max_fee_per_hour: Option<u64>,
}

#[derive(Debug, clap::Args)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// The module: `.wasm` (a WASI command) or `.wat` text. With
    /// `--image`, the first argument instead.
    #[arg(required_unless_present = "image")]
    module: Option<PathBuf>,
    /// Run an OCI container image instead of a module: an image layout
    /// directory (`oci-layout`, `index.json`, `blobs/`) or its tar, or an
    /// image in a registry pinned by digest
    /// (`registry.example/tool@sha256:…`, pulled by providers allowed that
    /// registry). It runs on providers that take containers; the arguments
    /// replace the image's `Cmd`.
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// Upload FILE and place it at DEST in the job's work dir (`/work`;
    /// repeatable).
    #[arg(long = "input", value_name = "DEST=FILE", value_parser = crate::files::parse_input)]
    inputs: Vec<(String, PathBuf)>,
    /// A file the job leaves in its work dir (`/work`) to keep (repeatable).
    #[arg(long = "output", value_name = "PATH")]
    outputs: Vec<String>,
    /// Download the job's output files into DIR when it ends.
    #[arg(short = 'o', long = "output-dir", value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// GPUs the job needs (oci jobs): it runs only on a provider with as
    /// many.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=16))]
    gpus: Option<u32>,
    /// vCPUs the container gets (oci jobs; default 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    vcpus: Option<u32>,
    /// Let the container reach the network (oci jobs): it runs only on a
    /// provider that allows it. Without it, a container has no network.
    #[arg(long)]
    network: bool,
    /// Arguments for the guest (after the module, or after `--`).
    #[arg(allow_hyphen_values = true)]
    args: Vec<String>,
    /// Service name to publish the module under (default: the file name,
    /// made into a valid name).
    #[arg(long)]
    name: Option<String>,
    /// Set a guest environment variable; `NAME` alone copies it from this
    /// process (repeatable).
    #[arg(long = "env", value_name = "NAME[=VAL]", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// File to use as the guest's stdin, or `-` for this process's stdin.
    /// Default: empty.
    #[arg(long, value_name = "FILE|-")]
    stdin: Option<PathBuf>,
    /// Instruction budget.
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
    /// Memory cap, e.g. `64MiB`.
    #[arg(long, value_name = "SIZE")]
    memory: Option<bytesize::ByteSize>,
    /// Wall-clock deadline of one attempt, e.g. `5s` or `250ms`.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Cap on stdout + stderr, e.g. `16MiB`.
    #[arg(long, value_name = "SIZE")]
    max_output: Option<bytesize::ByteSize>,
    /// How many providers may try before the job fails.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(brume_api::rest::MAX_ATTEMPTS_LIMIT)))]
    max_attempts: Option<u32>,
    /// How long the job may wait for a provider, e.g. `2m`.
    #[arg(long, value_parser = humantime::parse_duration)]
    queue_timeout: Option<Duration>,
    /// The most the job pays, in micro-tokens per 10^9 fuel.
    #[arg(long, value_name = "PRICE")]
    max_price: Option<u64>,
    /// A fee bid per compute hour (an hour at 1 KMIPS), in micro-tokens:
    /// refused if the price in force is above it; only providers whose ask
    /// fits it run the job, and those that prefer profit take it sooner.
    #[arg(long, value_name = "MICROS")]
    max_fee_per_hour: Option<u64>,
    /// A session key: jobs and calls of your account with the same key run
    /// on one provider while it lives, and share a work dir, `/session`.
    #[arg(long, value_name = "KEY")]
    affinity: Option<String>,
    /// Run reproducibly: NaN canonicalization, seeded random, virtual clocks.
    #[arg(long)]
    deterministic: bool,
    /// Seed for `--deterministic` (default 0).
    #[arg(long, requires = "deterministic")]
    seed: Option<u64>,
    /// A label `KEY=VALUE` kept with the job (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// A column `NAME=VALUE` of your own on the job's ledger rows
    /// (private; repeatable, at most 16).
    #[arg(long = "column", value_name = "NAME=VALUE", value_parser = parse_label)]
    columns: Vec<(String, String)>,
    /// The service tier to run at (default: your account's).
    #[arg(long, value_name = "NAME")]
    tier: Option<String>,
    /// Pay only once you confirm the result (`brume job confirm ID`), or
    /// once the broker's confirmation window after the job's end passes.
    #[arg(long)]
    confirm: bool,
    /// The most the job may cost, in micro-units of the broker's currency;
    /// your account's deal decides what happens above it.
    #[arg(long, value_name = "MICROS")]
    price_cap: Option<u64>,
    /// How long you expect the job to run, e.g. `30s`: it goes only to a
    /// provider whose working hours leave that long, and overrunning it by
    /// more than the broker's tolerance costs a surcharge.
    #[arg(long, value_parser = humantime::parse_duration)]
    expect_runtime: Option<Duration>,
    /// The peak memory you expect, e.g. `64MiB` (surcharged like
    /// `--expect-runtime`).
    #[arg(long, value_name = "SIZE")]
    expect_memory: Option<bytesize::ByteSize>,
    /// The bandwidth the job needs, in Mbit/s: it goes only to a provider
    /// measured at least that fast.
    #[arg(long, value_name = "MBPS")]
    expect_mbps: Option<u64>,
    /// Verify by replication: `N/QUORUM` (e.g. `3/2`) runs the job on N
    /// providers with distinct addresses, deterministically, and keeps the
    /// result QUORUM of them agree on.
    #[arg(long, value_name = "N/QUORUM", value_parser = parse_replicate)]
    replicate: Option<(u32, u32)>,
    /// Trust tiers the job may run on, e.g. `1,2` (1 your organisation's
    /// providers, 2 operator-approved, 3 attested, 4 anyone; default: your
    /// account's, else all).
    #[arg(long, value_name = "TIERS", value_delimiter = ',')]
    tiers: Vec<u8>,
}

fn parse_replicate(s: &str) -> Result<(u32, u32), String> {
    let (n, q) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected N/QUORUM, e.g. 3/2"))?;
    let num = |x: &str| {
        x.trim()
            .parse::<u32>()
            .map_err(|_| format!("{x:?} is not a whole number"))
    };
    Ok((num(n)?, num(q)?))
}

#[derive(Debug, clap::Args)]
pub struct JobArgs {
    #[command(flatten)]
    opts: ClientOpts,
    #[command(subcommand)]
    command: JobCommand,
}

#[derive(Debug, clap::Subcommand)]
enum JobCommand {
    /// Show a job's state.
    Status { id: WorkId },
    /// Print a job's events, history then live, until it ends.
    Events { id: WorkId },
    /// Print a finished job's output and exit with its exit code.
    Result { id: WorkId },
    /// Cancel a job.
    Cancel { id: WorkId },
    /// Accept the result of a job submitted with `confirm`: its payment
    /// settles (else it does once the broker's confirmation window passes).
    Confirm { id: WorkId },
    /// Dispute the result of a job submitted with `confirm`: the broker
    /// re-executes it, and the loser pays.
    Reject { id: WorkId },
    /// List jobs, newest first.
    List {
        /// Only jobs in this state (queued, assigned, running, succeeded,
        /// failed, cancelled).
        #[arg(long)]
        state: Option<JobState>,
        /// At most this many.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
}

// ---------------------------------------------------------------- parsing

/// Where `--data` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    Stdin,
    File(PathBuf),
    Literal(String),
}

fn parse_data(s: &str) -> Result<DataSource, String> {
    match s {
        "-" | "@-" => Ok(DataSource::Stdin),
        "@" => Err("`@` needs a file name: @FILE".into()),
        _ => Ok(match s.strip_prefix('@') {
            Some(path) => DataSource::File(PathBuf::from(path)),
            None => DataSource::Literal(s.to_string()),
        }),
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(("", _)) => Err(format!("empty variable name in {s:?}")),
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => std::env::var(s)
            .map(|v| (s.to_string(), v))
            .map_err(|_| format!("{s} is not set in this environment (use NAME=VALUE)")),
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// A service name made from a file name: lowercased, anything outside
/// `[a-z0-9._-]` becomes `-`, runs of `-` collapse, it starts with a letter
/// or digit and has at most 64 bytes. `None` if nothing usable is left.
pub fn sanitize_service_name(stem: &str) -> Option<String> {
    let mut out = String::new();
    for c in stem.chars().map(|c| c.to_ascii_lowercase()) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c) {
            c
        } else {
            '-'
        };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        if out.is_empty() && !c.is_ascii_alphanumeric() {
            continue;
        }
        out.push(c);
    }
    out.truncate(64);
    let out = out.trim_end_matches(['-', '.', '_']).to_string();
    validate_service_name(&out).ok().map(|()| out)
}

fn service_name(name: Option<&str>, file: &Path) -> Result<String, Failure> {
    if let Some(name) = name {
        brume_api::names::ServiceRef::parse(name).map_err(|e| {
            let m = e.message.strip_prefix("name: ").unwrap_or(&e.message);
            Failure::Usage(format!("--name: {m}"))
        })?;
        return Ok(name.to_string());
    }
    file.file_stem()
        .and_then(|s| sanitize_service_name(&s.to_string_lossy()))
        .ok_or_else(|| {
            Failure::Usage(format!(
                "cannot make a service name from {}; pass --name",
                file.display()
            ))
        })
}

// ---------------------------------------------------------------- errors

/// Why a command failed, and so how it exits.
pub(crate) enum Failure {
    /// The broker said no, or could not be reached: exit 1.
    Client(ClientError),
    /// Something local (an unreadable file): exit 1.
    Local(String),
    /// Bad flags or values: exit 2.
    Usage(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Client(e)
    }
}

impl Failure {
    fn report(self) -> ExitCode {
        match self {
            Failure::Client(e) => {
                match &e {
                    ClientError::Api {
                        error, retry_after, ..
                    } => {
                        eprintln!("error: {}: {}", error.code, error.message);
                        if let Some(after) = retry_after {
                            eprintln!("  retry after {}", humantime::format_duration(*after));
                        }
                    }
                    ClientError::Invalid(m) => {
                        eprintln!("error: {m}");
                        return ExitCode::from(2);
                    }
                    other => eprintln!("error: {other}"),
                }
                ExitCode::FAILURE
            }
            Failure::Local(m) => {
                eprintln!("error: {m}");
                ExitCode::FAILURE
            }
            Failure::Usage(m) => {
                eprintln!("error: {m}");
                ExitCode::from(2)
            }
        }
    }
}

pub(crate) fn finish(r: Result<ExitCode, Failure>) -> ExitCode {
    r.unwrap_or_else(Failure::report)
}

// ---------------------------------------------------------------- output

pub(crate) fn emit_json<T: Serialize + ?Sized>(v: &T) {
    let mut out = std::io::stdout().lock();
    // A closed pipe on our side is not worth a panic.
    let _ = serde_json::to_writer(&mut out, v);
    let _ = writeln!(out);
    let _ = out.flush();
}

fn write_stdout(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

fn write_stderr(bytes: &[u8]) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(bytes);
    let _ = err.flush();
}

fn exit_code(code: i32) -> ExitCode {
    // Like a POSIX shell: the low 8 bits.
    ExitCode::from((code & 0xff) as u8)
}

/// `0x1234567890abcdef...` as `0x1234…cdef`.
fn short_addr(addr: &str) -> String {
    if addr.len() > 14 && addr.is_ascii() {
        format!("{}…{}", &addr[..6], &addr[addr.len() - 4..])
    } else {
        addr.to_string()
    }
}

/// A wall time in microseconds, to 3 significant digits or so.
fn wall(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        1_000_000..60_000_000 => format!("{:.2}s", us as f64 / 1e6),
        _ => humantime::format_duration(Duration::from_secs(us / 1_000_000)).to_string(),
    }
}

/// 1234567 as `1.23M`.
fn si(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1_000_000_000_000, "T"),
        (1_000_000_000, "G"),
        (1_000_000, "M"),
        (1_000, "k"),
    ];
    for (scale, unit) in UNITS {
        if n >= scale {
            return format!("{:.2}{unit}", n as f64 / scale as f64);
        }
    }
    n.to_string()
}

/// A time (ms since the epoch) as RFC 3339, and how long ago.
pub(crate) fn when(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    let ago = SystemTime::now()
        .duration_since(t)
        .map(|d| Duration::from_secs(d.as_secs()))
        .unwrap_or_default();
    format!(
        "{} ({} ago)",
        humantime::format_rfc3339_seconds(t),
        humantime::format_duration(ago)
    )
}

fn age(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    let ago = SystemTime::now().duration_since(t).unwrap_or_default();
    let s = ago.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

// ---------------------------------------------------------------- service

pub async fn service(args: ServiceArgs, file: &ClientSection) -> ExitCode {
    finish(service_inner(args, file).await)
}

async fn service_inner(args: ServiceArgs, file: &ClientSection) -> Result<ExitCode, Failure> {
    let client = args.opts.client(file)?;
    let json = args.opts.json;
    match args.command {
        ServiceCommand::Publish {
            file,
            name,
            kind,
            sign,
        } => {
            let name = service_name(name.as_deref(), &file)?;
            let module = if kind == ServiceKind::Oci {
                read_image(&file)?
            } else {
                read_module(&file)?
            };
            let bar = crate::progress::enabled(json)
                .then(|| crate::progress::bytes(module.len() as u64, "publishing"));
            let client = match &bar {
                Some(b) => {
                    let b = b.clone();
                    client.with_upload_progress(std::sync::Arc::new(move |sent, _| {
                        b.set_position(sent)
                    }))
                }
                None => client,
            };
            let info = match sign.identity()? {
                Some(developer) => {
                    client
                        .publish_signed(&name, kind, module, &developer)
                        .await?
                }
                None => client.publish(&name, kind, module).await?,
            };
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            if json {
                emit_json(&info);
            } else {
                println!(
                    "published {} ({}, {}, sha256:{})",
                    info.reference(),
                    info.kind.as_str(),
                    bytesize::ByteSize(info.size_bytes),
                    info.digest
                );
                if let Some(dev) = &info.developer_address {
                    println!("signed by {dev}");
                }
            }
        }
        ServiceCommand::List { owner } => {
            let list = match &owner {
                Some(o) => client.services_of(o).await?,
                None => client.services().await?,
            };
            if json {
                emit_json(&list);
            } else if list.services.is_empty() {
                eprintln!("no services");
            } else {
                print_table(
                    &["SERVICE", "KIND", "DIGEST", "SIZE", "AGE"],
                    list.services.iter().map(|s| {
                        vec![
                            s.reference() + if s.retired { " (retired)" } else { "" },
                            s.kind.as_str().to_string(),
                            s.digest.chars().take(12).collect(),
                            bytesize::ByteSize(s.size_bytes).to_string(),
                            age(s.created_at_ms),
                        ]
                    }),
                );
            }
        }
        ServiceCommand::Show { name } => {
            let info = client.service(&name).await?;
            if json {
                emit_json(&info);
            } else {
                print_service(&info);
            }
        }
        ServiceCommand::Versions { name } => {
            print_versions(&client.service_versions(&name).await?, json)
        }
        ServiceCommand::Retire { name } => print_versions(&client.retire(&name).await?, json),
        ServiceCommand::Move { name, to } => {
            print_versions(&client.move_service(&name, &to).await?, json)
        }
        ServiceCommand::Alias { alias } => {
            let info = client.register_alias(&alias).await?;
            if json {
                emit_json(&info);
            } else {
                println!("{} is now the alias of {}", info.alias, info.account);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_versions(list: &brume_api::rest::ServiceList, json: bool) {
    if json {
        return emit_json(list);
    }
    print_table(
        &["VERSION", "KIND", "DIGEST", "STATE", "AGE"],
        list.services.iter().map(|s| {
            vec![
                s.reference(),
                s.kind.as_str().to_string(),
                s.digest.chars().take(12).collect(),
                if s.retired { "retired" } else { "live" }.to_string(),
                age(s.created_at_ms),
            ]
        }),
    );
}

fn print_service(info: &ServiceInfo) {
    println!("service  {}", info.reference());
    println!("name     {}", info.name);
    println!("owner    {}", info.owner);
    if info.retired {
        println!("state    retired");
    }
    println!("kind     {}", info.kind.as_str());
    println!("digest   sha256:{}", info.digest);
    println!("size     {}", bytesize::ByteSize(info.size_bytes));
    println!("created  {}", when(info.created_at_ms));
    if let Some(dev) = &info.developer_address {
        println!("signed   by {dev}");
    }
}

fn print_table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A module's bytes; `.wat` text is converted to binary here, because the
/// broker accepts only binaries.
fn read_module(path: &Path) -> Result<Bytes, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::Local(format!("read module {}: {e}", path.display())))?;
    let is_wat = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("wat"));
    if is_wat {
        let binary = wat::parse_bytes(&bytes)
            .map_err(|e| Failure::Local(format!("{}: {e}", path.display())))?;
        return Ok(Bytes::from(binary.into_owned()));
    }
    Ok(Bytes::from(bytes))
}

// ---------------------------------------------------------------- invoke

pub async fn invoke(args: InvokeArgs, file: &ClientSection) -> ExitCode {
    finish(invoke_inner(args, file).await)
}

async fn invoke_inner(args: InvokeArgs, file: &ClientSection) -> Result<ExitCode, Failure> {
    let mut client = args.opts.client(file)?;
    if args.near.is_some() || args.region.is_some() {
        client = crate::directory::pick_broker(
            &args.opts,
            file,
            &client,
            &args.service,
            args.near,
            args.region.as_deref(),
        )
        .await?;
    }
    let stdin = read_data(args.data.as_ref())?;
    let fn_args: Vec<String> = args.arg.iter().chain(&args.rest).cloned().collect();
    let mut headers = http::HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        http::HeaderValue::from_str(&value)
            .map(|v| headers.insert(name, v))
            .map_err(|_| Failure::Local(format!("{name}: {value:?} is not a header value")))
    };
    if let Some(key) = &args.affinity {
        put(brume_api::headers::AFFINITY, key.clone())?;
    }
    if let Some(bid) = args.max_fee_per_hour {
        put(brume_api::rest::MAX_FEE_PER_HOUR_HEADER, bid.to_string())?;
    }
    let mut tries = 0;
    let out = loop {
        let call = client.invoke_with(&args.service, &fn_args, stdin.clone(), headers.clone());
        match call.await {
            Err(e)
                if e.code() == Some(ErrorCode::Overloaded)
                    && tries < OVERLOAD_RETRIES
                    && e.retry_after().unwrap_or_default() <= MAX_RETRY_WAIT =>
            {
                tries += 1;
                let wait = e
                    .retry_after()
                    .unwrap_or(Duration::from_secs(1))
                    .max(Duration::from_millis(100));
                if !args.opts.json {
                    eprintln!(
                        "broker overloaded; retrying in {}",
                        humantime::format_duration(wait)
                    );
                }
                tokio::time::sleep(wait).await;
            }
            other => break other?,
        }
    };
    let code = out.exit_code.unwrap_or(0);
    if args.opts.json {
        emit_json(&json!({
            "work_id": out.work_id,
            "provider": out.provider,
            "fuel": out.fuel,
            "attempts": out.attempts,
            "exit_code": out.exit_code,
            "stdout": Output(out.body),
        }));
    } else {
        write_stdout(&out.body);
    }
    Ok(exit_code(code))
}

fn read_data(source: Option<&DataSource>) -> Result<Bytes, Failure> {
    Ok(match source {
        None => Bytes::new(),
        Some(DataSource::Literal(s)) => Bytes::from(s.clone().into_bytes()),
        Some(DataSource::File(path)) => Bytes::from(
            std::fs::read(path)
                .map_err(|e| Failure::Local(format!("read {}: {e}", path.display())))?,
        ),
        Some(DataSource::Stdin) => read_stdin()?,
    })
}

fn read_stdin() -> Result<Bytes, Failure> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut buf)
        .map_err(|e| Failure::Local(format!("read stdin: {e}")))?;
    Ok(Bytes::from(buf))
}

// ---------------------------------------------------------------- run

pub async fn run(args: RunArgs, file: &ClientSection) -> ExitCode {
    finish(run_inner(args, file).await)
}

async fn run_inner(args: RunArgs, file: &ClientSection) -> Result<ExitCode, Failure> {
    let client = args.opts.client(file)?;
    let (path, kind, guest_args) = match (&args.image, &args.module) {
        (Some(image), first) => {
            let mut all: Vec<String> = first.iter().map(|p| p.display().to_string()).collect();
            all.extend(args.args.iter().cloned());
            (image.clone(), ServiceKind::Oci, all)
        }
        (None, Some(module)) => (module.clone(), ServiceKind::Command, args.args.clone()),
        (None, None) => {
            return Err(Failure::Usage(
                "a module (or --image PATH) is required".into(),
            ));
        }
    };
    // An image in a registry, pinned by digest: nothing to upload.
    let reference = (kind == ServiceKind::Oci && !path.exists())
        .then(|| path.to_string_lossy().into_owned())
        .filter(|p| p.contains("@sha256:"));
    let name = match &reference {
        Some(_) => String::new(),
        None => service_name(args.name.as_deref(), &path)?,
    };
    let mut spec = job_spec(&args, &name)?;
    spec.args = guest_args;
    if reference.is_some() {
        spec.service = None;
        spec.image = reference.clone();
    }
    spec.validate()
        .map_err(|e| Failure::Usage(format!("{}: {}", e.code, e.message)))?;
    let mut ui = Progress::new(!args.opts.json && std::io::stderr().is_terminal());
    if reference.is_none() {
        let module = if kind == ServiceKind::Oci {
            read_image(&path)?
        } else {
            read_module(&path)?
        };
        ui.message(format!(
            "publishing {name} ({})",
            bytesize::ByteSize(module.len() as u64)
        ));
        match client.publish(&name, kind, module).await {
            // Pin what we uploaded: a concurrent publish of the same name
            // can't swap the module under this job.
            Ok(info) => spec.digest = Some(info.digest),
            Err(e) => {
                ui.clear();
                let code = Failure::from(e).report();
                eprintln!("  module: {}", path.display());
                return Ok(code);
            }
        }
    }
    if !args.inputs.is_empty() {
        ui.message(format!("uploading {} input files", args.inputs.len()));
        spec.inputs = crate::files::upload(&client, &args.inputs).await?;
    }
    ui.message("submitting".to_string());
    let job = match client.submit(&spec).await {
        Ok(job) => job,
        Err(e) => {
            ui.clear();
            return Err(e.into());
        }
    };
    ui.start_job(&job);

    let result = follow(&client, job.id, &mut ui, args.opts.json).await;
    ui.clear();
    let result = match result? {
        Followed::Done(result) => result,
        Followed::Interrupted(code) => return Ok(code),
    };
    if let Some(dir) = &args.output_dir {
        crate::files::download(&client, &result, dir).await?;
    }
    Ok(print_result(&result, args.opts.json, &ui.shown_stderr))
}

/// An OCI image layout: a directory (packed into a tar) or a tar.
fn read_image(path: &Path) -> Result<Bytes, Failure> {
    let bytes = if path.is_dir() {
        brume_oci::layout::tar_dir(path)
    } else {
        std::fs::read(path)
    };
    bytes
        .map(Bytes::from)
        .map_err(|e| Failure::Local(format!("read --image {}: {e}", path.display())))
}

fn job_spec(args: &RunArgs, name: &str) -> Result<JobSpec, Failure> {
    let stdin = match args.stdin.as_deref() {
        None => None,
        Some(p) if p == Path::new("-") => Some(Output(read_stdin()?)),
        Some(p) => Some(Output(Bytes::from(std::fs::read(p).map_err(|e| {
            Failure::Local(format!("read --stdin {}: {e}", p.display()))
        })?))),
    };
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    Ok(JobSpec {
        service: Some(name.to_string()),
        digest: None,
        image: None,
        args: args.args.clone(),
        env: args.env.iter().cloned().collect(),
        stdin,
        limits: LimitsSpec {
            fuel: args.fuel,
            memory_bytes: args.memory.map(|m| m.as_u64()),
            timeout_ms: args.timeout.map(millis),
            max_input_bytes: None,
            max_output_bytes: args.max_output.map(|m| m.as_u64()),
        },
        profile: if args.deterministic {
            Profile::Deterministic
        } else {
            Profile::Standard
        },
        seed: args.seed,
        max_attempts: args.max_attempts,
        queue_timeout_ms: args.queue_timeout.map(millis),
        max_price: args.max_price,
        max_fee_per_hour: args.max_fee_per_hour,
        affinity: args.affinity.clone(),
        labels: args.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        columns: args.columns.iter().cloned().collect::<BTreeMap<_, _>>(),
        tier: args.tier.clone(),
        price_cap_micros: args.price_cap,
        expect: brume_api::rest::Expect {
            runtime_ms: args.expect_runtime.map(millis),
            memory_bytes: args.expect_memory.map(|m| m.as_u64()),
            mbps: args.expect_mbps,
        },
        verify: args
            .replicate
            .map(|(n, quorum)| brume_api::rest::VerifyPolicy::Replicate { n, quorum }),
        tiers: (!args.tiers.is_empty()).then(|| args.tiers.clone()),
        confirm: args.confirm,
        inputs: Vec::new(),
        outputs: args.outputs.clone(),
        gpus: args.gpus,
        vcpus: args.vcpus,
        network: args.network,
    })
}

enum Followed {
    Done(Box<JobResult>),
    /// Ctrl-C: the job was cancelled (or we tried); exit with this.
    Interrupted(ExitCode),
}

/// Follows the job to its end, updating `ui`; on Ctrl-C cancels it.
async fn follow(
    client: &Client,
    id: WorkId,
    ui: &mut Progress,
    json: bool,
) -> Result<Followed, Failure> {
    let waited = {
        let wait = client.wait_with(id, |ev| ui.event(ev));
        tokio::select! {
            r = wait => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    };
    match waited {
        Some(r) => Ok(Followed::Done(Box::new(r?))),
        None => {
            ui.clear();
            if !json {
                eprintln!("interrupted: cancelling job {id}");
            }
            match client.cancel(id).await {
                Ok(_) => {}
                // It ended meanwhile: nothing to cancel.
                Err(e) if e.code() == Some(ErrorCode::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Followed::Interrupted(ExitCode::from(130)))
        }
    }
}

/// Prints a final job's output, usage and error; returns its exit status.
/// `shown_stderr` is stderr already printed live (not printed again).
fn print_result(result: &JobResult, json: bool, shown_stderr: &str) -> ExitCode {
    if json {
        emit_json(result);
    } else {
        write_stdout(&result.stdout.0);
        write_stderr(&unshown(&result.stderr.0, shown_stderr));
        eprintln!("{}", summary(result));
    }
    match result.exit_code {
        Some(code) => exit_code(code),
        None => {
            if !json {
                match &result.error {
                    Some(e) => eprintln!("error: {}: {}", e.code, e.message),
                    None => eprintln!(
                        "error: job {} {} without an exit code",
                        result.id,
                        result.state.as_str()
                    ),
                }
            }
            ExitCode::FAILURE
        }
    }
}

/// What of `stderr` is left to print when `shown` was streamed already: the
/// rest if `stderr` starts with it, else all of it.
fn unshown<'a>(stderr: &'a [u8], shown: &str) -> std::borrow::Cow<'a, [u8]> {
    if shown.is_empty() {
        return stderr.into();
    }
    if let Some(rest) = stderr.strip_prefix(shown.as_bytes()) {
        return rest.into();
    }
    // Non-UTF-8 stderr arrived lossy in the events.
    match String::from_utf8_lossy(stderr).strip_prefix(shown) {
        Some(rest) => rest.as_bytes().to_vec().into(),
        None => stderr.into(),
    }
}

/// One line: what happened, what it cost.
fn summary(r: &JobResult) -> String {
    let mut s = format!("job {} {}", r.id, r.state.as_str());
    if let Some(code) = r.exit_code {
        s.push_str(&format!(" (exit {code})"));
    }
    s.push_str(&format!(
        ": {} fuel, {} peak memory, {} wall",
        si(r.usage.fuel),
        bytesize::ByteSize(r.usage.peak_memory_bytes),
        wall(r.usage.wall_us)
    ));
    let attempts = if r.attempts == 1 {
        "attempt"
    } else {
        "attempts"
    };
    s.push_str(&format!(", {} {attempts}", r.attempts));
    if let Some(p) = &r.provider {
        s.push_str(&format!(" on {}", short_addr(p)));
    }
    s
}

/// The progress display of `brume run`: a spinner on stderr with the job's
/// state and fuel, the guest's stderr streamed above it. Without a
/// terminal it shows nothing, and stderr is printed at the end instead.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    /// The current attempt's stderr printed so far (whole lines only).
    shown_stderr: String,
    /// The current attempt's stderr not yet printed (an incomplete line).
    partial: String,
    attempt: u32,
    provider: Option<String>,
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        let bar = enabled.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            let style = indicatif::ProgressStyle::with_template(
                "{spinner:.cyan} {elapsed:>4} {prefix}{msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Progress {
            bar,
            shown_stderr: String::new(),
            partial: String::new(),
            attempt: 0,
            provider: None,
        }
    }

    fn message(&self, msg: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(msg);
        }
    }

    fn println(&self, line: &str) {
        if let Some(bar) = &self.bar {
            bar.println(line);
        }
    }

    fn start_job(&self, job: &JobInfo) {
        if let Some(bar) = &self.bar {
            bar.set_prefix(format!("job {}: ", job.id));
            bar.set_message(job.state.as_str().to_string());
        }
    }

    fn where_(&self) -> String {
        let mut s = String::new();
        if let Some(p) = &self.provider {
            s.push_str(&format!(" on {}", short_addr(p)));
        }
        if self.attempt > 1 {
            s.push_str(&format!(" (attempt {})", self.attempt));
        }
        s
    }

    fn event(&mut self, ev: &JobEvent) {
        if self.bar.is_none() {
            return;
        }
        if ev.attempt != self.attempt {
            self.new_attempt(ev.attempt);
        }
        if ev.provider.is_some() {
            self.provider.clone_from(&ev.provider);
        }
        match ev.kind {
            EventKind::Queued => self.message("queued".into()),
            EventKind::Assigned => self.message(format!("assigned{}", self.where_())),
            EventKind::Running => self.message(format!("running{}", self.where_())),
            EventKind::Progress => {
                if let Some(fuel) = ev.fuel {
                    self.message(format!("running{} · {} fuel", self.where_(), si(fuel)));
                }
                if let Some(text) = &ev.stderr {
                    self.partial.push_str(text);
                    while let Some(nl) = self.partial.find('\n') {
                        let line: String = self.partial.drain(..=nl).collect();
                        self.println(line.trim_end_matches('\n'));
                        self.shown_stderr.push_str(&line);
                    }
                }
            }
            EventKind::Retry => {
                let why = ev
                    .error
                    .as_ref()
                    .map(|e| format!("{}: {}", e.code, e.message))
                    .unwrap_or_else(|| "no reason given".into());
                self.println(&format!(
                    "attempt {}{} failed ({why}); retrying",
                    ev.attempt,
                    self.where_()
                ));
                self.message("queued for a retry".into());
            }
            EventKind::Succeeded | EventKind::Failed | EventKind::Cancelled => {
                self.message(ev.kind.as_str().to_string());
            }
        }
    }

    /// A new attempt: its stderr starts over. What the last one left
    /// unprinted is dropped (the final output has the whole stderr of the
    /// attempt that counted).
    fn new_attempt(&mut self, attempt: u32) {
        self.attempt = attempt;
        self.shown_stderr.clear();
        self.partial.clear();
    }

    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

// ---------------------------------------------------------------- job

pub async fn job(args: JobArgs, file: &ClientSection) -> ExitCode {
    finish(job_inner(args, file).await)
}

async fn job_inner(args: JobArgs, file: &ClientSection) -> Result<ExitCode, Failure> {
    let client = args.opts.client(file)?;
    let json = args.opts.json;
    match args.command {
        JobCommand::Status { id } => {
            let info = client.job(id).await?;
            if json {
                emit_json(&info);
            } else {
                print_job(&info);
            }
        }
        JobCommand::Events { id } => {
            // `wait_with` resumes a broken stream; its result is not needed.
            let waited = client
                .wait_with(id, |ev| {
                    if json {
                        emit_json(ev);
                    } else {
                        println!("{}", event_line(ev));
                        let _ = std::io::stdout().flush();
                    }
                })
                .await;
            match waited {
                Ok(_) => {}
                // The events were all printed; only the result is missing.
                Err(e) if e.status().is_some() && !e.is_transport() => {}
                Err(e) => return Err(e.into()),
            }
        }
        JobCommand::Result { id } => {
            let result = client.result(id).await?;
            return Ok(print_result(&result, json, ""));
        }
        JobCommand::Cancel { id } => {
            let info = client.cancel(id).await?;
            if json {
                emit_json(&info);
            } else {
                println!("job {} {}", info.id, info.state.as_str());
            }
        }
        JobCommand::Confirm { id } => {
            let c = client.confirm_job(id).await?;
            if json {
                emit_json(&c);
            } else if c.already_released {
                println!(
                    "job {} confirmed (its payment had already been released by the confirmation window)",
                    c.id
                );
            } else {
                println!(
                    "job {} confirmed: its payment settles at the next settlement run",
                    c.id
                );
            }
        }
        JobCommand::Reject { id } => {
            let d = client.reject_job(id).await?;
            if json {
                emit_json(&d);
            } else {
                println!("job {} {}: {}", d.id, d.verdict, d.detail);
            }
        }
        JobCommand::List { state, limit } => {
            let list = client.jobs(state, limit).await?;
            if json {
                emit_json(&list);
            } else if list.jobs.is_empty() {
                eprintln!("no jobs");
            } else {
                print_table(
                    &["ID", "STATE", "SERVICE", "ATTEMPTS", "PROVIDER", "AGE"],
                    list.jobs.iter().map(|j| {
                        vec![
                            j.id.to_string(),
                            j.state.as_str().to_string(),
                            j.service
                                .clone()
                                .unwrap_or_else(|| j.digest.chars().take(12).collect()),
                            format!("{}/{}", j.attempts, j.max_attempts),
                            j.provider.as_deref().map(short_addr).unwrap_or_default(),
                            age(j.created_at_ms),
                        ]
                    }),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_job(j: &JobInfo) {
    println!("id        {}", j.id);
    println!("state     {}", j.state.as_str());
    match &j.service {
        Some(s) => println!("service   {s} (sha256:{})", j.digest),
        None => println!("module    sha256:{}", j.digest),
    }
    println!("attempts  {}/{}", j.attempts, j.max_attempts);
    if let Some(p) = &j.provider {
        println!("provider  {p}");
    }
    println!("created   {}", when(j.created_at_ms));
    println!("updated   {}", when(j.updated_at_ms));
    if let Some(e) = &j.error {
        println!("error     {}: {}", e.code, e.message);
    }
    if !j.labels.is_empty() {
        let labels: Vec<String> = j.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("labels    {}", labels.join(", "));
    }
}

/// One event as one line of text.
fn event_line(ev: &JobEvent) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ev.at_ms);
    let mut s = format!(
        "{:>3} {} {:<9} attempt {}",
        ev.seq,
        humantime::format_rfc3339_millis(t),
        ev.kind.as_str(),
        ev.attempt
    );
    if let Some(p) = &ev.provider {
        s.push_str(&format!(" provider {p}"));
    }
    if let Some(f) = ev.fuel {
        s.push_str(&format!(" fuel {f}"));
    }
    if let Some(c) = ev.exit_code {
        s.push_str(&format!(" exit {c}"));
    }
    if let Some(e) = &ev.error {
        s.push_str(&format!(" error {}: {}", e.code, e.message));
    }
    if let Some(text) = ev.stderr.as_deref().filter(|t| !t.is_empty()) {
        s.push_str(&format!(" stderr {text:?}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_made_valid() {
        let cases = [
            ("echo", Some("echo")),
            ("Image Transform", Some("image-transform")),
            ("__init__", Some("init")),
            ("my.module_v2", Some("my.module_v2")),
            ("café  crème!", Some("caf-cr-me")),
            ("---", None),
            ("", None),
            ("ÉÉÉ", None),
        ];
        for (stem, want) in cases {
            assert_eq!(sanitize_service_name(stem).as_deref(), want, "{stem:?}");
        }
        let long = "a".repeat(100);
        assert_eq!(sanitize_service_name(&long).map(|s| s.len()), Some(64));
        // Truncation never leaves a trailing separator.
        let edge = format!("{}-b", "a".repeat(63));
        assert_eq!(sanitize_service_name(&edge), Some("a".repeat(63)));
        assert_eq!(
            service_name(None, Path::new("dir/Monte Carlo.wasm")).ok(),
            Some("monte-carlo".to_string())
        );
        assert!(service_name(Some("Bad Name"), Path::new("x.wasm")).is_err());
    }

    #[test]
    fn data_flags_parse() {
        assert_eq!(parse_data("-"), Ok(DataSource::Stdin));
        assert_eq!(parse_data("@-"), Ok(DataSource::Stdin));
        assert_eq!(
            parse_data("@in.bin"),
            Ok(DataSource::File(PathBuf::from("in.bin")))
        );
        assert_eq!(
            parse_data("hello @you"),
            Ok(DataSource::Literal("hello @you".into()))
        );
        assert_eq!(parse_data(""), Ok(DataSource::Literal(String::new())));
        assert!(parse_data("@").is_err());
    }

    #[test]
    fn env_and_labels_parse() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("BRUME_TEST_SURELY_UNSET_VARIABLE").is_err());
        assert_eq!(parse_label("k=v"), Ok(("k".into(), "v".into())));
        assert!(parse_label("k").is_err());
        assert!(parse_label("=v").is_err());
    }

    #[test]
    fn numbers_and_addresses_shorten() {
        assert_eq!(si(999), "999");
        assert_eq!(si(1_234_567), "1.23M");
        assert_eq!(si(3_600_000_000_000), "3.60T");
        assert_eq!(short_addr("0x1234567890abcdef1234"), "0x1234…1234");
        assert_eq!(short_addr("0xabc"), "0xabc");
        assert_eq!(wall(321), "321µs");
        assert_eq!(wall(1_375_000), "1.38s");
        assert_eq!(wall(12_345), "12.3ms");
        assert_eq!(wall(3_723_000_000), "1h 2m 3s");
    }

    #[test]
    fn already_streamed_stderr_is_not_printed_twice() {
        assert_eq!(&*unshown(b"a\nb\npartial", ""), b"a\nb\npartial");
        assert_eq!(&*unshown(b"a\nb\npartial", "a\nb\n"), b"partial");
        assert_eq!(&*unshown(b"\xffx\ny", "\u{fffd}x\n"), b"y");
        // Not a prefix (another attempt's output): print everything.
        assert_eq!(&*unshown(b"other\n", "a\n"), b"other\n");
    }

    #[test]
    fn summaries_say_state_exit_and_attempts() {
        let r = JobResult {
            id: WorkId::new(),
            state: JobState::Succeeded,
            exit_code: Some(0),
            stdout: Output::default(),
            stderr: Output(Bytes::from_static(b"a\nb\npartial")),
            usage: Default::default(),
            attempts: 1,
            provider: None,
            error: None,
            receipt: None,
            verification: None,
            outputs: Vec::new(),
        };
        let line = summary(&r);
        assert!(line.contains("succeeded (exit 0)"), "{line}");
        assert!(line.contains("1 attempt"), "{line}");
    }

    #[test]
    fn run_flags_build_a_valid_spec() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let cli = Cli::try_parse_from([
            "brume",
            "--fuel",
            "1000",
            "--memory",
            "64MiB",
            "--timeout",
            "2s",
            "--env",
            "A=1",
            "--label",
            "team=x",
            "--deterministic",
            "--max-attempts",
            "2",
            "m.wasm",
            "--not-a-flag",
            "x",
        ]);
        let cli = match cli {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(cli.run.args, ["--not-a-flag", "x"]);
        let spec = job_spec(&cli.run, "m").ok();
        let spec = spec.as_ref();
        assert_eq!(spec.and_then(|s| s.limits.fuel), Some(1000));
        assert_eq!(spec.and_then(|s| s.limits.memory_bytes), Some(64 << 20));
        assert_eq!(spec.and_then(|s| s.limits.timeout_ms), Some(2000));
        assert_eq!(spec.map(|s| s.profile), Some(Profile::Deterministic));
        assert_eq!(spec.map(|s| s.validate().is_ok()), Some(true));
        assert!(Cli::try_parse_from(["brume", "--max-attempts", "0", "m.wasm"]).is_err());
        assert!(Cli::try_parse_from(["brume", "--env", "=x", "m.wasm"]).is_err());
    }
}

// ---------------------------------------------------------------- settle

#[derive(Debug, clap::Args)]
pub struct SettleArgs {
    #[command(flatten)]
    opts: ClientOpts,
}

/// `brume settle`: asks the broker to settle now and prints who paid and
/// who was paid. Exits 1 if the settlement invariants don't hold.
pub async fn settle(args: SettleArgs, file: &ClientSection) -> ExitCode {
    finish(settle_inner(args, file).await)
}

async fn settle_inner(args: SettleArgs, file: &ClientSection) -> Result<ExitCode, Failure> {
    let client = args.opts.client(file)?;
    let bar = crate::progress::enabled(args.opts.json).then(|| {
        crate::progress::spinner("settling: collecting from payers, paying beneficiaries")
    });
    let report = client.settle().await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let report = report?;
    let balanced = report["balanced"].as_bool().unwrap_or(false);
    if args.opts.json {
        emit_json(&report);
    } else {
        print!("{}", settle_text(&report));
    }
    Ok(if balanced {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A settlement report for people.
pub fn settle_text(r: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let s = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let mut out = String::new();
    if r["run"].as_u64() == Some(0) {
        let _ = writeln!(out, "nothing to settle");
    } else {
        let _ = writeln!(
            out,
            "settlement run {}: {} new rows, {} settled, {} deferred; {} chain txs",
            r["run"], r["rows"], r["rows_settled"], r["rows_deferred"], r["chain_txs"]
        );
    }
    for (title, key) in [("collected from", "collections"), ("paid to", "payouts")] {
        for l in r[key].as_array().map(Vec::as_slice).unwrap_or_default() {
            let _ = writeln!(
                out,
                "  {title:<14} {}  {:>28} base units  ({} rows, {} {})",
                s(&l["account"]),
                s(&l["amount"]),
                l["rows"],
                s(&l["state"]),
                l["tx_hash"].as_str().or(l["error"].as_str()).unwrap_or("")
            );
        }
    }
    for f in r["flagged"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let _ = writeln!(out, "  flagged        {}: {}", s(&f[0]), s(&f[1]));
    }
    let _ = writeln!(
        out,
        "  collected {} = paid {} + carried over {} + held {}; balanced: {}",
        s(&r["collected"]),
        s(&r["paid"]),
        s(&r["carry_over"]),
        s(&r["held"]),
        r["balanced"]
    );
    out
}
