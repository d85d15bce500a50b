//! Accounts own their jobs, keys have scopes, and revoked keys stop
//! working at once: through the real broker and CLI.

use brume_api::rest::{JobList, KeyInfo, KeyList, NewKey, NewKeyRequest, Scope};
use brume_client::ServiceKind;

use crate::net::{Net, command, cpu_job, keys_create};
use crate::util::{call, code};

#[tokio::test]
async fn another_account_can_not_see_follow_cancel_or_settle() {
    let net = Net::start_with(1, 1, None, &["alice", "bob"]).await;
    net.publish(
        "cpu",
        ServiceKind::Command,
        test_programs_artifacts::CPU_LOOP_P1_BYTES,
    )
    .await;
    let (alice, bob) = (&net.named_keys[0], &net.named_keys[1]);
    let http = reqwest::Client::new();
    let (status, job) = call(
        http.post(net.url("/v1/jobs"))
            .bearer_auth(alice)
            .json(&cpu_job(1_000)),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("job id").to_string();
    // Bob: every read and the cancel answer 404, as if there were no job.
    for path in ["", "/events", "/result"] {
        let (status, body) = call(
            http.get(net.url(&format!("/v1/jobs/{id}{path}")))
                .bearer_auth(bob),
        )
        .await;
        assert_eq!(
            (status, code(&body)),
            (404, "not_found"),
            "GET {path}: {body}"
        );
    }
    let (status, body) = call(
        http.delete(net.url(&format!("/v1/jobs/{id}")))
            .bearer_auth(bob),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let (status, list) = call(http.get(net.url("/v1/jobs")).bearer_auth(bob)).await;
    assert_eq!(status, 200);
    let list: JobList = serde_json::from_value(list).expect("job list");
    assert!(list.jobs.is_empty(), "bob sees {:?}", list.jobs);
    // Bob can't settle: that takes `admin`.
    let (status, body) = call(http.post(net.url("/v1/settlement/run")).bearer_auth(bob)).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("admin"),
        "{body}"
    );
    // Alice sees her job; the operator's admin key sees every account's.
    for key in [alice, &net.key] {
        let (status, list) = call(http.get(net.url("/v1/jobs")).bearer_auth(key)).await;
        assert_eq!(status, 200);
        let list: JobList = serde_json::from_value(list).expect("job list");
        assert!(list.jobs.iter().any(|j| j.id.to_string() == id));
        let (status, _) = call(
            http.get(net.url(&format!("/v1/jobs/{id}")))
                .bearer_auth(key),
        )
        .await;
        assert_eq!(status, 200);
    }
    // Alice may cancel her own.
    let (status, body) = call(
        http.delete(net.url(&format!("/v1/jobs/{id}")))
            .bearer_auth(alice),
    )
    .await;
    assert!(status == 200 || status == 409, "{status} {body}");
}

#[tokio::test]
async fn a_missing_scope_is_named_and_a_key_grants_no_more_than_it_has() {
    let net = Net::start(1, 1).await;
    net.publish(
        "echo",
        ServiceKind::Command,
        test_programs_artifacts::ECHO_P1_BYTES,
    )
    .await;
    let reader = keys_create(
        net.home(),
        &net.broker.data,
        &["--name", "auditor", "--scope", "read"],
    );
    let http = reqwest::Client::new();
    let (status, body) = call(
        http.post(net.url("/v1/functions/default~echo/invoke"))
            .bearer_auth(&reader)
            .body("hi"),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("invoke"),
        "{body}"
    );
    let (status, body) = call(
        http.post(net.url("/v1/jobs"))
            .bearer_auth(&reader)
            .json(&cpu_job(10)),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("jobs"),
        "{body}"
    );
    // It may read, and mint a read key, but not a key that invokes.
    let (status, _) = call(http.get(net.url("/v1/jobs")).bearer_auth(&reader)).await;
    assert_eq!(status, 200);
    let ask = |scopes: Vec<Scope>| NewKeyRequest {
        name: "more".into(),
        scopes: Some(scopes),
        expires_at_ms: None,
    };
    let (status, body) = call(
        http.post(net.url("/v1/keys"))
            .bearer_auth(&reader)
            .json(&ask(vec![Scope::Invoke])),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = call(
        http.post(net.url("/v1/keys"))
            .bearer_auth(&reader)
            .json(&ask(vec![Scope::Read])),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let minted: NewKey = serde_json::from_value(body).expect("new key");
    assert_eq!(minted.info.scopes, [Scope::Read]);
    assert_eq!(minted.info.account, "auditor", "a key of the same account");
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_through_rest_and_the_cli() {
    let net = Net::start(1, 1).await;
    net.publish(
        "echo",
        ServiceKind::Command,
        test_programs_artifacts::ECHO_P1_BYTES,
    )
    .await;
    let http = reqwest::Client::new();
    let invoke = |key: String| {
        http.post(net.url("/v1/functions/default~echo/invoke"))
            .bearer_auth(key)
            .body("hi")
    };
    // A key made with the CLI beside the running broker works at once.
    let cli_key = keys_create(net.home(), &net.broker.data, &["--name", "carol"]);
    let (status, body) = call(invoke(cli_key.clone())).await;
    assert_eq!(status, 200, "a fresh key: {body}");
    // Minted over REST by carol, used, revoked over REST: refused at once.
    let (status, body) = call(http.post(net.url("/v1/keys")).bearer_auth(&cli_key).json(
        &NewKeyRequest {
            name: "ci".into(),
            scopes: None,
            expires_at_ms: None,
        },
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    let minted: NewKey = serde_json::from_value(body).expect("new key");
    assert_eq!(call(invoke(minted.api_key.clone())).await.0, 200);
    let (status, body) = call(
        http.post(net.url(&format!("/v1/keys/{}/revoke", minted.info.id)))
            .bearer_auth(&cli_key),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let revoked: KeyInfo = serde_json::from_value(body).expect("key info");
    assert!(revoked.revoked_at_ms.is_some());
    let (status, body) = call(invoke(minted.api_key)).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    // Carol lists her keys: her own only, the revoked one marked.
    let (status, body) = call(http.get(net.url("/v1/keys")).bearer_auth(&cli_key)).await;
    assert_eq!(status, 200);
    let list: KeyList = serde_json::from_value(body).expect("key list");
    assert!(list.keys.iter().all(|k| k.account == "carol"), "{list:?}");
    assert!(
        list.keys
            .iter()
            .any(|k| k.id == revoked.id && k.revoked_at_ms.is_some())
    );
    // Revoked with the CLI on the running broker's data dir: refused at
    // once (the CLI tells the broker before it returns).
    let carol = list
        .keys
        .iter()
        .find(|k| k.revoked_at_ms.is_none())
        .expect("carol's live key");
    let out = command(net.home())
        .args(["broker", "keys", "revoke", &carol.id, "--data"])
        .arg(&net.broker.data)
        .output()
        .expect("run brume broker keys revoke");
    assert!(
        out.status.success(),
        "keys revoke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refuses it now"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = call(invoke(cli_key)).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
}
