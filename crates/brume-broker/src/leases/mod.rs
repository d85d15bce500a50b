//! Leases (the StackMonkey seed): a `wasi:http` service kept on a provider
//! and paid from an escrow of its own that drips per second of running
//! time.
//!
//! - **The hold.** A lease runs as one long unit of work (`lease: true`):
//!   its provider loads the program, keeps a slot for it and runs nothing
//!   until cancelled. Its traffic (`/lease/{id}/…`) comes as calls pinned
//!   to that provider, billed per call as functions are.
//! - **The drip.** Running time accrues while the provider holds the lease
//!   (from its `Running` event until a halt, a stop or the provider's loss).
//!   At every tick, the lease's target is `⌊rate · accrued_ms / 1000⌋`,
//!   capped by its deposit; what the target adds to what was billed is one
//!   ledger row (`lease-<id>-<n>`), appended durably before the lease's
//!   record moves. Rows therefore sum exactly to what the escrow paid.
//! - **The halt** is the broker's own accounting, not an event: each tick
//!   runs at the time the balance is due to run out (or every `interval`,
//!   whichever is first), and every tick reconciles every lease with the
//!   scheduler: a halted or stopped lease whose unit still exists is
//!   cancelled again (the provider drops the slot when it hears `Cancel`, or
//!   when its session ends), a running lease whose unit is gone gets a new
//!   one. A top-up resumes a halted lease.
//! - **Failover.** A lost provider's unit is retried by the scheduler like
//!   any other; the lease stops accruing meanwhile, and says `moved` when
//!   it runs again.
//! - **Durability.** A lease's record is saved at every change; a
//!   restarted broker loads them, and running leases start again. A row
//!   appended just before a crash is found by its work id at start-up and
//!   not billed twice.
//!
//! An account with escrow (an address with an allowance) has each lease's
//! balance held against its allowance like any work's maximum cost, so a
//! deposit can't promise more than the allowance.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use brume_api::lease::{LeaseEvent, LeaseInfo, LeaseState};
use brume_api::{ApiError, ErrorCode, WorkId};
use serde::{Deserialize, Serialize};

use crate::StoreFuture;
use crate::escrow::Hold;
use crate::work::Work;

mod drive;
mod sql;
#[cfg(test)]
mod tests;

pub(crate) use drive::{start_unit, ticker};

/// Events kept per lease (the oldest go first).
const MAX_EVENTS: usize = 64;

/// `[broker.leases]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    /// The longest time between two ticks (each bills what accrued), ms.
    pub interval_ms: u64,
    /// Leases one account may keep (not stopped) at once.
    pub max_per_account: usize,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            interval_ms: 10_000,
            max_per_account: 64,
        }
    }
}

/// Time for the drip, injectable (tests move it by hand).
pub(crate) trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> u64;
}

/// The wall clock.
#[derive(Debug)]
pub(crate) struct SystemClock;

/// The wall clock, shared.
pub(crate) fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::now_ms()
    }
}

/// A lease as stored (and held in memory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Lease {
    pub id: String,
    pub account: String,
    /// `owner~name@N`.
    pub service: String,
    pub digest: String,
    pub developer: String,
    pub tier: String,
    pub rate_per_s: u128,
    pub deposit: u128,
    pub billed: u128,
    /// Running time accrued (billed or not), ms.
    pub accrued_ms: u64,
    /// Running time the rows cover, ms.
    pub billed_ms: u64,
    pub rows: u64,
    pub state: LeaseState,
    pub provider: Option<String>,
    pub private: bool,
    pub created_at_ms: u64,
    pub events: VecDeque<LeaseEvent>,
    /// When the running stretch not yet accrued began (clock ms).
    #[serde(skip)]
    since_ms: Option<u64>,
    #[serde(skip)]
    unit: Option<Arc<Work>>,
    /// Its balance held against its account's allowance (one hold per
    /// deposit or top-up, consumed oldest first).
    #[serde(skip)]
    holds: Vec<Arc<Hold>>,
}

/// What a new lease is made of (see [`Lease::new`]).
#[derive(Debug, Clone)]
pub(crate) struct NewLease {
    pub account: String,
    pub service: String,
    pub digest: String,
    pub developer: String,
    pub tier: String,
    pub rate_per_s: u128,
    pub deposit: u128,
    pub private: bool,
}

