//! `GET /v1/offers` and `brume offers` across four real providers with
//! different resources, prices and places.

use crate::net::{Net, command};

/// Paris, London, New York, Tokyo.
const PARIS: &str = "48.8566,2.3522";
const LONDON: &str = "51.5074,-0.1278";
const NEW_YORK: &str = "40.7128,-74.0060";
const TOKYO: &str = "35.6762,139.6503";

/// A provider with `slots`, `[memory, price, region, place]`, and
/// containers or not.
async fn start(net: &mut Net, slots: u32, shape: [&str; 4], containers: bool) -> usize {
    let [memory, price, region, place] = shape;
    let mut args = vec![
        "--memory",
        memory,
        "--price-ask",
        price,
        "--region",
        region,
        "--location",
        place,
    ];
    if containers {
        args.push("--containers");
    }
    net.add_provider_args(slots, &args).await
}

async fn offers(
    client: &brume_client::Client,
    pairs: &[(&str, &str)],
) -> brume_api::rest::OfferList {
    let q: Vec<(&str, String)> = pairs.iter().map(|(k, v)| (*k, v.to_string())).collect();
    client.offers(&q).await.expect("offers")
}

#[tokio::test(flavor = "multi_thread")]
async fn offers_filter_sort_and_page_across_four_providers() {
    let mut net = Net::start(0, 1).await;
    let paris = start(&mut net, 4, ["4GiB", "30", "eu", PARIS], false).await;
    let london = start(&mut net, 2, ["1GiB", "10", "eu", LONDON], false).await;
    let new_york = start(&mut net, 1, ["2GiB", "20", "us", NEW_YORK], true).await;
    let tokyo = start(&mut net, 8, ["8GiB", "40", "ap", TOKYO], false).await;
    let addr = |i: usize| net.providers[i].address.clone();
    let client = net.client.clone();
    let query = |pairs: &'static [(&'static str, &'static str)]| offers(&client, pairs);
    let order = |l: &brume_api::rest::OfferList| -> Vec<String> {
        l.offers.iter().map(|o| o.address.clone()).collect()
    };

    // Cheapest first by default.
    let all = query(&[]).await;
    assert_eq!(all.total, 4);
    assert_eq!(
        order(&all),
        [addr(london), addr(new_york), addr(paris), addr(tokyo)]
    );
    assert!(
        all.offers
            .iter()
            .all(|o| o.measured_mips > 0 && o.location.is_some())
    );
    // Filters.
    let oci = query(&[("runtime", "oci")]).await;
    assert_eq!(order(&oci), [addr(new_york)]);
    let big = query(&[("min_memory", "3221225472")]).await;
    assert_eq!(order(&big), [addr(paris), addr(tokyo)]);
    let cheap_eu = query(&[("region", "eu"), ("max_price", "20")]).await;
    assert_eq!(order(&cheap_eu), [addr(london)]);
    let roomy = query(&[("min_slots", "4")]).await;
    assert_eq!(order(&roomy), [addr(paris), addr(tokyo)]);
    assert_eq!(query(&[("gpu", "1")]).await.total, 0);
    // Nearest to Paris first, with distances.
    let near = query(&[("near", PARIS), ("sort", "distance")]).await;
    assert_eq!(
        order(&near),
        [addr(paris), addr(london), addr(new_york), addr(tokyo)]
    );
    let km: Vec<f64> = near
        .offers
        .iter()
        .map(|o| o.distance_km.expect("km"))
        .collect();
    assert!(km[0] < 1.0 && (300.0..400.0).contains(&km[1]), "{km:?}");
    // Pages.
    let first = query(&[("limit", "3")]).await;
    assert_eq!((first.offers.len(), first.next_offset), (3, Some(3)));
    let rest = query(&[("limit", "3"), ("offset", "3")]).await;
    assert_eq!((order(&rest), rest.next_offset), (vec![addr(tokyo)], None));

    // The CLI: JSON, a table, and a refused filter.
    let cli = |extra: &[&str]| {
        command(net.home())
            .args(["offers", "--broker", &net.broker.url, "--api-key", &net.key])
            .args(extra)
            .output()
            .expect("brume offers")
    };
    let out = cli(&[
        "--json", "--near", TOKYO, "--sort", "distance", "--limit", "1",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        v["offers"][0]["address"].as_str(),
        Some(addr(tokyo).as_str()),
        "{v}"
    );
    assert_eq!(v["next_offset"], 1, "{v}");
    let out = cli(&["--runtime", "oci"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("PROVIDER")
            && text.contains(&addr(new_york))
            && text.contains("1 of 1 offers"),
        "{text}"
    );
    let out = cli(&["--sort", "distance"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("near"), "{err}");

    // Probes: a service called on each of the top offers, pinned to it.
    net.publish(
        "echo",
        brume_client::ServiceKind::Command,
        test_programs_artifacts::ECHO_P1_BYTES,
    )
    .await;
    let out = cli(&[
        "--json",
        "--region",
        "eu",
        "--probe",
        "default~echo",
        "--probe-top",
        "4",
        "--probe-calls",
        "2",
        "--probe-data",
        "ping",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let probes = v["probes"].as_array().expect("probes");
    let mut probed: Vec<&str> = probes
        .iter()
        .filter_map(|p| p["address"].as_str())
        .collect();
    probed.sort();
    let mut eu = vec![addr(paris), addr(london)];
    eu.sort();
    assert_eq!(probed, eu, "{v}");
    for p in probes {
        assert_eq!(
            (p["answered"].as_u64(), p["calls"].as_u64()),
            (Some(2), Some(2)),
            "{p}"
        );
        assert!(p["latency_us"].as_u64().is_some_and(|us| us > 0), "{p}");
        assert!(p["speed_mips"].as_u64().is_some(), "{p}");
    }
    // Pinned to a provider that is not connected: 503.
    let resp = reqwest::Client::new()
        .post(net.url("/v1/functions/default~echo/invoke"))
        .bearer_auth(&net.key)
        .header(
            brume_api::headers::PROVIDER,
            format!("0x{}", "00".repeat(20)),
        )
        .send()
        .await
        .expect("call");
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(body["code"], "provider_unavailable", "{body}");
}
