//! The guest sees only what it is given: no host env, no host files.

use brume_sandbox::CommandRequest;
use test_programs_artifacts as art;

use crate::util::*;

#[tokio::test]
async fn host_environment_does_not_leak() {
    assert!(
        std::env::var_os("PATH").is_some(),
        "the test needs a host env"
    );
    let sb = sandbox();
    for path in [art::ENV_P1, art::ENV_P2] {
        let p = load(&sb, path);
        let empty = run_ok(&sb, &p, &args(&["env"])).await;
        assert_eq!(text(&empty.stdout), "", "{path}");
        let req = CommandRequest {
            env: vec![("B".into(), "2".into()), ("A".into(), "1=one".into())],
            ..args(&["env"])
        };
        assert_eq!(text(&run_ok(&sb, &p, &req).await.stdout), "A=1=one\nB=2\n");
    }
}

#[tokio::test]
async fn host_files_outside_the_preopens_are_unreadable() {
    let sb = sandbox();
    let secret_dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_dir.path().join("secret.txt");
    std::fs::write(&secret, "top secret").expect("write");
    let shared = tempfile::tempdir().expect("tempdir");
    std::fs::write(shared.path().join("ok.txt"), "shared").expect("write");
    let mapping = format!("{}::/data", shared.path().display());

    for path in [art::READ_FILE_P1, art::READ_FILE_P2] {
        let p = load(&sb, path);
        let attempts = [
            secret.display().to_string(),
            "/etc/passwd".to_string(),
            "/data/../secret.txt".to_string(),
            format!("/data/../../../../{}", secret.display()),
        ];
        for target in &attempts {
            let req = CommandRequest {
                dirs: vec![mapping.parse().expect("mapping")],
                ..args(&["read_file", target])
            };
            let out = run_ok(&sb, &p, &req).await;
            assert_eq!(
                out.exit_code,
                1,
                "{path} read {target}: {}",
                text(&out.stdout)
            );
            assert!(!text(&out.stdout).contains("secret"), "{target}");
            assert!(!text(&out.stdout).contains("root:"), "{target}");
        }
        // The positive control: the mapped directory is readable.
        let req = CommandRequest {
            dirs: vec![mapping.parse().expect("mapping")],
            ..args(&["read_file", "/data/ok.txt"])
        };
        let out = run_ok(&sb, &p, &req).await;
        assert_eq!((out.exit_code, text(&out.stdout)), (0, "shared"), "{path}");
    }
}

#[tokio::test]
async fn preopened_dirs_are_writable_like_wasmtime_run() {
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = load(&sb, art::WRITE_FILE_P2);
    let req = CommandRequest {
        dirs: vec![
            format!("{}::/out", dir.path().display())
                .parse()
                .expect("mapping"),
        ],
        ..args(&["write_file", "/out/result.txt", "written by the guest"])
    };
    assert_eq!(run_ok(&sb, &p, &req).await.exit_code, 0);
    let written = std::fs::read_to_string(dir.path().join("result.txt")).expect("read back");
    assert_eq!(written, "written by the guest");
}