impl Lease {
    /// A new lease, starting, at `now`.
    pub fn new(n: NewLease, now: u64) -> Lease {
        let mut l = Lease {
            id: format!("lease-{}", WorkId::new()),
            account: n.account,
            service: n.service,
            digest: n.digest,
            developer: n.developer,
            tier: n.tier,
            rate_per_s: n.rate_per_s,
            deposit: n.deposit,
            billed: 0,
            accrued_ms: 0,
            billed_ms: 0,
            rows: 0,
            state: LeaseState::Starting,
            provider: None,
            private: n.private,
            created_at_ms: now,
            events: VecDeque::new(),
            since_ms: None,
            unit: None,
            holds: Vec::new(),
        };
        let msg = format!(
            "{} base units in escrow, {} a second",
            l.deposit, l.rate_per_s
        );
        l.event(now, "created", msg);
        l
    }

    /// Adds `amount` to its escrow; a halted lease starts again. Returns
    /// whether it did.
    pub fn top_up(&mut self, amount: u128, now: u64) -> Result<bool, ApiError> {
        if self.state == LeaseState::Stopped {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("lease {} is stopped", self.id),
            ));
        }
        self.deposit = self.deposit.checked_add(amount).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "amount: the deposit would overflow",
            )
        })?;
        self.event(now, "topped_up", format!("{amount} base units added"));
        let resume = self.state == LeaseState::Halted;
        if resume {
            self.state = LeaseState::Starting;
            self.event(now, "resumed", "starting again".into());
        }
        Ok(resume)
    }

    /// Halts it for `why` (a top-up resumes it).
    pub fn halt(&mut self, now: u64, why: String) -> Result<(), ApiError> {
        self.accrue(now);
        self.since_ms = None;
        self.state = LeaseState::Halted;
        self.event(now, "halted", why);
        Ok(())
    }

    /// Stops it for good (what ran is billed first, by the caller).
    pub fn stop(&mut self, now: u64) -> Result<(), ApiError> {
        if self.state == LeaseState::Stopped {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("lease {} is already stopped", self.id),
            ));
        }
        self.accrue(now);
        self.since_ms = None;
        self.state = LeaseState::Stopped;
        self.holds.clear();
        self.event(now, "stopped", "stopped by its owner".into());
        Ok(())
    }

    pub fn balance(&self) -> u128 {
        self.deposit - self.billed
    }

    pub fn info(&self) -> LeaseInfo {
        LeaseInfo {
            id: self.id.clone(),
            account: self.account.clone(),
            service: self.service.clone(),
            digest: self.digest.clone(),
            state: self.state,
            provider: self.provider.clone(),
            rate_per_s: self.rate_per_s.to_string(),
            deposit: self.deposit.to_string(),
            billed: self.billed.to_string(),
            balance: self.balance().to_string(),
            running_ms: self.billed_ms,
            rows: self.rows,
            private: self.private,
            created_at_ms: self.created_at_ms,
            url: format!("/lease/{}/", self.id),
        }
    }

    fn event(&mut self, at_ms: u64, kind: &str, message: String) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(LeaseEvent {
            at_ms,
            kind: kind.into(),
            message,
        });
    }

    /// Adds the running stretch up to `now` to `accrued_ms`.
    fn accrue(&mut self, now: u64) {
        if let Some(since) = self.since_ms {
            self.accrued_ms = self.accrued_ms.saturating_add(now.saturating_sub(since));
            self.since_ms = Some(now);
        }
    }

    /// What the rows should have charged by now: `⌊rate · accrued / 1000⌋`,
    /// at most the deposit.
    fn target(&self) -> u128 {
        (self.rate_per_s.saturating_mul(u128::from(self.accrued_ms)) / 1000).min(self.deposit)
    }

    /// When (clock ms) the balance runs out if it keeps running; `None`
    /// unless running.
    fn dry_at(&self) -> Option<u64> {
        let since = self.since_ms?;
        // The least total running time whose target reaches the deposit.
        let need_ms = (self.deposit.saturating_mul(1000)).div_ceil(self.rate_per_s.max(1));
        let left =
            u64::try_from(need_ms.saturating_sub(u128::from(self.accrued_ms))).unwrap_or(u64::MAX);
        Some(since.saturating_add(left))
    }
}

/// One tick's bill for a lease: the row to append, and the lease's next
/// counters once it is durable.
#[derive(Debug)]
pub(crate) struct Drip {
    pub seq: u64,
    pub amount: u128,
    /// Running time this row covers, ms.
    pub ms: u64,
    pub target: u128,
    pub accrued_ms: u64,
}

