//! `brume bench` runs that need nothing outside this process (the EVM
//! ones are in `evm.rs`; `container` needs bubblewrap and busybox-static,
//! as the container tests do): small sizes, checked for complete figures,
//! never for speed.

use crate::net::command;

/// `brume bench NAME ARGS --json`: its last stdout line, as JSON.
fn bench(args: &[&str]) -> serde_json::Value {
    let home = tempfile::tempdir().expect("tempdir");
    let out = command(home.path())
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("brume bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().expect("a JSON line")).expect("JSON")
}

#[test]
fn bench_federation_forwards_every_call_and_reports_hop_convergence_and_traffic() {
    let v = bench(&["federation", "--calls", "20"]);
    assert_eq!(v["bench"], "federation", "{v}");
    assert_eq!(v["calls"], 20, "{v}");
    // Every measured call at A came back from B (the bench checks each
    // answer's x-brume-broker and fails otherwise).
    assert_eq!(v["forwarded_calls"], 20, "{v}");
    assert_eq!(v["brokers"], 20, "{v}");
    for key in [
        "forwarded_p50_us",
        "forwarded_p99_us",
        "local_p50_us",
        "local_p99_us",
        "ratio_p50",
        "convergence_ms_3",
        "convergence_ms_20",
        "announce_every_ms",
        "announcement_bytes",
        "announce_bytes_per_s",
        "announcements_per_s",
    ] {
        let x = v[key].as_f64().unwrap_or_default();
        assert!(x > 0.0 && x.is_finite(), "{key}: {x} in {v}");
    }
    // One broker's traffic is its own announcements, each at most the
    // protocol's bound.
    let bytes = v["announcement_bytes"]
        .as_u64()
        .expect("announcement_bytes");
    assert!(
        bytes <= brume_client::brume_api::federation::MAX_ANNOUNCEMENT_BYTES as u64,
        "{v}"
    );
}

#[test]
fn bench_container_reports_start_cold_start_and_cpu_metering_against_baselines() {
    let v = bench(&["container", "--duration", "2s"]);
    assert_eq!(v["bench"], "container", "{v}");
    for key in [
        "start_p50_ms",
        "start_p99_ms",
        "running_event_p50_ms",
        "jobs",
        "baseline_runner_p50_ms",
        "baseline_spawn_p50_ms",
        "start_runner_ratio_p50",
        "cold_start_ms",
        "cold_running_event_ms",
        "unpack_ms",
        "cpu_pairs",
        "cpu_bare_ms",
        "cpu_contained_ms",
        "cpu_metering_overhead_ratio",
        "cpu_loop_only_ratio",
        "cpu_bare_cpu_ns",
        "cpu_contained_cpu_ns",
        "cpu_metered_ratio",
    ] {
        let x = v[key].as_f64().unwrap_or_default();
        assert!(x > 0.0 && x.is_finite(), "{key}: {x} in {v}");
    }
}

#[test]
fn bench_lease_reports_an_exact_drip_and_its_halt_and_resume_latencies() {
    let v = bench(&["lease", "--duration", "2s"]);
    assert_eq!(v["bench"], "lease", "{v}");
    assert_eq!(
        v["drip_error_units"], 0,
        "the rows are the exact integral: {v}"
    );
    assert!(v["drip_rows"].as_u64().is_some_and(|n| n >= 1), "{v}");
    for key in [
        "drip_running_ms",
        "halt_latency_ms",
        "resume_latency_ms",
        "baseline_job_start_ms",
        "ratio_resume_vs_job_start",
    ] {
        let x = v[key].as_f64().unwrap_or(-1.0);
        assert!(x >= 0.0 && x.is_finite(), "{key}: {x} in {v}");
    }
}

#[test]
fn bench_scale_connects_every_session_and_work_reaches_them_all() {
    scale(&["scale", "--sessions", "40", "--duration", "2s"], false);
}

/// The same over HTTPS and WSS, the broker's certificate pinned.
#[test]
fn bench_scale_runs_over_tls() {
    scale(
        &["scale", "--sessions", "40", "--duration", "2s", "--tls"],
        true,
    );
}

fn scale(args: &[&str], tls: bool) {
    let v = bench(args);
    assert_eq!(v["bench"], "scale", "{v}");
    assert_eq!(v["tls"], tls, "{v}");
    assert_eq!(v["sessions"], 40, "{v}");
    // Each session has one slot and holds its job until all are placed:
    // one job each.
    assert_eq!(v["reached_sessions"], 40, "{v}");
    for key in [
        "connect_seconds",
        "broker_rss_per_session_kb",
        "heartbeat_cpu_share",
        "match_p50_us",
        "match_p99_us",
        "invoke_p50_us",
        "invoke_one_session_p50_us",
    ] {
        let x = v[key].as_f64().unwrap_or(-1.0);
        assert!(x.is_finite() && x >= 0.0, "{key}: {x} in {v}");
    }
}

#[test]
fn bench_invoke_measures_the_wasi_http_single_hop_and_the_ledger() {
    let v = bench(&["invoke", "--duration", "2s"]);
    assert_eq!(v["bench"], "invoke", "{v}");
    for key in [
        "p50_us",
        "baseline_p50_us",
        "throughput_per_s",
        "http_p50_us",
        "http_p99_us",
        "single_hop_p50_us",
        "single_hop_p99_us",
        "ratio_vs_single_hop",
        "ledger_rows_per_s",
    ] {
        let x = v[key].as_f64().unwrap_or(-1.0);
        assert!(x.is_finite() && x > 0.0, "{key}: {x} in {v}");
    }
    assert!(v["ledger_backlog_rows"].as_u64().is_some(), "{v}");
}

/// On a throwaway PostgreSQL cluster (Debian's postgresql, as the store
/// tests use).
#[test]
fn bench_ledger_on_postgres_ingests_copies_and_audits_clean() {
    let v = bench(&["ledger", "--store", "postgres", "--duration", "3s"]);
    assert_eq!(v["bench"], "ledger", "{v}");
    assert_eq!(v["store"], "postgres", "{v}");
    for key in [
        "ingest_rows_per_s",
        "baseline_rows_per_s",
        "ratio",
        "audit_rows_per_s",
        "p50_commit_latency_ms",
    ] {
        let x = v[key].as_f64().unwrap_or(-1.0);
        assert!(x.is_finite() && x > 0.0, "{key}: {x} in {v}");
    }
    assert!(v["rows"].as_u64().unwrap_or_default() > 0, "{v}");
}

/// `bench job --store postgres`: the broker's store, ledger and journal on
/// a throwaway PostgreSQL cluster, against the same jobs on SQLite.
#[test]
fn bench_job_on_postgres_measures_against_sqlite() {
    let v = bench(&["job", "--store", "postgres", "--duration", "2s"]);
    assert_eq!(v["bench"], "job", "{v}");
    assert_eq!(v["store"], "postgres", "{v}");
    for key in [
        "submit_to_running_p50_ms",
        "submit_to_done_p50_ms",
        "baseline_submit_to_running_p50_ms",
        "baseline_submit_to_done_p50_ms",
        "ratio_submit_to_done_p50",
    ] {
        let x = v[key].as_f64().unwrap_or(-1.0);
        assert!(x.is_finite() && x > 0.0, "{key}: {x} in {v}");
    }
    for key in ["jobs", "baseline_jobs"] {
        assert!(v[key].as_u64().unwrap_or_default() >= 20, "{key} in {v}");
    }
}
