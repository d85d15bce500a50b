//! Measured capabilities: at the handshake, between `Hello` and `Welcome`,
//! the broker sends a fresh fitness challenge (`brume_exec::fitness`: a
//! seeded loop whose output it computes natively and whose fuel it learned
//! by running one itself) and times the answer. A wrong or missing answer
//! closes the session. A claimed speed more than [`TOLERANCE`] times the
//! measured one is cut down to the measure, and the provider is told why
//! (`Welcome::measured`). Tiers' `min_mips` and the slow-provider refund
//! use the placed figure.
//!
//! The same challenge then asks the provider's sandbox for the memory the
//! provider claims (up to one instance's 4 GiB: `fitness::MEMORY_WAT`
//! touches a seeded sample of its pages and folds them; the broker checks
//! the fold natively). A claim more than its slots' instances were granted
//! is cut to that. It checks the sandbox's configuration, not honesty: a
//! provider that rewrites its sandbox can compute any answer.
//!
//! Last, a bandwidth probe: a random 256 KiB blob whose sha256 the
//! provider sends back, timed (`/v1/providers` shows `measured_mbps`).
//!
//! The time includes the round trip, so a distant provider measures a
//! little slower than it is; the tolerance absorbs that and the noise of a
//! loaded machine.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use brume_api::wire::{self, CONTROL, FromProvider, ToProvider};
use brume_exec::fitness;

use crate::Shared;

/// How long a provider has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A claim up to this many times the measure stands.
pub(crate) const TOLERANCE: u64 = 2;

/// Challenges the provider on `socket` and judges its claimed MIPS; `Err`
/// says why the session is refused.
pub(crate) async fn challenge(
    shared: &Shared,
    socket: &mut WebSocket,
    caps: &wire::Capabilities,
) -> Result<(wire::MeasuredSpeed, wire::MeasuredMemory), String> {
    let fuel = challenge_fuel(shared).await?;
    let seed: u64 = rand::random();
    let rounds = fitness::ROUNDS;
    let memory_pages = (caps.memory_bytes / PAGE).clamp(1, MAX_PAGES) as u32;
    let m = wire::Measure {
        seed,
        rounds,
        memory_pages,
        blob: bytes::Bytes::new(),
        probe: None,
    };
    let (done, elapsed) = ask(socket, m).await?;
    if let Some(e) = done.error {
        return Err(format!(
            "the provider could not run the fitness challenge: {e}"
        ));
    }
    if done.stdout[..] != fitness::expected(seed, rounds) || done.fuel != fuel {
        return Err(format!(
            "wrong answer to the fitness challenge (fuel {}, expected {fuel})",
            done.fuel
        ));
    }
    let measured_mips = ((fuel as f64 / elapsed.as_secs_f64().max(1e-9)) / 1e6).max(1.0) as u64;
    let memory = match done.memory {
        Some(m)
            if m.granted_pages >= 1
                && m.granted_pages <= memory_pages
                && m.fold == fitness::memory_expected(seed, m.granted_pages) =>
        {
            m
        }
        _ => return Err("wrong answer to the memory challenge".into()),
    };
    let speed = wire::MeasuredSpeed {
        measured_mbps: bandwidth(shared, socket).await?,
        ..judge(caps.fitness_mips, measured_mips)
    };
    Ok((
        speed,
        judge_memory(caps, u64::from(memory.granted_pages) * PAGE),
    ))
}

/// Bytes of the bandwidth probe.
const BLOB: usize = 256 << 10;

/// Blobs of bandwidth probes waiting for their provider to fetch them
/// (`GET /v1/provider/probe/{token}`), each once; kept [`PROBE_TTL`] at most.
#[derive(Debug, Default)]
pub(crate) struct Probes(parking_lot::Mutex<HashMap<String, (Instant, bytes::Bytes)>>);

/// How long a probe's blob waits for its fetch.
const PROBE_TTL: Duration = Duration::from_secs(30);

impl Probes {
    /// Keeps `blob` for one fetch; returns its token.
    fn offer(&self, blob: bytes::Bytes) -> String {
        let mut token = [0u8; 16];
        rand::fill(&mut token[..]);
        let token = hex::encode(token);
        let mut map = self.0.lock();
        map.retain(|_, (at, _)| at.elapsed() < PROBE_TTL);
        map.insert(token.clone(), (Instant::now(), blob));
        token
    }

