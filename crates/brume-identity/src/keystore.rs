//! Web3 Secret Storage (v3 JSON) keystores, through the `eth-keystore`
//! crate (the one alloy-signer-local's `keystore` feature uses). No crypto
//! is done here: this module checks the file, hands it to `eth-keystore`,
//! and writes files atomically with mode 0600.
//!
//! **Writing** uses what `eth-keystore` offers, and only that: scrypt with
//! n = 2^13, r = 8, p = 1 (the parameters of Foundry's `cast wallet`),
//! aes-128-ctr, and the Keccak-256 MAC. Its parameters are fixed, so
//! writing is fast enough for tests as it is.
//!
//! **Reading** accepts scrypt, or PBKDF2 with HMAC-SHA256, at any
//! parameters up to [`MAX_SCRYPT_MEMORY`] and [`MAX_PBKDF2_ROUNDS`]
//! (go-ethereum's standard n = 2^18 included). The file is checked before
//! `eth-keystore` sees it, so a corrupt file is an error, never a panic.
//! A MAC mismatch is [`IdentityError::WrongPassword`].
//!
//! **Extra fields.** A file written here has, beside the standard ones:
//! - `address`: lowercase hex without `0x`, as go-ethereum writes it, so a
//!   keyring can be listed without a password. Reading checks it against
//!   the decrypted key.
//! - `brume`: `{"public_key": "0x04…", "name": "…"}`. The public key lets
//!   `brume keys show` work without a password; the name is an optional
//!   label. Neither is authenticated: they are hints, checked where it is
//!   cheap (the public key must hash to the address).
//!
//! Other tools ignore the extra fields, and files from go-ethereum, Foundry
//! or ethers read here.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use alloy_primitives::Address;
use eth_keystore::{EthKeystore, KdfType, KdfparamsType, KeystoreError};
use k256::elliptic_curve::zeroize::Zeroizing;
use serde_json::{Map, Value};

use crate::{Identity, IdentityError};

/// The largest scrypt memory (128 · n · r bytes) accepted when reading.
pub const MAX_SCRYPT_MEMORY: u64 = 1 << 30;
/// The largest scrypt work (128 · n · r · p bytes hashed) accepted when
/// reading: 16 times go-ethereum's standard parameters.
pub const MAX_SCRYPT_WORK: u64 = 1 << 32;
/// The most PBKDF2 rounds accepted when reading.
pub const MAX_PBKDF2_ROUNDS: u32 = 10_000_000;
/// The largest keystore file read. Real ones are under 1 KiB.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// What a keystore file says about itself, without the password.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The `address` field, if the file has one.
    pub address: Option<Address>,
    /// `brume.public_key`, if present and consistent with `address`.
    pub public_key: Option<String>,
    /// `brume.name`, if present.
    pub name: Option<String>,
}

