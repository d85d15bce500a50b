//! A scripted provider, for tests: a protocol-level fake provider. It
//! speaks the provider protocol ([`brume_api::wire`]) to a real broker,
//! and answers each assignment exactly as the test says.
//!
//! It signs its handshake and its receipts with a real identity, and
//! answers the broker's heartbeat pings in the background; everything else
//! (accepting, progress, results, refusals, going away) is up to the test.
//!
//! ```no_run
//! # async fn demo(net: &brume_localnet::LocalNet) {
//! use brume_localnet::scripted::{ScriptedProvider, exited};
//! let mut p = ScriptedProvider::connect(net.url(), brume_identity::Identity::random()).await;
//! let (channel, assign) = p.next_assign().await;
//! p.accept(channel);
//! p.done(channel, exited("output", 1_000));
//! # }
//! ```
//!
//! # Panics
//!
//! Like an assertion, every method panics, naming what it waited for, when
//! the broker does not do what the protocol says within [`DEADLINE`] (or
//! closes the connection, or sends a frame the provider cannot take). Meant
//! for tests: a panic fails the test with the reason.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::time::Duration;

use brume_api::receipt::Receipt;
use brume_api::wire::{
    self, Assign, CONTROL, Capabilities, Done, FromProvider, Hello, Outcome, Progress, Refused,
    ToProvider,
};
use brume_api::{PROTOCOL_VERSION, Usage};
use brume_identity::Identity;
use brume_tls::Trust;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Slots a scripted provider offers unless told otherwise.
pub const SLOTS: u32 = 16;

/// How long a scripted provider waits for the broker before it panics.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A bandwidth probe's blob, fetched from the broker over HTTP.
async fn fetch_probe(broker_url: &str, trust: &Trust, token: &str) -> Bytes {
    let url = format!(
        "{}/v1/provider/probe/{token}",
        broker_url.trim_end_matches('/')
    );
    let client = trust
        .reqwest(reqwest::Client::builder())
        .expect("a TLS configuration")
        .build()
        .expect("an HTTP client");
    let fetch = async {
        client
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await
    };
    within("the bandwidth probe's blob", fetch)
        .await
        .unwrap_or_else(|e| panic!("fetch {url}: {e}"))
}

/// `fut`'s output, or a panic naming `what` after [`DEADLINE`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {DEADLINE:?}"))
}

/// A provider driven by a test; see the [module docs](self).
pub struct ScriptedProvider {
    /// The key it signs its handshake and receipts with.
    pub identity: Identity,
    /// Its address as its Hello gave it (and as its receipts name it).
    pub address: String,
    out: mpsc::UnboundedSender<Message>,
    frames: mpsc::UnboundedReceiver<(u32, ToProvider)>,
    /// Frames read while waiting for something else.
    backlog: VecDeque<(u32, ToProvider)>,
    /// The assignment on each channel, for the receipts.
    assigns: HashMap<u32, Assign>,
    /// Channels the broker sent `Cancel` on.
    cancelled: Vec<u32>,
    next_ping: u64,
    /// The broker's address (batch roots name it), and the next batch.
    broker: String,
    batch: std::sync::atomic::AtomicU64,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl fmt::Debug for ScriptedProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedProvider")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Drop for ScriptedProvider {
    /// Going away without a word: the connection just drops.
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// `Exited` with code 0, `stdout`, and `fuel` used.
pub fn exited(stdout: &str, fuel: u64) -> Outcome {
    Outcome::Exited {
        exit_code: 0,
        stdout: Bytes::copy_from_slice(stdout.as_bytes()),
        stderr: Bytes::new(),
        usage: Usage {
            fuel,
            ..Usage::default()
        },
        outputs: Vec::new(),
    }
}

impl ScriptedProvider {
    /// Connects with [`SLOTS`] slots; returns once the broker has it in
    /// its scheduler (it may be assigned work from then on).
    pub async fn connect(broker_url: &str, identity: Identity) -> ScriptedProvider {
        Self::connect_with_slots(broker_url, identity, SLOTS).await
    }

    /// As [`ScriptedProvider::connect`], offering `slots` slots.
    pub async fn connect_with_slots(
        broker_url: &str,
        identity: Identity,
        slots: u32,
    ) -> ScriptedProvider {
        Self::connect_with_tls(broker_url, identity, slots, &Trust::default()).await
    }

    /// As [`ScriptedProvider::connect_with_slots`], trusting `trust` for an
    /// `https://` broker.
    pub async fn connect_with_tls(
        broker_url: &str,
        identity: Identity,
        slots: u32,
        trust: &Trust,
    ) -> ScriptedProvider {
        let ws = match broker_url.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => broker_url.replacen("http://", "ws://", 1),
        };
        let url = format!("{}/v1/provider/connect", ws.trim_end_matches('/'));
        let tls = trust.ws_connector().expect("a TLS connector");
        let connect = tokio_tungstenite::connect_async_tls_with_config(&url, None, true, Some(tls));
        let (mut ws, _) = within("the provider's WebSocket connects", connect)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let address = identity.address().to_string();