    /// The blob of `token`, once.
    pub(crate) fn take(&self, token: &str) -> Option<bytes::Bytes> {
        self.0.lock().remove(token).map(|(_, b)| b)
    }
}

/// A bandwidth probe: a fresh blob, offered for one fetch.
fn bandwidth_probe(shared: &Shared) -> (wire::Measure, String, String) {
    let (blob, want) = blob();
    let token = shared.probes.offer(blob);
    let m = wire::Measure {
        seed: 0,
        rounds: 0,
        memory_pages: 0,
        blob: bytes::Bytes::new(),
        probe: Some(token.clone()),
    };
    (m, want, token)
}

/// Times a [`BLOB`] fetched by the provider over HTTP and its sha256 back:
/// megabits per second, round trip included.
async fn bandwidth(shared: &Shared, socket: &mut WebSocket) -> Result<u64, String> {
    let (m, want, token) = bandwidth_probe(shared);
    let answer = ask(socket, m).await;
    shared.probes.take(&token);
    let (done, elapsed) = answer?;
    if done.blob_sha256.as_deref() != Some(want.as_str()) {
        return Err("wrong answer to the bandwidth probe".into());
    }
    Ok(mbps(elapsed))
}

/// A random [`BLOB`] and its sha256 (hex).
fn blob() -> (bytes::Bytes, String) {
    use sha2::Digest as _;
    let mut blob = vec![0u8; BLOB];
    rand::fill(&mut blob[..]);
    let want = hex::encode(sha2::Sha256::digest(&blob));
    (blob.into(), want)
}

/// Megabits per second for a [`BLOB`] sent and answered in `elapsed`.
fn mbps(elapsed: Duration) -> u64 {
    let bits = (BLOB * 8) as f64;
    ((bits / elapsed.as_secs_f64().max(1e-9)) / 1e6).max(1.0) as u64
}

/// Sends one challenge and waits for its answer: the answer and the time.
async fn ask(
    socket: &mut WebSocket,
    m: wire::Measure,
) -> Result<(wire::MeasureDone, Duration), String> {
    let frame = ToProvider::Measure(m).encode(CONTROL);
    let started = Instant::now();
    socket
        .send(Message::Binary(frame))
        .await
        .map_err(|e| format!("send the fitness challenge: {e}"))?;
    let done = tokio::time::timeout(TIMEOUT, answer(socket))
        .await
        .map_err(|_| {
            format!(
                "no answer to the fitness challenge within {} s",
                TIMEOUT.as_secs()
            )
        })??;
    Ok((done, started.elapsed()))
}

/// A wasm page.
const PAGE: u64 = 65_536;
/// The most pages one instance may have (wasm32: 4 GiB).
const MAX_PAGES: u64 = 65_536;

/// The placed memory: the claim, cut to what its slots' instances can
/// hold if one was granted less than the claim (each instance at most
/// 4 GiB), with why.
pub(crate) fn judge_memory(caps: &wire::Capabilities, granted_bytes: u64) -> wire::MeasuredMemory {
    let claimed = caps.memory_bytes;
    let asked = claimed.clamp(PAGE, MAX_PAGES * PAGE);
    let holds = granted_bytes.saturating_mul(u64::from(caps.slots.max(1)));
    let backed = granted_bytes >= asked && holds >= claimed;
    wire::MeasuredMemory {
        claimed_bytes: claimed,
        granted_bytes,
        placed_bytes: if backed { claimed } else { claimed.min(holds) },
        note: (!backed).then(|| {
            format!(
                "claimed {claimed} bytes of memory, but one instance of its sandbox was granted                  {granted_bytes} bytes (of {asked} asked): {} slots hold at most {holds}",
                caps.slots
            )
        }),
    }
}

/// Challenges now and then after the handshake: each `every`, if the
/// provider is idle (its timing then measures the machine, not its load)
/// and no challenge is pending, a fresh compute challenge with its memory
/// challenge, or, every other time, a bandwidth probe; the answer updates
/// the placed speed and memory, or the measured bandwidth. A wrong answer,
/// or none within [`TIMEOUT`], ends the session.
pub(crate) struct Remeasure {
    tick: Option<tokio::time::Interval>,
    /// The probe awaiting its answer, and when it was sent.
    pending: Option<(Probe, Instant)>,
    /// Probes alternate: compute and memory, then bandwidth.
    next_bandwidth: bool,
}

/// A re-challenge in flight.
enum Probe {
    /// The compute challenge's seed, and the memory pages asked.
    Compute { seed: u64, pages: u32 },
    /// The sha256 (hex) of the blob offered, and its token.
    Bandwidth { want: String, token: String },
}

