//! `brume broker accounts create`: a console account (an email and a
//! password, hashed with Argon2id) for an account address, written to the
//! broker's database whether or not the broker runs.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum AccountsCommand {
    /// Make an account. The password comes from standard input (its first
    /// line), or from the terminal when that is one.
    Create {
        #[arg(long, env = "BRUME_DATA_DIR")]
        data: Option<PathBuf>,
        /// The email the account signs in with.
        #[arg(long)]
        email: String,
        /// The account address it acts as (0x + 40 hex digits).
        #[arg(long, value_name = "0xADDRESS")]
        address: brume_chain::Address,
        /// The operator's pages too (the `admin` scope).
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        json: bool,
    },
}

fn password() -> std::io::Result<String> {
    use std::io::IsTerminal as _;
    if std::io::stdin().is_terminal() {
        return brume_identity::keyring::prompt_password("password: ")
            .map(Option::unwrap_or_default);
    }
    let mut text = String::new();
    std::io::stdin().take(64 << 10).read_to_string(&mut text)?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

pub async fn main(cmd: AccountsCommand, file: &crate::config::BrokerSection) -> ExitCode {
    let AccountsCommand::Create {
        data,
        email,
        address,
        admin,
        json,
    } = cmd;
    let dir = data
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(crate::broker::default_data_dir);
    let password = match password() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: reading the password: {e}");
            return ExitCode::FAILURE;
        }
    };
    let address = address.to_string();
    let store = match crate::broker::open_store(&dir, file).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match brume_broker::accounts::create(&store, &email, &address, &password, admin).await {
        Ok(()) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"email": email.trim().to_ascii_lowercase(), "address": address, "admin": admin})
                );
            } else {
                println!(
                    "account {email} for {address} created{}",
                    if admin { " (admin)" } else { "" }
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
