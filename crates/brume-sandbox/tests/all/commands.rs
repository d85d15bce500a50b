use brume_sandbox::{CommandRequest, Shape};
use test_programs_artifacts as art;

use crate::util::*;

#[tokio::test]
async fn echo_p1_and_p2_copy_stdin_and_meter_bytes() {
    let sb = sandbox();
    for (path, shape) in [
        (art::ECHO_P1, Shape::P1Command),
        (art::ECHO_P2, Shape::P2Command),
    ] {
        let p = load(&sb, path);
        assert_eq!(p.shape(), shape);
        let req = CommandRequest {
            stdin: "hello, brume\n".into(),
            ..args(&["echo"])
        };
        let out = run_ok(&sb, &p, &req).await;
        assert_eq!(out.exit_code, 0);
        assert_eq!(text(&out.stdout), "hello, brume\n");
        assert_eq!(out.stderr.len(), 0);
        assert_eq!(out.usage.bytes_in, 13);
        assert_eq!(out.usage.bytes_out, 13);
        assert!(out.usage.fuel > 0);
        assert!(out.usage.peak_memory_bytes >= 64 * 1024);
    }
}

#[tokio::test]
async fn sha256_of_stdin_matches_the_host() {
    use sha2::Digest as _;
    let sb = sandbox();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let expect = hex::encode(sha2::Sha256::digest(&data));
    for path in [art::SHA256_P1, art::SHA256_P2] {
        let p = load(&sb, path);
        let req = CommandRequest {
            stdin: data.clone().into(),
            ..args(&["sha256"])
        };
        let out = run_ok(&sb, &p, &req).await;
        assert_eq!(text(&out.stdout).trim(), expect);
    }
}

#[tokio::test]
async fn args_reach_the_guest_and_exit_codes_are_results() {
    let sb = sandbox();
    // WASI 0.2's `exit` carries only success or failure, so a preview 2
    // command reports any non-zero status as 1 (as under `wasmtime run`).
    for (path, code) in [(art::ARGS_P1, 3), (art::ARGS_P2, 1)] {
        let p = load(&sb, path);
        let req = CommandRequest {
            env: vec![("EXIT_CODE".into(), "3".into())],
            ..args(&["prog", "one", "--two", "thr ee"])
        };
        let out = run_ok(&sb, &p, &req).await;
        assert_eq!(text(&out.stdout), "prog\none\n--two\nthr ee\n");
        assert_eq!(out.exit_code, code, "{path}");
    }
    let p = wat(&sb, "exit_code");
    assert_eq!(run_ok(&sb, &p, &args(&["x"])).await.exit_code, 7);
}

#[tokio::test]
async fn fuel_is_exact_and_proportional_to_work() {
    let sb = sandbox();
    let p = load(&sb, art::CPU_LOOP_P1);
    let small = run_ok(&sb, &p, &args(&["cpu_loop", "1000"]))
        .await
        .usage
        .fuel;
    let again = run_ok(&sb, &p, &args(&["cpu_loop", "1000"]))
        .await
        .usage
        .fuel;
    let big = run_ok(&sb, &p, &args(&["cpu_loop", "101000"]))
        .await
        .usage
        .fuel;
    assert_eq!(small, again, "same work, same fuel");
    // Roughly a constant number of operators per round (the printed number's
    // length varies a little).
    let per_round = (big - small) / 100_000;
    assert!((5..100).contains(&per_round), "{per_round} fuel per round");
}

#[tokio::test]
async fn concurrent_executions_share_one_program() {
    let sb = sandbox();
    let p = load(&sb, art::SHA256_P1);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..24u32 {
        let (sb, p) = (sb.clone(), p.clone());
        set.spawn(async move {
            let input = format!("input number {i}");
            let req = CommandRequest {
                stdin: input.clone().into(),
                ..args(&["sha256"])
            };
            let out = sb
                .run(&p, &req, &brume_sandbox::ExecOptions::default())
                .await
                .expect("run");
            (input, out.stdout)
        });
    }
    while let Some(r) = set.join_next().await {
        use sha2::Digest as _;
        let (input, stdout) = r.expect("task");
        assert_eq!(
            text(&stdout).trim(),
            hex::encode(sha2::Sha256::digest(input.as_bytes()))
        );
    }
}

#[tokio::test]
async fn wat_text_and_binary_give_the_same_digest() {
    let sb = sandbox();
    let text_src = std::fs::read(test_programs_artifacts::wat("exit_code")).expect("read");
    let binary = wat::parse_bytes(&text_src).expect("parse").into_owned();
    let a = sb.load(&text_src, Default::default()).expect("load text");
    let b = sb.load(&binary, Default::default()).expect("load binary");
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.digest(), brume_sandbox::Digest::of(&binary));
    let parsed: brume_sandbox::Digest = a.digest().to_string().parse().expect("parse digest");
    assert_eq!(parsed, a.digest());
}
