//! `brume bench verify`: what verification costs, and whether it holds.
//!
//! Two networks, each a real broker and five real providers (one slot each)
//! in this process, every daemon on its own tokio runtime as if it were its
//! own process, driven over HTTP by closed-loop clients submitting
//! `cpu_loop N` jobs in the deterministic profile.
//!
//! 1. **Honest** (5 honest providers).
//!    - Warm-up: `adaptive` jobs until every provider's run of consecutive
//!      verified results (`reputation.consecutive_valid` in
//!      `GET /v1/providers`) reaches [`WARMUP_RUN`], or the warm-up budget
//!      is spent. Not counted.
//!    - Measured: `verify: none` (the baseline) and `adaptive`, the same job
//!      sequence, interleaved in short rounds so both see the same machine.
//!    - Then a short round of `replicate {3, 2}` for its throughput.
//! 2. **Byzantine** (4 honest providers, 1 that signs wrong outputs: 20 %):
//!    `replicate {3, 2}` jobs; every delivered stdout is checked against the
//!    output computed here, the cheaters the broker reports are collected,
//!    and each is checked for a ban through `GET /v1/providers`.
//!
//! 3. **Functions** (on the honest network, then a third one): closed-loop
//!    callers of an `echo` command service, `x-brume-verify: none` (the
//!    baseline) and `audit`, interleaved in rounds; `sync_audit_overhead_ratio`
//!    is compute executed / delivered for the audited calls: (calls +
//!    re-executions, from the broker's `brume_audits_total`) / calls, as
//!    every echo call runs the same fuel. Then one provider that lies on
//!    every tenth answer (`wrong-output-tenth`) under the default audit
//!    share: `calls_to_catch_10pct_liar` counts audited calls until the
//!    broker drops it.
//!
//! Compute units are fuel. Per job, delivered = the result's `usage.fuel`;
//! executed = the sum of `fuel` over `verification.replicas` (every replica
//! that returned a result), or the delivered fuel when the result carries
//! no verification (it ran once). A job that failed delivers nothing but
//! its replicas still count as executed. `overhead_ratio` = Σ executed /
//! Σ delivered over the measured `adaptive` jobs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use brume_api::rest::{JobResult, JobSpec, JobState, VerifyPolicy};
use brume_api::{Profile, ServiceKind};
use brume_client::Client;
use brume_localnet::{Fault, LocalNet};
use bytes::Bytes;
use serde_json::json;

use crate::net::bench_net;
use crate::{Samples, round};

/// Providers per network.
const PROVIDERS: usize = 5;
/// Jobs in flight: one per provider slot, so `none` keeps every provider
/// busy and replicated jobs queue replicas beyond the honest providers (so
/// the byzantine one gets work).
const CONCURRENCY: usize = PROVIDERS;
/// `cpu_loop N` sizes, cycled: small enough for 2 cores.
const SIZES: [u64; 8] = [
    40_000, 45_000, 50_000, 55_000, 60_000, 65_000, 70_000, 75_000,
];
/// Warm-up ends once every provider has this many verified results in a
/// row: the adaptive policy's minimum run before it stops replicating (the
/// broker's `ADAPTIVE_MIN_RUN`, private to it).
const WARMUP_RUN: u64 = 10;
/// Length of one interleaved round of the measured phase.
const ROUND: Duration = Duration::from_secs(2);
const REPLICATE: VerifyPolicy = VerifyPolicy::Replicate { n: 3, quorum: 2 };

/// What `cpu_loop n` prints (the guest's xorshift mix, computed here).
fn cpu_loop_output(n: u64) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(i);
    }
    format!("{x}\n")
}

