//! TLS under the transport seam: [`TlsServer`] and [`TlsClient`] settings,
//! the handshakes, and what a verified peer certificate says
//! ([`PeerCertificate`]).
//!
//! Built on `rustls` with the `ring` crypto provider: it builds with only a
//! C compiler on a fresh machine (the default `aws-lc-rs` provider also
//! needs CMake), and it is the provider `rustls` has supported longest.
//! Certificates and keys are read from PEM files with `rustls`' own PEM
//! parser, or the whole `rustls` config is passed in for full control.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;

use super::{RawSocket, Socket, Stream};
use crate::error::Error;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(what: &str, path: &Path, e: impl fmt::Display) -> Error {
    Error::Config {
        detail: format!("{what} {}: {e}", path.display()),
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| config_error("cannot read the certificates in", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error("cannot read the certificates in", path, e))?;
    if chain.is_empty() {
        return Err(config_error("no certificate in", path, "empty"));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| config_error("cannot read the private key in", path, e))
}

fn read_roots(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in read_chain(path)? {
        roots
            .add(cert)
            .map_err(|e| config_error("not a usable CA certificate in", path, e))?;
    }
    Ok(roots)
}

/// A server's TLS settings: its certificate chain and key, and, for mutual
/// TLS, the CA whose certificates clients must present.
///
/// ```no_run
/// # fn main() -> Result<(), ipc_core::Error> {
/// use ipc_core::transport::TlsServer;
/// let tls = TlsServer::from_pem_files("chain.pem", "key.pem")?
///     .require_client_certificates("clients-ca.pem")?; // mutual TLS
/// let server = ipc_core::Server::builder().addr("tls://0.0.0.0:9443").tls(tls);
/// # drop(server); Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsServer {
    source: ServerSource,
}

#[derive(Clone)]
enum ServerSource {
    Files {
        chain: Vec<CertificateDer<'static>>,
        key: Arc<PrivateKeyDer<'static>>,
        client_roots: Option<Arc<RootCertStore>>,
    },
    Config(Arc<rustls::ServerConfig>),
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mutual = match &self.source {
            ServerSource::Files { client_roots, .. } => Some(client_roots.is_some()),
            ServerSource::Config(_) => None,
        };
        // Never the key.
        f.debug_struct("TlsServer")
            .field("client_certificates_required", &mutual)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// The certificate chain (leaf first) and private key in these PEM files.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the file that cannot be read or parsed.
    pub fn from_pem_files(chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, Error> {
        Ok(Self {
            source: ServerSource::Files {
                chain: read_chain(chain.as_ref())?,
                key: Arc::new(read_key(key.as_ref())?),
                client_roots: None,
            },
        })
    }

    /// A `rustls` config of your own (certificate resolver, versions,
    /// client verifier...), used as it is.
    pub fn from_config(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            source: ServerSource::Config(config),
        }
    }

    /// Mutual TLS: every client must present a certificate signed by a CA
    /// in this PEM file; others are refused during the TLS handshake. The
    /// verified certificate is then available to handlers
    /// ([`crate::CallContext::peer_certificate`]).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the file cannot be read, or these settings came
    /// from [`TlsServer::from_config`] (set the verifier in that config).
    pub fn require_client_certificates(mut self, ca: impl AsRef<Path>) -> Result<Self, Error> {
        match &mut self.source {
            ServerSource::Files { client_roots, .. } => {
                *client_roots = Some(Arc::new(read_roots(ca.as_ref())?));
                Ok(self)
            }
            ServerSource::Config(_) => Err(Error::Config {
                detail: "client certificates of a `TlsServer::from_config` are set in that config"
                    .into(),
            }),
        }
    }

    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, Error> {
        let config = match &self.source {
            ServerSource::Config(config) => config.clone(),
            ServerSource::Files {
                chain,
                key,
                client_roots,
            } => {
                let provider = provider();
                let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::Config {
                        detail: format!("TLS: {e}"),
                    })?;
                let builder = match client_roots {
                    Some(roots) => {
                        let verifier =
                            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
                                .build()
                                .map_err(|e| Error::Config {
                                    detail: format!("the client CA: {e}"),
                                })?;
                        builder.with_client_cert_verifier(verifier)
                    }
                    None => builder.with_no_client_auth(),
                };
                let config = builder
                    .with_single_cert(chain.clone(), key.clone_key())
                    .map_err(|e| Error::Config {
                        detail: format!("the certificate and key do not go together: {e}"),
                    })?;
                Arc::new(config)
            }
        };
        Ok(TlsAcceptor(tokio_rustls::TlsAcceptor::from(config)))
    }
}

