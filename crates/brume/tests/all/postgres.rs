//! A broker whose ledger is in PostgreSQL (a throwaway cluster, one per
//! test binary, connected as a role that owns nothing): the devnet demo,
//! billing, and `kill -9` of the broker.

use std::sync::Arc;

use brume_client::ServiceKind;
use brume_client::brume_api::rest::JobState;
use brume_pg::{Cluster, Database, cluster::APP_ROLE};
use test_programs_artifacts as art;

use crate::net::*;

/// A fresh database whose tables exist (created by their owner with
/// `brume broker ledger-setup`) and whose broker role is granted what it
/// needs.
async fn ledger_database() -> Database {
    let cluster = tokio::task::spawn_blocking(Cluster::shared)
        .await
        .expect("join")
        .expect("a PostgreSQL cluster (Debian's postgresql)");
    let db = cluster.database("broker").await.expect("database");
    let home = tempfile::tempdir().expect("tempdir");
    let out = command(home.path())
        .args(["broker", "ledger-setup", "--owner", &db.owner_url])
        .args(["--grant", APP_ROLE])
        .output()
        .expect("brume broker ledger-setup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    db
}

async fn stored_rows(db: &Database) -> i64 {
    let client = brume_pg::connect(&db.superuser_url).await.expect("connect");
    client
        .query_one("SELECT count(*) FROM ledger_rows", &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_devnet_demo_runs_on_postgres() {
    let db = ledger_database().await;
    let home = tempfile::tempdir().expect("tempdir");
    let data = home.path().join("devnet");
    let out = command(home.path())
        .args(["devnet", "--demo", "--store", &db.app_url, "--data"])
        .arg(&data)
        .output()
        .expect("run brume devnet --demo --store");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "devnet --demo --store failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    for expected in ["== ledger: ", "rows clean, aggregate ", "demo complete."] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        !data.join("broker/ledger/ledger.db").exists(),
        "no SQLite ledger beside PostgreSQL"
    );
    assert!(
        stored_rows(&db).await > 0,
        "the demo's rows are in PostgreSQL"
    );
    // The demo settles: its journal is in the same database.
    assert!(
        !data.join("broker/settle/settle.db").exists(),
        "no SQLite journal beside PostgreSQL"
    );
    let runs: i64 = brume_pg::connect(&db.app_url)
        .await
        .expect("connect")
        .query_one(
            "SELECT count(*) FROM brume_settle.runs WHERE phase = 'done'",
            &[],
        )
        .await
        .expect("count the journal's runs")
        .get(0);
    assert!(
        runs >= 1,
        "the demo's settlement run is journaled in PostgreSQL"
    );
    // And the broker's own tables (services, jobs) are there too.
    assert!(
        !data.join("broker/broker.db").exists(),
        "no SQLite broker store beside PostgreSQL"
    );
    let services: i64 = brume_pg::connect(&db.app_url)
        .await
        .expect("connect")
        .query_one("SELECT count(*) FROM brume_broker.service_versions", &[])
        .await
        .expect("count the services")
        .get(0);
    assert!(services >= 1, "the demo's services are in PostgreSQL");
}

/// Jobs announced final have durable rows, and jobs answered 202 are
/// stored: a broker killed with SIGKILL right after, and restarted, still
/// has every one, in PostgreSQL, and runs the unfinished ones. (The URL
/// comes by `--ledger-store`, which beats the config file's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_on_postgres_loses_no_acknowledged_row_to_kill_9() {
    let db = ledger_database().await;
    let config = "[broker.ledger]\nstore = \"postgres://nobody@127.0.0.1:1/none\"\n";
    let mut net = Net::start_with_args(1, 2, Some(config), &["--ledger-store", &db.app_url]).await;
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let client = Arc::new(net.client.clone());
    let mut ids = Vec::new();
    for _ in 0..6 {
        let job = client.submit(&cpu_job(1000)).await.expect("submit");
        let (_, result) = follow(&client, job.id).await;
        assert_eq!(result.state, JobState::Succeeded, "{result:?}");
        ids.push(job.id.to_string());
    }
    // Accepted (202), not yet run: killed at once.
    let mut accepted = Vec::new();
    for _ in 0..3 {
        accepted.push(client.submit(&cpu_job(1000)).await.expect("submit").id);
    }
    net.broker.kill();
    net.broker.restart();
    for id in &accepted {
        let (_, result) = follow(&client, *id).await;
        assert_eq!(result.state, JobState::Succeeded, "{id}: {result:?}");
    }
    for id in &ids {
        let info = client.job(id.parse().expect("id")).await.expect("job");
        assert_eq!(info.state, JobState::Succeeded, "job {id} survived kill -9");
    }
    let http = reqwest::Client::new();
    for id in &ids {
        let resp = http
            .get(net.url(&format!("/v1/ledger/rows/{id}")))
            .bearer_auth(&net.key)
            .send()
            .await
            .expect("get row");
        assert_eq!(resp.status(), 200, "job {id}'s row survived kill -9");
    }
    assert!(stored_rows(&db).await >= ids.len() as i64);
    assert!(
        !net.broker.data.join("ledger/ledger.db").exists(),
        "no SQLite ledger beside PostgreSQL"
    );
    assert!(
        !net.broker.data.join("broker.db").exists(),
        "no SQLite broker store beside PostgreSQL"
    );

    // `brume ledger audit --store` reads the database directly: clean.
    let audit = || {
        let out = command(net.home())
            .args(["ledger", "audit", "--store", &db.app_url])
            .output()
            .expect("brume ledger audit");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = audit();
    assert_eq!(code, 0, "{out}");
    let rows = ids.len() + accepted.len();
    assert!(out.contains(&format!("{rows} rows audited")), "{out}");
    // A superuser drops the trigger and changes a row: the audit names it.
    let admin = brume_pg::connect(&db.superuser_url).await.expect("connect");
    admin
        .batch_execute(&format!(
            "DROP TRIGGER ledger_rows_no_change ON ledger_rows;
             UPDATE ledger_rows SET fuel = fuel + 1 WHERE work_id = '{}'",
            ids[0]
        ))
        .await
        .expect("tamper");
    let (code, out) = audit();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&ids[0]), "names the row: {out}");
}
