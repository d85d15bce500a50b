//! The broker's store suite, on SQLite and on PostgreSQL. The PostgreSQL
//! side runs as a role that owns nothing (`brume_app`), granted what
//! [`postgres::setup`] grants, on a throwaway server of its own.

use brume_api::WorkId;
use brume_api::names::AliasInfo;
use brume_api::rest::{JobEvent, JobInfo, JobResult, JobState, Output, ServiceInfo};
use serde_json::json;

use brume_sql::Sql;

use crate::federation::jobs::{ForwardedJob, ForwardedStore};
use crate::jobs::{JobRecord, JobStore, StoredJob};
use crate::keys::KeyStore;
use crate::registry::{RegistryStore, Version};
use crate::store::providers::{self, Standing, TrustError};
use crate::store::{Store, StoreError, keys, provider_status};

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh store (and its data dir) on `backend`.
async fn open(backend: Backend) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = match backend {
        Backend::Sqlite => Store::open(dir.path()).expect("open"),
        Backend::Postgres => {
            let cluster = brume_pg::Cluster::shared().expect("postgres");
            let db = cluster.database("broker").await.expect("database");
            crate::store::postgres::setup(&db.owner_url, Some(brume_pg::cluster::APP_ROLE))
                .await
                .expect("setup");
            Store::open_postgres(&db.app_url, dir.path())
                .await
                .expect("open")
        }
    };
    (dir, store)
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}

on_both_backends!(
    standings_bans_and_refusals,
    a_failed_write_leaves_nothing_behind,
    queued_writes_apply_in_order_and_flush_waits_for_them,
    jobs_round_trip,
    keys_round_trip,
    registry_round_trip,
    accounts_credentials_and_forwarded_jobs_round_trip,
);

async fn standings_bans_and_refusals(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let (a, b, c) = ("0xAA00", "0xbb00", "0xcc00");
    let status = |x: &'static str| {
        let store = store.clone();
        async move {
            store
                .read(move |c| provider_status(c, x))
                .await
                .expect("status")
        }
    };
    let set = |x: &'static str, s: Standing, why: &'static str| {
        let store = store.clone();
        async move {
            store
                .write(move |c| match providers::set(c, x, s, why) {
                    Err(TrustError::Store(e)) => Err(e),
                    other => Ok(other),
                })
                .await
                .expect("store")
        }
    };
    assert_eq!(status(a).await, None);
    set(a, Standing::Approved, "known").await.expect("approve");
    set(b, Standing::Suspended, "slow").await.expect("suspend");
    set(c, Standing::Banned, "fraud").await.expect("ban");
    assert_eq!(
        status("0xaa00").await,
        Some((Standing::Approved, "known".into()))
    );
    assert_eq!(
        status("0xBB00").await,
        Some((Standing::Suspended, "slow".into()))
    );
    assert_eq!(status(c).await, Some((Standing::Banned, "fraud".into())));

    // A ban is final; a suspension is lifted by approval.
    let err = set(c, Standing::Approved, "").await.expect_err("banned");
    assert!(matches!(err, TrustError::Banned { .. }), "{err}");
    let refused = || {
        let store = store.clone();
        async move {
            let mut r = store.read(providers::refused).await.expect("refused");
            r.sort();
            r
        }
    };
    assert_eq!(
        refused().await,
        [
            ("0xbb00".into(), Standing::Suspended, "slow".into()),
            ("0xcc00".into(), Standing::Banned, "fraud".into()),
        ]
    );
    set(b, Standing::Approved, "ok").await.expect("approve");
    assert_eq!(refused().await.len(), 1);

    // A broker's own ban (a proof of cheat) is a ban too, and the
    // operator's ban keeps its proof.
    store
        .write(|c| providers::record_ban(c, "0xdd00", "proven cheat", Some(&[0]), 1))
        .await
        .expect("ban");
    assert_eq!(
        status("0xdd00").await,
        Some((Standing::Banned, "proven cheat".into()))
    );
    set("0xdd00", Standing::Banned, "again").await.expect("ban");
    let bans = store.read(providers::bans).await.expect("bans");
    let dd = bans.iter().find(|b| b.address == "0xdd00").expect("dd");
    assert!(dd.has_proof && dd.reason == "proven cheat", "{dd:?}");
    let listed = store.read(providers::list).await.expect("list");
    let addresses: Vec<&str> = listed.iter().map(|t| t.address.as_str()).collect();
    assert_eq!(addresses, ["0xaa00", "0xbb00", "0xcc00", "0xdd00"]);

    // Track records round-trip.
    let rep = brume_api::rest::Reputation::default();
    let records = vec![("0xaa00".to_string(), rep)];
    store
        .write(move |c| providers::reputation::save(c, &records))
        .await
        .expect("save");
    let loaded = store.read(providers::reputation::load).await.expect("load");
    assert_eq!(loaded, [("0xaa00".to_string(), rep)]);
}

