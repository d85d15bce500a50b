//! `--ca FILE` and `--pin-sha256 HEX`: whom a command trusts as the broker
//! over `https://` / `wss://` (see `brume_tls`). The flags (or their
//! `BRUME_CA` / `BRUME_PIN_SHA256` variables) win over the config file's
//! `ca` / `pin_sha256` keys as a pair; neither means the built-in roots.

use std::path::{Path, PathBuf};

use brume_tls::Trust;

const CA_HELP: &str = "For an https:// broker: also trust this CA certificate (PEM), \
                       besides the built-in roots";
const PIN_HELP: &str = "For an https:// broker: trust only the certificate with this SHA-256 \
                        fingerprint (64 hex digits, `:` allowed; what the broker prints), \
                        whatever its names or issuer";

/// `--ca` and `--pin-sha256` on a command without subcommands.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrustArgs {
    #[arg(long, env = "BRUME_CA", value_name = "FILE", help = CA_HELP, conflicts_with = "pin_sha256")]
    pub ca: Option<PathBuf>,
    #[arg(long, env = "BRUME_PIN_SHA256", value_name = "HEX", help = PIN_HELP)]
    pub pin_sha256: Option<String>,
}

/// The same flags on a command with subcommands (accepted after them).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GlobalTrustArgs {
    #[arg(
        long,
        env = "BRUME_CA",
        value_name = "FILE",
        help = CA_HELP,
        global = true,
        conflicts_with = "pin_sha256"
    )]
    pub ca: Option<PathBuf>,
    #[arg(long, env = "BRUME_PIN_SHA256", value_name = "HEX", help = PIN_HELP, global = true)]
    pub pin_sha256: Option<String>,
}

impl TrustArgs {
    /// The trust these flags say, else what the config file says.
    pub fn trust(&self, file_ca: Option<&Path>, file_pin: Option<&str>) -> anyhow::Result<Trust> {
        resolve(
            self.ca.as_deref(),
            self.pin_sha256.as_deref(),
            file_ca,
            file_pin,
        )
    }
}

impl GlobalTrustArgs {
    /// The trust these flags say, else what the config file says.
    pub fn trust(&self, file_ca: Option<&Path>, file_pin: Option<&str>) -> anyhow::Result<Trust> {
        resolve(
            self.ca.as_deref(),
            self.pin_sha256.as_deref(),
            file_ca,
            file_pin,
        )
    }
}

fn resolve(
    ca: Option<&Path>,
    pin: Option<&str>,
    file_ca: Option<&Path>,
    file_pin: Option<&str>,
) -> anyhow::Result<Trust> {
    fn nonempty(s: Option<&str>) -> Option<&str> {
        s.map(str::trim).filter(|s| !s.is_empty())
    }
    let pin = nonempty(pin);
    let (ca, pin, whence) = if ca.is_some() || pin.is_some() {
        (ca, pin, "--ca/--pin-sha256")
    } else {
        (file_ca, nonempty(file_pin), "config ca/pin_sha256")
    };
    Trust::from_options(ca, pin).map_err(|e| anyhow::anyhow!("{whence}: {e}"))
}

/// A reqwest error as a sentence: a pin mismatch says which fingerprints,
/// anything else keeps its causes.
pub fn http_error(e: reqwest::Error, what: String) -> anyhow::Error {
    match brume_tls::explain(&e) {
        Some(text) => anyhow::anyhow!("{what}: {text}"),
        None => anyhow::Error::new(e).context(what),
    }
}
