//! Leases and the rest of the broker: their units in the scheduler, their
//! rows in the ledger, and the ticker that drips, halts and reconciles.

use std::sync::Arc;
use std::time::Duration;

use brume_api::lease::LeaseState;
use brume_api::{ApiError, ErrorCode, Profile, ServiceKind, WorkId};
use bytes::Bytes;

use super::{Lease, until};
use crate::Shared;
use crate::lifecycle::{Bill, Finished, Waiter};
use crate::work::{Class, Work, WorkEvent, WorkSpec};

/// How many providers a lease's unit may try before the lease waits for
/// the next tick to start it again.
const UNIT_ATTEMPTS: u32 = 1_000;
/// How long a lease's unit waits in the queue for a provider.
const UNIT_QUEUE: Duration = Duration::from_secs(24 * 3600);

/// Hears of a lease unit's provider.
#[derive(Debug)]
struct UnitWaiter {
    shared: std::sync::Weak<Shared>,
    lease: String,
    unit: WorkId,
}

impl Waiter for UnitWaiter {
    fn event(&self, event: &WorkEvent) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let changed = match event {
            WorkEvent::Running { provider, .. } => {
                shared.leases.running(&self.lease, self.unit, provider)
            }
            WorkEvent::Retry { why, .. } => shared.leases.lost(&self.lease, self.unit, why),
            _ => None,
        };
        if let Some(l) = changed {
            save_later(&shared, l);
        }
    }

    fn complete(&self, _finished: Finished) {
        // Ended (cancelled, or out of attempts): the ticker reconciles.
        if let Some(shared) = self.shared.upgrade() {
            shared.leases.wake.notify_one();
        }
    }
}

fn save_later(shared: &Arc<Shared>, lease: Lease) {
    let s = shared.clone();
    shared.tasks.spawn(async move {
        if let Err(e) = s.leases.store.save(lease).await {
            tracing::error!("lease not saved: {e}");
        }
    });
}

/// Starts lease `id`'s unit: a hold of one slot on a provider.
pub(crate) fn start_unit(shared: &Arc<Shared>, id: &str) {
    let Some(l) = shared.leases.get(id) else {
        return;
    };
    let spec = WorkSpec {
        service: Some(l.service.clone()),
        digest: l.digest.clone(),
        kind: ServiceKind::Http,
        profile: Profile::Standard,
        limits: shared.config.default_limits,
        args: Vec::new(),
        env: Vec::new(),
        stdin: Bytes::new(),
        http: None,
        max_price: None,
        max_attempts: UNIT_ATTEMPTS,
        progress_ms: None,
        seed: 0,
        clock_start_ms: 0,
        needs: shared.ledger.needs(None),
        module_signature: shared
            .registry
            .module_signature(Some(&l.service), &l.account, &l.digest),
        distinct: None,
        avoid: None,
        only: None,
        tiers: shared.config.trust.default_tiers(&l.account),
        org: shared.config.trust.org_of_account(&l.account),
        wants_receipt: false,
        class: Class::Batch,
        account: l.account.as_str().into(),
        oci: Default::default(),
        affinity: None,
        lease: true,
    };
    let work = Work::new(WorkId::new(), spec, UNIT_QUEUE, 0);
    let waiter = Arc::new(UnitWaiter {
        shared: Arc::downgrade(shared),
        lease: id.to_string(),
        unit: work.id,
    });
    if let Some(old) = shared.leases.set_unit(id, Some(work.clone())) {
        cancel_unit(shared, &old);
    }
    shared.lifecycle.submit(work, Bill::Deferred, waiter);
}

fn cancel_unit(shared: &Arc<Shared>, unit: &Arc<Work>) {
    if !unit.is_finished() {
        let error = ApiError::new(ErrorCode::Cancelled, "the lease is not running");
        shared.lifecycle.cancel_later(unit.id, error);
    }
}