fn insert_key(c: &mut dyn Sql, name: &str) -> Result<(), StoreError> {
    c.exec(
        "INSERT INTO api_keys (hash, name, created_at_ms, id, scopes) VALUES (?1, ?2, 0, ?2, '')",
        &[brume_sql::V::B(name.as_bytes()), brume_sql::V::T(name)],
    )?;
    Ok(())
}

/// A write that fails is rolled back whole: its earlier statements don't
/// reach the database, and later writes go on.
async fn a_failed_write_leaves_nothing_behind(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let err = store
        .write(|c| {
            insert_key(c, "partial")?;
            insert_key(c, "partial") // the same primary key: fails
        })
        .await
        .expect_err("a duplicate key");
    assert!(
        matches!(err, StoreError::Sql(_) | StoreError::Pg { .. }),
        "{err}"
    );
    store
        .write(|c| insert_key(c, "whole"))
        .await
        .expect("write");
    let names = store.read(keys::list).await.expect("read");
    let names: Vec<&str> = names.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["whole"]);
}

/// Writes nobody waits for apply in the order queued, a failing one alone
/// is rolled back, and `flush` returns once all of them are durable.
async fn queued_writes_apply_in_order_and_flush_waits_for_them(backend: Backend) {
    let (_dir, store) = open(backend).await;
    for i in 0..200 {
        store.write_later(move |c| insert_key(c, &format!("k{i:03}")));
    }
    store.write_later(|c| insert_key(c, "k000")); // a duplicate: dropped
    store.write_later(|c| {
        c.exec(
            "UPDATE api_keys SET scopes = 'read' WHERE name = 'k199'",
            &[],
        )?;
        Ok(())
    });
    store.flush().await.expect("flush");
    let listed = store.read(keys::list).await.expect("read");
    assert_eq!(listed.len(), 200);
    let last = listed.iter().find(|k| k.name == "k199").expect("k199");
    assert_eq!(last.scopes, [keys::Scope::Read], "the update ran after it");
}

fn stored_job(requester: &str, confirm: bool) -> StoredJob {
    serde_json::from_value(json!({
        "service": "hello", "digest": "d1", "kind": "command", "argv": ["hello"],
        "env": [], "stdin": Output::default(), "limits": brume_api::Limits::default(),
        "profile": brume_api::Profile::default(), "max_attempts": 3,
        "queue_timeout_ms": 1000, "max_price": null, "labels": {"team": "a"},
        "requester": requester, "confirm": confirm,
    }))
    .expect("a stored job")
}

fn job_info(id: WorkId, state: JobState) -> JobInfo {
    JobInfo {
        id,
        state,
        service: Some("hello".into()),
        digest: "d1".into(),
        attempts: 0,
        max_attempts: 3,
        provider: None,
        created_at_ms: 10,
        updated_at_ms: 10,
        error: None,
        labels: [("team".to_string(), "a".to_string())].into(),
    }
}

fn event(seq: u64, kind: &str) -> JobEvent {
    serde_json::from_value(json!({"seq": seq, "at_ms": 20 + seq, "kind": kind, "attempt": 1}))
        .expect("an event")
}

