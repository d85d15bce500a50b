use std::time::Duration;

use brume_api::rest::{EventKind, JobSpec};
use brume_api::{ErrorCode, ServiceKind, WorkId};
use brume_client::{Client, ClientError};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::util::{self, KEY};

fn client(url: &str, key: Option<&str>) -> Client {
    Client::new(url, key.map(String::from)).expect("client")
}

#[tokio::test]
async fn publish_sends_module_name_kind_and_key() {
    let d = util::start().await;
    let c = client(&d.url, Some(KEY));
    let info = c
        .publish(
            "echo",
            ServiceKind::Http,
            Bytes::from_static(b"\0asm\x01\0\0\0"),
        )
        .await
        .expect("publish");
    assert_eq!(
        (info.name.as_str(), info.kind, info.size_bytes),
        ("echo", ServiceKind::Http, 8)
    );

    let err = c
        .publish("echo", ServiceKind::Command, Bytes::from_static(b"nope"))
        .await
        .expect_err("bad module");
    assert_eq!(err.code(), Some(ErrorCode::InvalidModule));
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.to_string(), "invalid_module: not a wasm binary");
}

#[tokio::test]
async fn auth_errors_are_api_errors() {
    let d = util::start().await;
    let none = client(&d.url, None).submit(&JobSpec::default()).await;
    assert_eq!(
        none.err().and_then(|e| e.code()),
        Some(ErrorCode::Unauthorized)
    );
    let wrong = client(&d.url, Some("nope"))
        .submit(&JobSpec::default())
        .await;
    assert_eq!(
        wrong.err().and_then(|e| e.code()),
        Some(ErrorCode::Forbidden)
    );
    let unknown = client(&d.url, Some(KEY)).service("ghost").await;
    assert_eq!(
        unknown.err().and_then(|e| e.code()),
        Some(ErrorCode::UnknownService)
    );
}

