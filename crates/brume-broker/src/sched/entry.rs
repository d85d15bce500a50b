//! One connected provider as the scheduler sees it, and the checks that
//! decide whether it may take a unit of work.

use std::collections::HashSet;

use axum::extract::ws::Message;
use brume_api::ServiceKind;
use brume_api::rest::Price;
use brume_api::wire::Capabilities;
use tokio::sync::mpsc;

use super::ProviderId;
use crate::work::{Class, Work};

/// One connected provider, as the scheduler sees it.
#[derive(Debug)]
pub(crate) struct ProviderEntry {
    pub address: String,
    /// Its capabilities as placed: `fitness_mips` as the broker measured
    /// it (see `measure.rs`).
    pub caps: Capabilities,
    /// The speed and memory its `Hello` claimed.
    pub claimed_mips: u64,
    pub claimed_memory_bytes: u64,
    /// Its speed as last timed, when, and its bandwidth (Mbit/s).
    pub measured_mips: u64,
    pub measured_at_ms: u64,
    pub measured_mbps: u64,
    pub price_ask: Price,
    pub busy: u32,
    /// Slots held by batch work.
    pub batch_busy: u32,
    /// Slots kept for functions (batch work never holds them).
    pub reserved: u32,
    /// It refused work for lack of room: offered nothing more until one of
    /// its slots frees, or the next sweep (its own view of its slots may lag
    /// the broker's: a cancelled attempt frees its slot there a moment
    /// later).
    pub full: bool,
    pub mem_busy: u64,
    /// GPUs held by its container jobs.
    pub gpu_busy: u32,
    pub draining: bool,
    /// Paused by its idle conditions (see `FromProvider::Paused`).
    pub paused: bool,
    pub cached: HashSet<String>,
    pub tx: mpsc::UnboundedSender<Message>,
    pub work_done: u64,
    pub connected_at_ms: u64,
    /// Its allowance to the payout account, as last read.
    pub stake: u128,
    /// `stake >= min_stake`: only then does it get work.
    pub staked: bool,
    /// Its trust tier (1–4, see `trust.rs`) and, in tier 1, its organisation.
    pub tier: u8,
    pub org: Option<String>,
    pub(super) next_channel: u32,
    pub(super) channels: HashSet<u32>,
    /// The key under which it is indexed now (None: not indexed).
    pub(super) indexed: Option<u32>,
}

impl ProviderEntry {
    pub fn new(
        address: String,
        caps: Capabilities,
        price_ask: Price,
        tx: mpsc::UnboundedSender<Message>,
    ) -> Self {
        let cached = caps.cached.iter().cloned().collect();
        ProviderEntry {
            address,
            claimed_mips: caps.fitness_mips,
            claimed_memory_bytes: caps.memory_bytes,
            measured_mips: caps.fitness_mips,
            measured_at_ms: crate::now_ms(),
            measured_mbps: 0,
            caps,
            price_ask,
            busy: 0,
            batch_busy: 0,
            reserved: 0,
            full: false,
            mem_busy: 0,
            gpu_busy: 0,
            draining: false,
            paused: false,
            cached,
            tx,
            work_done: 0,
            connected_at_ms: crate::now_ms(),
            stake: 0,
            staked: true,
            tier: 4,
            org: None,
            next_channel: 1,
            channels: HashSet::new(),
            indexed: None,
        }
    }

    pub(super) fn load_key(&self) -> u32 {
        ((self.busy as u64 * 65_536) / self.caps.slots.max(1) as u64) as u32
    }

    pub(super) fn has_free_slot(&self) -> bool {
        !self.draining && !self.paused && !self.full && self.busy < self.caps.slots
    }

    /// Whether a slot is free for work of `class`: batch work leaves the
    /// reserved slots to functions.
    pub(super) fn has_slot_for(&self, class: Class) -> bool {
        self.has_free_slot()
            && (class == Class::Sync || self.batch_busy + self.reserved < self.caps.slots)
    }

    /// Sets how many of its slots are kept for functions: `ppm` of them,
    /// at least one, but never all (a one-slot provider still runs batch).
    pub fn reserve_for_functions(&mut self, ppm: u32) {
        let slots = self.caps.slots;
        self.reserved = if ppm == 0 || slots <= 1 {
            0
        } else {
            let share = (u64::from(slots) * u64::from(ppm) / 1_000_000) as u32;
            share.clamp(1, slots - 1)
        };
    }

    pub(super) fn accepts(&self, id: ProviderId, work: &Work) -> bool {
        let s = &work.spec;
        self.has_slot_for(s.class)
            && self.staked
            && self.caps.memory_bytes.saturating_sub(self.mem_busy) >= s.limits.memory_bytes
            && self.caps.slots >= s.needs.min_threads
            && self.measured_mbps >= s.needs.min_mbps
            && s.needs.fits_hours(self.caps.hours)
            && s.distinct.as_ref().is_none_or(|d| d.allows(&self.address))
            && s.only
                .as_ref()
                .is_none_or(|a| a.eq_ignore_ascii_case(&self.address))
            && s.avoid
                .as_ref()
                .is_none_or(|a| !a.eq_ignore_ascii_case(&self.address))
            && (s.tiers >> self.tier) & 1 == 1
            && (self.tier != 1 || s.org == self.org)
            && self.caps.fitness_mips >= s.needs.min_mips
            && (s.kind != ServiceKind::Oci || self.caps.containers)
            && s.oci.fits(&self.caps, self.gpu_busy)
            && match (&self.caps.allowed_services, &s.service) {
                (None, _) => true,
                (Some(list), Some(name)) => list.iter().any(|a| a == name),
                (Some(_), None) => false,
            }
            && s.max_price.is_none_or(|max| self.price_ask <= max)
            && !work.was_refused_by(id)
    }
}
