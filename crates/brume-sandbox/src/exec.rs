//! Running a [`Program`]: store setup, metering, limits and outcome capture.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::program::{Pre, Program};
use crate::{
    CommandOutcome, CommandRequest, ExecError, ExecFailure, ExecOptions, HttpOutcome, HttpRequest,
    HttpResponse, Profile, Progress, Usage,
};

/// Fuel between cooperative yields of a running guest (well under 1 ms of
/// work). Yielding through fuel, unlike through epochs, stores the exact fuel
/// counter first, so an execution cancelled at its deadline is metered exactly.
const YIELD_FUEL: u64 = 1_000_000;
/// The epoch deadline sits this far past the wall-clock deadline. It is the
/// backstop: the host timer normally fires first, at a yield point.
const EPOCH_GRACE: Duration = Duration::from_millis(20);
/// What `check-write` advertises; the real cap is enforced on `write`.
const WRITE_PERMIT: usize = 64 * 1024;

// ---------------------------------------------------------------- metering

/// Tracks linear memory across every memory of an instance and enforces the
/// per-execution cap. Failing growth with an error (rather than returning
/// `false`) traps the guest at once, so the cause is never ambiguous.
#[derive(Debug)]
pub(crate) struct Meter {
    memory_limit: u64,
    table_limit: u64,
    memory_total: u64,
    peak: u64,
    /// `memory_total` and `peak` before the growth last allowed: restored
    /// if the engine then fails it (beyond a memory's own maximum).
    before_grow: (u64, u64),
}

impl Meter {
    fn new(memory_limit: u64, table_limit: u64) -> Meter {
        Meter {
            memory_limit,
            table_limit,
            memory_total: 0,
            peak: 0,
            before_grow: (0, 0),
        }
    }
}

impl ResourceLimiter for Meter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let next = (self.memory_total + desired as u64).saturating_sub(current as u64);
        if next > self.memory_limit {
            return Err(wasmtime::Error::new(ExecError::MemoryLimit(format!(
                "linear memory of {next} bytes exceeds the limit of {} bytes",
                self.memory_limit
            ))));
        }
        self.before_grow = (self.memory_total, self.peak);
        self.memory_total = next;
        self.peak = self.peak.max(next);
        Ok(true)
    }

    /// The guest sees `memory.grow` return -1; the meter forgets the size
    /// it allowed.
    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        (self.memory_total, self.peak) = self.before_grow;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.table_limit {
            return Err(wasmtime::Error::new(ExecError::MemoryLimit(format!(
                "table of {desired} elements exceeds the limit of {} elements",
                self.table_limit
            ))));
        }
        Ok(true)
    }
}

/// The output cap shared by stdout, stderr and an HTTP response body.
#[derive(Debug)]
struct OutputBudget {
    used: AtomicU64,
    limit: u64,
    exceeded: AtomicBool,
}

impl OutputBudget {
    fn new(limit: u64) -> Arc<OutputBudget> {
        Arc::new(OutputBudget {
            used: AtomicU64::new(0),
            limit,
            exceeded: AtomicBool::new(false),
        })
    }

    /// Reserves `n` bytes, or marks the budget exceeded.
    fn charge(&self, n: usize) -> Result<(), ExecError> {
        let prev = self.used.fetch_add(n as u64, Ordering::Relaxed);
        if prev + n as u64 > self.limit {
            self.used.fetch_sub(n as u64, Ordering::Relaxed);
            self.exceeded.store(true, Ordering::Relaxed);
            return Err(ExecError::OutputTooLarge { limit: self.limit });
        }
        Ok(())
    }

    fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The error to report when the cap was hit at any point, even if the
    /// guest ignored its failed writes and carried on.
    fn overflow(&self) -> Option<ExecError> {
        self.exceeded
            .load(Ordering::Relaxed)
            .then_some(ExecError::OutputTooLarge { limit: self.limit })
    }
}

/// stdout or stderr, captured in memory under the shared [`OutputBudget`].
#[derive(Debug, Clone)]
struct CapturedPipe {
    buf: Arc<Mutex<BytesMut>>,
    budget: Arc<OutputBudget>,
    /// Also copy every write here (stderr of an execution with progress).
    tee: Option<Arc<Progress>>,
}

impl CapturedPipe {
    fn new(budget: Arc<OutputBudget>, tee: Option<Arc<Progress>>) -> CapturedPipe {
        CapturedPipe {
            buf: Arc::new(Mutex::new(BytesMut::new())),
            budget,
            tee,
        }
    }

