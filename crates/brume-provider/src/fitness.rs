//! The start-up fitness test: one fixed integer benchmark through the
//! sandbox, reported as MIPS.

use std::time::Instant;

use brume_sandbox::{CommandRequest, ExecOptions, Profile, Sandbox};

/// An xorshift/multiply mix over 2·10^6 iterations (about 4·10^7 fuel):
/// a few tens of milliseconds on a current core. The result is stored so
/// the loop cannot be optimized away.
pub const BENCHMARK_WAT: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (local $i i32) (local $x i64)
    (local.set $x (i64.const 0x9e3779b97f4a7c15))
    (loop $l
      (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
      (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
      (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
      (local.set $x (i64.add (i64.mul (local.get $x) (i64.const 6364136223846793005))
                             (i64.extend_i32_u (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 2000000))))
    (i64.store (i32.const 0) (local.get $x))))
"#;

/// The benchmark's digest (so it is not reported as a cached service).
pub fn digest() -> brume_sandbox::Digest {
    match wat::parse_str(BENCHMARK_WAT) {
        Ok(bin) => brume_sandbox::Digest::of(&bin),
        Err(_) => brume_sandbox::Digest([0; 32]),
    }
}

/// Why the fitness test did not run.
#[derive(Debug, thiserror::Error)]
pub enum FitnessError {
    #[error("load benchmark: {0}")]
    Load(#[source] brume_sandbox::ExecError),
    #[error("run benchmark: {0}")]
    Run(#[source] brume_sandbox::ExecFailure),
}

/// Runs [`BENCHMARK_WAT`] once and returns millions of wasm instructions
/// (fuel) per wall-clock second, at least 1.
pub async fn measure(sandbox: &Sandbox) -> Result<u64, FitnessError> {
    let program = sandbox
        .load(BENCHMARK_WAT.as_bytes(), Profile::Standard)
        .map_err(FitnessError::Load)?;
    let req = CommandRequest {
        args: vec!["fitness".into()],
        ..CommandRequest::default()
    };
    let started = Instant::now();
    let out = sandbox
        .run(&program, &req, &ExecOptions::default())
        .await
        .map_err(FitnessError::Run)?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    Ok(((out.usage.fuel as f64 / secs / 1e6) as u64).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fitness_is_positive_and_the_benchmark_is_fixed_work() {
        let sb = Sandbox::new(brume_sandbox::SandboxConfig {
            max_concurrent_instances: 2,
            ..Default::default()
        })
        .expect("sandbox");
        let mips = measure(&sb).await.expect("fitness");
        assert!(mips >= 1);
        // Same fuel every time: the benchmark is deterministic work.
        let p = sb
            .load(BENCHMARK_WAT.as_bytes(), Profile::Standard)
            .expect("load");
        let req = CommandRequest::default();
        let a = sb
            .run(&p, &req, &ExecOptions::default())
            .await
            .expect("run");
        let b = sb
            .run(&p, &req, &ExecOptions::default())
            .await
            .expect("run");
        assert_eq!(a.usage.fuel, b.usage.fuel);
        assert!(a.usage.fuel > 10_000_000, "{}", a.usage.fuel);
    }
}
