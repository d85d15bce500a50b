//! The provider protocol: binary WebSocket messages between a broker and a
//! provider, on `GET /v1/provider/connect`.
//!
//! Every WebSocket binary message is one frame:
//!
//! ```text
//! +----------------+--------+---------------------------+
//! | channel: u32be | kind:u8| payload: MessagePack map  |
//! +----------------+--------+---------------------------+
//! ```
//!
//! Channel 0 is the control channel (handshake, heartbeats, cache reports,
//! drain). The broker opens one channel per attempt of a work unit with
//! [`ToProvider::Assign`]; everything about that attempt (accept, progress,
//! the result, a cancel) travels on it, so many work units share one
//! connection, as in SONM's multiplexed channels. A channel id is never
//! reused within a session. Receivers skip frames of unknown kinds (newer
//! peers) but refuse malformed ones.
//!
//! The handshake:
//! 1. broker → [`Challenge`] (its id, a random nonce, its protocol version);
//! 2. provider → [`Hello`]: its address and an EIP-191 signature over
//!    [`handshake_message`], plus capabilities and price ask;
//! 3. broker → [`Welcome`], or a WebSocket close with a reason.
//!
//! An attempt ends with [`Done`] on its channel. A job's `Done` carries its
//! receipt's signature; an invocation's carries its receipt's leaf, and
//! the provider signs its batches of leaves with [`Root`] on channel 0
//! ([`crate::batch`]).

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::rest::Price;
use crate::{Limits, Profile, ServiceKind, Usage, WorkId};

/// Channel 0: control messages.
pub const CONTROL: u32 = 0;

/// WebSocket close codes the broker uses, with a human reason alongside.
pub mod close {
    /// Protocol version not spoken by this broker.
    pub const BAD_VERSION: u16 = 4000;
    /// The handshake signature does not recover to the claimed address.
    pub const BAD_SIGNATURE: u16 = 4001;
    /// A malformed or unexpected frame.
    pub const PROTOCOL_ERROR: u16 = 4002;
    /// No heartbeat for too long.
    pub const HEARTBEAT_TIMEOUT: u16 = 4003;
    /// The broker is shutting down.
    pub const SHUTDOWN: u16 = 4004;
    /// The provider's address is banned (a proven cheat, or the operator).
    pub const BANNED: u16 = 4005;
}