/// The storage leases need. No SQLite type in it.
pub(crate) trait LeaseStore: Send + Sync + std::fmt::Debug {
    /// Saves a lease (replacing its last record); returns once durable.
    fn save(&self, lease: Lease) -> StoreFuture<'_, ()>;
    /// Every lease, oldest first.
    fn load(&self) -> StoreFuture<'_, Vec<Lease>>;
}

/// Why a lease operation was refused.
pub(crate) fn not_found(id: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no lease {id}"))
}

/// Every lease, in memory over its store.
#[derive(Debug)]
pub(crate) struct Leases {
    pub config: LeaseConfig,
    pub clock: Arc<dyn Clock>,
    pub(crate) store: Arc<dyn LeaseStore>,
    leases: parking_lot::Mutex<HashMap<String, Lease>>,
    /// Wakes the ticker after a change.
    pub wake: tokio::sync::Notify,
}

impl Leases {
    pub fn new(config: LeaseConfig, store: Arc<dyn LeaseStore>, clock: Arc<dyn Clock>) -> Leases {
        Leases {
            config,
            clock,
            store,
            leases: Default::default(),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Loads the stored leases; those that ran are to start again.
    pub async fn load(&self) -> Result<Vec<String>, crate::store::StoreError> {
        let mut restart = Vec::new();
        let mut map = self.leases.lock().clone();
        for mut l in self.store.load().await? {
            if matches!(l.state, LeaseState::Running | LeaseState::Starting) {
                l.state = LeaseState::Starting;
                restart.push(l.id.clone());
            }
            map.insert(l.id.clone(), l);
        }
        *self.leases.lock() = map;
        Ok(restart)
    }

    pub fn get(&self, id: &str) -> Option<Lease> {
        self.leases.lock().get(id).cloned()
    }

    /// The account's leases, newest first.
    pub fn of(&self, account: &str) -> Vec<Lease> {
        let mut v: Vec<Lease> = self
            .leases
            .lock()
            .values()
            .filter(|l| account.is_empty() || l.account == account)
            .cloned()
            .collect();
        v.sort_by(|a, b| b.id.cmp(&a.id));
        v
    }

    /// Leases the account keeps (not stopped).
    pub fn live_of(&self, account: &str) -> usize {
        self.leases
            .lock()
            .values()
            .filter(|l| l.account == account && l.state != LeaseState::Stopped)
            .count()
    }

    /// Runs `f` on lease `id` and saves it (durably) if it returns `Ok`.
    pub async fn update<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Lease, u64) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let now = self.clock.now_ms();
        let (out, saved) = {
            let mut map = self.leases.lock();
            let l = map.get_mut(id).ok_or_else(|| not_found(id))?;
            let out = f(l, now)?;
            (out, l.clone())
        };
        self.save(saved).await?;
        self.wake.notify_one();
        Ok(out)
    }

    pub async fn insert(&self, lease: Lease) -> Result<(), ApiError> {
        self.leases.lock().insert(lease.id.clone(), lease.clone());
        self.save(lease).await
    }

    async fn save(&self, lease: Lease) -> Result<(), ApiError> {
        self.store.save(lease).await.map_err(|e| {
            ApiError::new(ErrorCode::Internal, format!("saving the lease failed: {e}"))
        })
    }

    /// The lease's unit, to submit or cancel; sets it.
    pub fn set_unit(&self, id: &str, unit: Option<Arc<Work>>) -> Option<Arc<Work>> {
        let mut map = self.leases.lock();
        let l = map.get_mut(id)?;
        std::mem::replace(&mut l.unit, unit)
    }

    /// Adds a hold to lease `id`'s, or drops them all (`None`).
    pub fn hold(&self, id: &str, hold: Option<Arc<Hold>>) {
        if let Some(l) = self.leases.lock().get_mut(id) {
            match hold {
                Some(h) => l.holds.push(h),
                None => l.holds.clear(),
            }
        }
    }

    /// The unit of lease `id` now runs on `provider`: it starts accruing.
    pub fn running(&self, id: &str, unit: WorkId, provider: &str) -> Option<Lease> {
        let now = self.clock.now_ms();
        let mut map = self.leases.lock();
        let l = map.get_mut(id)?;
        if l.unit.as_ref().is_none_or(|u| u.id != unit) || l.state != LeaseState::Starting {
            return None;
        }
        let moved = l.provider.as_deref().is_some_and(|p| p != provider);
        l.state = LeaseState::Running;
        l.since_ms = Some(now);
        l.provider = Some(provider.to_string());
        let (kind, what) = if moved {
            ("moved", "moved to")
        } else {
            ("started", "running on")
        };
        l.event(now, kind, format!("{what} provider {provider}"));
        self.wake.notify_one();
        Some(l.clone())
    }

