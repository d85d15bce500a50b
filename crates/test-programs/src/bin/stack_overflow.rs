//! Recurses without bound.
#[allow(unconditional_recursion)]
fn down(n: u64) -> u64 {
    let pad = std::hint::black_box([n; 16]);
    down(pad[3] + 1) + pad[7]
}

fn main() {
    println!("{}", down(0));
}