/// A broker and one provider (one slot) per entry of `faults`, provider
/// `i` started with `faults[i]`; `cpu` published once the broker lists
/// every provider.
async fn start_net(faults: &[Option<Fault>]) -> anyhow::Result<LocalNet> {
    let mut builder = bench_net()
        .providers(faults.len())
        .slots(1)
        .publish(
            "cpu",
            ServiceKind::Command,
            Bytes::from_static(test_programs_artifacts::CPU_LOOP_P1_BYTES),
        )
        .publish(
            "echo",
            ServiceKind::Command,
            Bytes::from_static(test_programs_artifacts::ECHO_P1_BYTES),
        );
    for (i, fault) in faults.iter().enumerate() {
        if let Some(f) = fault {
            builder = builder.fault(i, *f);
        }
    }
    Ok(builder.start().await?)
}

/// The shortest run of consecutive verified results among the listed
/// providers, and each provider's run.
async fn consecutive_runs(client: &Client) -> anyhow::Result<(u64, Vec<u64>)> {
    let list = client.providers().await?;
    let runs: Vec<u64> = list
        .providers
        .iter()
        .map(|p| p.reputation.consecutive_valid)
        .collect();
    Ok((runs.iter().copied().min().unwrap_or(0), runs))
}

/// Everything one policy's jobs showed.
struct Tally {
    policy: &'static str,
    verify: VerifyPolicy,
    /// Index of the next job in [`SIZES`]' cycle: every policy runs the
    /// same sequence.
    next: Arc<AtomicU64>,
    jobs: u64,
    failed: u64,
    wrong: u64,
    delivered_fuel: u128,
    executed_fuel: u128,
    replicas: u64,
    /// Jobs that ran on more than one provider.
    replicated: u64,
    /// Jobs whose result carried a `verification`.
    with_verification: u64,
    cheaters: BTreeSet<String>,
    proofs: u64,
    /// Replicas run by the providers in [`Tally::watch`].
    watched_replicas: u64,
    watch: Vec<String>,
    wall: Duration,
    latency: Samples,
}

/// One finished job, as the requester saw it.
struct Done {
    result: JobResult,
    n: u64,
    latency: Duration,
}

impl Tally {
    fn new(policy: &'static str, verify: VerifyPolicy) -> Tally {
        Tally {
            policy,
            verify,
            next: Arc::new(AtomicU64::new(0)),
            jobs: 0,
            failed: 0,
            wrong: 0,
            delivered_fuel: 0,
            executed_fuel: 0,
            replicas: 0,
            replicated: 0,
            with_verification: 0,
            cheaters: BTreeSet::new(),
            proofs: 0,
            watched_replicas: 0,
            watch: Vec::new(),
            wall: Duration::ZERO,
            latency: Samples::new(),
        }
    }

    fn add(&mut self, d: Done) {
        let r = d.result;
        self.jobs += 1;
        self.latency.record(d.latency);
        let (executed, replicas) = match &r.verification {
            Some(v) if !v.replicas.is_empty() => (
                v.replicas.iter().map(|x| x.fuel as u128).sum::<u128>(),
                v.replicas.len() as u64,
            ),
            _ => (r.usage.fuel as u128, 1),
        };
        if let Some(v) = &r.verification {
            self.with_verification += 1;
            self.cheaters.extend(v.cheaters.iter().cloned());
            self.proofs += v.proofs.len() as u64;
            self.watched_replicas += v
                .replicas
                .iter()
                .filter(|x| self.watch.contains(&x.provider))
                .count() as u64;
        }
        self.executed_fuel += executed;
        self.replicas += replicas;
        if replicas > 1 {
            self.replicated += 1;
        }
        if r.state != JobState::Succeeded {
            self.failed += 1;
            return;
        }
        self.delivered_fuel += r.usage.fuel as u128;
        if r.stdout.0 != cpu_loop_output(d.n).as_bytes() {
            self.wrong += 1;
        }
    }

    fn overhead(&self) -> f64 {
        if self.delivered_fuel == 0 {
            return 0.0;
        }
        self.executed_fuel as f64 / self.delivered_fuel as f64
    }

