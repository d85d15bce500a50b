//! JSON bodies of the requester REST API. Routes are documented in the
//! README; each type names the route it belongs to.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};
use crate::{Limits, Profile, ServiceKind, Usage, WorkId};

/// Prices are integers: micro-tokens per 10^9 units of fuel (one
/// giga-instruction). A provider asks a price; work carries the most its
/// requester will pay; a provider is matched only if `ask <= max_price`.
pub type Price = u64;

/// Fuel in one *compute hour*: an hour at the pricing table's reference
/// speed, 1 KMIPS (10^9 instructions a second), the CPU unit the ledger
/// prices in. Fee bids and provider floors per compute hour compare across
/// providers of any speed.
pub const FUEL_PER_COMPUTE_HOUR: u64 = 3_600_000_000_000;

/// Giga-instructions in a compute hour: a [`Price`] times this is the
/// same price per compute hour.
pub const GIGA_PER_COMPUTE_HOUR: u64 = FUEL_PER_COMPUTE_HOUR / 1_000_000_000;

/// A bid per compute hour (micro-tokens) as a [`Price`] cap, rounded down,
/// so the cap never accepts more than the bid.
pub fn bid_to_price(fee_per_hour: u64) -> Price {
    fee_per_hour / GIGA_PER_COMPUTE_HOUR
}

/// A floor per compute hour (micro-tokens) as a [`Price`] ask, rounded up,
/// so the ask never takes less than the floor.
pub fn floor_to_price(fee_per_hour: u64) -> Price {
    fee_per_hour.div_ceil(GIGA_PER_COMPUTE_HOUR)
}

/// A [`Price`] per compute hour, in micro-tokens.
pub fn price_per_hour(price: Price) -> u128 {
    u128::from(price) * u128::from(GIGA_PER_COMPUTE_HOUR)
}

/// The header with a call's fee bid per compute hour, in micro-tokens
/// (optional; see [`JobSpec::max_fee_per_hour`]).
pub const MAX_FEE_PER_HOUR_HEADER: &str = "x-brume-max-fee-per-hour";

/// One version of a service: `POST /v1/services?name=N&kind=command|http|oci`
/// (body: the module bytes), `GET /v1/services`, `GET /v1/services/{ref}`.
/// See [`crate::names`] for how services are named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceInfo {
    /// The name within its owner's namespace.
    pub name: String,
    /// The owner's account: an address, or an unbound key's label.
    #[serde(default)]
    pub owner: String,
    /// The version: 1 for the first publish, then one more per publish.
    #[serde(default)]
    pub version: u64,
    /// Retired by its owner: it can no longer be called.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retired: bool,
    pub kind: ServiceKind,
    /// sha256 of the module, lowercase hex.
    pub digest: String,
    pub size_bytes: u64,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Whether the upload carried a developer's signature over the digest
    /// (`x-brume-developer` and `x-brume-module-signature`).
    #[serde(default)]
    pub signed: bool,
    /// The developer who signed the digest (`0x` address): the royalty
    /// payee, named in every assignment of the module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer_address: Option<String>,
    /// The developer's EIP-191 signature over
    /// [`module_message`](crate::wire::module_message) of the digest:
    /// `0x` + 130 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_signature: Option<String>,
}

impl ServiceInfo {
    /// The reference that names exactly this version: `owner~name@N`.
    pub fn reference(&self) -> String {
        format!(
            "{}{}{}{}{}",
            self.owner,
            crate::names::OWNER_SEP,
            self.name,
            crate::names::VERSION_SEP,
            self.version
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceList {
    pub services: Vec<ServiceInfo>,
}

/// Service names: 1–64 of `[a-z0-9._-]`, starting with a letter or digit.
pub fn validate_service_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "name: {name:?} is not a service name (1-64 of a-z 0-9 . _ -, starting with a letter or digit)"
            ),
        ))
    }
}

/// Limits on input: any subset; the rest take the broker's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    #[schema(minimum = 1)]
    pub fuel: Option<u64>,
    #[schema(minimum = 1)]
    pub memory_bytes: Option<u64>,
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u64>,
    #[schema(minimum = 1)]
    pub max_input_bytes: Option<u64>,
    #[schema(minimum = 1)]
    pub max_output_bytes: Option<u64>,
}

