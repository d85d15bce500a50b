//! `brume bench container`: OCI container jobs, through the product and
//! against the same work done with less of it, in the same run.
//!
//! A real broker and one real provider taking container jobs start in this
//! process (as for `brume bench job`), with a busybox image built from the
//! host's `/bin/busybox` published as service `busybox` (entrypoint
//! `/bin/sh -c`). Then, in order:
//!
//! 1. Cold starts: a few fresh images (busybox plus a file of their own, so
//!    each digest is new), each published and then run once: the provider
//!    fetches, checks and unpacks the image before it runs. The same tar is
//!    then unpacked by a `brume_oci::Containers` of the bench's own, alone.
//! 2. Warm starts, interleaved: a job of the cached image doing nothing
//!    (`true`) through the broker and provider; the same no-op container
//!    through `brume_oci`'s runner directly (bubblewrap, cgroups, seccomp:
//!    no broker, no provider); and the same busybox `sh -c true` as a bare
//!    host process.
//! 3. With the network stopped, a CPU-bound busybox shell loop in a
//!    container through the runner and as a bare host process,
//!    interleaved: wall time, and the CPU time the container was metered
//!    against the bare process's `wait4` rusage.
//!
//! The provider reports a job `running` when it accepts it, before it
//! fetches or unpacks the image, so a container's start is timed to the
//! job's `succeeded` event: submitted until the program has run (and exited
//! at once). Submission to `running` is reported too.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use brume_api::ServiceKind;
use brume_api::rest::{EventKind, JobSpec};
use brume_client::Client;
use brume_oci::layout::Builder;
use brume_oci::{Containers, ContainersConfig, Ended, RunSpec};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::json;

use crate::{Samples, round};

/// The no-op the start is timed with.
const NOOP: &str = "true";
/// Iterations of the CPU-bound shell loop (about 0.3 s of CPU here).
const CPU_LOOP_ITERATIONS: u64 = 200_000;
/// Fresh images started cold.
const COLD_IMAGES: usize = 3;
/// The host binary every image and every bare run uses.
const BUSYBOX: &str = "/bin/busybox";

