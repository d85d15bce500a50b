//! A daemon's own tokio runtime, standing in for a process of its own
//! ([`crate::LocalNetBuilder::runtime_per_daemon`]).

use std::future::Future;

use crate::LocalNetError;

/// A daemon's own runtime, or none (the caller's). Dropping it shuts the
/// runtime down in the background, so it may be dropped in async code.
#[derive(Debug, Default)]
pub(crate) struct DaemonRuntime(Option<tokio::runtime::Runtime>);

impl DaemonRuntime {
    /// With `workers`, a multi-threaded runtime with that many workers and
    /// threads named `thread_name`; else none.
    pub(crate) fn new(
        workers: Option<usize>,
        thread_name: &str,
    ) -> Result<DaemonRuntime, LocalNetError> {
        let Some(workers) = workers else {
            return Ok(DaemonRuntime(None));
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(thread_name)
            .enable_all()
            .build()
            .map_err(|source| LocalNetError::Runtime {
                daemon: thread_name.to_string(),
                source,
            })?;
        Ok(DaemonRuntime(Some(rt)))
    }

    pub(crate) fn is_own(&self) -> bool {
        self.0.is_some()
    }

    /// Runs `fut` on this runtime (spawned, and awaited from the caller's),
    /// or right here when there is none.
    pub(crate) async fn run<F>(&self, fut: F, daemon: &str) -> Result<F::Output, LocalNetError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(rt) => rt.spawn(fut).await.map_err(|source| LocalNetError::Join {
                daemon: daemon.to_string(),
                source,
            }),
            // Boxed: a daemon's start is a large future, and the caller's
            // may be a test thread's stack.
            None => Ok(Box::pin(fut).await),
        }
    }
}

impl Drop for DaemonRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