impl LimitsSpec {
    /// Fills unset fields from `defaults`, refusing values above `max`.
    pub fn resolve(&self, defaults: &Limits, max: &Limits) -> Result<Limits, ApiError> {
        let pick = |field: &str, v: Option<u64>, d: u64, m: u64| -> Result<u64, ApiError> {
            let v = v.unwrap_or(d);
            if v == 0 {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("limits.{field}: must be greater than 0"),
                ));
            }
            if v > m {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("limits.{field}: {v} is above this broker's maximum of {m}"),
                ));
            }
            Ok(v)
        };
        Ok(Limits {
            fuel: pick("fuel", self.fuel, defaults.fuel, max.fuel)?,
            memory_bytes: pick(
                "memory_bytes",
                self.memory_bytes,
                defaults.memory_bytes,
                max.memory_bytes,
            )?,
            timeout_ms: pick(
                "timeout_ms",
                self.timeout_ms,
                defaults.timeout_ms,
                max.timeout_ms,
            )?,
            max_input_bytes: pick(
                "max_input_bytes",
                self.max_input_bytes,
                defaults.max_input_bytes,
                max.max_input_bytes,
            )?,
            max_output_bytes: pick(
                "max_output_bytes",
                self.max_output_bytes,
                defaults.max_output_bytes,
                max.max_output_bytes,
            )?,
        })
    }
}

/// `POST /v1/jobs`: a batch job. Unknown fields are refused so typos don't
/// pass silently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The service to run (by name). At least one of `service` and `digest`;
    /// with both, the digest pins the module (409 if the service changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        pattern = r#"^(?:[!"$&-.0->A-}]{1,64}~)?[a-z0-9][a-z0-9._-]{0,63}(?:@(?:[1-9][0-9]{0,18}|[0-9a-fA-F]{64}))?$"#
    )]
    pub service: Option<String>,
    /// The module to run (by sha256): one a service currently points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(?:sha256:)?[0-9a-fA-F]{64}$")]
    pub digest: Option<String>,
    /// An OCI image in a registry, pinned by its manifest's digest
    /// (`registry.example:5000/team/tool:1.2@sha256:<64 hex>`), instead of
    /// `service` or `digest`: an oci job, run by a provider that may pull
    /// from that registry (`brume provide --registry URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 512)]
    pub image: Option<String>,
    /// argv after argv\[0\] (which is the service name).
    #[serde(default)]
    #[schema(max_items = 1024)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// stdin as UTF-8 text, or `{"base64": "..."}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<Output>,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub profile: Profile,
    /// `deterministic` profile: seeds every random source (default 0), so
    /// the same spec gives the same output and fuel on any provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// How many providers may try before the job fails (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 20)]
    pub max_attempts: Option<u32>,
    /// How long the job may wait for a provider before failing with
    /// `queue_timeout` (default 10 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub queue_timeout_ms: Option<u64>,
    /// The most this job pays (see [`Price`]); unset means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price: Option<Price>,
    /// Its fee bid per compute hour ([`FUEL_PER_COMPUTE_HOUR`]), in
    /// micro-tokens (Kumo's fee): the job is refused with 402
    /// `over_price_cap` if the price in force is above it, runs only on
    /// providers whose ask is within it, and providers that prefer profit
    /// take higher bids first. It caps `max_price` at `bid / 3600`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_fee_per_hour: Option<u64>,
    /// Its session ([`crate::headers::AFFINITY`]): work of one account with
    /// one key runs on one provider while it lives and shares a work dir
    /// there, `/session`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub affinity: Option<String>,
    /// Free-form labels, returned with the job: at most 64, keys of 1–64
    /// bytes, values up to 256.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The requester's own columns for the job's ledger rows (private,
    /// hashed into `custom_hash`): at most [`MAX_COLUMNS`], names of
    /// `[a-z0-9_-]` up to [`MAX_COLUMN_NAME`] bytes, values up to
    /// [`MAX_COLUMN_VALUE`] bytes. Invocations give them as
    /// `x-brume-column-<name>` headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, String>,
    /// The service tier to run at (a name from the broker's tiers; default:
    /// the account's deal's tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The most this job may cost, in micro-units of the broker's fee
    /// currency. What happens above it is the account's deal: a lower tier
    /// (402 `over_price_cap` if none fits), or a subsidy pays the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_cap_micros: Option<u64>,
    /// What the job expects to use. Overrunning it by more than the
    /// broker's tolerance costs a surcharge (Kumo's penalty).
    #[serde(default)]
    pub expect: Expect,
    /// How its result is verified (default: not at all). Verified work runs
    /// in the deterministic profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyPolicy>,
    /// The trust tiers (1–4) it may run on (default: the account's, else
    /// all): 1 the organisation's own providers, 2 operator-approved, 3
    /// attested, 4 anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, value_type = Option<Vec<TrustTier>>)]
    pub tiers: Option<Vec<u8>>,
    /// A buyer deposit (the SONM seed's): the job's payment is settled
    /// only once the requester confirms the result (`POST
    /// /v1/jobs/{id}/confirm`), or once the broker's confirmation window
    /// after the job's end has passed. The requester may instead reject
    /// it (`POST /v1/jobs/{id}/reject`): the broker re-executes it and the
    /// loser pays. Runs in the deterministic profile. Not with `verify`
    /// yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirm: bool,
    /// Files placed in the job's work dir, `/work`, before it runs (a
    /// container's work dir, or the directory a wasm job's sandbox
    /// preopens as `/work`; see [`crate::data`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 32)]
    pub inputs: Vec<crate::data::InputSpec>,
    /// Files the job leaves in its work dir that are kept, as paths
    /// relative to it: returned with the result, downloadable at
    /// `/v1/jobs/{id}/outputs/{path}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 32)]
    pub outputs: Vec<String>,
    /// GPUs the job needs (oci jobs): it runs only on a provider that
    /// has this many, and waits in the queue until one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 16)]
    pub gpus: Option<u32>,
    /// vCPUs the container gets (oci jobs; default 1): it runs only on a
    /// provider with at least as many slots, under a CPU quota of that
    /// many cores, and its CPU time is bounded by wall time × vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 256)]
    pub vcpus: Option<u32>,
    /// The container may reach the network (oci jobs; default false: no
    /// network at all). It runs only on a provider that allows it
    /// (`brume provide --allow-network`), in that host's network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub network: bool,
}