    fn per_s(&self) -> f64 {
        let s = self.wall.as_secs_f64();
        if s == 0.0 { 0.0 } else { self.jobs as f64 / s }
    }

    fn line(&self) -> String {
        format!(
            "{:<16} {:>5} jobs in {:>6.2} s: {:>6.1} jobs/s  p50 {:>7.2} ms  p99 {:>7.2} ms  overhead {:.3}  replicated {}  failed {}  wrong {}",
            self.policy,
            self.jobs,
            self.wall.as_secs_f64(),
            self.per_s(),
            self.latency.ms(0.5),
            self.latency.ms(0.99),
            self.overhead(),
            self.replicated,
            self.failed,
            self.wrong,
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "jobs": self.jobs,
            "failed": self.failed,
            "wrong_results_delivered": self.wrong,
            "wall_s": round(self.wall.as_secs_f64(), 3),
            "jobs_per_s": round(self.per_s(), 2),
            "p50_ms": round(self.latency.ms(0.5), 3),
            "p99_ms": round(self.latency.ms(0.99), 3),
            "p999_ms": round(self.latency.ms(0.999), 3),
            "fuel_delivered": u64::try_from(self.delivered_fuel).unwrap_or(u64::MAX),
            "fuel_executed": u64::try_from(self.executed_fuel).unwrap_or(u64::MAX),
            "overhead_ratio": round(self.overhead(), 4),
            "replicas": self.replicas,
            "replicated_jobs": self.replicated,
            "jobs_with_verification": self.with_verification,
        })
    }

    /// Runs this policy's jobs in a closed loop with [`CONCURRENCY`] clients
    /// until `budget` is spent or `stop` is set; jobs in flight then finish
    /// and count. At least one job.
    async fn drive(
        &mut self,
        client: &Client,
        budget: Duration,
        stop: Option<Arc<AtomicBool>>,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let deadline = start + budget;
        let mut tasks = Vec::new();
        for _ in 0..CONCURRENCY {
            let client = client.clone();
            let next = self.next.clone();
            let stop = stop.clone();
            let verify = self.verify.clone();
            tasks.push(tokio::spawn(async move {
                let mut done = Vec::new();
                loop {
                    let stopped = stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
                    if stopped || Instant::now() >= deadline {
                        break;
                    }
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let n = SIZES[(k % SIZES.len() as u64) as usize];
                    let spec = JobSpec {
                        service: Some("cpu".into()),
                        args: vec![n.to_string()],
                        profile: Profile::Deterministic,
                        verify: Some(verify.clone()),
                        ..JobSpec::default()
                    };
                    let t = Instant::now();
                    let info = client.submit(&spec).await?;
                    let result = client.wait(info.id).await?;
                    done.push(Done {
                        result,
                        n,
                        latency: t.elapsed(),
                    });
                }
                Ok::<_, anyhow::Error>(done)
            }));
        }
        for t in tasks {
            for d in t.await?? {
                self.add(d);
            }
        }
        self.wall += start.elapsed();
        Ok(())
    }
}

