//! OCI container jobs ([`brume_api::ServiceKind::Oci`]): the image is
//! fetched like a module (by its layout tar's sha256), checked and
//! unpacked once into the rootfs cache, and run under bubblewrap
//! ([`brume_oci`]). CPU time is billed in the same instruction-equivalent
//! units as wasm fuel, through this provider's measured speed:
//! `fuel = cpu_ns × MIPS / 1000`. The broker bounds that claim by the
//! wall time it saw × the vCPUs granted × the speed it measured.

use std::sync::Arc;
use std::time::Duration;

use brume_api::Usage;
use brume_api::rest::ContainersStatus;
use brume_api::wire::{self, Assign, FromProvider, Outcome};
use brume_oci::{Containers, ContainersConfig, Ended, Live, Prepared, RunSpec};
use brume_sandbox::Digest;

use crate::work::{self, SessionCtx};
use crate::{ProviderConfig, Reservation, Shared};

/// The most processes (and threads) one container may have at once.
const MAX_PROCESSES: u64 = 256;
const MAX_OPEN_FILES: u64 = 1024;

/// Starts the container runtime, or says why there is none.
pub(crate) fn start(config: &ProviderConfig, address: &str) -> Result<Arc<Containers>, String> {
    let c = Containers::new(ContainersConfig {
        dir: config.data_dir.join("containers"),
        bwrap: None,
        uid: config.container_uid,
        name: address.trim_start_matches("0x").to_ascii_lowercase(),
    });
    match c {
        Ok(c) => {
            let e = c.enforcement();
            tracing::info!(runtime = %e.runtime, uid = ?e.uid, cgroups = ?e.cgroups, "taking container jobs");
            Ok(Arc::new(c))
        }
        Err(e) => {
            tracing::error!("container jobs are off: {e}");
            Err(e.to_string())
        }
    }
}

pub(crate) fn status(c: &Result<Arc<Containers>, String>) -> ContainersStatus {
    match c {
        Ok(c) => {
            let e = c.enforcement();
            ContainersStatus {
                enabled: true,
                runtime: e.runtime,
                uid: e.uid,
                cgroups: e.cgroups,
                notes: e.notes,
                error: None,
            }
        }
        Err(why) => ContainersStatus {
            enabled: false,
            runtime: String::new(),
            uid: None,
            cgroups: Vec::new(),
            notes: Vec::new(),
            error: Some(why.clone()),
        },
    }
}

fn failed(code: &str, message: impl Into<String>, usage: Usage) -> Outcome {
    Outcome::Failed {
        code: code.to_owned(),
        message: message.into(),
        usage,
        stdout: bytes::Bytes::new(),
        stderr: bytes::Bytes::new(),
    }
}

