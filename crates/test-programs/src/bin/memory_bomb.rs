//! Allocates 1 MiB chunks (touching each) until something stops it.
fn main() {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        chunk[0] = 1;
        chunk[(1 << 20) - 1] = 1;
        hoard.push(std::hint::black_box(chunk));
    }
}
