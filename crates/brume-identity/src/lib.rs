//! Identities: secp256k1 keys whose Ethereum address is the identity (and
//! the account). The broker, each provider, each requester and the operator
//! have one. Signatures are EIP-191 `personal_sign`, so any Ethereum tool
//! can check them.
//!
//! An [`Identity`] is kept in one of two forms:
//!
//! - A raw key file: the private key as `0x`-prefixed hex, mode 0600.
//!   [`Identity::load_or_create`] reads or creates one; the broker and
//!   provider daemons keep theirs in their data directories.
//! - A Web3 Secret Storage (v3 JSON) keystore, encrypted under a password
//!   ([`keystore`]). [`Identity::to_keystore`] and
//!   [`Identity::from_keystore`] write and read one file;
//!   [`keyring::Keyring`] is a directory of them (`brume keys`).
//!
//! ```
//! use brume_identity::{Identity, recover};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let id = Identity::random();
//! let path = id.to_keystore(dir.path(), b"correct horse")?;
//! let again = Identity::from_keystore(&path, b"correct horse")?;
//! assert_eq!(again.address(), id.address());
//!
//! let sig = again.sign_message(b"hello")?;
//! assert_eq!(recover(b"hello", &sig)?, id.address());
//! # Ok(())
//! # }
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use alloy_primitives::{Address, Signature, eip191_hash_message};
use k256::ecdsa::SigningKey;
use k256::elliptic_curve::zeroize::Zeroizing;

pub use alloy_primitives::Address as EthAddress;

pub mod keyring;
pub mod keystore;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a secp256k1 private key (expected 0x + 64 hex digits)")]
    BadKey { path: String },
    #[error("not a secp256k1 private key (expected 0x + 64 hex digits)")]
    InvalidKey,
    /// The keystore's MAC does not match: the password is wrong (or the
    /// ciphertext was altered).
    #[error("{}: wrong password", path.display())]
    WrongPassword { path: PathBuf },
    /// The file is not a v3 keystore this crate can read.
    #[error("{}: not a usable Web3 v3 keystore: {reason}", path.display())]
    BadKeystore { path: PathBuf, reason: String },
    /// The file is not a v3 keystore this crate can read: what
    /// [`keystore::inspect`] found wrong with it.
    #[error("{}: not a usable Web3 v3 keystore: {source}", path.display())]
    KeystoreFormat {
        path: PathBuf,
        #[source]
        source: keystore::FormatError,
    },
    /// The keystore library failed for another reason.
    #[error("{}: keystore: {reason}", path.display())]
    Keystore { path: PathBuf, reason: String },
    #[error("{address} is already in the keyring ({})", path.display())]
    KeyExists { address: Address, path: PathBuf },
    #[error("the name {name:?} is already taken by {address}")]
    NameTaken { name: String, address: Address },
    #[error(
        "bad key name {name:?}: use 1 to 64 letters, digits, `.`, `_` or `-`, \
         not starting with `.` and not an address"
    )]
    BadName { name: String },
    #[error("no key {query:?} in {}", dir.display())]
    NoSuchKey { query: String, dir: PathBuf },
    #[error("{query:?} matches more than one key: {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    AmbiguousKey { query: String, paths: Vec<PathBuf> },
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("sign: {0}")]
    Sign(String),
}

/// A secp256k1 signing key and its Ethereum address.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
    address: Address,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

impl Identity {
    pub fn random() -> Identity {
        Identity::from_key(SigningKey::random(
            &mut k256::elliptic_curve::rand_core::OsRng,
        ))
    }

    fn from_key(key: SigningKey) -> Identity {
        let address = Address::from_private_key(&key);
        Identity { key, address }
    }