/// The text a provider signs (EIP-191 `personal_sign`) to prove its address.
/// It binds the signature to this broker and this connection's nonce, so it
/// can be replayed neither to another broker nor later.
pub fn handshake_message(broker_id: &str, nonce: &[u8]) -> String {
    let mut hex = String::with_capacity(nonce.len() * 2);
    for b in nonce {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("brume provider connect\nbroker: {broker_id}\nnonce: 0x{hex}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub broker_id: String,
    /// 32 random bytes, fresh per connection.
    pub nonce: Bytes,
    pub protocol: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// `0x`-prefixed Ethereum address.
    pub address: String,
    /// 65-byte `r || s || v` EIP-191 signature over [`handshake_message`].
    pub signature: Bytes,
    pub capabilities: Capabilities,
    pub price_ask: Price,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Concurrent executions this provider takes.
    pub slots: u32,
    /// Memory it offers across all slots, in bytes.
    pub memory_bytes: u64,
    /// Millions of wasm instructions per second per core (start-up test).
    pub fitness_mips: u64,
    pub region: String,
    /// Service names it accepts; `None` accepts any.
    pub allowed_services: Option<Vec<String>>,
    /// Digests already compiled in its cache.
    pub cached: Vec<String>,
    /// The organisation whose private pool it belongs to (trust tier 1).
    #[serde(default)]
    pub org: Option<String>,
    /// Evidence about the machine (trust tier 3), for the broker's
    /// attestation verifier.
    #[serde(default)]
    pub attestation: Option<Attestation>,
    /// It runs OCI container jobs ([`crate::ServiceKind::Oci`]).
    #[serde(default)]
    pub containers: bool,
    /// Its GPUs, for container jobs that ask for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Gpus>,
    /// It lets container jobs that ask for it reach the network.
    #[serde(default)]
    pub network: bool,
    /// The UTC hours it works in (`[start, end)`, wrapping midnight; see
    /// `brume provide --hours`), if it keeps hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<[u8; 2]>,
    /// Where it says it is: `[latitude, longitude]` in millionths of a
    /// degree (`brume provide --location`), for offers near a place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<[i32; 2]>,
    /// Which queued work it takes first (`brume provide --policy`).
    #[serde(default, skip_serializing_if = "Policy::is_fifo")]
    pub policy: Policy,
}

/// A session's work dir on a provider (CGN's affinity): preopened as
/// [`AFFINITY_DIR`] for every unit of the session, kept `ttl_ms` after its
/// last use, and cleared when a unit leaves it over `max_bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affinity {
    /// 64 lowercase hex digits: sha256 of the account and the requester's
    /// key, so that providers learn neither.
    pub key: String,
    pub ttl_ms: u64,
    pub max_bytes: u64,
}

/// Where a session's work dir is in the guest.
pub const AFFINITY_DIR: &str = "/session";

impl Affinity {
    /// Whether `key` is 64 lowercase hex digits (a safe directory name).
    pub fn key_is_valid(key: &str) -> bool {
        key.len() == 64 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
}

/// A provider's choice among queued work it may take.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// The scheduler's order: functions first, accounts in turn, then
    /// arrival.
    #[default]
    Fifo,
    /// Functions first and accounts in turn still, but within the account
    /// whose turn it is, the highest bid first (SONM's most profitable
    /// work; ties by arrival).
    Profit,
}

impl Policy {
    fn is_fifo(&self) -> bool {
        *self == Policy::Fifo
    }
}

/// Milliseconds left, at `now_ms`, in the working hours `[start, end)`
/// (UTC, wrapping midnight; `start == end` is all day: `u64::MAX`); 0
/// outside them.
pub fn hours_left_ms(hours: [u8; 2], now_ms: u64) -> u64 {
    const HOUR: u64 = 3_600_000;
    let [start, end] = hours.map(|h| u64::from(h % 24));
    if start == end {
        return u64::MAX;
    }
    let into_day = now_ms % (24 * HOUR);
    let hour = into_day / HOUR;
    let within = if start < end {
        (start..end).contains(&hour)
    } else {
        hour >= start || hour < end
    };
    if !within {
        return 0;
    }
    let end_ms = end * HOUR;
    if end_ms > into_day {
        end_ms - into_day
    } else {
        24 * HOUR - into_day + end_ms
    }
}

/// The most a GPU's speed counts for, in thousandths of a TFLOP/s: a
/// provider's claimed `milli_tflops` is cut to this, so that a GPU job's
/// escrow hold (its GPUs × its timeout at this speed) bounds its row.
pub const MAX_GPU_MILLI_TFLOPS: u64 = 200_000;

/// A provider's GPUs (NVIDIA, found through `nvidia-smi`): one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Gpus {
    pub model: String,
    /// Each GPU's memory.
    pub memory_bytes: u64,
    pub count: u32,
    /// Each GPU's benchmarked speed, in thousandths of a TFLOP/s (FP32
    /// matrix multiply; 0: not measured, and GPU time is then free). The
    /// broker counts at most [`MAX_GPU_MILLI_TFLOPS`].
    #[serde(default)]
    pub milli_tflops: u64,
}

/// Attestation evidence: `kind` names the verifier that understands
/// `evidence` (`test`: an EIP-191 signature by the broker's configured
/// attestation authority over [`attestation_message`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    pub kind: String,
    pub evidence: Bytes,
}

/// What the test attestation authority signs for a provider address.
pub fn attestation_message(provider: &str) -> String {
    format!(
        "brume attestation v1\nprovider: {}",
        provider.to_ascii_lowercase()
    )
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub session: u64,
    /// Both sides ping at this interval; three silent intervals end the session.
    pub heartbeat_ms: u64,
    /// Bearer token for `GET /v1/blobs/{digest}`, valid for this session.
    pub blob_token: String,
    /// The speed the broker measured with its [`Measure`] challenge, in
    /// MIPS, and why it places the provider by less than it claimed (if it
    /// does).
    #[serde(default)]
    pub measured: Option<MeasuredSpeed>,
    /// The memory the broker checked with the memory part of its
    /// [`Measure`] challenge, and why it places the provider by less than
    /// it claimed (if it does).
    #[serde(default)]
    pub measured_memory: Option<MeasuredMemory>,
}

