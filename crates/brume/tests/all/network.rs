//! The core network end to end, through the real binaries: a `brume broker`
//! process, `brume provide` processes, requests over HTTP (the typed client,
//! raw reqwest, raw WebSockets, and the requester CLI).
//!
//! Each test builds its own small network under its own temp dir and kills
//! it when done.

use std::time::Duration;

use brume_client::brume_api::rest::{EventKind, JobEvent, JobSpec, JobState, Output};
use brume_client::{ClientError, ErrorCode, ServiceKind};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use test_programs_artifacts as art;

use crate::net::*;

fn kinds(events: &[JobEvent]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

/// A cpu_loop job that runs `n` rounds, with room for it in its limits.
/// Runs a requester CLI command against the network; returns exit code,
/// stdout, stderr.
fn cli(net: &Net, args: &[&str]) -> (i32, String, String) {
    // The connection flags go first: `run` passes what follows its module
    // to the guest.
    let out = command(net.home())
        .arg(args[0])
        .args(["--broker", &net.broker.url, "--api-key", &net.key])
        .args(&args[1..])
        .output()
        .expect("run brume");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_json(net: &Net, args: &[&str]) -> (i32, serde_json::Value) {
    let (code, stdout, stderr) = cli(net, args);
    let v = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("brume {args:?}: not JSON ({e}): {stdout:?}; stderr: {stderr}"));
    (code, v)
}

// ---- 1. invocations ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn invoke_round_trips_a_command_and_an_http_component() {
    let net = Net::start(1, 2).await;
    let provider = net.providers[0].address.clone();

    // Publish the command with the CLI, the component with the client.
    let (code, info) = cli_json(
        &net,
        &[
            "service",
            "publish",
            "--json",
            "--name",
            "echo",
            art::ECHO_P1,
        ],
    );
    assert_eq!(code, 0, "{info}");
    assert_eq!(
        (info["name"].as_str(), info["kind"].as_str()),
        (Some("echo"), Some("command"))
    );
    net.publish("hello", ServiceKind::Http, art::HTTP_HELLO_BYTES)
        .await;

    let out = net
        .client
        .invoke("echo", &[], Bytes::from_static(b"round trip \x00\xff"))
        .await
        .expect("invoke echo");
    assert_eq!(out.status, 200);
    assert_eq!(&out.body[..], b"round trip \x00\xff");
    assert!(out.work_id.is_some(), "x-brume-work-id parses: {out:?}");
    assert_eq!(out.provider.as_deref(), Some(provider.as_str()));
    assert!(out.fuel.is_some_and(|f| f > 0), "{out:?}");
    assert_eq!(out.attempts, Some(1));
    assert_eq!(out.exit_code, Some(0));

    // The same through `brume invoke`.
    let (code, v) = cli_json(&net, &["invoke", "--json", "echo", "-d", "from the cli"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["stdout"], "from the cli");
    assert_eq!(v["provider"], provider.as_str());
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["attempts"], 1);

    // A wasi:http component answers at /fn/{svc}/{path}?{query}.
    let resp = net
        .client
        .call_http(
            http::Method::POST,
            "hello",
            "/greet/x?name=y",
            http::HeaderMap::new(),
            Bytes::from_static(b"ping"),
        )
        .await
        .expect("call hello");
    let (parts, body) = resp.response.into_parts();
    assert_eq!(parts.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&body),
        "hello from brume: Method::Post /greet/x?name=y body=ping\n"
    );
    assert_eq!(
        parts.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/plain"[..])
    );
    assert!(resp.meta.work_id.is_some());
    assert_eq!(resp.meta.provider.as_deref(), Some(provider.as_str()));
    assert!(resp.meta.fuel.is_some_and(|f| f > 0));
    assert_eq!(resp.meta.attempts, Some(1));
}

