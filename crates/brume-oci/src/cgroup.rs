//! cgroup v1 limits and accounting for one container, where the host has
//! them: `pids` (a process cap), `memory` (a hard limit and the peak),
//! `cpu` (a CFS quota of the vCPUs granted) and `cpuacct` (CPU time).
//!
//! Each controller the provider can write gets a directory
//! `/sys/fs/cgroup/<controller>/brume/<provider>/<job>`. The process joins
//! them between fork and exec (writing `0`, "this process", to each
//! `cgroup.procs`), so nothing it starts escapes the accounting.
//! [`Cgroups::sweep`] removes what a killed provider left.

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";
const CONTROLLERS: [&str; 4] = ["pids", "memory", "cpu", "cpuacct"];

/// Which controllers this provider can use, and under what directory.
#[derive(Debug, Clone, Default)]
pub struct Cgroups {
    /// `(controller, .../brume/<provider>)` for each writable one.
    parents: Vec<(&'static str, PathBuf)>,
}

/// One container's cgroups.
#[derive(Debug)]
pub struct Group {
    dirs: Vec<(&'static str, PathBuf)>,
    /// `cgroup.procs` of each, for the child to join.
    pub(crate) procs: Vec<CString>,
}

impl Cgroups {
    /// Finds the v1 controllers mounted and writable, under a parent named
    /// for `provider`. None is an error: what is enforced is reported.
    pub fn detect(provider: &str) -> Cgroups {
        let mut parents = Vec::new();
        for c in CONTROLLERS {
            let mount = Path::new(ROOT).join(c);
            if !mount.join("cgroup.procs").exists() {
                continue;
            }
            let dir = mount.join("brume").join(provider);
            if fs::create_dir_all(&dir).is_ok() {
                parents.push((c, dir));
            }
        }
        Cgroups { parents }
    }

    /// The controllers in use.
    pub fn controllers(&self) -> Vec<&'static str> {
        self.parents.iter().map(|(c, _)| *c).collect()
    }

    pub fn has(&self, controller: &str) -> bool {
        self.parents.iter().any(|(c, _)| *c == controller)
    }

    /// Creates a group for job `name` with these limits.
    pub fn create(&self, name: &str, pids: u64, memory: u64, vcpus: u32) -> std::io::Result<Group> {
        let mut dirs = Vec::new();
        let mut procs = Vec::new();
        for (c, parent) in &self.parents {
            let dir = parent.join(name);
            fs::create_dir_all(&dir)?;
            match *c {
                "pids" => fs::write(dir.join("pids.max"), pids.to_string())?,
                "memory" => {
                    fs::write(dir.join("memory.limit_in_bytes"), memory.to_string())?;
                    // Swap would hide memory from the limit, where it can.
                    let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), memory.to_string());
                }
                "cpu" => {
                    fs::write(dir.join("cpu.cfs_period_us"), "100000")?;
                    fs::write(
                        dir.join("cpu.cfs_quota_us"),
                        (100_000 * u64::from(vcpus.max(1))).to_string(),
                    )?;
                }
                _ => {}
            }
            let p = dir.join("cgroup.procs");
            procs.push(
                CString::new(p.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?,
            );
            dirs.push((*c, dir));
        }
        Ok(Group { dirs, procs })
    }

    /// Removes this provider's (empty) groups and its parent directories,
    /// when it stops.
    pub fn remove(&self) {
        for (_, parent) in &self.parents {
            if let Ok(entries) = fs::read_dir(parent) {
                for e in entries.flatten() {
                    let _ = fs::remove_dir(e.path());
                }
            }
            let _ = fs::remove_dir(parent);
        }
    }

    /// Kills what is left in every job group under this provider's parent
    /// (a provider SIGKILLed mid-job) and removes the groups. Returns how
    /// many groups were removed.
    pub fn sweep(&self) -> usize {
        let mut removed = 0;
        for (_, parent) in &self.parents {
            let Ok(entries) = fs::read_dir(parent) else {
                continue;
            };
            for e in entries.flatten() {
                if e.path().is_dir() {
                    kill_all(&e.path());
                    if fs::remove_dir(e.path()).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        removed
    }
}

/// SIGKILLs every process in a cgroup directory.
fn kill_all(dir: &Path) {
    let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        // SAFETY: kill(2) with a pid read from the cgroup; no memory involved.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

impl Group {
    fn read(&self, controller: &str, file: &str) -> Option<u64> {
        let (_, dir) = self.dirs.iter().find(|(c, _)| *c == controller)?;
        fs::read_to_string(dir.join(file)).ok()?.trim().parse().ok()
    }

    /// CPU time used by every process that was in the group, in ns.
    pub fn cpu_ns(&self) -> Option<u64> {
        self.read("cpuacct", "cpuacct.usage")
    }

    /// The file [`cpu_ns`](Self::cpu_ns) reads, to follow a run live.
    pub(crate) fn cpu_file(&self) -> Option<PathBuf> {
        let (_, dir) = self.dirs.iter().find(|(c, _)| *c == "cpuacct")?;
        Some(dir.join("cpuacct.usage"))
    }

    /// The group's peak memory, in bytes.
    pub fn peak_memory(&self) -> Option<u64> {
        self.read("memory", "memory.max_usage_in_bytes")
    }

    /// Whether the memory limit was hit (an OOM kill, probably).
    pub fn memory_failcnt(&self) -> u64 {
        self.read("memory", "memory.failcnt").unwrap_or(0)
    }

    /// Whether the process cap refused a fork.
    pub fn pids_refused(&self) -> u64 {
        let Some((_, dir)) = self.dirs.iter().find(|(c, _)| *c == "pids") else {
            return 0;
        };
        // `pids.events`: "max N".
        fs::read_to_string(dir.join("pids.events"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    /// Kills whatever is still in the group.
    pub fn kill(&self) {
        for (_, dir) in &self.dirs {
            kill_all(dir);
        }
    }
}

/// Removes the empty ones of `dirs`; returns those left.
fn remove_empty(dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    dirs.into_iter()
        .filter(|d| fs::remove_dir(d).is_err() && d.exists())
        .collect()
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
        let dirs: Vec<PathBuf> = self.dirs.iter().map(|(_, d)| d.clone()).collect();
        let left = remove_empty(dirs);
        if left.is_empty() {
            return;
        }
        // A killed process takes a moment to leave its group, and the
        // group can't be removed before. Retry off this thread for a
        // while; `sweep` at the next start removes whatever is left.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut left = left;
                for _ in 0..400 {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    for d in &left {
                        kill_all(d);
                    }
                    left = remove_empty(left);
                    if left.is_empty() {
                        return;
                    }
                }
                tracing::warn!(groups = ?left, "job cgroups not removed; the next start removes them");
            });
        }
    }
}