/// A client's TLS settings: the CAs it trusts, the name it expects the
/// server's certificate to carry, and, for mutual TLS, its own certificate.
///
/// Trust roots come from a PEM file. For the platform's roots (a public
/// server), build a `rustls::ClientConfig` with `rustls-native-certs` or
/// `webpki-roots` and pass it with [`TlsClient::from_config`].
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ipc_core::Error> {
/// use ipc_core::transport::TlsClient;
/// let tls = TlsClient::from_ca_file("ca.pem")?.identity("me.pem", "me-key.pem")?;
/// let client = ipc_core::Client::builder()
///     .addr("tls://server.example:9443") // the name checked is `server.example`
///     .tls(tls)
///     .connect()
///     .await?;
/// # drop(client); Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsClient {
    source: ClientSource,
    server_name: Option<String>,
}

#[derive(Clone)]
enum ClientSource {
    Files {
        roots: Arc<RootCertStore>,
        identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    },
    Config(Arc<rustls::ClientConfig>),
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let identity = match &self.source {
            ClientSource::Files { identity, .. } => Some(identity.is_some()),
            ClientSource::Config(_) => None,
        };
        // Never the key.
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .field("has_certificate", &identity)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Trusts the CAs in this PEM file (and no other).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the file that cannot be read or parsed.
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        Ok(Self {
            source: ClientSource::Files {
                roots: Arc::new(read_roots(path.as_ref())?),
                identity: None,
            },
            server_name: None,
        })
    }

    /// A `rustls` config of your own, used as it is.
    pub fn from_config(config: Arc<rustls::ClientConfig>) -> Self {
        Self {
            source: ClientSource::Config(config),
            server_name: None,
        }
    }

    /// The name the server's certificate must carry. Default: the host of
    /// the `tls://HOST:PORT` address connected to.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Mutual TLS: the client's certificate chain and key, in PEM files.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if a file cannot be read, or these settings came
    /// from [`TlsClient::from_config`].
    pub fn identity(
        mut self,
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        match &mut self.source {
            ClientSource::Files { identity, .. } => {
                *identity = Some((
                    read_chain(chain.as_ref())?,
                    Arc::new(read_key(key.as_ref())?),
                ));
                Ok(self)
            }
            ClientSource::Config(_) => Err(Error::Config {
                detail: "the certificate of a `TlsClient::from_config` is set in that config"
                    .into(),
            }),
        }
    }

    pub(crate) fn connector(&self) -> Result<TlsConnector, Error> {
        let config = match &self.source {
            ClientSource::Config(config) => config.clone(),
            ClientSource::Files { roots, identity } => {
                let builder = rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::Config {
                        detail: format!("TLS: {e}"),
                    })?
                    .with_root_certificates(roots.clone());
                let config = match identity {
                    Some((chain, key)) => builder
                        .with_client_auth_cert(chain.clone(), key.clone_key())
                        .map_err(|e| Error::Config {
                            detail: format!(
                                "the client certificate and key do not go together: {e}"
                            ),
                        })?,
                    None => builder.with_no_client_auth(),
                };
                Arc::new(config)
            }
        };
        Ok(TlsConnector {
            inner: tokio_rustls::TlsConnector::from(config),
            server_name: self.server_name.clone(),
        })
    }
}

