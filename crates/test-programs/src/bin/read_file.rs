//! `read_file PATH`: prints the file, or `error: ...` and exits 1.
fn main() {
    let path = std::env::args().nth(1).unwrap_or_default();
    match std::fs::read(&path) {
        Ok(bytes) => print!("{}", String::from_utf8_lossy(&bytes)),
        Err(e) => {
            println!("error: {e}");
            std::process::exit(1);
        }
    }
}
