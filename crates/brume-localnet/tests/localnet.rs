//! Local networks start as configured, serve work, restart their broker
//! and stop; a start that cannot work fails with a typed error.

use std::time::Duration;

use brume_api::ServiceKind;
use brume_localnet::{Fault, LocalNet, LocalNetError};
use bytes::Bytes;

/// How long a test waits for a condition of its own.
const DEADLINE: Duration = Duration::from_secs(30);

fn echo() -> Bytes {
    Bytes::from_static(test_programs_artifacts::ECHO_P1_BYTES)
}

/// Waits until the broker lists `address` (case aside).
async fn wait_listed(net: &LocalNet, address: &str) {
    let listed = async {
        loop {
            let list = net.client().providers().await.expect("list providers");
            if list
                .providers
                .iter()
                .any(|p| p.address.eq_ignore_ascii_case(address))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(DEADLINE, listed)
        .await
        .unwrap_or_else(|_| panic!("provider {address} listed: not within {DEADLINE:?}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_of_daemons_on_runtimes_of_their_own_with_a_faulty_provider_and_an_account() {
    const FUNDS: u128 = 5_000;
    let net = LocalNet::builder()
        .name("localnet-test")
        .providers(2)
        .slots(1)
        .fault(1, Fault::WrongOutput)
        .shared_sandbox()
        .runtime_per_daemon(1)
        .requester_account(FUNDS)
        .provider_config(|i, c| c.region = format!("region-{i}"))
        .publish("echo", ServiceKind::Command, echo())
        .start()
        .await
        .expect("the network starts");

    let providers = net.providers();
    assert_eq!(providers.len(), 2);
    assert_eq!(net.faulty(), [providers[1].address()]);
    let list = net.client().providers().await.expect("list providers");
    let mut listed: Vec<(String, String)> = list
        .providers
        .iter()
        .map(|p| (p.address.to_ascii_lowercase(), p.region.clone()))
        .collect();
    listed.sort();
    let mut expected: Vec<(String, String)> = providers
        .iter()
        .enumerate()
        .map(|(i, p)| (p.address().to_ascii_lowercase(), format!("region-{i}")))
        .collect();
    expected.sort();
    assert_eq!(listed, expected, "every provider listed, with its config");
    assert!(providers.iter().all(|p| p.status().slots == 1));

    let requester = net.requester().expect("a requester account").address();
    let chain = net.broker().settlement();
    let balance = chain.balance_of(requester).await.expect("a balance");
    let allowance = chain.collectable(requester).await.expect("an allowance");
    assert_eq!((balance, allowance), (FUNDS, FUNDS));
    assert!(net.sandbox().is_some());

    let services = net.client().services().await.expect("list services");
    assert!(
        services.services.iter().any(|s| s.name == "echo"),
        "{services:?}"
    );
    let data = net.data_dir().to_path_buf();
    for path in [
        "broker/broker.db",
        "provider-0",
        "provider-1",
        "requester.key",
    ] {
        assert!(data.join(path).exists(), "{path} in the data dir");
    }
    net.stop().await.expect("a clean stop");
    assert!(!data.exists(), "the temporary data dir is removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_broker_keeps_its_address_key_and_providers() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let net = LocalNet::builder()
        .data_dir(dir.path().join("net"))
        .providers(1)
        .slots(2)
        .publish("echo", ServiceKind::Command, echo())
        .start()
        .await
        .expect("the network starts");
    assert!(net.requester().is_none());
    let r = net
        .client()
        .invoke("echo", &[], Bytes::from_static(b"before"))
        .await
        .expect("an invocation");
    assert_eq!((r.status, &r.body[..]), (200, &b"before"[..]), "{r:?}");

    let url = net.url().to_string();
    let net = net.restart_broker().await.expect("the broker restarts");
    assert_eq!(net.url(), url, "the same address");
    let address = net.providers()[0].address();
    wait_listed(&net, &address).await;
    let r = net
        .client()
        .invoke("echo", &[], Bytes::from_static(b"after"))
        .await
        .expect("an invocation after the restart");
    assert_eq!((r.status, &r.body[..]), (200, &b"after"[..]), "{r:?}");
    net.stop().await.expect("a clean stop");
    assert!(dir.path().join("net/broker/broker.db").exists(), "kept");
}

#[tokio::test]
async fn a_fault_for_a_provider_that_is_not_there_is_refused() {
    let e = LocalNet::builder()
        .providers(1)
        .fault(1, Fault::Stall)
        .start()
        .await
        .expect_err("no provider 1");
    assert!(matches!(e, LocalNetError::Invalid(_)), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_that_cannot_listen_fails_the_start_with_its_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("an address");
    let e = LocalNet::builder()
        .broker(move |c| c.listen = addr)
        .start()
        .await
        .expect_err("the port is taken");
    assert!(matches!(e, LocalNetError::Broker(_)), "{e:?}");
    let source = std::error::Error::source(&e).expect("the broker's error");
    assert!(source.to_string().contains(&addr.to_string()), "{source}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_network_pins_its_self_signed_broker_across_a_restart() {
    let net = LocalNet::builder()
        .tls_self_signed()
        .publish("echo", ServiceKind::Command, echo())
        .start()
        .await
        .expect("the network starts");
    assert!(net.url().starts_with("https://"), "{}", net.url());
    let pin = net.broker().tls_fingerprint().expect("a certificate");
    assert_eq!(net.trust().pin(), Some(pin));

    // A scripted provider over wss://, pinned, runs a job.
    let mut provider = net.scripted_provider().await;
    let spec = brume_api::rest::JobSpec {
        service: Some("echo".into()),
        ..Default::default()
    };
    let job = net.client().submit(&spec).await.expect("submit");
    let (channel, assign) = provider.next_assign().await;
    assert_eq!(assign.work_id, job.id);
    provider.accept(channel);
    provider.done(channel, brume_localnet::scripted::exited("over wss", 1_000));
    let result = tokio::time::timeout(DEADLINE, net.client().wait(job.id))
        .await
        .expect("the job ends in time")
        .expect("a result");
    assert_eq!(&result.stdout.0[..], b"over wss");
    provider.close().await;

    // The restarted broker serves the same certificate: the pin holds.
    let net = net.restart_broker().await.expect("the broker restarts");
    assert_eq!(net.broker().tls_fingerprint(), Some(pin));
    net.client()
        .status()
        .await
        .expect("the pinned client still talks");
    net.stop().await.expect("a clean stop");
}
