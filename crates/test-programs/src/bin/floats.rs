//! Produces NaNs with payloads and prints their bits: the output differs
//! across hardware unless NaNs are canonicalized.
fn main() {
    let a = std::hint::black_box(f64::from_bits(0x7ff8_0000_0000_0001));
    let b = std::hint::black_box(-0.0f64);
    let c = std::hint::black_box(0.0f64) / b;
    let d = a + c;
    let e = std::hint::black_box(f32::NAN) * 2.0;
    println!(
        "{:016x} {:016x} {:08x}",
        c.to_bits(),
        d.to_bits(),
        e.to_bits()
    );
}
