//! Module policy and fault injection against the fake broker: blacklists
//! (local, and signed lists fetched from a loopback HTTP server),
//! required developer signatures, and the four fault modes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use brume_api::wire::{
    self, Assign, Done, FromProvider, ModuleSignature, Outcome, Refused, ToProvider,
};
use brume_identity::Identity;
use brume_provider::policy::sign_blacklist;
use brume_provider::{BlacklistSource, Fault, Provider, ProviderConfig, RunningProvider};
use brume_sandbox::Digest;
use bytes::Bytes;
use test_programs_artifacts as art;

use crate::fake_broker::{Conn, FakeBroker};
use crate::protocol::assign;

/// How long any polled condition may take.
const DEADLINE: Duration = Duration::from_secs(30);

async fn start(
    broker: &FakeBroker,
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut ProviderConfig),
) -> RunningProvider {
    let mut config = ProviderConfig {
        broker_url: broker.url.clone(),
        data_dir: dir.to_path_buf(),
        slots: 2,
        memory_bytes: 256 << 20,
        ..ProviderConfig::default()
    };
    tweak(&mut config);
    Provider::start(config).await.expect("provider starts")
}

/// The broker and one provider connected to it.
async fn one(
    tweak: impl FnOnce(&mut ProviderConfig),
) -> (FakeBroker, Conn, RunningProvider, tempfile::TempDir) {
    let mut broker = FakeBroker::start(&[art::ECHO_P1_BYTES, art::CPU_LOOP_P1_BYTES], 200).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = start(&broker, dir.path(), tweak).await;
    let conn = broker.next_conn().await;
    provider.connected().await;
    (broker, conn, provider, dir)
}

fn echo(stdin: &str) -> Box<Assign> {
    assign(art::ECHO_P1_BYTES, "echo", &["echo"], stdin)
}

fn cpu() -> Box<Assign> {
    assign(art::CPU_LOOP_P1_BYTES, "cpu", &["cpu", "1000"], "")
}

fn digest(bytes: &[u8]) -> Digest {
    Digest::of(bytes)
}

/// How an assignment on `ch` ended: its `Done` or its `Refused`. Skips
/// `Accepted` and `Cached`.
async fn outcome(conn: &mut Conn, ch: u32) -> Result<Box<Done>, Refused> {
    loop {
        match conn.recv().await {
            (0, FromProvider::Cached(_)) => {}
            (c, FromProvider::Accepted) if c == ch => {}
            (c, FromProvider::Done(d)) if c == ch => return Ok(d),
            (c, FromProvider::Refused(r)) if c == ch => return Err(r),
            other => panic!("unexpected {other:?} waiting for channel {ch}"),
        }
    }
}

fn stdout(done: &Done) -> &[u8] {
    match &done.outcome {
        Outcome::Exited { stdout, .. } => stdout,
        other => panic!("not an exit: {other:?}"),
    }
}

fn refusal(r: Result<Box<Done>, Refused>) -> Refused {
    r.expect_err("refused")
}

