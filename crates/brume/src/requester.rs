//! Requester commands: `service`, `invoke`, `run`, `job`.

use std::process::ExitCode;

use crate::config::ClientSection;

#[derive(Debug, clap::Args)]
pub struct ServiceArgs {}
#[derive(Debug, clap::Args)]
pub struct InvokeArgs {}
#[derive(Debug, clap::Args)]
pub struct RunArgs {}
#[derive(Debug, clap::Args)]
pub struct JobArgs {}

fn not_yet() -> ExitCode {
    eprintln!("error: not built yet");
    ExitCode::FAILURE
}

pub async fn service(_args: ServiceArgs, _file: &ClientSection) -> ExitCode {
    not_yet()
}
pub async fn invoke(_args: InvokeArgs, _file: &ClientSection) -> ExitCode {
    not_yet()
}
pub async fn run(_args: RunArgs, _file: &ClientSection) -> ExitCode {
    not_yet()
}
pub async fn job(_args: JobArgs, _file: &ClientSection) -> ExitCode {
    not_yet()
}