/// The broker's verdict on a provider's claimed memory (in [`Welcome`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasuredMemory {
    pub claimed_bytes: u64,
    /// What one instance of the provider's sandbox was granted.
    pub granted_bytes: u64,
    /// What placement uses: the claim, cut to what its slots can hold.
    pub placed_bytes: u64,
    /// Why the claim was cut, if it was.
    pub note: Option<String>,
}

/// The broker's verdict on a provider's claimed speed (in [`Welcome`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasuredSpeed {
    pub claimed_mips: u64,
    pub measured_mips: u64,
    /// What placement uses: the claim, cut down to the measure.
    pub placed_mips: u64,
    /// Why the claim was cut, if it was.
    pub note: Option<String>,
    /// The bandwidth the broker timed on a blob it sent, in megabits per
    /// second (round trip included).
    #[serde(default)]
    pub measured_mbps: u64,
}

/// The broker's fitness challenge, between `Hello` and `Welcome`: run
/// `brume_exec::fitness::wat(seed, rounds)` in the sandbox and answer with
/// [`MeasureDone`]. The broker times the answer itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measure {
    pub seed: u64,
    pub rounds: u32,
    /// Then run `brume_exec::fitness::MEMORY_WAT` asking for this many
    /// 64 KiB pages (0: no memory part).
    #[serde(default)]
    pub memory_pages: u32,
    /// Then answer with the sha256 of these bytes (the broker times the
    /// transfer: bandwidth).
    #[serde(default, skip_serializing_if = "Bytes::is_empty")]
    pub blob: Bytes,
    /// Or fetch the bytes from `GET /v1/provider/probe/{probe}` on the
    /// broker (once) and answer with their sha256: the transfer stays off
    /// the session's socket, whose buffers would keep its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
}

/// The memory part's answer: the pages granted and the fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryAnswer {
    pub granted_pages: u32,
    pub fold: u64,
}

/// A fitness challenge's stdout and fuel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasureDone {
    pub stdout: Bytes,
    pub fuel: u64,
    /// Why it could not run, if it could not.
    pub error: Option<String>,
    /// The memory part's answer, if it was asked for and ran.
    #[serde(default)]
    pub memory: Option<MemoryAnswer>,
    /// The sha256 (hex) of the challenge's blob, if it had one.
    #[serde(default)]
    pub blob_sha256: Option<String>,
}

/// One attempt of one work unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assign {
    pub work_id: WorkId,
    pub attempt: u32,
    /// sha256 of the module, lowercase hex.
    pub digest: String,
    /// The service name, for the provider's allow list (`None`: by digest).
    pub service: Option<String>,
    pub kind: ServiceKind,
    pub profile: Profile,
    pub limits: Limits,
    /// Full argv (argv\[0\] first) for commands.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Bytes,
    /// The request, for `wasi:http` services.
    pub http: Option<HttpRequest>,
    /// Send [`Progress`] at this interval (jobs); `None` for invocations.
    pub progress_ms: Option<u64>,
    /// Deterministic profile: seed for every random source.
    pub seed: u64,
    /// Deterministic profile: the virtual clock's start, ms since the epoch.
    pub clock_start_ms: u64,
    /// The developer's signature over the module, when the service was
    /// published signed ([`module_message`]).
    #[serde(default)]
    pub module_signature: Option<ModuleSignature>,
    /// Its receipt goes into the session's batch ([`crate::batch`]): `Done`
    /// carries the leaf, and a later [`Root`] signs it. Otherwise `Done`
    /// carries the receipt's own signature.
    #[serde(default)]
    pub batched_receipt: bool,
    /// Files to place in the work dir before it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<crate::data::Input>,
    /// Files to return from the work dir when it exits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// GPUs to pass into the container.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gpus: u32,
    /// vCPUs the container gets (0: one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub vcpus: u32,
    /// The container may reach the network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub network: bool,
    /// The image to pull from a registry, pinned by its manifest's digest
    /// (`digest` is that manifest's); `None`: fetch the layout tar
    /// `digest` from the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The most the work accepts as an ask ([`Price`]; its bid): a provider
    /// whose floor is above it refuses it with `below_floor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price: Option<Price>,
    /// The session it belongs to (`x-brume-affinity`): its calls share a
    /// work dir on this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// A lease's hold: load the program, keep a slot for it and answer
    /// `Accepted`, then run nothing until `Cancel` (its traffic comes as
    /// calls pinned to this provider).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lease: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A developer's signature over a module digest: EIP-191 over
