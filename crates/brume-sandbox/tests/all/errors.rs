//! Every error code fires for its case.

use std::time::Duration;

use brume_sandbox::{CommandRequest, ExecError, Profile};
use test_programs_artifacts as art;

use crate::util::*;

fn load_err(bytes: &[u8]) -> ExecError {
    let sb = sandbox();
    match sb.load(bytes, Profile::Standard) {
        Ok(p) => panic!("expected a load error, got {p:?}"),
        Err(e) => e,
    }
}

#[test]
fn invalid_module_for_garbage_bad_text_and_wrong_shapes() {
    for (what, bytes) in [
        ("empty", &b""[..]),
        ("garbage", &b"\x7fELF\x02\x01\x01"[..]),
        (
            "bad text",
            &b"(module (func (export \"_start\") (i32.add)))"[..],
        ),
        ("truncated binary", &b"\0asm\x01\0\0\0\x01\x05"[..]),
        ("future version", &b"\0asm\x02\0\0\0"[..]),
    ] {
        let e = load_err(bytes);
        assert_eq!(e.code(), "invalid_module", "{what}: {e}");
    }
    let no_start = std::fs::read(art::wat("no_start")).expect("read");
    let e = load_err(&no_start);
    assert_eq!(e.code(), "invalid_module");
    assert!(e.to_string().contains("_start"), "{e}");
    let shared = std::fs::read(art::wat("shared_memory")).expect("read");
    assert_eq!(load_err(&shared).code(), "invalid_module");
}

#[test]
fn import_not_allowed_names_the_import() {
    let bytes = std::fs::read(art::wat("bad_import")).expect("read");
    let e = load_err(&bytes);
    assert_eq!(e.code(), "import_not_allowed");
    assert!(e.to_string().contains("env::launch_missiles"), "{e}");
    // A WASI namespace with a function WASI does not have.
    let fake = br#"(module (import "wasi_snapshot_preview1" "launch_missiles" (func))
                         (memory (export "memory") 1) (func (export "_start")))"#;
    assert_eq!(load_err(fake).code(), "import_not_allowed");
}

#[tokio::test]
async fn trap_carries_the_trap_message() {
    let sb = sandbox();
    let f = run_err(&sb, &wat(&sb, "unreachable"), &args(&["u"]), &tight()).await;
    assert_eq!(f.error.code(), "trap");
    assert!(f.error.to_string().contains("unreachable"), "{}", f.error);

    let f = run_err(&sb, &wat(&sb, "deep_recursion"), &args(&["d"]), &tight()).await;
    assert_eq!(f.error.code(), "trap");
    assert!(
        f.error.to_string().contains("call stack exhausted"),
        "{}",
        f.error
    );

    // Rust's shadow stack runs out first: still a clean trap.
    for path in [art::STACK_OVERFLOW_P1, art::STACK_OVERFLOW_P2] {
        let f = run_err(&sb, &load(&sb, path), &args(&["s"]), &tight()).await;
        assert_eq!(f.error.code(), "trap", "{path}: {}", f.error);
    }
}

#[tokio::test]
async fn out_of_fuel_consumes_exactly_the_budget() {
    let sb = sandbox();
    for path in [art::INFINITE_LOOP_P1, art::INFINITE_LOOP_P2] {
        let o = with_limits(|l| l.fuel = 2_000_000);
        let f = run_err(&sb, &load(&sb, path), &args(&["loop"]), &o).await;
        assert_eq!(f.error, ExecError::OutOfFuel { budget: 2_000_000 });
        assert_eq!(f.usage.fuel, 2_000_000);
    }
}

