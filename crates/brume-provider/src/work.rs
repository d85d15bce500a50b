//! One assignment: admission, finding the program, running it.

use std::sync::Arc;
use std::time::Duration;

use brume_api::ServiceKind;
use brume_api::wire::{self, Assign, FromProvider, Outcome, Refused};
use brume_exec::convert;
use brume_sandbox::{CommandRequest, Digest, ExecError, Program, Progress};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::{Fault, Key, Reservation, Shared};

/// The writer task's queue: every frame of a session goes through it.
pub(crate) type Outbox = mpsc::UnboundedSender<Message>;

pub(crate) fn send(out: &Outbox, channel: u32, msg: &FromProvider) {
    // The session is gone if this fails; nothing is waiting for the frame.
    let _ = out.send(Message::Binary(msg.encode(channel)));
}

/// What an execution needs from its session.
#[derive(Clone)]
pub(crate) struct SessionCtx {
    pub(crate) out: Outbox,
    pub(crate) blob_token: Arc<str>,
    /// The session's batch of invocation receipts.
    pub(crate) roots: Arc<crate::roots::Roots>,
}

#[derive(Debug, Clone)]
pub(crate) enum LoadError {
    /// The bytes could not be fetched or were not what was asked for.
    Fetch(String),
    /// The sandbox refused the module.
    Module(ExecError),
}

pub(crate) type LoadCell = Arc<tokio::sync::OnceCell<Result<Program, LoadError>>>;

/// Shortest progress interval honoured (the sandbox samples every 10 ms).
const MIN_PROGRESS: Duration = Duration::from_millis(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

pub(crate) fn refused(reason: &str, message: impl Into<String>) -> Refused {
    Refused {
        reason: reason.to_owned(),
        message: message.into(),
    }
}

/// Decides whether to take an assignment; on yes, its slot is reserved.
pub(crate) fn admit(shared: &Arc<Shared>, a: &Assign) -> Result<(Digest, Reservation), Refused> {
    if shared.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(refused("draining", "this provider is draining"));
    }
    if let Some(why) = shared.paused.borrow().clone() {
        return Err(refused("paused", format!("this provider is paused: {why}")));
    }
    if let Some(list) = &shared.config.allowed_services {
        match &a.service {
            Some(s) if list.iter().any(|x| x == s) => {}
            Some(s) => {
                return Err(refused(
                    "not_allowed",
                    format!("service {s:?} is not in this provider's allow list"),
                ));
            }
            None => {
                return Err(refused(
                    "not_allowed",
                    "this provider only runs named services",
                ));
            }
        }
    }
    let ask = shared.config.ask();
    if let Some(bid) = a.max_price.filter(|&bid| bid < ask) {
        return Err(refused(
            "below_floor",
            format!(
                "the work bids {} micro-tokens per compute hour; this provider's floor is {}",
                brume_api::rest::price_per_hour(bid),
                brume_api::rest::price_per_hour(ask)
            ),
        ));
    }
    if a.gpus > shared.gpus.as_ref().map_or(0, |g| g.count) {
        return Err(refused(
            "no_capacity",
            format!(
                "the job needs {} GPUs; this provider has {}",
                a.gpus,
                shared.gpus.as_ref().map_or(0, |g| g.count)
            ),
        ));
    }
    if a.network && !shared.config.allow_network {
        return Err(refused(
            "not_allowed",
            "this provider gives container jobs no network (`--allow-network` is off)",
        ));
    }
    if a.kind == ServiceKind::Oci && !matches!(shared.containers, Some(Ok(_))) {
        return Err(refused(
            "not_supported",
            "this provider does not take container jobs",
        ));
    }
    let digest = a
        .digest
        .parse::<Digest>()
        .map_err(|e| refused("invalid_module", e.to_string()))?;
    crate::policy::check(shared, a, &digest)?;
    let reservation = shared
        .reserve(a.limits.memory_bytes, a.gpus)
        .ok_or_else(|| {
            refused(
                "no_capacity",
                format!(
                    "no free slot, {} bytes of memory or {} GPUs (slots {}, memory {})",
                    a.limits.memory_bytes, a.gpus, shared.config.slots, shared.config.memory_bytes
                ),
            )
        })?;
    Ok((digest, reservation))
}

