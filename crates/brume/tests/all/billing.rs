//! Billing terms through the real binaries: tiers, per-account deals,
//! Kumo's penalties, the operator's charity, and what a cancelled job pays.
//! The broker runs with a `[broker.ledger]` config file.

use brume_client::ServiceKind;
use brume_client::brume_api::rest::{EventKind, Expect, JobSpec, JobState};
use futures_util::StreamExt as _;
use serde_json::Value;
use test_programs_artifacts as art;

use crate::net::*;

/// Two tiers: `fast` asks for more MIPS than any machine has, so only
/// `standard` can run. Prices are high (€10^6 per coin-equivalent) so that
/// small jobs cost whole micro-euros.
const CONFIG: &str = r#"
[broker.ledger]
operator_charity = { account = "charity-op", share_ppm = 100000 }

[[broker.ledger.tiers]]
name = "fast"
fiat_micros_per_coin = 2000000000000
min_mips = 1000000000000

[[broker.ledger.tiers]]
name = "standard"
fiat_micros_per_coin = 1000000000000

[[broker.ledger.deals]]
account = "thrifty"
structure = { kind = "cap_with_downgrade" }

[[broker.ledger.deals]]
account = "capped"
structure = { kind = "cap_with_subsidy", subsidy = "sponsor" }

[[broker.ledger.deals]]
account = "sponsored"
structure = { kind = "full_subsidy", subsidy = "sponsor" }

[broker.ledger.penalties.slow_provider]
rule = { tolerance_ppm = 200000, slope_ppm = 1000000, cap_ppm = 500000 }
min_run_ms = 0
"#;

/// Token base units per fiat micro-unit at the default 1 token = €1.
const UNITS_PER_MICRO: u128 = 1_000_000_000_000;

fn tokens(v: &Value) -> u128 {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not a decimal string"))
        .parse()
        .expect("an integer")
}

/// The row of `work_id`, read with `key` (the owner sees private columns).
async fn row(net: &Net, work_id: &str, key: &str) -> Value {
    eventually(&format!("the ledger has row {work_id}"), || async {
        let resp = reqwest::Client::new()
            .get(net.url(&format!("/v1/ledger/rows/{work_id}")))
            .bearer_auth(key)
            .send()
            .await
            .ok()?;
        if resp.status() != 200 {
            return None;
        }
        resp.json::<Value>().await.ok()
    })
    .await
}

/// Submits `spec` as `key`, follows it to the end, returns its row.
async fn run(net: &Net, key: &str, spec: &JobSpec) -> Value {
    let client = brume_client::Client::new(&net.broker.url, Some(key.to_string())).expect("client");
    let job = client.submit(spec).await.expect("submit");
    let (_, result) = follow(&client, job.id).await;
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
    row(net, &job.id.to_string(), key).await
}

/// POSTs a job spec as `key`: (status, body).
async fn submit_raw(net: &Net, key: &str, spec: &JobSpec) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(net.url("/v1/jobs"))
        .bearer_auth(key)
        .json(spec)
        .send()
        .await
        .expect("POST /v1/jobs");
    (resp.status().as_u16(), resp.json().await.expect("JSON"))
}

