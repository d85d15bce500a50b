//! The registry's rules, on a real SQLite store in a temp dir.

use brume_api::ErrorCode;
use brume_api::ServiceKind;
use brume_api::rest::ServiceInfo;

use super::Registry;
use crate::store::Store;

const A: &str = "0x1111111111111111111111111111111111111111";
const B: &str = "0x2222222222222222222222222222222222222222";

fn info(name: &str, digest: char) -> ServiceInfo {
    ServiceInfo {
        name: name.into(),
        owner: String::new(),
        version: 0,
        retired: false,
        kind: ServiceKind::Command,
        digest: digest.to_string().repeat(64),
        size_bytes: 1,
        created_at_ms: 1,
        signed: false,
        developer_address: None,
        module_signature: None,
    }
}

async fn open(dir: &std::path::Path) -> Registry {
    Registry::open(Box::new(Store::open(dir).expect("store")))
        .await
        .expect("registry")
}

fn code<T: std::fmt::Debug>(r: Result<T, super::ChangeError>) -> ErrorCode {
    match r.expect_err("refused") {
        super::ChangeError::Refused(e) => e.code,
        e => panic!("not refused: {e}"),
    }
}

#[tokio::test]
async fn versions_are_immutable_and_owned() {
    let dir = tempfile::tempdir().expect("tmp");
    let reg = open(dir.path()).await;
    let v1 = reg
        .publish(A, None, info("echo", 'a'), None)
        .await
        .expect("ok");
    let v2 = reg
        .publish(A, None, info("echo", 'b'), None)
        .await
        .expect("ok");
    assert_eq!((v1.version, v2.version), (1, 2));
    let a = super::account_key(A);
    assert_eq!(v2.owner, a);
    // Unqualified: the caller's own namespace, latest version.
    assert_eq!(reg.resolve("echo", A).expect("ok").info.version, 2);
    assert_eq!(
        reg.resolve("echo@1", A).expect("ok").info.digest,
        "a".repeat(64)
    );
    let by_digest = format!("echo@{}", "a".repeat(64));
    assert_eq!(reg.resolve(&by_digest, A).expect("ok").info.version, 1);
    // B sees A's only when it names A, and can't publish there or retire.
    let e = reg.resolve("echo", B).expect_err("refused");
    assert_eq!(e.code, ErrorCode::UnknownService);
    assert!(e.message.contains("did you mean"), "{}", e.message);
    let qualified = format!("{A}~echo");
    assert_eq!(
        reg.resolve(&qualified, B).expect("ok").reference,
        format!("{a}~echo@2")
    );
    let w = Some(A);
    assert_eq!(
        code(reg.publish(B, w, info("echo", 'c'), None).await),
        ErrorCode::NotOwner
    );
    assert_eq!(
        code(reg.retire(&qualified, B, false).await),
        ErrorCode::NotOwner
    );
    // B's own echo is another service.
    assert_eq!(
        reg.publish(B, None, info("echo", 'c'), None)
            .await
            .expect("ok")
            .version,
        1
    );
    // Retiring v2 rolls back to v1; retiring all answers `retired`.
    reg.retire("echo@2", A, false).await.expect("ok");
    assert_eq!(reg.resolve("echo", A).expect("ok").info.version, 1);
    assert_eq!(
        reg.resolve("echo@2", A).expect_err("refused").code,
        ErrorCode::Retired
    );
    reg.retire("echo", A, false).await.expect("ok");
    assert_eq!(
        reg.resolve("echo", A).expect_err("refused").code,
        ErrorCode::Retired
    );
    // A new publish is version 3, live; all of it survives a restart.
    assert_eq!(
        reg.publish(A, None, info("echo", 'd'), None)
            .await
            .expect("ok")
            .version,
        3
    );
    drop(reg);
    let reg = open(dir.path()).await;
    assert_eq!(reg.resolve("echo", A).expect("ok").info.version, 3);
    assert_eq!(
        reg.resolve("echo@1", A).expect_err("refused").code,
        ErrorCode::Retired
    );
    assert_eq!(reg.versions("echo", A).expect("ok").len(), 3);
}

#[tokio::test]
async fn aliases_are_first_come_and_cannot_shadow() {
    let dir = tempfile::tempdir().expect("tmp");
    let reg = open(dir.path()).await;
    reg.publish("demo", None, info("old", 'a'), None)
        .await
        .expect("ok");
    reg.register_alias(A, "alice").await.expect("ok");
    reg.publish(A, None, info("echo", 'a'), None)
        .await
        .expect("ok");
    assert_eq!(
        reg.resolve("alice~echo", B).expect("ok").info.owner,
        super::account_key(A)
    );
    // Taken, a second alias, a namespace that exists, an address: refused.
    assert_eq!(
        code(reg.register_alias(B, "alice").await),
        ErrorCode::AliasTaken
    );
    assert_eq!(
        code(reg.register_alias(A, "alice2").await),
        ErrorCode::AliasTaken
    );
    assert_eq!(
        code(reg.register_alias(B, "demo").await),
        ErrorCode::AliasTaken
    );
    let addr = format!("0x{}", "3".repeat(40));
    assert_eq!(
        code(reg.register_alias(B, &addr).await),
        ErrorCode::InvalidRequest
    );
    // A key labelled like someone's alias can't publish into it.
    assert_eq!(
        code(reg.publish("alice", None, info("x", 'b'), None).await),
        ErrorCode::NotOwner
    );
    // The operator moves a label namespace's service to its owner.
    reg.move_service("demo~old", "alice").await.expect("ok");
    assert!(reg.resolve("demo~old", B).is_err());
    let moved = reg.resolve("alice~old", B).expect("ok");
    assert_eq!(moved.developer, super::account_key(A));
    drop(reg);
    let reg = open(dir.path()).await;
    assert_eq!(
        reg.alias("alice").expect("ok").account,
        super::account_key(A)
    );
    assert_eq!(reg.resolve("alice~old", B).expect("ok").info.version, 1);
}

#[tokio::test]
async fn an_old_services_table_moves_into_namespaces() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let conn = rusqlite::Connection::open(dir.path().join("broker.db")).expect("open");
        conn.execute_batch(&format!(
            "CREATE TABLE services (name TEXT PRIMARY KEY, kind TEXT NOT NULL, digest TEXT NOT NULL, size_bytes INTEGER NOT NULL, created_at_ms INTEGER NOT NULL, developer TEXT NOT NULL DEFAULT '', signed_by TEXT, signature BLOB);
             INSERT INTO services VALUES ('labelled', 'command', 'ab', 1, 2, 'demo', NULL, NULL);
             INSERT INTO services VALUES ('bound', 'http', 'cd', 1, 2, '{}', NULL, NULL);
             INSERT INTO services VALUES ('unknown', 'command', 'ef', 1, 2, '', NULL, NULL);",
            A.to_lowercase()
        ))
        .expect("old schema");
    }
    let reg = open(dir.path()).await;
    assert_eq!(
        reg.resolve("labelled", "demo").expect("ok").reference,
        "demo~labelled@1"
    );
    let bound = reg.resolve("bound", A).expect("ok");
    assert_eq!(bound.info.kind, ServiceKind::Http);
    assert_eq!(bound.developer, super::account_key(A));
    assert!(reg.resolve("legacy~unknown", B).is_ok());
    drop(reg);
    // Opening again doesn't migrate twice.
    let reg = open(dir.path()).await;
    assert_eq!(reg.list(None).len(), 3);
}