    /// The key from its 32 big-endian bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Identity, IdentityError> {
        if bytes.len() != 32 {
            return Err(IdentityError::InvalidKey);
        }
        SigningKey::from_slice(bytes)
            .map(Identity::from_key)
            .map_err(|_| IdentityError::InvalidKey)
    }

    /// The key from 64 hex digits, with or without `0x`; surrounding
    /// whitespace is ignored (the format of the raw key file).
    pub fn from_hex_key(text: &str) -> Result<Identity, IdentityError> {
        let hex = text.trim();
        let hex = hex.strip_prefix("0x").unwrap_or(hex);
        if hex.len() != 64 {
            return Err(IdentityError::InvalidKey);
        }
        let bytes = Zeroizing::new(
            alloy_primitives::hex::decode(hex).map_err(|_| IdentityError::InvalidKey)?,
        );
        Identity::from_bytes(&bytes)
    }

    /// The private key as `0x` + 64 hex digits. Handle with care: this is
    /// the secret.
    pub fn to_hex(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(self.key.to_bytes());
        Zeroizing::new(format!(
            "0x{}",
            alloy_primitives::hex::encode(bytes.as_slice())
        ))
    }

    /// The private key's 32 big-endian bytes.
    pub(crate) fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes().into())
    }

    /// The uncompressed SEC1 public key, `0x04` + 128 hex digits.
    pub fn public_key_hex(&self) -> String {
        let point = self.key.verifying_key().to_encoded_point(false);
        format!("0x{}", alloy_primitives::hex::encode(point.as_bytes()))
    }

    /// Encrypts the key into a new v3 keystore file in `dir` (created with
    /// mode 0700 if missing), named `UTC--<time>--<address>` as go-ethereum
    /// does, written atomically with mode 0600. Returns its path.
    pub fn to_keystore(&self, dir: &Path, password: &[u8]) -> Result<PathBuf, IdentityError> {
        keystore::write_new(dir, self, password, None)
    }

    /// Decrypts the v3 keystore at `path`.
    pub fn from_keystore(path: &Path, password: &[u8]) -> Result<Identity, IdentityError> {
        keystore::read(path, password)
    }

    /// Loads the key at `path`, or creates one there (mode 0600, parent
    /// directories included) if there is none.
    pub fn load_or_create(path: &Path) -> Result<Identity, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Identity::from_hex_key(&text).map_err(|_| IdentityError::BadKey {
                path: path.display().to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Identity::random();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut file = opts.open(path).map_err(io)?;
                let hex = Zeroizing::new(format!("{}\n", id.to_hex().as_str()));
                file.write_all(hex.as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok(id)
            }
            Err(e) => Err(io(e)),
        }
    }

    pub fn address(&self) -> Address {
        self.address
    }

    /// EIP-191 `personal_sign` over `message`: 65 bytes `r || s || v`.
    pub fn sign_message(&self, message: &[u8]) -> Result<[u8; 65], IdentityError> {
        let hash = eip191_hash_message(message);
        let (sig, recid) = self
            .key
            .sign_prehash_recoverable(hash.as_slice())
            .map_err(|e| IdentityError::Sign(e.to_string()))?;
        Ok(Signature::from_signature_and_parity(sig, recid.is_y_odd()).as_bytes())
    }
}

/// Recovers the address that signed `message` (EIP-191).
pub fn recover(message: &[u8], signature: &[u8]) -> Result<Address, IdentityError> {
    let sig =
        Signature::try_from(signature).map_err(|e| IdentityError::BadSignature(e.to_string()))?;
    sig.recover_address_from_msg(message)
        .map_err(|e| IdentityError::BadSignature(e.to_string()))
}

/// Checks that `signature` over `message` was made by `address`.
pub fn verify(message: &[u8], signature: &[u8], address: &str) -> Result<Address, IdentityError> {
    let claimed: Address = address
        .parse()
        .map_err(|_| IdentityError::BadSignature(format!("{address:?} is not an address")))?;
    let signer = recover(message, signature)?;
    if signer != claimed {
        return Err(IdentityError::BadSignature(format!(
            "signed by {signer}, not by the claimed {claimed}"
        )));
    }
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_with_private_mode_and_sign_verifiably() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/node.key");
        let a = Identity::load_or_create(&path).expect("create");
        let b = Identity::load_or_create(&path).expect("load");
        assert_eq!(a.address(), b.address());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o777)
                .ok();
            assert_eq!(mode, Some(0o600));
        }
        let sig = a.sign_message(b"hello").expect("sign");
        let addr = a.address().to_string();
        assert!(verify(b"hello", &sig, &addr).is_ok());
        assert!(verify(b"hellO", &sig, &addr).is_err());
        assert!(verify(b"hello", &sig[..64], &addr).is_err());
        let other = Identity::random().address().to_string();
        assert!(verify(b"hello", &sig, &other).is_err());
    }

    #[test]
    fn a_corrupt_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.key");
        std::fs::write(&path, "nope").expect("write");
        let err = Identity::load_or_create(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not a secp256k1 private key"), "{err}");
    }
}
