//! brume's WebAssembly executor: isolated, exactly metered, and
//! deterministic when asked.
//!
//! Providers run code from strangers and bill it per instruction, so every
//! execution here is bounded and measured:
//!
//! - **fuel** counts executed wasm operators (the unit brume bills),
//! - a **memory cap** covers all linear memory of an instance (and tables),
//! - a **wall-clock deadline** cancels the guest at its next cooperative
//!   yield (every million units of fuel), with epoch interruption, driven by
//!   a single ticker thread per [`Sandbox`], as the backstop inside compiled
//!   code,
//! - **input and output caps** bound stdin/request bodies and
//!   stdout + stderr + response bodies.
//!
//! # Shapes
//!
//! A [`Program`] is one of three [`Shape`]s: a WASI preview 1 command (core
//! module with `_start`), a WASI preview 2 command component (`wasi:cli/run`),
//! or a `wasi:http` proxy component (`wasi:http/incoming-handler`). Commands
//! take a [`CommandRequest`] (args, explicit env, stdin, preopened dirs) and
//! give a [`CommandOutcome`]; proxies take an [`HttpRequest`] and give an
//! [`HttpOutcome`]. Nothing else of the host is visible: no inherited
//! environment, no files outside the preopens, no sockets, no outgoing HTTP.
//!
//! # Speed
//!
//! Compilation happens once per sha256 digest and [`Profile`]: compiled
//! artifacts are written to the cache directory and memory-mapped back with
//! `deserialize_file`, and each [`Program`] keeps its `InstancePre`, so an
//! execution only instantiates (pooling allocator, copy-on-write memory
//! images) and runs. Clones of a [`Program`] share the machine code.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use brume_sandbox::{CommandRequest, ExecOptions, Profile, Sandbox, SandboxConfig};
//!
//! let sandbox = Sandbox::new(SandboxConfig::default())?;
//! let wasm = std::fs::read("echo.wasm")?;
//! let program = sandbox.load(&wasm, Profile::Standard)?;
//! let req = CommandRequest { stdin: "hello".into(), ..CommandRequest::default() };
//! let out = sandbox.run(&program, &req, &ExecOptions::default()).await?;
//! assert_eq!(out.stdout, "hello");
//! println!("{} instructions", out.usage.fuel);
//! # Ok(()) }
//! ```
//!
//! # Determinism
//!
//! [`Profile::Deterministic`] compiles with NaN canonicalization and
//! deterministic relaxed SIMD (threads are always off), seeds every random
//! source from [`ExecOptions::seed`], and replaces both clocks with virtual
//! ones that start at [`ExecOptions::clock_start`] and advance 1 ms per read.
//! The same program and input then give identical output bytes and identical
//! fuel on every run and every machine.

mod engine;
mod error;
mod exec;
mod program;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use wasmtime::Engine;

pub use crate::error::{ExecError, ExecFailure};
pub use crate::program::{Digest, DigestParseError, Program, Shape};

/// Which engine a program is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Fast default for plain functions.
    #[default]
    Standard,
    /// Bit-for-bit reproducible: for anything that will be verified.
    Deterministic,
}

/// Process-wide settings, fixed when the [`Sandbox`] is created.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where compiled artifacts are cached. `None` compiles in memory only.
    pub cache_dir: Option<PathBuf>,
    /// How many instances may be alive at once (pooling allocator slots).
    pub max_concurrent_instances: u32,
    /// The largest linear memory any execution may be granted.
    pub max_memory_bytes: u64,
    /// The largest table any execution may declare or grow to.
    pub max_table_elements: u64,
    /// Maximum wasm stack, which bounds recursion depth.
    pub max_wasm_stack: usize,
    /// Resolution of the wall-clock deadline.
    pub epoch_tick: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            cache_dir: None,
            max_concurrent_instances: 256,
            max_memory_bytes: 4 << 30,
            max_table_elements: 100_000,
            max_wasm_stack: 1 << 20,
            epoch_tick: Duration::from_millis(1),
        }
    }
}

