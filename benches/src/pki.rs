//! Certificates for the `ipc-tls` column, made at run time with `rcgen`: a
//! throw-away CA, and a server certificate it signs for `localhost` and
//! `127.0.0.1`. Nothing is committed and nothing expires in the repository.
//!
//! `ipc_core`'s TLS settings read PEM files, so the certificates pass
//! through a fresh temporary directory that is removed again before
//! [`TlsPair::generate`] returns.

use std::error::Error as StdError;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ipc_core::{TlsClient, TlsServer};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

type BoxError = Box<dyn StdError + Send + Sync>;

/// TLS settings for one server and the clients that trust it.
#[derive(Debug, Clone)]
pub struct TlsPair {
    /// The server's: its certificate (signed by the CA) and key.
    pub server: TlsServer,
    /// A client's: trusts the CA alone. The name checked is the host of the
    /// `tls://` address, `127.0.0.1`, which the certificate carries.
    pub client: TlsClient,
}

impl TlsPair {
    /// A new CA and a server certificate signed by it (ECDSA P-256, `rcgen`'s
    /// default), loaded into `ipc_core`'s settings.
    pub fn generate() -> Result<Self, BoxError> {
        let dir = fresh_dir();
        std::fs::create_dir_all(&dir)?;
        let made = Self::generate_in(&dir);
        // The settings hold what they read; the files are not needed after.
        let _ = std::fs::remove_dir_all(&dir);
        made
    }

    fn generate_in(dir: &Path) -> Result<Self, BoxError> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "ipc bench CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let mut leaf = CertificateParams::new(Vec::<String>::new())?;
        leaf.distinguished_name
            .push(DnType::CommonName, "ipc bench server");
        leaf.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress(Ipv4Addr::LOCALHOST.into()),
        ];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate()?;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

        let (ca_pem, cert_pem, key_pem) = (
            dir.join("ca.pem"),
            dir.join("server.pem"),
            dir.join("server-key.pem"),
        );
        std::fs::write(&ca_pem, ca_cert.pem())?;
        std::fs::write(&cert_pem, leaf_cert.pem())?;
        std::fs::write(&key_pem, leaf_key.serialize_pem())?;
        Ok(Self {
            server: TlsServer::from_pem_files(&cert_pem, &key_pem)?,
            client: TlsClient::from_ca_file(&ca_pem)?,
        })
    }
}

fn fresh_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "ipc-bench-pki-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}
