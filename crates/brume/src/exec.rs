//! `brume exec`: run one module in the sandbox, with `wasmtime run`'s habits.
//!
//! Exit status: the guest's own exit code when it ran to completion; 134 (as
//! `wasmtime run` does for traps) when the guest faulted (trap, fuel, memory,
//! timeout, output cap); 125 when it could not start (bad module, a module
//! over the sandbox's limits, bad arguments, unreadable files). Usage errors
//! caught by the argument parser exit 2.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use brume_sandbox::{
    CommandRequest, DirMapping, ExecError, ExecFailure, ExecOptions, HttpRequest, Limits, Profile,
    Program, Sandbox, SandboxConfig, Shape, Usage,
};
use bytes::Bytes;
use serde_json::{Value, json};

/// Exit status when the guest faulted.
const EXIT_GUEST_FAULT: u8 = 134;
/// Exit status when nothing ran.
const EXIT_NOT_RUN: u8 = 125;

#[derive(Debug, clap::Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// The module: a `.wasm` binary (core module or component) or `.wat` text.
    module: PathBuf,
    /// Arguments for the guest (after the module, or after `--`).
    #[arg(allow_hyphen_values = true)]
    args: Vec<String>,
    /// File to use as the guest's stdin, or `-` for this process's stdin.
    /// Without it, piped input is passed on and a terminal gives empty stdin.
    #[arg(long, value_name = "FILE|-")]
    stdin: Option<String>,
    /// Set a guest environment variable; `NAME` alone copies it from this
    /// process. Nothing else of the host environment is visible.
    #[arg(long = "env", value_name = "NAME[=VAL]")]
    env: Vec<String>,
    /// Preopen a host directory for the guest.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<DirMapping>,
    /// Instruction budget.
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
    /// Memory cap, e.g. `64MiB`.
    #[arg(long, value_name = "SIZE")]
    memory: Option<bytesize::ByteSize>,
    /// Wall-clock deadline, e.g. `5s` or `250ms`.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Cap on stdout + stderr, e.g. `16MiB`.
    #[arg(long, value_name = "SIZE")]
    max_output: Option<bytesize::ByteSize>,
    /// Run reproducibly: NaN canonicalization, seeded random, virtual clocks.
    #[arg(long)]
    deterministic: bool,
    /// Seed for `--deterministic`.
    #[arg(long, default_value_t = 0, requires = "deterministic")]
    seed: u64,
    /// Override argv[0] (defaults to the module path as given).
    #[arg(long)]
    argv0: Option<String>,
    /// HTTP components: request method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// HTTP components: request path and query.
    #[arg(long, default_value = "/")]
    path: String,
    /// HTTP components: a request header `NAME: VALUE`.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Where compiled modules are cached (default: the user cache dir).
    #[arg(long, env = "BRUME_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Print one JSON object with the outcome, output and usage.
    #[arg(long)]
    json: bool,
}

/// An error before the guest ran, reported with a stable code.
struct Setup(ExecError);

impl<E: std::fmt::Display> From<(&'static str, E)> for Setup {
    fn from((what, e): (&'static str, E)) -> Setup {
        Setup(ExecError::InvalidRequest(format!("{what}: {e}")))
    }
}

pub async fn main(args: ExecArgs) -> ExitCode {
    match run(&args).await {
        Ok(code) => code,
        Err(Setup(e)) => report_failure(&args, &ExecFailure::from(e), None, Ran::No),
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("brume").join("modules"))
}

async fn run(args: &ExecArgs) -> Result<ExitCode, Setup> {
    let module = std::fs::read(&args.module)
        .map_err(|e| Setup::from(("read module", format!("{}: {e}", args.module.display()))))?;
    let stdin = read_stdin(args.stdin.as_deref())?;
    let env = guest_env(&args.env)?;

    let config = SandboxConfig {
        cache_dir: args.cache_dir.clone().or_else(default_cache_dir),
        // One execution: a small pool is plenty and reserves less.
        max_concurrent_instances: 4,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::new(config).map_err(Setup)?;
    let profile = if args.deterministic {
        Profile::Deterministic
    } else {
        Profile::Standard
    };
    let program = sandbox.load(&module, profile).map_err(Setup)?;

    let defaults = Limits::default();
    let options = ExecOptions {
        limits: Limits {
            fuel: args.fuel.unwrap_or(defaults.fuel),
            memory_bytes: args.memory.map_or(defaults.memory_bytes, |m| m.as_u64()),
            timeout: args.timeout.unwrap_or(defaults.timeout),
            max_output_bytes: args
                .max_output
                .map_or(defaults.max_output_bytes, |m| m.as_u64()),
            ..defaults
        },
        seed: args.seed,
        clock_start: Duration::ZERO,
    };

    if program.shape() == Shape::HttpProxy {
        return run_http(args, &sandbox, &program, stdin, &options).await;
    }
    let argv0 = args
        .argv0
        .clone()
        .unwrap_or_else(|| args.module.display().to_string());
    let req = CommandRequest {
        args: std::iter::once(argv0)
            .chain(args.args.iter().cloned())
            .collect(),
        env,
        stdin,
        dirs: args.dirs.clone(),
    };
    Ok(match sandbox.run(&program, &req, &options).await {
        Ok(out) => {
            if args.json {
                let mut v = json!({
                    "outcome": "exited",
                    "exit_code": out.exit_code,
                    "digest": program.digest().to_string(),
                    "shape": program.shape(),
                    "usage": out.usage,
                });
                put_bytes(&mut v, "stdout", &out.stdout);
                put_bytes(&mut v, "stderr", &out.stderr);
                emit_json(&v);
            } else {
                write_all(&out.stdout, &out.stderr);
            }
            exit_code(out.exit_code)
        }
        Err(failure) => report_failure(args, &failure, Some(&program), Ran::Yes),
    })
}

async fn run_http(
    args: &ExecArgs,
    sandbox: &Sandbox,
    program: &Program,
    body: Bytes,
    options: &ExecOptions,
) -> Result<ExitCode, Setup> {
    let method = http::Method::from_bytes(args.method.as_bytes())
        .map_err(|e| Setup::from(("--method", e)))?;
    let uri: http::Uri = args.path.parse().map_err(|e| Setup::from(("--path", e)))?;
    let mut headers = http::HeaderMap::new();
    for h in &args.headers {
        let (name, value) = h.split_once(':').ok_or_else(|| {
            Setup::from(("--header", format!("expected `NAME: VALUE`, got {h:?}")))
        })?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|e| Setup::from(("--header", e)))?;
        let value =
            http::HeaderValue::from_str(value.trim()).map_err(|e| Setup::from(("--header", e)))?;
        headers.append(name, value);
    }
    let req = HttpRequest {
        method,
        uri,
        headers,
        body,
    };
    Ok(match sandbox.handle_http(program, req, options).await {
        Ok(out) => {
            let status = out.response.status;
            if args.json {
                let headers: serde_json::Map<String, Value> = out
                    .response
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            Value::from(String::from_utf8_lossy(v.as_bytes())),
                        )
                    })
                    .collect();
                let mut v = json!({
                    "outcome": "responded",
                    "status": status.as_u16(),
                    "headers": headers,
                    "digest": program.digest().to_string(),
                    "shape": program.shape(),
                    "usage": out.usage,
                });
                put_bytes(&mut v, "body", &out.response.body);
                put_bytes(&mut v, "stderr", &out.stderr);
                emit_json(&v);
            } else {
                write_all(&out.response.body, &out.stderr);
            }
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(failure) => report_failure(args, &failure, Some(program), Ran::Yes),
    })
}