/// `POST /v1/jobs/{id}/reject`: the broker re-executed the job and
/// decided; the loser pays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobDispute {
    pub id: WorkId,
    /// `provider_cheated` (the requester is refunded, the provider banned
    /// and slashed), `result_upheld` (the requester pays the
    /// re-execution) or `inconclusive` (nobody is judged; the payment
    /// still waits).
    pub verdict: String,
    pub detail: String,
    /// The refund, or the fee (token base units).
    pub amount: String,
}

/// `POST /v1/jobs/{id}/confirm`: the job's payment may settle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobConfirmation {
    pub id: WorkId,
    /// When the requester confirmed (ms since the epoch).
    pub confirmed_ms: u64,
    /// Whether the confirmation window had already released it.
    pub already_released: bool,
}

/// How a result is verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum VerifyPolicy {
    /// Run once, trust the provider's signed receipt.
    None,
    /// Run on `n` providers with distinct addresses; the output and fuel
    /// that at least `quorum` of them agree on wins. Providers that signed
    /// anything else are proven cheats.
    Replicate { n: u32, quorum: u32 },
    /// BOINC-style: replicate (`replicate {2, 2}`) while the provider picked
    /// first has a short run of consecutive valid results, otherwise run
    /// once and spot-check with probability 1/run.
    Adaptive,
    /// A companion command service checks each result: it runs with the
    /// job's args as its args, the job's stdout as its stdin and
    /// `BRUME_EXIT_CODE` in its environment, and exit code 0 accepts. A
    /// rejected result is run again on another provider (up to 3 tries).
    Verifier { service: String },
}

/// The most replicas a job may ask for.
pub const MAX_REPLICAS: u32 = 16;

/// How a verified result was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verification {
    pub policy: VerifyPolicy,
    /// Every replica that returned a result.
    pub replicas: Vec<ReplicaResult>,
    /// Providers proven to have returned a wrong result.
    pub cheaters: Vec<String>,
    /// A proof against each cheater (checkable with `brume verify-proof`).
    pub proofs: Vec<crate::receipt::CheatProof>,
}

/// One replica's result, as its receipt states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplicaResult {
    pub provider: String,
    pub output_digest: String,
    pub fuel: u64,
    pub status: String,
    /// Whether it is in the winning quorum.
    pub agreed: bool,
}

/// A job's declared shape (Kumo's): how long it expects to run, the
/// memory and the bandwidth it expects to need. The scheduler places it
/// only where these fit; running past the declared runtime or memory adds
/// the overrun surcharge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Placed only on a provider whose working hours (`--hours`) leave at
    /// least this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Bandwidth, in Mbit/s: placed only on a provider measured at least
    /// this fast (at its handshake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbps: Option<u64>,
}

pub const MAX_ATTEMPTS_LIMIT: u32 = 20;
pub const MAX_ARGS: usize = 1024;
pub const MAX_LABELS: usize = 64;
/// Custom ledger columns on one request.
pub const MAX_COLUMNS: usize = 16;
pub const MAX_COLUMN_NAME: usize = 64;
pub const MAX_COLUMN_VALUE: usize = 1024;