/// Per-execution limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Instruction budget (fuel).
    pub fuel: u64,
    /// Cap on the sum of all linear memories, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock deadline, from the start of the execution.
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    /// Cap on stdin (commands) or the request body (HTTP).
    pub max_input_bytes: u64,
    /// Cap on stdout + stderr (+ the response body for HTTP).
    pub max_output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 100_000_000_000,
            memory_bytes: 512 << 20,
            timeout: Duration::from_secs(30),
            max_input_bytes: 64 << 20,
            max_output_bytes: 64 << 20,
        }
    }
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Limits plus the deterministic-mode inputs.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub limits: Limits,
    /// Seeds every random source of a [`Profile::Deterministic`] program.
    pub seed: u64,
    /// Where a deterministic program's wall clock starts (since the Unix epoch).
    pub clock_start: Duration,
}

/// A live view of one running execution, for long jobs that report
/// progress (see [`Sandbox::run_with_progress`]).
///
/// - [`fuel_consumed`](Progress::fuel_consumed) is sampled from inside the
///   guest every [`Progress::SAMPLE`] of wall time, by the store's epoch
///   callback. Compiled code keeps the fuel counter in a register and stores
///   it only at calls and at the fuel yield every 10^6 units, so a sample is
///   low by at most 10^6 (plus whatever ran since the last sample). The
///   final, exact figure is the outcome's [`Usage::fuel`]; it is also stored
///   here when the execution ends.
/// - [`take_stderr`](Progress::take_stderr) returns what the guest wrote to
///   stderr since the previous call (stderr is teed: the outcome still holds
///   all of it).
///
/// Executions without a `Progress` pay nothing for this.
#[derive(Debug, Default)]
pub struct Progress {
    fuel: std::sync::atomic::AtomicU64,
    stderr: Mutex<bytes::BytesMut>,
}

impl Progress {
    /// How often a running guest's fuel is sampled.
    pub const SAMPLE: Duration = Duration::from_millis(10);

    pub fn new() -> Progress {
        Progress::default()
    }

    /// Fuel consumed so far (see the type's docs for its accuracy).
    pub fn fuel_consumed(&self) -> u64 {
        self.fuel.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// stderr written since the previous call.
    pub fn take_stderr(&self) -> Bytes {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .split()
            .freeze()
    }

    pub(crate) fn set_fuel(&self, fuel: u64) {
        self.fuel.store(fuel, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn push_stderr(&self, bytes: &[u8]) {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
    }
}

/// A host directory made visible to the guest (`HOST[::GUEST]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirMapping {
    pub host: PathBuf,
    pub guest: String,
}

/// Why a string is not a [`DirMapping`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirMappingError {
    #[error("empty directory mapping")]
    Empty,
    /// `::` with nothing before or after it.
    #[error("expected HOST[::GUEST], got {0:?}")]
    Malformed(String),
}

impl std::str::FromStr for DirMapping {
    type Err = DirMappingError;
    /// Parses wasmtime's `HOST[::GUEST]` syntax; without `::GUEST` the guest
    /// path is the host path as written.
    fn from_str(s: &str) -> Result<Self, DirMappingError> {
        if s.is_empty() {
            return Err(DirMappingError::Empty);
        }
        let (host, guest) = match s.split_once("::") {
            Some((h, g)) if !h.is_empty() && !g.is_empty() => (h, g),
            Some(_) => return Err(DirMappingError::Malformed(s.to_owned())),
            None => (s, s),
        };
        Ok(DirMapping {
            host: PathBuf::from(host),
            guest: guest.to_string(),
        })
    }
}

/// Input to a command (either preview 1 or preview 2).
#[derive(Debug, Clone, Default)]
pub struct CommandRequest {
    /// The full argv, including argv\[0\].
    pub args: Vec<String>,
    /// The complete environment; nothing is inherited from the host.
    pub env: Vec<(String, String)>,
    pub stdin: Bytes,
    pub dirs: Vec<DirMapping>,
}

/// What was consumed by one execution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Fuel consumed: wasm operators executed (see ARCHITECTURE.md for the
    /// mapping to billed instructions).
    pub fuel: u64,
    /// Highest total linear memory, in bytes.
    pub peak_memory_bytes: u64,
    /// Wall time from the start of the execution, in microseconds.
    pub wall_us: u64,
    /// stdin or request body bytes.
    pub bytes_in: u64,
    /// stdout + stderr (+ response body) bytes.
    pub bytes_out: u64,
}

/// A command that ran to completion (whatever its exit code).
#[derive(Debug, Clone)]
pub struct CommandOutcome {
    pub exit_code: i32,
    pub stdout: Bytes,
    pub stderr: Bytes,
    pub usage: Usage,
}