/// Polls `f` until it yields `Some`, or panics after [`DEADLINE`].
async fn eventually<T, Fut: Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> Fut,
) -> T {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn verifies(
    sent: &Assign,
    provider: &RunningProvider,
    outcome: &Outcome,
    signature: &[u8],
) -> bool {
    let receipt = brume_api::receipt::Receipt::new(sent, &provider.address(), outcome);
    brume_identity::verify(receipt.message().as_bytes(), signature, &provider.address()).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_output_is_signed_as_the_providers_own_claim() {
    let (_broker, mut conn, provider, _dir) = one(|c| c.fault = Some(Fault::WrongOutput)).await;
    let sent = echo("hi");
    conn.send(1, ToProvider::Assign(sent.clone()));
    let done = outcome(&mut conn, 1).await.expect("done");
    assert_ne!(stdout(&done), b"hi");
    assert_eq!(stdout(&done).len(), 2);
    assert!(
        verifies(&sent, &provider, &done.outcome, &done.signature),
        "signed over the wrong output"
    );
    let mut honest = done.outcome.clone();
    if let Outcome::Exited { stdout, .. } = &mut honest {
        *stdout = Bytes::from_static(b"hi");
    }
    assert!(
        !verifies(&sent, &provider, &honest, &done.signature),
        "not over the right one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_fuel_reports_one_more_than_an_honest_run() {
    let mut broker = FakeBroker::start(&[art::ECHO_P1_BYTES], 200).await;
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let honest = start(&broker, dirs[0].path(), |_| {}).await;
    let mut honest_conn = broker.next_conn().await;
    let cheat = start(&broker, dirs[1].path(), |c| {
        c.fault = Some(Fault::WrongFuel)
    })
    .await;
    let mut cheat_conn = broker.next_conn().await;
    assert_eq!(cheat_conn.hello.address, cheat.address());

    let sent = echo("fuel");
    honest_conn.send(1, ToProvider::Assign(sent.clone()));
    cheat_conn.send(1, ToProvider::Assign(sent.clone()));
    let right = outcome(&mut honest_conn, 1).await.expect("done");
    let wrong = outcome(&mut cheat_conn, 1).await.expect("done");
    assert_eq!(stdout(&wrong), b"fuel", "the output is right");
    assert_eq!(wrong.outcome.usage().fuel, right.outcome.usage().fuel + 1);
    assert!(verifies(&sent, &cheat, &wrong.outcome, &wrong.signature));
    assert!(verifies(&sent, &honest, &right.outcome, &right.signature));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_accepts_and_holds_the_slot_until_cancelled() {
    let (_broker, mut conn, provider, _dir) = one(|c| c.fault = Some(Fault::Stall)).await;
    conn.send(1, ToProvider::Assign(echo("hi")));
    assert!(matches!(conn.recv().await, (1, FromProvider::Accepted)));
    let after = conn.quiet_for(Duration::from_millis(300)).await;
    assert!(after.is_empty(), "frames after Accepted: {after:?}");
    assert_eq!(provider.status().in_flight, 1);
    conn.send(1, ToProvider::Cancel);
    eventually("the stalled slot is released", || async {
        (provider.status().in_flight == 0).then_some(())
    })
    .await;
    assert!(conn.quiet_for(Duration::from_millis(100)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_accepts_then_forgets() {
    let (_broker, mut conn, provider, _dir) = one(|c| c.fault = Some(Fault::Drop)).await;
    conn.send(1, ToProvider::Assign(echo("hi")));
    assert!(matches!(conn.recv().await, (1, FromProvider::Accepted)));
    eventually("the dropped work's slot is released", || async {
        (provider.status().in_flight == 0).then_some(())
    })
    .await;
    let after = conn.quiet_for(Duration::from_millis(300)).await;
    assert!(after.is_empty(), "frames after Accepted: {after:?}");
    let st = provider.status();
    assert_eq!((st.work_done, st.work_failed), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_blacklist_refuses_before_fetching() {
    let (_broker, mut conn, _provider, _dir) =
        one(|c| c.blacklist = vec![digest(art::ECHO_P1_BYTES)]).await;
    conn.send(1, ToProvider::Assign(echo("hi")));
    // Refused before any fetch: no Cached, no Accepted, first.
    match conn.recv().await {
        (1, FromProvider::Refused(r)) => {
            assert_eq!(r.reason, "blacklisted");
            assert!(r.message.contains("local blacklist"), "{}", r.message);
        }
        other => panic!("unexpected {other:?}"),
    }
    conn.send(2, ToProvider::Assign(cpu()));
    outcome(&mut conn, 2).await.expect("another module runs");
}

/// A loopback HTTP server with one list at `/list.json` (503 while `None`)
/// that counts its requests.
struct ListServer {
    body: parking_lot::Mutex<Option<String>>,
    hits: AtomicU64,
}

async fn list_server() -> (Arc<ListServer>, String) {
    let st = Arc::new(ListServer {
        body: parking_lot::Mutex::new(None),
        hits: AtomicU64::new(0),
    });
    async fn list(State(st): State<Arc<ListServer>>) -> Result<String, StatusCode> {
        st.hits.fetch_add(1, Ordering::SeqCst);
        st.body
            .lock()
            .clone()
            .ok_or(StatusCode::SERVICE_UNAVAILABLE)
    }
    let app = axum::Router::new()
        .route("/list.json", axum::routing::get(list))
        .with_state(st.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (st, format!("http://{addr}/list.json"))
}

impl ListServer {
    fn serve(&self, body: Option<String>) {
        *self.body.lock() = body;
    }

    /// Resolves once the provider has fetched (and handled) the list at
    /// least once after this call: two more requests, since a refresh
    /// starts only after the previous one is done.
    async fn fetched_again(&self) {
        let from = self.hits.load(Ordering::SeqCst);
        eventually("the provider fetches the list again", || async {
            (self.hits.load(Ordering::SeqCst) >= from + 2).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribed_lists_are_verified_refreshed_and_kept() {
    let signer = Identity::random();
    let (server, url) = list_server().await;
    let (echo_d, cpu_d) = (digest(art::ECHO_P1_BYTES), digest(art::CPU_LOOP_P1_BYTES));
    server.serve(Some(sign_blacklist(&signer, 1, &[echo_d]).expect("sign")));
    let source: BlacklistSource = format!("{url}@{}", signer.address())
        .parse()
        .expect("source");
    let tweak = |c: &mut ProviderConfig| {
        c.blacklist_sources = vec![source.clone()];
        c.blacklist_refresh = Duration::from_millis(20);
    };
    let (mut broker, mut conn, provider, dir) = one(tweak).await;

    // Fetched before the provider connected: in force for the first work.
    conn.send(1, ToProvider::Assign(echo("hi")));
    let r = refusal(outcome(&mut conn, 1).await);
    assert_eq!(r.reason, "blacklisted");
    assert!(r.message.contains(&url), "{}", r.message);

    // A list signed by someone else is not applied; the last good one stays.
    let mallory = Identity::random();
    server.serve(Some(sign_blacklist(&mallory, 2, &[cpu_d]).expect("sign")));
    server.fetched_again().await;
    // So is a list that is not JSON, and a server that fails.
    server.serve(Some("not a list".into()));
    server.fetched_again().await;
    server.serve(None);
    server.fetched_again().await;
    conn.send(2, ToProvider::Assign(cpu()));
    outcome(&mut conn, 2).await.expect("cpu still runs");
    conn.send(3, ToProvider::Assign(echo("hi")));
    assert_eq!(refusal(outcome(&mut conn, 3).await).reason, "blacklisted");

    // A newer good list replaces it.
    server.serve(Some(sign_blacklist(&signer, 3, &[cpu_d]).expect("sign")));
    let mut ch = 4;
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        ch += 1;
        conn.send(ch, ToProvider::Assign(cpu()));
        match outcome(&mut conn, ch).await {
            Err(r) => break assert_eq!(r.reason, "blacklisted"),
            Ok(_) => assert!(
                tokio::time::Instant::now() < end,
                "the new list is not in force"
            ),
        }
    }
    ch += 1;
    conn.send(ch, ToProvider::Assign(echo("back")));
    assert_eq!(
        stdout(&outcome(&mut conn, ch).await.expect("echo runs again")),
        b"back"
    );

    // An older list (a replay of the first) does not roll it back.
    server.serve(Some(sign_blacklist(&signer, 1, &[echo_d]).expect("sign")));
    server.fetched_again().await;
    ch += 1;
    conn.send(ch, ToProvider::Assign(echo("still")));
    outcome(&mut conn, ch).await.expect("echo still runs");

    // A restart with the list's server down keeps the last good copy.
    server.serve(None);
    provider.shutdown();
    provider.wait().await.expect("stops");
    let provider = start(&broker, dir.path(), tweak).await;
    let mut conn = broker.next_conn().await;
    provider.connected().await;
    conn.send(1, ToProvider::Assign(cpu()));
    assert_eq!(refusal(outcome(&mut conn, 1).await).reason, "blacklisted");
}

fn signed(mut a: Box<Assign>, by: &Identity, claimed: &Identity, over: &[u8]) -> Box<Assign> {
    let message = wire::module_message(&digest(over).to_string());
    let signature = by.sign_message(message.as_bytes()).expect("sign");
    a.module_signature = Some(ModuleSignature {
        developer: claimed.address().to_string(),
        signature: Bytes::copy_from_slice(&signature),
    });
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_signatures_refuse_unsigned_and_untrusted_modules() {
    let (dev, other) = (Identity::random(), Identity::random());
    let (_broker, mut conn, _provider, _dir) =
        one(|c| c.require_signed_by = vec![dev.address()]).await;
    let cases = [
        (echo("x"), "unsigned", "no signature"),
        (
            signed(echo("x"), &dev, &dev, art::CPU_LOOP_P1_BYTES),
            "unsigned",
            "does not verify",
        ),
        (
            signed(echo("x"), &other, &dev, art::ECHO_P1_BYTES),
            "unsigned",
            "does not verify",
        ),
        (
            signed(echo("x"), &other, &other, art::ECHO_P1_BYTES),
            "untrusted_developer",
            "not by a developer this provider trusts",
        ),
    ];
    for (ch, (a, reason, says)) in (1..).zip(cases) {
        conn.send(ch, ToProvider::Assign(a));
        let r = refusal(outcome(&mut conn, ch).await);
        assert_eq!((r.reason.as_str(), ch), (reason, ch), "{}", r.message);
        assert!(r.message.contains(says), "{}", r.message);
    }
    conn.send(
        9,
        ToProvider::Assign(signed(echo("ok"), &dev, &dev, art::ECHO_P1_BYTES)),
    );
    assert_eq!(stdout(&outcome(&mut conn, 9).await.expect("runs")), b"ok");
}
