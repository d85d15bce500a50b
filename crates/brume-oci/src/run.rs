//! Running one container under bubblewrap, bounded and metered.
//!
//! The process tree is: the provider → `bwrap` (as the sandbox uid when
//! the provider is root) → the entrypoint, in new user, pid, network, ipc,
//! uts and cgroup namespaces, over the read-only rootfs with a writable
//! `/work` and a tmpfs `/tmp`, all capabilities dropped, under the
//! [`crate::seccomp`] filter. Before exec the child joins the job's
//! cgroups and takes rlimits (processes, open files, address space, no
//! core files). CPU time and peak memory come from the cgroup where there
//! is one, else from `wait4`'s rusage (which covers every descendant the
//! sandbox's init reaped).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::OciError;
use crate::cgroup::{Cgroups, Group};

/// The fd number bubblewrap reads the seccomp program from.
const SECCOMP_FD: i32 = 10;

/// How a provider runs containers.
#[derive(Debug, Clone)]
pub struct Runner {
    pub(crate) bwrap: PathBuf,
    /// The host uid (and gid) the sandbox runs as; `None`: the provider's.
    pub(crate) uid: Option<u32>,
    pub(crate) cgroups: Cgroups,
    pub(crate) seccomp: Arc<Vec<u8>>,
    /// Each job's `/work` is a directory here.
    pub(crate) work_root: PathBuf,
    /// Under the provider's own uid without a pids cgroup: the processes
    /// that uid had at start, which a container's process rlimit is added
    /// to (approximate, but a fork bomb stays bounded).
    pub(crate) own_processes: u64,
}

/// One container run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// A name unique among this provider's running jobs (cgroup, work dir).
    pub name: String,
    pub rootfs: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The directory it starts in (default `/work`).
    pub working_dir: Option<String>,
    pub stdin: Bytes,
    pub memory_bytes: u64,
    pub timeout: Duration,
    /// Each of stdout and stderr.
    pub max_output_bytes: u64,
    pub vcpus: u32,
    /// Processes and threads it may have at once.
    pub max_processes: u64,
    pub max_open_files: u64,
    /// Files written into `/work` before it starts: (path, bytes).
    pub inputs: Vec<(String, Bytes)>,
    /// Files read back from `/work` when it exits, at most
    /// `max_output_bytes` in all.
    pub outputs: Vec<String>,
    /// Host device nodes passed in (GPUs: `/dev/nvidia0`, ...).
    pub devices: Vec<String>,
    /// Share the host's network (no network namespace of its own): only
    /// for jobs that may have it. Off, it has no network at all.
    pub network: bool,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The entrypoint exited (a signal is `128 + n`, as in a shell).
    Exited(i32),
    Timeout,
    /// stdout or stderr went over its budget.
    OutputLimit,
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub ended: Ended,
    pub stdout: Bytes,
    pub stderr: Bytes,
    pub cpu_ns: u64,
    pub peak_memory_bytes: u64,
    pub wall: Duration,
    /// The memory limit was hit (the kernel refused or killed).
    pub memory_limited: bool,
    /// The process limit refused a fork.
    pub processes_limited: bool,
    /// The output files it left: (path, bytes), in the order asked.
    pub outputs: Vec<(String, Bytes)>,
}

/// stderr as it is written, for progress reports.
#[derive(Debug, Default)]
pub struct Live {
    stderr: Mutex<Vec<u8>>,
    /// The run's `cpuacct.usage`, once its cgroup exists.
    cpu_file: Mutex<Option<std::path::PathBuf>>,
}

impl Live {
    pub fn take_stderr(&self) -> Bytes {
        let mut s = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        Bytes::from(std::mem::take(&mut *s))
    }

    /// CPU time the run has used so far, in ns, where a `cpuacct` cgroup
    /// counts it (`None` without one: rusage counts only at the end).
    /// Reads a cgroup file: call it off the async runtime.
    pub fn cpu_ns(&self) -> Option<u64> {
        let file = self
            .cpu_file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }
}

/// The child's pid, killed on drop unless it was reaped: cancelling a run
/// (dropping its future) kills the container.
struct Reaper {
    pid: i32,
    reaped: Arc<Mutex<bool>>,
}

impl Reaper {
    fn kill(&self) {
        let reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if !*reaped {
            // SAFETY: kill(2) on our own unreaped child: the pid can't be reused.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What `wait4` says of the child.
struct Waited {
    status: i32,
    rusage: libc::rusage,
}

/// Waits for `pid` on a blocking thread: first without reaping (so a
/// concurrent kill can't hit a reused pid), then reaps with its rusage.
async fn wait(pid: i32, reaped: Arc<Mutex<bool>>) -> Result<Waited, OciError> {
    tokio::task::spawn_blocking(move || {
        // SAFETY: a zeroed siginfo_t is valid for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: waitid on our own child, writing into `info`.
            let r = unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid as u32,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if r == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(OciError::Io(e));
            }
        }
        let mut reaped = reaped.lock().unwrap_or_else(|e| e.into_inner());
        let mut status = 0;
        // SAFETY: a zeroed rusage is valid for wait4 to fill.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child that has exited.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        *reaped = true;
        if r < 0 {
            return Err(OciError::Io(std::io::Error::last_os_error()));
        }
        Ok(Waited { status, rusage })
    })
    .await
    .map_err(|e| OciError::Io(std::io::Error::other(e)))?
}

fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        -1
    }
}

