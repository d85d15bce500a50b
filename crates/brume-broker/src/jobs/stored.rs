//! What is stored of a job's request.

use std::collections::BTreeMap;

use brume_api::rest::{Output, Price, VerifyPolicy};
use brume_api::{Limits, Profile, ServiceKind};
use serde::{Deserialize, Serialize};

/// What is stored of a job's request: everything needed to run it again
/// after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredJob {
    pub service: Option<String>,
    pub digest: String,
    pub kind: ServiceKind,
    /// Full argv, argv\[0\] first.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Output,
    pub limits: Limits,
    pub profile: Profile,
    /// Deterministic profile's seed (absent in rows written before it existed).
    #[serde(default)]
    pub seed: u64,
    pub max_attempts: u32,
    pub queue_timeout_ms: u64,
    pub max_price: Option<Price>,
    /// Its affinity session (absent in rows written before affinity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<brume_api::wire::Affinity>,
    pub labels: BTreeMap<String, String>,
    /// The ledger's participants, fixed at submission (absent in rows
    /// written before the ledger).
    #[serde(default)]
    pub requester: String,
    #[serde(default)]
    pub end_user: String,
    #[serde(default)]
    pub developer: String,
    /// The tier and price cap it was admitted under (absent in rows written
    /// before deals: the default tier, uncapped).
    #[serde(default)]
    pub admission: Option<brume_ledger::deal::Admission>,
    /// Its declared shape, for the overrun surcharge.
    #[serde(default)]
    pub declared: brume_ledger::penalty::Declared,
    /// How its result is verified.
    #[serde(default)]
    pub verify: Option<VerifyPolicy>,
    /// The trust tiers it may run on (`None`: the account's default).
    #[serde(default)]
    pub tiers: Option<Vec<u8>>,
    /// The requester's own columns for its rows.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Paid only once confirmed (see `deposits.rs`).
    #[serde(default)]
    pub confirm: bool,
    /// Files placed in its work dir (keys included: the broker holds them
    /// for its providers).
    #[serde(default)]
    pub inputs: Vec<brume_api::data::Input>,
    /// Files it returns.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// GPUs it needs.
    #[serde(default)]
    pub gpus: u32,
    /// vCPUs it gets (0: one).
    #[serde(default)]
    pub vcpus: u32,
    /// Its container may reach the network.
    #[serde(default)]
    pub network: bool,
    /// The bandwidth it declared, Mbit/s (0: its tier's).
    #[serde(default)]
    pub min_mbps: u64,
    /// Its image in a registry, pinned by digest (`digest` is the
    /// manifest's), when it names one instead of an uploaded layout.
    #[serde(default)]
    pub image: Option<String>,
}