pub async fn run(
    duration: Duration,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<serde_json::Value> {
    let image = Bytes::from(blocking(|| image(None)).await?);
    let local = Arc::new(blocking(Local::new).await?);
    let rootfs = local.prepare(image.clone()).await?.0;
    let net = crate::net::bench_net()
        .providers(1)
        .slots(2)
        .containers(true)
        .publish("busybox", ServiceKind::Oci, image.clone())
        .start()
        .await?;
    let client = net.client().clone();
    // Warm-up: the provider's first container job (image fetched and
    // unpacked, cgroups created) and the runner's and host's first spawns.
    for _ in 0..3 {
        job(&client, "busybox", NOOP).await?;
        local.run(&rootfs, NOOP).await?;
        bare(NOOP).await?;
    }
    let cold = cold(&client, &local).await?;
    out(&format!(
        "cold start (fresh image: fetched, checked, unpacked, run): median {:.1} ms of {} (running event {:.1} ms); unpack alone {:.1} ms ({} KiB image)",
        cold.start_ms,
        cold.samples,
        cold.running_ms,
        cold.unpack_ms,
        image.len() / 1024
    ));
    let warm = warm(&client, &local, &rootfs, duration.mul_f64(0.45)).await?;
    out(&format!(
        "start (cached image, submit→no-op done): p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  ({} jobs); submit→running event p50 {:.2} ms",
        warm.start.ms(0.5),
        warm.start.ms(0.99),
        warm.start.ms(0.999),
        warm.start.len(),
        warm.running.ms(0.5)
    ));
    out(&format!(
        "  baselines: the no-op container through the runner (bwrap, no broker) p50 {:.2} ms  p99 {:.2} ms; a bare host process p50 {:.2} ms  p99 {:.2} ms",
        warm.runner.ms(0.5),
        warm.runner.ms(0.99),
        warm.spawn.ms(0.5),
        warm.spawn.ms(0.99)
    ));
    // The provider's job cgroups are named for its address.
    let provider = net.providers().first().map(|p| p.address());
    let _ = net.stop_now().await;
    let cpu = cpu(&local, &rootfs, duration.mul_f64(0.4)).await?;
    blocking(move || {
        drop(local);
        if let Some(a) = provider {
            remove_cgroups(&a.trim_start_matches("0x").to_ascii_lowercase());
        }
        Ok(())
    })
    .await?;
    out(&format!(
        "cpu loop ({CPU_LOOP_ITERATIONS} iterations): contained {:.1} ms vs bare {:.1} ms: {:.3}x ({:.3}x less each side's no-op start); CPU metered {:.1} ms vs rusage {:.1} ms: {:.3}x  ({} pairs)",
        cpu.contained_ms,
        cpu.bare_ms,
        cpu.contained_ms / cpu.bare_ms,
        loop_only_ratio(&warm, &cpu),
        cpu.contained_cpu_ns as f64 / 1e6,
        cpu.bare_cpu_ns as f64 / 1e6,
        cpu.contained_cpu_ns as f64 / cpu.bare_cpu_ns as f64,
        cpu.pairs
    ));
    Ok(figures(image.len(), &cold, &warm, &cpu))
}

fn figures(image_bytes: usize, cold: &Cold, warm: &Warm, cpu: &Cpu) -> serde_json::Value {
    json!({
        "bench": "container",
        "start_p50_ms": round(warm.start.ms(0.5), 3),
        "start_p99_ms": round(warm.start.ms(0.99), 3),
        "start_p999_ms": round(warm.start.ms(0.999), 3),
        "running_event_p50_ms": round(warm.running.ms(0.5), 3),
        "running_event_p99_ms": round(warm.running.ms(0.99), 3),
        "jobs": warm.start.len(),
        "baseline_runner_p50_ms": round(warm.runner.ms(0.5), 3),
        "baseline_runner_p99_ms": round(warm.runner.ms(0.99), 3),
        "baseline_spawn_p50_ms": round(warm.spawn.ms(0.5), 3),
        "baseline_spawn_p99_ms": round(warm.spawn.ms(0.99), 3),
        "start_runner_ratio_p50": round(warm.start.ms(0.5) / warm.runner.ms(0.5), 3),
        "runner_spawn_ratio_p50": round(warm.runner.ms(0.5) / warm.spawn.ms(0.5), 3),
        "cold_start_ms": round(cold.start_ms, 2),
        "cold_running_event_ms": round(cold.running_ms, 2),
        "cold_starts": cold.samples,
        "unpack_ms": round(cold.unpack_ms, 2),
        "image_bytes": image_bytes,
        "cpu_loop_iterations": CPU_LOOP_ITERATIONS,
        "cpu_pairs": cpu.pairs,
        "cpu_bare_ms": round(cpu.bare_ms, 2),
        "cpu_contained_ms": round(cpu.contained_ms, 2),
        "cpu_metering_overhead_ratio": round(cpu.contained_ms / cpu.bare_ms, 4),
        "cpu_loop_only_ratio": round(loop_only_ratio(warm, cpu), 4),
        "cpu_bare_cpu_ns": cpu.bare_cpu_ns,
        "cpu_contained_cpu_ns": cpu.contained_cpu_ns,
        "cpu_metered_ratio": round(cpu.contained_cpu_ns as f64 / cpu.bare_cpu_ns as f64, 4),
    })
}

/// The loop's own time, contained over bare: each side's median less the
/// median no-op start measured beside it (approximate: medians of
/// different phases).
fn loop_only_ratio(warm: &Warm, cpu: &Cpu) -> f64 {
    (cpu.contained_ms - warm.runner.ms(0.5)) / (cpu.bare_ms - warm.spawn.ms(0.5))
}

/// A busybox image with `sh` and entrypoint `/bin/sh -c`; with `nonce`, a
/// file holding it (a fresh digest).
fn image(nonce: Option<String>) -> anyhow::Result<Vec<u8>> {
    let bin = std::fs::read(BUSYBOX).with_context(|| format!("read {BUSYBOX} (busybox-static)"))?;
    let mut b = Builder::new()
        .dir("bin")
        .file("bin/busybox", bin, 0o755)
        .symlink("bin/sh", "busybox")
        .dir("etc")
        .entrypoint(&["/bin/sh", "-c"]);
    if let Some(n) = nonce {
        b = b.file("etc/bench-nonce", n, 0o644);
    }
    Ok(b.build()?)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// Submits a job of `service` running `script`; the times from submission
/// to its `running` and to its `succeeded` events.
async fn job(client: &Client, service: &str, script: &str) -> anyhow::Result<(Duration, Duration)> {
    let spec = JobSpec {
        service: Some(service.into()),
        args: vec![script.into()],
        ..JobSpec::default()
    };
    let t = Instant::now();
    let info = client.submit(&spec).await?;
    let mut events = client.events(info.id).await?;
    let mut running = None;
    while let Some(ev) = events.next().await {
        let ev = ev?;
        match ev.kind {
            EventKind::Running => running = Some(t.elapsed()),
            EventKind::Succeeded => {
                let done = t.elapsed();
                ensure!(
                    ev.exit_code == Some(0),
                    "job {} exited {:?}",
                    info.id,
                    ev.exit_code
                );
                let Some(r) = running else {
                    bail!("job {} succeeded without a running event", info.id);
                };
                return Ok((r, done));
            }
            k if k.is_final() => bail!("bench job ended {}: {:?}", k.as_str(), ev.error),
            _ => {}
        }
    }
    bail!("the event stream of job {} ended early", info.id)
}

/// The bench's own containers (the runner baseline), in a directory the
/// sandbox's uid can reach.
struct Local {
    containers: Containers,
    name: String,
    runs: AtomicU64,
    _dir: tempfile::TempDir,
}

impl Drop for Local {
    fn drop(&mut self) {
        remove_cgroups(&self.name);
    }
}

/// Removes the empty cgroups under `/sys/fs/cgroup/<controller>/brume/<name>`
/// (`brume_oci::cgroup`'s layout), and that parent: a job's group whose
/// removal raced with its processes' exit is left behind, and nothing
/// sweeps a name that never starts again (this bench's, a throwaway
/// provider's). Only `rmdir`: a group still holding a process stays.
fn remove_cgroups(name: &str) {
    for c in ["pids", "memory", "cpu", "cpuacct"] {
        let parent = Path::new("/sys/fs/cgroup").join(c).join("brume").join(name);
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&parent);
    }
}

impl Local {
    fn new() -> anyhow::Result<Local> {
        let dir = tempfile::Builder::new()
            .prefix("brume-bench-container-")
            .tempdir()
            .context("create the containers dir")?;
        // Under a root provider the sandbox runs as a uid of its own.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
        let name = format!("bench-{}", std::process::id());
        let containers = Containers::new(ContainersConfig {
            dir: dir.path().join("containers"),
            bwrap: None,
            uid: brume_oci::DEFAULT_UID,
            name: name.clone(),
        })?;
        Ok(Local {
            containers,
            name,
            runs: AtomicU64::new(0),
            _dir: dir,
        })
    }

    /// Unpacks `tar` (on a blocking thread): its rootfs, and how long.
    async fn prepare(self: &Arc<Self>, tar: Bytes) -> anyhow::Result<(PathBuf, Duration)> {
        let me = self.clone();
        blocking(move || {
            let t = Instant::now();
            let key = brume_sandbox::Digest::of(&tar).to_string();
            let (p, cold) = me.containers.prepare(&key, &tar)?;
            ensure!(cold, "image {key} was unpacked already");
            Ok((p.rootfs.clone(), t.elapsed()))
        })
        .await
    }

    /// Runs busybox `sh -c script` in a container of `rootfs`, as the
    /// provider would (its limits); the wall time and the CPU time metered.
    async fn run(&self, rootfs: &Path, script: &str) -> anyhow::Result<(Duration, u64)> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let spec = RunSpec {
            name: format!("bench-{n}"),
            rootfs: rootfs.to_path_buf(),
            argv: [BUSYBOX, "sh", "-c", script].map(String::from).to_vec(),
            env: Vec::new(),
            working_dir: None,
            stdin: Bytes::new(),
            memory_bytes: 256 << 20,
            timeout: Duration::from_secs(600),
            max_output_bytes: 16 << 20,
            vcpus: 1,
            max_processes: 256,
            max_open_files: 1024,
            inputs: Vec::new(),
            outputs: Vec::new(),
            devices: Default::default(),
            network: false,
        };
        let t = Instant::now();
        let r = self.containers.runner().run(&spec, None).await?;
        let wall = t.elapsed();
        ensure!(
            r.ended == Ended::Exited(0),
            "the container ended {:?}: {}",
            r.ended,
            String::from_utf8_lossy(&r.stderr)
        );
        Ok((wall, r.cpu_ns))
    }
}

