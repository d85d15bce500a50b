use brume_sandbox::{Profile, Sandbox, SandboxConfig};
use test_programs_artifacts as art;

use crate::util::*;

fn cached_in(dir: &std::path::Path) -> SandboxConfig {
    SandboxConfig {
        cache_dir: Some(dir.to_path_buf()),
        max_concurrent_instances: 4,
        ..SandboxConfig::default()
    }
}

#[tokio::test]
async fn artifacts_are_cached_on_disk_and_reloaded_by_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = cached_in(dir.path());
    let bytes = std::fs::read(art::ECHO_P1).expect("read");
    let digest = {
        let sb = Sandbox::new(config.clone()).expect("sandbox");
        assert!(
            sb.load_cached(&brume_sandbox::Digest::of(&bytes), Profile::Standard)
                .expect("lookup")
                .is_none()
        );
        sb.load(&bytes, Profile::Standard).expect("load").digest()
    };
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read cache dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with(&digest.to_string()) && files[0].ends_with(".cwasm"));

    // A new process (sandbox) runs it from the artifact alone.
    let sb = Sandbox::new(config).expect("sandbox");
    let p = sb
        .load_cached(&digest, Profile::Standard)
        .expect("load artifact")
        .expect("cached");
    let req = brume_sandbox::CommandRequest {
        stdin: "from cache".into(),
        ..args(&["echo"])
    };
    assert_eq!(text(&run_ok(&sb, &p, &req).await.stdout), "from cache");
    // Another profile is another artifact.
    assert!(
        sb.load_cached(&digest, Profile::Deterministic)
            .expect("lookup")
            .is_none()
    );
    sb.evict(&digest);
    assert!(
        sb.load_cached(&digest, Profile::Standard)
            .expect("reload")
            .is_some()
    );
}

#[tokio::test]
async fn a_corrupt_artifact_is_rebuilt_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = cached_in(dir.path());
    let bytes = std::fs::read(art::ECHO_P1).expect("read");
    Sandbox::new(config.clone())
        .expect("sandbox")
        .load(&bytes, Profile::Standard)
        .expect("first load");
    let artifact = std::fs::read_dir(dir.path())
        .expect("read dir")
        .next()
        .expect("one artifact")
        .expect("entry")
        .path();
    std::fs::write(&artifact, b"\x7fELF but not really").expect("corrupt it");

    let sb = Sandbox::new(config).expect("sandbox");
    let p = sb.load(&bytes, Profile::Standard).expect("recompiled");
    let req = brume_sandbox::CommandRequest {
        stdin: "still fine".into(),
        ..args(&["echo"])
    };
    assert_eq!(text(&run_ok(&sb, &p, &req).await.stdout), "still fine");
}

#[test]
fn pool_limits_give_the_same_code_with_or_without_a_cache() {
    let huge_table = std::fs::read(art::wat("huge_table")).expect("read");
    let uncached = Sandbox::new(SandboxConfig {
        max_concurrent_instances: 4,
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    let e = uncached
        .load(&huge_table, Profile::Standard)
        .expect_err("too big");
    assert_eq!(e.code(), "memory_limit", "{e}");
}