// ---- 2. jobs: lifecycle, events, cancel ------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_job_reports_its_story_and_its_result() {
    let net = Net::start(1, 1).await;
    let provider = net.providers[0].address.clone();
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;

    let job = net
        .client
        .submit(&cpu_job(300_000_000))
        .await
        .expect("submit");
    assert!(
        matches!(job.state, JobState::Queued | JobState::Assigned),
        "{job:?}"
    );
    let (events, result) = follow(&net.client, job.id).await;

    let k = kinds(&events);
    assert_eq!(
        k[..3],
        [EventKind::Queued, EventKind::Assigned, EventKind::Running],
        "{k:?}"
    );
    assert_eq!(k.last(), Some(&EventKind::Succeeded), "{k:?}");
    assert!(
        k[3..k.len() - 1].iter().all(|k| *k == EventKind::Progress),
        "only progress between running and the end: {k:?}"
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "events are numbered in order");
    }
    let fuels: Vec<u64> = events.iter().filter_map(|e| e.fuel).collect();
    assert!(fuels.windows(2).all(|w| w[0] <= w[1]), "{fuels:?}");
    assert_eq!(events[1].provider.as_deref(), Some(provider.as_str()));
    assert_eq!(events.last().and_then(|e| e.exit_code), Some(0));

    assert_eq!(result.state, JobState::Succeeded);
    assert_eq!(result.exit_code, Some(0));
    let printed = String::from_utf8_lossy(&result.stdout.0).into_owned();
    assert!(
        printed.ends_with('\n') && printed.trim().parse::<u64>().is_ok(),
        "{printed:?}"
    );
    assert!(result.usage.fuel > 300_000_000, "{:?}", result.usage);
    assert!(fuels.iter().all(|f| *f <= result.usage.fuel));
    assert_eq!(result.attempts, 1);
    assert_eq!(result.provider.as_deref(), Some(provider.as_str()));

    // The CLI sees the same job.
    let id = job.id.to_string();
    let (code, v) = cli_json(&net, &["job", "status", "--json", &id]);
    assert_eq!((code, v["state"].as_str()), (0, Some("succeeded")), "{v}");
    let (code, v) = cli_json(&net, &["job", "result", "--json", &id]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["stdout"].as_str(), Some(printed.as_str()));

    // `brume run` publishes, submits, follows and exits with the code.
    let (code, v) = cli_json(
        &net,
        &["run", "--json", "--name", "cpu", art::CPU_LOOP_P1, "1000"],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["state"], "succeeded");
    assert_eq!(v["stdout"].as_str(), Some(cpu_loop_output(1000).as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_running_job_stops_it_on_the_provider() {
    let net = Net::start(1, 1).await;
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let job = net
        .client
        .submit(&cpu_job(1_000_000_000_000))
        .await
        .expect("submit");
    let follower = {
        let client = net.client.clone();
        tokio::spawn(async move { follow(&client, job.id).await })
    };
    net.wait_state(job.id, JobState::Running).await;
    // Busy on both sides before the cancel.
    let p = &net.providers[0];
    let status = tokio::task::block_in_place(|| p.status());
    assert_eq!(status.in_flight, 1, "{status:?}");

    let info = net.client.cancel(job.id).await.expect("cancel");
    assert_eq!(info.state, JobState::Cancelled);
    let (events, result) = tokio::time::timeout(DEADLINE, follower)
        .await
        .expect("events end after a cancel")
        .expect("follower");
    assert_eq!(
        events.last().map(|e| e.kind),
        Some(EventKind::Cancelled),
        "{:?}",
        kinds(&events)
    );
    assert_eq!(result.state, JobState::Cancelled);
    assert_eq!(result.error.map(|e| e.code), Some(ErrorCode::Cancelled));
    let again = net.client.cancel(job.id).await.expect_err("cancel twice");
    assert_eq!(again.code(), Some(ErrorCode::Conflict), "{again}");

    // The slot is free on the broker and the execution really stopped.
    let client = net.client.clone();
    eventually("the broker shows no busy slot", || {
        let client = client.clone();
        async move {
            let list = client.providers().await.ok()?;
            (list.providers.len() == 1 && list.providers[0].slots_busy == 0).then_some(())
        }
    })
    .await;
    eventually("the provider has nothing in flight", || {
        let s = tokio::task::block_in_place(|| p.status());
        std::future::ready((s.in_flight == 0).then_some(()))
    })
    .await;
    // And it takes new work.
    let out = net
        .client
        .submit(&cpu_job(1000))
        .await
        .expect("submit after cancel");
    let (_, r) = follow(&net.client, out.id).await;
    assert_eq!(r.stdout.0, cpu_loop_output(1000).as_bytes());
}

// ---- 3, 4. providers that die -------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_job_survives_its_provider_being_killed() {
    let mut net = Net::start(2, 1).await;
    let (job, victim, survivor) = net.long_job_losing_its_provider().await;

    let (events, result) = follow(&net.client, job.id).await;
    let k = kinds(&events);
    assert!(k.contains(&EventKind::Retry), "{k:?}");
    assert_eq!(
        k.iter().filter(|k| k.is_final()).count(),
        1,
        "exactly one end: {k:?}"
    );
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
    assert_eq!(result.attempts, 2);
    assert_eq!(result.provider.as_deref(), Some(survivor.as_str()));
    assert_ne!(result.provider.as_deref(), Some(victim.as_str()));
    assert!(
        String::from_utf8_lossy(&result.stdout.0)
            .trim()
            .parse::<u64>()
            .is_ok()
    );
    let info = net.client.job(job.id).await.expect("job");
    assert_eq!((info.state, info.attempts), (JobState::Succeeded, 2));
    let done = net
        .client
        .jobs(Some(JobState::Succeeded), None)
        .await
        .expect("list");
    assert_eq!(done.jobs.iter().filter(|j| j.id == job.id).count(), 1);
    let list = net.client.providers().await.expect("providers");
    assert_eq!(list.providers.len(), 1, "the killed provider is gone");
    assert_eq!(list.providers[0].address, survivor);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_fails_provider_unavailable_when_every_attempt_loses_its_provider() {
    let mut net = Net::start(2, 1).await;
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let spec = JobSpec {
        max_attempts: Some(2),
        ..cpu_job(1_000_000_000_000)
    };
    let job = net.client.submit(&spec).await.expect("submit");
    let mut killed = Vec::new();
    for attempt in 1..=2 {
        let info = wait_job(
            &net.client,
            job.id,
            |j| j.state == JobState::Running && j.attempts == attempt,
            &format!("running attempt {attempt}"),
        )
        .await;
        let who = net.kill_provider_of(&info);
        assert!(
            !killed.contains(&who),
            "attempt {attempt} reused a dead provider"
        );
        killed.push(who);
    }
    let (events, result) = follow(&net.client, job.id).await;
    let k = kinds(&events);
    assert_eq!(
        k.iter().filter(|k| **k == EventKind::Retry).count(),
        1,
        "{k:?}"
    );
    assert_eq!(k.last(), Some(&EventKind::Failed), "{k:?}");
    assert_eq!(result.state, JobState::Failed);
    assert_eq!(result.attempts, 2);
    let error = result.error.expect("a failed job says why");
    assert_eq!(error.code, ErrorCode::ProviderUnavailable, "{error:?}");
}

// ---- 5. the broker dies -------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn accepted_jobs_survive_a_broker_kill() {
    let mut net = Net::start(0, 2).await;
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    net.publish("echo", ServiceKind::Command, art::ECHO_P1_BYTES)
        .await;

    // Accepted (202) with no provider anywhere: they wait.
    let mut jobs = Vec::new();
    for n in [1_000u64, 2_000, 3_000, 4_000] {
        let j = net.client.submit(&cpu_job(n)).await.expect("submit");
        assert_eq!(j.state, JobState::Queued);
        jobs.push((j.id, cpu_loop_output(n)));
    }
    let echo = JobSpec {
        service: Some("echo".into()),
        stdin: Some(Output(Bytes::from_static(b"kept across a crash"))),
        ..JobSpec::default()
    };
    let j = net.client.submit(&echo).await.expect("submit echo");
    jobs.push((j.id, "kept across a crash".to_string()));

    net.broker.restart();
    for (id, _) in &jobs {
        let info = net.client.job(*id).await.expect("job known after restart");
        assert_eq!(info.state, JobState::Queued, "{info:?}");
    }
    net.add_provider(2).await;
    for (id, want) in &jobs {
        let (_, r) = follow(&net.client, *id).await;
        assert_eq!(r.state, JobState::Succeeded, "{r:?}");
        assert_eq!(String::from_utf8_lossy(&r.stdout.0), *want);
    }

    // A job running when the broker dies is run again after the restart.
    let job = net
        .client
        .submit(&cpu_job(500_000_000))
        .await
        .expect("submit");
    // `GET /v1/jobs` commits pending writes first, so once the list shows
    // the job running, that state is on disk.
    let client = net.client.clone();
    eventually("the job is running, durably", || {
        let client = client.clone();
        async move {
            let list = client.jobs(Some(JobState::Running), None).await.ok()?;
            list.jobs.iter().any(|j| j.id == job.id).then_some(())
        }
    })
    .await;
    net.broker.restart();
    let (events, r) = follow(&net.client, job.id).await;
    assert_eq!(r.state, JobState::Succeeded, "{r:?}");
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(r.attempts, 2, "{r:?}\n{events:#?}");
    let k = kinds(&events);
    let requeued = k
        .iter()
        .rposition(|k| *k == EventKind::Queued)
        .expect("a queued event");
    assert!(requeued > 0, "re-queued after the restart: {k:?}");
    assert_eq!(
        k[requeued + 1..requeued + 3],
        [EventKind::Assigned, EventKind::Running],
        "{k:?}"
    );
    assert_eq!(k.last(), Some(&EventKind::Succeeded));
    assert!(
        String::from_utf8_lossy(&r.stdout.0)
            .trim()
            .parse::<u64>()
            .is_ok()
    );
}

// ---- 6. load ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_concurrent_invokes_all_get_their_own_answer() {
    const N: usize = 500;
    let net = Net::start(3, 2).await;
    net.publish("echo", ServiceKind::Command, art::ECHO_P1_BYTES)
        .await;
    let mut tasks = Vec::new();
    for i in 0..N {
        let client = net.client.clone();
        tasks.push(tokio::spawn(async move {
            let body = Bytes::from(format!("request {i}: {}", "x".repeat(i)));
            let end = std::time::Instant::now() + DEADLINE;
            loop {
                match client.invoke("echo", &[], body.clone()).await {
                    Ok(out) => {
                        assert_eq!(out.body, body, "request {i} got another's answer");
                        assert_eq!(out.exit_code, Some(0));
                        return out.provider.expect("provider header");
                    }
                    // A client that honours Retry-After is correct.
                    Err(e @ ClientError::Api { .. })
                        if e.code() == Some(ErrorCode::Overloaded)
                            && std::time::Instant::now() < end =>
                    {
                        let wait = e.retry_after().unwrap_or(Duration::from_millis(100));
                        tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
                    }
                    Err(e) => panic!("request {i}: {e}"),
                }
            }
        }));
    }
    let mut by = std::collections::HashMap::<String, usize>::new();
    for t in tasks {
        *by.entry(t.await.expect("task")).or_default() += 1;
    }
    assert_eq!(by.values().sum::<usize>(), N);
    let list = net.client.providers().await.expect("providers");
    let done: u64 = list.providers.iter().map(|p| p.work_done).sum();
    assert!(done >= N as u64, "{list:?}");
    let busy = list.providers.iter().filter(|p| p.work_done > 0).count();
    assert!(busy > 1, "the work was spread: {list:?}");
    assert!(by.len() > 1, "answers came from several providers: {by:?}");
}

