//! Compiles the guest crates with a nested `cargo build`, the way wasmtime's
//! `test-programs-artifacts` does. The nested build uses its own target
//! directory (`target/guests`), so it never waits on the outer build's lock.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest
        .parent()
        .and_then(Path::parent)
        .expect("crate lives in crates/")
        .to_path_buf();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t),
        None => root.join("target"),
    }
    .join("guests");

    for dir in ["crates/test-programs", "examples", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    cargo_build(
        &root,
        &target,
        "wasm32-wasip1",
        &[
            "--package=test-programs",
            "--package=image-transform",
            "--package=monte-carlo",
            "--bins",
        ],
    );
    cargo_build(
        &root,
        &target,
        "wasm32-wasip2",
        &["--package=test-programs"],
    );

    let mut out = String::new();
    let mut emit = |name: &str, path: &Path| {
        assert!(path.exists(), "guest {} was not built", path.display());
        let path = path.display().to_string();
        writeln!(out, "pub const {name}: &str = {path:?};").expect("write to String");
        writeln!(
            out,
            "pub const {name}_BYTES: &[u8] = include_bytes!({path:?});"
        )
        .expect("write to String");
    };
    let p1 = target.join("wasm32-wasip1/release");
    let p2 = target.join("wasm32-wasip2/release");
    let mut bins: Vec<String> = std::fs::read_dir(root.join("crates/test-programs/src/bin"))
        .expect("read test-programs bins")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.path()
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .collect();
    bins.sort();
    for bin in &bins {
        let upper = bin.to_uppercase();
        emit(&format!("{upper}_P1"), &p1.join(format!("{bin}.wasm")));
        emit(&format!("{upper}_P2"), &p2.join(format!("{bin}.wasm")));
    }
    emit("HTTP_HELLO", &p2.join("test_programs.wasm"));
    emit("IMAGE_TRANSFORM", &p1.join("image-transform.wasm"));
    emit("MONTE_CARLO", &p1.join("monte-carlo.wasm"));
    writeln!(out, "pub const COMMANDS: &[&str] = &{bins:?};").expect("write to String");
    let wat = root.join("crates/test-programs/wat").display().to_string();
    writeln!(out, "pub const WAT_DIR: &str = {wat:?};").expect("write to String");

    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("artifacts.rs");
    std::fs::write(dest, out).expect("write artifacts.rs");
}

fn cargo_build(root: &Path, target_dir: &Path, triple: &str, args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .arg("build")
        .arg("--release")
        .arg(format!("--target={triple}"))
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir)
        // Guests: small and fast, with function names kept for backtraces.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("run cargo for {triple}: {e}"));
    assert!(
        status.success(),
        "building guests for {triple} failed; is the target installed? \
         (`rustup target add {triple}`, or run `cargo xtask test`)"
    );
}
