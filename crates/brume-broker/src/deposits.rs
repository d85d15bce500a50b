//! Buyer deposits (the SONM seed's): a job submitted with `confirm: true`
//! is paid only once its requester confirms the result, or once the
//! confirmation window after its end has passed.
//!
//! The job's escrow is held and its row written as for any job; this
//! component is the settlement [`Gate`](brume_settle::Gate) that keeps the
//! row (its work id is the job's id) deferred until then. It owns its
//! state: the jobs that wait (in memory, rebuilt at start-up from the jobs
//! table and the `job_confirmations` table, its SQL in `jobs/sqlite.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use brume_api::WorkId;

/// When a waiting job's payment is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Not finished yet: held.
    Unfinished,
    /// Released on its own at this time (ms since the epoch).
    At(u64),
}

/// The jobs whose payment waits for a confirmation.
#[derive(Debug)]
pub(crate) struct Deposits {
    window_ms: u64,
    waiting: parking_lot::Mutex<HashMap<String, Release>>,
}

impl Deposits {
    pub(crate) fn new(window_ms: u64) -> Arc<Deposits> {
        Arc::new(Deposits {
            window_ms,
            waiting: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// A job with `confirm` was submitted (or re-queued at start-up).
    pub(crate) fn submitted(&self, id: WorkId) {
        self.waiting
            .lock()
            .insert(id.to_string(), Release::Unfinished);
    }

    /// A job with `confirm` ended at `at_ms`: its window starts.
    pub(crate) fn finished(&self, id: WorkId, at_ms: u64) {
        let release = Release::At(at_ms.saturating_add(self.window_ms));
        self.waiting.lock().insert(id.to_string(), release);
    }

    /// The requester confirmed: nothing holds it any more. Whether the
    /// window had already released it.
    pub(crate) fn confirmed(&self, id: WorkId) -> bool {
        match self.waiting.lock().remove(&id.to_string()) {
            Some(Release::At(t)) => crate::now_ms() >= t,
            Some(Release::Unfinished) => false,
            None => true,
        }
    }
}

impl brume_settle::Gate for Deposits {
    fn held(&self, work_id: &str) -> bool {
        match self.waiting.lock().get(work_id) {
            Some(Release::Unfinished) => true,
            Some(Release::At(t)) => crate::now_ms() < *t,
            None => false,
        }
    }
}