    fn append(&self, bytes: &[u8]) -> Result<(), ExecError> {
        self.budget.charge(bytes.len())?;
        self.buf
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        if let Some(tee) = &self.tee {
            tee.push_stderr(bytes);
        }
        Ok(())
    }

    fn contents(&self) -> Bytes {
        self.buf
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .freeze()
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes)
            .map_err(|e| StreamError::Trap(wasmtime::Error::new(e)))
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl tokio::io::AsyncWrite for CapturedPipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(
            self.append(buf)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
        )
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CapturedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

// ---------------------------------------------------------------- determinism

/// A clock that starts at a fixed instant and advances a fixed step per read,
/// so that replicas observe identical time.
struct VirtualClock {
    start: Duration,
    reads: AtomicU64,
}

const VIRTUAL_CLOCK_STEP: Duration = Duration::from_millis(1);

impl VirtualClock {
    fn tick(&self) -> Duration {
        let n = self.reads.fetch_add(1, Ordering::Relaxed);
        self.start + VIRTUAL_CLOCK_STEP * (n as u32)
    }
}

impl wasmtime_wasi::HostWallClock for VirtualClock {
    fn resolution(&self) -> Duration {
        VIRTUAL_CLOCK_STEP
    }
    fn now(&self) -> Duration {
        self.tick()
    }
}

impl wasmtime_wasi::HostMonotonicClock for VirtualClock {
    fn resolution(&self) -> u64 {
        VIRTUAL_CLOCK_STEP.as_nanos() as u64
    }
    fn now(&self) -> u64 {
        self.tick().as_nanos() as u64
    }
}

// ---------------------------------------------------------------- store data

pub(crate) struct CoreState {
    wasi: WasiP1Ctx,
    meter: Meter,
}

pub(crate) struct ComponentState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    meter: Meter,
    hooks: NoNetwork,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ComponentState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Guests have no network: every outgoing `wasi:http` request is denied.
struct NoNetwork;

impl WasiHttpHooks for NoNetwork {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

trait Metered: Send + 'static {
    fn meter(&mut self) -> &mut Meter;
}
impl Metered for CoreState {
    fn meter(&mut self) -> &mut Meter {
        &mut self.meter
    }
}
impl Metered for ComponentState {
    fn meter(&mut self) -> &mut Meter {
        &mut self.meter
    }
}

// ---------------------------------------------------------------- running

/// Sandbox-wide settings an execution needs.
pub(crate) struct Env {
    pub(crate) table_limit: u64,
    pub(crate) epoch_tick: Duration,
}

/// Everything one execution needs besides the program itself.
struct Run {
    options: ExecOptions,
    budget: Arc<OutputBudget>,
    stdout: CapturedPipe,
    stderr: CapturedPipe,
    bytes_in: u64,
    started: Instant,
    epoch_tick: Duration,
    progress: Option<Arc<Progress>>,
}

impl Run {
    fn new(
        options: &ExecOptions,
        input_len: usize,
        epoch_tick: Duration,
        progress: Option<&Arc<Progress>>,
    ) -> Result<Run, ExecError> {
        let limits = &options.limits;
        if input_len as u64 > limits.max_input_bytes {
            return Err(ExecError::InputTooLarge {
                size: input_len as u64,
                limit: limits.max_input_bytes,
            });
        }
        let budget = OutputBudget::new(limits.max_output_bytes);
        Ok(Run {
            options: options.clone(),
            stdout: CapturedPipe::new(budget.clone(), None),
            stderr: CapturedPipe::new(budget.clone(), progress.cloned()),
            budget,
            bytes_in: input_len as u64,
            started: Instant::now(),
            epoch_tick,
            progress: progress.cloned(),
        })
    }

    fn check_declared(&self, program: &Program, table_limit: u64) -> Result<(), ExecError> {
        let limits = &self.options.limits;
        if program.0.initial_memory > limits.memory_bytes {
            return Err(ExecError::MemoryLimit(format!(
                "declared initial linear memory of {} bytes exceeds the limit of {} bytes",
                program.0.initial_memory, limits.memory_bytes
            )));
        }
        if program.0.initial_table > table_limit {
            return Err(ExecError::MemoryLimit(format!(
                "declared initial table of {} elements exceeds the limit of {table_limit} elements",
                program.0.initial_table
            )));
        }
        Ok(())
    }

