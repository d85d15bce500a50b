//! Services belong to their owner's namespace: another account can't
//! replace, sign, retire or move them; versions are immutable; aliases are
//! first come, first served. Through the real broker, over REST.

use brume_client::ServiceKind;
use bytes::Bytes;
use test_programs_artifacts as art;

use crate::net::Net;
use crate::util::{call, code};

#[tokio::test]
async fn another_account_can_not_replace_sign_retire_or_move_a_service() {
    let net = Net::start_with(1, 1, None, &["alice", "bob"]).await;
    let (alice, bob) = (&net.named_keys[0], &net.named_keys[1]);
    let http = reqwest::Client::new();
    let publish = |key: &str, name: &str, module: &'static [u8]| {
        http.post(net.url(&format!("/v1/services?name={name}&kind=command")))
            .bearer_auth(key)
            .body(module)
    };
    let invoke = |key: &str, service: &str| {
        http.post(net.url(&format!("/v1/functions/{service}/invoke")))
            .bearer_auth(key)
            .body("hi")
    };

    // Alice publishes echo twice: versions 1 and 2, in her namespace.
    let (status, v1) = call(publish(alice, "echo", art::ECHO_P1_BYTES)).await;
    assert_eq!(status, 201, "{v1}");
    assert_eq!(
        (v1["owner"].as_str(), v1["version"].as_u64()),
        (Some("alice"), Some(1))
    );
    let (status, v2) = call(publish(alice, "alice~echo", art::CPU_LOOP_P1_BYTES)).await;
    assert_eq!((status, v2["version"].as_u64()), (201, Some(2)), "{v2}");

    // Bob can't publish into her namespace, signed or not.
    let (status, body) = call(publish(bob, "alice~echo", art::ECHO_P1_BYTES)).await;
    assert_eq!((status, code(&body)), (403, "not_owner"), "{body}");
    let bob_dev = brume_identity::Identity::random();
    let bob_client = brume_client::Client::new(&net.broker.url, Some(bob.clone())).expect("client");
    let signed = bob_client
        .publish_signed(
            "alice~echo",
            ServiceKind::Command,
            Bytes::from_static(art::ECHO_P1_BYTES),
            &bob_dev,
        )
        .await
        .expect_err("bob signed alice's service");
    match signed {
        brume_client::ClientError::Api { status, error, .. } => {
            assert_eq!(
                (status, error.code),
                (403, brume_api::ErrorCode::NotOwner),
                "{error:?}"
            );
        }
        other => panic!("expected 403 not_owner, got {other}"),
    }
    // Nor retire or move it.
    let (status, body) = call(
        http.delete(net.url("/v1/services/alice~echo"))
            .bearer_auth(bob),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "not_owner"), "{body}");
    let (status, body) = call(
        http.post(net.url("/v1/services/alice~echo/move"))
            .bearer_auth(bob)
            .json(&serde_json::json!({"owner": "bob"})),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("admin"),
        "{body}"
    );

    // Her service is untouched: still version 2, her digest.
    let (status, now) = call(
        http.get(net.url("/v1/services/alice~echo"))
            .bearer_auth(bob),
    )
    .await;
    assert_eq!((status, now["version"].as_u64()), (200, Some(2)), "{now}");
    assert_eq!(now["digest"], v2["digest"]);

    // Bob's own `echo` is another service; unqualified names are his.
    let (status, mine) = call(publish(bob, "echo", art::ECHO_P1_BYTES)).await;
    assert_eq!(
        (status, mine["owner"].as_str()),
        (201, Some("bob")),
        "{mine}"
    );
    let (status, _) = call(invoke(bob, "echo")).await;
    assert_eq!(status, 200);
    // Versions stay addressable: bob calls alice's version 1.
    let (status, body) = call(invoke(bob, "alice~echo@1")).await;
    assert_eq!(status, 200, "{body}");
    // A name nobody has in your namespace: 404 with a hint.
    let (status, body) = call(invoke(net.named_keys[0].as_str(), "nope")).await;
    assert_eq!((status, code(&body)), (404, "unknown_service"), "{body}");

    // Aliases: first come; none may shadow a namespace that exists.
    let alias = |key: &str, a: &str| {
        http.post(net.url("/v1/aliases"))
            .bearer_auth(key)
            .json(&serde_json::json!({ "alias": a }))
    };
    let (status, body) = call(alias(alice, "acme")).await;
    assert_eq!(
        (status, body["account"].as_str()),
        (201, Some("alice")),
        "{body}"
    );
    let (status, body) = call(alias(bob, "acme")).await;
    assert_eq!((status, code(&body)), (409, "alias_taken"), "{body}");
    let (status, body) = call(alias(bob, "alice")).await;
    assert_eq!((status, code(&body)), (409, "alias_taken"), "{body}");
    let (status, body) = call(alias(bob, "0x1111111111111111111111111111111111111111")).await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    let (status, body) = call(invoke(bob, "acme~echo@1")).await;
    assert_eq!(status, 200, "{body}");

    // Alice retires version 2: `alice~echo` is version 1 again. Then all
    // of it: calls answer 410 `retired`.
    let (status, body) = call(
        http.delete(net.url("/v1/services/echo@2"))
            .bearer_auth(alice),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, now) = call(
        http.get(net.url("/v1/services/alice~echo"))
            .bearer_auth(bob),
    )
    .await;
    assert_eq!(now["version"].as_u64(), Some(1), "{now}");
    let (status, _) = call(http.delete(net.url("/v1/services/echo")).bearer_auth(alice)).await;
    assert_eq!(status, 200);
    let (status, body) = call(invoke(bob, "alice~echo")).await;
    assert_eq!((status, code(&body)), (410, "retired"), "{body}");

    // The operator (an admin key) moves bob's echo to a new namespace.
    let (status, body) = call(
        http.post(net.url("/v1/services/bob~echo/move"))
            .bearer_auth(&net.key)
            .json(&serde_json::json!({"owner": "carol"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(invoke(bob, "carol~echo")).await;
    assert_eq!(status, 200);
}
