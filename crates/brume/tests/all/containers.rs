//! OCI container jobs through the real binaries: `brume run --image`, a
//! provider started with `--containers`, placement only on such
//! providers, the ledger row, failover when the provider is SIGKILLed,
//! and cancel (checked against the host's process table).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use brume_api::ServiceKind;
use brume_api::rest::{JobSpec, JobState};
use brume_oci::layout::Builder;

use crate::net::{Net, command, eventually, follow};

/// A busybox image, built here (no registry): `/bin/busybox` and the
/// applets the tests use.
fn busybox_image() -> Vec<u8> {
    let bin =
        std::fs::read("/bin/busybox").expect("busybox-static is installed (.ci/run installs it)");
    let mut b = Builder::new().dir("bin").file("bin/busybox", bin, 0o755);
    for a in ["sh", "cat", "echo", "sleep"] {
        b = b.symlink(&format!("bin/{a}"), "busybox");
    }
    b.dir("etc")
        .file("etc/motd", "inside the image\n", 0o644)
        .entrypoint(&["/bin/sh", "-c"])
        .build()
        .expect("build the image")
}

/// A net whose directories the sandbox's own uid can reach, with one
/// wasm-only provider and `containers` container providers.
async fn net(containers: usize) -> Net {
    let mut net = Net::start(1, 2).await;
    std::fs::set_permissions(net.home(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    for _ in 0..containers {
        net.add_provider_args(2, &["--containers"]).await;
    }
    net
}

/// Processes on this host whose command line holds `marker` and, if
/// given, `dir` (a provider's data dir: bubblewrap's own command line
/// names its rootfs there, the sandbox's init included, and everything
/// in the sandbox dies with its init).
fn running(marker: &str, dir: Option<&Path>) -> usize {
    let dir = dir.map(|d| d.to_string_lossy().into_owned());
    std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter(|p| {
            std::fs::read(p.path().join("cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains(marker) && dir.as_deref().is_none_or(|d| c.contains(d))
                })
                .unwrap_or(false)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oci_job_runs_on_a_container_provider_and_is_billed() {
    let net = net(1).await;
    let image = net.home().join("busybox.tar");
    std::fs::write(&image, busybox_image()).expect("write image");
    let status = tokio::task::block_in_place(|| net.providers[1].status());
    let c = status
        .containers
        .expect("a --containers provider reports them");
    assert!(c.enabled, "{c:?}");
    assert!(c.notes.iter().any(|n| n.contains("seccomp")), "{c:?}");
    let plain = tokio::task::block_in_place(|| net.providers[0].status());
    assert!(plain.containers.is_none());
    // `brume provide status` says what is enforced, plainly.
    let out = command(net.home())
        .args(["provide", "status", "--data"])
        .arg(&net.providers[1].data)
        .output()
        .expect("brume provide status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("containers    bubblewrap") && text.contains("seccomp"),
        "{text}"
    );

    // The image's entrypoint is `sh -c`: the argument is the script.
    let script = "echo hello from a container; cat /etc/motd; echo $WHO; cat; exit 7";
    let out = command(net.home())
        .args(["run", "--broker", &net.broker.url, "--api-key", &net.key])
        .args([
            "--json",
            "--name",
            "busybox",
            "--env",
            "WHO=requester",
            "--stdin",
        ])
        .arg(write(net.home(), "stdin.txt", "piped in\n"))
        .arg("--image")
        .arg(&image)
        .args(["--", script])
        .output()
        .expect("brume run");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(7), "{v}");
    assert_eq!(v["exit_code"], 7, "{v}");
    assert_eq!(
        v["stdout"].as_str(),
        Some("hello from a container\ninside the image\nrequester\npiped in\n"),
        "{v}"
    );
    // Only the container provider may run it.
    assert_eq!(
        v["provider"].as_str(),
        Some(net.providers[1].address.as_str()),
        "{v}"
    );
    let fuel = v["usage"]["fuel"].as_u64().expect("fuel");
    assert!(fuel > 0, "CPU time is billed as fuel: {v}");

    let work_id = v["id"].as_str().expect("job id").to_string();
    let row = ledger_row(&net.url(&format!("/v1/ledger/rows/{work_id}")), &net.key).await;
    assert_eq!(row["usage"]["fuel"].as_u64(), Some(fuel), "{row}");
    assert_eq!(
        row["provider"].as_str(),
        Some(net.providers[1].address.as_str()),
        "{row}"
    );

    // A container can't be replicated: refused up front.
    let spec = JobSpec {
        service: Some("busybox".into()),
        verify: Some(brume_api::rest::VerifyPolicy::Replicate { n: 2, quorum: 2 }),
        ..JobSpec::default()
    };
    let err = net.client.submit(&spec).await.expect_err("replicated oci");
    assert!(err.to_string().contains("not deterministic"), "{err}");
    // More vCPUs than any provider has slots: never placed.
    let spec = JobSpec {
        service: Some("busybox".into()),
        args: vec!["echo never".into()],
        vcpus: Some(4),
        queue_timeout_ms: Some(300),
        ..JobSpec::default()
    };
    let job = net.client.submit(&spec).await.expect("submit");
    let (_, r) = follow(&net.client, job.id).await;
    assert_eq!(
        r.error.map(|e| e.code),
        Some(brume_api::ErrorCode::QueueTimeout),
        "4 vCPUs on 2-slot providers"
    );
    // Nor called as a function.
    let resp = reqwest::Client::new()
        .post(net.url("/v1/functions/busybox/invoke"))
        .bearer_auth(&net.key)
        .send()
        .await
        .expect("invoke");
    assert!(resp.status().is_client_error(), "{}", resp.status());
}

/// The ledger row at `url` (`…/v1/ledger/rows/{id}`), once it is stored.
async fn ledger_row(url: &str, key: &str) -> serde_json::Value {
    eventually(&format!("the ledger row at {url}"), || async {
        let resp = reqwest::Client::new()
            .get(url)
            .bearer_auth(key)
            .send()
            .await
            .ok()?;
        (resp.status() == 200).then_some(())?;
        resp.json().await.ok()
    })
    .await
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oci_job_fails_over_when_its_provider_is_killed_and_cancel_stops_it() {
    let mut net = net(2).await;
    net.publish("busybox", ServiceKind::Oci, &busybox_image())
        .await;
    let marker = "27182818";
    let spec = JobSpec {
        service: Some("busybox".into()),
        args: vec![format!("echo started; sleep {marker}")],
        ..JobSpec::default()
    };
    let job = net.client.submit(&spec).await.expect("submit");
    let follower = {
        let client = net.client.clone();
        tokio::spawn(async move { follow(&client, job.id).await })
    };
    let first = net.wait_state(job.id, JobState::Running).await;
    assert_ne!(
        first.provider.as_deref(),
        Some(net.providers[0].address.as_str()),
        "never on the wasm-only provider"
    );
    let dir = |net: &Net, address: &str| net.providers[net.provider_index(address)].data.clone();
    let first_dir = dir(&net, first.provider.as_deref().expect("a provider"));
    eventually("the container runs", || async {
        (running(marker, Some(&first_dir)) > 0).then_some(())
    })
    .await;
    let victim = net.kill_provider_of(&first);
    // Provider 0 takes no containers: the survivor is the other one.
    let survivor = net.providers[1..]
        .iter()
        .map(|p| p.address.clone())
        .find(|a| *a != victim)
        .expect("two container providers");
    let survivor_dir = dir(&net, &survivor);
    // The killed provider's container dies with it (bubblewrap's
    // --die-with-parent), and the job runs again on the survivor.
    let again = crate::net::wait_job(
        &net.client,
        job.id,
        |j| j.state == JobState::Running && j.provider.as_deref() == Some(survivor.as_str()),
        "running on the survivor",
    )
    .await;
    assert_eq!(again.attempts, 2, "{again:?}");
    eventually("the killed provider's container is gone", || async {
        (running(marker, Some(&first_dir)) == 0).then_some(())
    })
    .await;
    eventually("the survivor's container runs", || async {
        (running(marker, Some(&survivor_dir)) > 0).then_some(())
    })
    .await;

    let info = net.client.cancel(job.id).await.expect("cancel");
    assert_eq!(info.state, JobState::Cancelled);
    eventually("the cancelled container is gone", || async {
        (running(marker, None) == 0).then_some(())
    })
    .await;
    let (_, result) = follower.await.expect("follower");
    assert_eq!(result.state, JobState::Cancelled);
}

/// A busy container reports its CPU so far as fuel in its progress events
/// (where a `cpuacct` cgroup counts it), and cancelled, it pays for the
/// fuel last reported.
#[tokio::test(flavor = "multi_thread")]
async fn a_busy_containers_progress_reports_fuel_and_cancel_bills_it() {
    use futures_util::StreamExt;
    let net = net(1).await;
    net.publish("busybox", ServiceKind::Oci, &busybox_image())
        .await;
    let status = tokio::task::block_in_place(|| net.providers[1].status());
    let counted = status
        .containers
        .expect("containers")
        .cgroups
        .iter()
        .any(|c| c == "cpuacct");
    let spec = JobSpec {
        service: Some("busybox".into()),
        args: vec!["echo spinning >&2; while :; do :; done".into()],
        ..JobSpec::default()
    };
    let job = net.client.submit(&spec).await.expect("submit");
    let mut events = net.client.events(job.id).await.expect("events");
    let mut reported = 0;
    while let Some(e) = tokio::time::timeout(crate::net::DEADLINE, events.next())
        .await
        .expect("a progress event within the deadline")
    {
        let e = e.expect("event");
        if e.kind == brume_api::rest::EventKind::Progress {
            reported = e.fuel.unwrap_or(0);
            if reported > 0 || !counted {
                break;
            }
        }
    }
    assert_eq!(reported > 0, counted, "fuel reported: {reported}");
    let info = net.client.cancel(job.id).await.expect("cancel");
    assert_eq!(info.state, JobState::Cancelled);
    if counted {
        let row = ledger_row(&net.url(&format!("/v1/ledger/rows/{}", job.id)), &net.key).await;
        assert!(
            row["usage"]["fuel"].as_u64() >= Some(reported),
            "billed at least the fuel reported ({reported}): {row}"
        );
    }
}

/// A job that asks for the network runs only on the provider started
/// with `--allow-network`, and reaches a host listener from there; a wasm
/// job can't ask for it.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_asks_for_the_network_runs_where_it_is_allowed() {
    let mut net = net(1).await;
    net.add_provider_args(2, &["--containers", "--allow-network"])
        .await;
    net.publish("busybox", ServiceKind::Oci, &busybox_image())
        .await;
    net.publish(
        "cpu",
        ServiceKind::Command,
        test_programs_artifacts::CPU_LOOP_P1_BYTES,
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let spec = JobSpec {
        service: Some("busybox".into()),
        args: vec![format!("echo from the job | nc -w 5 127.0.0.1 {port}")],
        network: true,
        ..JobSpec::default()
    };
    let job = net.client.submit(&spec).await.expect("submit");
    let (mut s, _) = listener.accept().await.expect("the job connects");
    let mut got = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut got)
        .await
        .expect("read");
    // Closing our end lets `nc` exit.
    drop(s);
    assert_eq!(got, "from the job\n");
    let (_, r) = follow(&net.client, job.id).await;
    assert_eq!(r.state, JobState::Succeeded, "{r:?}");
    assert_eq!(
        r.provider.as_deref(),
        Some(net.providers[2].address.as_str()),
        "only the provider that allows the network"
    );
    let err = net
        .client
        .submit(&JobSpec {
            service: Some("cpu".into()),
            network: true,
            ..JobSpec::default()
        })
        .await
        .expect_err("a wasm job with the network");
    assert!(err.to_string().contains("network"), "{err}");
}

/// A wasm command job sees its inputs under the preopened `/work`, and the
/// files it leaves there are returned and download, as for containers.
#[tokio::test(flavor = "multi_thread")]
async fn a_wasm_job_reads_its_inputs_and_leaves_outputs_in_work() {
    use test_programs_artifacts as art;
    let net = Net::start(1, 2).await;
    net.publish("read_file", ServiceKind::Command, art::READ_FILE_P1_BYTES)
        .await;
    net.publish("write_file", ServiceKind::Command, art::WRITE_FILE_P1_BYTES)
        .await;
    let data = net
        .client
        .upload_data(bytes::Bytes::from_static(b"an input file\n"))
        .await
        .expect("upload");
    let job = |service: &str, args: &[&str]| JobSpec {
        service: Some(service.into()),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..JobSpec::default()
    };
    let spec = JobSpec {
        inputs: vec![brume_api::data::InputSpec {
            path: "in/data.txt".into(),
            sha256: data.sha256.clone(),
            url: None,
            key: None,
            ttl_s: None,
        }],
        ..job("read_file", &["/work/in/data.txt"])
    };
    let submitted = net.client.submit(&spec).await.expect("submit");
    let (_, r) = follow(&net.client, submitted.id).await;
    assert_eq!(r.state, JobState::Succeeded, "{r:?}");
    assert_eq!(r.stdout.0.as_ref(), b"an input file\n");
    assert!(
        r.usage.bytes_in >= 14,
        "the input is metered: {:?}",
        r.usage
    );

    let spec = JobSpec {
        outputs: vec!["out.txt".into()],
        ..job("write_file", &["/work/out.txt", "left behind"])
    };
    let submitted = net.client.submit(&spec).await.expect("submit");
    let (_, r) = follow(&net.client, submitted.id).await;
    assert_eq!(r.state, JobState::Succeeded, "{r:?}");
    assert_eq!(r.outputs.len(), 1, "{r:?}");
    assert_eq!(r.outputs[0].sha256, sha256(b"left behind"), "{r:?}");
    let got = net
        .client
        .job_output(submitted.id, "out.txt")
        .await
        .expect("download");
    assert_eq!(got.as_ref(), b"left behind");
    // An output the job didn't leave is not returned; a path out of
    // `/work` is refused up front.
    let spec = JobSpec {
        outputs: vec!["missing.txt".into()],
        ..job("write_file", &["/work/other.txt", "x"])
    };
    let submitted = net.client.submit(&spec).await.expect("submit");
    let (_, r) = follow(&net.client, submitted.id).await;
    assert_eq!(
        (r.state, r.outputs.len()),
        (JobState::Succeeded, 0),
        "{r:?}"
    );
    let bad = JobSpec {
        outputs: vec!["../escape".into()],
        ..job("write_file", &["/work/x", "x"])
    };
    let err = net
        .client
        .submit(&bad)
        .await
        .expect_err("an escaping output");
    assert!(err.to_string().contains("outputs"), "{err}");
}

/// A job's declared shape is checked against its provider: its expected
/// runtime against the hours the provider keeps (the current hour and the
/// next), its bandwidth against what the broker measured.
#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_declared_runtime_and_bandwidth_are_checked_against_the_provider() {
    use brume_api::rest::Expect;
    let hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 3600
        % 24) as u8;
    let net = brume_localnet::LocalNet::builder()
        .providers(1)
        .provider_config(move |_, c| {
            c.idle = Some(std::sync::Arc::new(brume_provider::idle::IdlePolicy {
                max_load: None,
                hours: Some((hour, (hour + 2) % 24)),
            }));
        })
        .publish(
            "cpu",
            ServiceKind::Command,
            bytes::Bytes::from_static(test_programs_artifacts::CPU_LOOP_P1_BYTES),
        )
        .start()
        .await
        .expect("a local network");
    let client = net.client().clone();
    let run = |expect: Expect| {
        let client = client.clone();
        async move {
            let spec = JobSpec {
                service: Some("cpu".into()),
                args: vec!["1000".into()],
                expect,
                queue_timeout_ms: Some(300),
                ..JobSpec::default()
            };
            let job = client.submit(&spec).await.expect("submit");
            follow(&client, job.id).await.1
        }
    };
    let code = |r: &brume_api::rest::JobResult| r.error.as_ref().map(|e| e.code);
    let minute = Expect {
        runtime_ms: Some(60_000),
        ..Expect::default()
    };
    let r = run(minute).await;
    assert_eq!(
        r.state,
        JobState::Succeeded,
        "a minute fits its hours: {r:?}"
    );
    let three_hours = Expect {
        runtime_ms: Some(3 * 3_600_000),
        ..Expect::default()
    };
    let r = run(three_hours).await;
    assert_eq!(
        code(&r),
        Some(brume_api::ErrorCode::QueueTimeout),
        "three hours outlast its hours: {r:?}"
    );
    let r = run(Expect {
        mbps: Some(1),
        ..Expect::default()
    })
    .await;
    assert_eq!(r.state, JobState::Succeeded, "1 Mbit/s: {r:?}");
    let r = run(Expect {
        mbps: Some(1 << 40),
        ..Expect::default()
    })
    .await;
    assert_eq!(
        code(&r),
        Some(brume_api::ErrorCode::QueueTimeout),
        "faster than measured: {r:?}"
    );
}

/// A registry on loopback serving one image layout (the OCI distribution
/// API's two GETs, anonymous): its base URL and the image's manifest
/// digest (`sha256:…`).
async fn serve_registry(layout_tar: &[u8]) -> (String, String) {
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let files = brume_oci::image::read_files(layout_tar, 1 << 30).expect("a layout");
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).expect("index");
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    // `/v2/busybox/{manifests,blobs}/sha256:<hex>` → `blobs/sha256/<hex>`.
    let blobs: std::sync::Arc<HashMap<String, Vec<u8>>> = std::sync::Arc::new(
        files
            .into_iter()
            .filter_map(|(p, b)| Some((p.strip_prefix("blobs/sha256/")?.to_string(), b)))
            .collect(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let blobs = blobs.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let found = ["/v2/busybox/manifests/sha256:", "/v2/busybox/blobs/sha256:"]
                    .iter()
                    .find_map(|p| blobs.get(path.strip_prefix(p)?));
                let (status, body) = match found {
                    Some(b) => ("200 OK", b.clone()),
                    None => ("404 Not Found", b"{}".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    (base, digest)
}

/// An image named by reference, pinned by digest, is pulled from its
/// registry by the provider allowed to use it (and only by it), checked and
/// run; a digest the registry doesn't have fails the job, and a tag alone
/// is refused up front.
#[tokio::test(flavor = "multi_thread")]
async fn an_image_by_reference_is_pulled_from_its_registry() {
    let (base, digest) = serve_registry(&busybox_image()).await;
    let mut net = net(1).await;
    net.add_provider_args(2, &["--containers", "--registry", &base])
        .await;
    let host = base.trim_start_matches("http://");
    let job = |image: String, queue_timeout_ms: Option<u64>| JobSpec {
        image: Some(image),
        args: vec!["echo pulled; cat /etc/motd".into()],
        queue_timeout_ms,
        ..JobSpec::default()
    };
    let submitted = net
        .client
        .submit(&job(format!("{host}/busybox:1.36@{digest}"), None))
        .await
        .expect("submit");
    let (_, r) = follow(&net.client, submitted.id).await;
    assert_eq!(r.state, JobState::Succeeded, "{r:?}");
    assert_eq!(r.stdout.0.as_ref(), b"pulled\ninside the image\n");
    assert_eq!(
        r.provider.as_deref(),
        Some(net.providers[2].address.as_str()),
        "only the provider allowed that registry"
    );
    let missing = format!("{host}/busybox@sha256:{}", "0".repeat(64));
    let submitted = net
        .client
        .submit(&job(missing, Some(5_000)))
        .await
        .expect("submit");
    let (_, r) = follow(&net.client, submitted.id).await;
    assert_eq!(r.state, JobState::Failed, "{r:?}");
    let err = net
        .client
        .submit(&job(format!("{host}/busybox:latest"), None))
        .await
        .expect_err("a tag alone");
    assert!(err.to_string().contains("pin the image by digest"), "{err}");
}

/// An HTTP server on loopback that answers every GET with `body`.
async fn serve(body: &'static [u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body).await;
            });
        }
    });
    url
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test(flavor = "multi_thread")]
async fn inputs_are_verified_and_decrypted_and_outputs_download() {
    let origin = serve(b"from the origin\n").await;
    let mut net = Net::start(0, 1).await;
    std::fs::set_permissions(net.home(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    net.add_provider_args(2, &["--containers", "--data-url", &origin])
        .await;
    let image = net.home().join("busybox.tar");
    std::fs::write(&image, busybox_image()).expect("write image");

    // By the CLI: an input uploaded, an output downloaded with -o.
    let outdir = net.home().join("out");
    let out = command(net.home())
        .args([
            "run",
            "--broker",
            &net.broker.url,
            "--api-key",
            &net.key,
            "--json",
            "--name",
            "busybox",
        ])
        .arg("--input")
        .arg(format!(
            "data/in.txt={}",
            write(net.home(), "in.txt", "given\n").display()
        ))
        .args(["--output", "result/out.txt", "-o"])
        .arg(&outdir)
        .arg("--image")
        .arg(&image)
        .args([
            "--",
            "mkdir result; cat data/in.txt > result/out.txt; echo made >> result/out.txt",
        ])
        .output()
        .expect("brume run");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["outputs"][0]["path"], "result/out.txt", "{v}");
    assert_eq!(
        v["outputs"][0]["sha256"].as_str(),
        Some(sha256(b"given\nmade\n").as_str()),
        "{v}"
    );
    let got = std::fs::read_to_string(outdir.join("result/out.txt")).expect("downloaded output");
    assert_eq!(got, "given\nmade\n");
    assert!(
        v["usage"]["bytes_in"].as_u64() >= Some(6) && v["usage"]["bytes_out"].as_u64() >= Some(11),
        "{v}"
    );

    let run = |inputs: Vec<brume_api::data::InputSpec>, script: &str| {
        let spec = JobSpec {
            service: Some("busybox".into()),
            args: vec![script.to_string()],
            inputs,
            ..JobSpec::default()
        };
        let client = net.client.clone();
        async move {
            let job = client.submit(&spec).await.expect("submit");
            follow(&client, job.id).await.1
        }
    };
    let input = |path: &str, sha: String, url: Option<&str>, key: Option<String>| {
        brume_api::data::InputSpec {
            path: path.into(),
            sha256: sha,
            url: url.map(String::from),
            key,
            ttl_s: None,
        }
    };
    // By URL, from an origin the provider allows, checked against its hash.
    let r = run(
        vec![input(
            "o.txt",
            sha256(b"from the origin\n"),
            Some(&origin),
            None,
        )],
        "cat o.txt",
    )
    .await;
    assert_eq!(r.state, JobState::Succeeded, "{r:?}");
    assert_eq!(r.stdout.0.as_ref(), b"from the origin\n");
    // A wrong hash is refused, by URL and by blob.
    let r = run(
        vec![input(
            "o.txt",
            sha256(b"something else"),
            Some(&origin),
            None,
        )],
        "cat o.txt",
    )
    .await;
    assert_eq!(r.state, JobState::Failed, "{r:?}");
    assert!(
        r.error
            .as_ref()
            .is_some_and(|e| e.code == brume_api::ErrorCode::InvalidInput
                && e.message.contains("have sha256")),
        "{r:?}"
    );
    let r = run(
        vec![input("x", sha256(b"never uploaded"), None, None)],
        "cat x",
    )
    .await;
    assert_eq!(r.state, JobState::Failed, "{r:?}");

    // Encrypted: uploaded sealed, decrypted only into the work dir.
    use aes_gcm::aead::{Aead, KeyInit};
    let key = [0x42u8; 32];
    let nonce = [7u8; 12];
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).expect("key");
    let mut sealed = nonce.to_vec();
    sealed.extend(
        cipher
            .encrypt(aes_gcm::Nonce::from_slice(&nonce), &b"private rows\n"[..])
            .expect("encrypt"),
    );
    let info = net
        .client
        .upload_data(bytes::Bytes::from(sealed.clone()))
        .await
        .expect("upload");
    assert_eq!(info.sha256, sha256(&sealed));
    let r = run(
        vec![input(
            "p.txt",
            info.sha256.clone(),
            None,
            Some(hex::encode(key)),
        )],
        "cat p.txt",
    )
    .await;
    assert_eq!(r.state, JobState::Succeeded, "{r:?}");
    assert_eq!(r.stdout.0.as_ref(), b"private rows\n");
    let r = run(
        vec![input(
            "p.txt",
            info.sha256,
            None,
            Some(hex::encode([1u8; 32])),
        )],
        "cat p.txt",
    )
    .await;
    assert_eq!(r.state, JobState::Failed, "a wrong key: {r:?}");
}