    fn wasi(&self, program: &Program, req: &CommandRequest) -> Result<WasiCtxBuilder, ExecError> {
        let mut b = WasiCtxBuilder::new();
        b.stdin(MemoryInputPipe::new(req.stdin.clone()))
            .stdout(self.stdout.clone())
            .stderr(self.stderr.clone())
            .args(&req.args);
        for (k, v) in &req.env {
            b.env(k, v);
        }
        for d in &req.dirs {
            b.preopened_dir(&d.host, &d.guest, FsPerms::ReadWrite)
                .map_err(|e| {
                    ExecError::InvalidRequest(format!(
                        "preopen {} as {}: {e:#}",
                        d.host.display(),
                        d.guest
                    ))
                })?;
        }
        self.determinism(program, &mut b);
        Ok(b)
    }

    /// Seeds every random source and installs virtual clocks for a
    /// [`Profile::Deterministic`] program; leaves others untouched.
    fn determinism(&self, program: &Program, b: &mut WasiCtxBuilder) {
        if program.profile() != Profile::Deterministic {
            return;
        }
        use rand::SeedableRng;
        let seed = self.options.seed;
        b.secure_random(rand::rngs::StdRng::seed_from_u64(seed))
            .insecure_random(rand::rngs::StdRng::seed_from_u64(!seed))
            .insecure_random_seed(u128::from(seed))
            .wall_clock(VirtualClock {
                start: self.options.clock_start,
                reads: AtomicU64::new(0),
            })
            .monotonic_clock(VirtualClock {
                start: Duration::ZERO,
                reads: AtomicU64::new(0),
            });
    }

    fn store<T: Metered>(&self, engine: &wasmtime::Engine, data: T) -> Store<T> {
        let limits = &self.options.limits;
        let mut store = Store::new(engine, data);
        store.limiter(|s| s.meter() as &mut dyn ResourceLimiter);
        // Cannot fail: fuel is enabled on every engine the sandbox builds.
        let _ = store.set_fuel(limits.fuel);
        // Cannot fail: async support is always on.
        let _ = store.fuel_async_yield_interval(Some(YIELD_FUEL));
        // The deadline is enforced twice: `tokio::time::timeout` (around the
        // whole execution) cancels the guest at its next yield, and the epoch
        // deadline traps it from inside compiled code should it not yield.
        let hard = limits.timeout + EPOCH_GRACE;
        let tick = self.epoch_tick.as_nanos().max(1);
        let ticks_in = move |d: Duration| (d.as_nanos() / tick) as u64 + 1;
        let ticks = ticks_in(hard);
        let Some(progress) = self.progress.clone() else {
            store.set_epoch_deadline(ticks);
            store.epoch_deadline_trap();
            return store;
        };
        // With progress, the epoch deadline fires every `Progress::SAMPLE` to
        // sample the fuel (stored at the last call or fuel yield, so within
        // one YIELD_FUEL), and interrupts once the same backstop instant as
        // above has passed, measured on the wall clock.
        let sample = ticks_in(Progress::SAMPLE);
        let hard_at = self.started + hard;
        let budget = limits.fuel;
        store.set_epoch_deadline(sample.min(ticks));
        store.epoch_deadline_callback(move |ctx| {
            progress.set_fuel(budget.saturating_sub(ctx.get_fuel().unwrap_or(budget)));
            let now = Instant::now();
            if now >= hard_at {
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Continue(
                sample.min(ticks_in(hard_at - now)),
            ))
        });
        store
    }

    fn usage<T: Metered>(&self, store: &mut Store<T>) -> Usage {
        let fuel_left = store.get_fuel().unwrap_or(0);
        let usage = Usage {
            fuel: self.options.limits.fuel.saturating_sub(fuel_left),
            peak_memory_bytes: store.data_mut().meter().peak,
            wall_us: self.started.elapsed().as_micros() as u64,
            bytes_in: self.bytes_in,
            bytes_out: self.budget.used(),
        };
        if let Some(p) = &self.progress {
            p.set_fuel(usage.fuel);
        }
        usage
    }

    /// Maps a wasmtime error from a guest call onto the stable codes.
    fn classify(&self, err: &wasmtime::Error) -> ExecError {
        if let Some(e) = self.budget.overflow() {
            return e;
        }
        if let Some(e) = err.downcast_ref::<ExecError>() {
            return e.clone();
        }
        for cause in err.chain() {
            if let Some(e) = cause.downcast_ref::<ExecError>() {
                return e.clone();
            }
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => ExecError::OutOfFuel {
                budget: self.options.limits.fuel,
            },
            Some(Trap::Interrupt) => ExecError::Timeout(self.options.limits.timeout),
            Some(trap) => {
                let mut msg = trap.to_string();
                if let Some(bt) = err.downcast_ref::<wasmtime::WasmBacktrace>() {
                    msg.push('\n');
                    msg.push_str(&bt.to_string());
                }
                ExecError::Trap(msg)
            }
            None => ExecError::Trap(format!("{err:#}")),
        }
    }

