//! Nothing a guest does leaves the host worse off for the next execution.

use brume_sandbox::CommandRequest;
use test_programs_artifacts as art;

use crate::util::*;

#[tokio::test]
async fn a_hundred_hostile_executions_then_a_correct_one() {
    let sb = sandbox();
    let hostile = [
        (load(&sb, art::INFINITE_LOOP_P1), "timeout"),
        (load(&sb, art::MEMORY_BOMB_P1), "memory_limit"),
        (load(&sb, art::STACK_OVERFLOW_P1), "trap"),
        (load(&sb, art::OUTPUT_FLOOD_P1), "output_too_large"),
        (load(&sb, art::MEMORY_BOMB_P2), "memory_limit"),
        (load(&sb, art::OUTPUT_FLOOD_P2), "output_too_large"),
        (wat(&sb, "grow_loop"), "memory_limit"),
        (wat(&sb, "deep_recursion"), "trap"),
        (wat(&sb, "huge_memory"), "memory_limit"),
        (wat(&sb, "unreachable"), "trap"),
    ];
    let limits = |timeout_ms: u64| {
        with_limits(|l| {
            l.fuel = u64::MAX / 2;
            l.memory_bytes = 32 << 20;
            l.timeout = std::time::Duration::from_millis(timeout_ms);
            l.max_output_bytes = 256 << 10;
        })
    };
    // Only the spinning guest is meant to hit the clock; the others get
    // plenty of time so that a loaded machine cannot change their outcome.
    let (spin, other) = (limits(20), limits(20_000));
    for i in 0..100 {
        let (p, code) = &hostile[i % hostile.len()];
        let o = if *code == "timeout" { &spin } else { &other };
        let f = run_err(&sb, p, &args(&["h"]), o).await;
        assert_eq!(f.error.code(), *code, "execution {i} ({p:?}): {}", f.error);
    }
    let p = load(&sb, art::SHA256_P1);
    let req = CommandRequest {
        stdin: "abc".into(),
        ..args(&["sha256"])
    };
    let out = run_ok(&sb, &p, &req).await;
    assert_eq!(
        text(&out.stdout).trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let fuel = out.usage.fuel;
    // Same fuel as on a sandbox that never saw a hostile guest.
    let fresh = sandbox();
    let again = run_ok(&fresh, &load(&fresh, art::SHA256_P1), &req).await;
    assert_eq!(again.usage.fuel, fuel);
}
