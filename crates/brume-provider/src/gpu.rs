//! GPUs: found through `nvidia-smi` at start-up, advertised in the
//! handshake, and passed into the containers of jobs that ask for them
//! (the device nodes `/dev/nvidia<N>`, `/dev/nvidiactl`, `/dev/nvidia-uvm`).
//!
//! Not yet: a GPU speed benchmark (so `milli_tflops` is 0 and GPU time is
//! not billed apart from CPU time), and per-job device allocation (a job
//! gets devices 0..N; two GPU jobs at once share them).

use brume_api::wire::Gpus;

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

/// The device nodes for `n` GPUs, those that exist.
pub(crate) fn devices(n: u32) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let mut all: Vec<String> = (0..n).map(|i| format!("/dev/nvidia{i}")).collect();
    all.extend(["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"].map(String::from));
    all.into_iter()
        .filter(|d| std::path::Path::new(d).exists())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
