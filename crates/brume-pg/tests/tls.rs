//! TLS to a real server: verified against a given CA, refused without it,
//! and required when the URL says `sslmode=require`.

use brume_pg::Cluster;
use brume_pg::tls::MakeRustls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_and_required_when_asked() {
    let cluster = tokio::task::spawn_blocking(Cluster::start_tls)
        .await
        .expect("join")
        .expect("a TLS cluster");
    let ca = cluster.tls_cert().expect("its certificate").to_string();
    let trusting = MakeRustls::new(
        &brume_tls::Trust::default()
            .with_ca_pem(ca.as_bytes(), "the test server")
            .expect("CA"),
    )
    .expect("tls");
    for host in ["localhost", "127.0.0.1"] {
        let url = format!(
            "postgres://postgres@{host}:{}/postgres?sslmode=require",
            cluster.port()
        );
        let client = brume_pg::connect_with(&url, trusting.clone())
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let ssl: bool = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .expect("pg_stat_ssl")
            .get(0);
        assert!(ssl, "{url}: the connection is encrypted");

        // The web roots alone don't know a self-signed server.
        let strangers = MakeRustls::new(&brume_tls::Trust::default()).expect("tls");
        let e = brume_pg::connect_with(&url, strangers)
            .await
            .expect_err("an unknown certificate is refused");
        assert!(format!("{e:?}").contains("UnknownIssuer"), "{e:?}");
    }
}

/// A server without TLS: `require` fails, `prefer` (the default) falls
/// back to plain TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_fails_on_a_server_without_tls() {
    let cluster = tokio::task::spawn_blocking(Cluster::start)
        .await
        .expect("join")
        .expect("a cluster");
    let url = cluster.url("postgres", "postgres");
    brume_pg::connect(&url).await.expect("prefer falls back");
    let e = brume_pg::connect(&format!("{url}?sslmode=require"))
        .await
        .expect_err("require");
    assert!(e.to_string().to_lowercase().contains("tls"), "{e}");
}