impl Runner {
    /// The bubblewrap command line for `spec`.
    fn command(&self, spec: &RunSpec, work: &std::path::Path) -> std::process::Command {
        let mut c = std::process::Command::new(&self.bwrap);
        c.args([
            "--unshare-user",
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-uts",
            "--unshare-cgroup-try",
        ]);
        if !spec.network {
            c.arg("--unshare-net");
        }
        c.args([
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "brume",
            "--uid",
            "0",
            "--gid",
            "0",
        ]);
        c.arg("--ro-bind").arg(&spec.rootfs).arg("/");
        c.arg("--bind").arg(work).arg("/work");
        c.args([
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--cap-drop",
            "ALL",
            "--clearenv",
        ]);
        for d in &spec.devices {
            c.arg("--dev-bind").arg(d).arg(d);
        }
        c.args(["--seccomp", &SECCOMP_FD.to_string()]);
        c.args(["--chdir", spec.working_dir.as_deref().unwrap_or("/work")]);
        if !spec.env.iter().any(|(k, _)| k == "PATH") {
            c.args([
                "--setenv",
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ]);
        }
        for (k, v) in &spec.env {
            c.arg("--setenv").arg(k).arg(v);
        }
        c.arg("--").args(&spec.argv);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs `spec` to its end. Dropping the future kills the container.
    pub async fn run(&self, spec: &RunSpec, live: Option<&Live>) -> Result<RunResult, OciError> {
        if spec.argv.is_empty() {
            return Err(OciError::InvalidRequest(
                "nothing to run: the image has no entrypoint or cmd and the job gave no args"
                    .into(),
            ));
        }
        let work = self.work_root.join(&spec.name);
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let _work_guard = RemoveDir(work.clone());
        if let Some(uid) = self.uid {
            std::os::unix::fs::chown(&work, Some(uid), Some(uid))?;
        }
        if !spec.inputs.is_empty() {
            let (w, inputs, uid) = (work.clone(), spec.inputs.clone(), self.uid);
            tokio::task::spawn_blocking(move || crate::files::place_inputs(&w, &inputs, uid))
                .await
                .map_err(|e| OciError::Io(std::io::Error::other(e)))??;
        }
        let group = if self.cgroups.controllers().is_empty() {
            None
        } else {
            Some(self.cgroups.create(
                &spec.name,
                spec.max_processes,
                spec.memory_bytes,
                spec.vcpus,
            )?)
        };
        if let (Some(live), Some(g)) = (live, &group) {
            *live.cpu_file.lock().unwrap_or_else(|e| e.into_inner()) = g.cpu_file();
        }
        let seccomp = seccomp_pipe(&self.seccomp)?;
        let mut cmd = self.command(spec, &work);
        let setup = ChildSetup {
            procs: group.as_ref().map(|g| g.procs.clone()).unwrap_or_default(),
            uid: self.uid,
            seccomp_fd: seccomp.as_raw_fd(),
            memory: spec.memory_bytes,
            // With a pids cgroup, the cap is per job; the rlimit would be
            // shared by every job under the sandbox uid.
            processes: (!self.cgroups.has("pids")).then_some(match self.uid {
                Some(_) => spec.max_processes,
                None => self.own_processes + spec.max_processes,
            }),
            files: spec.max_open_files,
        };
        // SAFETY: the closure only makes async-signal-safe system calls.
        unsafe { cmd.pre_exec(move || setup.apply()) };
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| OciError::Runtime(format!("start {}: {e}", self.bwrap.display())))?;
        drop(seccomp);
        let reaper = Reaper {
            pid: child.id() as i32,
            reaped: Arc::new(Mutex::new(false)),
        };
        let (stdin, stdout, stderr) = pipes(&mut child)?;
        let stop = || {
            reaper.kill();
            if let Some(g) = &group {
                g.kill();
            }
        };
        let feed = feed(stdin, spec.stdin.clone());
        let out = read_bounded(stdout, spec.max_output_bytes, None, &stop);
        let err = read_bounded(stderr, spec.max_output_bytes, live, &stop);
        let waited = wait(reaper.pid, reaper.reaped.clone());
        let all = async { tokio::join!(feed, out, err, waited) };
        let (ended, stdout, stderr, waited) = tokio::select! {
            (_, out, err, waited) = all => {
                let over = out.1 || err.1;
                let w = waited?;
                let ended = if over { Ended::OutputLimit } else { Ended::Exited(exit_code(w.status)) };
                (ended, out.0, err.0, Some(w))
            }
            _ = tokio::time::sleep(spec.timeout) => (Ended::Timeout, Bytes::new(), Bytes::new(), None),
        };
        let wall = started.elapsed();
        stop();
        let (ru_cpu, ru_rss) = waited.as_ref().map_or((0, 0), |w| {
            let t = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
            (
                t(w.rusage.ru_utime) + t(w.rusage.ru_stime),
                w.rusage.ru_maxrss as u64 * 1024,
            )
        });
        let m = Metered::of(group.as_ref(), ru_cpu, ru_rss);
        let outputs = match ended {
            Ended::Exited(_) if !spec.outputs.is_empty() => {
                let (w, names, limit) = (work.clone(), spec.outputs.clone(), spec.max_output_bytes);
                tokio::task::spawn_blocking(move || {
                    crate::files::collect_outputs(&w, &names, limit)
                })
                .await
                .map_err(|e| OciError::Io(std::io::Error::other(e)))??
            }
            _ => Vec::new(),
        };
        Ok(RunResult {
            outputs,
            ended,
            stdout,
            stderr,
            cpu_ns: m.cpu_ns,
            peak_memory_bytes: m.peak,
            wall,
            memory_limited: m.memory_limited,
            processes_limited: m.processes_limited,
        })
    }
}