/// [`module_message`] by `developer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleSignature {
    /// The developer's `0x` address (the royalty payee).
    pub developer: String,
    /// 65 bytes.
    pub signature: Bytes,
}

/// What a developer signs to publish a module: `brume module v1\nsha256: <hex>`.
pub fn module_message(digest_hex: &str) -> String {
    format!("brume module v1\nsha256: {digest_hex}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub headers: Vec<(String, Bytes)>,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, Bytes)>,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Fuel consumed so far by this attempt (accurate to 10^6).
    pub fuel: u64,
    /// stderr written since the previous progress frame.
    pub stderr: Bytes,
}

/// How an attempt ended on the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A command ran to completion (any exit code).
    Exited {
        exit_code: i32,
        stdout: Bytes,
        stderr: Bytes,
        usage: Usage,
        /// The output files asked for that it left, in the order asked.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        outputs: Vec<crate::data::OutputFile>,
    },
    /// A proxy answered.
    Responded {
        response: HttpResponse,
        stderr: Bytes,
        usage: Usage,
    },
    /// The sandbox refused or stopped the execution. `code` is the sandbox's
    /// stable code (`trap`, `out_of_fuel`, `timeout`...).
    Failed {
        code: String,
        message: String,
        usage: Usage,
        stdout: Bytes,
        stderr: Bytes,
    },
}

impl Outcome {
    pub fn usage(&self) -> Usage {
        match self {
            Outcome::Exited { usage, .. }
            | Outcome::Responded { usage, .. }
            | Outcome::Failed { usage, .. } => *usage,
        }
    }

    pub fn usage_mut(&mut self) -> &mut Usage {
        match self {
            Outcome::Exited { usage, .. }
            | Outcome::Responded { usage, .. }
            | Outcome::Failed { usage, .. } => usage,
        }
    }
}

/// Why a provider would not run an assignment. Not a provider failure: the
/// broker offers the work elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// `not_allowed`, `no_capacity`, `fetch_failed`, `invalid_module`,
    /// `draining`, `below_floor` (the work's bid is under the provider's
    /// fee floor).
    pub reason: String,
    pub message: String,
}

/// Messages from the broker to a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToProvider {
    Challenge(Challenge),
    Welcome(Welcome),
    Ping(u64),
    Pong(u64),
    Assign(Box<Assign>),
    /// Stop the attempt on this channel now; no result is expected.
    Cancel,
    Measure(Measure),
}

/// Messages from a provider to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromProvider {
    Hello(Hello),
    Ping(u64),
    Pong(u64),
    /// Digests newly compiled in the provider's cache.
    Cached(Vec<String>),
    /// Stop sending work; in-flight work will finish.
    Draining,
    /// Stop sending work for now (the host is busy, or outside its hours):
    /// why. The session stays; in-flight work finishes.
    Paused(String),
    /// Send work again after `Paused`.
    Resumed,
    /// The attempt on this channel was accepted and is running.
    Accepted,
    Progress(Progress),
    Done(Box<Done>),
    Refused(Refused),
    MeasureDone(MeasureDone),
    /// The provider's signed root over its batched receipts since the last.
    Root(Root),
}

/// An attempt's end: its outcome and the provider's signature over its
/// [`crate::receipt::Receipt`] (EIP-191, 65 bytes), or, for a batched
/// receipt, empty, with the receipt's leaf ([`crate::batch::leaf`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub outcome: Outcome,
    pub signature: Bytes,
    /// 32 bytes, for a batched receipt.
    #[serde(default)]
    pub leaf: Option<Bytes>,
}

/// A batch of receipts signed ([`crate::batch::RootClaim`], with the
/// session's provider and broker): the Merkle root over the leaves of the
/// `Done` frames sent since the last `Root`, in their order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    /// From 0, one more each batch of the session.
    pub batch: u64,
    pub size: u32,
    /// 32 bytes.
    pub root: Bytes,
    /// 65 bytes, EIP-191 over the claim's message.
    pub signature: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame too short ({0} bytes; the header is 5)")]
    Short(usize),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed payload for frame kind {kind}: {source}")]
    Payload {
        kind: u8,
        #[source]
        source: rmp_serde::decode::Error,
    },
}

