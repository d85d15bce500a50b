//! OCI container jobs for brume providers.
//!
//! - [`image`]: an OCI image layout tar, checked: one manifest, every blob
//!   against its digest and size. The manifest digest names the image.
//! - [`unpack`]: layers into a rootfs, treating them as hostile.
//! - [`run`]: one container under bubblewrap, with namespaces, a read-only
//!   root, seccomp, rlimits and (where the host has cgroup v1) pids,
//!   memory and CPU limits; CPU time and peak memory metered.
//! - [`Containers`]: what a provider holds: the runner, and the rootfs
//!   cache keyed by manifest digest (each image unpacked once).
//! - [`layout`]: writing layouts (test images; a directory to upload).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub mod cgroup;
pub mod files;
pub mod image;
pub mod layout;
pub mod registry;
pub mod run;
pub mod seccomp;
pub mod unpack;

pub use image::{Image, RunConfig};
pub use run::{Ended, Live, RunResult, RunSpec, Runner};
pub use unpack::UnpackLimits;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// Not a usable image layout (bad JSON, a digest that doesn't verify).
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// A layer tried something the unpacker refuses.
    #[error("unsafe layer: {0}")]
    UnsafeLayer(String),
    #[error("image too large: {0}")]
    TooLarge(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The sandbox could not be started.
    #[error("container runtime: {0}")]
    Runtime(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl OciError {
    /// A stable code, as the sandbox's errors have.
    pub fn code(&self) -> &'static str {
        match self {
            OciError::InvalidImage(_) | OciError::UnsafeLayer(_) | OciError::TooLarge(_) => {
                "invalid_module"
            }
            OciError::InvalidRequest(_) => "invalid_request",
            OciError::Runtime(_) | OciError::Io(_) => "internal",
        }
    }

    fn in_layer(self, digest: &str) -> OciError {
        match self {
            OciError::UnsafeLayer(m) => OciError::UnsafeLayer(format!("layer {digest}: {m}")),
            OciError::Io(e) => OciError::Io(std::io::Error::new(
                e.kind(),
                format!("layer {digest}: {e}"),
            )),
            other => other,
        }
    }
}

/// How a provider runs containers.
#[derive(Debug, Clone)]
pub struct ContainersConfig {
    /// Holds `rootfs/` (the cache) and `work/` (each job's `/work`).
    pub dir: PathBuf,
    /// `bwrap`; default: the first on `PATH`.
    pub bwrap: Option<PathBuf>,
    /// The host uid the sandbox runs as when the provider is root.
    pub uid: u32,
    /// Names this provider's cgroups (its address, say).
    pub name: String,
}

/// The uid containers run as under a root provider, unless configured.
pub const DEFAULT_UID: u32 = 61_000;

/// A provider's containers: the runner and the rootfs cache.
#[derive(Debug)]
pub struct Containers {
    runner: Runner,
    rootfs_dir: PathBuf,
    limits: UnpackLimits,
    /// Image blob digest → its unpacked rootfs and run config.
    ready: Mutex<HashMap<String, Arc<Prepared>>>,
}

/// An image ready to run.
#[derive(Debug)]
pub struct Prepared {
    pub manifest_digest: String,
    pub rootfs: PathBuf,
    pub config: RunConfig,
}

/// What a provider enforces on containers, for `brume provide status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Enforcement {
    pub runtime: String,
    pub uid: Option<u32>,
    pub cgroups: Vec<String>,
    pub notes: Vec<String>,
}

/// The first `bwrap` on `PATH`, if bubblewrap is installed.
pub fn bubblewrap() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("bwrap"))
        .find(|p| p.is_file())
}

