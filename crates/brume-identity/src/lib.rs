//! Node identities. Every broker and provider has a secp256k1 key; its
//! Ethereum address is its identity (and, later, its account). Signatures
//! are EIP-191 `personal_sign`, so any Ethereum tool can check them.
//!
//! The key file holds the private key as `0x`-prefixed hex and is created
//! with mode 0600 (the settlement issue moves it to a Web3 v3 keystore).

use std::io::Write;
use std::path::Path;

use alloy_primitives::{Address, Signature, eip191_hash_message};
use k256::ecdsa::SigningKey;

pub use alloy_primitives::Address as EthAddress;

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
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("sign: {0}")]
    Sign(String),
}

/// A node's signing key.
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

    fn parse(text: &str) -> Option<Identity> {
        let hex = text.trim();
        let hex = hex.strip_prefix("0x").unwrap_or(hex);
        let bytes = alloy_primitives::hex::decode(hex).ok()?;
        SigningKey::from_slice(&bytes).ok().map(Identity::from_key)
    }

    /// Loads the key at `path`, or creates one there (mode 0600, parent
    /// directories included) if there is none.
    pub fn load_or_create(path: &Path) -> Result<Identity, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Identity::parse(&text).ok_or_else(|| IdentityError::BadKey {
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
                let hex = format!("0x{}\n", alloy_primitives::hex::encode(id.key.to_bytes()));
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
