//! Leases through real processes: a lease drips, halts at empty (402 to
//! its traffic, its slot freed on the provider), resumes on a top-up, moves
//! when its provider is killed, and its rows sum exactly to what its
//! escrow paid.

use brume_api::lease::{LeaseInfo, LeaseSpec, LeaseState};
use brume_client::ServiceKind;

use crate::net::{Net, eventually};

/// Ticks at least every 50 ms, so a lease bills in small steps.
const CONFIG: &str = "[broker.leases]\ninterval_ms = 50\n";

async fn until_state(net: &Net, id: &str, state: LeaseState) -> LeaseInfo {
    eventually(&format!("lease {id} is {}", state.as_str()), || async {
        net.client.lease(id).await.ok().filter(|l| l.state == state)
    })
    .await
}

/// The lease's traffic: `GET /lease/{id}/` → (status, provider header).
async fn call(net: &Net, id: &str) -> (u16, Option<String>, serde_json::Value) {
    let resp = reqwest::get(net.url(&format!("/lease/{id}/")))
        .await
        .expect("lease call");
    let status = resp.status().as_u16();
    let provider = resp
        .headers()
        .get(brume_api::headers::PROVIDER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.bytes().await.expect("body");
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, provider, json)
}

/// The sum of the lease's rows, fetched one by one from the public ledger.
async fn rows_sum(net: &Net, lease: &LeaseInfo) -> u128 {
    let http = reqwest::Client::new();
    let mut sum = 0u128;
    for n in 1..=lease.rows {
        let row: serde_json::Value = http
            .get(net.url(&format!("/v1/ledger/rows/{}-{n}", lease.id)))
            .send()
            .await
            .expect("row")
            .json()
            .await
            .expect("row JSON");
        let amount = row["token_amount"]
            .as_str()
            .map(|s| s.parse::<u128>().expect("amount"))
            .or_else(|| row["token_amount"].as_u64().map(u128::from))
            .unwrap_or_else(|| panic!("row {n} of {}: {row}", lease.id));
        sum += amount;
    }
    sum
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_drips_halts_at_empty_resumes_on_top_up_and_moves_when_its_provider_dies() {
    let mut net = Net::start_with(2, 2, Some(CONFIG), &[]).await;
    net.publish(
        "hello",
        ServiceKind::Http,
        test_programs_artifacts::HTTP_HELLO_BYTES,
    )
    .await;
    // A command service can't be leased.
    let wrong = net
        .client
        .create_lease(&LeaseSpec {
            service: "nope".into(),
            deposit: "1".into(),
            private: false,
        })
        .await;
    assert!(wrong.is_err());

    // Learn the price, then lease for about half a second of running time.
    let probe = net
        .client
        .create_lease(&LeaseSpec {
            service: "hello".into(),
            deposit: "1000000000000000000".into(),
            private: false,
        })
        .await
        .expect("create");
    let rate: u128 = probe.rate_per_s.parse().expect("rate");
    assert!(rate > 0);
    net.client.stop_lease(&probe.id).await.expect("stop");
    let deposit = rate / 2;
    let lease = net
        .client
        .create_lease(&LeaseSpec {
            service: "hello".into(),
            deposit: deposit.to_string(),
            private: false,
        })
        .await
        .expect("create");
    let id = lease.id.clone();
    assert_eq!(lease.state, LeaseState::Starting);

    // It runs, and its traffic reaches its provider.
    let running = until_state(&net, &id, LeaseState::Running).await;
    let home = running.provider.clone().expect("a provider");
    let (status, provider, _) = call(&net, &id).await;
    assert_eq!(status, 200);
    assert_eq!(provider.as_deref(), Some(home.as_str()));

    // It drips until empty, then halts: 402 to its traffic, and its
    // provider no longer holds its slot.
    let halted = until_state(&net, &id, LeaseState::Halted).await;
    assert_eq!(halted.balance, "0");
    assert_eq!(halted.billed, deposit.to_string());
    assert!(halted.rows >= 1);
    assert_eq!(
        rows_sum(&net, &halted).await,
        deposit,
        "rows sum to what the escrow paid"
    );
    let (status, _, body) = call(&net, &id).await;
    assert_eq!((status, body["code"].as_str()), (402, Some("lease_halted")));
    let i = net.provider_index(&home);
    eventually(
        "the halted lease's slot is free on its provider",
        || async { (net.providers[i].status().in_flight == 0).then_some(()) },
    )
    .await;

    // A top-up resumes it (with enough for the rest of the test: ten
    // seconds of running time).
    net.client
        .top_up_lease(&id, 20 * deposit)
        .await
        .expect("top up");
    let resumed = until_state(&net, &id, LeaseState::Running).await;
    let (status, _, _) = call(&net, &id).await;
    assert_eq!(status, 200);

    // Its provider dies: it moves to the other one.
    let victim = resumed.provider.clone().expect("provider");
    let i = net.provider_index(&victim);
    net.providers[i].kill();
    let moved =
        eventually("the lease runs elsewhere", || async {
            net.client.lease(&id).await.ok().filter(|l| {
                l.state == LeaseState::Running && l.provider.as_deref() != Some(&victim)
            })
        })
        .await;
    let events = net.client.lease_events(&id).await.expect("events");
    let kinds: Vec<&str> = events.events.iter().map(|e| e.kind.as_str()).collect();
    for kind in [
        "created",
        "started",
        "halted",
        "topped_up",
        "resumed",
        "moved",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let (status, provider, _) = call(&net, &id).await;
    assert_eq!(status, 200);
    assert_eq!(provider, moved.provider);

    // A broker restart keeps it: it runs again, and keeps what it billed.
    let before: u128 = net
        .client
        .lease(&id)
        .await
        .expect("lease")
        .billed
        .parse()
        .expect("billed");
    net.broker.restart();
    let after = until_state(&net, &id, LeaseState::Running).await;
    assert!(
        after.billed.parse::<u128>().expect("billed") >= before,
        "{after:?}"
    );

    // Stopped: what ran is billed, and the rows still sum to it.
    let stopped = net.client.stop_lease(&id).await.expect("stop");
    assert_eq!(stopped.state, LeaseState::Stopped);
    let billed: u128 = stopped.billed.parse().expect("billed");
    assert!(billed > deposit && billed <= 21 * deposit, "{stopped:?}");
    assert_eq!(rows_sum(&net, &stopped).await, billed);
    let (status, _, _) = call(&net, &id).await;
    assert_eq!(status, 404);

    // The CLI shows the same lease and its events.
    let out = crate::net::command(net.home())
        .args([
            "lease",
            "logs",
            &id,
            "--broker",
            &net.broker.url,
            "--api-key",
            &net.key,
        ])
        .output()
        .expect("brume lease logs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("halted") && text.contains("moved"),
        "{text}"
    );
    let out = crate::net::command(net.home())
        .args([
            "lease",
            "status",
            &id,
            "--json",
            "--broker",
            &net.broker.url,
        ])
        .args(["--api-key", &net.key])
        .output()
        .expect("brume lease status");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["state"], "stopped", "{v}");
}