impl Containers {
    /// Finds bubblewrap and the cgroups, and removes what a killed
    /// provider left (running containers, work dirs). An error means this
    /// provider can't run containers at all.
    pub fn new(config: ContainersConfig) -> Result<Containers, OciError> {
        let bwrap = config
            .bwrap
            .or_else(bubblewrap)
            .ok_or_else(|| OciError::Runtime("bubblewrap (bwrap) is not installed".into()))?;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let cgroups = if root {
            cgroup::Cgroups::detect(&config.name)
        } else {
            cgroup::Cgroups::default()
        };
        let swept = cgroups.sweep();
        let work_root = config.dir.join("work");
        let _ = std::fs::remove_dir_all(&work_root);
        std::fs::create_dir_all(&work_root)?;
        let rootfs_dir = config.dir.join("rootfs");
        std::fs::create_dir_all(&rootfs_dir)?;
        if swept > 0 {
            tracing::warn!(swept, "removed containers left by an earlier run");
        }
        let uid = root.then_some(config.uid);
        if let Some(uid) = uid {
            searchable(&config.dir, uid)?;
        }
        let seccomp = Arc::new(seccomp::program().map_err(OciError::Runtime)?);
        Ok(Containers {
            runner: Runner {
                bwrap,
                uid,
                cgroups,
                seccomp,
                work_root,
                own_processes: if root { 0 } else { own_processes() },
            },
            rootfs_dir,
            limits: UnpackLimits::default(),
            ready: Mutex::new(HashMap::new()),
        })
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// What is enforced here, and what is not.
    pub fn enforcement(&self) -> Enforcement {
        let cgroups: Vec<String> = self
            .runner
            .cgroups
            .controllers()
            .iter()
            .map(|c| c.to_string())
            .collect();
        let mut notes = vec![
            "namespaces: user, pid, net (no network), ipc, uts, mount; read-only rootfs; seccomp deny list; no capabilities".to_owned(),
            "rlimits: open files, address space (memory), no core files".to_owned(),
        ];
        match self.runner.uid {
            Some(uid) => notes.push(format!("runs as uid {uid}; the process rlimit counts only the sandbox's processes")),
            None => notes.push("runs as the provider's own uid: the process rlimit is shared with the provider's own processes (approximate)".to_owned()),
        }
        for c in ["pids", "memory", "cpu", "cpuacct"] {
            if !self.runner.cgroups.has(c) {
                notes.push(format!(
                    "no cgroup v1 {c} controller: {}",
                    match c {
                        "pids" => "the process cap rests on the rlimit alone",
                        "memory" => "memory rests on the address-space rlimit alone",
                        "cpu" => "vCPUs are not capped",
                        _ => "CPU time is metered from rusage",
                    }
                ));
            }
        }
        Enforcement {
            runtime: format!("bubblewrap ({})", self.runner.bwrap.display()),
            uid: self.runner.uid,
            cgroups,
            notes,
        }
    }

    /// The image whose layout tar has sha256 `blob_digest`, if it is
    /// already unpacked.
    pub fn cached(&self, blob_digest: &str) -> Option<Arc<Prepared>> {
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(blob_digest)
            .cloned()
    }

    /// Checks and unpacks an image layout tar (sha256 `blob_digest`) into
    /// the cache, unless its manifest is there already. Blocking: call it
    /// on a blocking thread. Returns whether it unpacked.
    pub fn prepare(
        &self,
        blob_digest: &str,
        tar: &[u8],
    ) -> Result<(Arc<Prepared>, bool), OciError> {
        let image = Image::parse(tar, self.limits.max_bytes)?;
        let rootfs = self.rootfs_dir.join(&image.manifest_digest);
        let cold = !rootfs.is_dir();
        if cold {
            let tmp = self.rootfs_dir.join(format!(
                ".tmp-{}-{}",
                image.manifest_digest,
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir(&tmp)?;
            let result = unpack::unpack(&image, &tmp, self.limits);
            if let Err(e) = result {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
            // Another thread may have won the race: its rootfs is as good.
            if std::fs::rename(&tmp, &rootfs).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        let prepared = Arc::new(Prepared {
            manifest_digest: image.manifest_digest,
            rootfs,
            config: image.config,
        });
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(blob_digest.to_owned(), prepared.clone());
        Ok((prepared, cold))
    }
}

/// Processes and threads of this process's uid now (`/proc`).
fn own_processes() -> u64 {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| e.metadata().is_ok_and(|m| m.uid() == me))
        .map(|e| std::fs::read_dir(e.path().join("task")).map_or(1, |t| t.count() as u64))
        .sum()
}

impl Drop for Containers {
    fn drop(&mut self) {
        self.runner.cgroups.remove();
    }
}

/// Fails unless `uid` can reach `dir` (bubblewrap, running as `uid`,
/// mounts paths under it).
fn searchable(dir: &Path, uid: u32) -> Result<(), OciError> {
    use std::os::unix::fs::MetadataExt;
    let dir = dir.canonicalize()?;
    for a in dir.ancestors() {
        let m = std::fs::metadata(a)?;
        let ok = m.mode() & 0o001 != 0 || (m.uid() == uid && m.mode() & 0o100 != 0);
        if !ok {
            return Err(OciError::Runtime(format!(
                "{} is not searchable by the sandbox's uid {uid}: give it o+x (chmod o+x), or put the provider's data elsewhere",
                a.display()
            )));
        }
    }
    Ok(())
}
