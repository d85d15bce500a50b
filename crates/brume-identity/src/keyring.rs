//! A keyring: a directory of v3 keystores, one per key, as go-ethereum's
//! `keystore/` directory. `brume keys` manages it.
//!
//! - The directory is `$BRUME_KEYS_DIR`, else `~/.config/brume/keys`
//!   ([`Keyring::default_dir`]). It is created with mode 0700.
//! - Each key is one file named `UTC--<time>--<address>`
//!   ([`keystore::file_name`]), mode 0600, written atomically. Files whose
//!   name starts with `.` are ignored (the temporary files of a write).
//! - A key is found by its address (with or without `0x`, any case) or by
//!   its name, an optional label kept in the file ([`check_name`] says what
//!   a name may be). An address appears at most once, and so does a name.
//! - Listing needs no password: the address comes from the file's
//!   `address` field, else from its go-ethereum file name. A keystore
//!   copied in by hand with neither is listed as unreadable.
//!
//! Two `add`s racing on the same address or name can both succeed; the
//! keyring belongs to one user.

use std::path::{Path, PathBuf};

use alloy_primitives::Address;

use crate::{Identity, IdentityError, keystore};

/// The variable that overrides the default keyring directory.
pub const KEYS_DIR_ENV: &str = "BRUME_KEYS_DIR";

/// A directory of keystores.
#[derive(Debug, Clone)]
pub struct Keyring {
    dir: PathBuf,
}

/// One key of a keyring, as listed without its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub address: Address,
    pub name: Option<String>,
    /// The uncompressed public key (`0x04…`), when the file records it.
    pub public_key: Option<String>,
    pub path: PathBuf,
}

/// A file of the keyring directory that is not a usable keystore.
#[derive(Debug)]
pub struct Unreadable {
    pub path: PathBuf,
    pub reason: EntryError,
}

/// Why a file of the keyring directory is not a usable keystore. The
/// messages do not repeat the file's path ([`Unreadable::path`] has it).
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The file could not be read.
    #[error("{0}")]
    Read(#[source] std::io::Error),
    /// The file was refused before parsing (too large for a keystore).
    #[error("{0}")]
    Refused(#[source] IdentityError),
    #[error("{0}")]
    Format(#[from] keystore::FormatError),
    #[error("its `address` field says {field} but its file name says {file_name}")]
    AddressMismatch { field: Address, file_name: Address },
    #[error(
        "no `address` field and no UTC--<time>--<address> file name \
         (add it with `brume keys import`)"
    )]
    NoAddress,
}

/// The keyring's contents, sorted by file name (so by creation time).
#[derive(Debug, Default)]
pub struct Listing {
    pub keys: Vec<KeyEntry>,
    pub unreadable: Vec<Unreadable>,
}

impl Keyring {
    pub fn new(dir: impl Into<PathBuf>) -> Keyring {
        Keyring { dir: dir.into() }
    }

