//! Containers under the real bubblewrap, over a busybox image built here:
//! a run with its output and usage, cancel, the escape cases (each checked
//! against a host-side sentinel, not only an exit code) and crafted layers.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use brume_oci::layout::Builder;
use brume_oci::{Containers, ContainersConfig, Ended, RunResult, RunSpec};

const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "sleep", "dd", "wget", "nc", "ps", "id", "head", "touch", "kill",
];

/// A busybox image: `/bin/busybox` and its applets as symlinks.
fn busybox() -> Builder {
    let bin =
        std::fs::read("/bin/busybox").expect("busybox-static is installed (.ci/run installs it)");
    let mut b = Builder::new().dir("bin").file("bin/busybox", bin, 0o755);
    for a in APPLETS {
        b = b.symlink(&format!("bin/{a}"), "busybox");
    }
    b.dir("etc").file("etc/motd", "inside the image\n", 0o644)
}

struct Env {
    dir: tempfile::TempDir,
    containers: Containers,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    // The sandbox's own uid must reach the provider's directories.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let containers = Containers::new(ContainersConfig {
        dir: dir.path().join("containers"),
        bwrap: None,
        uid: brume_oci::DEFAULT_UID,
        name: format!("test-{}-{}", std::process::id(), unique()),
    })
    .expect("bubblewrap is installed");
    Env { dir, containers }
}

impl Env {
    fn prepare(&self, image: &Builder) -> PathBuf {
        let tar = image.build().expect("build image");
        let digest = format!("{:x}", sha2_digest(&tar));
        let (p, _) = self.containers.prepare(&digest, &tar).expect("prepare");
        p.rootfs.clone()
    }

    async fn sh(&self, script: &str) -> RunResult {
        let rootfs = self.prepare(&busybox());
        let spec = spec(rootfs, &["/bin/sh", "-c", script]);
        self.containers
            .runner()
            .run(&spec, None)
            .await
            .expect("run")
    }
}

fn sha2_digest(b: &[u8]) -> impl std::fmt::LowerHex {
    use sha2::Digest as _;
    sha2::Sha256::digest(b)
}

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn spec(rootfs: PathBuf, argv: &[&str]) -> RunSpec {
    RunSpec {
        name: format!("job-{}", unique()),
        rootfs,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("GREETING".into(), "hello".into())],
        working_dir: None,
        stdin: bytes::Bytes::from_static(b"from stdin\n"),
        memory_bytes: 64 << 20,
        timeout: Duration::from_secs(60),
        max_output_bytes: 1 << 20,
        vcpus: 1,
        max_processes: 32,
        max_open_files: 256,
        inputs: Vec::new(),
        outputs: Vec::new(),
        devices: Default::default(),
        network: false,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn a_container_runs_with_its_output_exit_code_and_usage() {
    let e = env();
    let r = e
        .sh("echo $GREETING; cat; cat /etc/motd; echo oops >&2; id -u; exit 3")
        .await;
    assert_eq!(r.ended, Ended::Exited(3), "stderr: {}", text(&r.stderr));
    assert_eq!(text(&r.stdout), "hello\nfrom stdin\ninside the image\n0\n");
    assert_eq!(text(&r.stderr), "oops\n");
    assert!(r.cpu_ns > 0, "CPU time is metered");
    assert!(r.peak_memory_bytes > 0, "peak memory is metered");
}

#[tokio::test]
async fn hostile_layers_are_refused_and_touch_nothing_outside() {
    let e = env();
    let outside = e.dir.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    let target = outside.to_string_lossy().into_owned();
    let cases: Vec<(&str, Builder, &str)> = vec![
        (
            "setuid",
            Builder::new().file("bin/su", "x", 0o4755),
            "setuid",
        ),
        (
            "symlink escape",
            Builder::new().symlink("up", "../../../../etc"),
            "escapes",
        ),
        (
            "absolute escape",
            Builder::new().symlink("up", "/../../etc"),
            "escapes",
        ),
        (
            "write through a symlink",
            Builder::new()
                .symlink("link", &target)
                .file("link/planted", "x", 0o644),
            "not a directory",
        ),
    ];
    for (name, image, why) in cases {
        let tar = image.build().expect("build");
        let err = e
            .containers
            .prepare(name, &tar)
            .expect_err(name)
            .to_string();
        assert!(err.contains(why), "{name}: {err}");
    }
    // What the builder won't write: raw tar entries.
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().expect("gnu").name[..9].copy_from_slice(b"../escape");
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    layer.append(&h, &b"x"[..]).expect("append");
    let err = e
        .containers
        .prepare("dotdot", &wrap_layer(&layer.into_inner().expect("tar")))
        .expect_err("dotdot");
    assert!(err.to_string().contains("`..`"), "{err}");
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Char);
    h.set_device_major(1).expect("major");
    h.set_device_minor(3).expect("minor");
    h.set_size(0);
    h.set_mode(0o666);
    layer
        .append_data(&mut h, "dev/null2", std::io::empty())
        .expect("append");
    let err = e
        .containers
        .prepare("device", &wrap_layer(&layer.into_inner().expect("tar")))
        .expect_err("device");
    assert!(err.to_string().contains("device node"), "{err}");
    assert_eq!(
        std::fs::read_dir(&outside).expect("read").count(),
        0,
        "nothing was written outside"
    );
    assert!(!e.dir.path().join("escape").exists());
}

