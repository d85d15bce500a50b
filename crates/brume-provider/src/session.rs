//! The connection loop: connect, handshake, serve frames, reconnect.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use brume_api::wire::{
    self, Capabilities, FromProvider, Hello, ToProvider, WireError, close, handshake_message,
};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::work::{self, Outbox, SessionCtx};
use crate::{Connection, Fault, ProviderError, Shared};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = SplitSink<Ws, Message>;
type Stream = SplitStream<Ws>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Frames fed to the socket before one flush, at most.
const BATCH: usize = 64;

/// How one connection ended.
enum End {
    /// Drained or shut down: stop.
    Finished,
    /// Retrying cannot help.
    Fatal(ProviderError),
    /// Reconnect. `welcomed`: the handshake had completed (resets backoff).
    Lost { welcomed: bool, why: String },
}

fn lost(welcomed: bool, why: impl Into<String>) -> End {
    End::Lost {
        welcomed,
        why: why.into(),
    }
}

pub(crate) async fn run(shared: Arc<Shared>) -> Result<(), ProviderError> {
    let result = connect_loop(&shared).await;
    shared.set_connection(Connection::Stopped);
    result
}

async fn connect_loop(shared: &Arc<Shared>) -> Result<(), ProviderError> {
    let mut backoff = BACKOFF_MIN;
    loop {
        if shared.stop.is_cancelled() || shared.drain.is_cancelled() {
            return Ok(());
        }
        shared.set_connection(Connection::Connecting);
        if let Some(req) = &shared.config.hub {
            let check = crate::hub::check(shared, req).await;
            let ok = check.ok;
            shared.record_hub(check);
            if !ok {
                tokio::select! {
                    () = tokio::time::sleep(req.every) => continue,
                    () = shared.stop.cancelled() => return Ok(()),
                    () = shared.drain.cancelled() => return Ok(()),
                }
            }
        }
        match connect_once(shared).await {
            End::Finished => return Ok(()),
            End::Fatal(e) => return Err(e),
            End::Lost { welcomed, why } => {
                if welcomed {
                    backoff = BACKOFF_MIN;
                }
                tracing::warn!(broker = %shared.config.broker_url, %why, "connection lost; reconnecting");
            }
        }
        let delay = jitter(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.stop.cancelled() => return Ok(()),
            () = shared.drain.cancelled() => return Ok(()),
        }
    }
}

/// A delay between half and all of `d`, randomly.
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos()),
    );
    let frac = (h.finish() % 1000) as f64 / 1000.0;
    d.mul_f64(0.5 + frac / 2.0)
}

enum Incoming {
    Frame(u32, ToProvider),
    Skip,
    Closed(Option<(u16, String)>),
    Broken(String),
    Malformed(String),
}

fn classify(msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> Incoming {
    match msg {
        None => Incoming::Closed(None),
        Some(Err(e)) => Incoming::Broken(e.to_string()),
        Some(Ok(Message::Binary(b))) => match ToProvider::decode(&b) {
            Ok((ch, m)) => Incoming::Frame(ch, m),
            Err(WireError::UnknownKind(k)) => {
                tracing::debug!(kind = k, "skipping a frame of unknown kind");
                Incoming::Skip
            }
            Err(e) => Incoming::Malformed(e.to_string()),
        },
        Some(Ok(Message::Close(frame))) => {
            Incoming::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())))
        }
        Some(Ok(Message::Text(_))) => Incoming::Malformed("unexpected text message".into()),
        Some(Ok(_)) => Incoming::Skip, // WebSocket ping/pong, raw frames
    }
}

/// What a broker's close means for us.
fn closed(shared: &Shared, frame: Option<(u16, String)>, welcomed: bool) -> End {
    let Some((code, reason)) = frame else {
        return lost(welcomed, "connection closed");
    };
    tracing::warn!(broker = %shared.config.broker_url, code, %reason, "broker closed the connection");
    if code == close::BAD_VERSION || code == close::BAD_SIGNATURE {
        return End::Fatal(ProviderError::Rejected { code, reason });
    }
    lost(welcomed, format!("closed by broker: {code} {reason}"))
}

fn close_msg(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    }))
}

/// Reads the next protocol frame during the handshake.
async fn handshake_frame(shared: &Shared, stream: &mut Stream) -> Result<(u32, ToProvider), End> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let msg = tokio::select! {
            m = tokio::time::timeout_at(deadline, stream.next()) => match m {
                Ok(m) => m,
                Err(_) => return Err(lost(false, "handshake timed out")),
            },
            () = shared.stop.cancelled() => return Err(End::Finished),
        };
        match classify(msg) {
            Incoming::Frame(ch, m) => return Ok((ch, m)),
            Incoming::Skip => {}
            Incoming::Closed(f) => return Err(closed(shared, f, false)),
            Incoming::Broken(e) => return Err(lost(false, e)),
            Incoming::Malformed(e) => return Err(lost(false, format!("malformed frame: {e}"))),
        }
    }
}

