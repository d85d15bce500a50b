//! Paths and bytes of the guest programs in `crates/test-programs` and
//! `examples/`, compiled by this crate's build script.
//!
//! For every WASI command `NAME` in `test-programs` there is `NAME_P1` (a
//! wasm32-wasip1 core module) and `NAME_P2` (a wasm32-wasip2 component), each
//! a `&str` path, plus `NAME_P1_BYTES` / `NAME_P2_BYTES`. `HTTP_HELLO` is the
//! `wasi:http` proxy component; `IMAGE_TRANSFORM` and `MONTE_CARLO` are the
//! examples (wasip1). `WAT_DIR` holds hand-written fixtures for cases Rust
//! cannot express (see [`wat`]).

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// The path of the WAT fixture `name` (without `.wat`).
pub fn wat(name: &str) -> String {
    format!("{WAT_DIR}/{name}.wat")
}