/// Checks one custom column (see [`JobSpec::columns`]).
pub fn check_column(name: &str, value: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_COLUMN_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "column name {name:?}: 1-{MAX_COLUMN_NAME} bytes of [a-z0-9_-]"
        ));
    }
    if value.len() > MAX_COLUMN_VALUE {
        return Err(format!(
            "column {name:?}: {} bytes, at most {MAX_COLUMN_VALUE}",
            value.len()
        ));
    }
    Ok(())
}

impl JobSpec {
    /// Checks everything that doesn't need the broker's state. Errors name
    /// the field.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.confirm && !matches!(self.verify, None | Some(VerifyPolicy::None)) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "confirm: a job paid on confirmation can't be verified yet (drop verify or confirm)",
            ));
        }
        let bad = |m: String| Err(ApiError::new(ErrorCode::InvalidRequest, m));
        crate::data::check(&self.inputs, &self.outputs)?;
        if self.gpus.is_some_and(|g| !(1..=16).contains(&g)) {
            return bad("gpus: 1 to 16".into());
        }
        if self.vcpus.is_some_and(|v| !(1..=256).contains(&v)) {
            return bad("vcpus: 1 to 256".into());
        }
        if self.max_fee_per_hour == Some(0) {
            return bad("max_fee_per_hour: a bid of at least 1 micro-token".into());
        }
        if let Some(key) = &self.affinity
            && !crate::affinity_key_is_valid(key)
        {
            return bad(format!(
                "affinity: {key:?}; 1 to 128 bytes of letters, digits and . _ : -"
            ));
        }
        if let Some(tiers) = &self.tiers
            && (tiers.is_empty() || tiers.iter().any(|t| !(1..=4).contains(t)))
        {
            return bad(format!("tiers: {tiers:?}; one or more of 1, 2, 3, 4"));
        }
        if let Some(VerifyPolicy::Verifier { service }) = &self.verify
            && let Err(e) = crate::names::ServiceRef::parse(service)
        {
            return bad(format!("verify.service: {}", e.message));
        }
        if let Some(VerifyPolicy::Replicate { n, .. }) = self.verify
            && !(2..=MAX_REPLICAS).contains(&n)
        {
            return bad(format!("verify.n: {n} replicas; 2 to {MAX_REPLICAS}"));
        }
        if let Some(VerifyPolicy::Replicate { n, quorum }) = self.verify
            && (quorum == 0 || quorum > n || quorum * 2 <= n)
        {
            return bad(format!(
                "verify.quorum: {quorum} of {n}; more than half, at most n"
            ));
        }
        match (&self.service, &self.digest) {
            _ if self.image.is_some() => {
                if self.service.is_some() || self.digest.is_some() {
                    return bad("image: give an image, or a service or digest, not both".into());
                }
                if self.image.as_ref().is_some_and(|i| i.len() > 512) {
                    return bad("image: at most 512 bytes".into());
                }
            }
            (None, None) => {
                return bad("service: one of service, digest or image is required".into());
            }
            (Some(name), pin) => {
                crate::names::ServiceRef::parse(name)?;
                if let Some(d) = pin
                    && let Err(e) = crate::parse_digest(d)
                {
                    return bad(format!("digest: {e}"));
                }
            }
            (None, Some(d)) => {
                if let Err(e) = crate::parse_digest(d) {
                    return bad(format!("digest: {e}"));
                }
            }
        }
        if self.args.len() > MAX_ARGS {
            return bad(format!("args: at most {MAX_ARGS} arguments"));
        }
        for (i, a) in self.args.iter().enumerate() {
            if a.contains('\0') {
                return bad(format!("args[{i}]: contains a NUL byte"));
            }
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return bad(format!("env: {k:?} is not a variable name"));
            }
        }
        if let Some(n) = self.max_attempts
            && !(1..=MAX_ATTEMPTS_LIMIT).contains(&n)
        {
            return bad(format!(
                "max_attempts: must be 1..={MAX_ATTEMPTS_LIMIT}, got {n}"
            ));
        }
        if self.queue_timeout_ms == Some(0) {
            return bad("queue_timeout_ms: must be greater than 0".into());
        }
        if self.labels.len() > MAX_LABELS {
            return bad(format!("labels: at most {MAX_LABELS}"));
        }
        for (k, v) in &self.labels {
            if k.is_empty() || k.len() > 64 || v.len() > 256 {
                return bad(format!("labels: {k:?} (keys 1-64 bytes, values up to 256)"));
            }
        }
        if self.columns.len() > MAX_COLUMNS {
            return bad(format!("columns: at most {MAX_COLUMNS}"));
        }
        for (k, v) in &self.columns {
            check_column(k, v)
                .map_err(|m| ApiError::new(ErrorCode::InvalidRequest, format!("columns: {m}")))?;
        }
        Ok(())
    }
}