/// Runs busybox `sh -c script` as a bare host process (on a blocking
/// thread); the wall time and its CPU time from `wait4`.
async fn bare(script: &str) -> anyhow::Result<(Duration, u64)> {
    let script = script.to_owned();
    let t = Instant::now();
    let cpu_ns = blocking(move || bare_blocking(&script)).await?;
    Ok((t.elapsed(), cpu_ns))
}

fn bare_blocking(script: &str) -> anyhow::Result<u64> {
    use std::process::Stdio;
    let child = std::process::Command::new(BUSYBOX)
        .args(["sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {BUSYBOX}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid for wait4 to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 on our own child, which nothing else waits for
        // (`child` is dropped without waiting), writing into locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("wait for the bare process");
        }
    }
    drop(child);
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the bare process ended with status {status:#x}"
    );
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    Ok(ns(ru.ru_utime) + ns(ru.ru_stime))
}

struct Cold {
    start_ms: f64,
    running_ms: f64,
    unpack_ms: f64,
    samples: usize,
}

/// [`COLD_IMAGES`] fresh images, each published and run once, then
/// unpacked by the bench's own containers; medians.
async fn cold(client: &Client, local: &Arc<Local>) -> anyhow::Result<Cold> {
    let (mut start, mut running, mut unpack) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..COLD_IMAGES {
        let nonce = format!(
            "{} {i} {:?}\n",
            std::process::id(),
            std::time::SystemTime::now()
        );
        let tar = Bytes::from(blocking(move || image(Some(nonce))).await?);
        let name = format!("busybox-cold-{i}");
        client.publish(&name, ServiceKind::Oci, tar.clone()).await?;
        let (r, d) = job(client, &name, NOOP).await?;
        running.push(r);
        start.push(d);
        unpack.push(local.prepare(tar).await?.1);
    }
    Ok(Cold {
        start_ms: median_ms(&mut start),
        running_ms: median_ms(&mut running),
        unpack_ms: median_ms(&mut unpack),
        samples: COLD_IMAGES,
    })
}

