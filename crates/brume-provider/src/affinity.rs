//! Affinity sessions' work dirs (`x-brume-affinity`): every unit of one
//! session that runs here gets the same directory,
//! `DATA/sessions/<key>`, preopened as [`AFFINITY_DIR`], so that a call
//! can read what an earlier one wrote.
//!
//! A dir is bounded: when a unit leaves it larger than the session's
//! `max_bytes`, it is emptied (the session's state is lost, and the
//! provider logs it). It is removed `ttl_ms` after the last unit of its
//! session ended, unless a unit is running in it. The provider's start
//! removes whatever an earlier run left: a session does not outlive the
//! provider's connection to the broker, which moves it elsewhere.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use brume_api::wire::{AFFINITY_DIR, Affinity};
use brume_sandbox::DirMapping;

#[derive(Debug)]
struct Entry {
    used: Instant,
    ttl: Duration,
    running: u32,
}

/// The session dirs of this provider.
#[derive(Debug)]
pub(crate) struct SessionDirs {
    root: PathBuf,
    live: parking_lot::Mutex<HashMap<String, Entry>>,
}

impl SessionDirs {
    /// Session dirs under `root`, which is emptied (blocking: at start-up).
    pub fn new(root: PathBuf) -> SessionDirs {
        let _ = std::fs::remove_dir_all(&root);
        SessionDirs {
            root,
            live: Default::default(),
        }
    }

    /// Opens `a`'s dir for a unit starting at `now`: created if new, and
    /// kept until [`SessionDirs::close`].
    pub async fn open(&self, a: &Affinity, now: Instant) -> Result<DirMapping, String> {
        if !Affinity::key_is_valid(&a.key) {
            return Err(format!("affinity key {:?} is not 64 hex digits", a.key));
        }
        let host = self.root.join(&a.key);
        {
            let mut live = self.live.lock();
            let e = live.entry(a.key.clone()).or_insert(Entry {
                used: now,
                ttl: Duration::ZERO,
                running: 0,
            });
            e.running += 1;
            e.used = now;
            e.ttl = Duration::from_millis(a.ttl_ms);
        }
        let at = host.clone();
        let made = tokio::task::spawn_blocking(move || std::fs::create_dir_all(&at))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| format!("session dir: {e}")));
        if let Err(e) = made {
            self.release(&a.key, now);
            return Err(e);
        }
        Ok(DirMapping {
            host,
            guest: AFFINITY_DIR.into(),
        })
    }

    /// The unit that opened `a`'s dir ended at `now`; a dir left over
    /// `max_bytes` is emptied.
    pub async fn close(&self, a: &Affinity, now: Instant) {
        self.release(&a.key, now);
        let dir = self.root.join(&a.key);
        let max = a.max_bytes;
        let _ = tokio::task::spawn_blocking(move || {
            let size = dir_size(&dir);
            if size > max {
                tracing::warn!(
                    dir = %dir.display(),
                    size,
                    max,
                    "an affinity session's dir grew over its bound: emptied"
                );
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::create_dir_all(&dir);
            }
        })
        .await;
    }

    fn release(&self, key: &str, now: Instant) {
        if let Some(e) = self.live.lock().get_mut(key) {
            e.running = e.running.saturating_sub(1);
            e.used = now;
        }
    }

    /// Forgets the sessions idle past their TTL at `now`, none running;
    /// returns their dirs, to remove.
    pub fn expired(&self, now: Instant) -> Vec<PathBuf> {
        let mut gone = Vec::new();
        self.live.lock().retain(|key, e| {
            let keep = e.running > 0 || now.saturating_duration_since(e.used) < e.ttl;
            if !keep {
                gone.push(self.root.join(key));
            }
            keep
        });
        gone
    }

    /// Removes the dirs of sessions expired at `now` (blocking).
    pub fn sweep(&self, now: Instant) -> usize {
        let gone = self.expired(now);
        for dir in &gone {
            let _ = std::fs::remove_dir_all(dir);
        }
        gone.len()
    }
}

/// How often expired session dirs are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Removes expired session dirs until the provider stops.
pub(crate) async fn sweep_loop(shared: std::sync::Arc<crate::Shared>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || s.sessions.sweep(Instant::now())).await;
    }
}

/// Bytes in the files under `dir` (symlinks not followed; unreadable
/// entries count 0).
fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total = total.saturating_add(m.len()),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(max_bytes: u64) -> Affinity {
        Affinity {
            key: "ab".repeat(32),
            ttl_ms: 60_000,
            max_bytes,
        }
    }

    #[tokio::test]
    async fn a_dir_is_shared_bounded_and_removed_after_its_ttl() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = SessionDirs::new(tmp.path().join("sessions"));
        let a = session(8);
        let t0 = Instant::now();
        let ttl = Duration::from_millis(a.ttl_ms);

        let m = dirs.open(&a, t0).await.expect("open");
        assert_eq!(m.guest, AFFINITY_DIR);
        std::fs::write(m.host.join("state"), b"1234").expect("write");
        dirs.close(&a, t0).await;
        // The next unit finds it.
        let again = dirs.open(&a, t0).await.expect("open again");
        assert_eq!(
            std::fs::read(again.host.join("state")).expect("read"),
            b"1234"
        );
        // Running units keep it whatever the clock says.
        assert!(dirs.expired(t0 + ttl * 10).is_empty());
        // Over its bound: emptied when the unit ends.
        std::fs::write(again.host.join("big"), b"123456789").expect("write");
        dirs.close(&a, t0).await;
        assert!(!again.host.join("state").exists() && again.host.exists());
        // Idle: kept for its TTL, then removed.
        assert_eq!(dirs.sweep(t0 + ttl - Duration::from_millis(1)), 0);
        assert_eq!(dirs.sweep(t0 + ttl), 1);
        assert!(!again.host.exists());
    }

    #[tokio::test]
    async fn a_malformed_key_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = SessionDirs::new(tmp.path().join("sessions"));
        let mut a = session(8);
        a.key = "../escape".into();
        assert!(dirs.open(&a, Instant::now()).await.is_err());
    }
}
