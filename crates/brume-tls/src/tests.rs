//! The verifier and the roots, through real handshakes in memory.

use std::sync::Arc;

use rustls::pki_types::PrivateKeyDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConnection, ServerConfig, ServerConnection};

use super::*;

/// A self-signed certificate for `localhost` and 127.0.0.1, with its key
/// and its PEM.
struct Cert {
    der: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    pem: String,
}

fn self_signed() -> Cert {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("generate a certificate");
    Cert {
        der: made.cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into()),
        pem: made.cert.pem(),
    }
}

/// Serves `cert` with `key` (which need not be its key), over these
/// protocol versions.
#[derive(Debug)]
struct Serve(Arc<CertifiedKey>);

impl ResolvesServerCert for Serve {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn server(
    cert: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ServerConfig> {
    let provider = provider();
    let signer = provider
        .key_provider
        .load_private_key(key.clone_key())
        .expect("load the key");
    let certified = CertifiedKey::new(vec![cert.clone()], signer);
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Serve(Arc::new(certified))));
    Arc::new(config)
}

/// Feeds all of `bytes` to `conn`, processing as it goes.
fn feed<D>(conn: &mut rustls::ConnectionCommon<D>, mut bytes: &[u8]) -> Result<(), rustls::Error> {
    while !bytes.is_empty() {
        conn.read_tls(&mut bytes)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        conn.process_new_packets()?;
    }
    Ok(())
}

/// A handshake between a client with `trust` (asking for `name`) and
/// `server`, in memory; the client's error if it fails.
fn handshake(trust: &Trust, server: Arc<ServerConfig>, name: &str) -> Result<(), rustls::Error> {
    let config = Arc::new(trust.client_config().expect("client config"));
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    let mut client = ClientConnection::new(config, name)?;
    let mut server = ServerConnection::new(server).expect("server connection");
    for _ in 0..16 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).expect("client writes");
        }
        // The server's own errors show up as the alerts it sends.
        let _ = feed(&mut server, &wire);
        wire.clear();
        while server.wants_write() {
            server.write_tls(&mut wire).expect("server writes");
        }
        feed(&mut client, &wire)?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    panic!("the handshake neither finished nor failed");
}

const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

#[test]
fn the_pinned_certificate_is_accepted_whatever_its_names() {
    let cert = self_signed();
    let trust = Trust::pinned(Fingerprint::of(&cert.der));
    for versions in [TLS13, TLS12] {
        let server = server(&cert.der, &cert.key, versions);
        assert_eq!(handshake(&trust, server.clone(), "localhost"), Ok(()));
        assert_eq!(
            handshake(&trust, server, "broker.example"),
            Ok(()),
            "a pin does not check names"
        );
    }
}

#[test]
fn another_certificate_is_refused_naming_both_fingerprints() {
    let (cert, other) = (self_signed(), self_signed());
    let expected = Fingerprint::of(&other.der);
    let trust = Trust::pinned(expected);
    let err = handshake(&trust, server(&cert.der, &cert.key, TLS13), "localhost")
        .expect_err("a wrong pin must fail");
    let presented = Fingerprint::of(&cert.der);
    assert_eq!(
        pin_mismatch(&err),
        Some(PinMismatch {
            expected,
            presented
        })
    );
    let text = explain(&err).unwrap_or_default();
    assert!(
        text.contains("did not match")
            && text.contains(&expected.to_string())
            && text.contains(&presented.to_string()),
        "{text}"
    );
    // Where HTTP and WebSocket libraries put it: inside an io::Error.
    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, err);
    assert_eq!(pin_mismatch(&io).map(|m| m.presented), Some(presented));
}

#[test]
fn a_pin_still_checks_the_handshake_signature() {
    // The pinned certificate, served by someone without its key.
    let (cert, impostor) = (self_signed(), self_signed());
    let trust = Trust::pinned(Fingerprint::of(&cert.der));
    for versions in [TLS13, TLS12] {
        let err = handshake(
            &trust,
            server(&cert.der, &impostor.key, versions),
            "localhost",
        )
        .expect_err("a signature by another key must fail");
        assert_eq!(pin_mismatch(&err), None, "{err}");
    }
}

#[test]
fn a_ca_file_adds_a_root_and_names_are_checked() {
    let cert = self_signed();
    let server = server(&cert.der, &cert.key, TLS13);
    let err = handshake(&Trust::default(), server.clone(), "localhost")
        .expect_err("the built-in roots do not know a self-signed certificate");
    let text = explain(&err).unwrap_or_default();
    assert!(
        text.contains("UnknownIssuer") && text.contains("pin"),
        "{text}"
    );
    let trust = Trust::default()
        .with_ca_pem(cert.pem.as_bytes(), "test")
        .expect("a CA");
    assert_eq!(trust.extra_roots().len(), 1);
    assert_eq!(handshake(&trust, server.clone(), "localhost"), Ok(()));
    assert_eq!(handshake(&trust, server.clone(), "127.0.0.1"), Ok(()));
    assert!(handshake(&trust, server, "broker.example").is_err());
}

#[test]
fn options_and_ca_files_are_checked() {
    let dir = std::env::temp_dir();
    assert!(matches!(
        Trust::from_options(Some(&dir), Some("00")),
        Err(TlsError::CaAndPin)
    ));
    assert!(matches!(
        Trust::default().with_ca_pem(b"not pem at all", "x"),
        Err(TlsError::Ca { .. })
    ));
    let missing = dir.join("brume-tls-no-such-file.pem");
    let err = Trust::from_options(Some(&missing), None).err();
    assert!(matches!(err, Some(TlsError::Read { .. })), "{err:?}");
    assert_eq!(Trust::from_options(None, None).ok(), Some(Trust::default()));
    let pin = Fingerprint([0xab; 32]);
    assert_eq!(
        Trust::from_options(None, Some(&pin.to_string())).ok(),
        Some(Trust::pinned(pin))
    );
    assert_eq!(Trust::pinned(pin).without_pin(), Trust::default());
}

#[test]
fn fingerprints_print_as_plain_hex_and_parse_with_or_without_colons() {
    let f = Fingerprint::of(b"a certificate");
    let plain = f.to_string();
    assert_eq!(plain.len(), 64);
    assert_eq!(plain, plain.to_lowercase());
    let colons = f
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(plain.parse(), Ok(f));
    assert_eq!(colons.parse(), Ok(f));
    assert_eq!(format!(" {plain}\n").parse(), Ok(f));
    for bad in [
        "",
        &plain[..62],
        &format!("{plain}00"),
        &format!("{}zz", &plain[..62]),
        &colons.replacen(':', "", 1),
        &format!(":{colons}"),
    ] {
        assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
    }
}
