//! brume's wire types. Every byte that crosses a process boundary is typed
//! here, and only here:
//!
//! - [`rest`]: the requester REST API's JSON bodies (`/v1/...`).
//! - [`wire`]: the provider protocol, binary frames over one WebSocket
//!   (`/v1/provider/connect`), multiplexed by channel.
//! - [`error`]: the `{code, message}` error body and its stable codes.
//! - [`batch`]: batched receipts (Merkle roots an invocation's provider
//!   signs once per batch) and their inclusion proofs.
//! - [`chain`]: the bodies of the chain routes (`/v1/chain/...`).
//! - [`signed`]: the `Authorization: Brume-Signature ...` format of signed
//!   requests (no API key: the signer's address is the account).
//!
//! The crate has no I/O and no async: it is data, encoding and validation.

pub mod batch;
pub mod chain;
pub mod data;
pub mod error;
pub mod federation;
pub mod lambda;
pub mod lease;
pub mod names;
pub mod receipt;
pub mod rest;
pub mod signed;
pub mod wire;

pub use error::{ApiError, ErrorCode};

use serde::{Deserialize, Serialize};

/// Version of the provider protocol. A broker refuses a provider whose
/// version it does not speak, with a close reason naming both.
pub const PROTOCOL_VERSION: u32 = 4;

/// Response headers on every sync invocation.
pub mod headers {
    pub const WORK_ID: &str = "x-brume-work-id";
    pub const PROVIDER: &str = "x-brume-provider";
    pub const FUEL: &str = "x-brume-fuel";
    pub const ATTEMPTS: &str = "x-brume-attempts";
    /// Set on a command invocation: the guest's exit code.
    pub const EXIT_CODE: &str = "x-brume-exit-code";
    /// When the broker's scheduler received the call: a number from one
    /// sequence per broker run that counts arrivals and first dispatches.
    pub const ARRIVAL: &str = "x-brume-arrival";
    /// When the scheduler first dispatched the call to a provider, on the
    /// same sequence. Within one account and class, dispatch follows
    /// arrival.
    pub const DISPATCH: &str = "x-brume-dispatch";
    /// On an invocation: `audit` (run deterministically; a sampled share
    /// is re-executed afterwards, and a lie refunded), `replicate=N` (N
    /// replicas on distinct providers; a majority's result is the answer)
    /// or `none`.
    pub const VERIFY: &str = "x-brume-verify";
    /// On a `replicate=N` call's answer: the replicas that agreed with it,
    /// of those that returned a result (`2/3`).
    pub const VERIFIED: &str = "x-brume-verified";
    /// On a call: its session (1–128 bytes of `[A-Za-z0-9._:-]`). Calls
    /// of one account with one key run on one provider while it lives, and
    /// share a work dir there ([`crate::wire::AFFINITY_DIR`]).
    pub const AFFINITY: &str = "x-brume-affinity";
    /// On the answer of a call whose session had to move (its provider was
    /// lost, and the work dir with it): `moved`.
    pub const AFFINITY_STATE: &str = "x-brume-affinity-state";
}

/// Whether `key` is a valid affinity key ([`headers::AFFINITY`]).
pub fn affinity_key_is_valid(key: &str) -> bool {
    (1..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// One unit of work (a sync invocation or a job). Ids are UUIDv7, so they
/// sort by creation time.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct WorkId(pub uuid::Uuid);

impl WorkId {
    pub fn new() -> WorkId {
        WorkId(uuid::Uuid::now_v7())
    }
}

impl Default for WorkId {
    fn default() -> Self {
        WorkId::new()
    }
}

impl std::fmt::Display for WorkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for WorkId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<WorkId, uuid::Error> {
        uuid::Uuid::parse_str(s).map(WorkId)
    }
}

/// What a service module is, which decides how it is invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// A WASI command (preview 1 module or preview 2 component): argv, env,
    /// stdin in; exit code, stdout, stderr out.
    Command,
    /// A `wasi:http` proxy component: one HTTP request in, one response out.
    Http,
    /// An OCI container image (an image layout tar), run as a job by
    /// providers that take containers: argv, env, stdin in; exit code,
    /// stdout, stderr out. Not deterministic, and never a function.
    Oci,
}

impl ServiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Command => "command",
            ServiceKind::Http => "http",
            ServiceKind::Oci => "oci",
        }
    }
}

/// A service kind that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown service kind {0:?} (expected command or http)")]
pub struct UnknownServiceKind(pub String);

impl std::str::FromStr for ServiceKind {
    type Err = UnknownServiceKind;
    fn from_str(s: &str) -> Result<Self, UnknownServiceKind> {
        match s {
            "command" => Ok(ServiceKind::Command),
            "http" => Ok(ServiceKind::Http),
            "oci" => Ok(ServiceKind::Oci),
            other => Err(UnknownServiceKind(other.to_string())),
        }
    }
}

/// Which sandbox engine runs the work.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    #[default]
    Standard,
    /// Bit-for-bit reproducible (seeded randomness, virtual clock).
    Deterministic,
}

/// Per-execution limits, as they travel. Every field is optional on input;
/// the broker fills in its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Instruction budget (fuel).
    pub fuel: u64,
    /// Cap on the sum of all linear memories, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock deadline of one execution, in milliseconds.
    pub timeout_ms: u64,
    /// Cap on stdin or the request body.
    pub max_input_bytes: u64,
    /// Cap on stdout + stderr (+ response body).
    pub max_output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 100_000_000_000,
            memory_bytes: 512 << 20,
            timeout_ms: 30_000,
            max_input_bytes: 64 << 20,
            max_output_bytes: 64 << 20,
        }
    }
}

/// What one execution consumed. Exact: this is what gets billed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// Fuel: wasm operators executed.
    pub fuel: u64,
    pub peak_memory_bytes: u64,
    pub wall_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// GPU device time held, in device-microseconds (a container job's
    /// GPUs × its wall time; 0 for work without GPUs). The broker bounds it
    /// by the GPUs it granted × the time it saw, and bills it through the
    /// provider's benchmarked TFLOPS.
    #[serde(default)]
    pub gpu_us: u64,
}

/// The 32-byte sha256 of a module binary, as lowercase hex on the wire.
pub fn parse_digest(s: &str) -> Result<[u8; 32], String> {
    let s = s.strip_prefix("sha256:").unwrap_or(s);
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not a sha256 digest (64 hex digits)"));
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16).unwrap_or(0);
        let lo = (chunk[1] as char).to_digit(16).unwrap_or(0);
        out[i] = (hi * 16 + lo) as u8;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_with_or_without_prefix() {
        let hex = "00".repeat(31) + "ff";
        assert_eq!(parse_digest(&hex).map(|d| d[31]), Ok(0xff));
        assert_eq!(
            parse_digest(&format!("sha256:{hex}")).map(|d| d[31]),
            Ok(0xff)
        );
        assert!(parse_digest("abc").is_err());
        assert!(parse_digest(&"zz".repeat(32)).is_err());
    }
}
