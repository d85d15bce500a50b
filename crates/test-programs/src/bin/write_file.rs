//! `write_file PATH TEXT`: writes TEXT to PATH (for preopen tests).
fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_default();
    let text = args.next().unwrap_or_default();
    if let Err(e) = std::fs::write(&path, text) {
        println!("error: {e}");
        std::process::exit(1);
    }
}