struct Warm {
    start: Samples,
    running: Samples,
    runner: Samples,
    spawn: Samples,
}

/// The no-op through the product, the runner and the host, interleaved,
/// for `budget` (at least 20 rounds).
async fn warm(
    client: &Client,
    local: &Local,
    rootfs: &Path,
    budget: Duration,
) -> anyhow::Result<Warm> {
    let mut w = Warm {
        start: Samples::new(),
        running: Samples::new(),
        runner: Samples::new(),
        spawn: Samples::new(),
    };
    let started = Instant::now();
    while w.start.len() < 20 || (started.elapsed() < budget && w.start.len() < 5_000) {
        let (r, d) = job(client, "busybox", NOOP).await?;
        w.running.record(r);
        w.start.record(d);
        w.runner.record(local.run(rootfs, NOOP).await?.0);
        w.spawn.record(bare(NOOP).await?.0);
    }
    Ok(w)
}

struct Cpu {
    bare_ms: f64,
    contained_ms: f64,
    bare_cpu_ns: u64,
    contained_cpu_ns: u64,
    pairs: usize,
}

/// The CPU-bound loop contained and bare, alternating which goes first,
/// for `budget` (3 to 50 pairs); medians.
async fn cpu(local: &Local, rootfs: &Path, budget: Duration) -> anyhow::Result<Cpu> {
    let script = format!("i=0; while [ $i -lt {CPU_LOOP_ITERATIONS} ]; do i=$((i+1)); done");
    let (mut bare_t, mut contained_t) = (Vec::new(), Vec::new());
    let (mut bare_cpu, mut contained_cpu) = (Vec::new(), Vec::new());
    let started = Instant::now();
    while bare_t.len() < 3 || (started.elapsed() < budget && bare_t.len() < 50) {
        let contained_first = bare_t.len() % 2 == 0;
        if contained_first {
            let (t, ns) = local.run(rootfs, &script).await?;
            contained_t.push(t);
            contained_cpu.push(ns);
        }
        let (t, ns) = bare(&script).await?;
        bare_t.push(t);
        bare_cpu.push(ns);
        if !contained_first {
            let (t, ns) = local.run(rootfs, &script).await?;
            contained_t.push(t);
            contained_cpu.push(ns);
        }
    }
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    Ok(Cpu {
        bare_ms: median_ms(&mut bare_t),
        contained_ms: median_ms(&mut contained_t),
        bare_cpu_ns: median(bare_cpu),
        contained_cpu_ns: median(contained_cpu),
        pairs: bare_t.len(),
    })
}

/// The median of `v` (not empty), in ms.
fn median_ms(v: &mut [Duration]) -> f64 {
    v.sort_unstable();
    v.get(v.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}