/// Why a text is not a v3 keystore this module can decrypt ([`inspect`]).
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Not JSON, or not the shape of a v3 keystore.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("`address` {value:?} is not an address")]
    BadAddress {
        value: String,
        #[source]
        source: <Address as std::str::FromStr>::Err,
    },
    #[error("`address` is not a string")]
    AddressNotString,
    #[error("`brume.public_key` does not belong to the address {0}")]
    PublicKeyMismatch(Address),
    #[error("version {0} (only 3 is supported)")]
    Version(u8),
    #[error("cipher {0:?} (only aes-128-ctr)")]
    Cipher(String),
    #[error("iv of {0} bytes (expected 16)")]
    IvLength(usize),
    #[error("ciphertext of {0} bytes (a secp256k1 key is 32)")]
    CiphertextLength(usize),
    #[error("mac of {0} bytes (expected 32)")]
    MacLength(usize),
    /// `kdf` names another function than the one `kdfparams` are for
    /// (`scrypt` or `pbkdf2`, the one the parameters are for).
    #[error("kdf is not {0} but kdfparams are {0}'s")]
    KdfMismatch(&'static str),
    #[error("dklen {0} (expected 32)")]
    Dklen(u8),
    #[error("scrypt n {0} is not a power of two")]
    ScryptN(u32),
    #[error("scrypt r and p must be at least 1")]
    ScryptRp,
    /// See the FIXME in the source: scrypt 0.10 refuses n ≥ 2^(16·r).
    #[error(
        "scrypt n={n} with r={r} is not supported (n must be below 2^(16·r)); \
         re-encrypt the key with go-ethereum's parameters (r=8, p=1)"
    )]
    ScryptUnsupported { n: u32, r: u32 },
    /// Over [`MAX_SCRYPT_MEMORY`] or [`MAX_SCRYPT_WORK`].
    #[error("scrypt parameters n={n} r={r} p={p} are too costly")]
    ScryptTooCostly { n: u32, r: u32, p: u32 },
    #[error("pbkdf2 prf {0:?} (only hmac-sha256)")]
    Prf(String),
    /// 0, or over [`MAX_PBKDF2_ROUNDS`].
    #[error("pbkdf2 c={0} is out of range")]
    Pbkdf2Rounds(u32),
}

/// Checks that `text` is a v3 keystore this module can decrypt, and returns
/// its unencrypted fields. The error is the reason it is not.
pub fn inspect(text: &str) -> Result<Metadata, FormatError> {
    let ks: EthKeystore = serde_json::from_str(text)?;
    check(&ks)?;
    let value: Value = serde_json::from_str(text)?;
    let address = match value.get("address") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(
                s.parse::<Address>()
                    .map_err(|source| FormatError::BadAddress {
                        value: s.clone(),
                        source,
                    })?,
            )
        }
        Some(_) => return Err(FormatError::AddressNotString),
    };
    let brume = value.get("brume");
    let text_field = |field: &str| {
        brume
            .and_then(|b| b.get(field))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let public_key = match (text_field("public_key"), address) {
        (Some(pk), Some(address)) => {
            if address_of_public_key(&pk) != Some(address) {
                return Err(FormatError::PublicKeyMismatch(address));
            }
            Some(pk)
        }
        _ => None,
    };
    Ok(Metadata {
        address,
        public_key,
        name: text_field("name"),
    })
}

fn address_of_public_key(hex: &str) -> Option<Address> {
    let bytes = alloy_primitives::hex::decode(hex).ok()?;
    let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(&bytes).ok()?;
    Some(Address::from_public_key(&key))
}