impl Remeasure {
    pub(crate) fn new(every: Option<Duration>) -> Remeasure {
        let tick = every.map(|d| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        Remeasure {
            tick,
            pending: None,
            next_bandwidth: false,
        }
    }

    /// The next tick (never, when re-challenges are off).
    pub(crate) async fn tick(&mut self) {
        match &mut self.tick {
            Some(t) => {
                t.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// The challenge frame to send now, if any; `Err` if the last one went
    /// unanswered.
    pub(crate) fn start(
        &mut self,
        shared: &Shared,
        id: u64,
    ) -> Result<Option<bytes::Bytes>, String> {
        if let Some((_, sent)) = self.pending {
            if sent.elapsed() > TIMEOUT {
                return Err(format!(
                    "no answer to a re-challenge within {} s",
                    TIMEOUT.as_secs()
                ));
            }
            return Ok(None);
        }
        let claimed_memory = shared.lifecycle.read(|s| {
            s.providers
                .get(&id)
                .filter(|p| p.busy == 0)
                .map(|p| p.claimed_memory_bytes)
        });
        let Some(claimed_memory) = claimed_memory else {
            return Ok(None); // busy: its timing would measure its load
        };
        if shared.challenge_fuel.get().is_none() {
            return Ok(None);
        }
        let bandwidth = self.next_bandwidth;
        self.next_bandwidth = !bandwidth;
        let (probe, m) = if !bandwidth {
            let seed: u64 = rand::random();
            let pages = (claimed_memory / PAGE).clamp(1, MAX_PAGES) as u32;
            let m = wire::Measure {
                seed,
                rounds: fitness::ROUNDS,
                memory_pages: pages,
                blob: bytes::Bytes::new(),
                probe: None,
            };
            (Probe::Compute { seed, pages }, m)
        } else {
            let (m, want, token) = bandwidth_probe(shared);
            (Probe::Bandwidth { want, token }, m)
        };
        self.pending = Some((probe, Instant::now()));
        Ok(Some(ToProvider::Measure(m).encode(CONTROL)))
    }

    /// Judges an answer: the placed speed, memory and bandwidth follow the
    /// new measure.
    pub(crate) fn done(
        &mut self,
        shared: &Shared,
        id: u64,
        address: &str,
        done: &wire::MeasureDone,
    ) -> Result<(), String> {
        let Some((probe, sent)) = self.pending.take() else {
            return Ok(()); // the handshake's, late: nothing to judge
        };
        let elapsed = sent.elapsed();
        let kind = match probe {
            Probe::Bandwidth { want, token } => {
                shared.probes.take(&token);
                if done.blob_sha256.as_deref() != Some(want.as_str()) {
                    return Err("wrong answer to a bandwidth re-probe".into());
                }
                let mbps = mbps(elapsed);
                shared.with_sched(|s, _| {
                    if let Some(p) = s.providers.get_mut(&id) {
                        p.measured_mbps = mbps;
                    }
                });
                "bandwidth"
            }
            Probe::Compute { seed, pages } => {
                let fuel = shared.challenge_fuel.get().copied().unwrap_or(0);
                if done.error.is_some()
                    || done.stdout[..] != fitness::expected(seed, fitness::ROUNDS)
                    || done.fuel != fuel
                {
                    return Err("wrong answer to a fitness re-challenge".into());
                }
                let granted = match &done.memory {
                    Some(m)
                        if m.granted_pages >= 1
                            && m.granted_pages <= pages
                            && m.fold == fitness::memory_expected(seed, m.granted_pages) =>
                    {
                        u64::from(m.granted_pages) * PAGE
                    }
                    _ => return Err("wrong answer to a memory re-challenge".into()),
                };
                let measured =
                    ((fuel as f64 / elapsed.as_secs_f64().max(1e-9)) / 1e6).max(1.0) as u64;
                shared.with_sched(|s, _| {
                    if let Some(p) = s.providers.get_mut(&id) {
                        replace(p, address, measured, granted);
                    }
                });
                "compute"
            }
        };
        shared
            .metrics
            .remeasures
            .get_or_create(&crate::metrics::KindLabels {
                kind: kind.to_string(),
            })
            .inc();
        Ok(())
    }
}

/// A provider's placed speed and memory, after a re-challenge.
fn replace(p: &mut crate::sched::ProviderEntry, address: &str, mips: u64, granted: u64) {
    let verdict = judge(p.claimed_mips, mips);
    let mut claimed = p.caps.clone();
    claimed.memory_bytes = p.claimed_memory_bytes;
    let memory = judge_memory(&claimed, granted);
    if verdict.placed_mips != p.caps.fitness_mips || memory.placed_bytes != p.caps.memory_bytes {
        tracing::info!(
            provider = %address, measured_mips = mips, placed_mips = verdict.placed_mips,
            granted_bytes = granted, placed_bytes = memory.placed_bytes, "re-measured"
        );
    }
    p.caps.fitness_mips = verdict.placed_mips;
    p.caps.memory_bytes = memory.placed_bytes;
    p.measured_mips = mips;
    p.measured_at_ms = crate::now_ms();
}

/// The placed figure: the claim if the measure backs it within
/// [`TOLERANCE`], else the measure, with why.
pub(crate) fn judge(claimed_mips: u64, measured_mips: u64) -> wire::MeasuredSpeed {
    let backed = measured_mips.saturating_mul(TOLERANCE) >= claimed_mips;
    wire::MeasuredSpeed {
        claimed_mips,
        measured_mips,
        placed_mips: if backed { claimed_mips } else { measured_mips },
        measured_mbps: 0,
        note: (!backed).then(|| {
            format!(
                "claimed {claimed_mips} MIPS, but the broker's fitness challenge ran at \
                 {measured_mips} MIPS (round trip included); claims more than {TOLERANCE}x \
                 the measure are cut to it"
            )
        }),
    }
}

/// The provider's `MeasureDone`, answering pings meanwhile.
async fn answer(socket: &mut WebSocket) -> Result<wire::MeasureDone, String> {
    loop {
        match socket.recv().await {
            Some(Ok(Message::Binary(b))) => match FromProvider::decode(&b) {
                Ok((_, FromProvider::MeasureDone(d))) => return Ok(d),
                Ok((ch, FromProvider::Ping(n))) => {
                    let pong = ToProvider::Pong(n).encode(ch);
                    let _ = socket.send(Message::Binary(pong)).await;
                }
                Ok((_, other)) => {
                    return Err(format!("expected MeasureDone, got {other:?}"));
                }
                Err(e) => return Err(format!("bad frame: {e}")),
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            _ => return Err("the provider left during the fitness challenge".into()),
        }
    }
}

/// The fuel of a challenge: learned once, by running one here.
async fn challenge_fuel(shared: &Shared) -> Result<u64, String> {
    shared
        .challenge_fuel
        .get_or_try_init(|| async {
            // The validator runs one instance at a time: re-executions too.
            let _one = shared
                .reexecutions
                .acquire()
                .await
                .map_err(|e| e.to_string())?;
            fitness::fuel(&shared.validator, fitness::ROUNDS).await
        })
        .await
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_claims_are_cut_to_what_the_slots_instances_were_granted() {
        let caps = |slots, memory_bytes| wire::Capabilities {
            slots,
            memory_bytes,
            fitness_mips: 1_000,
            region: String::new(),
            allowed_services: None,
            cached: Vec::new(),
            org: None,
            attestation: None,
            containers: false,
            gpus: Default::default(),
            network: false,
            hours: None,
            location: None,
            policy: Default::default(),
        };
        // 2 GiB on 2 slots, granted in full: stands.
        let ok = judge_memory(&caps(2, 2 << 30), 2 << 30);
        assert_eq!((ok.placed_bytes, ok.note), (2 << 30, None));
        // 64 GiB on one slot: one instance holds 4 GiB at most.
        let big = judge_memory(&caps(1, 64 << 30), 4 << 30);
        assert_eq!(big.placed_bytes, 4 << 30);
        assert!(big.note.is_some());
        // A sandbox that grants less than asked: cut to its slots' worth.
        let small = judge_memory(&caps(4, 2 << 30), 256 << 20);
        assert_eq!(small.placed_bytes, 1 << 30);
    }

    #[test]
    fn claims_within_the_tolerance_stand_and_others_are_cut() {
        let ok = judge(1_500, 1_000);
        assert_eq!((ok.placed_mips, ok.note), (1_500, None));
        let cut = judge(10_000, 1_000);
        assert_eq!(cut.placed_mips, 1_000);
        assert!(cut.note.unwrap_or_default().contains("10000"));
        // A modest claim is never raised to the measure.
        assert_eq!(judge(500, 1_000).placed_mips, 500);
    }
}