mod kind {
    pub const CHALLENGE: u8 = 1;
    pub const HELLO: u8 = 2;
    pub const WELCOME: u8 = 3;
    pub const PING: u8 = 4;
    pub const PONG: u8 = 5;
    pub const CACHED: u8 = 6;
    pub const DRAINING: u8 = 7;
    pub const MEASURE: u8 = 8;
    pub const MEASURE_DONE: u8 = 9;
    pub const PAUSED: u8 = 10;
    pub const RESUMED: u8 = 11;
    pub const ASSIGN: u8 = 16;
    pub const CANCEL: u8 = 17;
    pub const ACCEPTED: u8 = 18;
    pub const PROGRESS: u8 = 19;
    pub const DONE: u8 = 20;
    pub const REFUSED: u8 = 21;
    pub const ROOT: u8 = 22;
}

fn frame<T: Serialize + ?Sized>(channel: u32, kind: u8, payload: &T) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u32(channel);
    buf.put_u8(kind);
    let mut w = buf.writer();
    // Writing MessagePack into memory cannot fail for these types.
    let _ = rmp_serde::encode::write_named(&mut w, payload);
    w.into_inner().freeze()
}

fn split(bytes: &[u8]) -> Result<(u32, u8, &[u8]), WireError> {
    if bytes.len() < 5 {
        return Err(WireError::Short(bytes.len()));
    }
    let channel = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    Ok((channel, bytes[4], &bytes[5..]))
}

fn payload<'a, T: Deserialize<'a>>(kind: u8, p: &'a [u8]) -> Result<T, WireError> {
    rmp_serde::from_slice(p).map_err(|source| WireError::Payload { kind, source })
}