#[tokio::test]
async fn memory_limit_for_growth_declarations_and_tables() {
    let sb = sandbox();
    for path in [art::MEMORY_BOMB_P1, art::MEMORY_BOMB_P2] {
        let f = run_err(&sb, &load(&sb, path), &args(&["bomb"]), &tight()).await;
        assert_eq!(f.error.code(), "memory_limit", "{path}: {}", f.error);
        assert!(f.usage.peak_memory_bytes <= 32 << 20);
        assert!(f.usage.peak_memory_bytes > 16 << 20);
    }
    for name in ["huge_memory", "grow_loop"] {
        let f = run_err(&sb, &wat(&sb, name), &args(&[name]), &tight()).await;
        assert_eq!(f.error.code(), "memory_limit", "{name}: {}", f.error);
    }
    // A table larger than the sandbox ever grants is refused at load time.
    let huge_table = std::fs::read(art::wat("huge_table")).expect("read");
    let e = sb
        .load(&huge_table, Profile::Standard)
        .expect_err("too big");
    assert_eq!(e.code(), "memory_limit", "{e}");
    assert!(e.to_string().contains("10000000"), "{e}");
}

#[tokio::test]
async fn timeout_stops_a_spinning_guest_and_still_meters_it() {
    let sb = sandbox();
    for path in [art::INFINITE_LOOP_P1, art::INFINITE_LOOP_P2] {
        let o = with_limits(|l| {
            l.fuel = u64::MAX / 2;
            l.timeout = Duration::from_millis(100);
        });
        let f = run_err(&sb, &load(&sb, path), &args(&["loop"]), &o).await;
        assert_eq!(f.error, ExecError::Timeout(Duration::from_millis(100)));
        assert!(
            f.usage.fuel > 1_000_000,
            "a spinning guest burns fuel: {}",
            f.usage.fuel
        );
        assert!(f.usage.wall_us >= 100_000);
    }
}

#[tokio::test]
async fn input_too_large_is_refused_before_running() {
    let sb = sandbox();
    let p = load(&sb, art::ECHO_P1);
    let o = with_limits(|l| l.max_input_bytes = 1000);
    let req = CommandRequest {
        stdin: vec![b'x'; 1001].into(),
        ..args(&["echo"])
    };
    let f = run_err(&sb, &p, &req, &o).await;
    assert_eq!(
        f.error,
        ExecError::InputTooLarge {
            size: 1001,
            limit: 1000
        }
    );
    assert_eq!(f.usage.fuel, 0);
    let ok = CommandRequest {
        stdin: vec![b'x'; 1000].into(),
        ..args(&["echo"])
    };
    assert_eq!(
        run(&sb, &p, &ok, &o)
            .await
            .expect("at the limit")
            .stdout
            .len(),
        1000
    );
}

#[tokio::test]
async fn output_too_large_for_floods_and_at_the_exact_cap() {
    let sb = sandbox();
    for path in [art::OUTPUT_FLOOD_P1, art::OUTPUT_FLOOD_P2] {
        let f = run_err(&sb, &load(&sb, path), &args(&["flood"]), &tight()).await;
        assert_eq!(
            f.error,
            ExecError::OutputTooLarge { limit: 1 << 20 },
            "{path}"
        );
        assert!(f.stdout.len() <= 1 << 20);
    }
    // Output exactly at the cap is fine; one byte over is not.
    let p = load(&sb, art::ECHO_P1);
    let o = with_limits(|l| l.max_output_bytes = 100);
    let at = CommandRequest {
        stdin: vec![b'a'; 100].into(),
        ..args(&["echo"])
    };
    assert_eq!(
        run(&sb, &p, &at, &o).await.expect("at cap").stdout.len(),
        100
    );
    let over = CommandRequest {
        stdin: vec![b'a'; 101].into(),
        ..args(&["echo"])
    };
    assert_eq!(
        run_err(&sb, &p, &over, &o).await.error.code(),
        "output_too_large"
    );
}

#[tokio::test]
async fn invalid_request_for_missing_preopen_dir() {
    let sb = sandbox();
    let p = load(&sb, art::READ_FILE_P1);
    let req = CommandRequest {
        dirs: vec!["/definitely/not/here::/data".parse().expect("mapping")],
        ..args(&["read_file", "/data/x"])
    };
    let f = run_err(&sb, &p, &req, &tight()).await;
    assert_eq!(f.error.code(), "invalid_request", "{}", f.error);
}

#[test]
fn every_code_is_listed_and_distinct() {
    let mut codes = ExecError::CODES.to_vec();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), ExecError::CODES.len());
}