fn read_stdin(spec: Option<&str>) -> Result<Bytes, Setup> {
    let mut buf = Vec::new();
    match spec {
        Some("-") => {
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Setup::from(("read stdin", e)))?;
        }
        Some(path) => {
            buf = std::fs::read(path)
                .map_err(|e| Setup::from(("read --stdin file", format!("{path}: {e}"))))?;
        }
        None => {
            let stdin = std::io::stdin();
            if !stdin.is_terminal() {
                // A closed or unreadable stdin is simply empty input.
                let _ = stdin.lock().read_to_end(&mut buf);
            }
        }
    }
    Ok(Bytes::from(buf))
}

fn guest_env(specs: &[String]) -> Result<Vec<(String, String)>, Setup> {
    specs
        .iter()
        .map(|spec| match spec.split_once('=') {
            Some(("", _)) => Err(Setup::from((
                "--env",
                format!("empty variable name in {spec:?}"),
            ))),
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => std::env::var(spec).map(|v| (spec.clone(), v)).map_err(|_| {
                Setup::from(("--env", format!("{spec} is not set in this environment")))
            }),
        })
        .collect()
}

fn put_bytes(v: &mut Value, key: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => v[key] = Value::from(s),
        Err(_) => {
            v[key] = Value::Null;
            v[format!("{key}_base64")] =
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
    }
}

fn emit_json(v: &Value) {
    let mut out = std::io::stdout().lock();
    // A closed pipe on our side is not the guest's failure.
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn write_all(stdout: &[u8], stderr: &[u8]) {
    // A closed pipe on our side is not the guest's failure.
    let _ = std::io::stdout().write_all(stdout);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(stderr);
}

fn exit_code(code: i32) -> ExitCode {
    // Like a POSIX shell: the low 8 bits.
    ExitCode::from((code & 0xff) as u8)
}

/// Whether the guest was started at all.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ran {
    Yes,
    No,
}

fn report_failure(
    args: &ExecArgs,
    failure: &ExecFailure,
    program: Option<&Program>,
    ran: Ran,
) -> ExitCode {
    let e = &failure.error;
    if args.json {
        let mut v = json!({
            "outcome": "error",
            "error": { "code": e.code(), "message": e.to_string() },
            "usage": failure.usage,
        });
        if let Some(p) = program {
            v["digest"] = Value::from(p.digest().to_string());
            v["shape"] = json!(p.shape());
        }
        put_bytes(&mut v, "stdout", &failure.stdout);
        put_bytes(&mut v, "stderr", &failure.stderr);
        emit_json(&v);
    } else {
        write_all(&failure.stdout, &failure.stderr);
        eprintln!("error[{}]: {e}", e.code());
        if failure.usage != Usage::default() {
            eprintln!(
                "  after {} instructions, {} ms",
                failure.usage.fuel,
                failure.usage.wall_us / 1000
            );
        }
        if matches!(e, ExecError::InvalidModule(_)) {
            eprintln!("  module: {}", args.module.display());
        }
    }
    ExitCode::from(if ran == Ran::Yes && e.is_guest_fault() {
        EXIT_GUEST_FAULT
    } else {
        EXIT_NOT_RUN
    })
}