/// A layout around one raw layer tar.
fn wrap_layer(layer: &[u8]) -> Vec<u8> {
    // Reuse the builder's layout by building an empty image and swapping
    // its layer: simpler to build the JSON here.
    use sha2::Digest as _;
    let sha = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    let config = br#"{"architecture":"amd64","os":"linux","config":{}}"#.to_vec();
    let manifest = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{}","size":{}}}]}}"#,
        sha(&config), config.len(), sha(layer), layer.len()
    ).into_bytes();
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":{}}}]}}"#,
        sha(&manifest), manifest.len()
    ).into_bytes();
    let mut out = tar::Builder::new(Vec::new());
    for (path, bytes) in [
        (
            "oci-layout".to_owned(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".to_owned(), index),
        (format!("blobs/sha256/{}", sha(&config)), config.clone()),
        (format!("blobs/sha256/{}", sha(&manifest)), manifest.clone()),
        (format!("blobs/sha256/{}", sha(layer)), layer.to_vec()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        out.append_data(&mut h, path, bytes.as_slice())
            .expect("append");
    }
    out.into_inner().expect("tar")
}

#[tokio::test]
async fn a_layer_whose_digest_does_not_verify_is_refused() {
    let e = env();
    let mut tar = busybox().build().expect("build");
    // Flip a byte inside the busybox binary, deep in the layer blob.
    let at = tar.len() / 2;
    tar[at] ^= 0xff;
    let err = e
        .containers
        .prepare("tampered", &tar)
        .expect_err("tampered");
    assert!(
        err.to_string().contains("does not verify") || err.to_string().contains("not a tar"),
        "{err}"
    );
}

#[tokio::test]
async fn reading_a_host_file_fails() {
    let e = env();
    let secret = e.dir.path().join("secret");
    std::fs::write(&secret, "host secret").expect("write");
    let r = e.sh(&format!("cat {}; echo rc=$?", secret.display())).await;
    assert_eq!(text(&r.stdout), "rc=1\n", "stderr: {}", text(&r.stderr));
    assert_eq!(
        std::fs::read_to_string(&secret).expect("read"),
        "host secret"
    );
}

#[tokio::test]
async fn the_network_is_unreachable() {
    let e = env();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let r = e
        .sh(&format!(
            "echo hi | nc -w 2 127.0.0.1 {port} && echo connected"
        ))
        .await;
    assert!(
        !text(&r.stdout).contains("connected"),
        "{}",
        text(&r.stdout)
    );
    // The host-side sentinel: nothing ever connected.
    assert!(listener.accept().is_err(), "a connection reached the host");
}

/// A job that may have the network shares the host's: it reaches a host
/// listener, which reads what it sent.
#[tokio::test]
async fn a_job_that_may_have_the_network_reaches_it() {
    let e = env();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let rootfs = e.prepare(&busybox());
    let script = format!("echo hello host | nc -w 5 127.0.0.1 {port} && echo connected");
    let mut spec = spec(rootfs, &["/bin/sh", "-c", &script]);
    spec.network = true;
    let runner = e.containers.runner();
    let run = runner.run(&spec, None);
    let accept = async {
        use tokio::io::AsyncReadExt as _;
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut got = String::new();
        s.read_to_string(&mut got).await.expect("read");
        got
    };
    let (r, got) = tokio::join!(run, accept);
    let r = r.expect("run");
    assert_eq!(got, "hello host\n");
    assert!(text(&r.stdout).contains("connected"), "{}", text(&r.stderr));
}

#[tokio::test]
async fn host_processes_are_invisible() {
    let e = env();
    let me = std::process::id();
    let r = e
        .sh(&format!(
            "ls /proc | grep -x {me} ; kill -0 {me} && echo signalled; ls /proc"
        ))
        .await;
    let out = text(&r.stdout);
    assert!(
        !out.lines().any(|l| l == me.to_string()) && !out.contains("signalled"),
        "{out}"
    );
    let pids = out.lines().filter(|l| l.parse::<u32>().is_ok()).count();
    assert!(pids <= 4, "only the sandbox's own processes: {out}");
}

#[tokio::test]
async fn a_fork_bomb_is_contained() {
    let e = env();
    let r = e
        .sh("bomb() { bomb | bomb & }; bomb; sleep 1; echo survived")
        .await;
    // The cap refused its forks (the pids cgroup counts them), the
    // container ended, and the host still starts processes.
    assert!(
        r.processes_limited || text(&r.stderr).contains("can't fork"),
        "the process cap held: {r:?}"
    );
    let ok = std::process::Command::new("true")
        .status()
        .expect("the host can still fork");
    assert!(ok.success());
}

#[tokio::test]
async fn a_memory_bomb_is_refused() {
    let e = env();
    // dd allocates its block: 512 MiB is far over the job's 64 MiB.
    let r = e
        .sh("dd if=/dev/zero of=/dev/null bs=512M count=1 && echo allocated")
        .await;
    assert_ne!(r.ended, Ended::Exited(0));
    assert!(!text(&r.stdout).contains("allocated"));
    assert!(
        r.peak_memory_bytes < 64 << 20,
        "peak {} stayed under the limit",
        r.peak_memory_bytes
    );
}

#[tokio::test]
async fn writes_land_only_in_the_work_dir() {
    let e = env();
    let rootfs = e.prepare(&busybox());
    let before = tree(&rootfs);
    let r = e.sh("touch /etc/planted /planted /bin/planted; echo ok > /work/out; echo t > /tmp/t; cat /work/out /tmp/t").await;
    assert_eq!(text(&r.stdout), "ok\nt\n", "stderr: {}", text(&r.stderr));
    assert!(
        text(&r.stderr).contains("Read-only file system"),
        "{}",
        text(&r.stderr)
    );
    assert_eq!(tree(&rootfs), before, "the image's rootfs is unchanged");
}

fn tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn cancelling_kills_the_container() {
    let e = env();
    let rootfs = e.prepare(&busybox());
    let marker = "31415926";
    let s = spec(rootfs, &["/bin/sleep", marker]);
    {
        let run = e.containers.runner().run(&s, None);
        tokio::pin!(run);
        // Once it runs, drop it: a cancelled job's future is dropped.
        tokio::select! {
            r = &mut run => panic!("sleep ended by itself: {r:?}"),
            () = eventually(|| sleeping(marker)) => {}
        }
    }
    eventually(|| !sleeping(marker)).await;
}

fn sleeping(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .any(|p| {
            std::fs::read(p.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
}

/// Waits until `f` holds, re-checking it every 10 ms (the process table
/// has no event to wait on); fails after a minute rather than hang.
async fn eventually(f: impl Fn() -> bool) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let wait = async {
        while !f() {
            tick.tick().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .expect("the condition held within a minute");
}

#[tokio::test]
async fn a_timeout_ends_the_run() {
    let e = env();
    let rootfs = e.prepare(&busybox());
    let mut s = spec(rootfs, &["/bin/sleep", "27182818"]);
    s.timeout = Duration::from_millis(300);
    let r = e.containers.runner().run(&s, None).await.expect("run");
    assert_eq!(r.ended, Ended::Timeout);
    eventually(|| !sleeping("27182818")).await;
}

#[tokio::test]
async fn inputs_are_placed_and_outputs_read_back_but_never_through_a_symlink() {
    let e = env();
    let secret = e.dir.path().join("host-secret");
    std::fs::write(&secret, "host secret").expect("write");
    let rootfs = e.prepare(&busybox());
    let script = format!(
        "cat data/in.txt > out.txt; echo more >> out.txt; ln -s {} leak; ln -s /etc/motd motd",
        secret.display()
    );
    let mut s = spec(rootfs.clone(), &["/bin/sh", "-c", &script]);
    s.inputs = vec![("data/in.txt".into(), bytes::Bytes::from_static(b"given\n"))];
    s.outputs = vec!["out.txt".into(), "missing.txt".into()];
    let r = e.containers.runner().run(&s, None).await.expect("run");
    assert_eq!(r.ended, Ended::Exited(0), "stderr: {}", text(&r.stderr));
    assert_eq!(
        r.outputs,
        vec![(
            "out.txt".to_string(),
            bytes::Bytes::from_static(b"given\nmore\n")
        )]
    );

    // An output that is a symlink (to a host file, or anywhere) is refused.
    for link in ["leak", "motd"] {
        let mut s = spec(rootfs.clone(), &["/bin/sh", "-c", &script]);
        s.inputs = vec![("data/in.txt".into(), bytes::Bytes::from_static(b"given\n"))];
        s.outputs = vec![link.into()];
        let err = e.containers.runner().run(&s, None).await.expect_err(link);
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}

/// What a SIGKILLed provider leaves (a process in a job's cgroup, a work
/// dir) is removed when the provider starts again on the same directory.
#[tokio::test]
async fn a_restart_removes_what_a_killed_provider_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let name = format!("restart-{}-{}", std::process::id(), unique());
    let config = || ContainersConfig {
        dir: dir.path().join("containers"),
        bwrap: None,
        uid: brume_oci::DEFAULT_UID,
        name: name.clone(),
    };
    let first = Containers::new(config()).expect("containers");
    let with_pids = first.enforcement().cgroups.iter().any(|c| c == "pids");
    let left_dir = dir.path().join("containers/work/job-left");
    std::fs::create_dir_all(&left_dir).expect("a work dir left behind");
    let mut left = std::process::Command::new("/bin/busybox")
        .args(["sleep", "31337"])
        .spawn()
        .expect("spawn");
    if with_pids {
        // As a killed provider leaves it: a job's group with a live process.
        let group = Path::new("/sys/fs/cgroup/pids/brume")
            .join(&name)
            .join("job-left");
        std::fs::create_dir_all(&group).expect("a job's cgroup");
        std::fs::write(group.join("cgroup.procs"), left.id().to_string()).expect("join it");
    }
    drop(first);

    let _second = Containers::new(config()).expect("containers again");
    assert!(!left_dir.exists(), "the old work dir is gone");
    if with_pids {
        let status = left.wait().expect("wait");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    } else {
        // Without cgroups, the process would have died with its bubblewrap
        // (--die-with-parent); this one was never in a sandbox.
        left.kill().expect("kill");
        let _ = left.wait();
    }
}
