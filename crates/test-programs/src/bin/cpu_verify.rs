//! A verifier for `cpu_loop`: `cpu_verify N` reads what `cpu_loop N`
//! printed on stdin and exits 0 if it is right, 1 if not (brume's
//! `verify: verifier {service}` policy: the job's args as args, its stdout
//! as stdin).
use std::io::Read as _;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(i);
    }
    let mut got = String::new();
    let ok = std::io::stdin().read_to_string(&mut got).is_ok() && got.trim() == x.to_string();
    if ok {
        println!("ok");
    } else {
        println!("rejected: expected {x}");
        std::process::exit(1);
    }
}