/// Why an image could not be had.
enum Unready {
    /// Refused with `(reason, why)`: another provider may have it.
    Refused(&'static str, String),
    /// The job's own fault.
    Failed(Outcome),
}

/// The image for `digest` (an uploaded layout tar's sha256, or with
/// `image`, a pulled manifest's): unpacked already, else fetched or
/// pulled, checked and unpacked (on a blocking thread).
async fn prepare(
    shared: &Arc<Shared>,
    ctx: &SessionCtx,
    containers: &Arc<Containers>,
    (digest, image): (&Digest, Option<&str>),
) -> Result<Arc<Prepared>, Unready> {
    let key = digest.to_string();
    if let Some(p) = containers.cached(&key) {
        return Ok(p);
    }
    let bytes = match image {
        None => {
            let fetch_failed = || {
                Unready::Refused(
                    "fetch_failed",
                    format!("image {digest} could not be fetched"),
                )
            };
            let bytes = work::fetch(shared, ctx, digest)
                .await
                .map_err(|_| fetch_failed())?;
            if Digest::of(&bytes) != *digest {
                return Err(fetch_failed());
            }
            bytes
        }
        Some(image) => pulled(shared, image, digest).await?,
    };
    let c = containers.clone();
    let started = std::time::Instant::now();
    let prepared = tokio::task::spawn_blocking(move || c.prepare(&key, &bytes))
        .await
        .map_err(|e| Unready::Failed(failed("internal", e.to_string(), Usage::default())))?
        .map_err(|e| Unready::Failed(failed(e.code(), e.to_string(), Usage::default())))?;
    let (p, cold) = prepared;
    tracing::info!(%digest, manifest = %p.manifest_digest, cold, ms = started.elapsed().as_millis() as u64, "image ready");
    Ok(p)
}

/// Runs an accepted container job to its `Done`.
pub(crate) async fn execute(
    shared: Arc<Shared>,
    ctx: SessionCtx,
    channel: u32,
    assign: Box<Assign>,
    digest: Digest,
    reservation: Reservation,
) -> u32 {
    let receipt = work::ReceiptBase::new(&assign);
    let refuse = |reservation: Reservation, reason: &str, why: String| {
        // The slot is free before the broker hears of it.
        drop(reservation);
        let r = FromProvider::Refused(work::refused(reason, why));
        work::send(&ctx.out, channel, &r);
        channel
    };
    let Some(Ok(containers)) = shared.containers.clone() else {
        let why = "this provider does not take container jobs".to_string();
        return refuse(reservation, "not_supported", why);
    };
    let image = (&digest, assign.image.as_deref());
    let prepared = match prepare(&shared, &ctx, &containers, image).await {
        Ok(p) => p,
        Err(Unready::Refused(reason, why)) => return refuse(reservation, reason, why),
        Err(Unready::Failed(outcome)) => {
            work::finish(&shared, &ctx, channel, &receipt, outcome, reservation);
            return channel;
        }
    };
    if let Ok(m) = prepared.manifest_digest.parse::<Digest>()
        && shared.blacklists.find(&m).is_some()
    {
        let why = format!("image manifest {m} is blacklisted");
        return refuse(reservation, "blacklisted", why);
    }
    let inputs = match crate::data::inputs(&shared, &ctx, &assign).await {
        Ok(i) => i,
        Err(e) => return work::input_failed(&shared, &ctx, channel, &receipt, e, reservation),
    };
    let devices = crate::gpu::devices(&reservation.gpu_indices());
    let outcome = run(
        &shared,
        &ctx,
        channel,
        &containers,
        &prepared,
        &assign,
        (inputs, devices),
    )
    .await;
    work::finish(&shared, &ctx, channel, &receipt, outcome, reservation);
    channel
}

/// The layout tar of the registry image `image`, whose manifest is
/// `digest`.
async fn pulled(shared: &Shared, image: &str, digest: &Digest) -> Result<bytes::Bytes, Unready> {
    use crate::registry::PullError;
    let invalid = |why: String| Unready::Failed(failed("invalid_image", why, Usage::default()));
    let reference = brume_oci::registry::Reference::parse(image).map_err(invalid)?;
    if reference.digest != digest.to_string() {
        return Err(invalid(format!(
            "{image} is not the manifest {digest} the job was assigned"
        )));
    }
    let started = std::time::Instant::now();
    let tar = crate::registry::pull(shared, &reference)
        .await
        .map_err(|e| match e {
            PullError::NotAllowed(why) => Unready::Refused("not_allowed", why),
            PullError::Unreachable(why) => Unready::Refused("fetch_failed", why),
            PullError::Invalid(why) => invalid(why),
        })?;
    tracing::info!(%reference, bytes = tar.len(), ms = started.elapsed().as_millis() as u64, "image pulled");
    Ok(bytes::Bytes::from(tar))
}

fn spec(
    p: &Prepared,
    a: &Assign,
    inputs: Vec<(String, bytes::Bytes)>,
    devices: Vec<String>,
) -> RunSpec {
    // argv[0] is the service name (as for wasm commands): the image's
    // entrypoint and cmd decide what runs; the job's args replace cmd.
    let args = a.args.get(1..).unwrap_or_default();
    let mut env: Vec<(String, String)> = p
        .config
        .env
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    env.extend(a.env.iter().cloned());
    RunSpec {
        name: format!("{}-{}", a.work_id, a.attempt),
        rootfs: p.rootfs.clone(),
        argv: brume_oci::image::argv(&p.config, args),
        env,
        working_dir: p.config.working_dir.clone(),
        stdin: a.stdin.clone(),
        memory_bytes: a.limits.memory_bytes,
        timeout: Duration::from_millis(a.limits.timeout_ms),
        max_output_bytes: a.limits.max_output_bytes,
        vcpus: a.vcpus.max(1),
        max_processes: MAX_PROCESSES,
        max_open_files: MAX_OPEN_FILES,
        inputs,
        outputs: a.outputs.clone(),
        devices,
        network: a.network,
    }
}

async fn run(
    shared: &Arc<Shared>,
    ctx: &SessionCtx,
    channel: u32,
    containers: &Containers,
    prepared: &Prepared,
    a: &Assign,
    (inputs, devices): (Vec<(String, bytes::Bytes)>, Vec<String>),
) -> Outcome {
    let bytes_in = a.stdin.len() as u64 + inputs.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
    let spec = spec(prepared, a, inputs, devices);
    let live = Arc::new(Live::default());
    let running = containers.runner().run(&spec, Some(&live));
    let mips = u128::from(shared.fitness_mips);
    let result = match a.progress_ms {
        None => running.await,
        Some(ms) => {
            tokio::pin!(running);
            let every = Duration::from_millis(ms.max(10));
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    biased;
                    r = &mut running => break r,
                    _ = tick.tick() => {
                        // CPU so far, in fuel as billed (0 without a cpuacct cgroup).
                        let l = live.clone();
                        let cpu_ns = tokio::task::spawn_blocking(move || l.cpu_ns()).await;
                        let ns = cpu_ns.ok().flatten().unwrap_or(0);
                        let fuel = (u128::from(ns) * mips / 1000).min(u128::from(u64::MAX)) as u64;
                        let p = wire::Progress { fuel, stderr: live.take_stderr() };
                        work::send(&ctx.out, channel, &FromProvider::Progress(p));
                    }
                }
            }
        }
    };
    let r = match result {
        Ok(r) => r,
        Err(e) => return failed(e.code(), e.to_string(), Usage::default()),
    };
    let outputs = crate::workdir::output_files(r.outputs);
    let files_out: u64 = outputs.iter().map(|o| o.size).sum();
    let wall_us = r.wall.as_micros().min(u128::from(u64::MAX)) as u64;
    let usage = Usage {
        // Instruction-equivalents at this provider's measured speed.
        fuel: (u128::from(r.cpu_ns) * u128::from(shared.fitness_mips) / 1000)
            .min(u128::from(u64::MAX)) as u64,
        peak_memory_bytes: r.peak_memory_bytes,
        wall_us,
        // Its GPUs were held for its whole run.
        gpu_us: wall_us.saturating_mul(u64::from(a.gpus)),
        bytes_in,
        bytes_out: (r.stdout.len() + r.stderr.len()) as u64 + files_out,
    };
    let (stdout, stderr) = (r.stdout, r.stderr);
    match r.ended {
        Ended::Exited(code) if code != 0 && r.memory_limited => Outcome::Failed {
            code: "memory_limit".into(),
            message: format!(
                "the container went over its {} bytes of memory",
                a.limits.memory_bytes
            ),
            usage,
            stdout,
            stderr,
        },
        Ended::Exited(exit_code) => Outcome::Exited {
            exit_code,
            stdout,
            stderr,
            usage,
            outputs,
        },
        Ended::Timeout => Outcome::Failed {
            code: "timeout".into(),
            message: format!("the container ran over its {} ms", a.limits.timeout_ms),
            usage,
            stdout,
            stderr,
        },
        Ended::OutputLimit => Outcome::Failed {
            code: "output_too_large".into(),
            message: format!(
                "stdout or stderr went over {} bytes",
                a.limits.max_output_bytes
            ),
            usage,
            stdout,
            stderr,
        },
    }
}
