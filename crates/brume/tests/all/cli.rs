//! The CLI's finish: shell completions, and module uploads that report
//! their progress (what `brume service publish` draws on a terminal).

use std::sync::{Arc, Mutex};

use brume_client::ServiceKind;
use test_programs_artifacts as art;

use crate::net::{Net, command};

#[test]
fn completions_name_every_subcommand() {
    let home = tempfile::tempdir().expect("tempdir");
    for (shell, marker) in [
        ("bash", "_brume()"),
        ("zsh", "#compdef brume"),
        ("fish", "complete -c brume"),
    ] {
        let out = command(home.path())
            .args(["completions", shell])
            .output()
            .expect("brume completions");
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for sub in ["devnet", "invoke", "publish", "completions", "accounts"] {
            assert!(script.contains(sub), "{shell}: no {sub}");
        }
    }
    let out = command(home.path())
        .args(["completions", "tcsh"])
        .output()
        .expect("brume completions tcsh");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_module_upload_reports_its_progress() {
    let net = Net::start(1, 1).await;
    let seen: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let s = seen.clone();
    let client = net
        .client
        .clone()
        .with_upload_progress(Arc::new(move |sent, total| {
            s.lock().expect("lock").push((sent, total))
        }));
    let module = bytes::Bytes::from_static(art::ECHO_P1_BYTES);
    let info = client
        .publish("echo", ServiceKind::Command, module.clone())
        .await
        .expect("publish");
    let total = module.len() as u64;
    let seen = seen.lock().expect("lock").clone();
    assert!(seen.len() >= 2, "one report per 64 KiB chunk: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
    assert_eq!(seen.last(), Some(&(total, total)));
    assert_eq!(info.size_bytes, total);
    // What went up in chunks is the module, byte for byte.
    let out = client
        .invoke("echo", &[], bytes::Bytes::from_static(b"uploaded whole"))
        .await
        .expect("invoke");
    assert_eq!(&out.body[..], b"uploaded whole");
}