/// Runs one accepted assignment to its `Done` (or `Refused` when the module
/// cannot be fetched). Returns the channel, for the session's bookkeeping.
pub(crate) async fn execute(
    shared: Arc<Shared>,
    ctx: SessionCtx,
    channel: u32,
    assign: Box<Assign>,
    digest: Digest,
    reservation: Reservation,
) -> u32 {
    if assign.kind == ServiceKind::Oci {
        return crate::container::execute(shared, ctx, channel, assign, digest, reservation).await;
    }
    let profile = convert::profile(assign.profile);
    // What the receipt of this attempt names, whatever its outcome.
    let receipt = ReceiptBase::new(&assign);
    let program = match program(&shared, &ctx, (digest, profile)).await {
        Ok(p) => p,
        Err(LoadError::Fetch(message)) => {
            tracing::warn!(%digest, %message, "module fetch failed");
            let r = refused("fetch_failed", message);
            drop(reservation);
            send(&ctx.out, channel, &FromProvider::Refused(r));
            return channel;
        }
        Err(LoadError::Module(e)) => {
            finish(
                &shared,
                &ctx,
                channel,
                &receipt,
                convert::failed(e.code(), e.to_string()),
                reservation,
            );
            return channel;
        }
    };
    let files = match crate::workdir::WorkDir::for_job(&shared, &ctx, &assign).await {
        Ok(files) => files,
        Err(e) => return input_failed(&shared, &ctx, channel, &receipt, e, reservation),
    };
    if assign.lease {
        // The program is loaded and its slot reserved: both are kept for
        // the lease until the broker cancels it (or the session ends).
        let _held = (&program, &reservation);
        return std::future::pending::<u32>().await;
    }
    let session = match &assign.affinity {
        None => None,
        Some(a) => match shared.sessions.open(a, std::time::Instant::now()).await {
            Ok(dir) => Some((a.clone(), dir)),
            Err(e) => {
                let outcome = convert::failed("internal", e);
                finish(&shared, &ctx, channel, &receipt, outcome, reservation);
                return channel;
            }
        },
    };
    let options = convert::exec_options(&assign);
    let Assign {
        kind,
        args,
        env,
        stdin,
        http,
        progress_ms,
        outputs,
        limits,
        ..
    } = *assign;
    let progress = progress_ms.map(|ms| {
        (
            Arc::new(Progress::new()),
            Duration::from_millis(ms).max(MIN_PROGRESS),
        )
    });
    let sandbox = &shared.sandbox;
    let outcome = match kind {
        ServiceKind::Command => {
            let req = CommandRequest {
                args,
                env,
                stdin,
                dirs: files
                    .iter()
                    .map(|f| f.mapping())
                    .chain(session.iter().map(|(_, d)| d.clone()))
                    .collect(),
            };
            let run = async {
                match &progress {
                    Some((p, _)) => sandbox.run_with_progress(&program, &req, &options, p).await,
                    None => sandbox.run(&program, &req, &options).await,
                }
            };
            let outcome =
                convert::command_outcome(reporting(run, progress.as_ref(), &ctx, channel).await);
            match &files {
                Some(f) => f.finish(outputs, limits.max_output_bytes, outcome).await,
                None => outcome,
            }
        }
        ServiceKind::Http => match http.as_ref().map(convert::http_request) {
            None => convert::failed("invalid_request", "an http service needs a request"),
            Some(Err(e)) => convert::failed("invalid_request", e.to_string()),
            Some(Ok(req)) => {
                let dirs: Vec<_> = session.iter().map(|(_, d)| d.clone()).collect();
                let p = progress.as_ref().map(|(p, _)| p);
                let run = sandbox.handle_http_in(&program, req, &options, &dirs, p);
                convert::http_outcome(reporting(run, progress.as_ref(), &ctx, channel).await)
            }
        },
        // Dispatched to `container` above.
        ServiceKind::Oci => convert::failed("internal", "an oci job reached the wasm runner"),
    };
    if let Some((a, _)) = &session {
        shared.sessions.close(a, std::time::Instant::now()).await;
    }
    finish(&shared, &ctx, channel, &receipt, outcome, reservation);
    channel
}

