use brume_sandbox::{CommandRequest, ExecOptions, Profile};
use test_programs_artifacts as art;

use crate::util::*;

async fn det_run(path: &str, argv: &[&str], seed: u64) -> (String, u64) {
    let sb = sandbox();
    let p = load_as(&sb, path, Profile::Deterministic);
    let o = ExecOptions {
        seed,
        ..ExecOptions::default()
    };
    let out = sb.run(&p, &args(argv), &o).await.expect("run");
    (text(&out.stdout).to_string(), out.usage.fuel)
}

#[tokio::test]
async fn clock_and_random_are_fixed_by_the_seed() {
    for path in [art::CLOCK_RANDOM_P1, art::CLOCK_RANDOM_P2] {
        let a = det_run(path, &["cr"], 1).await;
        let b = det_run(path, &["cr"], 1).await;
        assert_eq!(a, b, "same seed, same bytes and fuel ({path})");
        assert!(a.0.contains("wall_ns=0\n"), "{}", a.0);
        let c = det_run(path, &["cr"], 2).await;
        assert_ne!(a.0, c.0, "another seed, other random bytes");
    }
}

#[tokio::test]
async fn standard_profile_is_not_deterministic() {
    let sb = sandbox();
    let p = load(&sb, art::CLOCK_RANDOM_P1);
    let a = run_ok(&sb, &p, &args(&["cr"])).await;
    let b = run_ok(&sb, &p, &args(&["cr"])).await;
    assert_ne!(a.stdout, b.stdout);
}

#[tokio::test]
async fn nan_bits_are_canonical_in_deterministic_mode() {
    let sb = sandbox();
    let p = load_as(&sb, &art::wat("nan"), Profile::Deterministic);
    let out = sb
        .run(&p, &args(&["nan"]), &ExecOptions::default())
        .await
        .expect("run");
    assert_eq!(out.stdout.as_ref(), &0x7ff8_0000_0000_0000u64.to_le_bytes());
    for path in [art::FLOATS_P1, art::FLOATS_P2] {
        let a = det_run(path, &["f"], 0).await;
        assert_eq!(a, det_run(path, &["f"], 0).await);
    }
}

#[tokio::test]
async fn monte_carlo_example_reproduces_bit_for_bit() {
    let argv = [
        "mc",
        "--paths",
        "20000",
        "--kind",
        "asian-call",
        "--steps",
        "4",
    ];
    let a = det_run(art::MONTE_CARLO, &argv, 42).await;
    let b = det_run(art::MONTE_CARLO, &argv, 42).await;
    assert_eq!(a, b);
    assert!(a.0.contains("\"price\":"), "{}", a.0);
    // The two profiles are separate programs with separate artifacts.
    let sb = sandbox();
    let std = load(&sb, art::MONTE_CARLO);
    let det = load_as(&sb, art::MONTE_CARLO, Profile::Deterministic);
    assert_eq!(std.digest(), det.digest());
    assert_ne!(std.profile(), det.profile());
    let req = CommandRequest { ..args(&argv) };
    assert_eq!(run_ok(&sb, &std, &req).await.exit_code, 0);
}