/// Σ payouts = Σ payers = token_amount, and the operator's charity gets
/// its 10 % of the operator's share.
fn check_balanced(r: &Value) {
    let fee = tokens(&r["token_amount"]);
    let payouts = r["payouts"].as_array().expect("payouts");
    let payers = r["payers"].as_array().expect("payers");
    assert_eq!(
        payouts.iter().map(|p| tokens(&p["amount"])).sum::<u128>(),
        fee,
        "{r}"
    );
    assert_eq!(
        payers.iter().map(|p| tokens(&p["amount"])).sum::<u128>(),
        fee,
        "{r}"
    );
    let amount = |role: &str| {
        payouts
            .iter()
            .find(|p| p["role"] == role)
            .map(|p| tokens(&p["amount"]))
            .unwrap_or_else(|| panic!("no {role} payout in {r}"))
    };
    let (operator, charity) = (amount("operator"), amount("charity"));
    // The charity's part is within one unit of 10 % of the operator's share.
    let share = operator + charity;
    assert!(charity.abs_diff(share / 10) <= 1, "{r}");
    assert_eq!(r["charities"], serde_json::json!(["charity-op"]), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_deals_penalties_and_charity_shape_every_row() {
    let net = Net::start_with(1, 2, Some(CONFIG), &["thrifty", "capped", "sponsored"]).await;
    let home = net.home().to_path_buf();
    let [thrifty, capped, sponsored] = [0, 1, 2].map(|i| net.named_keys[i].clone());
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    net.publish("echo", ServiceKind::Command, art::ECHO_P1_BYTES)
        .await;

    // Per use (the default key has no deal): the default tier, the requester
    // pays everything.
    let base = run(&net, &net.key, &cpu_job(100_000)).await;
    assert_eq!(base["tier"], "standard");
    assert_eq!(
        base["payers"].as_array().expect("payers").len(),
        1,
        "{base}"
    );
    assert_eq!(base["payers"][0]["account"], "default");
    assert_eq!(base["payers"][0]["kind"], "requester");
    assert_eq!(tokens(&base["surcharge"]), 0);
    check_balanced(&base);
    let fee = tokens(&base["token_amount"]);
    assert!(fee > 10 * UNITS_PER_MICRO, "big enough to cap: {base}");
    let fee_micros = base["fee_micros"].as_u64().expect("fee_micros");

    // A tier no provider qualifies for: the job waits, then times out.
    let mut fast = cpu_job(1000);
    fast.tier = Some("fast".into());
    fast.queue_timeout_ms = Some(300);
    let job = net.client.submit(&fast).await.expect("submit");
    let (_, result) = follow(&net.client, job.id).await;
    assert_eq!(result.state, JobState::Failed, "{result:?}");
    assert_eq!(
        result.error.as_ref().map(|e| e.code.as_str()),
        Some("queue_timeout")
    );
    // Unknown tiers are malformed requests; a cap on a deal without one
    // conflicts with the account's deal.
    let mut bad = cpu_job(1000);
    bad.tier = Some("gold".into());
    let (status, body) = submit_raw(&net, &net.key, &bad).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );
    assert!(
        body["message"].as_str().unwrap_or("").contains("gold"),
        "{body}"
    );
    let mut bad = cpu_job(1000);
    bad.price_cap_micros = Some(1);
    let (status, body) = submit_raw(&net, &net.key, &bad).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")));
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("takes no price cap"),
        "{body}"
    );

    // Cap with downgrade: `fast` is estimated at twice `standard`; a cap
    // between the two runs it at `standard`. A cap below both is 402.
    let mut job = cpu_job(100_000);
    job.tier = Some("fast".into());
    job.price_cap_micros = Some(fee_micros * 3 / 2);
    let down = run(&net, &thrifty, &job).await;
    assert_eq!(down["tier"], "standard", "{down}");
    assert_eq!(down["private"]["metrics"]["downgraded"], 1, "{down}");
    assert_eq!(down["payers"][0]["account"], "thrifty");
    check_balanced(&down);
    job.price_cap_micros = Some(1);
    let (status, body) = submit_raw(&net, &thrifty, &job).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (402, Some("over_price_cap")),
        "{body}"
    );

    // Cap with subsidy: the requester pays up to its cap, the sponsor the rest.
    let mut job = cpu_job(100_000);
    job.price_cap_micros = Some(fee_micros / 2);
    let sub = run(&net, &capped, &job).await;
    let payers = sub["payers"].as_array().expect("payers");
    assert_eq!(payers.len(), 2, "{sub}");
    assert_eq!(
        (payers[0]["account"].as_str(), payers[0]["kind"].as_str()),
        (Some("capped"), Some("requester"))
    );
    assert_eq!(
        tokens(&payers[0]["amount"]),
        u128::from(fee_micros / 2) * UNITS_PER_MICRO
    );
    assert_eq!(
        (payers[1]["account"].as_str(), payers[1]["kind"].as_str()),
        (Some("sponsor"), Some("subsidy"))
    );
    check_balanced(&sub);

    // Full subsidy: the sponsor pays everything.
    let full = run(&net, &sponsored, &cpu_job(100_000)).await;
    let payers = full["payers"].as_array().expect("payers");
    assert_eq!(payers.len(), 1, "{full}");
    assert_eq!(
        (payers[0]["account"].as_str(), payers[0]["kind"].as_str()),
        (Some("sponsor"), Some("subsidy"))
    );
    assert_eq!(full["requester"], "sponsored");
    check_balanced(&full);

    // Surcharge: declaring 1 byte of memory is a huge overrun, capped at
    // 50 % of the fee, added to it.
    let mut job = cpu_job(100_000);
    job.expect = Expect {
        runtime_ms: None,
        memory_bytes: Some(1),
        mbps: None,
    };
    // With a column of the requester's own, kept private in the row.
    job.columns.insert("batch".into(), "nightly-7".into());
    let over = run(&net, &net.key, &job).await;
    assert_eq!(
        over["private"]["custom_fields"]["batch"], "nightly-7",
        "{over}"
    );
    let surcharge = tokens(&over["surcharge"]);
    let total = tokens(&over["token_amount"]);
    assert!(surcharge > 0, "{over}");
    assert_eq!(surcharge, (total - surcharge) / 2, "{over}");
    check_balanced(&over);

    // Slow provider: echo does almost no instructions for its wall time,
    // far below the provider's advertised MIPS, so half the fee (the cap)
    // goes back to the requester out of the provider's share.
    let resp = reqwest::Client::new()
        .post(net.url("/v1/functions/default~echo/invoke"))
        .bearer_auth(&net.key)
        .header("x-brume-tier", "standard")
        .header("x-brume-column-order", "A-17")
        .body("hello")
        .send()
        .await
        .expect("invoke");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("x-brume-tier")
            .and_then(|v| v.to_str().ok()),
        Some("standard")
    );
    let work_id = resp.headers()["x-brume-work-id"]
        .to_str()
        .expect("id")
        .to_string();
    let cost: u128 = resp.headers()["x-brume-cost"]
        .to_str()
        .expect("cost")
        .parse()
        .expect("int");
    let slow = row(&net, &work_id, &net.key).await;
    assert_eq!(tokens(&slow["token_amount"]), cost);
    assert_eq!(slow["private"]["custom_fields"]["order"], "A-17", "{slow}");
    check_balanced(&slow);
    let refund = slow["payouts"]
        .as_array()
        .expect("payouts")
        .iter()
        .find(|p| p["role"] == "refund")
        .unwrap_or_else(|| panic!("no refund in {slow}"));
    assert_eq!(refund["beneficiary"], "default");
    assert_eq!(tokens(&refund["amount"]), cost / 2, "{slow}");
    // A bad tier header is refused before anything runs.
    let resp = reqwest::Client::new()
        .post(net.url("/v1/functions/default~echo/invoke"))
        .bearer_auth(&net.key)
        .header("x-brume-tier", "gold")
        .send()
        .await
        .expect("invoke");
    assert_eq!(resp.status(), 400);
    // So is a column with a bad name, or too long a value.
    for (name, value) in [
        ("x-brume-column-Order!", "x".to_string()),
        ("x-brume-column-order", "x".repeat(2_000)),
    ] {
        let resp = reqwest::Client::new()
            .post(net.url("/v1/functions/default~echo/invoke"))
            .bearer_auth(&net.key)
            .header(name, value)
            .send()
            .await
            .expect("invoke");
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or_default();
        assert_eq!(
            (status, v["code"].as_str()),
            (400, Some("invalid_request")),
            "{v}"
        );
    }

    // Everything written audits clean.
    let (code, out, err) = {
        let o = command(&home)
            .args(["ledger", "audit", "--broker", &net.broker.url])
            .output()
            .expect("audit");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(0), "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_while_running_pays_for_the_fuel_it_reported() {
    let net = Net::start_with(1, 1, Some(CONFIG), &[]).await;
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let job = net
        .client
        .submit(&cpu_job(1_000_000_000_000))
        .await
        .expect("submit");
    // Wait for a progress report with fuel in it.
    let mut events = net.client.events(job.id).await.expect("events");
    let reported = loop {
        let ev = events
            .next()
            .await
            .expect("the stream ends only after the job")
            .expect("an event");
        if ev.kind == EventKind::Progress
            && let Some(fuel) = ev.fuel.filter(|f| *f > 0)
        {
            break fuel;
        }
    };
    net.client.cancel(job.id).await.expect("cancel");
    let r = row(&net, &job.id.to_string(), &net.key).await;
    let fuel = r["usage"]["fuel"].as_u64().expect("fuel");
    assert!(fuel >= reported, "billed {fuel}, reported {reported}: {r}");
    assert!(tokens(&r["token_amount"]) > 0, "{r}");
    assert_eq!(r["private"]["metrics"]["cancelled"], 1, "{r}");
    check_balanced(&r);
    let info = net.client.job(job.id).await.expect("job");
    assert_eq!(info.state, JobState::Cancelled);
}

