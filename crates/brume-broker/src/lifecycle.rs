//! The lifecycle of a unit of work: exactly one completion per work id.
//!
//! The scheduler ([`crate::sched`]) only matches work to providers and
//! tracks placements; it reports what happened by work id ([`After`]). This
//! layer owns the scheduler's lock and, for every unit submitted, who waits
//! for it ([`Waiter`]) and how it is billed ([`Bill`]). Completion is
//! decided in one place, [`Lifecycle::finish`]:
//!
//! 1. the unit is claimed ([`Work::claim`]): a second completion (a late
//!    result, a cancel racing a result, a provider lost as it answered) finds
//!    it claimed and does nothing;
//! 2. a `Done` is billed once (one ledger row), by the unit's [`Bill`]:
//!    - [`Bill::Queued`] (sync calls): the unsealed row goes to the ledger's
//!      batcher, off the response path;
//!    - [`Bill::Durable`] (jobs): the row is sealed and durable before the
//!      waiter hears of the result;
//!    - [`Bill::Deferred`] (replicas): billed by their group once decided;
//! 3. the escrow hold, if any, is released and the waiter is notified.
//!
//! Events of attempts (assigned, running, progress, retry) reach the waiter
//! after the scheduler's lock is released. Every task this layer starts is
//! tracked ([`Lifecycle::tasks`]), so a shutdown waits for them.

use std::collections::HashMap;
use std::sync::Arc;

use brume_api::receipt::SignedReceipt;
use brume_api::rest::Verification;
use brume_api::{ApiError, WorkId};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ledger::{Billing, Ledger, Ran};
use crate::metrics::Metrics;
use crate::sched::{After, Scheduler};
use crate::work::{Cancelled, Completion, Work, WorkEvent};

/// How a unit of work ended, with what vouches for its result.
#[derive(Debug)]
pub(crate) struct Finished {
    pub completion: Completion,
    /// The checked receipt of the result, if the unit wanted one.
    pub receipt: Option<SignedReceipt>,
    /// How a verified result was decided.
    pub verification: Option<Verification>,
}

/// Whoever waits for a unit of work: an invocation's handler, a job, the
/// replica group of a verified job.
pub(crate) trait Waiter: Send + Sync + std::fmt::Debug {
    /// An attempt's event (after the scheduler's lock is released).
    fn event(&self, _event: &WorkEvent) {}
    /// The one completion of the unit.
    fn complete(&self, finished: Finished);
}

/// How a unit is billed when a provider reports `Done`.
#[derive(Debug)]
pub(crate) enum Bill {
    /// Row queued to the ledger's batcher; the waiter hears at once.
    Queued(Billing),
    /// Row durable before the waiter hears.
    Durable(Billing),
    /// Billed by someone else later (the replicas of a verified job).
    Deferred,
}

impl Bill {
    fn billing(&self) -> Option<&Billing> {
        match self {
            Bill::Queued(b) | Bill::Durable(b) => Some(b),
            Bill::Deferred => None,
        }
    }
}

#[derive(Debug)]
struct Unit {
    work: Arc<Work>,
    bill: Bill,
    waiter: Arc<dyn Waiter>,
}

/// An invocation's waiter: a oneshot the HTTP handler awaits.
#[derive(Debug)]
pub(crate) struct Oneshot(parking_lot::Mutex<Option<oneshot::Sender<Completion>>>);

impl Oneshot {
    pub fn new() -> (Arc<Oneshot>, oneshot::Receiver<Completion>) {
        let (tx, rx) = oneshot::channel();
        (Arc::new(Oneshot(parking_lot::Mutex::new(Some(tx)))), rx)
    }
}

impl Waiter for Oneshot {
    fn complete(&self, finished: Finished) {
        if let Some(tx) = self.0.lock().take() {
            let _ = tx.send(finished.completion);
        }
    }
}

/// The scheduler, the units in flight and their waiters.
pub(crate) struct Lifecycle {
    sched: parking_lot::Mutex<Scheduler>,
    units: parking_lot::Mutex<HashMap<WorkId, Unit>>,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("units", &self.units.lock().len())
            .finish_non_exhaustive()
    }
}

