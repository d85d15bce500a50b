//! Prints each argument on its own line, then exits with the code given by
//! `EXIT_CODE` (default 0).
fn main() {
    for a in std::env::args() {
        println!("{a}");
    }
    let code = std::env::var("EXIT_CODE")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    std::process::exit(code);
}
