//! `brume broker`: run a broker; `brume broker keys create`: mint an API key.

use std::process::ExitCode;

use crate::config::BrokerSection;

#[derive(Debug, clap::Args)]
pub struct BrokerArgs {}

pub async fn main(_args: BrokerArgs, _file: &BrokerSection) -> ExitCode {
    eprintln!("error: brume broker is not built yet");
    ExitCode::FAILURE
}