/// A server's ready TLS acceptor.
#[derive(Clone)]
pub(crate) struct TlsAcceptor(tokio_rustls::TlsAcceptor);

/// A client's ready TLS connector.
#[derive(Clone)]
pub(crate) struct TlsConnector {
    inner: tokio_rustls::TlsConnector,
    server_name: Option<String>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Whether `bytes` start like a TLS record (handshake or alert, TLS 1.x):
/// what a TLS peer sends where a plain one sends its hello.
pub(crate) fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, 0x00..=0x04, ..])
}

/// The TLS failure behind an I/O error, if that is what it is (a bad
/// certificate alert from the peer, say).
pub(crate) fn failure(e: &std::io::Error) -> Option<String> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(inner.to_string())
}

fn tls_error(what: &str, e: &std::io::Error) -> Error {
    Error::Tls {
        detail: format!("{what}: {e}"),
    }
}

impl TlsAcceptor {
    /// The server's side of the TLS handshake.
    pub(crate) async fn accept(&self, socket: Socket) -> Result<Stream, Error> {
        let Socket {
            raw,
            peer,
            local,
            credentials,
        } = socket;
        let stream = match raw {
            RawSocket::Tcp(tcp) => self.0.accept(tcp).await,
            #[cfg(unix)]
            RawSocket::Unix(unix) => {
                let tls = self
                    .0
                    .accept(unix)
                    .await
                    .map_err(|e| tls_error("handshake", &e))?;
                return Ok(split_server(tls, peer, local, credentials));
            }
            RawSocket::Io(io) => {
                let tls = self
                    .0
                    .accept(io)
                    .await
                    .map_err(|e| tls_error("handshake", &e))?;
                return Ok(split_server(tls, peer, local, credentials));
            }
        };
        let tls = stream.map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::InvalidData {
                " (the client does not speak TLS: plain ipc to a tls:// server?)"
            } else {
                ""
            };
            Error::Tls {
                detail: format!("handshake: {e}{hint}"),
            }
        })?;
        Ok(split_server(tls, peer, local, credentials))
    }
}

fn split_server<IO: super::Duplex + 'static>(
    tls: tokio_rustls::server::TlsStream<IO>,
    peer: String,
    local: String,
    credentials: Option<super::UnixCredentials>,
) -> Stream {
    let certificate = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| Arc::new(PeerCertificate::read(leaf)));
    let (read, write) = tokio::io::split(tls);
    Stream {
        read: Box::new(read),
        write: Box::new(write),
        peer,
        local,
        credentials,
        certificate,
    }
}

impl TlsConnector {
    /// The client's side of the TLS handshake, checking the server's
    /// certificate for the configured name or `host`.
    pub(crate) async fn connect(
        &self,
        socket: Socket,
        host: Option<&str>,
    ) -> Result<Stream, Error> {
        let name = self
            .server_name
            .as_deref()
            .or(host)
            .ok_or_else(|| Error::Config {
                detail: "TLS needs a server name: TlsClient::server_name".into(),
            })?;
        let server_name = ServerName::try_from(name.to_owned()).map_err(|e| Error::Config {
            detail: format!("`{name}` is not a valid TLS server name: {e}"),
        })?;
        let Socket {
            raw,
            peer,
            local,
            credentials,
        } = socket;
        let what = "handshake (is the server a TLS server, with a certificate for that name?)";
        let (read, write): (super::BoxedRead, super::BoxedWrite) = match raw {
            RawSocket::Tcp(tcp) => {
                let tls = self
                    .inner
                    .connect(server_name, tcp)
                    .await
                    .map_err(|e| tls_error(what, &e))?;
                let (r, w) = tokio::io::split(tls);
                (Box::new(r), Box::new(w))
            }
            #[cfg(unix)]
            RawSocket::Unix(unix) => {
                let tls = self
                    .inner
                    .connect(server_name, unix)
                    .await
                    .map_err(|e| tls_error(what, &e))?;
                let (r, w) = tokio::io::split(tls);
                (Box::new(r), Box::new(w))
            }
            RawSocket::Io(io) => {
                let tls = self
                    .inner
                    .connect(server_name, io)
                    .await
                    .map_err(|e| tls_error(what, &e))?;
                let (r, w) = tokio::io::split(tls);
                (Box::new(r), Box::new(w))
            }
        };
        Ok(Stream {
            read,
            write,
            peer,
            local,
            credentials,
            certificate: None,
        })
    }
}

