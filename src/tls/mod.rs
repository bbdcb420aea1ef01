//! TLS with rustls, on both ends (docs/api.md "TLS"): reading PEM files, checking that a key
//! matches its certificate, building the [`ServerConfig`] of a listener and the [`ClientConfig`]
//! of the forwarder, and [`ServerTls`], the holder a listener reads at each new connection and
//! SIGHUP replaces.
//!
//! Every config here is built with the ring provider, the one reqwest's `rustls-tls` already
//! pulls in, selected explicitly ([`provider`]) so nothing depends on a process-wide default.
//! A handshake runs in its connection's own task, bounded by [`HANDSHAKE_TIMEOUT`]; the API's
//! listener ([`listener::TlsListener`]) hands axum only connections that finished it.
//!
//! A leaf: imports nothing of ours, so `config` (validation), `ingest` (TCP statsd), `server`
//! (the API listener, reload) and `forward` (the client) can all use it.

pub mod listener;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};

/// How long a client may take to complete its handshake before its connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest PEM file read. Certificates and keys are a few KiB and a system CA bundle some
/// hundreds; anything bigger is a wrong path.
pub const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

/// Which file of a TLS setting an error is about; the config maps it to the key's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemRole {
    /// The certificate chain (`tls_cert`).
    Cert,
    /// The private key (`tls_key`).
    Key,
    /// Trusted CA certificates (`tls_client_ca`, `[forward] tls_ca`).
    Ca,
}