/// One tier whose price follows the broker's utilisation (about 1× idle to
/// 3× full, a straight line as a Bézier curve).
const SURGE: &str = r#"
[[broker.ledger.tiers]]
name = "standard"
fiat_micros_per_coin = 1000000000000
curve = [[0, 1000000], [333333, 1666666], [666667, 2333334], [1000000, 3000000]]
"#;

/// A dynamic price: a job admitted while the broker is idle pays 1×, the
/// same job admitted while one of three slots is busy pays the curve at a
/// third, and each row records the utilisation and the multiplier it was
/// priced at. (Three slots: one is kept for functions.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_on_a_curve_prices_by_the_utilisation_at_admission() {
    let net = Net::start_with(1, 3, Some(SURGE), &[]).await;
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let idle = run(&net, &net.key, &cpu_job(100_000)).await;
    assert_eq!(idle["schema_version"], 3, "{idle}");
    assert_eq!(
        (&idle["utilisation_ppm"], &idle["price_multiplier_ppm"]),
        (&Value::from(0), &Value::from(1_000_000)),
        "{idle}"
    );
    // Hold one of the two slots.
    let long = net
        .client
        .submit(&cpu_job(1_000_000_000_000))
        .await
        .expect("submit");
    net.wait_state(long.id, JobState::Running).await;
    let busy = run(&net, &net.key, &cpu_job(100_000)).await;
    assert_eq!(busy["utilisation_ppm"], 333_333, "{busy}");
    let m = busy["price_multiplier_ppm"].as_u64().expect("multiplier");
    assert!((1_666_656..=1_666_676).contains(&m), "about 5/3x: {busy}");
    // Same work, same fuel: the fee scales with the multiplier (to the
    // rounding of a base unit).
    assert_eq!(idle["usage"]["fuel"], busy["usage"]["fuel"]);
    let (a, b) = (tokens(&idle["token_amount"]), tokens(&busy["token_amount"]));
    let expected = a * u128::from(m) / 1_000_000;
    assert!(b.abs_diff(expected) <= 1, "{a} at 1x, {b} at {m} ppm");
    net.client.cancel(long.id).await.expect("cancel");
}