pub async fn run(
    duration: Duration,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();

    // ---- 1. honest providers ----
    let net = start_net(&[None; PROVIDERS]).await?;
    out(&format!(
        "honest network: broker + {PROVIDERS} providers (1 slot each), cpu_loop n {}..{}, {CONCURRENCY} jobs in flight",
        SIZES[0],
        SIZES[SIZES.len() - 1]
    ));

    // Warm-up: adaptive jobs until every provider has a run of WARMUP_RUN
    // verified results (checked every 100 ms), or 20 % of the budget.
    let mut warmup = Tally::new("adaptive warm-up", VerifyPolicy::Adaptive);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let client = net.client().clone();
        tokio::spawn(async move {
            loop {
                if let Ok(list) = client.providers().await
                    && list.providers.len() >= PROVIDERS
                    && list
                        .providers
                        .iter()
                        .all(|p| p.reputation.consecutive_valid >= WARMUP_RUN)
                {
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    warmup
        .drive(net.client(), duration.mul_f64(0.2), Some(stop.clone()))
        .await?;
    watcher.abort();
    let (min_run, runs) = consecutive_runs(net.client()).await?;
    let warmup_reached = min_run >= WARMUP_RUN;
    out(&warmup.line());
    out(&format!(
        "warm-up: {} jobs, {:.2} s; runs of consecutive verified results per provider {runs:?} ({} the target {WARMUP_RUN})",
        warmup.jobs,
        warmup.wall.as_secs_f64(),
        if warmup_reached {
            "reached"
        } else {
            "short of"
        }
    ));

    // Measured: none and adaptive, interleaved in rounds.
    let mut none = Tally::new("none (baseline)", VerifyPolicy::None);
    let mut adaptive = Tally::new("adaptive", VerifyPolicy::Adaptive);
    let measured = duration.mul_f64(0.45);
    let round_len = ROUND
        .min(measured.mul_f64(0.25))
        .max(Duration::from_millis(200));
    let t = Instant::now();
    let mut rounds = 0u32;
    while t.elapsed() < measured || rounds == 0 {
        none.drive(net.client(), round_len / 2, None).await?;
        adaptive.drive(net.client(), round_len / 2, None).await?;
        rounds += 1;
    }
    out(&none.line());
    out(&adaptive.line());
    let (_, runs_after) = consecutive_runs(net.client()).await?;

    // Replicate {3, 2} among honest providers: its throughput.
    let mut replicate_honest = Tally::new("replicate{3,2}", REPLICATE);
    replicate_honest
        .drive(net.client(), duration.mul_f64(0.08), None)
        .await?;
    out(&replicate_honest.line());
    let sync = sync_phase(&net, duration.mul_f64(0.1), out).await?;
    let _ = net.stop_now().await;
    let catch = calls_to_catch(out).await?;

    // ---- 2. 20 % byzantine providers, replicate {3, 2} ----
    let mut faults = [None; PROVIDERS];
    faults[PROVIDERS - 1] = Some(Fault::WrongOutput);
    let net = start_net(&faults).await?;
    out(&format!(
        "byzantine network: {} honest + {} wrong-output provider(s) {:?}",
        PROVIDERS - net.faulty().len(),
        net.faulty().len(),
        net.faulty()
    ));
    let mut byz = Tally::new("byzantine r{3,2}", REPLICATE);
    byz.watch = net.faulty().to_vec();
    let remaining = duration.saturating_sub(started.elapsed());
    let budget = remaining
        .saturating_sub(Duration::from_secs(1))
        .max(duration.mul_f64(0.1));
    byz.drive(net.client(), budget, None).await?;
    out(&byz.line());
    // Banned: no longer listed by the broker (its session was closed and its
    // reconnects are refused). The ban may take a moment to show.
    let deadline = Instant::now() + Duration::from_secs(5);
    let banned = loop {
        let listed: BTreeSet<String> = net
            .client()
            .providers()
            .await?
            .providers
            .into_iter()
            .map(|p| p.address)
            .collect();
        let banned = byz.cheaters.iter().filter(|c| !listed.contains(*c)).count();
        if banned == byz.cheaters.len() || Instant::now() > deadline {
            break banned;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let known = byz
        .cheaters
        .iter()
        .filter(|c| net.faulty().contains(c))
        .count();
    let honest_accused = byz.cheaters.len() - known;
    // The in-process byzantine providers' own view: still trying to connect.
    let byzantine_connection: Vec<&str> = net
        .providers()
        .iter()
        .filter(|p| net.faulty().contains(&p.address()))
        .map(|p| p.connection().as_str())
        .collect();
    out(&format!(
        "cheaters reported {:?} ({known} of {} byzantine, {honest_accused} honest accused), {banned} banned (gone from /v1/providers); byzantine providers now {byzantine_connection:?}; they ran {} replicas; {} proofs; {} wrong results delivered",
        byz.cheaters,
        net.faulty().len(),
        byz.watched_replicas,
        byz.proofs,
        byz.wrong
    ));
    let byzantine = net.faulty().to_vec();
    let _ = net.stop_now().await;

    let ratio_per_s = if none.per_s() > 0.0 {
        adaptive.per_s() / none.per_s()
    } else {
        0.0
    };
    out(&format!(
        "overhead_ratio {:.4} (adaptive, honest, after {} warm-up jobs); adaptive/none throughput {:.3}; wrong_results_delivered {}; cheaters {}; cheaters_banned {banned}",
        adaptive.overhead(),
        warmup.jobs,
        ratio_per_s,
        byz.wrong,
        byz.cheaters.len(),
    ));
    Ok(json!({
        "bench": "verify",
        "overhead_ratio": round(adaptive.overhead(), 4),
        "wrong_results_delivered": byz.wrong,
        "cheaters": byz.cheaters.len(),
        "cheaters_banned": banned,
        "byzantine_providers": byzantine.len(),
        "providers": PROVIDERS,
        "cheaters_byzantine": known,
        "honest_accused": honest_accused,
        "proofs": byz.proofs,
        "byzantine_replicas": byz.watched_replicas,
        "warmup_jobs": warmup.jobs,
        "warmup_s": round(warmup.wall.as_secs_f64(), 3),
        "warmup_target_run": WARMUP_RUN,
        "warmup_reached_target": warmup_reached,
        "warmup_overhead_ratio": round(warmup.overhead(), 4),
        "runs_after_warmup": runs,
        "runs_after_measure": runs_after,
        "adaptive_replicated_jobs": adaptive.replicated,
        "adaptive_jobs_per_s_ratio": round(ratio_per_s, 4),
        "rounds": rounds,
        "concurrency": CONCURRENCY,
        "cpu_loop_n": SIZES,
        "sync_none_p50_us": round(sync.none.us(0.5), 1),
        "sync_audit_p50_us": round(sync.audit.us(0.5), 1),
        "sync_none_p99_us": round(sync.none.us(0.99), 1),
        "sync_audit_p99_us": round(sync.audit.us(0.99), 1),
        "sync_audit_calls": sync.audit.len(),
        "sync_audits": sync.audits,
        "sync_audit_overhead_ratio": round(sync.overhead(), 4),
        "sync_wrong_answers": sync.wrong,
        "calls_to_catch_10pct_liar": catch,
        "none": none.json(),
        "adaptive": adaptive.json(),
        "replicate_3_2_honest": replicate_honest.json(),
        "replicate_3_2_byzantine": byz.json(),
        "total_s": round(started.elapsed().as_secs_f64(), 3),
    }))
}

/// Concurrent callers in the sync phase.
const CALLERS: usize = 4;

/// The sync phase's figures.
struct Sync {
    none: crate::Samples,
    audit: crate::Samples,
    /// Audited calls the broker re-executed.
    audits: u64,
    /// Answers that were not the input echoed back.
    wrong: u64,
}

impl Sync {
    /// Compute executed / delivered for the audited calls.
    fn overhead(&self) -> f64 {
        let calls = self.audit.len().max(1) as f64;
        (calls + self.audits as f64) / calls
    }
}

/// The broker's count of audit re-executions (every outcome).
async fn audits_done(client: &Client) -> anyhow::Result<u64> {
    let text = client.metrics().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("brume_audits_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

fn verify_headers(verify: &'static str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("x-brume-verify", http::HeaderValue::from_static(verify));
    h
}

/// [`CALLERS`] closed-loop callers of `echo` for `budget`, each call
/// timed; counts answers that are not the input.
async fn call_loop(
    client: &Client,
    verify: &'static str,
    budget: Duration,
    samples: &mut crate::Samples,
    wrong: &mut u64,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + budget;
    let mut callers = tokio::task::JoinSet::new();
    for c in 0..CALLERS {
        let client = client.clone();
        callers.spawn(async move {
            let mut times = Vec::new();
            let mut bad = 0u64;
            let mut k = 0u64;
            while Instant::now() < deadline {
                let input = Bytes::from(format!("caller {c} call {k}"));
                k += 1;
                let t = Instant::now();
                let r = client
                    .invoke_with("echo", &[], input.clone(), verify_headers(verify))
                    .await?;
                times.push(t.elapsed());
                if r.body != input {
                    bad += 1;
                }
            }
            anyhow::Ok((times, bad))
        });
    }
    let mut calls = 0;
    while let Some(done) = callers.join_next().await {
        let (times, bad) = done??;
        calls += times.len() as u64;
        for t in times {
            samples.record(t);
        }
        *wrong += bad;
    }
    Ok(calls)
}

/// `none` and `audit` calls, interleaved in rounds, on an honest network.
async fn sync_phase(
    net: &LocalNet,
    budget: Duration,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<Sync> {
    let client = net.client();
    let mut sync = Sync {
        none: crate::Samples::new(),
        audit: crate::Samples::new(),
        audits: 0,
        wrong: 0,
    };
    let before = audits_done(client).await?;
    let round_len = (budget / 4).clamp(Duration::from_millis(200), ROUND);
    let t = Instant::now();
    while t.elapsed() < budget || sync.audit.len() == 0 {
        call_loop(
            client,
            "none",
            round_len / 2,
            &mut sync.none,
            &mut sync.wrong,
        )
        .await?;
        call_loop(
            client,
            "audit",
            round_len / 2,
            &mut sync.audit,
            &mut sync.wrong,
        )
        .await?;
    }
    // The last sampled audits run after their answers: wait for them.
    let share = 0.1; // the broker's default audit share
    let expected = (sync.audit.len() as f64 * share * 0.5) as u64;
    let waited = Instant::now();
    loop {
        sync.audits = audits_done(client).await? - before;
        if sync.audits >= expected || waited.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    out(&format!(
        "functions ({CALLERS} callers of echo): none p50 {:.0} µs p99 {:.0} µs ({} calls); audit p50 {:.0} µs p99 {:.0} µs ({} calls, {} re-executed): overhead {:.3}; {} wrong answers",
        sync.none.us(0.5),
        sync.none.us(0.99),
        sync.none.len(),
        sync.audit.us(0.5),
        sync.audit.us(0.99),
        sync.audit.len(),
        sync.audits,
        sync.overhead(),
        sync.wrong
    ));
    Ok(sync)
}

/// Audited calls, one at a time, to a lone provider that lies on every
/// tenth answer, until the broker drops it (banned); at most 5,000.
async fn calls_to_catch(out: &mut dyn FnMut(&str)) -> anyhow::Result<u64> {
    let net = start_net(&[Some(Fault::WrongOutputTenth)]).await?;
    let client = net.client().clone();
    let mut calls = 0u64;
    let mut lies = 0u64;
    let caught = loop {
        if calls >= 5_000 {
            break false;
        }
        let input = Bytes::from(format!("call {calls}"));
        match client
            .invoke_with("echo", &[], input.clone(), verify_headers("audit"))
            .await
        {
            Ok(r) => {
                calls += 1;
                if r.body != input {
                    lies += 1;
                }
            }
            // Banned: nothing is left to call.
            Err(_) => break true,
        }
        if calls.is_multiple_of(10) && client.providers().await?.providers.is_empty() {
            break true;
        }
    };
    out(&format!(
        "a provider lying on 1 call in 10, default audit share: {} after {calls} audited calls ({lies} lies answered)",
        if caught { "caught" } else { "not caught" }
    ));
    let _ = net.stop_now().await;
    Ok(if caught { calls } else { 0 })
}
