//! GPUs: found through `nvidia-smi` at start-up, timed by a benchmark,
//! advertised in the handshake, and passed into the containers of jobs
//! that ask for them: each job gets devices of its own (its reservation's
//! indices, `/dev/nvidia<N>`), plus the shared `/dev/nvidiactl` and
//! `/dev/nvidia-uvm`.
//!
//! The benchmark is a command that prints the first GPU's FP32 speed in
//! TFLOP/s as the last line of its standard output. The default is
//! [`BENCH_SCRIPT`] under `python3` (PyTorch, an 8192² matrix multiply).
//! Without a figure, GPUs are still advertised, with `milli_tflops` 0, and
//! their time is not billed. None of this can run on a machine without an
//! NVIDIA GPU; the parsing is tested, the rest is not.

use std::process::Stdio;
use std::time::Duration;

use brume_api::wire::Gpus;

/// The default GPU benchmark: FP32 matrix multiplies on the first GPU
/// (TF32 off, PyTorch's default), timed after a warm-up; prints TFLOP/s.
pub const BENCH_SCRIPT: &str = r#"
import time, torch
torch.backends.cuda.matmul.allow_tf32 = False
n, runs = 8192, 10
a = torch.randn(n, n, device="cuda")
b = torch.randn(n, n, device="cuda")
for _ in range(3):
    a @ b
torch.cuda.synchronize()
t = time.perf_counter()
for _ in range(runs):
    a @ b
torch.cuda.synchronize()
print(f"{2 * n**3 * runs / (time.perf_counter() - t) / 1e12:.3f}")
"#;

/// The longest the benchmark may run.
const BENCH_TIMEOUT: Duration = Duration::from_secs(120);

/// The default benchmark command.
pub fn default_bench() -> Vec<String> {
    vec!["python3".into(), "-c".into(), BENCH_SCRIPT.into()]
}

/// Runs the benchmark `cmd` (killed past [`BENCH_TIMEOUT`]) and reads its
/// figure, in thousandths of a TFLOP/s.
pub async fn benchmark(cmd: &[String]) -> Result<u64, String> {
    let (program, args) = cmd.split_first().ok_or("no benchmark command")?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    let out = tokio::time::timeout(BENCH_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("ran over {} s", BENCH_TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("{program} exited with {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    parse_tflops(last).ok_or_else(|| format!("{last:?} is not a TFLOP/s figure"))
}

/// `"19.5"` → 19500: a decimal TFLOP/s figure in thousandths, exactly
/// (digits past the third decimal are dropped).
fn parse_tflops(s: &str) -> Option<u64> {
    let s = s.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let milli: String = frac.chars().chain("000".chars()).take(3).collect();
    whole.checked_mul(1000)?.checked_add(milli.parse().ok()?)
}

/// The host's NVIDIA GPUs, if `nvidia-smi` is there and lists some.
/// Blocking (runs a command): at start-up only.
pub fn detect() -> Option<Gpus> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// [`detect`] (on a blocking thread), then the benchmark (`bench`, or
/// [`default_bench`]) where a GPU exists. At start-up only.
pub async fn detect_and_time(bench: &[String]) -> Option<Gpus> {
    let mut gpus = tokio::task::spawn_blocking(detect).await.ok().flatten()?;
    let bench = if bench.is_empty() {
        default_bench()
    } else {
        bench.to_vec()
    };
    match benchmark(&bench).await {
        Ok(m) => {
            tracing::info!(model = %gpus.model, count = gpus.count, milli_tflops = m, "GPUs timed");
            gpus.milli_tflops = m;
        }
        Err(e) => tracing::warn!(
            model = %gpus.model,
            "the GPU benchmark failed ({e}): GPUs are advertised, but their time is not billed"
        ),
    }
    Some(gpus)
}

/// `nvidia-smi`'s CSV: one `name, MiB` line per GPU; the first model is
/// advertised, with the count of that model.
fn parse(csv: &str) -> Option<Gpus> {
    let rows: Vec<(String, u64)> = csv
        .lines()
        .filter_map(|l| {
            let (name, mib) = l.rsplit_once(',')?;
            Some((name.trim().to_owned(), mib.trim().parse::<u64>().ok()?))
        })
        .collect();
    let (model, mib) = rows.first()?.clone();
    Some(Gpus {
        count: rows.iter().filter(|(m, _)| *m == model).count() as u32,
        model,
        memory_bytes: mib << 20,
        milli_tflops: 0,
    })
}

/// The device nodes of the GPUs with these indices (a job's own, from its
/// reservation), plus the shared control nodes; those that exist.
pub(crate) fn devices(indices: &[u32]) -> Vec<String> {
    if indices.is_empty() {
        return Vec::new();
    }
    let mut all: Vec<String> = indices.iter().map(|i| format!("/dev/nvidia{i}")).collect();
    all.extend(["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"].map(String::from));
    all.into_iter()
        .filter(|d| std::path::Path::new(d).exists())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn benchmark_figures() {
        assert_eq!(parse_tflops("19.5"), Some(19_500));
        assert_eq!(parse_tflops(" 67 "), Some(67_000));
        assert_eq!(parse_tflops("0.0019"), Some(1));
        assert_eq!(parse_tflops(".25"), Some(250));
        for bad in ["", ".", "-1", "1e3", "nan", "1.2.3"] {
            assert_eq!(parse_tflops(bad), None, "{bad}");
        }
        let echo = |s: &str| vec!["sh".into(), "-c".into(), format!("echo warming; echo {s}")];
        assert_eq!(benchmark(&echo("12.345")).await, Ok(12_345));
        assert!(benchmark(&echo("fast")).await.is_err());
        assert!(benchmark(&["false".into()]).await.is_err());
        assert!(benchmark(&["/no/such/bench".into()]).await.is_err());
    }

    #[test]
    fn nvidia_smi_csv() {
        let g =
            parse("NVIDIA A100-SXM4-40GB, 40960\nNVIDIA A100-SXM4-40GB, 40960\n").expect("gpus");
        assert_eq!(
            (g.model.as_str(), g.count, g.memory_bytes),
            ("NVIDIA A100-SXM4-40GB", 2, 40960 << 20)
        );
        assert_eq!(parse(""), None);
    }
}