/// Where a job is in its life. `succeeded`, `failed` and `cancelled` are
/// final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Assigned,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Assigned,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Assigned => "assigned",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// A job state that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state {0:?} (queued, assigned, running, succeeded, failed, cancelled)")]
pub struct UnknownJobState(pub String);

impl std::str::FromStr for JobState {
    type Err = UnknownJobState;
    fn from_str(s: &str) -> Result<Self, UnknownJobState> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownJobState(s.to_string()))
    }
}

/// `GET /v1/jobs/{id}` and the 202 body of `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobInfo {
    pub id: WorkId,
    pub state: JobState,
    /// The service name, if the job named one.
    pub service: Option<String>,
    pub digest: String,
    /// Attempts started so far.
    pub attempts: u32,
    pub max_attempts: u32,
    /// The provider (address) of the current or last attempt.
    pub provider: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Set when the job failed or was cancelled.
    pub error: Option<ApiError>,
    pub labels: BTreeMap<String, String>,
}

/// `GET /v1/jobs?state=...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobInfo>,
}

/// One server-sent event of `GET /v1/jobs/{id}/events`. The SSE event name
/// is `kind`; the data is this JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobEvent {
    /// 0, 1, 2... per job; also the SSE `id`.
    pub seq: u64,
    pub at_ms: u64,
    pub kind: EventKind,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// `progress`: fuel consumed so far by this attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// `progress`: stderr written since the last event (lossy UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// `retry`, `failed`, `cancelled`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    /// A note for humans (e.g. "re-queued after a broker restart").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `succeeded`: the exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Queued,
    Assigned,
    Running,
    Progress,
    Retry,
    Succeeded,
    Failed,
    Cancelled,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Queued => "queued",
            EventKind::Assigned => "assigned",
            EventKind::Running => "running",
            EventKind::Progress => "progress",
            EventKind::Retry => "retry",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Cancelled => "cancelled",
        }
    }

    /// Whether the job's story ends with this event.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            EventKind::Succeeded | EventKind::Failed | EventKind::Cancelled
        )
    }
}

/// `GET /v1/jobs/{id}/result`: only once the job is final (409 before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobResult {
    pub id: WorkId,
    pub state: JobState,
    /// The guest's exit code, when it ran to completion.
    pub exit_code: Option<i32>,
    pub stdout: Output,
    pub stderr: Output,
    pub usage: Usage,
    pub attempts: u32,
    pub provider: Option<String>,
    /// Why the job failed (a guest fault keeps its partial output above).
    pub error: Option<ApiError>,
    /// The provider's signed receipt of this result (when a provider
    /// returned it): checkable offline with the provider's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<crate::receipt::SignedReceipt>,
    /// How the result was verified (replicated jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// The output files it left (see [`JobSpec::outputs`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<crate::data::OutputRef>,
}

/// A trust tier, 1 to 4 (see [`JobSpec::tiers`]).
#[derive(Debug, utoipa::ToSchema)]
#[schema(minimum = 1, maximum = 4)]
pub struct TrustTier(pub u8);

/// Raw bytes in a request or a response body (`type: string, format:
/// binary` in the OpenAPI document): a module, a function's stdin or stdout.
#[derive(Debug)]
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl utoipa::ToSchema for Binary {}

/// Bytes in JSON: a string when they are UTF-8, else `{"base64": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output(pub bytes::Bytes);

impl utoipa::PartialSchema for Output {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("the bytes, when they are UTF-8")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property("base64", ObjectBuilder::new().schema_type(Type::String))
                    .required("base64")
                    .description(Some(
                        "the bytes in standard base64, when they are not UTF-8",
                    )),
            )
            .into()
    }
}

impl utoipa::ToSchema for Output {}

