use std::sync::Arc;
use std::time::Duration;

use brume_sandbox::{ExecOptions, Progress};

use crate::util::*;

/// 60 rounds of a million-iteration LCG loop, writing `tick\n` to stderr
/// after each round: long enough to be observed while it runs.
const TICKER: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "tick\n")
  (func (export "_start")
    (local $round i32) (local $i i32) (local $x i64)
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 5))
    (loop $outer
      (local.set $i (i32.const 0))
      (loop $inner
        (local.set $x (i64.add (i64.mul (local.get $x) (i64.const 6364136223846793005)) (i64.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $inner (i32.lt_u (local.get $i) (i32.const 1000000))))
      (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $round (i32.add (local.get $round) (i32.const 1)))
      (br_if $outer (i32.lt_u (local.get $round) (i32.const 60))))))
"#;

#[tokio::test]
async fn a_running_guest_reports_increasing_fuel_and_streams_stderr() {
    let sb = sandbox();
    let p = sb
        .load(TICKER.as_bytes(), brume_sandbox::Profile::Standard)
        .expect("load");
    let progress = Arc::new(Progress::new());
    let req = args(&["ticker"]);
    let options = ExecOptions::default();
    let run = sb.run_with_progress(&p, &req, &options, &progress);
    tokio::pin!(run);

    let mut fuel_samples = Vec::new();
    let mut streamed = Vec::new();
    let outcome = loop {
        tokio::select! {
            out = &mut run => break out.expect("ticker runs"),
            () = tokio::time::sleep(Duration::from_millis(5)) => {
                fuel_samples.push(progress.fuel_consumed());
                streamed.extend_from_slice(&progress.take_stderr());
            }
        }
    };
    // Seen while running: fuel that grows, and stderr before the end.
    let seen: Vec<u64> = fuel_samples.iter().copied().filter(|&f| f > 0).collect();
    assert!(
        seen.len() >= 2,
        "fuel samples while running: {fuel_samples:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(seen.last() > seen.first(), "{seen:?}");
    assert!(!streamed.is_empty(), "no stderr streamed before the end");
    assert!(
        seen.iter().all(|&f| f <= outcome.usage.fuel),
        "{seen:?} vs {}",
        outcome.usage.fuel
    );

    // Nothing is lost: the streamed pieces and the rest make up all of stderr,
    // which the outcome still carries whole; the final fuel is exact.
    streamed.extend_from_slice(&progress.take_stderr());
    assert_eq!(streamed, outcome.stderr);
    assert_eq!(outcome.stderr, "tick\n".repeat(60).as_bytes());
    assert_eq!(progress.fuel_consumed(), outcome.usage.fuel);
}

#[tokio::test]
async fn progress_keeps_the_deadline() {
    let sb = sandbox();
    let p = load(&sb, test_programs_artifacts::INFINITE_LOOP_P1);
    let progress = Arc::new(Progress::new());
    let o = with_limits(|l| l.timeout = Duration::from_millis(200));
    let f = sb
        .run_with_progress(&p, &args(&["loop"]), &o, &progress)
        .await
        .expect_err("times out");
    assert_eq!(f.error.code(), "timeout");
    assert!(f.usage.fuel > 0);
    assert_eq!(progress.fuel_consumed(), f.usage.fuel);
}

#[test]
fn cached_digests_lists_artifacts_by_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sb = brume_sandbox::Sandbox::new(brume_sandbox::SandboxConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        max_concurrent_instances: 2,
        ..brume_sandbox::SandboxConfig::default()
    })
    .expect("sandbox");
    assert!(sb.cached_digests().is_empty());
    let a = sb
        .load(TICKER.as_bytes(), brume_sandbox::Profile::Standard)
        .expect("load");
    // Same digest, other profile: still one digest.
    sb.load(TICKER.as_bytes(), brume_sandbox::Profile::Deterministic)
        .expect("load");
    std::fs::write(dir.path().join("junk.cwasm"), b"x").expect("write");
    assert_eq!(sb.cached_digests(), vec![a.digest()]);
}
