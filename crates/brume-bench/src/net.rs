//! `brume bench invoke` and `brume bench job`: the broker hop, measured on
//! loopback against a plain HTTP echo server in the same run.
//!
//! Both start a real broker and one real provider in this process (the
//! same libraries `brume broker` and `brume provide` run), each on its own
//! tokio runtime as if it were its own process, publish the `echo` test
//! program, and drive them over HTTP/1.1 keep-alive connections with a
//! minimal hyper client, so client overhead is small and identical for the
//! product and the baseline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use brume_api::ServiceKind;
use brume_api::rest::{EventKind, JobSpec, Output};
use brume_ledger::store::LedgerStore as _;
use brume_localnet::{LocalNet, LocalNetBuilder};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::{Samples, round};

/// Concurrent closed-loop clients for the throughput phase: enough to keep
/// both cores busy with broker, provider and client work.
const CONCURRENCY: usize = 32;

/// The benchmarks' network: a real broker and real providers in this
/// process, each on a tokio runtime of its own standing in for its process
/// (one worker each: on 2 cores, broker + provider + client already fill
/// them), the broker's overload limits out of the way, and an API key.
pub(crate) fn bench_net() -> LocalNetBuilder {
    LocalNet::builder()
        .name("bench")
        .runtime_per_daemon(1)
        .broker(|c| {
            c.overload_queue_depth = 100_000;
            c.overload_queue_age = Duration::from_secs(30);
        })
        .provider_config(|_, c| c.memory_bytes = 1 << 40)
}

/// One provider with `slots` slots, and the `echo` test program and the
/// `hello` wasi:http component published.
async fn loopback(slots: u32) -> anyhow::Result<LocalNet> {
    let net = bench_net()
        .providers(1)
        .slots(slots)
        .publish(
            "echo",
            ServiceKind::Command,
            Bytes::from_static(test_programs_artifacts::ECHO_P1_BYTES),
        )
        .publish(
            "hello",
            ServiceKind::Http,
            Bytes::from_static(test_programs_artifacts::HTTP_HELLO_BYTES),
        )
        .start()
        .await?;
    Ok(net)
}

/// One HTTP/1.1 keep-alive connection and the request it repeats.
pub(crate) struct Conn {
    send: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    path: String,
    auth: Option<String>,
    /// The answer must start with this (the echo's answer is the body).
    expect: Option<&'static [u8]>,
}

impl Conn {
    pub(crate) async fn open(
        addr: SocketAddr,
        path: &str,
        auth: Option<&str>,
    ) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            send,
            addr,
            path: path.to_string(),
            auth: auth.map(|k| format!("Bearer {k}")),
            expect: None,
        })
    }

    /// Calls the `hello` component: the answer starts with its greeting.
    pub(crate) fn hello(mut self) -> Conn {
        self.expect = Some(b"hello from brume: ");
        self
    }

    /// Sends `body`, checks the echo; the answer's headers.
    pub(crate) async fn call(&mut self, body: &Bytes) -> anyhow::Result<http::HeaderMap> {
        let mut req = http::Request::post(&self.path)
            .header(http::header::HOST, self.addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/octet-stream");
        if let Some(a) = &self.auth {
            req = req.header(http::header::AUTHORIZATION, a);
        }
        let req = req.body(Full::new(body.clone()))?;
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status();
        let (parts, body_in) = resp.into_parts();
        let got = body_in.collect().await?.to_bytes();
        let ok = match self.expect {
            None => got == *body,
            Some(prefix) => got.starts_with(prefix),
        };
        if status != http::StatusCode::OK || !ok {
            bail!(
                "{} answered {status}: {}",
                self.path,
                String::from_utf8_lossy(&got)
            );
        }
        Ok(parts.headers)
    }
}

/// A plain axum echo server: the baseline for one loopback HTTP hop.
async fn echo_server() -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/echo",
        axum::routing::post(|body: Bytes| async move { body }),
    );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    // Same socket options as the broker, so the baseline is like for like.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// How [`interleaved`] samples.
