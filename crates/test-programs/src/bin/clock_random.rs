//! Prints the wall clock, a monotonic interval and 16 random bytes: all of
//! them fixed in deterministic mode, all of them varying otherwise.
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after epoch");
    let t0 = Instant::now();
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("random");
    let elapsed = t0.elapsed();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    println!("wall_ns={}", wall.as_nanos());
    println!("elapsed_ns={}", elapsed.as_nanos());
    println!("random={hex}");
    let map: std::collections::HashMap<u32, u32> = (0..8).map(|i| (i, i)).collect();
    let order: Vec<u32> = map.keys().copied().collect();
    println!("hash_order={order:?}");
}