    /// The unit of lease `id` lost its provider (the scheduler retries it
    /// elsewhere): accrual stops until it runs again.
    pub fn lost(&self, id: &str, unit: WorkId, why: &str) -> Option<Lease> {
        let now = self.clock.now_ms();
        let mut map = self.leases.lock();
        let l = map.get_mut(id)?;
        if l.unit.as_ref().is_none_or(|u| u.id != unit) || l.state != LeaseState::Running {
            return None;
        }
        l.accrue(now);
        l.since_ms = None;
        l.state = LeaseState::Starting;
        l.event(now, "lost", why.to_string());
        Some(l.clone())
    }

    /// What lease `id` owes at `now`, if anything: accrues its running time
    /// and prices it (nothing is changed but the accrual).
    pub fn drip(&self, id: &str, now: u64) -> Option<Drip> {
        let mut map = self.leases.lock();
        let l = map.get_mut(id)?;
        if l.state != LeaseState::Running {
            return None;
        }
        l.accrue(now);
        let target = l.target();
        (target > l.billed).then(|| Drip {
            seq: l.rows + 1,
            amount: target - l.billed,
            ms: l.accrued_ms.saturating_sub(l.billed_ms),
            target,
            accrued_ms: l.accrued_ms,
        })
    }

    /// Records `drip` as billed (its row is durable); returns the lease and
    /// whether it ran dry (then it is halted, and its unit to cancel).
    pub fn billed(&self, id: &str, drip: &Drip, now: u64) -> Option<(Lease, bool)> {
        let mut map = self.leases.lock();
        let l = map.get_mut(id)?;
        if l.rows + 1 != drip.seq {
            return None;
        }
        l.rows = drip.seq;
        l.billed = drip.target;
        l.billed_ms = drip.accrued_ms;
        let mut left = drip.amount;
        for h in &l.holds {
            let by = left.min(h.amount());
            h.consume(by);
            left -= by;
        }
        let dry = l.billed == l.deposit && l.state == LeaseState::Running;
        if dry {
            l.state = LeaseState::Halted;
            l.since_ms = None;
            l.event(
                now,
                "halted",
                "its escrow ran dry: top it up to resume".into(),
            );
        }
        Some((l.clone(), dry))
    }

    /// The leases to look at, and the soonest time one runs dry.
    pub fn due(&self, now: u64) -> (Vec<String>, u64) {
        let map = self.leases.lock();
        let next = map
            .values()
            .filter_map(Lease::dry_at)
            .min()
            .unwrap_or(u64::MAX)
            .min(now.saturating_add(self.config.interval_ms));
        (map.keys().cloned().collect(), next)
    }
}

/// Loads the stored leases and starts those that ran, their balance held
/// against their account's allowance again (halted if it no longer covers
/// it).
pub(crate) async fn recover(shared: &Arc<crate::Shared>) -> Result<(), crate::store::StoreError> {
    for id in shared.leases.load().await? {
        if drive::hold_balance(shared, &id).await {
            start_unit(shared, &id);
            continue;
        }
        let why = "its account's allowance no longer covers its balance: approve more, \
                   then top it up";
        if let Err(e) = shared
            .leases
            .update(&id, |l, now| l.halt(now, why.into()))
            .await
        {
            tracing::error!(lease = id, "lease not halted: {}", e.message);
        }
    }
    Ok(())
}

/// Stops lease `id`: what it ran is billed, then its unit is cancelled and
/// its holds dropped.
pub(crate) async fn stop(shared: &Arc<crate::Shared>, id: &str) -> Result<(), ApiError> {
    let now = shared.leases.clock.now_ms();
    if let Some(drip) = shared.leases.drip(id, now) {
        drive::bill(shared, id, &drip, now).await;
    }
    shared.leases.update(id, |l, now| l.stop(now)).await?;
    drive::reconcile(shared, id);
    Ok(())
}

/// How long until `at_ms` from `now_ms`.
pub(crate) fn until(now_ms: u64, at_ms: u64) -> Duration {
    Duration::from_millis(at_ms.saturating_sub(now_ms))
}
