//! The broker's fitness challenge: a seeded integer loop that a provider
//! runs in its sandbox when it connects, so the broker can time it rather
//! than take the provider's word for its speed.
//!
//! [`CHALLENGE_WAT`] reads the seed (8 bytes) and the number of rounds (4
//! bytes, both little endian) from stdin, runs the start-up benchmark's
//! xorshift/multiply mix from that seed, and writes its final state (8
//! bytes, little endian) to stdout. The module never changes, so a provider
//! compiles it once, before it connects; the seed is fresh per challenge,
//! so the answer can't be looked up. The loop has no data-dependent branch:
//! its fuel depends on the rounds only, and the broker learns it by running
//! one challenge itself ([`fuel`]).

use brume_sandbox::{CommandRequest, ExecOptions, Limits, Profile, Program, Sandbox};

/// Rounds of a challenge: about 4·10^7 fuel, tens of milliseconds.
pub const ROUNDS: u32 = 2_000_000;

/// The challenge module.
pub const CHALLENGE_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $i i32) (local $n i32) (local $x i64)
    (i32.store (i32.const 32) (i32.const 0))
    (i32.store (i32.const 36) (i32.const 12))
    (drop (call $fd_read (i32.const 0) (i32.const 32) (i32.const 1) (i32.const 40)))
    (local.set $x (i64.load (i32.const 0)))
    (local.set $n (i32.load (i32.const 8)))
    (loop $l
      (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
      (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
      (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
      (local.set $x (i64.add (i64.mul (local.get $x) (i64.const 6364136223846793005))
                             (i64.extend_i32_u (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (i64.store (i32.const 0) (local.get $x))
    (i32.store (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) (i32.const 8))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))
"#;

/// Pages (64 KiB) of the memory challenge that are written and read back.
pub const MEMORY_SAMPLES: u32 = 64;

/// The memory challenge: reads a seed (8 bytes) and a number of 64 KiB
/// pages (4 bytes) from stdin, grows its memory to that many pages (halving
/// the request until the sandbox grants it), writes [`MEMORY_SAMPLES`]
/// seed-derived words at seed-derived places across the granted pages,
/// reads them back (folded with their addresses), and writes the pages
/// granted (4 bytes) and the fold (8 bytes) to stdout, little endian. Only
/// the sampled pages are touched, so a claim of gigabytes costs the
/// machine a few hundred KiB. It checks that the provider's sandbox grants
/// the memory its provider claims (a configuration check: a provider that
/// rewrites its own sandbox can answer anything it can compute).
pub const MEMORY_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $next (param $x i64) (result i64)
    (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
    (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
    (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
  (func $addr (param $x i64) (param $pages i32) (result i32)
    (i32.add
      (i32.mul (i32.rem_u (i32.wrap_i64 (i64.shr_u (local.get $x) (i64.const 32))) (local.get $pages))
               (i32.const 65536))
      (i32.add (i32.const 1024) (i32.and (i32.wrap_i64 (local.get $x)) (i32.const 63480)))))
  (func (export "_start")
    (local $want i32) (local $granted i32) (local $x i64) (local $k i32) (local $acc i64) (local $a i32)
    (i32.store (i32.const 32) (i32.const 0))
    (i32.store (i32.const 36) (i32.const 12))
    (drop (call $fd_read (i32.const 0) (i32.const 32) (i32.const 1) (i32.const 40)))
    (local.set $want (i32.load (i32.const 8)))
    (local.set $granted (i32.const 1))
    (block $grown
      (loop $try
        (br_if $grown (i32.le_u (local.get $want) (i32.const 1)))
        (if (i32.ne (memory.grow (i32.sub (local.get $want) (i32.const 1))) (i32.const -1))
          (then (local.set $granted (local.get $want)) (br $grown)))
        (local.set $want (i32.shr_u (local.get $want) (i32.const 1)))
        (br $try)))
    (local.set $x (i64.or (i64.load (i32.const 0)) (i64.const 1)))
    (loop $w
      (local.set $x (call $next (local.get $x)))
      (i64.store (call $addr (local.get $x) (local.get $granted)) (local.get $x))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br_if $w (i32.lt_u (local.get $k) (i32.const 64))))
    (local.set $x (i64.or (i64.load (i32.const 0)) (i64.const 1)))
    (local.set $k (i32.const 0))
    (loop $r
      (local.set $x (call $next (local.get $x)))
      (local.set $a (call $addr (local.get $x) (local.get $granted)))
      (local.set $acc (i64.xor (i64.rotl (local.get $acc) (i64.const 1))
                               (i64.xor (i64.load (local.get $a)) (i64.extend_i32_u (local.get $a)))))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br_if $r (i32.lt_u (local.get $k) (i32.const 64))))
    (i32.store (i32.const 16) (local.get $granted))
    (i64.store (i32.const 20) (local.get $acc))
    (i32.store (i32.const 48) (i32.const 16))
    (i32.store (i32.const 52) (i32.const 12))
    (drop (call $fd_write (i32.const 1) (i32.const 48) (i32.const 1) (i32.const 56)))))
"#;

/// Loads (compiles) the memory challenge module.
pub fn load_memory(sandbox: &Sandbox) -> Result<Program, String> {
    sandbox
        .load(MEMORY_WAT.as_bytes(), Profile::Standard)
        .map_err(|e| format!("load the memory challenge: {e}"))
}

/// The folded words of the memory challenge for `seed` over `granted`
/// pages, computed natively (what [`MEMORY_WAT`] prints after the pages).
pub fn memory_expected(seed: u64, granted: u32) -> u64 {
    let next = |mut x: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^ (x << 17)
    };
    let addr = |x: u64| {
        ((x >> 32) as u32 % granted.max(1)) as u64 * 65_536 + 1024 + u64::from(x as u32 & 63_480)
    };
    let mut written = std::collections::HashMap::new();
    let mut x = seed | 1;
    for _ in 0..MEMORY_SAMPLES {
        x = next(x);
        written.insert(addr(x), x);
    }
    let (mut x, mut acc) = (seed | 1, 0u64);
    for _ in 0..MEMORY_SAMPLES {
        x = next(x);
        let a = addr(x);
        acc = acc.rotate_left(1) ^ written.get(&a).copied().unwrap_or(0) ^ a;
    }
    acc
}

/// Runs the memory challenge for `seed` asking for `pages`, with a memory
/// limit of that much: (pages granted, folded words).
pub async fn run_memory(
    sandbox: &Sandbox,
    program: &Program,
    seed: u64,
    pages: u32,
) -> Result<(u32, u64), String> {
    let mut stdin = seed.to_le_bytes().to_vec();
    stdin.extend_from_slice(&pages.to_le_bytes());
    let req = CommandRequest {
        args: vec!["memory".into()],
        stdin: stdin.into(),
        ..CommandRequest::default()
    };
    let options = ExecOptions {
        limits: Limits {
            memory_bytes: u64::from(pages.max(1)) * 65_536,
            ..Limits::default()
        },
        ..ExecOptions::default()
    };
    let out = sandbox
        .run(program, &req, &options)
        .await
        .map_err(|e| format!("run the memory challenge: {}", e.error))?;
    let b = &out.stdout[..];
    if b.len() != 12 {
        return Err(format!(
            "the memory challenge printed {} bytes, not 12",
            b.len()
        ));
    }
    let granted = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut word = [0u8; 8];
    word.copy_from_slice(&b[4..12]);
    Ok((granted, u64::from_le_bytes(word)))
}

/// Both challenge modules, compiled: what a provider answers with.
#[derive(Debug, Clone)]
pub struct Challenges {
    pub compute: Program,
    pub memory: Program,
}

impl Challenges {
    /// Compiles both (blocking: the provider does it once, at start).
    pub fn load(sandbox: &Sandbox) -> Result<Challenges, String> {
        Ok(Challenges {
            compute: load(sandbox)?,
            memory: load_memory(sandbox)?,
        })
    }
}

/// A provider's answer to the broker's [`Measure`](brume_api::wire::Measure):
/// the compute loop, then the memory part if asked; or, for a bandwidth
/// probe (a `blob`), only the blob's sha256. A probe to fetch (`probe`) must
/// be fetched into `blob` first; unfetched, it is answered with an error.
pub async fn answer(
    sandbox: &Sandbox,
    challenges: &Challenges,
    m: &brume_api::wire::Measure,
) -> brume_api::wire::MeasureDone {
    use brume_api::wire::{MeasureDone, MemoryAnswer};
    let failed = |e: String| MeasureDone {
        stdout: bytes::Bytes::new(),
        fuel: 0,
        error: Some(e),
        memory: None,
        blob_sha256: None,
    };
    if m.blob.is_empty() && m.probe.is_some() {
        return failed("the bandwidth probe was not fetched".into());
    }
    if !m.blob.is_empty() {
        use sha2::Digest as _;
        return MeasureDone {
            stdout: bytes::Bytes::new(),
            fuel: 0,
            error: None,
            memory: None,
            blob_sha256: Some(hex::encode(sha2::Sha256::digest(&m.blob))),
        };
    }
    let (stdout, fuel) = match run(sandbox, &challenges.compute, m.seed, m.rounds).await {
        Ok(done) => done,
        Err(e) => return failed(e),
    };
    let memory = if m.memory_pages == 0 {
        None
    } else {
        match run_memory(sandbox, &challenges.memory, m.seed, m.memory_pages).await {
            Ok((granted_pages, fold)) => Some(MemoryAnswer {
                granted_pages,
                fold,
            }),
            Err(e) => return failed(e),
        }
    };
    MeasureDone {
        stdout,
        fuel,
        error: None,
        memory,
        blob_sha256: None,
    }
}

/// Loads (compiles) the challenge module.
pub fn load(sandbox: &Sandbox) -> Result<Program, String> {
    sandbox
        .load(CHALLENGE_WAT.as_bytes(), Profile::Standard)
        .map_err(|e| format!("load the fitness challenge: {e}"))
}

/// What the challenge for `seed` and `rounds` prints, computed natively.
pub fn expected(seed: u64, rounds: u32) -> [u8; 8] {
    let mut x = seed;
    for i in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(u64::from(i));
    }
    x.to_le_bytes()
}

/// Runs the challenge for `seed` and `rounds`: (stdout, fuel).
pub async fn run(
    sandbox: &Sandbox,
    program: &Program,
    seed: u64,
    rounds: u32,
) -> Result<(bytes::Bytes, u64), String> {
    let mut stdin = seed.to_le_bytes().to_vec();
    stdin.extend_from_slice(&rounds.to_le_bytes());
    let req = CommandRequest {
        args: vec!["fitness".into()],
        stdin: stdin.into(),
        ..CommandRequest::default()
    };
    let out = sandbox
        .run(program, &req, &ExecOptions::default())
        .await
        .map_err(|e| format!("run the fitness challenge: {}", e.error))?;
    Ok((out.stdout, out.usage.fuel))
}

/// The fuel of a challenge of `rounds` (whatever its seed): what an honest
/// provider reports.
pub async fn fuel(sandbox: &Sandbox, rounds: u32) -> Result<u64, String> {
    let program = load(sandbox)?;
    run(sandbox, &program, 0, rounds)
        .await
        .map(|(_, fuel)| fuel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sandbox_prints_what_the_native_loop_computes_and_fuel_ignores_the_seed() {
        let sandbox = Sandbox::new(brume_sandbox::SandboxConfig {
            max_concurrent_instances: 2,
            ..brume_sandbox::SandboxConfig::default()
        })
        .expect("sandbox");
        let program = load(&sandbox).expect("load");
        let (out, fuel) = run(&sandbox, &program, 42, 1000).await.expect("run");
        assert_eq!(&out[..], &expected(42, 1000));
        let (other, fuel2) = run(&sandbox, &program, u64::MAX, 1000).await.expect("run");
        assert_eq!(&other[..], &expected(u64::MAX, 1000));
        assert_ne!(out, other);
        assert_eq!(fuel, fuel2);
        assert!(fuel > 1000 * 10, "{fuel}");
        assert_eq!(fuel2, fuel);
        let (_, more) = run(&sandbox, &program, 42, 2000).await.expect("run");
        assert!(more > fuel, "{more} {fuel}");
    }

    #[tokio::test]
    async fn the_memory_challenge_folds_what_the_native_model_does_over_the_pages_granted() {
        let sandbox = Sandbox::new(brume_sandbox::SandboxConfig {
            max_concurrent_instances: 2,
            max_memory_bytes: 64 << 20,
            ..brume_sandbox::SandboxConfig::default()
        })
        .expect("sandbox");
        let program = load_memory(&sandbox).expect("load");
        for (seed, pages) in [(7u64, 16u32), (u64::MAX, 1), (0, 3)] {
            let (granted, word) = run_memory(&sandbox, &program, seed, pages)
                .await
                .expect("run");
            assert_eq!(granted, pages);
            assert_eq!(word, memory_expected(seed, granted), "seed {seed}");
        }
        // More than the sandbox allows: halved until granted (1024 pages =
        // the 64 MiB cap).
        let (granted, word) = run_memory(&sandbox, &program, 9, 4096).await.expect("run");
        assert_eq!(granted, 1024);
        assert_eq!(word, memory_expected(9, 1024));
        assert_ne!(memory_expected(9, 1024), memory_expected(9, 512));
    }
}
