//! `brume provide`: run a provider daemon; `brume provide status`.

use std::process::ExitCode;

use crate::config::ProviderSection;

#[derive(Debug, clap::Args)]
pub struct ProvideArgs {}

pub async fn main(_args: ProvideArgs, _file: &ProviderSection) -> ExitCode {
    eprintln!("error: brume provide is not built yet");
    ExitCode::FAILURE
}