async fn connect_once(shared: &Arc<Shared>) -> End {
    let url = shared.ws_url.as_str();
    let tls = Some(shared.ws_tls.clone());
    let connect = tokio_tungstenite::connect_async_tls_with_config(url, None, true, tls);
    let ws = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect) => match r {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => {
                let why = brume_tls::explain(&e).unwrap_or_else(|| e.to_string());
                return lost(false, format!("connect {url}: {why}"));
            }
            Err(_) => return lost(false, format!("connect {url}: timed out")),
        },
        () = shared.stop.cancelled() => return End::Finished,
    };
    let (mut sink, mut stream) = ws.split();

    let challenge = match handshake_frame(shared, &mut stream).await {
        Ok((_, ToProvider::Challenge(c))) => c,
        Ok((_, other)) => return lost(false, format!("expected Challenge, got {other:?}")),
        Err(end) => return end,
    };
    if challenge.protocol != brume_api::PROTOCOL_VERSION {
        tracing::warn!(
            broker = challenge.protocol,
            ours = brume_api::PROTOCOL_VERSION,
            "broker speaks another protocol version"
        );
    }
    let message = handshake_message(&challenge.broker_id, &challenge.nonce);
    let signature = match shared.identity.sign_message(message.as_bytes()) {
        Ok(s) => s,
        Err(e) => return End::Fatal(ProviderError::Internal(format!("sign handshake: {e}"))),
    };
    let config = &shared.config;
    let hello = FromProvider::Hello(Hello {
        protocol: brume_api::PROTOCOL_VERSION,
        address: shared.address.clone(),
        signature: Bytes::copy_from_slice(&signature),
        capabilities: Capabilities {
            slots: config.slots,
            memory_bytes: config.memory_bytes,
            fitness_mips: shared.fitness_mips,
            region: config.region.clone(),
            allowed_services: config.allowed_services.clone(),
            cached: shared.cached_digests(),
            org: config.org.clone(),
            attestation: config.attestation.clone(),
            containers: matches!(shared.containers, Some(Ok(_))),
            gpus: shared.gpus.clone(),
            network: config.allow_network && matches!(shared.containers, Some(Ok(_))),
            hours: config
                .idle
                .as_ref()
                .and_then(|p| p.hours())
                .map(|(a, b)| [a, b]),
            location: config
                .location
                .map(|(lat, lon)| [(lat * 1e6).round() as i32, (lon * 1e6).round() as i32]),
            policy: config.policy,
        },
        price_ask: config.ask(),
    });
    if let Err(e) = sink
        .send(Message::Binary(hello.encode(wire::CONTROL)))
        .await
    {
        return lost(false, format!("send Hello: {e}"));
    }
    let welcome = loop {
        match handshake_frame(shared, &mut stream).await {
            Ok((_, ToProvider::Welcome(w))) => break w,
            Ok((ch, ToProvider::Measure(m))) => {
                let done = measure(shared, &m).await;
                let frame = FromProvider::MeasureDone(done).encode(ch);
                if let Err(e) = sink.send(Message::Binary(frame)).await {
                    return lost(false, format!("send MeasureDone: {e}"));
                }
            }
            Ok((ch, ToProvider::Ping(n))) => {
                let pong = FromProvider::Pong(n).encode(ch);
                if let Err(e) = sink.send(Message::Binary(pong)).await {
                    return lost(false, format!("send Pong: {e}"));
                }
            }
            Ok((_, other)) => return lost(false, format!("expected Welcome, got {other:?}")),
            Err(end) => return end,
        }
    };
    tracing::info!(
        broker = %config.broker_url,
        session = welcome.session,
        heartbeat_ms = welcome.heartbeat_ms,
        "connected"
    );
    if let Some(m) = &welcome.measured
        && let Some(note) = &m.note
    {
        tracing::warn!(
            claimed_mips = m.claimed_mips,
            measured_mips = m.measured_mips,
            placed_mips = m.placed_mips,
            "the broker places this provider by its measured speed: {note}"
        );
    }
    if let Some(m) = &welcome.measured_memory
        && let Some(note) = &m.note
    {
        tracing::warn!(
            claimed_bytes = m.claimed_bytes,
            granted_bytes = m.granted_bytes,
            placed_bytes = m.placed_bytes,
            "the broker places this provider by the memory its sandbox was granted: {note}"
        );
    }
    shared.connected_since_ms.store(now_ms(), Ordering::Relaxed);

    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(sink, rx));
    let ctx = SessionCtx {
        out: tx,
        blob_token: welcome.blob_token.into(),
        roots: Arc::new(crate::roots::Roots::new(challenge.broker_id.clone())),
    };
    shared.set_connection(if shared.draining.load(Ordering::Relaxed) {
        Connection::Draining
    } else {
        Connection::Connected
    });
    let hb = Duration::from_millis(welcome.heartbeat_ms.max(10));
    let end = serve(shared, &ctx, &mut stream, hb).await;
    // Stop the writer once it has sent what is queued (a Close, usually).
    drop(ctx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    if matches!(end, End::Finished) {
        // Read the broker's close reply, so the close handshake completes.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Some(Ok(m)) = stream.next().await {
                if m.is_close() {
                    break;
                }
            }
        })
        .await;
    }
    end
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The one owner of the socket's sink: feeds every queued frame, then
/// flushes once.
async fn write_loop(mut sink: Sink, mut rx: mpsc::UnboundedReceiver<Message>) {
    while let Some(first) = rx.recv().await {
        let mut closing = first.is_close();
        if sink.feed(first).await.is_err() {
            return;
        }
        let mut n = 1;
        while !closing && n < BATCH {
            let Ok(m) = rx.try_recv() else { break };
            closing = m.is_close();
            if sink.feed(m).await.is_err() {
                return;
            }
            n += 1;
        }
        if sink.flush().await.is_err() || closing {
            return;
        }
    }
}