#[tokio::test]
async fn invoke_passes_args_and_stdin_and_reads_headers() {
    let d = util::start().await;
    let c = client(&d.url, Some(KEY));
    let args = vec!["a b".to_string(), "&x=1".to_string()];
    let out = c
        .invoke("echo", &args, Bytes::from_static(b"stdin!"))
        .await
        .expect("invoke");
    assert_eq!(out.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&out.body),
        "echo arg=a+b&arg=%26x%3D1 stdin!"
    );
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.fuel, Some(777));
    assert_eq!(out.attempts, Some(1));
    assert_eq!(out.provider.as_deref(), Some("0xprov"));
    assert!(out.work_id.is_some());

    let busy = c.invoke("busy", &[], Bytes::new()).await.expect_err("busy");
    assert_eq!(busy.code(), Some(ErrorCode::Overloaded));
    assert_eq!(busy.retry_after(), Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn call_http_returns_guest_responses_and_broker_errors() {
    let d = util::start().await;
    let c = client(&d.url, Some(KEY));
    let resp = c
        .call_http(
            http::Method::POST,
            "hello",
            "/a/b?x=1",
            http::HeaderMap::new(),
            Bytes::new(),
        )
        .await
        .expect("guest response");
    assert_eq!(resp.response.status(), 404);
    assert_eq!(
        resp.response.headers().get("x-guest").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
    assert_eq!(resp.response.body(), "guest 404 for /a/b?x=1");
    assert!(resp.meta.work_id.is_some());

    for root in ["/", "", "/?q=1"] {
        let resp = c
            .call_http(
                http::Method::GET,
                "hello",
                root,
                http::HeaderMap::new(),
                Bytes::new(),
            )
            .await
            .expect("root");
        let want = if root.contains('?') {
            "hello root ?q=1"
        } else {
            "hello root ?"
        };
        assert_eq!(resp.response.body(), want, "{root:?}");
    }

    let missing = c
        .call_http(
            http::Method::GET,
            "missing",
            "/x",
            http::HeaderMap::new(),
            Bytes::new(),
        )
        .await;
    assert_eq!(
        missing.err().and_then(|e| e.code()),
        Some(ErrorCode::UnknownService)
    );
    let faulty = c
        .call_http(
            http::Method::GET,
            "faulty",
            "/x",
            http::HeaderMap::new(),
            Bytes::new(),
        )
        .await;
    assert_eq!(faulty.err().and_then(|e| e.code()), Some(ErrorCode::Trap));
}

#[tokio::test]
async fn events_stream_parses_and_stops_at_the_final_event() {
    let d = util::start().await;
    let c = client(&d.url, Some(KEY));
    let events = c.events(WorkId::new()).await.expect("events");
    // The double keeps the connection open after the final event: this
    // finishing at all shows the stream stops by itself.
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(10), events.collect::<Vec<_>>())
        .await
        .expect("the stream ends after the final event");
    let kinds: Vec<_> = events
        .iter()
        .map(|e| e.as_ref().map(|e| e.kind).map_err(|e| e.to_string()))
        .collect();
    assert_eq!(
        kinds,
        [
            Ok(EventKind::Queued),
            Ok(EventKind::Running),
            Ok(EventKind::Progress),
            Ok(EventKind::Succeeded)
        ]
    );
    let progress = events[2].as_ref().expect("progress");
    assert_eq!(progress.stderr.as_deref(), Some("line one\nline two\n"));
    assert_eq!(progress.fuel, Some(1000));
}

#[tokio::test]
async fn wait_resumes_a_broken_stream_and_retries_an_early_result() {
    let d = util::start().await;
    let c = client(&d.url, Some(KEY));
    // The double breaks off this id's first stream after two events.
    let id: WorkId = "01900000-0000-7000-8000-000000000001".parse().expect("id");
    let mut seen = Vec::new();
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        c.wait_with(id, |e| seen.push((e.seq, e.kind))),
    )
    .await
    .expect("wait finishes")
    .expect("result");
    assert_eq!(
        seen,
        [
            (0, EventKind::Queued),
            (1, EventKind::Running),
            (2, EventKind::Progress),
            (3, EventKind::Succeeded)
        ],
        "no event twice, none lost"
    );
    assert_eq!(result.id, id);
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(&result.stdout.0[..], b"out");
    assert_eq!(&result.stderr.0[..], &[0xff, 0xfe]);
    assert_eq!(
        d.shared
            .event_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    // The first result call answered 409, the wait retried.
    assert_eq!(
        d.shared
            .result_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}

#[tokio::test]
async fn cancel_of_a_final_job_is_a_conflict() {
    let d = util::start().await;
    let err = client(&d.url, Some(KEY))
        .cancel(WorkId::new())
        .await
        .expect_err("conflict");
    assert_eq!(err.code(), Some(ErrorCode::Conflict));
    assert_eq!(err.status(), Some(409));
}

#[tokio::test]
async fn an_unreachable_broker_is_a_transport_error_naming_it() {
    // A port held by a bound socket that never listens: no other process
    // can take it meanwhile, and a connection to it is refused.
    let held = tokio::net::TcpSocket::new_v4().expect("a socket");
    held.bind("127.0.0.1:0".parse().expect("an address"))
        .expect("bind");
    let port = held.local_addr().expect("addr").port();
    let url = format!("http://127.0.0.1:{port}");
    let err = client(&url, None).status().await.expect_err("refused");
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot reach broker at {url}: connection refused")
    );
    drop(held);
}

#[tokio::test]
async fn job_submission_round_trips_the_spec() {
    let d = util::start().await;
    let mut spec = JobSpec {
        service: Some("echo".into()),
        ..JobSpec::default()
    };
    spec.labels.insert("team".into(), "a".into());
    let info = client(&d.url, Some(KEY))
        .submit(&spec)
        .await
        .expect("submit");
    assert_eq!(info.labels.get("team").map(String::as_str), Some("a"));
}
