//! A CPU-bound loop: `cpu_loop N` runs N rounds of an xorshift mix and prints
//! the result, so the work is deterministic and cannot be optimized away.
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
    println!("{x}");
}