/// Serves one welcomed connection until it ends.
async fn serve(shared: &Arc<Shared>, ctx: &SessionCtx, stream: &mut Stream, hb: Duration) -> End {
    let out: &Outbox = &ctx.out;
    let mut ticker = tokio::time::interval_at(Instant::now() + hb, hb);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_rx = Instant::now();
    let mut ping = 0u64;
    let mut tasks: JoinSet<u32> = JoinSet::new();
    let mut channels: HashMap<u32, AbortHandle> = HashMap::new();
    let mut drain_deadline: Option<Instant> = None;
    let mut hub_ok = shared.hub_ok.subscribe();
    let mut paused = shared.paused.subscribe();
    if let Some(why) = paused.borrow_and_update().clone() {
        work::send(out, wire::CONTROL, &FromProvider::Paused(why));
    }
    let mut roots_tick = tokio::time::interval(crate::roots::ROOT_EVERY / 2);
    roots_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let finish = |code: CloseCode, reason: &str| {
        // What was answered is signed before the session ends.
        ctx.roots.flush(shared, out, true);
        let _ = out.send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_owned().into(),
        })));
    };

    loop {
        if drain_deadline.is_some() && tasks.is_empty() {
            tracing::info!("drained");
            finish(CloseCode::Normal, "drained");
            return End::Finished;
        }
        tokio::select! {
            msg = stream.next() => {
                last_rx = Instant::now();
                match classify(msg) {
                    Incoming::Frame(ch, m) => on_frame(shared, ctx, &mut tasks, &mut channels, ch, m),
                    Incoming::Skip => {}
                    Incoming::Closed(f) => return closed(shared, f, true),
                    Incoming::Broken(e) => return lost(true, e),
                    Incoming::Malformed(e) => {
                        tracing::error!(error = %e, "malformed frame from broker; closing");
                        let _ = out.send(close_msg(close::PROTOCOL_ERROR, "malformed frame"));
                        return lost(true, format!("malformed frame: {e}"));
                    }
                }
            }
            Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                match res {
                    Ok(ch) => { channels.remove(&ch); }
                    Err(e) if e.is_panic() => tracing::error!(error = %e, "execution task panicked"),
                    Err(_) => {} // cancelled: already forgotten
                }
            }
            _ = roots_tick.tick() => ctx.roots.flush(shared, out, false),
            Ok(()) = paused.changed() => {
                let msg = match paused.borrow_and_update().clone() {
                    Some(why) => FromProvider::Paused(why),
                    None => FromProvider::Resumed,
                };
                work::send(out, wire::CONTROL, &msg);
            }
            _ = hub_ok.wait_for(|ok| !*ok), if shared.config.hub.is_some() => {
                finish(CloseCode::Normal, "the broker's hub wallet failed this provider's check");
                return lost(true, "the broker's hub wallet failed a re-check");
            }
            _ = ticker.tick() => {
                if last_rx.elapsed() >= hb * 3 {
                    let _ = out.send(close_msg(close::HEARTBEAT_TIMEOUT, "no heartbeat"));
                    return lost(true, format!("nothing received for {} ms", (hb * 3).as_millis()));
                }
                ping += 1;
                work::send(out, wire::CONTROL, &FromProvider::Ping(ping));
            }
            () = shared.drain.cancelled(), if drain_deadline.is_none() => {
                tracing::info!(in_flight = tasks.len(), grace_s = shared.config.drain_grace.as_secs(), "draining");
                shared.draining.store(true, Ordering::Relaxed);
                shared.set_connection(Connection::Draining);
                work::send(out, wire::CONTROL, &FromProvider::Draining);
                drain_deadline = Some(Instant::now() + shared.config.drain_grace);
            }
            () = sleep_until(drain_deadline), if drain_deadline.is_some() => {
                tracing::warn!(aborted = tasks.len(), "drain grace over; aborting in-flight work");
                tasks.abort_all();
                finish(CloseCode::Normal, "drained");
                return End::Finished;
            }
            () = shared.stop.cancelled() => {
                finish(CloseCode::Away, "shutdown");
                return End::Finished;
            }
        }
    }
    // `tasks` drops here on every path: in-flight executions are aborted.
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn on_frame(
    shared: &Arc<Shared>,
    ctx: &SessionCtx,
    tasks: &mut JoinSet<u32>,
    channels: &mut HashMap<u32, AbortHandle>,
    ch: u32,
    msg: ToProvider,
) {
    match msg {
        ToProvider::Ping(n) => work::send(&ctx.out, ch, &FromProvider::Pong(n)),
        ToProvider::Pong(_) => {}
        ToProvider::Assign(assign) => {
            if ch == wire::CONTROL || channels.contains_key(&ch) {
                tracing::warn!(channel = ch, "Assign on a channel in use; ignored");
                return;
            }
            match work::admit(shared, &assign) {
                Err(refused) => {
                    if matches!(refused.reason.as_str(), "no_capacity" | "draining") {
                        tracing::debug!(channel = ch, reason = %refused.reason, "refused");
                    } else {
                        // A policy decision the operator may want to see.
                        tracing::info!(channel = ch, reason = %refused.reason, message = %refused.message, "refused");
                    }
                    work::send(&ctx.out, ch, &FromProvider::Refused(refused));
                }
                Ok((digest, reservation)) => {
                    let handle = match shared.config.fault {
                        Some(f @ (Fault::Stall | Fault::Drop)) => {
                            work::send(&ctx.out, ch, &FromProvider::Accepted);
                            tasks.spawn(work::misbehave(f, ch, reservation))
                        }
                        _ => {
                            let job = assign.progress_ms.is_some();
                            if assign.lease {
                                // A lease's hold: running until cancelled.
                                work::send(&ctx.out, ch, &FromProvider::Accepted);
                            }
                            let run = work::execute(
                                shared.clone(),
                                ctx.clone(),
                                ch,
                                assign,
                                digest,
                                reservation,
                            );
                            if job {
                                // Jobs: the requester sees `running` at once;
                                // they run below functions' priority.
                                work::send(&ctx.out, ch, &FromProvider::Accepted);
                                tasks.spawn(shared.batch.run(run, ch))
                            } else {
                                tasks.spawn(work::ack_if_slow(run, ctx.out.clone(), ch))
                            }
                        }
                    };
                    channels.insert(ch, handle);
                }
            }
        }
        ToProvider::Cancel => {
            if let Some(h) = channels.remove(&ch) {
                tracing::debug!(channel = ch, "cancelled");
                h.abort();
            }
        }
        ToProvider::Measure(m) => {
            let (shared, out) = (shared.clone(), ctx.out.clone());
            tasks.spawn(async move {
                let done = measure(&shared, &m).await;
                work::send(&out, ch, &FromProvider::MeasureDone(done));
                ch
            });
        }
        ToProvider::Challenge(_) | ToProvider::Welcome(_) => {
            tracing::warn!(channel = ch, "unexpected handshake frame; ignored");
        }
    }
}

/// Runs the broker's fitness challenge (the programs compiled at start).
async fn measure(shared: &Shared, m: &wire::Measure) -> wire::MeasureDone {
    let Some(token) = &m.probe else {
        return brume_exec::fitness::answer(&shared.sandbox, &shared.challenge, m).await;
    };
    // A bandwidth probe: the blob comes over HTTP, off this socket.
    let url = format!(
        "{}/v1/provider/probe/{token}",
        shared.config.broker_url.trim_end_matches('/')
    );
    let fetched = async {
        let resp = shared.http.get(&url).send().await?.error_for_status()?;
        resp.bytes().await
    };
    let mut m = m.clone();
    match fetched.await {
        Ok(blob) => m.blob = blob,
        Err(e) => tracing::warn!("the bandwidth probe: {e}"),
    }
    brume_exec::fitness::answer(&shared.sandbox, &shared.challenge, &m).await
}
