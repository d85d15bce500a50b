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

use brume_sandbox::{CommandRequest, ExecOptions, Profile, Program, Sandbox};

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
}