// ---- 7. bad input -------------------------------------------------------------

async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> String {
    let got = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(got, status, "{body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(v["code"], code, "{body}");
    v["message"].as_str().expect("message").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_their_codes() {
    let net = Net::start(0, 1).await;
    net.publish("echo", ServiceKind::Command, art::ECHO_P1_BYTES)
        .await;
    let http = reqwest::Client::new();
    let auth = format!("Bearer {}", net.key);
    let post = |path: &str| {
        http.post(net.url(path))
            .header("authorization", auth.as_str())
    };

    // Not a module.
    let mut junk = vec![0u8; 4096];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in &mut junk {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let r = post("/v1/services?name=junk&kind=command")
        .body(junk)
        .send()
        .await
        .expect("send");
    expect_error(r, 400, "invalid_module").await;

    let r = post("/v1/functions/nope/invoke")
        .send()
        .await
        .expect("send");
    expect_error(r, 404, "unknown_service").await;

    // Keys.
    let r = http.get(net.url("/v1/jobs")).send().await.expect("send");
    expect_error(r, 401, "unauthorized").await;
    let r = http
        .get(net.url("/v1/jobs"))
        .header("authorization", "Bearer brk_not_a_key")
        .send()
        .await
        .expect("send");
    expect_error(r, 403, "forbidden").await;

    // Job specs.
    let spec = |body: &str| {
        post("/v1/jobs")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let r = spec("{not json").await.expect("send");
    expect_error(r, 400, "invalid_request").await;
    let r = spec(r#"{"service":"echo","max_attempts":"x"}"#)
        .await
        .expect("send");
    let m = expect_error(r, 400, "invalid_request").await;
    assert!(m.starts_with("max_attempts"), "{m}");
    let r = spec(r#"{"service":"echo","limits":{"fuel":-1}}"#)
        .await
        .expect("send");
    let m = expect_error(r, 400, "invalid_request").await;
    assert!(m.starts_with("limits.fuel"), "{m}");
    let r = spec(r#"{"service":"echo","sevrice":"echo"}"#)
        .await
        .expect("send");
    let m = expect_error(r, 400, "invalid_request").await;
    assert!(m.contains("sevrice"), "{m}");
    let r = spec(r#"{"service":"nope"}"#).await.expect("send");
    expect_error(r, 404, "unknown_service").await;

    // Too large: a module over 64 MiB, an input over 16 MiB (as an invoke
    // body and as a job's stdin).
    let r = post("/v1/services?name=big&kind=command")
        .body(vec![0u8; (64 << 20) + 1])
        .send()
        .await
        .expect("send");
    expect_error(r, 413, "payload_too_large").await;
    let r = post("/v1/functions/echo/invoke")
        .body(vec![b'a'; 17 << 20])
        .send()
        .await
        .expect("send");
    expect_error(r, 413, "payload_too_large").await;
    let big = serde_json::json!({"service": "echo", "stdin": "a".repeat(17 << 20)});
    let r = spec(&big.to_string()).await.expect("send");
    expect_error(r, 413, "payload_too_large").await;

    // Nothing above was stored.
    let list = net.client.services().await.expect("services");
    let names: Vec<_> = list.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["echo"]);
    let jobs = net.client.jobs(None, None).await.expect("jobs");
    assert!(jobs.jobs.is_empty(), "{jobs:?}");
}

/// Connects to the provider endpoint, reads the Challenge, answers with a
/// Hello; returns the close code and reason the broker sent.
async fn handshake(url: &str, protocol: u32) -> (u16, String) {
    use brume_client::brume_api::wire::{Capabilities, FromProvider, Hello, ToProvider};
    use tokio_tungstenite::tungstenite::Message;

    let ws = format!(
        "{}/v1/provider/connect",
        url.replacen("http://", "ws://", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws)
        .await
        .expect("connect");
    let first = tokio::time::timeout(DEADLINE, socket.next())
        .await
        .expect("a challenge in time")
        .expect("a frame")
        .expect("a frame");
    let Message::Binary(b) = first else {
        panic!("expected a binary Challenge, got {first:?}")
    };
    let Ok((0, ToProvider::Challenge(c))) = ToProvider::decode(&b) else {
        panic!("expected a Challenge on channel 0")
    };
    assert!(c.broker_id.starts_with("0x"));
    assert_eq!(c.nonce.len(), 32);
    let hello = FromProvider::Hello(Hello {
        protocol,
        address: "0x1111111111111111111111111111111111111111".into(),
        // Not a signature of anything.
        signature: Bytes::from(vec![0x11; 65]),
        capabilities: Capabilities {
            slots: 1,
            memory_bytes: 1 << 30,
            fitness_mips: 1,
            region: "local".into(),
            allowed_services: None,
            cached: Vec::new(),
            org: None,
            attestation: None,
            containers: false,
            gpus: Default::default(),
            network: false,
            hours: None,
            location: None,
            policy: Default::default(),
        },
        price_ask: 0,
    });
    socket
        .send(Message::Binary(hello.encode(0)))
        .await
        .expect("send hello");
    loop {
        let msg = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .expect("a close in time");
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_handshakes_are_closed_with_their_codes() {
    let net = Net::start(0, 1).await;
    let ours = brume_client::brume_api::PROTOCOL_VERSION;
    let (code, reason) = handshake(&net.broker.url, ours).await;
    assert_eq!(code, 4001, "{reason}");
    assert!(reason.contains("signature"), "{reason}");
    let (code, reason) = handshake(&net.broker.url, 999).await;
    assert_eq!(code, 4000, "{reason}");
    assert!(reason.contains("999"), "{reason}");
    let status = net.client.status().await.expect("status");
    assert_eq!(status.providers_connected, 0);
}

// ---- deterministic jobs -------------------------------------------------------

/// The same deterministic spec gives the same bytes and the same fuel
/// wherever it runs (the jobs are submitted together, so both providers
/// usually take some); another seed changes the random draw.
#[tokio::test(flavor = "multi_thread")]
async fn deterministic_jobs_reproduce_and_follow_their_seed() {
    let net = Net::start(2, 1).await;
    net.publish("clock", ServiceKind::Command, art::CLOCK_RANDOM_P1_BYTES)
        .await;
    let spec = |seed| JobSpec {
        service: Some("clock".into()),
        profile: brume_client::brume_api::Profile::Deterministic,
        seed: Some(seed),
        ..JobSpec::default()
    };
    let mut jobs = Vec::new();
    for seed in [7, 7, 7, 8] {
        jobs.push(net.client.submit(&spec(seed)).await.expect("submit"));
    }
    let mut results = Vec::new();
    for job in jobs {
        let (_, result) = follow(&net.client, job.id).await;
        assert_eq!(result.state, JobState::Succeeded, "{result:?}");
        results.push(result);
    }
    let (a, b, c, other) = (&results[0], &results[1], &results[2], &results[3]);
    for r in [b, c] {
        assert_eq!(r.stdout, a.stdout);
        assert_eq!(r.usage.fuel, a.usage.fuel);
    }
    let providers: std::collections::HashSet<_> =
        results[..3].iter().map(|r| r.provider.clone()).collect();
    let random = |r: &brume_client::brume_api::rest::JobResult| {
        String::from_utf8_lossy(&r.stdout.0)
            .lines()
            .find(|l| l.starts_with("random="))
            .map(String::from)
    };
    assert!(random(a).is_some(), "{:?}", a.stdout);
    assert_ne!(
        random(a),
        random(other),
        "seed 8 draws differently from seed 7"
    );
    // Not asserted (scheduling may reuse one provider), only reported.
    eprintln!("deterministic runs used {} provider(s)", providers.len());
}
