//! Test certificates, made at test time with `rcgen` (nothing committed, no
//! expiry to go off one day): a CA that issues server and client
//! certificates into PEM files in a fresh temporary directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate authority for tests, writing its files under `dir`.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    /// The CA certificate, PEM, to trust.
    pub cert: PathBuf,
}

/// A certificate and its private key, as PEM files.
pub struct Issued {
    /// The certificate (leaf only; the CA is trusted directly).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

fn fresh_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ipc-pki-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl Ca {
    /// A new CA named `name`, in a fresh directory.
    pub fn new(name: &str) -> Self {
        let dir = fresh_dir();
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let path = dir.join("ca.pem");
        write(&path, &cert.pem());
        Self {
            issuer: Issuer::new(params, key),
            dir,
            cert: path,
        }
    }

    fn issue_with(
        &self,
        name: &str,
        client: bool,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "ipc tests");
        params.subject_alt_names = vec![
            SanType::DnsName(name.try_into().expect("a DNS name")),
            SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        ];
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        edit(&mut params);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        let cert_path = self.dir.join(format!("{name}.pem"));
        let key_path = self.dir.join(format!("{name}-key.pem"));
        write(&cert_path, &cert.pem());
        write(&key_path, &key.serialize_pem());
        Issued {
            cert: cert_path,
            key: key_path,
        }
    }

    /// A server certificate for `name` (and 127.0.0.1).
    pub fn server(&self, name: &str) -> Issued {
        self.issue_with(name, false, |_| {})
    }

    /// A client certificate whose common name is `name`.
    pub fn client(&self, name: &str) -> Issued {
        self.issue_with(name, true, |_| {})
    }

    /// A server certificate for `name` that expired in 2001.
    pub fn expired_server(&self, name: &str) -> Issued {
        self.issue_with(name, false, |p| {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        })
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
