//! The ledger as the broker writes it, through the real binaries: one row
//! per accepted work unit, the `x-brume-cost` header, the public read API
//! and its private columns, `brume ledger export` and `brume ledger audit`
//! (and a row tampered with in the database file).

use std::path::Path;

use brume_client::ServiceKind;
use brume_client::brume_api::rest::JobState;
use test_programs_artifacts as art;

use crate::net::*;

/// GET a ledger path, with or without an API key: (status, JSON body).
async fn get(net: &Net, path: &str, key: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().get(net.url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.expect("GET");
    let status = resp.status().as_u16();
    let body = resp.json().await.expect("JSON body");
    (status, body)
}

/// Waits until the broker serves the row of `work_id` (sync calls append
/// theirs in the background).
async fn row(net: &Net, work_id: &str, key: Option<&str>) -> serde_json::Value {
    eventually(&format!("the ledger has row {work_id}"), || async {
        let (status, v) = get(net, &format!("/v1/ledger/rows/{work_id}"), key).await;
        (status == 200).then_some(v)
    })
    .await
}

/// `brume ledger ARGS`: (exit code, stdout, stderr).
fn ledger_cli(home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = command(home)
        .arg("ledger")
        .args(args)
        .output()
        .expect("run brume ledger");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn invocations_and_jobs_write_one_row_each_and_only_the_owner_sees_private_columns() {
    let net = Net::start(1, 2).await;
    let provider = net.providers[0].address.clone();
    net.publish("echo", ServiceKind::Command, art::ECHO_P1_BYTES)
        .await;
    net.publish("hello", ServiceKind::Http, art::HTTP_HELLO_BYTES)
        .await;
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let http = reqwest::Client::new();

    // A sync invocation: the cost header is the fee in token base units.
    let resp = http
        .post(net.url("/v1/functions/echo/invoke"))
        .bearer_auth(&net.key)
        .header("x-brume-end-user", "alice")
        .body("ledger me")
        .send()
        .await
        .expect("invoke");
    assert_eq!(resp.status(), 200);
    let header = |r: &reqwest::Response, n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {n} header"))
            .to_string()
    };
    let invoke_id = header(&resp, "x-brume-work-id");
    let invoke_cost: u128 = header(&resp, "x-brume-cost").parse().expect("cost parses");
    assert!(invoke_cost > 0, "any usage costs something");
    let invoke_fuel: u64 = header(&resp, "x-brume-fuel").parse().expect("fuel");

    // An HTTP call: its request line and headers are private columns.
    let resp = http
        .get(net.url("/fn/hello/greet?who=ledger"))
        .bearer_auth(&net.key)
        .header("x-secret", "s3cret")
        .send()
        .await
        .expect("call hello");
    assert_eq!(resp.status(), 200);
    let http_id = header(&resp, "x-brume-work-id");
    assert!(header(&resp, "x-brume-cost").parse::<u128>().is_ok());

    // A job: its row is durable before its final state is announced.
    let job = net.client.submit(&cpu_job(1000)).await.expect("submit");
    let (_, result) = follow(&net.client, job.id).await;
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
    let job_id = job.id.to_string();
    let (status, job_row) = get(&net, &format!("/v1/ledger/rows/{job_id}"), None).await;
    assert_eq!(status, 200, "the job's row exists once it is final");

    // A guest fault used resources too: it is billed.
    let mut starved = cpu_job(1_000_000_000);
    starved.limits.fuel = Some(100_000);
    let fault = net.client.submit(&starved).await.expect("submit");
    let (_, fault_result) = follow(&net.client, fault.id).await;
    assert_eq!(fault_result.state, JobState::Failed, "{fault_result:?}");
    assert_eq!(
        fault_result.error.as_ref().map(|e| e.code.as_str()),
        Some("out_of_fuel")
    );
    let fault_id = fault.id.to_string();
    let (status, fault_row) = get(&net, &format!("/v1/ledger/rows/{fault_id}"), None).await;
    assert_eq!(status, 200, "a guest fault writes a row");
    assert_eq!(fault_row["usage"]["fuel"], fault_result.usage.fuel);

    // Public view: who, what, usage; no private columns.
    assert_eq!(job_row["requester"], "default");
    assert_eq!(job_row["developer"], "default", "the publishing key");
    assert_eq!(job_row["provider"], provider.as_str());
    // The operator is paid to its own account, not the broker's (the
    // payout account, which must hold only what settlement owes).
    let operator = job_row["operator"].as_str().expect("operator");
    assert!(
        operator.starts_with("0x") && operator.len() == 42,
        "{operator}"
    );
    assert_ne!(operator, net.broker.broker_id.as_str());
    assert_eq!(job_row["usage"]["fuel"], result.usage.fuel);
    assert!(job_row.get("private").is_none(), "{job_row}");
    let payouts = job_row["payouts"].as_array().expect("payouts");
    let roles: Vec<_> = payouts.iter().map(|p| p["role"].clone()).collect();
    assert_eq!(roles, ["provider", "developer", "operator"]);
    let tokens = |v: &serde_json::Value| -> u128 {
        v.as_str()
            .expect("a decimal string")
            .parse()
            .expect("an integer")
    };
    let sum: u128 = payouts.iter().map(|p| tokens(&p["amount"])).sum();
    assert_eq!(sum, tokens(&job_row["token_amount"]));
    assert!(
        payouts.iter().all(|p| tokens(&p["amount"]) > 0),
        "{job_row}"
    );
    let payers = job_row["payers"].as_array().expect("payers");
    assert_eq!(payers.len(), 1, "{job_row}");
    assert_eq!(payers[0]["account"], "default");
    assert_eq!(payers[0]["kind"], "requester");
    assert_eq!(
        tokens(&payers[0]["amount"]),
        tokens(&job_row["token_amount"])
    );

    let invoke_row = row(&net, &invoke_id, None).await;
    assert_eq!(invoke_row["end_user"], "alice");
    assert_eq!(invoke_row["usage"]["fuel"], invoke_fuel);
    assert_eq!(invoke_row["token_amount"], invoke_cost.to_string());
    assert_eq!(invoke_row["provider"], provider.as_str());
    row(&net, &http_id, None).await;

    // The list: exactly one row per unit, public without a key.
    let (status, all) = get(&net, "/v1/ledger/rows", None).await;
    assert_eq!(status, 200);
    let rows = all["rows"].as_array().expect("rows");
    let mut ids: Vec<_> = rows
        .iter()
        .map(|r| r["work_id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    let mut want = vec![
        invoke_id.clone(),
        http_id.clone(),
        job_id.clone(),
        fault_id.clone(),
    ];
    want.sort();
    assert_eq!(ids, want, "one row per accepted unit");
    assert!(all["next_cursor"].is_null());
    assert!(rows.iter().all(|r| r.get("private").is_none()));

    // The owner's key shows the private columns (never the API key).
    let (_, mine) = get(&net, "/v1/ledger/rows", Some(&net.key)).await;
    let mine = mine["rows"].as_array().expect("rows").clone();
    assert!(mine.iter().all(|r| r["private"].is_object()), "{mine:?}");
    let h = mine
        .iter()
        .find(|r| r["work_id"] == http_id.as_str())
        .expect("http row");
    let p = &h["private"];
    assert_eq!(p["request_line"], "GET /fn/hello/greet?who=ledger HTTP/1.1");
    let headers = p["request_headers"].as_array().expect("headers");
    assert!(
        headers
            .iter()
            .any(|kv| kv[0] == "x-secret" && kv[1] == "s3cret"),
        "{headers:?}"
    );
    assert!(!headers.iter().any(|kv| kv[0] == "authorization"));
    assert_eq!(p["metrics"]["attempts"], 1);
    let one = row(&net, &job_id, Some(&net.key)).await;
    assert!(one["private"].is_object());

    // Another requester's key sees the public columns only.
    let other = {
        let out = command(net.home())
            .args(["broker", "keys", "create", "--json", "--name", "other"])
            .arg("--data")
            .arg(&net.broker.data)
            .output()
            .expect("keys create");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        v["api_key"].as_str().expect("api_key").to_string()
    };
    let theirs = eventually("the broker accepts the new key", || async {
        let (status, v) = get(&net, "/v1/ledger/rows", Some(&other)).await;
        (status == 200).then_some(v)
    })
    .await;
    let theirs = theirs["rows"].as_array().expect("rows");
    assert_eq!(theirs.len(), 4);
    assert!(theirs.iter().all(|r| r.get("private").is_none()));

    // Filters, paging, errors.
    let (_, by) = get(&net, "/v1/ledger/rows?account=default&limit=3", None).await;
    assert_eq!(by["rows"].as_array().map(Vec::len), Some(3));
    let cursor = by["next_cursor"].as_str().expect("a next page").to_string();
    let (_, rest) = get(&net, &format!("/v1/ledger/rows?cursor={cursor}"), None).await;
    assert_eq!(rest["rows"].as_array().map(Vec::len), Some(1));
    assert!(rest["next_cursor"].is_null());
    let (_, none) = get(&net, "/v1/ledger/rows?account=nobody", None).await;
    assert_eq!(none["rows"].as_array().map(Vec::len), Some(0));
    let (status, e) = get(&net, "/v1/ledger/rows/no-such-work", None).await;
    assert_eq!((status, e["code"].as_str()), (404, Some("not_found")));
    let (status, e) = get(&net, "/v1/ledger/rows?cursor=garbage", None).await;
    assert_eq!((status, e["code"].as_str()), (400, Some("invalid_request")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_loses_its_provider_has_one_row_and_the_audit_catches_tampering() {
    let mut net = Net::start(2, 1).await;
    let (job, _victim, survivor) = net.long_job_losing_its_provider().await;
    let (_, result) = follow(&net.client, job.id).await;
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
    assert_eq!(result.attempts, 2);

    // The lost attempt wrote nothing; the accepted one wrote one row.
    let job_id = job.id.to_string();
    let (_, all) = get(&net, "/v1/ledger/rows", Some(&net.key)).await;
    let rows = all["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["work_id"], job_id.as_str());
    assert_eq!(rows[0]["provider"], survivor.as_str());
    assert_eq!(rows[0]["usage"]["fuel"], result.usage.fuel);
    assert_eq!(rows[0]["private"]["metrics"]["attempts"], 2);
    let row_hash = rows[0]["row_hash"].as_str().expect("row_hash").to_string();

    // Export: JSON lines and CSV, from the broker's data dir.
    let broker_data = net.broker.data.to_string_lossy().into_owned();
    let home = net.home().to_path_buf();
    let (code, out, err) = ledger_cli(
        &home,
        &["export", "--format", "jsonl", "--data", &broker_data],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0]["row_hash"], row_hash.as_str());
    assert!(lines[0].get("private").is_none(), "the export is public");
    let (code, out, err) = ledger_cli(
        &home,
        &["export", "--format", "csv", "--data", &broker_data],
    );
    assert_eq!(code, 0, "{err}");
    let csv: Vec<&str> = out.lines().collect();
    assert_eq!(csv.len(), 2, "{out}");
    assert!(
        csv[0].starts_with("work_id,timestamp_ms,requester,"),
        "{}",
        csv[0]
    );
    assert!(csv[0].ends_with(",payouts,private_hash,custom_hash,row_hash"));
    assert!(
        csv[1].starts_with(&job_id) && csv[1].ends_with(&row_hash),
        "{}",
        csv[1]
    );

    // Audit: clean, from the data dir (broker or devnet layout) and the API.
    let parent = net.home().to_string_lossy().into_owned();
    for args in [
        vec!["audit", "--data", broker_data.as_str()],
        vec!["audit", "--data", parent.as_str()],
        vec!["audit", "--broker", net.broker.url.as_str()],
    ] {
        let (code, out, err) = ledger_cli(&home, &args);
        assert_eq!(code, 0, "{args:?}: {out} {err}");
        assert!(out.contains("1 rows audited"), "{out}");
    }

    // Tamper with the file: drop the trigger that refuses UPDATE, change
    // the fuel. The audit names the row, locally and through the API.
    let db = net.broker.data.join("ledger/ledger.db");
    {
        let conn = rusqlite::Connection::open(&db).expect("open the ledger file");
        let refused = conn.execute("UPDATE ledger_rows SET fuel = fuel + 1", []);
        assert!(refused.is_err(), "the database refuses updates");
        conn.execute_batch(
            "DROP TRIGGER ledger_rows_no_update; UPDATE ledger_rows SET fuel = fuel + 1;",
        )
        .expect("tamper");
    }
    let (code, _, err) = ledger_cli(&home, &["audit", "--data", &broker_data]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&job_id), "names the row: {err}");
    let (code, out, _) = ledger_cli(
        &home,
        &["audit", "--json", "--broker", net.broker.url.as_str()],
    );
    assert_eq!(code, 1, "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON report");
    assert_eq!(
        report["findings"][0]["work_id"],
        job_id.as_str(),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_queued_jobs_write_no_row() {
    let net = Net::start(1, 1).await;
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    // One slot: the first job runs, the second waits in the queue and is
    // cancelled there. (A job cancelled while running pays for the fuel it
    // reported: `billing.rs`.)
    let running = net
        .client
        .submit(&cpu_job(1_000_000_000_000))
        .await
        .expect("submit");
    net.wait_state(running.id, JobState::Running).await;
    let queued = net.client.submit(&cpu_job(1000)).await.expect("submit");
    net.client
        .cancel(queued.id)
        .await
        .expect("cancel the queued job");
    net.wait_state(queued.id, JobState::Cancelled).await;
    net.client
        .cancel(running.id)
        .await
        .expect("cancel the running job");
    net.wait_state(running.id, JobState::Cancelled).await;

    // A job run after them is billed; the queued one is not.
    let after = net.client.submit(&cpu_job(1000)).await.expect("submit");
    let (_, result) = follow(&net.client, after.id).await;
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
    let (_, all) = get(&net, "/v1/ledger/rows", None).await;
    let ids: Vec<_> = all["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["work_id"].as_str().expect("id").to_string())
        .collect();
    assert!(ids.contains(&after.id.to_string()), "{ids:?}");
    assert!(!ids.contains(&queued.id.to_string()), "{ids:?}");
}