    /// `$BRUME_KEYS_DIR` if set and not empty, else
    /// `$HOME/.config/brume/keys`; `None` without either.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os(KEYS_DIR_ENV).filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir));
        }
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
        Some(PathBuf::from(home).join(".config/brume/keys"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every keystore in the directory. A missing directory is empty.
    pub fn list(&self) -> Result<Listing, IdentityError> {
        let io = |source| IdentityError::Io {
            path: self.dir.display().to_string(),
            source,
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Listing::default()),
            Err(e) => return Err(io(e)),
        };
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io)?;
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if !hidden && entry.file_type().map_err(io)?.is_file() {
                paths.push(entry.path());
            }
        }
        paths.sort();
        let mut listing = Listing::default();
        for path in paths {
            match entry_of(&path) {
                Ok(key) => listing.keys.push(key),
                Err(reason) => listing.unreadable.push(Unreadable { path, reason }),
            }
        }
        Ok(listing)
    }

    /// The key whose address or name is `query`.
    pub fn find(&self, query: &str) -> Result<KeyEntry, IdentityError> {
        let by_address = query.trim().parse::<Address>().ok();
        let mut found: Vec<KeyEntry> = self
            .list()?
            .keys
            .into_iter()
            .filter(|k| match by_address {
                Some(address) => k.address == address,
                None => k.name.as_deref() == Some(query),
            })
            .collect();
        match found.len() {
            0 => Err(IdentityError::NoSuchKey {
                query: query.to_string(),
                dir: self.dir.clone(),
            }),
            1 => Ok(found.remove(0)),
            _ => Err(IdentityError::AmbiguousKey {
                query: query.to_string(),
                paths: found.into_iter().map(|k| k.path).collect(),
            }),
        }
    }

    /// Decrypts the key whose address or name is `query`.
    pub fn load(&self, query: &str, password: &[u8]) -> Result<Identity, IdentityError> {
        let entry = self.find(query)?;
        let id = Identity::from_keystore(&entry.path, password)?;
        if id.address() != entry.address {
            return Err(IdentityError::BadKeystore {
                path: entry.path,
                reason: format!(
                    "its file name says {} but the key is {}'s",
                    entry.address,
                    id.address()
                ),
            });
        }
        Ok(id)
    }

    /// Encrypts `id` under `password` into a new file of the keyring.
    /// Refuses an address already there, and a name already taken.
    pub fn add(
        &self,
        id: &Identity,
        password: &[u8],
        name: Option<&str>,
    ) -> Result<KeyEntry, IdentityError> {
        if let Some(name) = name {
            check_name(name)?;
        }
        for key in self.list()?.keys {
            if key.address == id.address() {
                return Err(IdentityError::KeyExists {
                    address: key.address,
                    path: key.path,
                });
            }
            if name.is_some() && key.name.as_deref() == name {
                return Err(IdentityError::NameTaken {
                    name: name.unwrap_or_default().to_string(),
                    address: key.address,
                });
            }
        }
        let path = keystore::write_new(&self.dir, id, password, name)?;
        Ok(KeyEntry {
            address: id.address(),
            name: name.map(str::to_string),
            public_key: Some(id.public_key_hex()),
            path,
        })
    }

    /// Makes a new random key and adds it.
    pub fn create(&self, password: &[u8], name: Option<&str>) -> Result<KeyEntry, IdentityError> {
        self.add(&Identity::random(), password, name)
    }
}

/// The listing entry of one file, or why it is not a usable keystore.
fn entry_of(path: &Path) -> Result<KeyEntry, EntryError> {
    let text = keystore::read_text(path).map_err(|e| match e {
        IdentityError::Io { source, .. } => EntryError::Read(source),
        e => EntryError::Refused(e),
    })?;
    let meta = keystore::inspect(&text)?;
    let from_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(keystore::address_from_file_name);
    let address = match (meta.address, from_name) {
        (Some(a), Some(b)) if a != b => {
            return Err(EntryError::AddressMismatch {
                field: a,
                file_name: b,
            });
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => return Err(EntryError::NoAddress),
    };
    Ok(KeyEntry {
        address,
        name: meta.name,
        public_key: meta.public_key,
        path: path.to_path_buf(),
    })
}

/// A key name is 1 to 64 ASCII letters, digits, `.`, `_` or `-`, does not
/// start with `.`, and does not read as an address.
pub fn check_name(name: &str) -> Result<(), IdentityError> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name.parse::<Address>().is_err();
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadName {
            name: name.to_string(),
        })
    }
}

/// Asks for a password on the controlling terminal, without echo. `None`
/// when there is no terminal (CI, a service): the caller then needs another
/// source, such as a password file.
pub fn prompt_password(prompt: &str) -> std::io::Result<Option<String>> {
    if !has_terminal() {
        return Ok(None);
    }
    rpassword::prompt_password(prompt).map(Some)
}