/// Drips, halts and reconciles every lease, at every tick, until the
/// broker stops.
pub(crate) async fn ticker(shared: Arc<Shared>) {
    loop {
        let now = shared.leases.clock.now_ms();
        let (_, next) = shared.leases.due(now);
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.leases.wake.notified() => {}
            // At least a millisecond: a row that can't be stored is not
            // retried in a hot loop.
            _ = tokio::time::sleep(until(now, next).max(Duration::from_millis(1))) => {}
        }
        tick(&shared).await;
    }
}

/// One tick at the clock's time: every running lease's drip billed (its
/// row durable first), dry ones halted, and every lease's unit made to
/// match its state.
pub(crate) async fn tick(shared: &Arc<Shared>) {
    let now = shared.leases.clock.now_ms();
    let (ids, _) = shared.leases.due(now);
    for id in ids {
        if let Some(drip) = shared.leases.drip(&id, now) {
            bill(shared, &id, &drip, now).await;
        }
        reconcile(shared, &id);
    }
}

pub(super) async fn bill(shared: &Arc<Shared>, id: &str, drip: &super::Drip, now: u64) {
    let Some(l) = shared.leases.get(id) else {
        return;
    };
    let interval = crate::ledger::LeaseInterval {
        id,
        seq: drip.seq,
        account: &l.account,
        provider: l.provider.as_deref().unwrap_or_default(),
        developer: &l.developer,
        digest: &l.digest,
        tier: &l.tier,
        amount: drip.amount,
        ms: drip.ms,
    };
    let row = match shared.ledger.lease_row(interval) {
        Ok(row) => row,
        Err(e) => {
            tracing::error!(lease = id, "lease row not built: {e}");
            return;
        }
    };
    if let Err(e) = shared.ledger.append_row(row).await {
        // Not billed: the next tick tries again with the same number.
        tracing::error!(lease = id, "lease row not stored: {e}");
        return;
    }
    if let Some((l, dry)) = shared.leases.billed(id, drip, now) {
        if dry && let Some(unit) = shared.leases.set_unit(id, None) {
            cancel_unit(shared, &unit);
        }
        if let Err(e) = shared.leases.store.save(l).await {
            tracing::error!(lease = id, "lease not saved: {e}");
        }
    }
}

/// Holds lease `id`'s balance against its account's allowance (after a
/// restart: holds live in memory). False if the allowance, read afresh,
/// no longer covers it; true if it does, or the account has no escrow.
pub(super) async fn hold_balance(shared: &Arc<Shared>, id: &str) -> bool {
    use crate::escrow::Reserve;
    let Some(l) = shared.leases.get(id) else {
        return true;
    };
    let Some(account) = shared.ledger.escrow_account(&l.account) else {
        return true;
    };
    let Ok(address) = account.parse::<brume_chain::Address>() else {
        return true;
    };
    let escrow = shared.ledger.escrow();
    match shared.chain.settlement().collectable(address).await {
        Ok(allowance) => escrow.set_allowance(&account, allowance),
        Err(e) => {
            // Unknown: run, and let settlement find out.
            tracing::warn!(lease = id, "the allowance could not be read: {e}");
            return true;
        }
    }
    match escrow.try_reserve_limited(&account, l.balance(), true, None) {
        Reserve::Held(h) => {
            shared.leases.hold(id, Some(h));
            true
        }
        _ => false,
    }
}

/// Makes lease `id`'s unit match its state: none unless it is starting or
/// running, one if it is.
pub(super) fn reconcile(shared: &Arc<Shared>, id: &str) {
    let Some(l) = shared.leases.get(id) else {
        return;
    };
    let live = l.unit.as_ref().is_some_and(|u| !u.is_finished());
    match l.state {
        LeaseState::Starting | LeaseState::Running if !live => {
            if l.state == LeaseState::Running {
                // Its unit ended while it ran: a loss like any other.
                if let Some(unit) = &l.unit
                    && let Some(l) = shared.leases.lost(id, unit.id, "its hold ended")
                {
                    save_later(shared, l);
                }
            }
            start_unit(shared, id);
        }
        LeaseState::Halted | LeaseState::Stopped => {
            if let Some(unit) = shared.leases.set_unit(id, None) {
                cancel_unit(shared, &unit);
            }
        }
        _ => {}
    }
}
