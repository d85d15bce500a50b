//! Never returns.
fn main() {
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(3).wrapping_add(1));
    }
}
