//! The queue's contract through real processes: concurrent callers of one
//! function on one two-slot provider are never refused, start in arrival
//! order within an account, and a second account's calls are not held
//! behind the first account's backlog; two accounts with backlogs take
//! turns.
//!
//! Order is checked on the broker's own sequence (`x-brume-arrival`,
//! `x-brume-dispatch`: one counter for arrivals and first dispatches), never
//! on time.

use brume_client::ServiceKind;

use crate::net::Net;

/// One answered call: its account and its two numbers.
#[derive(Debug, Clone)]
struct Call {
    account: usize,
    arrival: u64,
    dispatch: u64,
}

/// `callers` closed loops, each making `calls` calls of `echo` with the key
/// of its account (`keys[account]`); every answer must be 200.
async fn closed_loops(net: &Net, keys: &[(usize, String)], calls: usize) -> Vec<Call> {
    let http = reqwest::Client::new();
    let url = net.url("/v1/functions/default~echo/invoke");
    let mut loops = Vec::new();
    for (account, key) in keys.iter().cloned() {
        let (http, url) = (http.clone(), url.clone());
        loops.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(calls);
            for i in 0..calls {
                let resp = http
                    .post(&url)
                    .bearer_auth(&key)
                    .body(format!("call {i}"))
                    .send()
                    .await
                    .expect("send a call");
                let status = resp.status();
                let number = |name: &str| -> u64 {
                    resp.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| panic!("no {name} header on a {status} answer"))
                };
                assert_eq!(status, 200, "call {i} of account {account} refused");
                let call = Call {
                    account,
                    arrival: number(brume_api::headers::ARRIVAL),
                    dispatch: number(brume_api::headers::DISPATCH),
                };
                let body = resp.bytes().await.expect("body");
                assert!(!body.is_empty(), "echo answered nothing");
                out.push(call);
            }
            out
        }));
    }
    let mut all = Vec::new();
    for l in loops {
        all.extend(l.await.expect("a caller panicked"));
    }
    all
}

async fn echo_net(key_names: &[&str]) -> Net {
    let net = Net::start_with(1, 2, None, key_names).await;
    net.publish(
        "echo",
        ServiceKind::Command,
        test_programs_artifacts::ECHO_P1_BYTES,
    )
    .await;
    net
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_callers_on_two_slots_are_all_served_in_arrival_order() {
    let net = echo_net(&[]).await;
    let keys: Vec<(usize, String)> = (0..8).map(|_| (0, net.key.clone())).collect();
    let mut calls = closed_loops(&net, &keys, 250).await;
    assert_eq!(calls.len(), 2000, "every call answered 200");
    calls.sort_by_key(|c| c.arrival);
    for pair in calls.windows(2) {
        assert!(
            pair[0].dispatch < pair[1].dispatch,
            "a call that arrived later started first: {pair:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_account_is_not_held_behind_the_first_ones_backlog() {
    let net = echo_net(&["flood", "trickle"]).await;
    // Account 0 keeps 12 calls going on 2 slots (a standing backlog);
    // account 1 calls one at a time.
    let mut keys: Vec<(usize, String)> = (0..12).map(|_| (0, net.named_keys[0].clone())).collect();
    keys.push((1, net.named_keys[1].clone()));
    let calls = closed_loops(&net, &keys, 100).await;
    let (flood, trickle): (Vec<Call>, Vec<Call>) = calls.into_iter().partition(|c| c.account == 0);
    assert_eq!(flood.len(), 1200);
    assert_eq!(trickle.len(), 100);
    // Between a trickle call's arrival and its dispatch, the flood gets at
    // most one turn per slot (first come, first served would make it wait
    // behind the whole backlog of up to 10 queued calls).
    let mut dispatches: Vec<u64> = flood.iter().map(|c| c.dispatch).collect();
    dispatches.sort_unstable();
    let worst = trickle
        .iter()
        .map(|t| {
            let from = dispatches.partition_point(|&d| d < t.arrival);
            let to = dispatches.partition_point(|&d| d < t.dispatch);
            to - from
        })
        .max()
        .unwrap_or(0);
    assert!(
        worst <= 2,
        "a trickle call waited while {worst} flood calls were dispatched"
    );
    // And each account is still served in its own arrival order.
    for mut list in [flood, trickle] {
        list.sort_by_key(|c| c.arrival);
        assert!(list.windows(2).all(|p| p[0].dispatch < p[1].dispatch));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_accounts_with_backlogs_take_turns() {
    let net = echo_net(&["left", "right"]).await;
    // Both accounts keep 6 calls going on 2 slots: both always have a
    // backlog, so each dispatch should go to the account whose turn it is.
    let keys: Vec<(usize, String)> = (0..12)
        .map(|i| (i % 2, net.named_keys[i % 2].clone()))
        .collect();
    let mut calls = closed_loops(&net, &keys, 100).await;
    assert_eq!(calls.len(), 1200, "every call answered 200");
    calls.sort_by_key(|c| c.dispatch);
    // A turn is skipped when one account gets two dispatches in a row while
    // a call of the other was queued across both.
    let waiting = |account: usize, from: u64, to: u64| {
        calls
            .iter()
            .any(|c| c.account == account && c.arrival < from && c.dispatch > to)
    };
    let contested: Vec<&[Call]> = calls
        .windows(2)
        .filter(|p| waiting(1 - p[0].account, p[0].dispatch, p[0].dispatch))
        .collect();
    let skipped = contested
        .iter()
        .filter(|p| {
            p[0].account == p[1].account && waiting(1 - p[0].account, p[0].dispatch, p[1].dispatch)
        })
        .count();
    assert!(
        contested.len() >= 600,
        "the accounts were rarely both queued ({} contested dispatches)",
        contested.len()
    );
    assert!(
        skipped * 100 <= contested.len(),
        "{skipped} of {} contested dispatches went to the account that had just had one",
        contested.len()
    );
    // Each account is still served in its own arrival order.
    for account in 0..2 {
        let mut list: Vec<&Call> = calls.iter().filter(|c| c.account == account).collect();
        list.sort_by_key(|c| c.arrival);
        assert!(list.windows(2).all(|p| p[0].dispatch < p[1].dispatch));
    }
}
