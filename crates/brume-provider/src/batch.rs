//! Batch work runs at a lower OS priority than functions.
//!
//! Jobs (assignments with a progress interval) run on a runtime of their
//! own whose threads are in the `SCHED_IDLE` class (Linux), with a nice
//! value of [`NICE`] as well: a runnable thread of normal priority (an
//! invocation on the provider's main runtime, the broker, anything else on
//! the machine) always preempts them on wakeup. Functions keep the CPU;
//! batch uses what is left. Nice alone was not enough: a waking function
//! thread could wait behind a nice-10 thread for most of a time slice,
//! which doubled the p99 of calls under batch load. Where neither can be
//! set, batch simply runs at the normal priority.

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

/// Puts the calling thread in `SCHED_IDLE` and raises its nice value to
/// [`NICE`] (both only lower its priority, so no privilege is needed).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority and
        // sched_setscheduler on our own thread id only change this thread's
        // scheduling, and `param` outlives the call.
        let (nice, class) = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
            let nice = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE);
            let param = libc::sched_param { sched_priority: 0 };
            let class = libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param);
            (nice, class)
        };
        if nice != 0 || class != 0 {
            tracing::debug!(
                "batch thread priority not fully lowered: {}",
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
            // SAFETY: reads this thread's own scheduling class.
            let class = batch
                .run(async { unsafe { libc::sched_getscheduler(0) } }, -1)
                .await;
            assert_eq!(class, libc::SCHED_IDLE);
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