    fn fail(&self, error: ExecError, usage: Usage) -> ExecFailure {
        ExecFailure {
            error,
            usage,
            stdout: self.stdout.contents(),
            stderr: self.stderr.contents(),
        }
    }

    /// Converts the raw result of a command into an outcome.
    fn finish_command<T: Metered>(
        &self,
        store: &mut Store<T>,
        result: Option<wasmtime::Result<i32>>,
    ) -> Result<CommandOutcome, ExecFailure> {
        let usage = self.usage(store);
        let exit_code = match result {
            None => return Err(self.fail(ExecError::Timeout(self.options.limits.timeout), usage)),
            Some(Ok(code)) => code,
            Some(Err(e)) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => exit.0,
                None => return Err(self.fail(self.classify(&e), usage)),
            },
        };
        if let Some(e) = self.budget.overflow() {
            return Err(self.fail(e, usage));
        }
        Ok(CommandOutcome {
            exit_code,
            stdout: self.stdout.contents(),
            stderr: self.stderr.contents(),
            usage,
        })
    }

    fn host_deadline(&self) -> Duration {
        self.options
            .limits
            .timeout
            .saturating_sub(self.started.elapsed())
    }
}

pub(crate) async fn run_command(
    program: &Program,
    env: &Env,
    req: &CommandRequest,
    options: &ExecOptions,
    progress: Option<&Arc<Progress>>,
) -> Result<CommandOutcome, ExecFailure> {
    let run = Run::new(options, req.stdin.len(), env.epoch_tick, progress)?;
    run.check_declared(program, env.table_limit)?;
    let limits = &options.limits;
    let wasi = run.wasi(program, req)?;
    match &program.0.pre {
        Pre::Core(pre) => {
            let meter = Meter::new(limits.memory_bytes, env.table_limit);
            let mut wasi = wasi;
            let mut store = run.store(
                pre.module().engine(),
                CoreState {
                    wasi: wasi.build_p1(),
                    meter,
                },
            );
            let fut = async {
                let instance = pre.instantiate_async(&mut store).await?;
                let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                start.call_async(&mut store, ()).await?;
                Ok(0)
            };
            let result = tokio::time::timeout(run.host_deadline(), fut).await.ok();
            run.finish_command(&mut store, result)
        }
        Pre::Command(pre) => {
            let mut wasi = wasi;
            let mut store = run.store(
                pre.engine(),
                ComponentState {
                    wasi: wasi.build(),
                    http: WasiHttpCtx::new(),
                    table: ResourceTable::new(),
                    meter: Meter::new(limits.memory_bytes, env.table_limit),
                    hooks: NoNetwork,
                },
            );
            let fut = async {
                let command = pre.instantiate_async(&mut store).await?;
                let status = command.wasi_cli_run().call_run(&mut store).await?;
                Ok(if status.is_ok() { 0 } else { 1 })
            };
            let result = tokio::time::timeout(run.host_deadline(), fut).await.ok();
            run.finish_command(&mut store, result)
        }
        Pre::Http(_) => Err(ExecError::InvalidRequest(
            "this program is a wasi:http proxy; send it an HTTP request instead of running it as a command"
                .into(),
        )
        .into()),
    }
}

