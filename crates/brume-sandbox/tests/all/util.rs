use std::sync::Arc;
use std::time::Duration;

use brume_sandbox::{
    CommandOutcome, CommandRequest, ExecFailure, ExecOptions, Limits, Profile, Program, Sandbox,
    SandboxConfig,
};

/// A sandbox whose artifact cache is shared by every test in this binary,
/// so each guest is compiled once per test run.
pub fn sandbox() -> Arc<Sandbox> {
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-artifacts");
    Arc::new(
        Sandbox::new(SandboxConfig {
            cache_dir: Some(cache),
            max_concurrent_instances: 32,
            ..SandboxConfig::default()
        })
        .expect("create sandbox"),
    )
}

pub fn load(sb: &Sandbox, path: &str) -> Program {
    load_as(sb, path, Profile::Standard)
}

pub fn load_as(sb: &Sandbox, path: &str, profile: Profile) -> Program {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    sb.load(&bytes, profile)
        .unwrap_or_else(|e| panic!("load {path}: {e}"))
}

pub fn wat(sb: &Sandbox, name: &str) -> Program {
    load(sb, &test_programs_artifacts::wat(name))
}

pub fn args(argv: &[&str]) -> CommandRequest {
    CommandRequest {
        args: argv.iter().map(|s| s.to_string()).collect(),
        ..CommandRequest::default()
    }
}

pub fn with_limits(f: impl FnOnce(&mut Limits)) -> ExecOptions {
    let mut o = ExecOptions::default();
    f(&mut o.limits);
    o
}

/// Small limits for hostile programs, so failures come fast (the clock is
/// generous: only tests about timeouts should ever hit it).
pub fn tight() -> ExecOptions {
    with_limits(|l| {
        l.fuel = 5_000_000_000;
        l.memory_bytes = 32 << 20;
        l.timeout = Duration::from_secs(10);
        l.max_output_bytes = 1 << 20;
    })
}

pub async fn run(
    sb: &Sandbox,
    p: &Program,
    req: &CommandRequest,
    o: &ExecOptions,
) -> Result<CommandOutcome, ExecFailure> {
    sb.run(p, req, o).await
}

pub async fn run_ok(sb: &Sandbox, p: &Program, req: &CommandRequest) -> CommandOutcome {
    match sb.run(p, req, &ExecOptions::default()).await {
        Ok(o) => o,
        Err(f) => panic!(
            "{:?} failed: {} (stderr: {})",
            p,
            f.error,
            String::from_utf8_lossy(&f.stderr)
        ),
    }
}

pub async fn run_err(
    sb: &Sandbox,
    p: &Program,
    req: &CommandRequest,
    o: &ExecOptions,
) -> ExecFailure {
    match sb.run(p, req, o).await {
        Ok(o) => panic!(
            "expected a failure, got exit {} (stdout {} bytes)",
            o.exit_code,
            o.stdout.len()
        ),
        Err(f) => f,
    }
}

pub fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).expect("utf-8 output")
}