struct Rounds {
    warm_up: usize,
    /// Calls of one side before switching to the other.
    round: usize,
    budget: Duration,
    /// Samples of each side, at least, whatever the budget.
    at_least: u64,
}

/// Latency, one request at a time: `warm_up` calls of each side, then the
/// product and the baseline in turn, `round` calls each, so that both see
/// the same machine. Their samples.
async fn interleaved(
    mut product: Conn,
    mut base: Conn,
    r: Rounds,
) -> anyhow::Result<(Samples, Samples)> {
    let body = Bytes::from_static(b"ping");
    for _ in 0..r.warm_up {
        product.call(&body).await?;
        base.call(&body).await?;
    }
    let (mut lat, mut lat_base) = (Samples::new(), Samples::new());
    let start = Instant::now();
    while start.elapsed() < r.budget || lat.len() < r.at_least {
        for (conn, samples) in [(&mut product, &mut lat), (&mut base, &mut lat_base)] {
            for _ in 0..r.round {
                let t = Instant::now();
                conn.call(&body).await?;
                samples.record(t.elapsed());
            }
        }
    }
    Ok((lat, lat_base))
}

/// Runs the client `f` makes on a thread of its own, on a single-threaded
/// runtime, as a `wrk`-like client runs: its connections' I/O and the
/// caller share that thread, so a call crosses no thread inside the client
/// (on a multi-threaded runtime each answer woke the waiting caller on
/// another thread: tens of µs on this VM, counted in every latency).
async fn on_client_thread<T, F, Fut>(f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || {
            let out = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(f()));
            let _ = tx.send(out);
        })?;
    rx.await?
}

