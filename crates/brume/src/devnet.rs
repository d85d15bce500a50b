//! `brume devnet`: a broker and N providers on loopback.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct DevnetArgs {}

pub async fn main(_args: DevnetArgs) -> ExitCode {
    eprintln!("error: brume devnet is not built yet");
    ExitCode::FAILURE
}