/// An HTTP request for a `wasi:http` proxy.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub method: http::Method,
    /// Path and query; scheme and authority default to `http://localhost`.
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// A proxy that produced a response.
#[derive(Debug, Clone)]
pub struct HttpOutcome {
    pub response: HttpResponse,
    /// What the guest wrote to stderr (logs).
    pub stderr: Bytes,
    pub usage: Usage,
}

/// One engine with its linkers, shared by every program compiled for it.
pub(crate) struct Linkers {
    pub(crate) engine: Engine,
    pub(crate) core: wasmtime::Linker<exec::CoreState>,
    pub(crate) component: wasmtime::component::Linker<exec::ComponentState>,
}

impl Linkers {
    fn new(engine: Engine) -> wasmtime::Result<Linkers> {
        let mut core = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut core, |s: &mut exec::CoreState| s.wasi_mut())?;
        let mut component = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component)?;
        Ok(Linkers {
            engine,
            core,
            component,
        })
    }
}

/// The executor. Create one per process and share it (`&Sandbox` is all an
/// execution needs); it owns the engines, the epoch ticker thread and the
/// program cache.
pub struct Sandbox {
    config: SandboxConfig,
    standard: Linkers,
    deterministic: Linkers,
    programs: Mutex<HashMap<(Digest, Profile), Program>>,
    _ticker: engine::Ticker,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Builds both engines and starts the epoch ticker.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, ExecError> {
        let internal = |e: wasmtime::Error| ExecError::Internal(format!("build engine: {e:#}"));
        let standard = engine::build_engine(&config, Profile::Standard).map_err(internal)?;
        let deterministic =
            engine::build_engine(&config, Profile::Deterministic).map_err(internal)?;
        let ticker = engine::Ticker::start(
            vec![standard.clone(), deterministic.clone()],
            config.epoch_tick,
        )
        .map_err(|e| ExecError::Internal(format!("start epoch ticker: {e}")))?;
        Ok(Sandbox {
            standard: Linkers::new(standard).map_err(internal)?,
            deterministic: Linkers::new(deterministic).map_err(internal)?,
            programs: Mutex::new(HashMap::new()),
            config,
            _ticker: ticker,
        })
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    fn exec_env(&self) -> exec::Env {
        exec::Env {
            table_limit: self.config.max_table_elements,
            epoch_tick: self.config.epoch_tick,
        }
    }

    fn linkers(&self, profile: Profile) -> &Linkers {
        match profile {
            Profile::Standard => &self.standard,
            Profile::Deterministic => &self.deterministic,
        }
    }

    fn cached(&self, key: &(Digest, Profile)) -> Option<Program> {
        self.programs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn remember(&self, program: Program) -> Program {
        let key = (program.digest(), program.profile());
        self.programs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(program)
            .clone()
    }

    /// Validates, compiles (or loads the cached artifact) and pre-links a
    /// module given as wasm binary or text.
    ///
    /// This is CPU-bound and may take seconds on a cold cache: async callers
    /// should run it on a blocking thread. Loading the same digest again
    /// returns the program already in memory.
    pub fn load(&self, bytes: &[u8], profile: Profile) -> Result<Program, ExecError> {
        let wasm = program::to_binary(bytes)?;
        let digest = Digest::of(&wasm);
        if let Some(p) = self.cached(&(digest, profile)) {
            return Ok(p);
        }
        let linkers = self.linkers(profile);
        let compiled = program::compile(
            &linkers.engine,
            self.config.cache_dir.as_deref(),
            &digest,
            &wasm,
        )?;
        let program = program::prepare(linkers, digest, profile, compiled)?;
        Ok(self.remember(program))
    }

    /// Loads a program by digest from the artifact cache alone, without its
    /// bytes (e.g. after a restart). `Ok(None)` when it is not cached.
    pub fn load_cached(
        &self,
        digest: &Digest,
        profile: Profile,
    ) -> Result<Option<Program>, ExecError> {
        if let Some(p) = self.cached(&(*digest, profile)) {
            return Ok(Some(p));
        }
        let Some(dir) = self.config.cache_dir.as_deref() else {
            return Ok(None);
        };
        let linkers = self.linkers(profile);
        let path = program::artifact_path(dir, &linkers.engine, digest);
        let Some(compiled) = program::load_artifact(&linkers.engine, &path)? else {
            return Ok(None);
        };
        let program = program::prepare(linkers, *digest, profile, compiled)?;
        Ok(Some(self.remember(program)))
    }

    /// Runs a command program to completion.
    pub async fn run(
        &self,
        program: &Program,
        req: &CommandRequest,
        options: &ExecOptions,
    ) -> Result<CommandOutcome, ExecFailure> {
        exec::run_command(program, &self.exec_env(), req, options, None).await
    }

    /// [`run`](Sandbox::run), reporting fuel and stderr into `progress` while
    /// the guest runs. Limits, deadline and outcome are exactly as for `run`.
    pub async fn run_with_progress(
        &self,
        program: &Program,
        req: &CommandRequest,
        options: &ExecOptions,
        progress: &Arc<Progress>,
    ) -> Result<CommandOutcome, ExecFailure> {
        exec::run_command(program, &self.exec_env(), req, options, Some(progress)).await
    }

    /// Sends one HTTP request to a `wasi:http` proxy program.
    pub async fn handle_http(
        &self,
        program: &Program,
        req: HttpRequest,
        options: &ExecOptions,
    ) -> Result<HttpOutcome, ExecFailure> {
        exec::handle_http(program, &self.exec_env(), req, options, &[], None).await
    }

    /// [`handle_http`](Sandbox::handle_http) with `dirs` preopened (read
    /// and write), and reporting into `progress` if given.
    pub async fn handle_http_in(
        &self,
        program: &Program,
        req: HttpRequest,
        options: &ExecOptions,
        dirs: &[DirMapping],
        progress: Option<&Arc<Progress>>,
    ) -> Result<HttpOutcome, ExecFailure> {
        exec::handle_http(program, &self.exec_env(), req, options, dirs, progress).await
    }

    /// [`handle_http`](Sandbox::handle_http), reporting fuel and stderr into
    /// `progress` while the guest runs.
    pub async fn handle_http_with_progress(
        &self,
        program: &Program,
        req: HttpRequest,
        options: &ExecOptions,
        progress: &Arc<Progress>,
    ) -> Result<HttpOutcome, ExecFailure> {
        exec::handle_http(program, &self.exec_env(), req, options, &[], Some(progress)).await
    }

    /// Digests that have a compiled artifact in the cache directory for
    /// either profile of this build, sorted and without duplicates (empty
    /// without a cache dir). [`load_cached`](Sandbox::load_cached) finds them.
    pub fn cached_digests(&self) -> Vec<Digest> {
        let Some(dir) = self.config.cache_dir.as_deref() else {
            return Vec::new();
        };
        let suffixes = [
            program::artifact_suffix(&self.standard.engine),
            program::artifact_suffix(&self.deterministic.engine),
        ];
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out: Vec<Digest> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                let stem = suffixes
                    .iter()
                    .find_map(|s| name.strip_suffix(s.as_str()))?;
                stem.parse().ok()
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Sandbox {
    /// Drops a program from the in-memory cache (its artifact stays on
    /// disk). Executions holding a clone keep working.
    pub fn evict(&self, digest: &Digest) {
        self.programs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(d, _), _| d != digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_mappings_and_digests_parse_or_say_why_not() {
        let m: DirMapping = "/tmp/a::/data".parse().expect("mapping");
        assert_eq!(
            (m.host, m.guest),
            (PathBuf::from("/tmp/a"), "/data".to_string())
        );
        let m: DirMapping = "rel".parse().expect("mapping");
        assert_eq!((m.host, m.guest), (PathBuf::from("rel"), "rel".to_string()));
        assert_eq!("".parse::<DirMapping>(), Err(DirMappingError::Empty));
        assert_eq!(
            "::g".parse::<DirMapping>(),
            Err(DirMappingError::Malformed("::g".into()))
        );
        assert_eq!(
            DirMappingError::Malformed("h::".into()).to_string(),
            r#"expected HOST[::GUEST], got "h::""#
        );

        let d = Digest::of(b"x");
        assert_eq!(format!("sha256:{d}").parse::<Digest>(), Ok(d));
        let e = "sha256:zz".parse::<Digest>().expect_err("not a digest");
        assert_eq!(e.input, "zz");
        assert!(
            e.to_string().starts_with("not a sha256 hex digest (")
                && e.to_string().ends_with(r#"): "zz""#),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }
}