impl Serialize for Output {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                let mut m = std::collections::BTreeMap::new();
                m.insert(
                    "base64",
                    base64::engine::general_purpose::STANDARD.encode(&self.0),
                );
                m.serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Output {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            B64 { base64: String },
        }
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(Output(t.into_bytes().into())),
            Repr::B64 { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64.as_bytes())
                .map(|b| Output(b.into()))
                .map_err(|e| serde::de::Error::custom(format!("bad base64: {e}"))),
        }
    }
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Status {
    pub version: String,
    /// The broker's address (its identity in the provider handshake).
    pub broker_id: String,
    pub region: String,
    pub latitude: f64,
    pub longitude: f64,
    pub providers_connected: u64,
    pub capacity: Capacity,
    pub queues: Queues,
    pub uptime_s: u64,
    /// Settlement health (absent from brokers before settlement existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<SettlementHealth>,
    /// The broker's hub wallet (a bond on an EVM chain), if it has one: a
    /// provider reads it on chain and asks for a [`HubProof`] before it
    /// joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_wallet: Option<String>,
}

/// `GET /v1/hub/proof?nonce=0x…`: the hub wallet's hub key signs the
/// asker's fresh nonce ([`hub_proof_message`]), so a broker can't claim
/// another broker's wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HubProof {
    pub wallet: String,
    /// The address that signed (the wallet's `hub`).
    pub hub: String,
    /// `0x` + 32 bytes, as asked.
    pub nonce: String,
    /// EIP-191, 65 bytes, `0x` hex.
    pub signature: String,
}

/// The text a hub proof signs.
pub fn hub_proof_message(wallet: &str, nonce: &str) -> String {
    format!(
        "brume hub wallet\nwallet: {}\nnonce: {}",
        wallet.to_ascii_lowercase(),
        nonce.to_ascii_lowercase()
    )
}

/// What a provider last found of its broker's hub wallet (`brume provide
/// status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HubCheck {
    /// When it was checked (ms since the epoch).
    pub checked_ms: u64,
    /// Whether the broker passed: the provider joins only then.
    pub ok: bool,
    /// What was found, or why the broker failed.
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet: Option<String>,
    /// `created`, `registered`, `idle`, `suspected` or `punished`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The bond frozen (base units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond: Option<String>,
}

/// What `/v1/status` and `GET /v1/settlement` say of settlement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SettlementHealth {
    /// The account requesters' escrow allowances are for.
    pub payout_account: String,
    /// Seconds between automatic runs (0: on request only).
    pub period_s: u64,
    /// When the last run ended (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_ms: Option<u64>,
    /// The last run's id (0: none yet).
    pub last_run: u64,
    /// Why the last run failed, if it did (the next run resumes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<crate::error::ApiError>,
    /// Owed to beneficiaries below the minimum payout (token base units).
    pub carry_over: String,
    /// Collected for rows still waiting for another payer.
    pub held: String,
    /// Rows waiting for a payer that could not pay.
    pub rows_deferred: u64,
    /// Accounts the last run could not collect from, and why.
    pub flagged: Vec<(String, String)>,
    /// Whether the settlement invariants held after the last run.
    pub balanced: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Capacity {
    pub slots_free: u64,
    pub slots_total: u64,
    pub memory_free_bytes: u64,
    pub memory_total_bytes: u64,
}

/// Queue depths: one tier for now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Queues {
    /// Work waiting for a provider (invocations and jobs).
    pub waiting: u64,
    /// Work on a provider now.
    pub in_flight: u64,
    /// Jobs stored and not final.
    pub jobs_open: u64,
}

/// `GET /v1/providers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProviderInfo {
    /// The provider's secp256k1 address (0x...).
    pub address: String,
    pub region: String,
    pub slots: u32,
    pub slots_busy: u32,
    /// The memory it is placed by: its claim, cut to what its sandbox was
    /// granted when that is less.
    pub memory_bytes: u64,
    /// The memory its `Hello` claimed.
    #[serde(default)]
    pub claimed_memory_bytes: u64,
    /// The speed it is placed by: its claim, cut to what the broker
    /// measured when the claim was more than twice the measure.
    pub fitness_mips: u64,
    /// The speed its `Hello` claimed.
    #[serde(default)]
    pub claimed_mips: u64,
    /// Its speed as the broker last timed it (at the handshake, then now
    /// and then while it is idle), and when (ms since the epoch).
    #[serde(default)]
    pub measured_mips: u64,
    #[serde(default)]
    pub measured_at_ms: u64,
    /// The bandwidth the broker timed on a blob at the handshake, in
    /// megabits per second (round trip included).
    #[serde(default)]
    pub measured_mbps: u64,
    pub price_ask: Price,
    /// Services this provider accepts (`None`: any).
    pub allowed_services: Option<Vec<String>>,
    pub modules_cached: u64,
    pub work_done: u64,
    pub connected_at_ms: u64,
    /// Its stake: its allowance to the broker's payout account, in token
    /// base units (decimal), as last read from the chain.
    #[serde(default)]
    pub stake: String,
    /// Whether its stake meets the broker's `min_stake` (else it gets no work).
    #[serde(default = "yes")]
    pub staked: bool,
    /// What the broker has seen of it (kept per address, across sessions).
    #[serde(default)]
    pub reputation: Reputation,
    /// Its trust tier: 1 an organisation's own, 2 operator-approved, 3
    /// attested, 4 anyone.
    #[serde(default = "tier_four")]
    pub tier: u8,
}

