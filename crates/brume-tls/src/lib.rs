//! Whom a brume client trusts as its broker over TLS, in one place: the
//! requester's client, the provider (its WebSocket and its HTTP fetches),
//! the CLI and the in-process network all build their TLS from a [`Trust`].
//!
//! TLS is rustls with the `ring` provider, passed explicitly (no process
//! default is installed or needed). A [`Trust`] is one of:
//!
//! - **the built-in roots** (the Mozilla set of `webpki-roots`, compiled in:
//!   the host's certificate store is not read), plus any CA certificates
//!   given in PEM ([`Trust::with_ca_pem`], `--ca FILE` on the command line):
//!   the server's certificate must chain to one of them and name the host;
//! - **a pinned certificate** ([`Trust::pinned`], `--pin-sha256 HEX`): the
//!   server must present exactly the certificate whose DER encoding has
//!   this SHA-256 [`Fingerprint`]. Its names, issuer and dates are not
//!   checked (a broker's self-signed certificate is pinned this way), but
//!   the handshake's signatures still are, so only the holder of that
//!   certificate's key gets through. Any other certificate fails the
//!   handshake with a [`PinMismatch`] naming both fingerprints.
//!
//! [`Trust::client_config`] builds the rustls config; [`Trust::reqwest`]
//! and [`Trust::ws_connector`] hand it to reqwest and tokio-tungstenite.
//! [`explain`] finds a [`PinMismatch`] in an error's chain, wherever the
//! HTTP or WebSocket library put it.
//!
//! ```
//! # fn demo() -> Result<(), brume_tls::TlsError> {
//! // What `brume broker --tls-self-signed` printed.
//! let pin: brume_tls::Fingerprint =
//!     "5d0a1f8c3be2a7f29e14c06b7d38e9a1f24c57b80d63e1a9c2f47b5e8d01a36c".parse()?;
//! let trust = brume_tls::Trust::pinned(pin);
//! let http = trust.reqwest(reqwest::Client::builder())?.build();
//! # let _ = http;
//! # Ok(()) }
//! ```
//!
//! # Fingerprints
//!
//! A [`Fingerprint`] prints as 64 lowercase hex digits, without
//! separators (as `sha256sum` prints a file's digest); it parses from that,
//! in either case, with or without `:` between the bytes (as
//! `openssl x509 -fingerprint -sha256` prints it).

use std::error::Error as StdError;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest as _, Sha256};

pub use rustls;

/// The crypto provider every brume TLS config uses: rustls's `ring`.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 digest of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    /// 64 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why a string is not a [`Fingerprint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a SHA-256 fingerprint (64 hex digits, `:` between bytes allowed)")]
pub struct FingerprintError(String);

impl FromStr for Fingerprint {
    type Err = FingerprintError;
    fn from_str(s: &str) -> Result<Fingerprint, FingerprintError> {
        let text = s.trim();
        let digits: String = if text.contains(':') {
            // Colons only between bytes: every part is two digits.
            let parts: Vec<&str> = text.split(':').collect();
            if parts.iter().any(|p| p.len() != 2) {
                return Err(FingerprintError(s.to_owned()));
            }
            parts.concat()
        } else {
            text.to_owned()
        };
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&digits, &mut bytes).map_err(|_| FingerprintError(s.to_owned()))?;
        Ok(Fingerprint(bytes))
    }
}