/// Why a TLS configuration could not be built. Messages name the file, not the key: the
/// caller knows which key holds it ([`TlsError::role`]).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// What the file was for.
        role: PemRole,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_PEM_BYTES`].
    #[error("{} is larger than {MAX_PEM_BYTES} bytes", path.display())]
    TooLarge {
        /// What the file was for.
        role: PemRole,
        /// The file.
        path: PathBuf,
    },
    /// A PEM section is malformed (bad base64, no end line).
    #[error("{} is not valid PEM: {reason}", path.display())]
    Pem {
        /// What the file was for.
        role: PemRole,
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
    /// No `CERTIFICATE` section in the file.
    #[error("no PEM certificate in {}", path.display())]
    NoCertificate {
        /// What the file was for.
        role: PemRole,
        /// The file.
        path: PathBuf,
    },
    /// No private key section (PKCS#8, PKCS#1 or SEC1) in the file.
    #[error("no PEM private key in {}", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is not the one the certificate was issued for.
    #[error("the key in {} does not match the certificate in {}", key.display(), cert.display())]
    Mismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// rustls refused what the file holds (an unsupported key type, a malformed certificate).
    #[error("{}: {source}", path.display())]
    Refused {
        /// What the file was for.
        role: PemRole,
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// The CA file cannot verify client certificates.
    #[error("{}: cannot verify client certificates with it: {source}", path.display())]
    Verifier {
        /// The CA file.
        path: PathBuf,
        /// rustls's reason.
        source: rustls::server::VerifierBuilderError,
    },
    /// reqwest could not build the HTTPS client.
    #[error("cannot build the https client: {0}")]
    Client(reqwest::Error),
}

impl TlsError {
    /// Which file (and so which config key) the error is about.
    pub fn role(&self) -> PemRole {
        match self {
            TlsError::Read { role, .. }
            | TlsError::TooLarge { role, .. }
            | TlsError::Pem { role, .. }
            | TlsError::NoCertificate { role, .. }
            | TlsError::Refused { role, .. } => *role,
            TlsError::NoKey { .. } | TlsError::Mismatch { .. } => PemRole::Key,
            TlsError::Verifier { .. } => PemRole::Ca,
            TlsError::Client(_) => PemRole::Cert,
        }
    }
}

/// The crypto provider every config here uses: ring, as reqwest's `rustls-tls` does.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem(path: &Path, role: PemRole) -> Result<Vec<u8>, TlsError> {
    let read_err = |source| TlsError::Read {
        role,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            role,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

fn pem_err(path: &Path, role: PemRole, e: &pem::Error) -> TlsError {
    TlsError::Pem {
        role,
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Every `CERTIFICATE` section of a PEM file, in order (a chain: leaf first; or CA roots).
pub fn load_certs(path: &Path, role: PemRole) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(path, role)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, role, &e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            role,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem(path, PemRole::Key)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        e => pem_err(path, PemRole::Key, &e),
    })
}

/// A certificate chain and its key, checked to belong together (the key's public half is the
/// leaf certificate's).
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert, PemRole::Cert)?;
    let der = load_key(key)?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|source| TlsError::Refused {
            role: PemRole::Key,
            path: key.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch {
                key: key.to_owned(),
                cert: cert.to_owned(),
            })
        }
        // ring can always derive the public key of the keys it loads; "unknown" cannot happen.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(source) => Err(TlsError::Refused {
            role: PemRole::Cert,
            path: cert.to_owned(),
            source,
        }),
    }
}

fn roots_from(path: &Path, roots: &mut RootCertStore) -> Result<(), TlsError> {
    for cert in load_certs(path, PemRole::Ca)? {
        roots.add(cert).map_err(|source| TlsError::Refused {
            role: PemRole::Ca,
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// A listener's TLS: its certificate chain and key, and, with `client_ca`, client certificates
/// required and verified against that CA.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certified = load_certified_key(cert, key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Refused {
            role: PemRole::Cert,
            path: cert.to_owned(),
            source,
        })?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots_from(ca, &mut roots)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|source| TlsError::Verifier {
                    path: ca.to_owned(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(Arc::new(builder.with_cert_resolver(Arc::new(
        SingleCertAndKey::from(certified),
    ))))
}

/// The forwarder's TLS: the webpki roots (reqwest's default trust) plus every certificate in
/// `ca`, and, with `identity` (certificate, key), a client certificate presented on request.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(ca) = ca {
        roots_from(ca, &mut roots)?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Refused {
            role: PemRole::Ca,
            path: ca.map(Path::to_owned).unwrap_or_default(),
            source,
        })?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certified = load_certified_key(cert, key)?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
        }
    };
    Ok(Arc::new(config))
}

/// The forwarder's HTTP client: `timeout` per request, idle connections kept 90 s, and `tls`
/// when `[forward]` sets any TLS key (else reqwest's own rustls setup: webpki roots, no client
/// certificate).
pub fn forward_client(
    timeout: Duration,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<reqwest::Client, TlsError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("meterd/", env!("CARGO_PKG_VERSION")));
    if let Some(tls) = tls {
        builder = builder.use_preconfigured_tls(ClientConfig::clone(tls));
    }
    builder.build().map_err(TlsError::Client)
}

/// A listener's current TLS configuration. Each new connection takes the configuration in
/// place when it arrives; SIGHUP [`replace`](ServerTls::replace)s it, and connections already
/// established keep the one they started with.
#[derive(Debug)]
pub struct ServerTls {
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// A holder serving `config`.
    pub fn new(config: Arc<ServerConfig>) -> ServerTls {
        ServerTls {
            current: RwLock::new(config),
        }
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Serves `config` to connections from now on.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// The server side of a handshake on `stream` with the current configuration, bounded by
    /// [`HANDSHAKE_TIMEOUT`]. Run it in the connection's own task: it waits on the client.
    pub async fn accept<S>(&self, stream: S) -> std::io::Result<tokio_rustls::server::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(done) => done,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "tls handshake timed out",
            )),
        }
    }
}

/// Logs a failed handshake at WARN, at most once per 10 s per process, with how many failed
/// since the last line (scanners and plaintext clients can fail thousands a second).
pub fn log_handshake_failure(
    transport: &'static str,
    peer: std::net::SocketAddr,
    error: &std::io::Error,
) {
    static LAST: Mutex<Option<(Instant, u64)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
    match last.as_mut() {
        Some((at, suppressed)) if at.elapsed() < Duration::from_secs(10) => {
            *suppressed += 1;
            tracing::debug!(transport, %peer, error = %error, "tls handshake failed");
        }
        _ => {
            let suppressed = (*last).map_or(0, |(_, n)| n);
            *last = Some((Instant::now(), 0));
            tracing::warn!(transport, %peer, error = %error, failed_since_last_report = suppressed, "tls handshake failed; closing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a self-signed certificate and its key for `localhost`; returns their paths.
    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn matching_pair_builds_server_and_client_configs() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "a");
        server_config(&cert, &key, None).unwrap();
        server_config(&cert, &key, Some(&cert)).unwrap();
        client_config(Some(&cert), Some((&cert, &key))).unwrap();
        client_config(None, None).unwrap();
    }

    #[test]
    fn missing_file_is_a_read_error_for_its_role() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pair(dir.path(), "a");
        let e = server_config(&cert, &dir.path().join("nope.key"), None).unwrap_err();
        assert_eq!(e.role(), PemRole::Key);
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
        assert!(e.to_string().contains("nope.key"), "{e}");
    }

    #[test]
    fn key_of_another_certificate_is_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pair(dir.path(), "a");
        let (_, other_key) = pair(dir.path(), "b");
        let e = server_config(&cert, &other_key, None).unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        assert_eq!(e.role(), PemRole::Key);
        assert!(e.to_string().contains("does not match"), "{e}");
        let e = client_config(None, Some((&cert, &other_key))).unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
    }

    #[test]
    fn garbled_pem_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = pair(dir.path(), "a");
        let bad = write(
            dir.path(),
            "bad.crt",
            "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        );
        let e = server_config(&bad, &key, None).unwrap_err();
        assert!(matches!(e, TlsError::Pem { .. }), "{e}");
        assert_eq!(e.role(), PemRole::Cert);
        let unterminated = write(dir.path(), "cut.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n");
        let e = load_certs(&unterminated, PemRole::Cert).unwrap_err();
        assert!(matches!(e, TlsError::Pem { .. }), "{e}");
    }

    #[test]
    fn files_without_the_expected_section_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "a");
        let text = write(dir.path(), "notes.txt", "not a certificate\n");
        let e = load_certs(&text, PemRole::Ca).unwrap_err();
        assert!(
            matches!(
                e,
                TlsError::NoCertificate {
                    role: PemRole::Ca,
                    ..
                }
            ),
            "{e}"
        );
        // A key file given as the certificate, and the other way round.
        let e = load_certs(&key, PemRole::Cert).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
        let e = load_key(&cert).unwrap_err();
        assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
    }

    #[test]
    fn certificate_that_is_not_der_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = pair(dir.path(), "a");
        // Valid PEM around bytes that are no certificate.
        let junk = write(
            dir.path(),
            "junk.crt",
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        );
        let e = server_config(&junk, &key, None).unwrap_err();
        assert_eq!(e.role(), PemRole::Cert, "{e}");
        let e = server_config(&key, &key, Some(&junk)).unwrap_err();
        assert_eq!(e.role(), PemRole::Cert, "{e}");
        let (cert, key) = pair(dir.path(), "b");
        let e = server_config(&cert, &key, Some(&junk)).unwrap_err();
        assert_eq!(e.role(), PemRole::Ca, "{e}");
    }

    #[test]
    fn oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pem");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_PEM_BYTES + 1).unwrap();
        let e = load_certs(&big, PemRole::Ca).unwrap_err();
        assert!(matches!(e, TlsError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn replace_serves_the_new_config() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "a");
        let first = server_config(&cert, &key, None).unwrap();
        let second = server_config(&cert, &key, None).unwrap();
        let holder = ServerTls::new(first.clone());
        assert!(Arc::ptr_eq(&holder.current(), &first));
        holder.replace(second.clone());
        assert!(Arc::ptr_eq(&holder.current(), &second));
    }
}
