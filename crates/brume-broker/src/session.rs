//! One provider's WebSocket session: handshake, heartbeats, and the frames
//! of its work units (see `brume_api::wire` for the protocol).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use brume_api::PROTOCOL_VERSION;
use brume_api::wire::{self, CONTROL, Challenge, FromProvider, ToProvider, Welcome, close};
use futures_util::{SinkExt, StreamExt};
use rand::Rng as _;
use tokio::sync::mpsc;

use crate::Shared;
use crate::metrics::OutcomeLabels;
use crate::sched::{After, ProviderEntry};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

fn close_msg(code: u16, reason: impl Into<String>) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into().into(),
    }))
}

async fn refuse(mut socket: WebSocket, code: u16, reason: String) {
    tracing::info!("provider handshake refused: {reason}");
    let _ = socket.send(close_msg(code, reason)).await;
    let _ = socket.flush().await;
}

pub(crate) async fn run(shared: Arc<Shared>, socket: WebSocket) {
    let Some((mut socket, hello, address)) = handshake(&shared, socket).await else {
        return;
    };
    let measured = match crate::measure::challenge(&shared, &mut socket, &hello.capabilities).await
    {
        Ok(m) => m,
        Err(why) => {
            tracing::warn!(provider = %address, "fitness challenge failed: {why}");
            refuse(socket, close::PROTOCOL_ERROR, why).await;
            return;
        }
    };
    let heartbeat = shared.config.heartbeat;
    let (tx, rx) = mpsc::unbounded_channel::<Message>();
    let (id, blob_token) = register(&shared, hello, measured, &address, &tx).await;
    let (sink, stream) = socket.split();
    let writer = tokio::spawn(write_frames(sink, rx));
    let reason = serve(&shared, id, &address, stream, &tx, heartbeat).await;
    tracing::info!(provider = %address, session = id, "provider session ended: {reason}");
    let why = if reason.starts_with("silent") {
        "stopped sending heartbeats".to_string()
    } else {
        "disconnected".to_string()
    };
    shared.with_sched(|s, after| {
        s.remove_provider(id, &why, after);
    });
    shared.registry.revoke_downloads(&blob_token);
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

/// The challenge, the provider's signed `Hello` and the checks on it
/// (version, signature, standing, capabilities). `None` once the provider
/// was refused or went away.
async fn handshake(
    shared: &Shared,
    mut socket: WebSocket,
) -> Option<(WebSocket, wire::Hello, String)> {
    let mut nonce = [0u8; 32];
    rand::rng().fill_bytes(&mut nonce);
    let challenge = ToProvider::Challenge(Challenge {
        broker_id: shared.broker_id.clone(),
        nonce: bytes::Bytes::copy_from_slice(&nonce),
        protocol: PROTOCOL_VERSION,
    });
    if socket
        .send(Message::Binary(challenge.encode(CONTROL)))
        .await
        .is_err()
    {
        return None;
    }
    let first = tokio::time::timeout(HELLO_TIMEOUT, async {
        loop {
            match socket.recv().await {
                Some(Ok(Message::Binary(b))) => return Some(b),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    })
    .await;
    let hello = match first {
        Ok(Some(b)) => match FromProvider::decode(&b) {
            Ok((_, FromProvider::Hello(h))) => h,
            Ok(_) => {
                let why = "expected Hello as the first frame".into();
                refuse(socket, close::PROTOCOL_ERROR, why).await;
                return None;
            }
            Err(e) => {
                refuse(socket, close::PROTOCOL_ERROR, format!("bad Hello: {e}")).await;
                return None;
            }
        },
        Ok(None) => return None,
        Err(_) => {
            refuse(socket, close::PROTOCOL_ERROR, "no Hello within 10 s".into()).await;
            return None;
        }
    };
    if hello.protocol != PROTOCOL_VERSION {
        let reason = format!(
            "protocol version {} is not supported; this broker speaks version {PROTOCOL_VERSION}",
            hello.protocol
        );
        refuse(socket, close::BAD_VERSION, reason).await;
        return None;
    }
    let message = wire::handshake_message(&shared.broker_id, &nonce);
    let address = match brume_identity::verify(message.as_bytes(), &hello.signature, &hello.address)
    {
        Ok(a) => a.to_string(),
        Err(e) => {
            let why = format!("handshake signature: {e}");
            refuse(socket, close::BAD_SIGNATURE, why).await;
            return None;
        }
    };
    // Banned (a proven cheat, or the operator) or suspended by the operator.
    if let Some(why) = shared.standings.refusal(&address).await {
        refuse(socket, close::BANNED, why).await;
        return None;
    }
    let caps = &hello.capabilities;
    if caps.slots == 0 || caps.memory_bytes == 0 {
        let reason = "capabilities: slots and memory_bytes must be greater than 0".to_string();
        refuse(socket, close::PROTOCOL_ERROR, reason).await;
        return None;
    }
    Some((socket, hello, address))
}

/// Registers a provider whose handshake passed: its session id, blob
/// token, `Welcome`, tier, stake, and its entry in the scheduler (replacing
/// an older session of the same address).
async fn register(
    shared: &Arc<Shared>,
    hello: wire::Hello,
    (measured, memory): (wire::MeasuredSpeed, wire::MeasuredMemory),
    address: &str,
    tx: &mpsc::UnboundedSender<Message>,
) -> (u64, String) {
    let id = shared
        .next_session
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut token = [0u8; 24];
    rand::rng().fill_bytes(&mut token);
    let blob_token = hex::encode(token);
    shared.registry.allow_downloads(blob_token.clone());
    let heartbeat = shared.config.heartbeat;
    let mut caps = hello.capabilities;
    caps.fitness_mips = measured.placed_mips;
    caps.memory_bytes = memory.placed_bytes;
    for note in [&measured.note, &memory.note].into_iter().flatten() {
        tracing::warn!(provider = %address, "placed by what was measured: {note}");
    }
    let welcome = ToProvider::Welcome(Welcome {
        session: id,
        heartbeat_ms: heartbeat.as_millis() as u64,
        blob_token: blob_token.clone(),
        measured: Some(measured.clone()),
        measured_memory: Some(memory.clone()),
    });
    let _ = tx.send(Message::Binary(welcome.encode(CONTROL)));
    tracing::info!(
        provider = %address, session = id, slots = caps.slots, mips = caps.fitness_mips,
        measured_mips = measured.measured_mips,
        region = %caps.region, "provider connected"
    );
    let (tier, org) = crate::trust::tier_of(shared, address, &caps).await;
    let mut entry = ProviderEntry::new(address.to_string(), caps, hello.price_ask, tx.clone());
    entry.claimed_mips = measured.claimed_mips;
    entry.claimed_memory_bytes = memory.claimed_bytes;
    entry.measured_mips = measured.measured_mips;
    entry.measured_mbps = measured.measured_mbps;
    entry.reserve_for_functions(shared.config.function_reserve_ppm);
    entry.tier = tier;
    entry.org = org;
    // Its stake, read once now and then by `chain::stake_watcher`.
    entry.stake = crate::chain::read_stake(shared, address).await.unwrap_or(0);
    entry.staked = entry.stake >= shared.config.chain.min_stake;
    shared.with_sched(|s, after| {
        // A provider that reconnects replaces its old session at once.
        let old: Vec<u64> = s
            .providers
            .iter()
            .filter(|(_, p)| p.address == address)
            .map(|(k, _)| *k)
            .collect();
        for old_id in old {
            if let Some(p) = s.remove_provider(old_id, "was replaced by a new session", after) {
                let _ = p.tx.send(close_msg(
                    close::PROTOCOL_ERROR,
                    "replaced by a new session",
                ));
            }
        }
        s.add_provider(id, entry, after);
    });
    (id, blob_token)
}

/// The one writer of a session: feeds every queued frame, then flushes
/// once.
async fn write_frames(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::UnboundedReceiver<Message>,
) {
    while let Some(first) = rx.recv().await {
        let closing = matches!(first, Message::Close(_));
        if sink.feed(first).await.is_err() {
            return;
        }
        if closing {
            let _ = sink.flush().await;
            return;
        }
        while let Ok(m) = rx.try_recv() {
            let closing = matches!(m, Message::Close(_));
            if sink.feed(m).await.is_err() {
                return;
            }
            if closing {
                let _ = sink.flush().await;
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

/// The read loop: frames, heartbeats and shutdown. Returns why it ended.
async fn serve(
    shared: &Shared,
    id: u64,
    address: &str,
    mut stream: futures_util::stream::SplitStream<WebSocket>,
    tx: &mpsc::UnboundedSender<Message>,
    heartbeat: Duration,
) -> String {
    let mut ping = tokio::time::interval(heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    let mut seq = 0u64;
    let shutdown = shared.shutdown.clone();
    let mut remeasure = crate::measure::Remeasure::new(shared.config.trust.remeasure());
    let mut pending = crate::receipts::Pending::default();
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    last_seen = Instant::now();
                    match FromProvider::decode(&b) {
                        Ok((_, FromProvider::MeasureDone(done))) => {
                            if let Err(why) = remeasure.done(shared, id, address, &done) {
                                let _ = tx.send(close_msg(close::PROTOCOL_ERROR, why.clone()));
                                break why;
                            }
                        }
                        Ok((channel, mut m)) => {
                            let mut checked = None;
                            if let FromProvider::Done(d) = &mut m {
                                store_outputs(shared, id, channel, d).await;
                                checked = check_job_receipt(shared, id, address, channel, d).await;
                            }
                            if let Err(v) = handle(shared, id, address, channel, m, tx, &mut pending, checked) {
                                let why = v.to_string();
                                let _ = tx.send(close_msg(close::PROTOCOL_ERROR, why.clone()));
                                break why;
                            }
                        }
                        Err(wire::WireError::UnknownKind(k)) => tracing::debug!("skipping frame of unknown kind {k}"),
                        Err(e) => {
                            let why = format!("malformed frame: {e}");
                            let _ = tx.send(close_msg(close::PROTOCOL_ERROR, why.clone()));
                            break why;
                        }
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => last_seen = Instant::now(),
                Some(Ok(Message::Text(_))) => {
                    let why = "text frames are not part of the protocol".to_string();
                    let _ = tx.send(close_msg(close::PROTOCOL_ERROR, why.clone()));
                    break why;
                }
                Some(Ok(Message::Close(frame))) => {
                    break format!("closed by provider ({})", frame.map(|f| f.reason.to_string()).unwrap_or_default());
                }
                Some(Err(e)) => break format!("connection error: {e}"),
                None => break "connection closed".to_string(),
            },
            _ = ping.tick() => {
                if let Err(e) = pending.check_overdue(shared) {
                    let why = e.to_string();
                    let _ = tx.send(close_msg(close::PROTOCOL_ERROR, why.clone()));
                    break why;
                }
                if last_seen.elapsed() > heartbeat * 3 {
                    let why = format!("silent for {:?} (3 heartbeats)", last_seen.elapsed());
                    let _ = tx.send(close_msg(close::HEARTBEAT_TIMEOUT, why.clone()));
                    break why;
                }
                seq += 1;
                let _ = tx.send(Message::Binary(ToProvider::Ping(seq).encode(CONTROL)));
            }
            () = remeasure.tick() => match remeasure.start(shared, id) {
                Ok(Some(frame)) => {
                    let _ = tx.send(Message::Binary(frame));
                }
                Ok(None) => {}
                Err(why) => {
                    let _ = tx.send(close_msg(close::PROTOCOL_ERROR, why.clone()));
                    break why;
                }
            },
            _ = shutdown.cancelled() => {
                let _ = tx.send(close_msg(close::SHUTDOWN, "broker shutting down"));
                break "broker shutting down".to_string();
            }
        }
    }
}

/// A frame that breaks the protocol: it ends the session.
#[derive(Debug, thiserror::Error)]
enum Violation {
    #[error("Hello after the handshake")]
    HelloAgain,
    #[error(transparent)]
    Receipts(#[from] crate::receipts::RootError),
}

/// A job's receipt, checked and bound to the broker's signed assignment on
/// a blocking thread: two elliptic-curve operations (about 150 µs) that
/// would otherwise hold the broker's worker thread while calls wait.
struct Checked {
    /// The attempt it was checked for.
    work: Arc<crate::work::Work>,
    attempt: u32,
    /// `None`: the provider's signature does not verify.
    receipt: Option<brume_api::receipt::SignedReceipt>,
}

/// [`Checked`] for a job's `Done` that carries its own signature; `None`
/// for anything else (an invocation's receipt is batched, and checked
/// inline).
async fn check_job_receipt(
    shared: &Shared,
    id: u64,
    address: &str,
    channel: u32,
    d: &wire::Done,
) -> Option<Checked> {
    if d.leaf.is_some() {
        return None;
    }
    let (work, attempt) = shared.lifecycle.read(|s| s.inflight_work(id, channel))?;
    if !work.spec.wants_receipt || work.spec.class == crate::work::Class::Sync {
        return None;
    }
    let receipt = brume_api::receipt::Receipt::new(&work.assignment(attempt), address, &d.outcome);
    let (signature, address) = (d.signature.clone(), address.to_string());
    let (identity, limits) = (shared.identity.clone(), work.spec.limits);
    let receipt = tokio::task::spawn_blocking(move || {
        brume_identity::verify(receipt.message().as_bytes(), &signature, &address).ok()?;
        let signed = brume_api::receipt::SignedReceipt {
            receipt,
            signature: format!("0x{}", hex::encode(&signature)),
            assignment: None,
        };
        Some(crate::verify::assigned_by(&identity, &signed, &limits))
    })
    .await
    // A check that panicked is done again inline.
    .ok()?;
    Some(Checked {
        work,
        attempt,
        receipt,
    })
}

/// Handles one frame. An `Err` ends the session with that reason.
#[allow(clippy::too_many_arguments)]
fn handle(
    shared: &Shared,
    id: u64,
    address: &str,
    channel: u32,
    msg: FromProvider,
    tx: &mpsc::UnboundedSender<Message>,
    pending: &mut crate::receipts::Pending,
    checked: Option<Checked>,
) -> Result<(), Violation> {
    match msg {
        FromProvider::Ping(n) => {
            let _ = tx.send(Message::Binary(ToProvider::Pong(n).encode(CONTROL)));
        }
        // Re-challenges' answers are taken in `serve`.
        FromProvider::Pong(_) | FromProvider::MeasureDone(_) => {}
        FromProvider::Hello(_) => return Err(Violation::HelloAgain),
        FromProvider::Cached(digests) => shared.with_sched(|s, _| s.add_cached(id, digests)),
        FromProvider::Draining => {
            tracing::info!(session = id, "provider is draining");
            shared.with_sched(|s, _| s.set_draining(id));
        }
        FromProvider::Paused(why) => {
            tracing::info!(session = id, %why, "provider paused");
            shared.with_sched(|s, after| s.set_paused(id, true, after));
        }
        FromProvider::Resumed => {
            tracing::info!(session = id, "provider resumed");
            shared.with_sched(|s, after| s.set_paused(id, false, after));
        }
        FromProvider::Accepted => shared.with_sched(|s, after| s.accepted(id, channel, after)),
        FromProvider::Progress(p) => {
            shared.with_sched(|s, after| s.progress(id, channel, p, after))
        }
        FromProvider::Root(root) => pending.close(shared, address, &root)?,
        FromProvider::Done(d) => done(shared, id, address, channel, *d, pending, checked)?,
        FromProvider::Refused(r) => shared.with_sched(|s, after| {
            tracing::debug!(session = id, reason = %r.reason, "refused: {}", r.message);
            s.refused(id, channel, &r.reason, after)
        }),
    }
    Ok(())
}

/// A result: its receipt checked (signed on its own, or its leaf added to
/// the session's batch), then handed to the scheduler. A job's receipt
/// comes `checked` already if the attempt is still the one checked.
#[allow(clippy::too_many_arguments)]
fn done(
    shared: &Shared,
    id: u64,
    address: &str,
    channel: u32,
    done: wire::Done,
    pending: &mut crate::receipts::Pending,
    checked: Option<Checked>,
) -> Result<(), Violation> {
    let wire::Done {
        outcome,
        signature,
        leaf,
    } = done;
    // A job's result is accepted only with a receipt that its
    // provider signed (checked here, outside the scheduler's lock);
    // an invocation's, with its receipt's leaf, signed in a batch.
    let inflight = shared.lifecycle.read(|s| s.inflight_work(id, channel));
    if let Some(leaf) = leaf {
        if !batched(
            shared, id, address, channel, inflight, &outcome, &leaf, pending,
        )? {
            return Ok(());
        }
    } else if let Some((work, _)) = &inflight
        && !work.spec.wants_receipt
    {
        return Err(crate::receipts::RootError::NoLeaf.into());
    } else if let Some((work, attempt)) = &inflight
        && let Some(c) = checked.filter(|c| Arc::ptr_eq(&c.work, work) && c.attempt == *attempt)
    {
        let Some(signed) = c.receipt else {
            tracing::warn!(session = id, work = %work.id, "a result whose receipt signature does not verify: retrying elsewhere");
            let why = format!("provider {address} returned a result with a bad receipt signature");
            shared.with_sched(|s, after| s.bad_result(id, channel, &why, after));
            return Ok(());
        };
        work.set_receipt(signed);
    } else if let Some((work, attempt)) = inflight
        && work.spec.wants_receipt
    {
        let receipt =
            brume_api::receipt::Receipt::new(&work.assignment(attempt), address, &outcome);
        if brume_identity::verify(receipt.message().as_bytes(), &signature, address).is_err() {
            tracing::warn!(session = id, work = %work.id, "a result whose receipt signature does not verify: retrying elsewhere");
            let why = format!("provider {address} returned a result with a bad receipt signature");
            shared.with_sched(|s, after| s.bad_result(id, channel, &why, after));
            return Ok(());
        }
        let signed = brume_api::receipt::SignedReceipt {
            receipt,
            signature: format!("0x{}", hex::encode(&signature)),
            assignment: None,
        };
        // A job's result is bound to the broker's signed assignment
        // (one signature per result). An audited invocation's is
        // signed only if an audit needs it for a proof, off the
        // response path.
        work.set_receipt(if work.spec.class == crate::work::Class::Sync {
            signed
        } else {
            crate::verify::assigned(shared, &signed, &work.spec.limits)
        });
    }
    let outcome = Box::new(outcome);
    let label = match outcome.as_ref() {
        wire::Outcome::Failed { code, .. } => code.clone(),
        _ => "ok".to_string(),
    };
    shared
        .metrics
        .work
        .get_or_create(&OutcomeLabels { outcome: label })
        .inc();
    shared.with_sched(|s, after: &mut After| s.done(id, channel, outcome, after));
    Ok(())
}

/// A batched receipt's leaf: rebuilt and compared when the broker still
/// has the work, then added to the session's batch. False when the result
/// is refused (a leaf that doesn't match it).
#[allow(clippy::too_many_arguments)]
fn batched(
    shared: &Shared,
    id: u64,
    address: &str,
    channel: u32,
    inflight: Option<(Arc<crate::work::Work>, u32)>,
    outcome: &wire::Outcome,
    leaf: &[u8],
    pending: &mut crate::receipts::Pending,
) -> Result<bool, Violation> {
    let Some((work, attempt)) = inflight else {
        pending.push(leaf, None)?;
        return Ok(true);
    };
    let receipt = brume_api::receipt::Receipt::new(&work.assignment(attempt), address, outcome);
    if brume_api::batch::leaf(&receipt).as_slice() != leaf {
        pending.push(leaf, None)?;
        tracing::warn!(session = id, work = %work.id, "a result whose receipt leaf does not match it: retrying elsewhere");
        let why =
            format!("provider {address} returned a result whose receipt leaf does not match it");
        shared.with_sched(|s, after| s.bad_result(id, channel, &why, after));
        return Ok(false);
    }
    pending.push(leaf, Some((receipt, work.spec.account.clone())))?;
    Ok(true)
}

/// Stores the output files of a result in the blob store, keeping only
/// their references in the outcome (`bytes` emptied), before the result is
/// handled. A file not asked for, or whose bytes don't match its sha256
/// and size, is dropped: the receipt (checked next, over the references)
/// then fails, and the work is retried elsewhere.
async fn store_outputs(shared: &Shared, id: u64, channel: u32, done: &mut wire::Done) {
    let wire::Outcome::Exited { outputs, .. } = &mut done.outcome else {
        return;
    };
    if outputs.is_empty() {
        return;
    }
    let asked = shared
        .lifecycle
        .read(|s| s.inflight_work(id, channel))
        .map(|(w, _)| w.spec.oci.outputs.clone())
        .unwrap_or_default();
    outputs.retain(|o| {
        use sha2::Digest as _;
        let ok = asked.contains(&o.path)
            && o.size == o.bytes.len() as u64
            && hex::encode(sha2::Sha256::digest(&o.bytes)) == o.sha256;
        if !ok {
            tracing::warn!(session = id, path = %o.path, "an output file not asked for, or whose sha256 or size is wrong: dropped");
        }
        ok
    });
    for o in outputs.iter_mut() {
        let bytes = std::mem::take(&mut o.bytes);
        if let Err(e) = shared.registry.put_module(o.sha256.clone(), bytes).await {
            tracing::error!(session = id, path = %o.path, "store an output file: {e}");
        }
    }
}
