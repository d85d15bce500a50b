//! `brume keys new|list|show|import`: the keyring, a directory of Web3
//! Secret Storage (v3 JSON) keystores (`brume_identity::keyring`). The
//! address of a key is its account.
//!
//! The directory is `--keys-dir`, else `$BRUME_KEYS_DIR`, else
//! `~/.config/brume/keys`.
//!
//! A password is read, in this order, from:
//! 1. `--password-file FILE`: its first line, without the line ending;
//! 2. `$BRUME_KEY_PASSWORD`;
//! 3. a prompt on the terminal (twice for a new password).
//!
//! Without any (CI, a service), the command fails. A new key with an empty
//! password is refused unless `--insecure-empty-password` is given.
//! `import` of a keystore decrypts it with `--source-password-file`, else a
//! prompt, else the keyring password.
//!
//! `new` and `import` print the address on stdout (and what they did on
//! stderr), so scripts can capture it. `--json` prints one JSON object.
//! Exit codes: 0 done, 1 failed (a wrong password included), 2 no keyring
//! directory.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use brume_identity::Identity;
use brume_identity::keyring::{self, KeyEntry, Keyring};
use serde_json::json;

/// The variable a password is read from when there is no password file.
const PASSWORD_ENV: &str = "BRUME_KEY_PASSWORD";
/// The most bytes read from an import source or a password file.
const MAX_INPUT: u64 = 64 * 1024;

