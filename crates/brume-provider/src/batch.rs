//! Batch work runs at a lower OS priority than functions.
//!
//! Jobs (assignments with a progress interval) run on a runtime of their
//! own whose worker threads have a nice value of [`NICE`], so that when
//! both wait for a core, an invocation on the provider's main runtime gets
//! it first. Functions keep the CPU; batch uses what is left. On systems
//! without per-thread nice values (or where it can't be raised) batch
//! simply runs at the normal priority.
//!
//! `SCHED_IDLE` was tried (2026-12-04, `brume bench mixed`): it cut the
//! mixed p99 of calls by about a quarter but let batch throughput under
//! calls fall to 0.4–0.6 of batch alone, below the 0.7 target, so nice 10
//! stays.

use std::future::Future;

use tokio::runtime::{Handle, Runtime};

/// The nice value of batch threads (0 normal, 19 lowest).
pub(crate) const NICE: i32 = 10;

/// The batch runtime; shut down without blocking when dropped, so that it
/// may be dropped anywhere, an async context included.
pub(crate) struct BatchRuntime(Option<Runtime>);

impl std::fmt::Debug for BatchRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchRuntime")
    }
}

impl BatchRuntime {
    /// A runtime of `threads` worker threads at nice [`NICE`].
    pub fn new(threads: usize) -> std::io::Result<BatchRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("brume-batch")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        Ok(BatchRuntime(Some(rt)))
    }

    fn handle(&self) -> Option<&Handle> {
        self.0.as_ref().map(Runtime::handle)
    }

    /// Runs `work` on the batch runtime and returns its output; `or` if it
    /// panicked. Dropping the returned future (the session aborting the
    /// attempt) aborts `work` too.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
        or: T,
    ) -> impl Future<Output = T> + Send + 'static {
        let handle = self.handle().cloned();
        async move {
            let Some(handle) = handle else {
                return work.await;
            };
            let task = handle.spawn(work);
            let _abort = AbortOnDrop(task.abort_handle());
            task.await.unwrap_or(or)
        }
    }
}

impl Drop for BatchRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Raises the calling thread's nice value to [`NICE`].
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority on our own
        // thread id only changes this thread's nice value.
        let r = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, NICE)
        };
        if r != 0 {
            tracing::debug!(
                "batch thread priority unchanged: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_low_priority_threads_and_is_aborted_with_its_caller() {
        let batch = BatchRuntime::new(1).expect("runtime");
        let name = batch
            .run(
                async { std::thread::current().name().map(String::from) },
                None,
            )
            .await;
        assert_eq!(name.as_deref(), Some("brume-batch"));
        #[cfg(target_os = "linux")]
        {
            let nice = batch
                .run(
                    async {
                        // SAFETY: reads this thread's own nice value.
                        unsafe {
                            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                            libc::getpriority(libc::PRIO_PROCESS, tid)
                        }
                    },
                    -1,
                )
                .await;
            assert_eq!(nice, NICE);
        }
        // Dropping the caller's future aborts the work.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let fut = batch.run(
            async move {
                let _tx = tx;
                std::future::pending::<()>().await;
            },
            (),
        );
        let caller = tokio::spawn(fut);
        tokio::task::yield_now().await;
        caller.abort();
        assert!(rx.await.is_err(), "the work's end dropped its sender");
        // A panic gives the fallback value.
        assert_eq!(batch.run(async { panic!("boom") }, 7u32).await, 7);
    }
}