struct Metered {
    cpu_ns: u64,
    peak: u64,
    memory_limited: bool,
    processes_limited: bool,
}

impl Metered {
    fn of(group: Option<&Group>, ru_cpu: u64, ru_rss: u64) -> Metered {
        Metered {
            cpu_ns: group.and_then(Group::cpu_ns).unwrap_or(ru_cpu).max(ru_cpu),
            peak: group
                .and_then(Group::peak_memory)
                .unwrap_or(ru_rss)
                .max(ru_rss),
            memory_limited: group.is_some_and(|g| g.memory_failcnt() > 0),
            processes_limited: group.is_some_and(|g| g.pids_refused() > 0),
        }
    }
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the child does between fork and exec.
struct ChildSetup {
    procs: Vec<CString>,
    uid: Option<u32>,
    seccomp_fd: i32,
    memory: u64,
    processes: Option<u64>,
    files: u64,
}

fn check(r: libc::c_int) -> std::io::Result<()> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl ChildSetup {
    /// Runs in the forked child: only async-signal-safe calls.
    fn apply(&self) -> std::io::Result<()> {
        // SAFETY: plain system calls on values owned by `self`.
        unsafe {
            for p in &self.procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                check(fd)?;
                let r = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                check(r as libc::c_int)?;
            }
            let limit = |res, n: u64| {
                let l = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                check(libc::setrlimit(res, &l))
            };
            limit(libc::RLIMIT_NOFILE, self.files)?;
            limit(libc::RLIMIT_AS, self.memory)?;
            limit(libc::RLIMIT_CORE, 0)?;
            check(libc::dup2(self.seccomp_fd, SECCOMP_FD))?;
            // Only under a uid of its own does a process cap count just the
            // sandbox's processes (and root is exempt from it).
            if let Some(n) = self.processes {
                limit(libc::RLIMIT_NPROC, n)?;
            }
            if let Some(uid) = self.uid {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(uid))?;
                check(libc::setuid(uid))?;
            }
        }
        Ok(())
    }
}

/// A pipe holding the seccomp program, its read end returned.
fn seccomp_pipe(program: &[u8]) -> std::io::Result<OwnedFd> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds that we then own.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds are fresh and ours.
    let (read, write) = unsafe {
        (
            OwnedFd::from_raw_fd(fds[0]),
            std::fs::File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    };
    // Far below a pipe's buffer: no reader is needed to finish the write.
    std::io::Write::write_all(&mut &write, program)?;
    Ok(read)
}

type Pipes = (
    tokio::net::unix::pipe::Sender,
    tokio::net::unix::pipe::Receiver,
    tokio::net::unix::pipe::Receiver,
);

fn pipes(child: &mut std::process::Child) -> std::io::Result<Pipes> {
    let missing = || std::io::Error::other("a child pipe is missing");
    let stdin = child.stdin.take().ok_or_else(missing)?;
    let stdout = child.stdout.take().ok_or_else(missing)?;
    let stderr = child.stderr.take().ok_or_else(missing)?;
    Ok((
        tokio::net::unix::pipe::Sender::from_owned_fd(OwnedFd::from(stdin))?,
        tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(stdout))?,
        tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(stderr))?,
    ))
}

async fn feed(mut to: tokio::net::unix::pipe::Sender, data: Bytes) {
    // A program that does not read its stdin closes the pipe: not an error.
    let _ = to.write_all(&data).await;
}

/// Reads to EOF, keeping at most `limit` bytes; `true` if there was more
/// (and then the container is stopped).
async fn read_bounded(
    mut from: tokio::net::unix::pipe::Receiver,
    limit: u64,
    live: Option<&Live>,
    stop: &(dyn Fn() + Sync),
) -> (Bytes, bool) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return (Bytes::from(out), false),
            Ok(n) => {
                if out.len() as u64 + n as u64 > limit {
                    stop();
                    return (Bytes::from(out), true);
                }
                out.extend_from_slice(&buf[..n]);
                if let Some(live) = live {
                    live.stderr
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]);
                }
            }
        }
    }
}