/// Refuses what `eth-keystore` would panic on, misread, or spend unbounded
/// time or memory on.
fn check(ks: &EthKeystore) -> Result<(), FormatError> {
    let c = &ks.crypto;
    if ks.version != 3 {
        return Err(FormatError::Version(ks.version));
    }
    if c.cipher != "aes-128-ctr" {
        return Err(FormatError::Cipher(c.cipher.clone()));
    }
    if c.cipherparams.iv.len() != 16 {
        return Err(FormatError::IvLength(c.cipherparams.iv.len()));
    }
    // Old go-ethereum versions dropped a key's leading zero bytes.
    if c.ciphertext.is_empty() || c.ciphertext.len() > 32 {
        return Err(FormatError::CiphertextLength(c.ciphertext.len()));
    }
    if c.mac.len() != 32 {
        return Err(FormatError::MacLength(c.mac.len()));
    }
    match &c.kdfparams {
        KdfparamsType::Scrypt { dklen, n, p, r, .. } => {
            if c.kdf != KdfType::Scrypt {
                return Err(FormatError::KdfMismatch("scrypt"));
            }
            if *dklen != 32 {
                return Err(FormatError::Dklen(*dklen));
            }
            if *n < 2 || !n.is_power_of_two() {
                return Err(FormatError::ScryptN(*n));
            }
            if *r == 0 || *p == 0 {
                return Err(FormatError::ScryptRp);
            }
            // FIXME: scrypt 0.10, which eth-keystore 0.5 uses, applies RFC
            // 7914's bound n < 2^(16 r), since corrected by erratum 5971.
            // That refuses web3.py's default (n = 2^18, r = 1, p = 8), as
            // in the Web3 Secret Storage scrypt test vector.
            if n.trailing_zeros() >= r.saturating_mul(16) {
                return Err(FormatError::ScryptUnsupported { n: *n, r: *r });
            }
            let memory = 128 * u64::from(*n) * u64::from(*r);
            if memory > MAX_SCRYPT_MEMORY || memory.saturating_mul(u64::from(*p)) > MAX_SCRYPT_WORK
            {
                return Err(FormatError::ScryptTooCostly {
                    n: *n,
                    r: *r,
                    p: *p,
                });
            }
        }
        KdfparamsType::Pbkdf2 {
            c: rounds,
            dklen,
            prf,
            ..
        } => {
            if c.kdf != KdfType::Pbkdf2 {
                return Err(FormatError::KdfMismatch("pbkdf2"));
            }
            if prf != "hmac-sha256" {
                return Err(FormatError::Prf(prf.clone()));
            }
            if *dklen != 32 {
                return Err(FormatError::Dklen(*dklen));
            }
            if *rounds == 0 || *rounds > MAX_PBKDF2_ROUNDS {
                return Err(FormatError::Pbkdf2Rounds(*rounds));
            }
        }
    }
    Ok(())
}

/// Decrypts the keystore at `path`.
pub fn read(path: &Path, password: &[u8]) -> Result<Identity, IdentityError> {
    let text = read_text(path)?;
    decrypt(&text, password, path)
}

