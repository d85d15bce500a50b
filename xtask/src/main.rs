//! brume's automation, in Rust rather than shell (`cargo xtask <task>`).
//!
//! - `test`: install the wasm targets if missing, then run the whole test
//!   suite (what CI runs; under CI, `cargo fmt --check` and `check` first).
//! - `check`: the structure checks: no import cycle among the broker's
//!   top-level modules, and every workspace member named in ARCHITECTURE.md.
//! - `demo`: install the wasm targets if missing, then build and run
//!   `brume devnet --demo` in release (a local network and a demo on it),
//!   exiting with its exit code.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const TARGETS: &[&str] = &["wasm32-wasip1", "wasm32-wasip2"];

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "test" => test(),
        "check" => check(),
        "demo" => return demo(),
        _ => {
            eprintln!("usage: cargo xtask <test|check|demo>");
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

fn test() -> Result {
    ensure_targets()?;
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    if ci {
        run(cargo().args(["fmt", "--all", "--", "--check"]))?;
        check()?;
    }
    let mut cmd = cargo();
    cmd.args(["test", "--locked"]);
    if ci {
        // Warnings are errors in CI (not locally, to keep iteration cheap).
        cmd.env("RUSTFLAGS", "-Dwarnings");
    }
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

/// The broker crate whose top-level modules must not import each other in
/// a cycle.
const LAYERED_CRATE: &str = "crates/brume-broker/src";

fn check() -> Result {
    let cycles = module_cycles(&root().join(LAYERED_CRATE))?;
    if !cycles.is_empty() {
        return Err(format!(
            "import cycles among the top-level modules of {LAYERED_CRATE}:\n  {}",
            cycles.join("\n  ")
        ));
    }
    let missing = missing_from_codemap(&root())?;
    if !missing.is_empty() {
        return Err(format!(
            "workspace members missing from ARCHITECTURE.md's codemap: {}",
            missing.join(", ")
        ));
    }
    eprintln!("xtask check: no import cycle in {LAYERED_CRATE}; the codemap names every member");
    Ok(())
}

/// Every workspace member (`members = [...]` in Cargo.toml) that
/// ARCHITECTURE.md does not name by its path.
fn missing_from_codemap(root: &Path) -> Result<Vec<String>> {
    let read =
        |p: &str| std::fs::read_to_string(root.join(p)).map_err(|e| format!("read {p}: {e}"));
    let (manifest, arch) = (read("Cargo.toml")?, read("ARCHITECTURE.md")?);
    let members = manifest
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .ok_or("Cargo.toml: no `members = [...]`")?;
    Ok(members
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty() && !arch.contains(&format!("`{m}`")))
        .collect())
}

/// The top-level modules of the crate at `src` (its `lib.rs`'s `mod`
/// items) and, for each, the others it names as `crate::<module>`.
fn module_edges(src: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let lib =
        std::fs::read_to_string(src.join("lib.rs")).map_err(|e| format!("read lib.rs: {e}"))?;
    let modules: Vec<String> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub ")
                .or(l.strip_prefix("pub(crate) "))
                .unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect();
    let mut edges = Vec::new();
    for m in &modules {
        let mut files = Vec::new();
        let file = src.join(format!("{m}.rs"));
        if file.is_file() {
            files.push(file);
        }
        collect_rs(&src.join(m), &mut files)?;
        let mut uses = std::collections::BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| format!("read {f:?}: {e}"))?;
            for other in &modules {
                if other != m && names_module(&text, other) {
                    uses.insert(other.clone());
                }
            }
        }
        edges.push((m.clone(), uses.into_iter().collect()));
    }
    Ok(edges)
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> Result {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries {
        let p = e.map_err(|e| format!("read {dir:?}: {e}"))?.path();
        if p.is_dir() {
            collect_rs(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// Whether code (not comments) names `crate::<module>` (as a path, or in a
/// `use crate::{...}` group).
fn names_module(text: &str, module: &str) -> bool {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .any(|code| {
            let is_module = |rest: &str| {
                rest.strip_prefix(module).is_some_and(|after| {
                    !after.starts_with(|c: char| c.is_alphanumeric() || c == '_')
                })
            };
            code.match_indices("crate::").any(|(i, _)| {
                let rest = &code[i + "crate::".len()..];
                match rest.strip_prefix('{') {
                    Some(group) => group.split([',', '}']).any(|item| is_module(item.trim())),
                    None => is_module(rest),
                }
            })
        })
}

/// Each cycle of the module graph, as `a -> b -> a`.
fn module_cycles(src: &Path) -> Result<Vec<String>> {
    Ok(cycles(&module_edges(src)?))
}

fn cycles(edges: &[(String, Vec<String>)]) -> Vec<String> {
    let next = |m: &str| {
        edges
            .iter()
            .find(|(n, _)| n == m)
            .map(|(_, e)| e.as_slice())
            .unwrap_or(&[])
    };
    let mut found = std::collections::BTreeSet::new();
    // A path search from each module back to itself (the graph is small).
    for (start, _) in edges {
        let mut stack = vec![vec![start.clone()]];
        while let Some(path) = stack.pop() {
            let last = path.last().map(String::as_str).unwrap_or_default();
            for n in next(last) {
                if n == start {
                    // Report each cycle once, from its smallest module.
                    if path.iter().all(|p| p >= start) {
                        found.insert(format!("{} -> {start}", path.join(" -> ")));
                    }
                } else if !path.contains(n) {
                    let mut p = path.clone();
                    p.push(n.clone());
                    stack.push(p);
                }
            }
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_module_names_in_code_only() {
        assert!(names_module("use crate::jobs::JobEntry;", "jobs"));
        assert!(names_module(
            "use crate::{jobs, ledger::Billing};",
            "ledger"
        ));
        assert!(names_module("    crate::jobs::start(x);", "jobs"));
        assert!(!names_module("use crate::jobsite::X;", "jobs"));
        assert!(!names_module("//! see [`crate::jobs`]", "jobs"));
        assert!(!names_module("let x = 1; // crate::jobs", "jobs"));
    }

    #[test]
    fn reports_each_cycle_once() {
        let e = |m: &str, to: &[&str]| (m.to_string(), to.iter().map(|s| s.to_string()).collect());
        let graph = vec![e("a", &["b"]), e("b", &["c", "a"]), e("c", &[])];
        assert_eq!(cycles(&graph), vec!["a -> b -> a".to_string()]);
        let dag = vec![e("a", &["b", "c"]), e("b", &["c"]), e("c", &[])];
        assert!(cycles(&dag).is_empty());
    }
}