/// Two jobs: `a` queued (it asks for confirmation), `b` run to success
/// through queued records.
async fn two_jobs(store: Store) -> (Store, WorkId, WorkId, JobInfo, JobResult) {
    let (a, b) = (WorkId::new(), WorkId::new());
    store
        .insert(job_info(a, JobState::Queued), stored_job("0xaaa", true))
        .await
        .expect("insert");
    store
        .insert(job_info(b, JobState::Queued), stored_job("0xbbb", false))
        .await
        .expect("insert");
    // b runs and succeeds, in queued records.
    let mut running = job_info(b, JobState::Running);
    running.attempts = 1;
    running.provider = Some("0xp".into());
    JobStore::record(
        &store,
        JobRecord {
            id: b,
            event: event(1, "running"),
            info: Some(running.clone()),
            result: None,
        },
    );
    let mut done = running.clone();
    done.state = JobState::Succeeded;
    done.updated_at_ms = 30;
    let result = JobResult {
        id: b,
        state: JobState::Succeeded,
        exit_code: Some(0),
        stdout: Output(bytes::Bytes::from_static(b"hi\n")),
        stderr: Output(bytes::Bytes::from_static(&[0xff, 0])),
        usage: Default::default(),
        attempts: 1,
        provider: Some("0xp".into()),
        error: None,
        receipt: None,
        verification: None,
        outputs: Vec::new(),
    };
    JobStore::record(
        &store,
        JobRecord {
            id: b,
            event: event(2, "succeeded"),
            info: Some(done.clone()),
            result: Some(result.clone()),
        },
    );
    JobStore::flush(&store).await.expect("flush");
    (store, a, b, done, result)
}

async fn jobs_round_trip(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let (store, a, b, done, result) = two_jobs(store).await;
    let (info, account) = store.info(b).await.expect("info").expect("b");
    assert_eq!((info, account.as_str()), (done, "0xbbb"));
    assert_eq!(store.result(b).await.expect("result"), Some(result));
    let kinds: Vec<u64> = store
        .events(b)
        .await
        .expect("events")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(kinds, [1, 2]);
    // Only a is open; filters by state and account.
    let open: Vec<WorkId> = store
        .open_jobs()
        .await
        .expect("open")
        .iter()
        .map(|(i, _, _)| i.id)
        .collect();
    assert_eq!(open, [a]);
    let ids = |jobs: Vec<JobInfo>| jobs.iter().map(|j| j.id).collect::<Vec<_>>();
    let all = ids(JobStore::list(&store, None, None, 10).await.expect("list"));
    assert_eq!(all.len(), 2);
    assert_eq!(
        ids(JobStore::list(&store, Some(JobState::Succeeded), None, 10)
            .await
            .expect("list")),
        [b]
    );
    assert_eq!(
        ids(JobStore::list(&store, None, Some("0xaaa".into()), 10)
            .await
            .expect("list")),
        [a]
    );
    assert_eq!(
        JobStore::list(&store, None, None, 1)
            .await
            .expect("list")
            .len(),
        1
    );
    // Confirmation: a asked for it.
    assert_eq!(
        store.awaiting_confirmation().await.expect("awaiting"),
        [(a, None)]
    );
    assert_eq!(store.confirmation(a).await.expect("c"), (true, None));
    store.confirm(a, 99).await.expect("confirm");
    store.confirm(a, 100).await.expect("confirm twice");
    assert_eq!(store.confirmation(a).await.expect("c"), (true, Some(99)));
    assert!(store.awaiting_confirmation().await.expect("w").is_empty());
    assert_eq!(store.confirmation(b).await.expect("c"), (false, None));
    let stored = store.stored(a).await.expect("stored").expect("a");
    assert_eq!(stored.requester, "0xaaa");
    assert_eq!(store.info(WorkId::new()).await.expect("info"), None);
}