fn tier_four() -> u8 {
    4
}

/// A provider's track record, per address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reputation {
    /// Verified results in a row (a replica that agreed with its quorum);
    /// reset by a failure, a timeout or a wrong result.
    pub consecutive_valid: u64,
    /// Verified results in total.
    pub valid: u64,
    /// Results returned (verified or not).
    pub results: u64,
    /// Attempts lost with the provider (disconnect, crash, refused late).
    pub failures: u64,
    /// Attempts it did not acknowledge in time.
    pub timeouts: u64,
    /// Mean time from assignment to result, in µs.
    pub mean_latency_us: u64,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProviderList {
    pub providers: Vec<ProviderInfo>,
}

/// What one connected provider offers (`GET /v1/offers`): its measured
/// resources, its price, where it is and how it has done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Offer {
    pub address: String,
    pub region: String,
    /// Its declared location, `[latitude, longitude]` in degrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<[f64; 2]>,
    /// Its distance from the query's `near`, in km (great circle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
    /// What it runs: `wasm`, and `oci` if it takes containers.
    pub runtimes: Vec<String>,
    pub slots: u32,
    pub slots_free: u32,
    /// The memory it is placed by (its claim, cut to what was measured).
    pub memory_bytes: u64,
    /// Its speed and bandwidth as the broker measured them.
    pub measured_mips: u64,
    pub measured_mbps: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<crate::wire::Gpus>,
    /// Its ask, in micro-tokens per 10^9 fuel (times 3600: per compute
    /// hour, the least bid it takes).
    pub price_ask: Price,
    /// Which queued work it takes first.
    #[serde(default)]
    pub policy: crate::wire::Policy,
    /// Results returned over attempts taken, in ppm (a provider with no
    /// history scores 1,000,000: one result of one attempt, assumed).
    pub reputation_ppm: u64,
    pub results: u64,
    /// Its trust tier (1–4).
    pub tier: u8,
    /// Whether it has the query's `image` (a module or image digest) cached.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

/// `GET /v1/offers`: one page of offers, and how many matched in all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OfferList {
    pub offers: Vec<Offer>,
    pub total: u64,
    /// The `offset` of the next page, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u64>,
}

/// `GET /status` on a provider's local control port (`brume provide status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProviderStatus {
    pub address: String,
    pub broker_url: String,
    /// `connecting`, `connected` or `draining`.
    pub connection: String,
    pub connected_since_ms: Option<u64>,
    pub fitness_mips: u64,
    pub slots: u32,
    pub in_flight: u32,
    pub work_done: u64,
    pub work_failed: u64,
    /// Fuel (wasm instructions) executed since start.
    pub instructions_executed: u64,
    pub modules_cached: u64,
    pub uptime_s: u64,
    /// The last check of the broker's hub wallet, if it checks one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubCheck>,
    /// Container jobs, if this provider was asked to take them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<ContainersStatus>,
    /// Why it takes no work now (its idle conditions), if it doesn't.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
}