pub(crate) async fn handle_http(
    program: &Program,
    env: &Env,
    req: HttpRequest,
    options: &ExecOptions,
    dirs: &[crate::DirMapping],
    progress: Option<&Arc<Progress>>,
) -> Result<HttpOutcome, ExecFailure> {
    let Pre::Http(pre) = &program.0.pre else {
        return Err(ExecError::InvalidRequest(
            "this program is a WASI command, not a wasi:http proxy; run it with stdin instead"
                .into(),
        )
        .into());
    };
    let run = Run::new(options, req.body.len(), env.epoch_tick, progress)?;
    run.check_declared(program, env.table_limit)?;
    let limits = &options.limits;

    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(run.stdout.clone()).stderr(run.stderr.clone());
    for d in dirs {
        if let Err(e) = wasi.preopened_dir(&d.host, &d.guest, FsPerms::ReadWrite) {
            return Err(run.fail(
                ExecError::InvalidRequest(format!(
                    "preopen {} as {}: {e:#}",
                    d.host.display(),
                    d.guest
                )),
                Usage::default(),
            ));
        }
    }
    run.determinism(program, &mut wasi);
    let mut store = run.store(
        pre.engine(),
        ComponentState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            meter: Meter::new(limits.memory_bytes, env.table_limit),
            hooks: NoNetwork,
        },
    );

    let hyper_req = into_hyper(req).map_err(|e| ExecFailure::from(ExecError::InvalidRequest(e)))?;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let setup: wasmtime::Result<_> = (|| {
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, hyper_req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        Ok((incoming, out))
    })();
    let (incoming, out) = match setup {
        Ok(v) => v,
        Err(e) => {
            return Err(run.fail(
                ExecError::InvalidRequest(format!("{e:#}")),
                Usage::default(),
            ));
        }
    };

    let budget = run.budget.clone();
    let outcome = tokio::time::timeout(run.host_deadline(), async {
        let call = async {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, out)
                .await
        };
        let collect = async {
            let resp = match receiver.await {
                Ok(Ok(resp)) => resp,
                Ok(Err(code)) => return Err(ResponseError::Guest(format!("{code:?}"))),
                Err(_) => return Err(ResponseError::NeverSet),
            };
            let (parts, mut body) = resp.into_parts();
            let mut buf = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ResponseError::Body(e.to_string()))?;
                if let Ok(data) = frame.into_data() {
                    budget.charge(data.len()).map_err(ResponseError::Limit)?;
                    buf.extend_from_slice(&data);
                }
            }
            Ok(HttpResponse {
                status: parts.status,
                headers: parts.headers,
                body: buf.freeze(),
            })
        };
        tokio::pin!(call, collect);
        let mut call_result = None;
        let collected = loop {
            tokio::select! {
                r = &mut call, if call_result.is_none() => {
                    // A guest that failed before answering never will: its
                    // response-outparam lives in the store until we drop it.
                    let failed = r.is_err();
                    call_result = Some(r);
                    if failed {
                        break Err(ResponseError::NeverSet);
                    }
                }
                r = &mut collect => break r,
            }
        };
        if let Err(ResponseError::Limit(e)) = collected {
            // Stop the guest: whatever it writes next is over the cap anyway.
            return (
                Some(Err(wasmtime::Error::new(e))),
                Err(ResponseError::NeverSet),
            );
        }
        let call_result = match call_result {
            Some(r) => r,
            None => call.await,
        };
        (Some(call_result), collected)
    })
    .await;

    let usage = run.usage(&mut store);
    let (call_result, collected) = match outcome {
        Ok(v) => v,
        Err(_) => (None, Err(ResponseError::NeverSet)),
    };
    match call_result {
        None => return Err(run.fail(ExecError::Timeout(limits.timeout), usage)),
        Some(Err(e)) => return Err(run.fail(run.classify(&e), usage)),
        Some(Ok(())) => {}
    }
    if let Some(e) = run.budget.overflow() {
        return Err(run.fail(e, usage));
    }
    match collected {
        Ok(response) => Ok(HttpOutcome {
            response,
            stderr: run.stderr.contents(),
            usage,
        }),
        Err(e) => Err(run.fail(ExecError::Trap(e.to_string()), usage)),
    }
}

#[derive(Debug, thiserror::Error)]
enum ResponseError {
    #[error("guest returned without setting a response")]
    NeverSet,
    #[error("guest answered with an error: {0}")]
    Guest(String),
    #[error("response body failed: {0}")]
    Body(String),
    #[error(transparent)]
    Limit(ExecError),
}

fn into_hyper(
    req: HttpRequest,
) -> Result<
    hyper::Request<http_body_util::combinators::UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>>,
    String,
> {
    let mut uri = req.uri.into_parts();
    if uri.scheme.is_none() {
        uri.scheme = Some(http::uri::Scheme::HTTP);
    }
    if uri.authority.is_none() {
        uri.authority = Some(http::uri::Authority::from_static("localhost"));
    }
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    let uri = http::Uri::from_parts(uri).map_err(|e| format!("request URI: {e}"))?;
    let body = http_body_util::Full::new(req.body)
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync();
    let mut builder = hyper::Request::builder().method(req.method).uri(uri);
    if let Some(h) = builder.headers_mut() {
        *h = req.headers;
    }
    builder.body(body).map_err(|e| format!("request: {e}"))
}

impl CoreState {
    pub(crate) fn wasi_mut(&mut self) -> &mut WasiP1Ctx {
        &mut self.wasi
    }
}