async fn keys_round_trip(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let new = keys::NewKey {
        name: "ci".into(),
        account: Some("0xabc".into()),
        scopes: vec![keys::Scope::Invoke, keys::Scope::Read],
        expires_at_ms: None,
    };
    let token = KeyStore::create(&store, new).await.expect("create");
    let hash = keys::hash(&token);
    let info = store.by_hash(hash).await.expect("by hash").expect("key");
    assert_eq!(info.id, keys::id_of(&hash));
    assert_eq!(info.account.as_deref(), Some("0xabc"));
    assert_eq!(info.scopes, [keys::Scope::Invoke, keys::Scope::Read]);
    assert_eq!(store.all_live().await.expect("live").len(), 1);
    let revoked = KeyStore::revoke(&store, info.id.clone())
        .await
        .expect("revoke")
        .expect("found");
    assert!(revoked.revoked_at_ms.is_some());
    assert!(store.all_live().await.expect("live").is_empty());
    assert_eq!(KeyStore::list(&store).await.expect("list").len(), 1);
    assert_eq!(
        KeyStore::revoke(&store, "nope".into())
            .await
            .expect("revoke"),
        None
    );
}

fn version(owner: &str, name: &str, v: u64, signed: bool) -> Version {
    Version {
        info: ServiceInfo {
            name: name.into(),
            owner: owner.into(),
            version: v,
            retired: false,
            kind: brume_api::ServiceKind::Command,
            digest: format!("d{v}"),
            size_bytes: 100 + v,
            created_at_ms: v,
            signed,
            developer_address: signed.then(|| "0xdev".to_string()),
            module_signature: signed.then(|| "0x0102".to_string()),
        },
        developer: if signed { "0xdev".into() } else { owner.into() },
        signature: signed.then(|| vec![1, 2]),
    }
}

async fn registry_round_trip(backend: Backend) {
    let (_dir, store) = open(backend).await;
    assert!(
        RegistryStore::load(&store)
            .await
            .expect("load")
            .versions
            .is_empty()
    );
    for v in [
        version("acme", "hello", 1, false),
        version("acme", "hello", 2, true),
        version("acme", "other", 1, false),
    ] {
        store.put_version(v).await.expect("put");
    }
    let again = store.put_version(version("acme", "hello", 2, false)).await;
    assert!(again.is_err(), "a version is never replaced");
    store
        .retire("acme".into(), "hello".into(), Some(1), 50)
        .await
        .expect("retire one");
    store
        .retire("acme".into(), "other".into(), None, 60)
        .await
        .expect("retire all");
    store
        .move_service("acme".into(), "hello".into(), "beta".into())
        .await
        .expect("move");
    let alias = AliasInfo {
        alias: "acme".into(),
        account: "0xacc".into(),
        created_at_ms: 5,
    };
    store.put_alias(alias.clone()).await.expect("alias");
    let mut loaded = RegistryStore::load(&store).await.expect("load");
    loaded
        .versions
        .sort_by_key(|v| (v.info.name.clone(), v.info.version));
    let seen: Vec<(&str, &str, u64, bool, &str)> = loaded
        .versions
        .iter()
        .map(|v| {
            (
                v.info.owner.as_str(),
                v.info.name.as_str(),
                v.info.version,
                v.info.retired,
                v.developer.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("beta", "hello", 1, true, "beta"),
            // Signed: its developer is the signer's, wherever it moves.
            ("beta", "hello", 2, false, "0xdev"),
            ("acme", "other", 1, true, "acme"),
        ]
    );
    assert_eq!(loaded.versions[1].signature.as_deref(), Some(&[1u8, 2][..]));
    assert_eq!(
        loaded.versions[1].info.module_signature.as_deref(),
        Some("0x0102")
    );
    assert_eq!(loaded.aliases, [alias]);
    store
        .put_module("d1".into(), bytes::Bytes::from_static(b"\0asm"))
        .await
        .expect("module");
    assert_eq!(
        store.module("d1".into()).await.expect("module").as_deref(),
        Some(&b"\0asm"[..])
    );
}

async fn accounts_credentials_and_forwarded_jobs_round_trip(backend: Backend) {
    let (dir, store) = open(backend).await;
    // Console accounts and sessions.
    let address = "0x00000000000000000000000000000000000000aa";
    crate::accounts::create(&store, "A@b.example", address, "a long password", true)
        .await
        .expect("create");
    let again = crate::accounts::create(&store, "a@b.example", address, "a long password", false);
    assert!(again.await.is_err(), "the email is taken");
    let accounts = crate::accounts::Accounts::open(store.clone())
        .await
        .expect("accounts");
    let crate::accounts::SignIn::Ok(token, session) = accounts
        .sign_in("a@b.example", "a long password", "client")
        .await
        .expect("sign in")
    else {
        panic!("refused")
    };
    assert_eq!(session.account, address);
    assert!(session.scopes.contains(&keys::Scope::Admin));
    assert_eq!(
        accounts.session(&token).await.expect("session"),
        Some(session)
    );
    accounts.end(&token).await.expect("end");
    assert_eq!(accounts.session(&token).await.expect("session"), None);

    // Lambda credentials.
    let (key_id, secret) = crate::lambda::creds::mint(dir.path(), &store, "0xacc")
        .await
        .expect("mint");
    let creds = crate::lambda::creds::Credentials::open(dir.path(), store.clone())
        .await
        .expect("credentials");
    assert_eq!(
        creds.lookup(&key_id).await.expect("lookup"),
        Some(("0xacc".to_string(), secret))
    );
    assert!(
        crate::lambda::creds::revoke(&store, &key_id)
            .await
            .expect("revoke")
    );
    assert_eq!(creds.lookup(&key_id).await.expect("lookup"), None);
    let listed = crate::lambda::creds::list(&store).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked_at_ms.is_some());

    // Forwarded jobs: a cap wider than any integer column.
    let job = ForwardedJob {
        id: WorkId::new(),
        requester: "0xr".into(),
        peer: "0xpeer".into(),
        url: "https://peer.example".into(),
        tls_sha256: None,
        cap: u128::MAX,
        billed: false,
    };
    assert!(ForwardedStore::load(&store).await.expect("load").is_empty());
    ForwardedStore::record(&store, job.clone())
        .await
        .expect("record");
    ForwardedStore::record(&store, job.clone())
        .await
        .expect("record again");
    store.billed(job.id).await.expect("billed");
    let loaded = ForwardedStore::load(&store).await.expect("load");
    assert_eq!(loaded.len(), 1);
    assert_eq!((loaded[0].cap, loaded[0].billed), (u128::MAX, true));
}

