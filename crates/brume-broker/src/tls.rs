//! HTTPS and WSS: the broker's certificate and a listener that hands axum
//! connections whose TLS handshake is done.
//!
//! The certificate is a PEM chain and key given by the operator
//! ([`TlsConfig::Files`]), or a self-signed one ([`TlsConfig::SelfSigned`])
//! made once with rcgen for `localhost`, 127.0.0.1, ::1 and the listen
//! address, and kept in `data_dir/tls/` (`self-signed.crt`, and
//! `self-signed.key` with mode 0600) so that a restart serves the same
//! certificate. Clients pin it by its [`Fingerprint`]: the SHA-256 of its
//! DER encoding, which the broker logs at start and writes to
//! `data_dir/broker.sha256` while it serves.
//!
//! Handshakes run on tasks of their own (at most [`MAX_HANDSHAKES`] at a
//! time, each within [`HANDSHAKE_TIMEOUT`]), so a slow client delays no
//! one else; the accept loop stops with the broker.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use brume_tls::Fingerprint;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the kernel's
/// backlog.
pub const MAX_HANDSHAKES: usize = 1024;
/// Where a self-signed certificate is kept, under the data dir.
pub const SELF_SIGNED_DIR: &str = "tls";
/// The fingerprint of the certificate being served, under the data dir.
pub const FINGERPRINT_FILE: &str = "broker.sha256";

/// Where the broker's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsConfig {
    /// A certificate chain (leaf first) and its private key, in PEM.
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate, made once and kept in `data_dir/tls/`.
    SelfSigned,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("make a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS config: {0}")]
    Config(#[from] rustls::Error),
}

/// A certificate ready to serve.
pub(crate) struct ServerTls {
    pub acceptor: TlsAcceptor,
    pub fingerprint: Fingerprint,
}

/// Loads (or makes and keeps) the certificate `config` names.
pub(crate) fn load(
    config: &TlsConfig,
    data_dir: &Path,
    listen: SocketAddr,
) -> Result<ServerTls, TlsError> {
    let (chain, key) = match config {
        TlsConfig::Files { cert, key } => (read_chain(cert)?, read_key(key)?),
        TlsConfig::SelfSigned => self_signed(&data_dir.join(SELF_SIGNED_DIR), listen)?,
    };
    let fingerprint = Fingerprint::of(&chain[0]);
    let mut server = rustls::ServerConfig::builder_with_provider(brume_tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // axum serves HTTP/1.1 (WebSockets included).
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        fingerprint,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(format!("not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(pem_err("no CERTIFICATE in it".into()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        reason: format!("no private key in it ({e})"),
    })
}

/// The names a self-signed certificate is made for: `localhost`, the
/// loopback addresses and the listen address (unless it is unspecified).
fn self_signed_names(listen: SocketAddr) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
    let ip = listen.ip();
    if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
        names.push(ip.to_string());
    }
    names
}

/// The self-signed certificate kept in `dir`, made first if it is not
/// there. A kept one that doesn't name the listen address is still used
/// (clients that pin it don't mind), with a warning.
fn self_signed(
    dir: &Path,
    listen: SocketAddr,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let (cert_path, key_path, names_path) = (
        dir.join("self-signed.crt"),
        dir.join("self-signed.key"),
        dir.join("self-signed.names"),
    );
    let names = self_signed_names(listen);
    if cert_path.exists() && key_path.exists() {
        let kept = std::fs::read_to_string(&names_path).unwrap_or_default();
        let kept: Vec<&str> = kept.lines().collect();
        if let Some(missing) = names.iter().find(|n| !kept.contains(&n.as_str())) {
            tracing::warn!(
                dir = %dir.display(),
                "the kept self-signed certificate does not name {missing}: clients that \
                 check names (--ca) will refuse it; remove the directory to make a new one \
                 (with a new fingerprint)"
            );
        }
        return Ok((read_chain(&cert_path)?, read_key(&key_path)?));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    let mut params = rcgen::CertificateParams::new(names.clone())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "brume broker (self-signed)");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_private(&key_path, key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
    std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
    std::fs::write(&names_path, names.join("\n") + "\n").map_err(io(&names_path))?;
    tracing::info!(cert = %cert_path.display(), ?names, "made a self-signed certificate");
    let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    Ok((vec![cert.der().clone()], key))
}

/// Writes `bytes` to `path` (replacing it), readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A listener whose connections have finished their TLS handshake, fed by
/// [`accept_loop`].
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// The listener, and the accept loop that feeds it (to be spawned; it
    /// ends when `stop` is cancelled or the listener is dropped).
    pub fn new(
        tcp: TcpListener,
        local: SocketAddr,
        acceptor: TlsAcceptor,
        stop: CancellationToken,
    ) -> (TlsListener, impl Future<Output = ()> + Send + 'static) {
        let (tx, ready) = mpsc::channel(64);
        (
            TlsListener { ready, local },
            accept_loop(tcp, acceptor, tx, stop),
        )
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop stopped: so does the broker.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Accepts TCP connections (with TCP_NODELAY, as the plain listener) and
/// runs each one's handshake on a task of its own.
async fn accept_loop(
    mut tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    stop: CancellationToken,
) {
    let mut handshakes = tokio::task::JoinSet::new();
    loop {
        let room = handshakes.len() < MAX_HANDSHAKES;
        tokio::select! {
            () = stop.cancelled() => return,
            () = ready.closed() => return,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            // axum's accept logs errors and backs off on running out of files.
            (stream, peer) = axum::serve::Listener::accept(&mut tcp), if room => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!("set TCP_NODELAY: {e}");
                }
                let (acceptor, ready) = (acceptor.clone(), ready.clone());
                handshakes.spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_kept_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listen: SocketAddr = ([127, 0, 0, 2], 0).into();
        let config = TlsConfig::SelfSigned;
        let first = load(&config, dir.path(), listen).expect("make one");
        let again = load(&config, dir.path(), listen).expect("load it");
        assert_eq!(first.fingerprint, again.fingerprint);
        let tls = dir.path().join(SELF_SIGNED_DIR);
        let names = std::fs::read_to_string(tls.join("self-signed.names")).expect("names");
        assert_eq!(names, "localhost\n127.0.0.1\n::1\n127.0.0.2\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(tls.join("self-signed.key"))
                .map(|m| m.permissions().mode() & 0o777)
                .ok();
            assert_eq!(mode, Some(0o600));
        }
        // The same files, given as files, serve the same certificate.
        let files = TlsConfig::Files {
            cert: tls.join("self-signed.crt"),
            key: tls.join("self-signed.key"),
        };
        let given = load(&files, Path::new("/nonexistent"), listen).expect("load files");
        assert_eq!(given.fingerprint, first.fingerprint);
        assert_eq!(
            self_signed_names(([0, 0, 0, 0], 7700).into()),
            ["localhost", "127.0.0.1", "::1"]
        );
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello\n").expect("write");
        let files = TlsConfig::Files {
            cert: junk.clone(),
            key: junk.clone(),
        };
        let err = load(&files, dir.path(), ([127, 0, 0, 1], 0).into()).err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.starts_with(&junk.display().to_string()) && text.contains("no CERTIFICATE"),
            "{text}"
        );
    }
}