impl ToProvider {
    pub fn encode(&self, channel: u32) -> Bytes {
        match self {
            ToProvider::Challenge(m) => frame(channel, kind::CHALLENGE, m),
            ToProvider::Welcome(m) => frame(channel, kind::WELCOME, m),
            ToProvider::Ping(n) => frame(channel, kind::PING, n),
            ToProvider::Pong(n) => frame(channel, kind::PONG, n),
            ToProvider::Assign(m) => frame(channel, kind::ASSIGN, m),
            ToProvider::Cancel => frame(channel, kind::CANCEL, &()),
            ToProvider::Measure(m) => frame(channel, kind::MEASURE, m),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<(u32, ToProvider), WireError> {
        let (channel, k, p) = split(bytes)?;
        let msg = match k {
            kind::CHALLENGE => ToProvider::Challenge(payload(k, p)?),
            kind::WELCOME => ToProvider::Welcome(payload(k, p)?),
            kind::PING => ToProvider::Ping(payload(k, p)?),
            kind::PONG => ToProvider::Pong(payload(k, p)?),
            kind::ASSIGN => ToProvider::Assign(Box::new(payload(k, p)?)),
            kind::CANCEL => ToProvider::Cancel,
            kind::MEASURE => ToProvider::Measure(payload(k, p)?),
            other => return Err(WireError::UnknownKind(other)),
        };
        Ok((channel, msg))
    }
}

impl FromProvider {
    pub fn encode(&self, channel: u32) -> Bytes {
        match self {
            FromProvider::Hello(m) => frame(channel, kind::HELLO, m),
            FromProvider::Ping(n) => frame(channel, kind::PING, n),
            FromProvider::Pong(n) => frame(channel, kind::PONG, n),
            FromProvider::Cached(d) => frame(channel, kind::CACHED, d),
            FromProvider::Draining => frame(channel, kind::DRAINING, &()),
            FromProvider::Paused(why) => frame(channel, kind::PAUSED, why),
            FromProvider::Resumed => frame(channel, kind::RESUMED, &()),
            FromProvider::Accepted => frame(channel, kind::ACCEPTED, &()),
            FromProvider::Progress(m) => frame(channel, kind::PROGRESS, m),
            FromProvider::Done(m) => frame(channel, kind::DONE, m),
            FromProvider::Refused(m) => frame(channel, kind::REFUSED, m),
            FromProvider::MeasureDone(m) => frame(channel, kind::MEASURE_DONE, m),
            FromProvider::Root(m) => frame(channel, kind::ROOT, m),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<(u32, FromProvider), WireError> {
        let (channel, k, p) = split(bytes)?;
        let msg = match k {
            kind::HELLO => FromProvider::Hello(payload(k, p)?),
            kind::PING => FromProvider::Ping(payload(k, p)?),
            kind::PONG => FromProvider::Pong(payload(k, p)?),
            kind::CACHED => FromProvider::Cached(payload(k, p)?),
            kind::DRAINING => FromProvider::Draining,
            kind::PAUSED => FromProvider::Paused(payload(k, p)?),
            kind::RESUMED => FromProvider::Resumed,
            kind::ACCEPTED => FromProvider::Accepted,
            kind::PROGRESS => FromProvider::Progress(payload(k, p)?),
            kind::DONE => FromProvider::Done(Box::new(payload(k, p)?)),
            kind::REFUSED => FromProvider::Refused(payload(k, p)?),
            kind::MEASURE_DONE => FromProvider::MeasureDone(payload(k, p)?),
            kind::ROOT => FromProvider::Root(payload(k, p)?),
            other => return Err(WireError::UnknownKind(other)),
        };
        Ok((channel, msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_left_in_a_working_window() {
        const H: u64 = 3_600_000;
        let day = 20_000 * 24 * H;
        // 09:30 in 9-17: 7.5 h left; at 17:00, none; all day when 0-0.
        assert_eq!(hours_left_ms([9, 17], day + 9 * H + H / 2), 7 * H + H / 2);
        assert_eq!(hours_left_ms([9, 17], day + 17 * H), 0);
        assert_eq!(hours_left_ms([5, 5], day), u64::MAX);
        // 23:00 in 22-6 wraps midnight: 7 h left; 02:00, 4 h; noon, none.
        assert_eq!(hours_left_ms([22, 6], day + 23 * H), 7 * H);
        assert_eq!(hours_left_ms([22, 6], day + 2 * H), 4 * H);
        assert_eq!(hours_left_ms([22, 6], day + 12 * H), 0);
    }

    #[test]
    fn frames_round_trip() {
        let assign = ToProvider::Assign(Box::new(Assign {
            work_id: WorkId::new(),
            attempt: 2,
            digest: "ab".repeat(32),
            service: Some("echo".into()),
            kind: ServiceKind::Http,
            profile: Profile::Deterministic,
            limits: Limits::default(),
            args: vec!["echo".into()],
            env: vec![("A".into(), "b".into())],
            stdin: Bytes::from_static(b"\x00\xff"),
            http: Some(HttpRequest {
                method: "POST".into(),
                uri: "/x?y=1".into(),
                headers: vec![("h".into(), Bytes::from_static(b"v"))],
                body: Bytes::from_static(b"body"),
            }),
            progress_ms: Some(500),
            seed: 7,
            clock_start_ms: 1,
            module_signature: None,
            batched_receipt: true,
            inputs: Vec::new(),
            outputs: Vec::new(),
            gpus: Default::default(),
            vcpus: Default::default(),
            network: Default::default(),
            image: None,
            max_price: None,
            affinity: None,
            lease: false,
        }));
        let bytes = assign.encode(42);
        let (ch, back) = ToProvider::decode(&bytes).expect("decodes");
        assert_eq!((ch, back), (42, assign));

        let done = FromProvider::Done(Box::new(Done {
            outcome: Outcome::Failed {
                code: "trap".into(),
                message: "unreachable".into(),
                usage: Usage {
                    fuel: 9,
                    ..Usage::default()
                },
                stdout: Bytes::new(),
                stderr: Bytes::from_static(b"e"),
            },
            signature: Bytes::from_static(&[7; 65]),
            leaf: Some(Bytes::from_static(&[3; 32])),
        }));
        let (ch, back) = FromProvider::decode(&done.encode(7)).expect("decodes");
        assert_eq!((ch, back), (7, done));
        for m in [
            FromProvider::Root(Root {
                batch: 4,
                size: 256,
                root: Bytes::from_static(&[1; 32]),
                signature: Bytes::from_static(&[2; 65]),
            }),
            FromProvider::Accepted,
            FromProvider::Draining,
            FromProvider::Paused("load 3.2 is over 1.0".into()),
            FromProvider::Resumed,
            FromProvider::Ping(3),
        ] {
            assert_eq!(FromProvider::decode(&m.encode(1)).ok(), Some((1, m)));
        }
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        assert!(matches!(
            FromProvider::decode(&[0, 0]),
            Err(WireError::Short(2))
        ));
        assert!(matches!(
            FromProvider::decode(&[0, 0, 0, 0, 99]),
            Err(WireError::UnknownKind(99))
        ));
        assert!(matches!(
            FromProvider::decode(&[0, 0, 0, 0, kind::HELLO, 0xc1]),
            Err(WireError::Payload { .. })
        ));
    }
}
