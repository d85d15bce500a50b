//! Behaviour of the sandbox through its public API, on real guest programs.

mod util;

mod cache;
mod commands;
mod determinism;
mod errors;
mod hostile;
mod http;
mod isolation;
mod progress;