async fn closed_loop(conns: Vec<Conn>, budget: Duration) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + budget;
    let mut tasks = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let body = Bytes::from(format!("worker {i}"));
            while Instant::now() < deadline {
                c.call(&body).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

pub async fn invoke(
    duration: Duration,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<serde_json::Value> {
    let net = loopback(CONCURRENCY as u32 * 2).await?;
    let baseline = echo_server().await?;
    let path = "/v1/functions/echo/invoke";
    let (broker, key) = (net.broker().addr(), net.api_key().to_string());
    let (lat, lat_base) = on_client_thread(move || async move {
        let product = Conn::open(broker, path, Some(&key)).await?;
        let base = Conn::open(baseline, "/echo", None).await?;
        // 200 warm-up calls compile and cache the module on the provider.
        let rounds = Rounds {
            warm_up: 200,
            round: 200,
            budget: duration.mul_f64(0.35),
            at_least: 1_000,
        };
        interleaved(product, base, rounds).await
    })
    .await?;
    out(&format!(
        "invoke via broker+provider: p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  ({} calls)",
        lat.us(0.5),
        lat.us(0.99),
        lat.us(0.999),
        lat.len()
    ));
    out(&format!(
        "baseline loopback HTTP echo: p50 {:.1} µs  p99 {:.1} µs  ({} calls)",
        lat_base.us(0.5),
        lat_base.us(0.99),
        lat_base.len()
    ));

    let http = http_phase(&net, duration.mul_f64(0.2), out).await?;

    // Throughput: closed loop at CONCURRENCY connections, and the ledger
    // rows those calls wrote, durable, over the same time.
    let mut conns = Vec::new();
    for _ in 0..CONCURRENCY {
        conns.push(Conn::open(net.broker().addr(), path, Some(net.api_key())).await?);
    }
    let rows_before = ledger_rows(&net).await?;
    let phase = Instant::now();
    let throughput = closed_loop(conns, duration.mul_f64(0.25)).await?;
    let rows_during = ledger_rows(&net).await? - rows_before;
    let ledger_rate = rows_during as f64 / phase.elapsed().as_secs_f64();
    net.broker().ledger_settled().await;
    let backlog = ledger_rows(&net).await? - rows_before - rows_during;
    out(&format!(
        "ledger: {ledger_rate:.0} rows/s durable during the throughput phase; {backlog} rows still queued at its end"
    ));
    let mut conns = Vec::new();
    for _ in 0..CONCURRENCY {
        conns.push(Conn::open(baseline, "/echo", None).await?);
    }
    let base_throughput = closed_loop(conns, duration.mul_f64(0.1)).await?;
    out(&format!(
        "throughput at {CONCURRENCY} connections: {throughput:.0}/s via broker+provider, {base_throughput:.0}/s baseline"
    ));
    let ratio = lat.us(0.5) / lat_base.us(0.5);
    out(&format!("ratio_p50 {ratio:.2}"));
    let _ = net.stop_now().await;
    Ok(json!({
        "bench": "invoke",
        "p50_us": round(lat.us(0.5), 2),
        "p99_us": round(lat.us(0.99), 2),
        "p999_us": round(lat.us(0.999), 2),
        "throughput_per_s": round(throughput, 0),
        "baseline_p50_us": round(lat_base.us(0.5), 2),
        "baseline_p99_us": round(lat_base.us(0.99), 2),
        "baseline_throughput_per_s": round(base_throughput, 0),
        "ratio_p50": round(ratio, 3),
        "concurrency": CONCURRENCY,
        "calls": lat.len(),
        "http_p50_us": round(http.0.us(0.5), 2),
        "http_p99_us": round(http.0.us(0.99), 2),
        "single_hop_p50_us": round(http.1.us(0.5), 2),
        "single_hop_p99_us": round(http.1.us(0.99), 2),
        "ratio_vs_single_hop": round(http.0.us(0.5) / http.1.us(0.5), 3),
        "ledger_rows_per_s": round(ledger_rate, 0),
        "ledger_backlog_rows": backlog,
    }))
}

/// How many rows the broker's ledger holds (durable ones).
async fn ledger_rows(net: &LocalNet) -> anyhow::Result<u64> {
    let all = net
        .broker()
        .ledger()
        .aggregate(brume_ledger::store::RowFilter::default())
        .await?;
    Ok(all.rows)
}

/// The `wasi:http` phase: `/fn/hello/…` through broker and provider,
/// against the same component served in one hop (`single_hop`), one
/// request at a time, interleaved. Returns both latencies.
async fn http_phase(
    net: &LocalNet,
    budget: Duration,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<(Samples, Samples)> {
    let single = crate::single_hop::serve(test_programs_artifacts::HTTP_HELLO_BYTES).await?;
    let (broker, key) = (net.broker().addr(), net.api_key().to_string());
    let (lat, lat_base) = on_client_thread(move || async move {
        let product = Conn::open(broker, "/fn/hello/bench", Some(&key))
            .await?
            .hello();
        let base = Conn::open(single, "/bench", None).await?.hello();
        let rounds = Rounds {
            warm_up: 100,
            round: 100,
            budget,
            at_least: 500,
        };
        interleaved(product, base, rounds).await
    })
    .await?;
    out(&format!(
        "wasi:http via broker+provider: p50 {:.1} µs  p99 {:.1} µs; single hop (wasmtime-wasi-http on hyper): p50 {:.1} µs  p99 {:.1} µs; ratio {:.2}",
        lat.us(0.5),
        lat.us(0.99),
        lat_base.us(0.5),
        lat_base.us(0.99),
        lat.us(0.5) / lat_base.us(0.5)
    ));
    Ok((lat, lat_base))
}

/// `brume bench job`: trivial jobs one after another. With `--store
/// postgres` (or a URL) the broker keeps its store, ledger and journal in
/// PostgreSQL, and the same jobs on SQLite, measured in the same run, are
/// the baseline.
pub async fn job(
    duration: Duration,
    store: crate::ledger::Store,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<serde_json::Value> {
    let url = match store {
        crate::ledger::Store::Sqlite => None,
        crate::ledger::Store::Postgres(url) => Some(url),
    };
    let Some(url) = url else {
        let net = loopback(4).await?;
        let (to_running, to_done) = trivial_jobs(&net, duration.mul_f64(0.9)).await?;
        let _ = net.stop_now().await;
        out(&job_line("", &to_running, &to_done));
        let mut figures = job_figures("", &to_running, &to_done);
        figures["bench"] = json!("job");
        return Ok(figures);
    };
    let server = crate::ledger_pg::Server::start(url).await?;
    let measured = async {
        let on_pg = {
            let db = server.url.clone();
            bench_net()
                .broker(move |c| c.ledger.store = db)
                .providers(1)
                .slots(4)
                .publish(
                    "echo",
                    ServiceKind::Command,
                    Bytes::from_static(test_programs_artifacts::ECHO_P1_BYTES),
                )
                .start()
                .await?
        };
        let pg = trivial_jobs(&on_pg, duration.mul_f64(0.45)).await;
        let _ = on_pg.stop_now().await;
        let (pg_running, pg_done) = pg?;
        out(&job_line(" on PostgreSQL", &pg_running, &pg_done));
        let net = loopback(4).await?;
        let lite = trivial_jobs(&net, duration.mul_f64(0.45)).await;
        let _ = net.stop_now().await;
        let (running, done) = lite?;
        out(&job_line(" on SQLite (baseline)", &running, &done));
        let ratio = pg_done.ms(0.5) / done.ms(0.5);
        out(&format!("ratio_submit_to_done_p50 {ratio:.2}"));
        let mut figures = job_figures("", &pg_running, &pg_done);
        let base = job_figures("baseline_", &running, &done);
        if let (Some(f), serde_json::Value::Object(b)) = (figures.as_object_mut(), base) {
            f.extend(b);
        }
        figures["bench"] = json!("job");
        figures["store"] = json!("postgres");
        figures["ratio_submit_to_done_p50"] = json!(round(ratio, 3));
        Ok::<_, anyhow::Error>(figures)
    }
    .await;
    server.drop_database().await?;
    measured
}

/// Trivial `echo` jobs one after another, each followed on its event
/// stream, for `budget` (at most 5 000, at least 20): submit→running and
/// submit→done.
async fn trivial_jobs(net: &LocalNet, budget: Duration) -> anyhow::Result<(Samples, Samples)> {
    let client = net.client();
    let spec = JobSpec {
        service: Some("echo".into()),
        stdin: Some(Output(Bytes::from_static(b"job"))),
        ..JobSpec::default()
    };
    let mut to_running = Samples::new();
    let mut to_done = Samples::new();
    let start = Instant::now();
    let mut n = 0u64;
    while (start.elapsed() < budget && n < 5_000) || n < 20 {
        let t = Instant::now();
        let info = client.submit(&spec).await?;
        let mut events = client.events(info.id).await?;
        let mut running = None;
        let mut done = None;
        while let Some(ev) = events.next().await {
            let ev = ev?;
            match ev.kind {
                EventKind::Running => running = Some(t.elapsed()),
                EventKind::Succeeded => {
                    done = Some(t.elapsed());
                    break;
                }
                k if k.is_final() => bail!("bench job ended {}: {:?}", k.as_str(), ev.error),
                _ => {}
            }
        }
        let (Some(r), Some(d)) = (running, done) else {
            bail!("the event stream of job {} ended early", info.id);
        };
        to_running.record(r);
        to_done.record(d);
        n += 1;
    }
    Ok((to_running, to_done))
}

fn job_line(on: &str, to_running: &Samples, to_done: &Samples) -> String {
    format!(
        "trivial job{on}: submit→running p50 {:.2} ms p99 {:.2} ms; submit→done p50 {:.2} ms p99 {:.2} ms ({} jobs)",
        to_running.ms(0.5),
        to_running.ms(0.99),
        to_done.ms(0.5),
        to_done.ms(0.99),
        to_done.len()
    )
}

/// The job figures, each name prefixed with `prefix`.
fn job_figures(prefix: &str, to_running: &Samples, to_done: &Samples) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (name, v) in [
        ("submit_to_running_p50_ms", round(to_running.ms(0.5), 3)),
        ("submit_to_running_p99_ms", round(to_running.ms(0.99), 3)),
        ("submit_to_done_p50_ms", round(to_done.ms(0.5), 3)),
        ("submit_to_done_p99_ms", round(to_done.ms(0.99), 3)),
    ] {
        m.insert(format!("{prefix}{name}"), json!(v));
    }
    m.insert(format!("{prefix}jobs"), json!(to_done.len()));
    serde_json::Value::Object(m)
}