/// What a provider enforces on container jobs, plainly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ContainersStatus {
    /// Whether it takes them (false: `error` says why not).
    pub enabled: bool,
    /// `bubblewrap (/usr/bin/bwrap)`.
    pub runtime: String,
    /// The host uid containers run as (a root provider's dedicated uid).
    pub uid: Option<u32>,
    /// The cgroup v1 controllers in use.
    pub cgroups: Vec<String>,
    /// What is enforced, and what is not, one line each.
    pub notes: Vec<String>,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_text_or_base64() {
        let text = Output(bytes::Bytes::from_static(b"hi"));
        assert_eq!(serde_json::to_string(&text).ok().as_deref(), Some("\"hi\""));
        let bin = Output(bytes::Bytes::from_static(&[0xff, 0]));
        let json = serde_json::to_string(&bin).unwrap_or_default();
        assert_eq!(json, r#"{"base64":"/wA="}"#);
        assert_eq!(serde_json::from_str::<Output>(&json).ok(), Some(bin));
    }

    #[test]
    fn job_spec_errors_name_the_field() {
        let field = |spec: JobSpec| {
            spec.validate()
                .err()
                .map(|e| e.message.split(':').next().unwrap_or("").to_string())
        };
        assert_eq!(field(JobSpec::default()).as_deref(), Some("service"));
        let pinned = JobSpec {
            service: Some("a".into()),
            digest: Some("00".repeat(32)),
            ..JobSpec::default()
        };
        assert_eq!(field(pinned), None);
        let bad_pin = JobSpec {
            service: Some("a".into()),
            digest: Some("00".into()),
            ..JobSpec::default()
        };
        assert_eq!(field(bad_pin).as_deref(), Some("digest"));
        let attempts = JobSpec {
            service: Some("a".into()),
            max_attempts: Some(0),
            ..JobSpec::default()
        };
        assert_eq!(field(attempts).as_deref(), Some("max_attempts"));
        let unknown = serde_json::from_str::<JobSpec>(r#"{"service":"a","sevrice":"b"}"#);
        assert!(unknown.is_err());
    }

    #[test]
    fn limits_resolve_against_defaults_and_maximum() {
        let d = Limits::default();
        let spec = LimitsSpec {
            fuel: Some(5),
            ..LimitsSpec::default()
        };
        assert_eq!(spec.resolve(&d, &d).map(|l| l.fuel), Ok(5));
        let big = LimitsSpec {
            timeout_ms: Some(d.timeout_ms + 1),
            ..LimitsSpec::default()
        };
        let err = big
            .resolve(&d, &d)
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(err.starts_with("limits.timeout_ms"), "{err}");
    }
}

/// What an API key may do. A missing scope answers 403 `forbidden`, naming
/// the scope.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Call functions (`/v1/functions/…/invoke`, `/fn/…`).
    Invoke,
    /// Submit and cancel jobs (and read them).
    Jobs,
    /// Publish services and upload modules.
    Publish,
    /// Read: the account's jobs, ledger rows, keys.
    Read,
    /// The operator's: every account's jobs, settlement runs, every key.
    Admin,
}

/// A scope name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?} (invoke, jobs, publish, read, admin)")]
pub struct UnknownScope(pub String);

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Invoke,
        Scope::Jobs,
        Scope::Publish,
        Scope::Read,
        Scope::Admin,
    ];

    /// What a key gets when nobody says: everything but `admin`.
    pub const DEFAULT: [Scope; 4] = [Scope::Invoke, Scope::Jobs, Scope::Publish, Scope::Read];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Invoke => "invoke",
            Scope::Jobs => "jobs",
            Scope::Publish => "publish",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// `invoke,jobs`: a comma-separated list, sorted and deduplicated.
    pub fn join(scopes: &[Scope]) -> String {
        let mut s = scopes.to_vec();
        s.sort();
        s.dedup();
        s.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(",")
    }

    /// Parses `invoke,jobs` (empty parts are skipped).
    pub fn parse_list(list: &str) -> Result<Vec<Scope>, UnknownScope> {
        let mut out: Vec<Scope> = list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl std::str::FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Scope, UnknownScope> {
        Scope::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| UnknownScope(s.to_string()))
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/keys`: a new key for the caller's account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    /// A label (who or what uses it): 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// Default: every scope but `admin`. A key can't grant a scope it
    /// lacks.
    #[serde(default)]
    #[schema(min_items = 1)]
    pub scopes: Option<Vec<Scope>>,
    /// When it stops working (ms since the epoch, at most 2^53-1).
    #[serde(default)]
    #[schema(maximum = 9007199254740991_i64)]
    pub expires_at_ms: Option<u64>,
}

/// One API key, never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyInfo {
    /// Its public id (the first 8 bytes of its hash, in hex).
    pub id: String,
    pub name: String,
    /// The account it speaks for.
    pub account: String,
    pub scopes: Vec<Scope>,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// The 201 body of `POST /v1/keys`: the key, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewKey {
    pub api_key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
}

#[cfg(test)]
mod scope_tests {
    use super::Scope;

    #[test]
    fn scope_lists_parse_and_join() {
        assert_eq!(
            Scope::parse_list("read, invoke,read,"),
            Ok(vec![Scope::Invoke, Scope::Read])
        );
        assert!(Scope::parse_list("invoke,root").is_err());
        assert_eq!(Scope::join(&[Scope::Admin, Scope::Invoke]), "invoke,admin");
        assert_eq!(
            Scope::parse_list(&Scope::join(&Scope::ALL)),
            Ok(Scope::ALL.to_vec())
        );
    }
}