/// A job whose inputs could not be had: refused (another provider may
/// fetch them), or failed (its own fault). Returns the channel.
pub(crate) fn input_failed(
    shared: &Shared,
    ctx: &SessionCtx,
    channel: u32,
    receipt: &ReceiptBase,
    e: crate::data::InputError,
    reservation: Reservation,
) -> u32 {
    match e {
        crate::data::InputError::Refused(why) => {
            // The slot is free before the broker hears of it.
            drop(reservation);
            send(
                &ctx.out,
                channel,
                &FromProvider::Refused(refused("not_allowed", why)),
            );
        }
        crate::data::InputError::Failed(code, why) => {
            let outcome = convert::failed(code, why);
            finish(shared, ctx, channel, receipt, outcome, reservation);
        }
    }
    channel
}

/// The parts of a receipt known before the run: everything but the
/// outcome's.
pub(crate) struct ReceiptBase(Assign);

impl ReceiptBase {
    pub(crate) fn new(a: &Assign) -> ReceiptBase {
        // The receipt needs the input, not the bytes themselves twice: keep
        // a copy of the assignment (stdin and bodies are `Bytes`, shared).
        ReceiptBase(a.clone())
    }

    /// Signs the receipt of `outcome` (EIP-191 over its message).
    fn sign(&self, shared: &Shared, outcome: &Outcome) -> bytes::Bytes {
        let receipt = brume_api::receipt::Receipt::new(&self.0, &shared.address, outcome);
        match shared.identity.sign_message(receipt.message().as_bytes()) {
            Ok(sig) => bytes::Bytes::copy_from_slice(&sig),
            Err(e) => {
                tracing::error!("sign a receipt: {e}");
                bytes::Bytes::new()
            }
        }
    }
}

/// What a `stall` or `drop` fault does with accepted work (the caller has
/// sent `Accepted`): hold the slot until cancelled, or let it go at once.
/// Nothing is sent either way.
pub(crate) async fn misbehave(fault: Fault, channel: u32, reservation: Reservation) -> u32 {
    tracing::warn!(
        channel,
        ?fault,
        "fault injection: accepted work that will never be done"
    );
    if fault == Fault::Stall {
        let _held = reservation;
        std::future::pending::<()>().await;
    }
    channel
}

/// An invocation that finishes within this is acknowledged by its `Done`
/// alone; a slower one (a module to fetch or compile, a long run) sends
/// `Accepted` first. Far below any broker's ack timeout (5 s by default).
pub(crate) const ACK_AFTER: Duration = Duration::from_millis(20);

/// Runs an invocation, sending `Accepted` only if it is still running after
/// [`ACK_AFTER`]: on the hot path one frame fewer each way.
pub(crate) async fn ack_if_slow<F: Future>(run: F, out: Outbox, channel: u32) -> F::Output {
    tokio::pin!(run);
    tokio::select! {
        biased;
        v = &mut run => return v,
        _ = tokio::time::sleep(ACK_AFTER) => send(&out, channel, &FromProvider::Accepted),
    }
    run.await
}

/// Drives `run`, sending `Progress` every interval when asked to.
async fn reporting<F: Future>(
    run: F,
    progress: Option<&(Arc<Progress>, Duration)>,
    ctx: &SessionCtx,
    channel: u32,
) -> F::Output {
    let Some((p, every)) = progress else {
        return run.await;
    };
    tokio::pin!(run);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + *every, *every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            out = &mut run => return out,
            _ = tick.tick() => {
                let msg = FromProvider::Progress(wire::Progress {
                    fuel: p.fuel_consumed(),
                    stderr: p.take_stderr(),
                });
                send(&ctx.out, channel, &msg);
            }
        }
    }
}