/// Asks for a password; `None` when there is no terminal. Tests pass one
/// that never asks.
type Prompt = fn(&str) -> anyhow::Result<Option<String>>;

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    /// The keyring directory (default: ~/.config/brume/keys).
    #[arg(long, global = true, env = "BRUME_KEYS_DIR", value_name = "DIR")]
    keys_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    /// Make a new key and add it to the keyring.
    New {
        /// A name to find the key by, instead of its address.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        password: NewPassword,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the keys: address, name and file.
    List {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show a key's address and public key (never its private key).
    Show {
        /// The key's address or name.
        key: String,
        /// Only for a keystore that records no public key: read its
        /// password from the first line of FILE.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Add an existing key, re-encrypted under a keyring password.
    Import {
        /// A file holding the private key as hex (with or without 0x), or a
        /// v3 keystore JSON file (go-ethereum, Foundry, ethers…); `-` reads
        /// it from stdin.
        source: PathBuf,
        /// A name to find the key by, instead of its address.
        #[arg(long)]
        name: Option<String>,
        /// The password of a keystore SOURCE, from the first line of FILE
        /// (default: a prompt on the terminal, else the keyring password).
        #[arg(long, value_name = "FILE")]
        source_password_file: Option<PathBuf>,
        #[command(flatten)]
        password: NewPassword,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// The password a key is stored under.
#[derive(Debug, Clone, Default, clap::Args)]
struct NewPassword {
    /// Read the password from the first line of FILE (default:
    /// $BRUME_KEY_PASSWORD, else a prompt on the terminal).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Accept an empty password, which leaves the key unprotected.
    #[arg(long)]
    insecure_empty_password: bool,
}

pub fn main(args: KeysArgs) -> ExitCode {
    let Some(dir) = args.keys_dir.or_else(Keyring::default_dir) else {
        eprintln!(
            "error: keys: no keyring directory: set HOME or BRUME_KEYS_DIR, or pass --keys-dir"
        );
        return ExitCode::from(2);
    };
    let ring = Keyring::new(dir);
    let result = match args.command {
        KeysCommand::New {
            name,
            password,
            json,
        } => new_key(&ring, name.as_deref(), &password, prompt).map(|key| print_added(&key, json)),
        KeysCommand::List { json } => list(&ring, json),
        KeysCommand::Show {
            key,
            password_file,
            json,
        } => show(&ring, &key, password_file.as_deref(), prompt).map(|key| print_shown(&key, json)),
        KeysCommand::Import {
            source,
            name,
            source_password_file,
            password,
            json,
        } => import(
            &ring,
            &source,
            source_password_file.as_deref(),
            name.as_deref(),
            &password,
            prompt,
        )
        .map(|key| print_added(&key, json)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: keys: {}", crate::report(&e));
            ExitCode::FAILURE
        }
    }
}

fn new_key(
    ring: &Keyring,
    name: Option<&str>,
    password: &NewPassword,
    prompt: Prompt,
) -> anyhow::Result<KeyEntry> {
    if let Some(name) = name {
        keyring::check_name(name)?;
    }
    let password = new_password(password, prompt)?;
    Ok(ring.create(password.as_bytes(), name)?)
}

fn import(
    ring: &Keyring,
    source: &Path,
    source_password_file: Option<&Path>,
    name: Option<&str>,
    password: &NewPassword,
    prompt: Prompt,
) -> anyhow::Result<KeyEntry> {
    if let Some(name) = name {
        keyring::check_name(name)?;
    }
    let text = read_source(source)?;
    let (id, password) = if text.trim_start().starts_with('{') {
        let source_password = match source_password_file {
            Some(file) => Some(read_password_file(file)?),
            None => prompt(&format!("Password of {}: ", source.display()))?,
        };
        match source_password {
            Some(sp) => {
                let id = brume_identity::keystore::decrypt(&text, sp.as_bytes(), source)?;
                (id, new_password(password, prompt)?)
            }
            None => {
                let p = new_password(password, prompt)?;
                let id = brume_identity::keystore::decrypt(&text, p.as_bytes(), source)?;
                (id, p)
            }
        }
    } else {
        let id = Identity::from_hex_key(&text).map_err(|_| {
            anyhow!(
                "{}: neither a hex private key (64 hex digits) nor a v3 keystore (JSON)",
                source.display()
            )
        })?;
        (id, new_password(password, prompt)?)
    };
    Ok(ring.add(&id, password.as_bytes(), name)?)
}

fn show(
    ring: &Keyring,
    query: &str,
    password_file: Option<&Path>,
    prompt: Prompt,
) -> anyhow::Result<KeyEntry> {
    let mut key = ring.find(query)?;
    if key.public_key.is_none() {
        let password = existing_password(
            password_file,
            &format!("Password of {}: ", key.address),
            prompt,
        )?
        .with_context(|| {
            format!(
                "{} records no public key; give its password (--password-file or \
                     {PASSWORD_ENV}) to show it",
                key.path.display()
            )
        })?;
        key.public_key = Some(ring.load(query, password.as_bytes())?.public_key_hex());
    }
    Ok(key)
}

fn list(ring: &Keyring, json: bool) -> anyhow::Result<()> {
    let listing = ring.list()?;
    for bad in &listing.unreadable {
        eprintln!("warning: {}: {}", bad.path.display(), bad.reason);
    }
    if json {
        let keys: Vec<_> = listing.keys.iter().map(entry_json).collect();
        let unreadable: Vec<_> = listing
            .unreadable
            .iter()
            .map(|u| json!({"file": u.path, "reason": u.reason.to_string()}))
            .collect();
        println!(
            "{}",
            json!({"dir": ring.dir(), "keys": keys, "unreadable": unreadable})
        );
    } else {
        for key in &listing.keys {
            println!(
                "{}\t{}\t{}",
                key.address,
                key.name.as_deref().unwrap_or("-"),
                key.path.display()
            );
        }
    }
    Ok(())
}

fn entry_json(key: &KeyEntry) -> serde_json::Value {
    json!({
        "address": key.address.to_string(),
        "name": key.name,
        "public_key": key.public_key,
        "file": key.path,
    })
}

fn print_added(key: &KeyEntry, json: bool) {
    if json {
        println!("{}", entry_json(key));
    } else {
        println!("{}", key.address);
        let name = key
            .name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        eprintln!("key {}{name} saved in {}", key.address, key.path.display());
    }
}

fn print_shown(key: &KeyEntry, json: bool) {
    if json {
        println!("{}", entry_json(key));
    } else {
        println!("address:    {}", key.address);
        println!("name:       {}", key.name.as_deref().unwrap_or("-"));
        println!("public key: {}", key.public_key.as_deref().unwrap_or("-"));
        println!("file:       {}", key.path.display());
    }
}

/// The password for a key being stored: see the module docs for the order.
fn new_password(opts: &NewPassword, prompt: Prompt) -> anyhow::Result<String> {
    let password = match &opts.password_file {
        Some(file) => read_password_file(file)?,
        None => match std::env::var(PASSWORD_ENV) {
            Ok(p) => p,
            Err(std::env::VarError::NotUnicode(_)) => bail!("{PASSWORD_ENV} is not UTF-8"),
            Err(std::env::VarError::NotPresent) => {
                let first = prompt("Password for the key: ")?.with_context(|| {
                    format!("no password: pass --password-file FILE or set {PASSWORD_ENV} (there is no terminal to ask on)")
                })?;
                let again = prompt("Repeat the password: ")?.unwrap_or_default();
                if first != again {
                    bail!("the passwords differ");
                }
                first
            }
        },
    };
    if password.is_empty() && !opts.insecure_empty_password {
        bail!(
            "empty password refused: the key would be unprotected \
             (pass --insecure-empty-password to accept that)"
        );
    }
    Ok(password)
}

/// The password of a stored key: the file, the variable, else a prompt.
/// `None` when there is no source at all.
fn existing_password(
    file: Option<&Path>,
    prompt_text: &str,
    prompt: Prompt,
) -> anyhow::Result<Option<String>> {
    if let Some(file) = file {
        return read_password_file(file).map(Some);
    }
    match std::env::var(PASSWORD_ENV) {
        Ok(p) => Ok(Some(p)),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{PASSWORD_ENV} is not UTF-8"),
        Err(std::env::VarError::NotPresent) => prompt(prompt_text),
    }
}

/// The terminal [`Prompt`].
fn prompt(text: &str) -> anyhow::Result<Option<String>> {
    keyring::prompt_password(text).context("read the password from the terminal")
}

/// The first line of `path`, without its line ending.
fn read_password_file(path: &Path) -> anyhow::Result<String> {
    let text =
        read_limited(path).with_context(|| format!("read password file {}", path.display()))?;
    let line = text.split('\n').next().unwrap_or_default();
    Ok(line.strip_suffix('\r').unwrap_or(line).to_string())
}

/// An import source: a file, or stdin for `-`.
fn read_source(source: &Path) -> anyhow::Result<String> {
    if source == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .take(MAX_INPUT)
            .read_to_string(&mut text)
            .context("read the key from stdin")?;
        return Ok(text);
    }
    read_limited(source).with_context(|| format!("read {}", source.display()))
}

fn read_limited(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_INPUT)
        .read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use brume_identity::IdentityError;

    /// Tests run as if without a terminal, as in CI.
    fn no_terminal(_: &str) -> anyhow::Result<Option<String>> {
        Ok(None)
    }

    struct Fixture {
        dir: tempfile::TempDir,
        ring: Keyring,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            let ring = Keyring::new(dir.path().join("keys"));
            Fixture { dir, ring }
        }

        /// A file in the fixture's directory, outside the keyring.
        fn file(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, contents).expect("write");
            path
        }

        fn password(&self, password: &str) -> NewPassword {
            NewPassword {
                password_file: Some(self.file("password", &format!("{password}\nignored\n"))),
                insecure_empty_password: false,
            }
        }
    }

    #[test]
    fn new_then_show_by_name_and_address() {
        let f = Fixture::new();
        let key = new_key(&f.ring, Some("ops"), &f.password("pw"), no_terminal).expect("new");
        assert_eq!(key.name.as_deref(), Some("ops"));
        let shown = show(&f.ring, "ops", None, no_terminal).expect("show");
        assert_eq!(shown, key);
        let shown = show(&f.ring, &key.address.to_string(), None, no_terminal).expect("show");
        assert_eq!(shown, key);
        let json = entry_json(&shown);
        assert_eq!(json["address"], key.address.to_string());
        assert!(json.get("private_key").is_none());
        // The password file's first line is the password.
        let id = f.ring.load("ops", b"pw").expect("load");
        assert_eq!(id.address(), key.address);
    }

    #[test]
    fn an_empty_password_needs_the_insecure_flag() {
        let f = Fixture::new();
        let mut password = f.password("");
        let err = new_key(&f.ring, None, &password, no_terminal)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .unwrap_or_default()
                .contains("empty password refused"),
            "{err:?}"
        );
        password.insecure_empty_password = true;
        let key = new_key(&f.ring, None, &password, no_terminal).expect("new");
        assert_eq!(
            f.ring
                .load(&key.address.to_string(), b"")
                .map(|i| i.address())
                .ok(),
            Some(key.address)
        );
    }

    #[test]
    fn import_a_hex_key_and_a_foreign_keystore() {
        let f = Fixture::new();
        let id = Identity::random();
        let hex = f.file("key.hex", &format!("{}\n", id.to_hex().as_str()));
        let key = import(
            &f.ring,
            &hex,
            None,
            Some("imported"),
            &f.password("pw"),
            no_terminal,
        )
        .expect("import hex");
        assert_eq!(key.address, id.address());
        let again = import(&f.ring, &hex, None, None, &f.password("pw"), no_terminal).err();
        assert!(
            matches!(
                again.as_ref().and_then(|e| e.downcast_ref()),
                Some(IdentityError::KeyExists { .. })
            ),
            "{again:?}"
        );

        // A keystore from elsewhere under its own password, re-encrypted
        // under the keyring's.
        let other = Identity::random();
        let elsewhere = other
            .to_keystore(&f.dir.path().join("elsewhere"), b"theirs")
            .expect("write");
        let theirs = f.file("theirs", "theirs\n");
        let wrong = import(
            &f.ring,
            &elsewhere,
            None,
            None,
            &f.password("pw"),
            no_terminal,
        )
        .err();
        assert!(
            matches!(
                wrong.as_ref().and_then(|e| e.downcast_ref()),
                Some(IdentityError::WrongPassword { .. })
            ),
            "the keyring password is tried when no source password is given: {wrong:?}"
        );
        let key = import(
            &f.ring,
            &elsewhere,
            Some(&theirs),
            None,
            &f.password("ours"),
            no_terminal,
        )
        .expect("import keystore");
        assert_eq!(key.address, other.address());
        assert_eq!(
            f.ring
                .load(&key.address.to_string(), b"ours")
                .map(|i| i.address())
                .ok(),
            Some(other.address())
        );

        let junk = f.file("junk", "not a key");
        let err = import(&f.ring, &junk, None, None, &f.password("pw"), no_terminal)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("neither a hex private key"), "{err}");
    }

    #[test]
    fn show_decrypts_a_keystore_without_a_public_key() {
        let f = Fixture::new();
        let id = Identity::random();
        let path = id.to_keystore(f.ring.dir(), b"pw").expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let mut value: serde_json::Value = serde_json::from_str(&text).expect("json");
        if let Some(o) = value.as_object_mut() {
            o.remove("brume");
        }
        std::fs::write(&path, value.to_string()).expect("rewrite");
        let pw = f.file("pw", "pw");
        let key = show(&f.ring, &id.address().to_string(), Some(&pw), no_terminal).expect("show");
        assert_eq!(key.public_key, Some(id.public_key_hex()));
    }
}