/// A peer's certificate, verified during the TLS handshake (mutual TLS):
/// who the client is.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    der: CertificateDer<'static>,
    subject: String,
    common_name: Option<String>,
    dns_names: Vec<String>,
    uris: Vec<String>,
}

impl fmt::Debug for PeerCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerCertificate")
            .field("subject", &self.subject)
            .field("dns_names", &self.dns_names)
            .field("uris", &self.uris)
            .finish_non_exhaustive()
    }
}

impl PeerCertificate {
    fn read(der: &CertificateDer<'_>) -> Self {
        let der = der.clone().into_owned();
        let mut out = Self {
            der: der.clone(),
            subject: String::new(),
            common_name: None,
            dns_names: Vec::new(),
            uris: Vec::new(),
        };
        // rustls verified this certificate; it parses.
        if let Ok(cert) = webpki::EndEntityCert::try_from(&der) {
            out.dns_names = cert.valid_dns_names().map(str::to_owned).collect();
            out.uris = cert.valid_uri_names().map(str::to_owned).collect();
            let attributes = subject_attributes(cert.subject());
            out.common_name = attributes
                .iter()
                .find(|(k, _)| *k == "CN")
                .map(|(_, v)| v.clone());
            out.subject = attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
        }
        out
    }

    /// The subject's common name (`CN`), if it has one.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }

    /// The subject as `CN=...,OU=...,O=...,C=...` (the attributes it has of
    /// these, in the certificate's order).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The DNS names of the subject alternative names.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// The URIs of the subject alternative names (SPIFFE ids and the like).
    pub fn uris(&self) -> &[String] {
        &self.uris
    }

    /// The certificate itself, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
}

/// Reads one DER tag-length-value from `input`: (tag, value, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The subject's CN, OU, O and C attributes with string values, in order.
/// `name` is the content of the subject `Name` (a sequence of sets).
fn subject_attributes(mut name: &[u8]) -> Vec<(&'static str, String)> {
    const SET: u8 = 0x31;
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let mut out = Vec::new();
    while let Some((tag, set, rest)) = tlv(name) {
        name = rest;
        if tag != SET {
            continue;
        }
        let mut set = set;
        while let Some((tag, pair, rest)) = tlv(set) {
            set = rest;
            if tag != SEQUENCE {
                continue;
            }
            let Some((OID, oid, rest)) = tlv(pair) else {
                continue;
            };
            let key = match oid {
                [0x55, 0x04, 0x03] => "CN",
                [0x55, 0x04, 0x06] => "C",
                [0x55, 0x04, 0x0a] => "O",
                [0x55, 0x04, 0x0b] => "OU",
                _ => continue,
            };
            // UTF8String, PrintableString, IA5String.
            if let Some((0x0c | 0x13 | 0x16, value, _)) = tlv(rest) {
                if let Ok(value) = std::str::from_utf8(value) {
                    out.push((key, value.to_owned()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_are_recognised() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(looks_like_tls(&[0x15, 0x03, 0x03, 0x00, 0x02]));
        // An ipc hello starts with its length, little-endian.
        assert!(!looks_like_tls(&[0x13, 0x00, 0x00, 0x00, 0x00]));
    }

    #[test]
    fn malformed_subjects_give_nothing_not_a_panic() {
        for bytes in [
            &[][..],
            &[0x31],
            &[0x31, 0x85, 1, 2, 3, 4, 5],
            &[0x31, 0x05, 0x30],
        ] {
            assert!(subject_attributes(bytes).is_empty());
        }
    }
}
