//! The devnet demo's container job: when bubblewrap and a static busybox
//! are installed (and the devnet's data dir is its own temporary one), its
//! providers take containers, and the demo runs a busybox image built on
//! the spot (no registry) as an OCI job.

use brume_api::ServiceKind;
use brume_api::rest::{JobSpec, JobState};
use brume_client::Client;
use bytes::Bytes;

const BUSYBOX: &str = "/bin/busybox";

/// Whether this host can run the container demo.
pub(super) fn available() -> bool {
    brume_oci::bubblewrap().is_some() && std::path::Path::new(BUSYBOX).is_file()
}

/// Publishes the busybox image and runs a job of it.
pub(super) async fn demo(client: &Client, say: &impl Fn(String)) -> anyhow::Result<()> {
    say("\n== container job: a busybox image (OCI layout, built here) under bubblewrap".into());
    let mut image = brume_oci::layout::Builder::new()
        .dir("bin")
        .file("bin/busybox", std::fs::read(BUSYBOX)?, 0o755)
        .entrypoint(&["/bin/busybox", "sh", "-c"]);
    for applet in ["sh", "echo", "cat", "wc", "uname", "id"] {
        image = image.symlink(&format!("bin/{applet}"), "busybox");
    }
    let info = client
        .publish("busybox", ServiceKind::Oci, Bytes::from(image.build()?))
        .await?;
    say(format!(
        "  busybox      oci      sha256:{}  {} KiB",
        &info.digest[..16],
        info.size_bytes / 1024
    ));
    let spec = JobSpec {
        service: Some("busybox".into()),
        args: vec![
            "echo \"hello from a container on $(uname -n), uid $(id -u)\"; wc -c < /bin/busybox"
                .into(),
        ],
        ..JobSpec::default()
    };
    let job = client.submit(&spec).await?;
    let result = client.wait_with(job.id, |_| {}).await?;
    if result.state != JobState::Succeeded || result.exit_code != Some(0) {
        anyhow::bail!(
            "the container job did not succeed: {:?} {:?}",
            result.error,
            String::from_utf8_lossy(&result.stderr.0)
        );
    }
    for line in String::from_utf8_lossy(&result.stdout.0).lines() {
        say(format!("  -> {line}"));
    }
    let u = result.usage;
    say(format!(
        "  usage: {} instruction-equivalents of CPU, peak memory {} KiB, wall {} ms, provider {}",
        u.fuel,
        u.peak_memory_bytes / 1024,
        u.wall_us / 1000,
        result.provider.as_deref().unwrap_or("?")
    ));
    Ok(())
}
