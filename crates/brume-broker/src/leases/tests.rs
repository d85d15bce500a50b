//! The drip on a clock moved by hand: exact rows, the halt at empty, the
//! resume on top-up, and a lost provider's time not billed.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

#[derive(Debug, Default)]
struct Manual(AtomicU64);

impl Clock for Manual {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Default)]
struct Memory(parking_lot::Mutex<HashMap<String, Lease>>);

impl LeaseStore for Memory {
    fn save(&self, lease: Lease) -> StoreFuture<'_, ()> {
        self.0.lock().insert(lease.id.clone(), lease);
        Box::pin(async { Ok(()) })
    }

    fn load(&self) -> StoreFuture<'_, Vec<Lease>> {
        let v = self.0.lock().values().cloned().collect();
        Box::pin(async move { Ok(v) })
    }
}

fn unit() -> Arc<Work> {
    let spec = crate::work::WorkSpec {
        service: None,
        digest: String::new(),
        kind: brume_api::ServiceKind::Http,
        profile: brume_api::Profile::Standard,
        limits: brume_api::Limits::default(),
        args: Vec::new(),
        env: Vec::new(),
        stdin: bytes::Bytes::new(),
        http: None,
        max_price: None,
        max_attempts: 1,
        progress_ms: None,
        seed: 0,
        clock_start_ms: 0,
        needs: Default::default(),
        module_signature: None,
        distinct: None,
        avoid: None,
        only: None,
        tiers: 0xff,
        org: None,
        wants_receipt: false,
        class: crate::work::Class::Batch,
        account: "a".into(),
        oci: Default::default(),
        affinity: None,
        lease: true,
    };
    Work::new(WorkId::new(), spec, Duration::from_secs(60), 0)
}

/// Runs every drip due at the clock's time; returns the amounts billed.
fn tick(leases: &Leases, id: &str) -> Vec<u128> {
    let now = leases.clock.now_ms();
    let mut out = Vec::new();
    if let Some(d) = leases.drip(id, now) {
        out.push(d.amount);
        leases.billed(id, &d, now).expect("billed");
    }
    out
}

#[tokio::test]
async fn a_lease_drips_exactly_halts_at_empty_and_resumes_on_top_up() {
    let clock = Arc::new(Manual::default());
    clock.0.store(1_000_000, Ordering::SeqCst);
    let leases = Leases::new(
        LeaseConfig::default(),
        Arc::new(Memory::default()),
        clock.clone(),
    );
    let rate = 7; // base units a second
    let lease = Lease::new(
        NewLease {
            account: "a".into(),
            service: "a~web@1".into(),
            digest: "d".into(),
            developer: String::new(),
            tier: "standard".into(),
            rate_per_s: rate,
            deposit: 100,
            private: false,
        },
        clock.now_ms(),
    );
    let id = lease.id.clone();
    leases.insert(lease).await.expect("insert");
    let u = unit();
    leases.set_unit(&id, Some(u.clone()));
    // Nothing accrues before it runs.
    clock.0.fetch_add(5_000, Ordering::SeqCst);
    assert!(tick(&leases, &id).is_empty());
    let t0 = clock.now_ms();
    leases.running(&id, u.id, "0xp").expect("running");
    // Irregular ticks: the rows follow ⌊rate · t⌋ exactly, whatever the
    // steps (no rounding accumulates).
    let mut billed = 0u128;
    for step in [333u64, 1, 999, 2_500, 1_167] {
        clock.0.fetch_add(step, Ordering::SeqCst);
        billed += tick(&leases, &id).iter().sum::<u128>();
        let ran = u128::from(clock.now_ms() - t0);
        assert_eq!(billed, rate * ran / 1000, "after {ran} ms");
    }
    // 5 s ran: 35 billed. The rest (65) lasts 65/7 s more: it runs dry at
    // ⌈65 000 / 7⌉ ms after those 5 s.
    let l = leases.get(&id).expect("lease");
    assert_eq!(l.billed, 35);
    let dry = l.dry_at().expect("running");
    assert_eq!(dry, t0 + (100_000u64).div_ceil(7));
    clock.0.store(dry - 1, Ordering::SeqCst);
    tick(&leases, &id);
    assert_eq!(leases.get(&id).expect("lease").state, LeaseState::Running);
    clock.0.store(dry, Ordering::SeqCst);
    let now = clock.now_ms();
    let d = leases.drip(&id, now).expect("the last drip");
    let (l, halted) = leases.billed(&id, &d, now).expect("billed");
    assert!(halted, "halted the moment it is empty");
    assert_eq!(
        (l.state, l.billed, l.balance()),
        (LeaseState::Halted, 100, 0)
    );
    // Halted: no more accrues, however long.
    clock.0.fetch_add(60_000, Ordering::SeqCst);
    assert!(tick(&leases, &id).is_empty());
    // A top-up resumes it; it drips again once running.
    let resumed = leases
        .update(&id, |l, now| l.top_up(70, now))
        .await
        .expect("top up");
    assert!(resumed);
    let u2 = unit();
    leases.set_unit(&id, Some(u2.clone()));
    leases.running(&id, u2.id, "0xq").expect("running again");
    let l = leases.get(&id).expect("lease");
    assert_eq!(l.events.back().map(|e| e.kind.as_str()), Some("moved"));
    // A lost provider's time is not billed: 2 s run, 10 s lost, 1 s run.
    clock.0.fetch_add(2_000, Ordering::SeqCst);
    leases.lost(&id, u2.id, "provider gone").expect("lost");
    clock.0.fetch_add(10_000, Ordering::SeqCst);
    leases.running(&id, u2.id, "0xr").expect("moved");
    clock.0.fetch_add(1_000, Ordering::SeqCst);
    tick(&leases, &id);
    let l = leases.get(&id).expect("lease");
    // 100 for the first ~14.3 s, then 3 s more at 7/s, with the
    // sub-second remainder of the first stretch carried, not lost.
    let ran_ms = (dry - t0) + 3_000;
    assert_eq!(l.billed, (7 * u128::from(ran_ms) / 1000).min(170));
    assert_eq!(l.rows, 7, "one row per tick that found something due");
}