/// An idle probe the test flips: busy while `busy` holds.
#[derive(Debug, Default)]
struct Switch {
    busy: std::sync::atomic::AtomicBool,
}

impl brume_provider::idle::IdleProbe for Switch {
    fn busy(&self) -> Option<String> {
        self.busy
            .load(std::sync::atomic::Ordering::SeqCst)
            .then(|| "the test says the host is busy".to_string())
    }
}

/// Through the library API (the binary has no flag to claim GPUs): a job
/// asking for 2 GPUs waits while the only provider with GPUs is paused by
/// its idle conditions (the other runs other work meanwhile), and runs on
/// it once it resumes, on the same session. Its row bills its GPU time at
/// the provider's 10 TFLOP/s. A second 2-GPU job waits while another
/// holds both GPUs, though slots are free.
#[tokio::test(flavor = "multi_thread")]
async fn a_gpu_job_waits_for_a_provider_with_gpus_which_pauses_and_resumes() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let switch = Arc::new(Switch::default());
    switch.busy.store(true, Ordering::SeqCst);
    let probe = switch.clone();
    let net = brume_localnet::LocalNet::builder()
        .providers(2)
        .containers(true)
        .provider_config(move |i, c| {
            if i == 1 {
                c.gpus = Some(brume_api::wire::Gpus {
                    model: "Test GPU".into(),
                    memory_bytes: 16 << 30,
                    count: 2,
                    milli_tflops: 10_000,
                });
                c.idle = Some(probe.clone());
                c.idle_every = std::time::Duration::from_millis(10);
            }
        })
        .publish(
            "busybox",
            ServiceKind::Oci,
            bytes::Bytes::from(busybox_image()),
        )
        .start()
        .await
        .expect("a local network");
    let gpu_provider = &net.providers()[1];
    let plain = net.providers()[0].address();
    eventually("the GPU provider says it is paused", || async {
        gpu_provider
            .status()
            .paused
            .filter(|why| why.contains("busy"))
            .map(|_| ())
    })
    .await;
    let since = gpu_provider.status().connected_since_ms;

    let client = net.client().clone();
    let job = |script: &str, gpus: Option<u32>| JobSpec {
        service: Some("busybox".into()),
        args: vec![script.to_string()],
        gpus,
        ..JobSpec::default()
    };
    let gpu_job = client
        .submit(&job("echo on a gpu", Some(2)))
        .await
        .expect("submit");
    let other = client
        .submit(&job("echo elsewhere", None))
        .await
        .expect("submit");
    let (_, done) = follow(&client, other.id).await;
    assert_eq!(
        (done.state, done.provider.as_deref()),
        (JobState::Succeeded, Some(plain.as_str())),
        "{done:?}"
    );
    // The other job was placed after it: the GPU job was passed over.
    let waiting = client.job(gpu_job.id).await.expect("job");
    assert_eq!(waiting.state, JobState::Queued, "{waiting:?}");
    // More than a job may ask for is refused up front.
    let bad = client
        .submit(&JobSpec {
            gpus: Some(17),
            ..job("x", None)
        })
        .await
        .expect_err("17 GPUs");
    assert!(bad.to_string().contains("gpus"), "{bad}");

    switch.busy.store(false, Ordering::SeqCst);
    let (_, result) = follow(&client, gpu_job.id).await;
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
    assert_eq!(
        result.provider.as_deref(),
        Some(gpu_provider.address().as_str())
    );
    assert_eq!(result.stdout.0.as_ref(), b"on a gpu\n");
    let status = gpu_provider.status();
    assert_eq!(
        (status.paused, status.connected_since_ms),
        (None, since),
        "resumed on the same session"
    );

    // Its row: 2 GPUs for its wall time, at 10,000 milli-TFLOP/s, is
    // 2 × wall_us × 10^7 FLOP.
    let url = format!("{}/v1/ledger/rows/{}", net.url(), gpu_job.id);
    let row = ledger_row(&url, net.api_key()).await;
    let wall_us = row["usage"]["wall_us"].as_u64().expect("wall_us");
    let flop: u128 = row["usage"]["gpu_flop"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("gpu_flop");
    assert!(
        row["schema_version"].as_u64() >= Some(2),
        "a row with GPU work: {row}"
    );
    assert!(wall_us > 0, "{row}");
    assert_eq!(flop, 2 * u128::from(wall_us) * 10_000_000, "{row}");

    // Per-job GPUs: one job holds both, so a second 2-GPU job waits.
    let holder = client
        .submit(&job("echo holding; exec sleep 600", Some(2)))
        .await
        .expect("submit");
    eventually("the holder runs", || async {
        let j = client.job(holder.id).await.ok()?;
        (j.state == JobState::Running).then_some(())
    })
    .await;
    let second = client
        .submit(&job("echo second", Some(2)))
        .await
        .expect("submit");
    let after = client
        .submit(&job("echo after", None))
        .await
        .expect("submit");
    follow(&client, after.id).await;
    let waiting = client.job(second.id).await.expect("job");
    assert_eq!(
        waiting.state,
        JobState::Queued,
        "both GPUs are held: {waiting:?}"
    );
    client.cancel(holder.id).await.expect("cancel");
    let (_, r) = follow(&client, second.id).await;
    assert_eq!(
        (r.state, r.stdout.0.as_ref()),
        (JobState::Succeeded, &b"second\n"[..]),
        "{r:?}"
    );
}