/// The server crashes (`pg_ctl stop -m immediate`) under a store that has
/// acknowledged writes: after it restarts, every acknowledged write is
/// there, the store reconnects on its own (writer and readers), and writes
/// go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_server_crash_loses_no_acknowledged_write() {
    let cluster = tokio::task::spawn_blocking(brume_pg::Cluster::start)
        .await
        .expect("join")
        .expect("a PostgreSQL cluster of this test's own");
    let cluster = std::sync::Arc::new(cluster);
    let db = cluster.database("broker").await.expect("database");
    crate::store::postgres::setup(&db.owner_url, Some(brume_pg::cluster::APP_ROLE))
        .await
        .expect("setup");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_postgres(&db.app_url, dir.path())
        .await
        .expect("open");
    for i in 0..20 {
        store
            .write(move |c| insert_key(c, &format!("before{i:02}")))
            .await
            .expect("write");
    }
    assert_eq!(store.read(keys::list).await.expect("read").len(), 20);

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.crash())
        .await
        .expect("join")
        .expect("crash the server");
    // While it is down, a write fails: it is not acknowledged.
    let down = store.write(|c| insert_key(c, "while-down")).await;
    assert!(down.is_err(), "a write with the server down: {down:?}");
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.restart())
        .await
        .expect("join")
        .expect("restart the server");

    store
        .write(|c| insert_key(c, "after"))
        .await
        .expect("a write after the restart");
    let names: Vec<String> = store
        .read(keys::list)
        .await
        .expect("a read after the restart")
        .into_iter()
        .map(|k| k.name)
        .collect();
    let mut want: Vec<String> = (0..20).map(|i| format!("before{i:02}")).collect();
    want.push("after".into());
    let mut got = names;
    got.sort();
    want.sort();
    assert_eq!(got, want, "every acknowledged write, nothing else");
}
