//! Batch work runs at a lower OS priority than functions.
//!
//! Jobs (assignments with a progress interval) run on a runtime of their
//! own whose worker threads have a lower priority ([`BatchPriority`]):
//! by default the `SCHED_IDLE` policy, so that a function's thread gets a
//! core the moment it wakes and batch uses what is left. That fits a
//! provider on an idle machine; an operator whose batch work must progress
//! beside other load can choose a nice value instead (`nice=10`: about a
//! tenth of a core against one busy thread of normal priority).
//!
//! Measured with `brume bench mixed` (2026-12-06, two cores, jobs of about
//! 55 ms): `SCHED_IDLE` kept the calls' p50 at its value without batch and
//! batch throughput at 0.78 of batch alone, where nice 10 let the p50 grow
//! by half and batch fall to 0.67. Either way the guest's yields enter the
//! kernel ([`EnterKernel`]), which is what keeps a call's p99 near its
//! value without batch.
//!
//! On systems without per-thread policies (or where they can't be set)
//! batch simply runs at the normal priority.

use std::future::Future;

use tokio::runtime::{Handle, Runtime};

/// How batch threads yield the CPU to functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchPriority {
    /// The `SCHED_IDLE` policy: runs only on cores nothing else wants.
    #[default]
    Idle,
    /// The normal policy at this nice value (1 to 19).
    Nice(u8),
}

impl std::str::FromStr for BatchPriority {
    type Err = String;

    /// `idle`, `nice` (10) or `nice=N` (1 to 19).
    fn from_str(s: &str) -> Result<BatchPriority, String> {
        let bad = || format!("{s:?}: expected `idle`, `nice` or `nice=N` with N from 1 to 19");
        match s {
            "idle" => Ok(BatchPriority::Idle),
            "nice" => Ok(BatchPriority::Nice(10)),
            _ => {
                let n: u8 = s
                    .strip_prefix("nice=")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(bad)?;
                if (1..=19).contains(&n) {
                    Ok(BatchPriority::Nice(n))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl std::fmt::Display for BatchPriority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchPriority::Idle => f.write_str("idle"),
            BatchPriority::Nice(n) => write!(f, "nice={n}"),
        }
    }
}

/// The batch runtime; shut down without blocking when dropped, so that it
/// may be dropped anywhere, an async context included.
pub(crate) struct BatchRuntime(Option<Runtime>);

impl std::fmt::Debug for BatchRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchRuntime")
    }
}

impl BatchRuntime {
    /// A runtime of `threads` worker threads at `priority`.
    pub fn new(threads: usize, priority: BatchPriority) -> std::io::Result<BatchRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("brume-batch")
            .on_thread_start(move || lower_priority(priority))
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
            let task = handle.spawn(EnterKernel {
                work: Box::pin(work),
                polled: false,
            });
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

/// Batch work that enters the kernel before every poll but the first.
///
/// A guest yields to its executor every `YIELD_FUEL` of compute (under a
/// millisecond). Without a system call there, a wakeup of a function's
/// thread on this core waits for the scheduler's next tick (up to 4 ms at
/// 250 Hz): kernels with lazy preemption (Linux 6.13 and later, `PREEMPT_NONE`
/// included) mark the running thread but don't interrupt its user code for
/// a wakeup in the normal class, whatever the two threads' priorities.
/// `sched_yield` hands the core to whatever waits, at the cost of a system
/// call per yield.
struct EnterKernel<F> {
    work: std::pin::Pin<Box<F>>,
    polled: bool,
}

impl<F: Future> Future for EnterKernel<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        if self.polled {
            yield_core();
        }
        self.polled = true;
        self.work.as_mut().poll(cx)
    }
}

fn yield_core() {
    #[cfg(unix)]
    // SAFETY: sched_yield has no preconditions.
    unsafe {
        libc::sched_yield();
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Lowers the calling thread's priority to `priority`.
fn lower_priority(priority: BatchPriority) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: both calls change only the calling thread's own policy or
        // nice value (pid 0 and our own thread id).
        let r = unsafe {
            match priority {
                BatchPriority::Idle => {
                    let param = libc::sched_param { sched_priority: 0 };
                    libc::sched_setscheduler(0, libc::SCHED_IDLE, &param)
                }
                BatchPriority::Nice(n) => {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::setpriority(libc::PRIO_PROCESS, tid, i32::from(n))
                }
            }
        };
        if r != 0 {
            tracing::debug!(
                "batch thread priority unchanged: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
}

#[cfg(test)]
mod tests {
    use super::*;

    const NICE: u8 = 10;

    #[test]
    fn priorities_parse_and_print() {
        for (s, p) in [
            ("idle", BatchPriority::Idle),
            ("nice", BatchPriority::Nice(10)),
            ("nice=19", BatchPriority::Nice(19)),
        ] {
            assert_eq!(s.parse::<BatchPriority>(), Ok(p));
        }
        assert_eq!(BatchPriority::Nice(10).to_string(), "nice=10");
        for bad in ["", "nice=0", "nice=20", "nice=-1", "low", "nice=x"] {
            let e = bad.parse::<BatchPriority>().expect_err(bad);
            assert!(e.contains("expected `idle`"), "{e}");
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn idle_priority_sets_the_idle_policy() {
        let batch = BatchRuntime::new(1, BatchPriority::Idle).expect("runtime");
        // SAFETY: reads this thread's own policy.
        let policy = batch
            .run(async { unsafe { libc::sched_getscheduler(0) } }, -1)
            .await;
        assert_eq!(policy, libc::SCHED_IDLE);
    }

    #[tokio::test]
    async fn work_runs_on_low_priority_threads_and_is_aborted_with_its_caller() {
        let batch = BatchRuntime::new(1, BatchPriority::Nice(NICE)).expect("runtime");
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
            assert_eq!(nice, i32::from(NICE));
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
