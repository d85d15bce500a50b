//! `brume bench lease`: a lease's drip against the exact integral of its
//! running time, and how long a lease takes to halt at empty and to resume
//! on a top-up, against a same-run baseline: a trivial job's submit → running.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use brume_api::ServiceKind;
use brume_api::lease::{LeaseInfo, LeaseSpec, LeaseState};
use brume_api::rest::{JobSpec, Output};
use brume_client::Client;
use bytes::Bytes;
use serde_json::json;

use crate::{Samples, round};

/// How often the bench polls what it waits for.
const POLL: Duration = Duration::from_millis(1);
/// Halt and resume cycles measured.
const CYCLES: usize = 5;

async fn until(
    client: &Client,
    id: &str,
    deadline: Instant,
    ok: impl Fn(&LeaseInfo) -> bool,
) -> anyhow::Result<LeaseInfo> {
    loop {
        let l = client.lease(id).await?;
        if ok(&l) {
            return Ok(l);
        }
        if Instant::now() > deadline {
            bail!("lease {id} stuck {} ({l:?})", l.state.as_str());
        }
        tokio::time::sleep(POLL).await;
    }
}

fn spec(deposit: u128) -> LeaseSpec {
    LeaseSpec {
        service: "hello".into(),
        deposit: deposit.to_string(),
        private: false,
    }
}

pub async fn run(
    duration: Duration,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<serde_json::Value> {
    let net = crate::net::bench_net()
        .providers(1)
        .slots(4)
        .broker(|c| c.leases.interval_ms = 1_000)
        .publish(
            "hello",
            ServiceKind::Http,
            Bytes::from_static(test_programs_artifacts::HTTP_HELLO_BYTES),
        )
        .publish(
            "echo",
            ServiceKind::Command,
            Bytes::from_static(test_programs_artifacts::ECHO_P1_BYTES),
        )
        .start()
        .await?;
    let client = net.client().clone();
    let provider = &net.providers()[0];
    let wait = Instant::now() + duration + Duration::from_secs(60);

    // The drip: a lease runs for the budget, then stops; its rows, read
    // back from the ledger, against ⌊rate · running time⌋.
    let lease = client.create_lease(&spec(u128::MAX / 4)).await?;
    let rate: u128 = lease.rate_per_s.parse()?;
    until(&client, &lease.id, wait, |l| l.state == LeaseState::Running).await?;
    out(&format!(
        "drip: a lease at {rate} base units/s runs for {duration:?}"
    ));
    tokio::time::sleep(duration).await;
    let stopped = client.stop_lease(&lease.id).await?;
    let mut rows_sum = 0u128;
    for n in 1..=stopped.rows {
        let row = client
            .ledger_row(&format!("{}-{n}", stopped.id))
            .await
            .with_context(|| format!("row {n} of {}", stopped.id))?;
        let amount = &row["token_amount"];
        rows_sum += amount
            .as_str()
            .and_then(|s| s.parse::<u128>().ok())
            .or_else(|| amount.as_u64().map(u128::from))
            .with_context(|| format!("row {n} of {}: no token_amount in {row}", stopped.id))?;
    }
    let exact = rate * u128::from(stopped.running_ms) / 1000;
    let error = i128::try_from(rows_sum)? - i128::try_from(exact)?;
    out(&format!(
        "drip: {} rows over {} ms of running time sum to {rows_sum}; ⌊rate · t⌋ = {exact}; error {error} base units",
        stopped.rows, stopped.running_ms
    ));

    // Halts and resumes: a lease with a quarter second of escrow, topped
    // up by as much each time it halts.
    let quarter = (rate / 4).max(1);
    let mut halt = Samples::new();
    let mut resume = Samples::new();
    let lease = client.create_lease(&spec(quarter)).await?;
    let mut started = until(&client, &lease.id, wait, |l| l.state == LeaseState::Running).await?;
    let mut running_at = Instant::now();
    for _ in 0..CYCLES {
        // Empty when its running time reaches what its deposit buys.
        let paid_ms = u64::try_from(started.deposit.parse::<u128>()? * 1000 / rate)?;
        let empty_at =
            running_at + Duration::from_millis(paid_ms.saturating_sub(started.running_ms));
        until(&client, &lease.id, wait, |l| l.state == LeaseState::Halted).await?;
        while provider.status().in_flight > 0 {
            if Instant::now() > wait {
                bail!("the halted lease's slot was never freed");
            }
            tokio::time::sleep(POLL).await;
        }
        halt.record(Instant::now().saturating_duration_since(empty_at));
        let t = Instant::now();
        client.top_up_lease(&lease.id, quarter).await?;
        started = until(&client, &lease.id, wait, |l| l.state == LeaseState::Running).await?;
        running_at = Instant::now();
        resume.record(t.elapsed());
    }
    client.stop_lease(&lease.id).await?;
    out(&format!(
        "halt (empty → slot freed on the provider): p50 {:.2} ms p99 {:.2} ms; resume (top-up → running): p50 {:.2} ms p99 {:.2} ms ({CYCLES} cycles)",
        halt.ms(0.5),
        halt.ms(0.99),
        resume.ms(0.5),
        resume.ms(0.99)
    ));

    // Baseline: a trivial job's submit → running on the same network.
    let job = JobSpec {
        service: Some("echo".into()),
        stdin: Some(Output(Bytes::from_static(b"job"))),
        ..JobSpec::default()
    };
    let mut baseline = Samples::new();
    for _ in 0..CYCLES * 4 {
        let t = Instant::now();
        let info = client.submit(&job).await?;
        loop {
            let j = client.job(info.id).await?;
            if j.state != brume_api::rest::JobState::Queued {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        baseline.record(t.elapsed());
    }
    out(&format!(
        "baseline: a trivial job's submit → running p50 {:.2} ms",
        baseline.ms(0.5)
    ));
    let _ = net.stop_now().await;
    Ok(json!({
        "bench": "lease",
        "rate_per_s": rate.to_string(),
        "drip_rows": stopped.rows,
        "drip_running_ms": stopped.running_ms,
        "drip_error_units": error,
        "halt_latency_ms": round(halt.ms(0.5), 3),
        "halt_latency_p99_ms": round(halt.ms(0.99), 3),
        "resume_latency_ms": round(resume.ms(0.5), 3),
        "resume_latency_p99_ms": round(resume.ms(0.99), 3),
        "baseline_job_start_ms": round(baseline.ms(0.5), 3),
        "ratio_resume_vs_job_start": round(resume.ms(0.5) / baseline.ms(0.5).max(1e-9), 2),
        "cycles": CYCLES,
    }))
}