/// Sends the attempt's `Done`, with its receipt signed or batched. Its slot is freed first: the broker
/// may send the next assignment the moment `Done` arrives, and must not
/// meet a `no_capacity` refusal for a slot about to be free.
pub(crate) fn finish(
    shared: &Shared,
    ctx: &SessionCtx,
    channel: u32,
    receipt: &ReceiptBase,
    outcome: Outcome,
    reservation: Reservation,
) {
    use std::sync::atomic::Ordering::Relaxed;
    shared.instructions.fetch_add(outcome.usage().fuel, Relaxed);
    match &outcome {
        Outcome::Failed { .. } => shared.work_failed.fetch_add(1, Relaxed),
        _ => shared.work_done.fetch_add(1, Relaxed),
    };
    let outcome = match shared.config.fault {
        Some(fault) => crate::policy::tamper(fault, outcome),
        None => outcome,
    };
    // Signed as is: with a fault, the provider's own (wrong) claim.
    if receipt.0.batched_receipt {
        let leaf = brume_api::batch::leaf(&brume_api::receipt::Receipt::new(
            &receipt.0,
            &shared.address,
            &outcome,
        ));
        drop(reservation);
        let done = wire::Done {
            outcome,
            signature: bytes::Bytes::new(),
            leaf: Some(bytes::Bytes::copy_from_slice(&leaf)),
        };
        ctx.roots.done(shared, &ctx.out, channel, leaf, done);
        return;
    }
    let signature = receipt.sign(shared, &outcome);
    drop(reservation);
    send(
        &ctx.out,
        channel,
        &FromProvider::Done(Box::new(wire::Done {
            outcome,
            signature,
            leaf: None,
        })),
    );
}

/// The program for `key`: in memory, else loaded once however many
/// assignments ask at the same time.
async fn program(shared: &Arc<Shared>, ctx: &SessionCtx, key: Key) -> Result<Program, LoadError> {
    if let Some(p) = shared.programs.lock().get(&key) {
        return Ok(p.clone());
    }
    let cell = shared.loading.lock().entry(key).or_default().clone();
    let result = cell.get_or_init(|| load(shared, ctx, key)).await.clone();
    // The first waiter out forgets the load: a failure is retried next time.
    let mut loading = shared.loading.lock();
    if loading.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
        loading.remove(&key);
    }
    result
}

async fn load(shared: &Arc<Shared>, ctx: &SessionCtx, key: Key) -> Result<Program, LoadError> {
    let (digest, profile) = key;
    let sandbox = shared.sandbox.clone();
    let cached = tokio::task::spawn_blocking(move || sandbox.load_cached(&digest, profile))
        .await
        .map_err(|e| LoadError::Module(ExecError::Internal(format!("load task: {e}"))))?;
    match cached {
        Ok(Some(p)) => {
            shared.programs.lock().insert(key, p.clone());
            return Ok(p);
        }
        Ok(None) => {}
        // A bad artifact is rebuilt from the bytes below.
        Err(ExecError::Internal(why)) => tracing::warn!(%digest, %why, "cached artifact unusable"),
        Err(e) => return Err(LoadError::Module(e)),
    }
    let bytes = fetch(shared, ctx, &digest).await?;
    let got = Digest::of(&bytes);
    if got != digest {
        return Err(LoadError::Fetch(format!(
            "blob {digest} has sha256 {got}: not the module asked for"
        )));
    }
    let sandbox = shared.sandbox.clone();
    let started = std::time::Instant::now();
    let program = tokio::task::spawn_blocking(move || sandbox.load(&bytes, profile))
        .await
        .map_err(|e| LoadError::Module(ExecError::Internal(format!("load task: {e}"))))?
        .map_err(LoadError::Module)?;
    tracing::info!(%digest, ?profile, ms = started.elapsed().as_millis() as u64, "module compiled");
    shared.programs.lock().insert(key, program.clone());
    send(
        &ctx.out,
        wire::CONTROL,
        &FromProvider::Cached(vec![digest.to_string()]),
    );
    Ok(program)
}

pub(crate) async fn fetch(
    shared: &Shared,
    ctx: &SessionCtx,
    digest: &Digest,
) -> Result<bytes::Bytes, LoadError> {
    let url = format!("{}/v1/blobs/{digest}", shared.config.broker_url);
    let fail = |e: String| LoadError::Fetch(format!("GET {url}: {e}"));
    let resp = shared
        .http
        .get(&url)
        .bearer_auth(&*ctx.blob_token)
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(resp.status().to_string()));
    }
    resp.bytes().await.map_err(|e| fail(e.to_string()))
}