impl Lifecycle {
    pub fn new(
        sched: Scheduler,
        ledger: Arc<Ledger>,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Lifecycle {
        Lifecycle {
            sched: parking_lot::Mutex::new(sched),
            units: Default::default(),
            ledger,
            metrics,
            tasks,
            shutdown,
        }
    }

    /// Runs `task` on a tracked task that ends early when the broker
    /// stops (work that waits on other units, which may never end then).
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = task => {}
                () = shutdown.cancelled() => {}
            }
        });
    }

    /// Reads the scheduler (no events can come of it).
    pub fn read<T>(&self, f: impl FnOnce(&Scheduler) -> T) -> T {
        f(&self.sched.lock())
    }

    /// Submits a unit: `waiter` hears of its events and its completion.
    pub fn submit(&self, work: Arc<Work>, bill: Bill, waiter: Arc<dyn Waiter>) {
        self.units.lock().insert(
            work.id,
            Unit {
                work: work.clone(),
                bill,
                waiter,
            },
        );
        self.with_sched(|s, a| s.submit(work, a));
    }

    /// Runs `f` on the scheduler, then, with the lock released, delivers
    /// what it reported: events to waiters, completions through
    /// [`finish`](Self::finish).
    pub fn with_sched<T>(&self, f: impl FnOnce(&mut Scheduler, &mut After) -> T) -> T {
        let mut after = After::default();
        let out = {
            let mut s = self.sched.lock();
            let out = f(&mut s, &mut after);
            self.metrics.queue_depth.set(s.queue_len() as i64);
            self.metrics.providers.set(s.providers.len() as i64);
            out
        };
        if after.retries > 0 {
            self.metrics.retries.inc_by(after.retries);
        }
        if !after.events.is_empty() {
            let waiters: Vec<_> = {
                let units = self.units.lock();
                after
                    .events
                    .iter()
                    .map(|(id, _)| units.get(id).map(|u| u.waiter.clone()))
                    .collect()
            };
            for ((_, event), waiter) in after.events.iter().zip(waiters) {
                if let Some(w) = waiter {
                    w.event(event);
                }
            }
        }
        for (work, completion) in after.finish {
            self.finish(&work, completion);
        }
        out
    }

    /// The one place a unit ends: claims it, bills a `Done` once (see the
    /// module docs), releases its hold and notifies its waiter. False if it
    /// had already ended.
    pub fn finish(&self, work: &Arc<Work>, completion: Completion) -> bool {
        let Some(unit) = self.claim(work) else {
            return false;
        };
        let Completion::Done {
            outcome,
            provider,
            fitness_mips,
            gpu_milli_tflops,
            attempts,
            ..
        } = completion
        else {
            self.deliver(unit, completion);
            return true;
        };
        let row = unit.bill.billing().map(|billing| {
            let usage = outcome.usage();
            let ran = Ran {
                provider: &provider,
                fitness_mips,
                gpu_milli_tflops,
                usage: &usage,
                attempts,
                cancelled: false,
            };
            self.ledger.build(&unit.work, billing, ran)
        });
        let (row, cost) = row.unwrap_or((None, None));
        let completion = Completion::Done {
            outcome,
            provider,
            fitness_mips,
            gpu_milli_tflops,
            attempts,
            cost,
        };
        match &unit.bill {
            Bill::Durable(_) => {
                let (ledger, pending) = (self.ledger.clone(), self.ledger.pending());
                let deliver = Delivery(unit, completion);
                self.tasks.spawn(async move {
                    ledger.append_sealed(deliver.0.work.id, row).await;
                    deliver.run();
                    drop(pending);
                });
            }
            Bill::Queued(_) => {
                self.deliver(unit, completion);
                if let Some(row) = row {
                    self.ledger.queue(row);
                }
            }
            Bill::Deferred => self.deliver(unit, completion),
        }
        true
    }

    /// Cancels a unit wherever it is. One cancelled while it ran on a
    /// provider pays for the fuel in its last progress report and the time
    /// it ran (one row, durable before the waiter hears; nothing if it
    /// reported no fuel, or is billed by someone else). False if the unit
    /// had already ended.
    pub async fn cancel(&self, id: WorkId, error: ApiError) -> bool {
        let found = self.with_sched(|s, a| s.cancel(id, a));
        let Some(work) = self.units.lock().get(&id).map(|u| u.work.clone()) else {
            return false;
        };
        let completion = Completion::Failed {
            error,
            attempts: work.attempts(),
        };
        let ran = match found {
            Cancelled::Running(ran) if ran.fuel > 0 => ran,
            Cancelled::Running(_) | Cancelled::Queued | Cancelled::Unknown => {
                return self.finish(&work, completion);
            }
        };
        let Some(unit) = self.claim(&work) else {
            return false;
        };
        if let Some(billing) = unit.bill.billing() {
            let usage = brume_api::Usage {
                fuel: ran.fuel,
                wall_us: ran.wall_us,
                gpu_us: ran.gpu_us,
                ..brume_api::Usage::default()
            };
            let sofar = Ran {
                provider: &ran.provider,
                fitness_mips: ran.fitness_mips,
                gpu_milli_tflops: ran.gpu_milli_tflops,
                usage: &usage,
                attempts: ran.attempt,
                cancelled: true,
            };
            let (row, _) = self.ledger.build(&work, billing, sofar);
            let pending = self.ledger.pending();
            self.ledger.append_sealed(work.id, row).await;
            drop(pending);
        }
        self.deliver(unit, completion);
        true
    }

    /// [`cancel`](Self::cancel) on a tracked task, for callers that can't
    /// wait (a dropped HTTP request).
    pub fn cancel_later(self: &Arc<Self>, id: WorkId, error: ApiError) {
        let this = self.clone();
        self.tasks.spawn(async move {
            this.cancel(id, error).await;
        });
    }

    fn claim(&self, work: &Work) -> Option<Unit> {
        if !work.claim() {
            return None;
        }
        let unit = self.units.lock().remove(&work.id);
        if unit.is_none() {
            tracing::error!(work = %work.id, "a unit ended that no one waits for");
        }
        unit
    }

    fn deliver(&self, unit: Unit, completion: Completion) {
        Delivery(unit, completion).run();
    }
}

/// A claimed unit's completion, not yet delivered.
struct Delivery(Unit, Completion);

impl Delivery {
    fn run(self) {
        let Delivery(unit, completion) = self;
        // Its row, if any, was charged to the escrow before this point.
        if let Some(hold) = unit.bill.billing().and_then(|b| b.hold.as_ref()) {
            hold.release();
        }
        let receipt = match &completion {
            Completion::Done { .. } => unit.work.receipt(),
            Completion::Failed { .. } => None,
        };
        unit.waiter.complete(Finished {
            completion,
            receipt,
            verification: None,
        });
    }
}