fn has_terminal() -> bool {
    #[cfg(unix)]
    {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .is_ok()
    }
    #[cfg(not(unix))]
    {
        use std::io::IsTerminal as _;
        std::io::stdin().is_terminal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &[u8] = b"hunter2";

    #[test]
    fn a_new_key_lists_shows_and_loads_and_signs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = Keyring::new(dir.path().join("keys"));
        assert!(ring.list().expect("list missing dir").keys.is_empty());

        let alice = ring.create(PASSWORD, Some("alice")).expect("create");
        let bob = ring.create(PASSWORD, None).expect("create");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| {
                std::fs::metadata(p)
                    .map(|m| m.permissions().mode() & 0o777)
                    .ok()
            };
            assert_eq!(mode(&alice.path), Some(0o600));
            assert_eq!(mode(ring.dir()), Some(0o700));
        }
        let listing = ring.list().expect("list");
        assert_eq!(listing.keys, vec![alice.clone(), bob.clone()]);
        assert!(listing.unreadable.is_empty());

        assert_eq!(ring.find("alice").expect("by name"), alice);
        let lower = format!("{:x}", bob.address);
        assert_eq!(ring.find(&lower).expect("by lowercase address"), bob);
        assert_eq!(
            ring.find(&bob.address.to_string())
                .expect("by checksummed address"),
            bob
        );
        assert!(matches!(
            ring.find("carol"),
            Err(IdentityError::NoSuchKey { .. })
        ));

        let id = ring.load("alice", PASSWORD).expect("load");
        assert_eq!(id.address(), alice.address);
        assert_eq!(Some(id.public_key_hex()), alice.public_key);
        let sig = id.sign_message(b"hello").expect("sign");
        assert_eq!(crate::recover(b"hello", &sig).ok(), Some(alice.address));

        assert!(matches!(
            ring.load("alice", b"hunter3"),
            Err(IdentityError::WrongPassword { .. })
        ));
    }

    #[test]
    fn addresses_and_names_are_unique_and_names_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = Keyring::new(dir.path());
        let id = Identity::random();
        ring.add(&id, PASSWORD, Some("ops")).expect("add");
        assert!(matches!(
            ring.add(&id, PASSWORD, None),
            Err(IdentityError::KeyExists { .. })
        ));
        let other = Identity::random();
        assert!(matches!(
            ring.add(&other, PASSWORD, Some("ops")),
            Err(IdentityError::NameTaken { .. })
        ));
        let address_like = format!("{:x}", other.address());
        for bad in ["", ".hidden", "a b", "é", &address_like, &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["ops", "broker-eu.1", "A_b"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn foreign_and_broken_files_are_listed_as_unreadable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = Keyring::new(dir.path());
        let id = Identity::random();
        let path = id.to_keystore(dir.path(), PASSWORD).expect("write");

        // A keystore without the `address` field is found by its file name.
        let text = std::fs::read_to_string(&path).expect("read");
        let mut value: serde_json::Value = serde_json::from_str(&text).expect("json");
        if let Some(o) = value.as_object_mut() {
            o.remove("address");
            o.remove("brume");
        }
        std::fs::write(&path, value.to_string()).expect("rewrite");
        // The same without a telling name, and a file that is no keystore.
        std::fs::write(dir.path().join("copied.json"), value.to_string()).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "hello").expect("write");
        std::fs::write(dir.path().join(".tmp-123"), "partial").expect("write");

        let listing = ring.list().expect("list");
        assert_eq!(listing.keys.len(), 1);
        assert_eq!(listing.keys[0].address, id.address());
        assert_eq!(listing.keys[0].public_key, None);
        let unreadable: Vec<_> = listing
            .unreadable
            .iter()
            .map(|u| u.path.file_name().map(|n| n.to_string_lossy().to_string()))
            .collect();
        assert_eq!(
            unreadable,
            vec![
                Some("copied.json".to_string()),
                Some("notes.txt".to_string())
            ]
        );
        assert!(
            listing.unreadable[0]
                .reason
                .to_string()
                .contains("no `address` field")
        );
        assert!(matches!(
            listing.unreadable[0].reason,
            EntryError::NoAddress
        ));
        assert!(matches!(
            listing.unreadable[1].reason,
            EntryError::Format(keystore::FormatError::Json(_))
        ));
        assert_eq!(
            ring.load(&id.address().to_string(), PASSWORD)
                .expect("load")
                .address(),
            id.address()
        );
    }
}