/// Why a [`Trust`] or its client config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A CA file (or PEM text) without a usable certificate.
    #[error("{what}: {reason}")]
    Ca { what: String, reason: String },
    #[error(transparent)]
    Fingerprint(#[from] FingerprintError),
    /// Both a CA file and a pinned fingerprint were given.
    #[error("give a CA file or a pinned fingerprint, not both")]
    CaAndPin,
    /// rustls refused the config (it cannot, with the ring provider).
    #[error("TLS config: {0}")]
    Config(#[source] rustls::Error),
    /// reqwest did not take the rustls config.
    #[error("HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// Whom a client trusts as the server: the built-in roots and extra CA
/// certificates, or exactly one pinned certificate. `Default` is the
/// built-in roots alone. See the [crate docs](crate).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    extra_roots: Vec<CertificateDer<'static>>,
    pin: Option<Fingerprint>,
}

impl Trust {
    /// Only the certificate with this fingerprint.
    pub fn pinned(pin: Fingerprint) -> Trust {
        Trust {
            extra_roots: Vec::new(),
            pin: Some(pin),
        }
    }

    /// Also trusts every certificate in this PEM text as a root (`what`
    /// names it in errors). Fails if it holds none, or one that is not a
    /// usable trust anchor.
    pub fn with_ca_pem(mut self, pem: &[u8], what: &str) -> Result<Trust, TlsError> {
        let ca_err = |reason: String| TlsError::Ca {
            what: what.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ca_err(format!("not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(ca_err("no CERTIFICATE in it".into()));
        }
        let mut check = RootCertStore::empty();
        for cert in certs {
            check
                .add(cert.clone())
                .map_err(|e| ca_err(format!("not a usable CA certificate: {e}")))?;
            self.extra_roots.push(cert);
        }
        Ok(self)
    }

    /// [`Trust::with_ca_pem`] with the contents of a file.
    pub fn with_ca_file(self, path: &Path) -> Result<Trust, TlsError> {
        let pem = std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.with_ca_pem(&pem, &path.display().to_string())
    }

    /// What the command-line options say: `--ca FILE`, `--pin-sha256 HEX`
    /// (at most one of them), or neither (the built-in roots).
    pub fn from_options(ca: Option<&Path>, pin: Option<&str>) -> Result<Trust, TlsError> {
        match (ca, pin) {
            (Some(_), Some(_)) => Err(TlsError::CaAndPin),
            (Some(file), None) => Trust::default().with_ca_file(file),
            (None, Some(hex)) => Ok(Trust::pinned(hex.parse()?)),
            (None, None) => Ok(Trust::default()),
        }
    }

    /// The pinned fingerprint, if this trust is a pin.
    pub fn pin(&self) -> Option<Fingerprint> {
        self.pin
    }

    /// The extra roots (besides the built-in ones), in DER.
    pub fn extra_roots(&self) -> &[CertificateDer<'static>] {
        &self.extra_roots
    }

    /// This trust without its pin: the built-in roots and the extra CA
    /// certificates. For fetches from hosts other than the broker.
    pub fn without_pin(&self) -> Trust {
        Trust {
            extra_roots: self.extra_roots.clone(),
            pin: None,
        }
    }

    /// A rustls client config (ring provider, TLS 1.2 and 1.3, no ALPN).
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?;
        let config = match self.pin {
            Some(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier::new(pin, provider)))
                .with_no_client_auth(),
            None => {
                let mut roots = RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                for cert in &self.extra_roots {
                    // Checked when it was added.
                    roots.add(cert.clone()).map_err(TlsError::Config)?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        Ok(config)
    }

    /// `builder` with this trust for its `https://` URLs.
    pub fn reqwest(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, TlsError> {
        Ok(builder.use_preconfigured_tls(self.client_config()?))
    }

    /// A tokio-tungstenite connector with this trust for `wss://` URLs
    /// (`ws://` URLs ignore it).
    pub fn ws_connector(&self) -> Result<tokio_tungstenite::Connector, TlsError> {
        Ok(tokio_tungstenite::Connector::Rustls(Arc::new(
            self.client_config()?,
        )))
    }
}

/// The server presented a certificate other than the pinned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the server's certificate fingerprint did not match the pinned one: \
     expected sha256 {expected}, the server's is {presented}"
)]
pub struct PinMismatch {
    pub expected: Fingerprint,
    pub presented: Fingerprint,
}

/// The first error of type `T` behind `err`: in its chain, or wrapped in
/// a `std::io::Error` (whose `source` skips the error it wraps).
fn find<'e, T: StdError + 'static>(err: &'e (dyn StdError + 'static)) -> Option<&'e T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(found) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| find::<T>(inner))
        {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// The [`PinMismatch`] behind an error, if there is one, wherever the
/// HTTP or WebSocket library put it.
pub fn pin_mismatch(err: &(dyn StdError + 'static)) -> Option<PinMismatch> {
    if let Some(m) = find::<PinMismatch>(err) {
        return Some(*m);
    }
    match find::<rustls::Error>(err)? {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            other.0.downcast_ref::<PinMismatch>().copied()
        }
        _ => None,
    }
}

/// A human sentence for a TLS failure behind `err`, when it is one this
/// crate can say better than the libraries do: a pin mismatch (with both
/// fingerprints), or a certificate no trusted root signed.
pub fn explain(err: &(dyn StdError + 'static)) -> Option<String> {
    if let Some(m) = pin_mismatch(err) {
        return Some(m.to_string());
    }
    match find::<rustls::Error>(err)? {
        e @ rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => Some(format!(
            "{e} (no trusted root signed the server's certificate: trust its CA, \
             or pin its fingerprint if it is self-signed)"
        )),
        _ => None,
    }
}

/// Accepts exactly the end-entity certificate with the pinned fingerprint,
/// whatever its names, issuer or dates, and verifies the handshake's
/// signatures with the provider's algorithms.
#[derive(Debug)]
pub struct PinVerifier {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinVerifier {
    pub fn new(pin: Fingerprint, provider: Arc<CryptoProvider>) -> PinVerifier {
        PinVerifier { pin, provider }
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity);
        if presented == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = PinMismatch {
            expected: self.pin,
            presented,
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(mismatch)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests;
