//! brume's automation, in Rust rather than shell (`cargo xtask <task>`).
//!
//! - `test`: install the wasm targets if missing, then run the whole test
//!   suite (what CI runs). Under CI (`CI` set) it first runs
//!   `cargo fmt --check`, the checks of `check`, and
//!   `cargo clippy --workspace --all-targets -- -D warnings`, then the tests
//!   with warnings as errors.
//! - `demo`: install the wasm targets if missing, then build and run
//!   `brume devnet --demo` in release (a local network and a demo on it),
//!   exiting with its exit code.
//! - `docs`: write the documentation generated from code
//!   (`docs/errors.md`, the API's error codes).
//! - `check`: the repository's own rules: the generated docs are up to
//!   date, `ARCHITECTURE.md` names every workspace member, the broker's
//!   top-level modules import each other in no cycle, and the committed
//!   contract artifacts are what the contracts compile to.
//! - `contracts`: compile `contracts/*.sol` (solc-js from npm) into
//!   `contracts/out/`.
//!
//! `test` installs the npm packages of `package.json` (solc-js,
//! OpenZeppelin, anvil) with `npm ci`, and the aws CLI and schemathesis
//! into `.venv` from PyPI, when they are missing.

mod check;
mod contracts;
mod docs;
mod modgraph;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const TARGETS: &[&str] = &["wasm32-wasip1", "wasm32-wasip2"];

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "test" => test(),
        "demo" => return demo(),
        "docs" => docs::write(),
        "check" => check::all(),
        "contracts" => contracts::write(),
        _ => {
            eprintln!("usage: cargo xtask <test|demo|docs|check|contracts>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result {
    eprintln!("$ {cmd:?}");
    let status = cmd.status().map_err(|e| format!("start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} exited with {status}"))
    }
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Adds the wasm targets the guest programs need, when they are missing.
fn ensure_targets() -> Result {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("run rustup (needed to add wasm targets): {e}"))?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    let missing: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("rustup")
        .args(["target", "add"])
        .args(&missing))
}

/// Debian's packages the tests drive: Chromium for the console's browser
/// test, bubblewrap and a static busybox for container jobs, PostgreSQL's
/// server binaries for the stores' second backend (the tests start
/// throwaway clusters of their own; the package's cluster is not used).
fn ensure_apt() -> Result {
    // What each package puts where the tests look for it.
    let wanted = [
        ("/usr/bin/chromium", "chromium"),
        ("/usr/bin/bwrap", "bubblewrap"),
        ("/bin/busybox", "busybox-static"),
        ("/usr/lib/postgresql", "postgresql"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    run(&mut apt(&["update", "-qq"]))?;
    let mut install = vec!["install", "-y", "-qq"];
    install.extend(missing);
    run(&mut apt(&install))
}

/// The Python tools the tests drive, from PyPI into `.venv`: the aws CLI
/// (v1) for the Lambda API, schemathesis for the OpenAPI document and
/// Playwright for the console.
fn ensure_venv() -> Result {
    let root = root();
    // (Playwright drives Debian's Chromium: never `playwright install`.)
    let wanted = [
        ("aws", "awscli"),
        ("schemathesis", "schemathesis"),
        ("playwright", "playwright"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(bin, _)| !root.join(".venv/bin").join(bin).exists())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !root.join(".venv/bin/pip").exists() {
        run(Command::new("python3")
            .args(["-m", "venv", ".venv"])
            .current_dir(&root))?;
    }
    run(Command::new(root.join(".venv/bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(missing)
        .current_dir(&root))
}

fn test() -> Result {
    ensure_targets()?;
    // solc-js and anvil, for the contract check and the EVM tests.
    contracts::ensure_npm()?;
    // The aws CLI (v1), schemathesis and Playwright, from PyPI; Chromium
    // from Debian.
    ensure_venv()?;
    ensure_apt()?;
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    if ci {
        run(cargo().args(["fmt", "--all", "--", "--check"]))?;
        check::all()?;
        // No RUSTFLAGS here: clippy's `-D warnings` goes to clippy itself,
        // and the dependencies' builds stay shared with other commands.
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    // No `RUSTFLAGS=-Dwarnings` here: clippy above already failed on any
    // rustc warning in every target, and changing RUSTFLAGS would rebuild
    // every dependency a second time.
    let mut cmd = cargo();
    cmd.args(["test", "--locked"]);
    run_counting(&mut cmd)
}

/// Runs `cargo test`, passing its output through, and closes with one line
/// totalling every test binary's `test result:` line.
fn run_counting(cmd: &mut Command) -> Result {
    use std::io::{BufRead, BufReader};
    eprintln!("$ {cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("start {cmd:?}: {e}"))?;
    let (mut passed, mut failed) = (0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.map_err(|e| format!("read test output: {e}"))?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                passed += count(rest, " passed");
                failed += count(rest, " failed");
            }
        }
    }
    let status = child.wait().map_err(|e| format!("wait for {cmd:?}: {e}"))?;
    println!("tests: {passed} passed, {failed} failed");
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} exited with {status}"))
    }
}

/// The number before `what` in `ok. 9 passed; 0 failed; ...`.
fn count(summary: &str, what: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| part.trim().strip_suffix(what.trim_start()))
        .and_then(|n| n.trim().rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Builds and runs `brume devnet --demo` in release: a broker and providers
/// in one process, then a publish, an invoke, an HTTP call and a job with
/// progress. Exits with the demo's own exit code.
fn demo() -> ExitCode {
    if let Err(e) = ensure_targets() {
        eprintln!("xtask demo: {e}");
        return ExitCode::FAILURE;
    }
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "--locked",
        "-p",
        "brume",
        "--",
        "devnet",
        "--demo",
    ]);
    eprintln!("$ {cmd:?}");
    match cmd.status() {
        Ok(status) => match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            // Killed by a signal.
            None => {
                eprintln!("xtask demo: {cmd:?} ended with {status}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("xtask demo: start {cmd:?}: {e}");
            ExitCode::FAILURE
        }
    }
}