        let challenge = match within("a Challenge", next_binary(&mut ws)).await {
            (_, ToProvider::Challenge(c)) => c,
            (_, other) => panic!("expected a Challenge, got {other:?}"),
        };
        let message = wire::handshake_message(&challenge.broker_id, &challenge.nonce);
        let signature = identity
            .sign_message(message.as_bytes())
            .expect("sign the handshake");
        let hello = FromProvider::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            address: address.clone(),
            signature: Bytes::copy_from_slice(&signature),
            capabilities: Capabilities {
                slots,
                memory_bytes: 1 << 40,
                fitness_mips: 1_000,
                region: "local".into(),
                allowed_services: None,
                cached: Vec::new(),
                org: None,
                attestation: None,
                containers: false,
                gpus: Default::default(),
                network: false,
                hours: None,
                location: None,
                policy: Default::default(),
            },
            price_ask: 0,
        });
        ws.send(Message::Binary(hello.encode(CONTROL)))
            .await
            .expect("send Hello");
        loop {
            match within("a Welcome", next_binary(&mut ws)).await {
                (_, ToProvider::Welcome(_)) => break,
                // The broker's fitness challenge: answered honestly, in a
                // real sandbox (one for every scripted provider).
                (ch, ToProvider::Measure(mut m)) => {
                    if let Some(token) = &m.probe {
                        m.blob = fetch_probe(broker_url, trust, token).await;
                    }
                    let (sandbox, challenges) = challenger();
                    let done = FromProvider::MeasureDone(
                        brume_exec::fitness::answer(sandbox, challenges, &m).await,
                    );
                    ws.send(Message::Binary(done.encode(ch)))
                        .await
                        .expect("send MeasureDone");
                }
                (ch, ToProvider::Ping(n)) => ws
                    .send(Message::Binary(FromProvider::Pong(n).encode(ch)))
                    .await
                    .expect("send Pong"),
                (_, other) => panic!("expected a Welcome, got {other:?}"),
            }
        }

        let (mut sink, mut stream) = ws.split();
        let (out, mut to_send) = mpsc::unbounded_channel::<Message>();
        let writer = tokio::spawn(async move {
            while let Some(m) = to_send.recv().await {
                let closing = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || closing {
                    return;
                }
            }
        });
        let (frames_tx, frames) = mpsc::unbounded_channel();
        let pong = out.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Binary(b) = msg else {
                    if matches!(msg, Message::Close(_)) {
                        return;
                    }
                    continue;
                };
                match ToProvider::decode(&b) {
                    // Heartbeats are answered here, whatever the test does.
                    Ok((ch, ToProvider::Ping(n))) => {
                        let _ = pong.send(Message::Binary(FromProvider::Pong(n).encode(ch)));
                    }
                    Ok(frame) => {
                        if frames_tx.send(frame).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        eprintln!("scripted provider: a malformed frame from the broker: {e}");
                        return;
                    }
                }
            }
        });
        let mut p = ScriptedProvider {
            identity,
            address,
            out,
            frames,
            backlog: VecDeque::new(),
            assigns: HashMap::new(),
            cancelled: Vec::new(),
            next_ping: 0,
            broker: challenge.broker_id.clone(),
            batch: Default::default(),
            reader,
            writer,
        };
        // The broker reads frames only once the provider is registered, so
        // the answer to this ping means it is.
        p.sync().await;
        p
    }

    fn send(&self, channel: u32, frame: &FromProvider) {
        let _ = self.out.send(Message::Binary(frame.encode(channel)));
    }

    async fn recv(&mut self) -> (u32, ToProvider) {
        if let Some(f) = self.backlog.pop_front() {
            return f;
        }
        within("a frame from the broker", self.frames.recv())
            .await
            .unwrap_or_else(|| {
                panic!(
                    "provider {}: the broker closed the connection",
                    self.address
                )
            })
    }

    /// The next assignment, and its channel.
    pub async fn next_assign(&mut self) -> (u32, Assign) {
        loop {
            match self.recv().await {
                (ch, ToProvider::Assign(a)) => {
                    self.assigns.insert(ch, (*a).clone());
                    return (ch, *a);
                }
                (ch, ToProvider::Cancel) => self.cancelled.push(ch),
                (_, ToProvider::Pong(_)) => {}
                (ch, other) => panic!("unexpected frame on channel {ch}: {other:?}"),
            }
        }
    }

    /// Waits until the broker has handled every frame sent so far (a ping
    /// is answered in order, after them). Frames that arrive meanwhile
    /// are kept for [`ScriptedProvider::next_assign`].
    pub async fn sync(&mut self) {
        self.next_ping += 1;
        let n = self.next_ping;
        self.send(CONTROL, &FromProvider::Ping(n));
        loop {
            let frame = within("the broker's Pong", self.frames.recv())
                .await
                .unwrap_or_else(|| {
                    panic!(
                        "provider {}: the broker closed the connection",
                        self.address
                    )
                });
            match frame {
                (_, ToProvider::Pong(m)) if m == n => return,
                other => self.backlog.push_back(other),
            }
        }
    }

    /// Assignments sent to it and not yet taken with `next_assign`, as of
    /// now (after a [`ScriptedProvider::sync`]).
    pub async fn assigns_waiting(&mut self) -> usize {
        self.sync().await;
        self.backlog
            .iter()
            .filter(|(_, f)| matches!(f, ToProvider::Assign(_)))
            .count()
    }

    /// Whether the broker sent `Cancel` on `channel` (as of the last
    /// [`ScriptedProvider::sync`]).
    pub fn told_to_cancel(&self, channel: u32) -> bool {
        self.cancelled.contains(&channel)
            || self
                .backlog
                .iter()
                .any(|(ch, f)| *ch == channel && matches!(f, ToProvider::Cancel))
    }

    /// `Accepted` for the assignment on `channel`.
    pub fn accept(&self, channel: u32) {
        self.send(channel, &FromProvider::Accepted);
    }

    /// `Progress` with `fuel` used so far on `channel`.
    pub fn progress(&self, channel: u32, fuel: u64) {
        let p = Progress {
            fuel,
            stderr: Bytes::new(),
        };
        self.send(channel, &FromProvider::Progress(p));
    }

    /// `Refused` with `reason` (a wire refusal reason, e.g. `no_capacity`)
    /// for the assignment on `channel`.
    pub fn refuse(&self, channel: u32, reason: &str) {
        let r = Refused {
            reason: reason.into(),
            message: format!("scripted refusal: {reason}"),
        };
        self.send(channel, &FromProvider::Refused(r));
    }

    /// The result of the assignment on `channel`, with a correctly signed
    /// receipt (for an invocation, in a batch of its own, signed at once).
    pub fn done(&self, channel: u32, outcome: Outcome) {
        let assign = self
            .assigns
            .get(&channel)
            .unwrap_or_else(|| panic!("no assignment on channel {channel}"));
        self.done_for(channel, assign, outcome);
    }

    /// A result for `assign` on `channel`, whichever session or channel it
    /// was assigned on (to script late or stray results).
    pub fn done_for(&self, channel: u32, assign: &Assign, outcome: Outcome) {
        let receipt = Receipt::new(assign, &self.address, &outcome);
        if assign.batched_receipt {
            let leaf = brume_api::batch::leaf(&receipt);
            let done = Done {
                outcome,
                signature: Bytes::new(),
                leaf: Some(Bytes::copy_from_slice(&leaf)),
            };
            self.send(channel, &FromProvider::Done(Box::new(done)));
            let batch = self
                .batch
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let claim = brume_api::batch::RootClaim {
                provider: self.address.clone(),
                broker: self.broker.clone(),
                batch,
                size: 1,
                root: hex::encode(leaf),
            };
            let signature = self
                .identity
                .sign_message(claim.message().as_bytes())
                .expect("sign the root");
            let root = wire::Root {
                batch,
                size: 1,
                root: Bytes::copy_from_slice(&leaf),
                signature: Bytes::copy_from_slice(&signature),
            };
            self.send(CONTROL, &FromProvider::Root(root));
            return;
        }
        let signature = self
            .identity
            .sign_message(receipt.message().as_bytes())
            .expect("sign the receipt");
        let done = Done {
            outcome,
            signature: Bytes::copy_from_slice(&signature),
            leaf: None,
        };
        self.send(channel, &FromProvider::Done(Box::new(done)));
    }

    /// Closes the connection after everything sent so far: a close frame
    /// goes out behind the queued frames, then the socket is dropped.
    pub async fn close(mut self) {
        let _ = self.out.send(Message::Close(None));
        let _ = within("the close frame goes out", &mut self.writer).await;
    }
}

/// The next binary frame of the handshake, skipping WebSocket pings.
async fn next_binary<S>(ws: &mut S) -> (u32, ToProvider)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                return ToProvider::decode(&b).expect("a well-formed frame");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("the handshake ended: {other:?}"),
        }
    }
}

/// The sandbox and the compiled challenge every scripted provider answers
/// the broker's fitness challenge with.
fn challenger() -> &'static (brume_sandbox::Sandbox, brume_exec::fitness::Challenges) {
    static CHALLENGER: std::sync::OnceLock<(
        brume_sandbox::Sandbox,
        brume_exec::fitness::Challenges,
    )> = std::sync::OnceLock::new();
    CHALLENGER.get_or_init(|| {
        let sandbox = brume_sandbox::Sandbox::new(brume_sandbox::SandboxConfig {
            max_concurrent_instances: 8,
            ..brume_sandbox::SandboxConfig::default()
        })
        .expect("a sandbox for fitness challenges");
        let challenges =
            brume_exec::fitness::Challenges::load(&sandbox).expect("the challenges compile");
        (sandbox, challenges)
    })
}