/// Reads a keystore file's text, refusing files over [`MAX_FILE_BYTES`].
pub(crate) fn read_text(path: &Path) -> Result<String, IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(IdentityError::BadKeystore {
            path: path.to_path_buf(),
            reason: format!("{len} bytes is too large for a keystore"),
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

/// Decrypts keystore JSON. `origin` names it in errors.
pub fn decrypt(text: &str, password: &[u8], origin: &Path) -> Result<Identity, IdentityError> {
    let bad = |reason: String| IdentityError::BadKeystore {
        path: origin.to_path_buf(),
        reason,
    };
    let meta = inspect(text).map_err(|source| IdentityError::KeystoreFormat {
        path: origin.to_path_buf(),
        source,
    })?;
    // `eth-keystore` decrypts files only. This copy holds the same
    // ciphertext as the input, no secret.
    let io = |source| IdentityError::Io {
        path: "temporary keystore copy".into(),
        source,
    };
    let mut copy = tempfile::NamedTempFile::new().map_err(io)?;
    copy.write_all(text.as_bytes()).map_err(io)?;
    copy.flush().map_err(io)?;
    let secret = match eth_keystore::decrypt_key(copy.path(), password) {
        Ok(secret) => Zeroizing::new(secret),
        Err(KeystoreError::MacMismatch) => {
            return Err(IdentityError::WrongPassword {
                path: origin.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(IdentityError::Keystore {
                path: origin.to_path_buf(),
                reason: e.to_string(),
            });
        }
    };
    let mut padded = Zeroizing::new([0u8; 32]);
    padded[32 - secret.len()..].copy_from_slice(&secret);
    let id = Identity::from_bytes(padded.as_slice())
        .map_err(|_| bad("it decrypts to a value that is not a secp256k1 key".into()))?;
    if let Some(address) = meta.address
        && address != id.address()
    {
        return Err(bad(format!(
            "its `address` field says {address} but the key is {}'s",
            id.address()
        )));
    }
    Ok(id)
}

/// Encrypts `id` under `password` into keystore JSON with the extra
/// fields described in the module docs.
pub fn encrypt(
    id: &Identity,
    password: &[u8],
    name: Option<&str>,
) -> Result<String, IdentityError> {
    let io = |source| IdentityError::Io {
        path: "temporary keystore directory".into(),
        source,
    };
    // `eth-keystore` writes its output to a file. Its directory is private
    // (0700) and the file holds only the encrypted key.
    let scratch = tempfile::tempdir().map_err(io)?;
    let keystore_err = |e: KeystoreError| IdentityError::Keystore {
        path: scratch.path().to_path_buf(),
        reason: e.to_string(),
    };
    let mut rng = k256::elliptic_curve::rand_core::OsRng;
    eth_keystore::encrypt_key(
        scratch.path(),
        &mut rng,
        id.secret_bytes().as_slice(),
        password,
        Some("key.json"),
    )
    .map_err(keystore_err)?;
    let written = std::fs::read_to_string(scratch.path().join("key.json")).map_err(io)?;
    let mut value: Map<String, Value> =
        serde_json::from_str(&written).map_err(|e| IdentityError::Keystore {
            path: scratch.path().to_path_buf(),
            reason: format!("eth-keystore wrote unexpected JSON: {e}"),
        })?;
    value.insert("address".into(), Value::String(address_hex(id.address())));
    let mut brume = Map::new();
    brume.insert("public_key".into(), Value::String(id.public_key_hex()));
    if let Some(name) = name {
        brume.insert("name".into(), Value::String(name.to_string()));
    }
    value.insert("brume".into(), Value::Object(brume));
    Ok(Value::Object(value).to_string())
}

/// go-ethereum's form of an address in keystores: lowercase, no `0x`.
fn address_hex(address: Address) -> String {
    alloy_primitives::hex::encode(address.as_slice())
}

/// The go-ethereum file name: `UTC--2025-01-31T12-34-56.123456789Z--<address>`
/// (lowercase hex, no `0x`, no extension).
pub fn file_name(address: Address, at: SystemTime) -> String {
    let time = humantime::format_rfc3339_nanos(at)
        .to_string()
        .replace(':', "-");
    format!("UTC--{time}--{}", address_hex(address))
}

/// The address at the end of a go-ethereum file name, if any.
pub fn address_from_file_name(name: &str) -> Option<Address> {
    let (_, hex) = name.rsplit_once("--")?;
    if hex.len() != 40 || !name.starts_with("UTC--") {
        return None;
    }
    hex.parse().ok()
}

/// Encrypts `id` into a new file in `dir` named by [`file_name`].
pub(crate) fn write_new(
    dir: &Path,
    id: &Identity,
    password: &[u8],
    name: Option<&str>,
) -> Result<PathBuf, IdentityError> {
    let json = encrypt(id, password, name)?;
    let path = dir.join(file_name(id.address(), SystemTime::now()));
    write_file(&path, json.as_bytes())?;
    Ok(path)
}

/// Writes `bytes` to `path` atomically with mode 0600: a temporary file in
/// the same directory, synced, then linked into place. Fails if `path`
/// exists. The directory is created with mode 0700 if missing.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| IdentityError::Io { path: p, source }
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io(dir))?;
    // tempfile creates its files with mode 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io(tmp.path()))?;
    tmp.persist_noclobber(path).map_err(|e| io(path)(e.error))?;
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scrypt test vector of the Web3 Secret Storage definition
    /// (password `testpassword`).
    const SPEC_SCRYPT: &str = r#"{
        "crypto": {
            "cipher": "aes-128-ctr",
            "cipherparams": {"iv": "83dbcc02d8ccb40e466191a123791e0e"},
            "ciphertext": "d172bf743a674da9cdad04534d56926ef8358534d458fffccd4e6ad2fbde479c",
            "kdf": "scrypt",
            "kdfparams": {
                "dklen": 32, "n": 262144, "p": 8, "r": 1,
                "salt": "ab0c7876052600dd703518d6fc3fe8984592145b591fc8fb5c6d43190334ba19"
            },
            "mac": "2103ac29920d71da29f15d75b4a16dbe95cfd7ff8faea1056c33131d846e3097"
        },
        "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6",
        "version": 3
    }"#;

    /// The PBKDF2 test vector of the same definition (`testpassword`).
    const SPEC_PBKDF2: &str = r#"{
        "crypto": {
            "cipher": "aes-128-ctr",
            "cipherparams": {"iv": "6087dab2f9fdbbfaddc31a909735c1e6"},
            "ciphertext": "5318b4d5bcd28de64ee5559e671353e16f075ecae9f99c7a79a38af5f869aa46",
            "kdf": "pbkdf2",
            "kdfparams": {
                "c": 262144, "dklen": 32, "prf": "hmac-sha256",
                "salt": "ae3cd4e7013836a3df6bd7241b12db061dbe2c6785853cce422d148a624ce0bd"
            },
            "mac": "517ead924a9d0dc3124507e3393d175ce3ff7c1e96529c6c555ce9e51205e9b2"
        },
        "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6",
        "version": 3
    }"#;

    /// The key of both spec vectors.
    const SPEC_KEY: &str = "0x7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d";

    /// go-ethereum's `31_byte_key` vector (password `foo`): scrypt at
    /// n = 2, a key whose leading zero byte was dropped.
    const GETH_31_BYTE_KEY: &str = r#"{
        "crypto": {
            "cipher": "aes-128-ctr",
            "cipherparams": {"iv": "e0c41130a323adc1446fc82f724bca2f"},
            "ciphertext": "9517cd5bdbe69076f9bf5057248c6c050141e970efa36ce53692d5d59a3984",
            "kdf": "scrypt",
            "kdfparams": {
                "dklen": 32, "n": 2, "r": 8, "p": 1,
                "salt": "711f816911c92d649fb4c84b047915679933555030b3552c1212609b38208c63"
            },
            "mac": "d5e116151c6aa71470e67a7d42c9620c75c4d23229847dcc127794f0732b0db5"
        },
        "id": "fecfc4ce-e956-48fd-953b-30f8b52ed66c",
        "version": 3
    }"#;

    fn origin() -> PathBuf {
        PathBuf::from("vector.json")
    }

    #[test]
    fn known_vectors_decrypt_to_their_keys() {
        let cases = [
            ("spec pbkdf2", SPEC_PBKDF2, "testpassword", SPEC_KEY),
            (
                "geth 31-byte scrypt",
                GETH_31_BYTE_KEY,
                "foo",
                "0x00fa7b3db73dc7dfdf8c5fbdb796d741e4488628c41fc4febd9160a866ba0f35",
            ),
        ];
        for (what, json, password, key) in cases {
            let id = decrypt(json, password.as_bytes(), &origin())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(id.to_hex().as_str(), key, "{what}");
        }
    }

    #[test]
    fn the_spec_scrypt_vector_is_refused_clearly() {
        // FIXME: it should decrypt to SPEC_KEY; see the FIXME in `check`.
        let err = decrypt(SPEC_SCRYPT, b"testpassword", &origin())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("n=262144 with r=1 is not supported"), "{err}");
        assert_eq!(SPEC_KEY.len(), 66);
    }

    #[test]
    fn a_wrong_password_is_its_own_error() {
        let err = decrypt(SPEC_PBKDF2, b"testpassworD", &origin()).err();
        assert!(
            matches!(err, Some(IdentityError::WrongPassword { .. })),
            "{err:?}"
        );
    }

    /// Each case is a corruption of the PBKDF2 vector and a piece of the
    /// expected reason. None reaches the KDF, so the cases are cheap.
    #[test]
    fn corrupt_keystores_are_errors_not_panics() {
        let cases = [
            ("{", "EOF"),
            (r#"{"version": 3}"#, "missing field"),
            (
                &*SPEC_PBKDF2.replace(r#""version": 3"#, r#""version": 2"#),
                "version 2",
            ),
            (
                &*SPEC_PBKDF2.replace("6087dab2f9fdbbfaddc31a909735c1e6", "6087"),
                "iv of 2",
            ),
            (
                &*SPEC_PBKDF2.replace("5318b4d5", "5318b4d5ff"),
                "ciphertext of 33",
            ),
            (&*SPEC_PBKDF2.replace("517ead92", ""), "mac of 28"),
            (
                &*SPEC_PBKDF2.replace(r#""dklen": 32"#, r#""dklen": 16"#),
                "dklen 16",
            ),
            (&*SPEC_PBKDF2.replace("hmac-sha256", "hmac-sha512"), "prf"),
            (
                &*SPEC_PBKDF2.replace("aes-128-ctr", "aes-128-cbc"),
                "cipher",
            ),
            (
                &*SPEC_PBKDF2.replace(r#""c": 262144"#, r#""c": 0"#),
                "out of range",
            ),
            (
                &*SPEC_PBKDF2.replace(r#""kdf": "pbkdf2""#, r#""kdf": "scrypt""#),
                "not pbkdf2",
            ),
            (&*SPEC_SCRYPT.replace("262144", "262143"), "power of two"),
            (
                &*GETH_31_BYTE_KEY.replace(r#""n": 2,"#, r#""n": 1073741824,"#),
                "too costly",
            ),
            (
                &*GETH_31_BYTE_KEY.replace(
                    r#""n": 2, "r": 8, "p": 1"#,
                    r#""n": 1048576, "r": 8, "p": 32"#,
                ),
                "too costly",
            ),
            (
                &*SPEC_PBKDF2.replace(r#""version": 3"#, r#""version": 3, "address": 7"#),
                "`address` is not a string",
            ),
        ];
        for (json, want) in cases {
            let err = decrypt(json, b"testpassword", &origin())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(want), "want {want:?}, got {err:?}");
        }
    }

    #[test]
    fn format_errors_are_typed_and_keep_their_cause() {
        let err = decrypt("{", b"testpassword", &origin()).err();
        let Some(IdentityError::KeystoreFormat {
            path,
            source: FormatError::Json(json),
        }) = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(path, &origin());
        let cause = err
            .as_ref()
            .and_then(|e| std::error::Error::source(e))
            .map(ToString::to_string);
        assert_eq!(cause, Some(json.to_string()));
        assert_eq!(
            inspect(&SPEC_PBKDF2.replace(r#""version": 3"#, r#""version": 2"#))
                .err()
                .map(|e| e.to_string()),
            Some("version 2 (only 3 is supported)".to_string())
        );
        let bad_address =
            SPEC_PBKDF2.replace(r#""version": 3"#, r#""version": 3, "address": "0x12""#);
        assert!(matches!(
            inspect(&bad_address),
            Err(FormatError::BadAddress { .. })
        ));
    }

    #[test]
    fn a_wrong_address_field_is_caught_after_decryption() {
        let json = SPEC_PBKDF2.replace(
            r#""version": 3"#,
            r#""version": 3, "address": "0000000000000000000000000000000000000001""#,
        );
        let err = decrypt(&json, b"testpassword", &origin())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("`address` field says"), "{err}");
    }

    #[test]
    fn file_names_follow_go_ethereum() {
        let address: Address = "0x008AeEda4D805471dF9b2A5B0f38A0C3bCBA786b"
            .parse()
            .expect("address");
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let name = file_name(address, at);
        assert_eq!(
            name,
            "UTC--2023-11-14T22-13-20.123000000Z--008aeeda4d805471df9b2a5b0f38a0c3bcba786b"
        );
        assert_eq!(address_from_file_name(&name), Some(address));
        assert_eq!(address_from_file_name("key.json"), None);
    }
}
