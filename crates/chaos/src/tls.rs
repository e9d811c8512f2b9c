//! Client and peer mTLS for a chaos run: a throw-away CA and one member certificate
//! (Common Name `member`, valid for the members' addresses, for server and client
//! auth) written to the run's directory, the etcd flags that make every member use
//! them, and the client TLS options of the workload's connections.
//!
//! Guarantees: the flags ask for what an operator would run: `https` everywhere,
//! `--client-cert-auth` and `--peer-client-cert-auth` against the CA, and
//! `--peer-cert-allowed-cn=member`, so a run exercises the verified paths, not
//! encryption alone.

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("generating test certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The files of a run's PKI.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The Common Name of the member certificate, required of peers.
pub const MEMBER_CN: &str = "member";

fn write(path: PathBuf, data: &str) -> Result<PathBuf, TlsError> {
    std::fs::write(&path, data).map_err(|source| TlsError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Writes `ca.pem`, `member.pem` and `member.key` into `dir`; the certificate is
/// valid for `hosts` (IP addresses or names).
pub fn generate(dir: &Path, hosts: &[String]) -> Result<TlsFiles, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "skiff-chaos CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, MEMBER_CN);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &issuer)?;
    Ok(TlsFiles {
        ca: write(dir.join("ca.pem"), &ca_cert.pem())?,
        cert: write(dir.join("member.pem"), &cert.pem())?,
        key: write(dir.join("member.key"), &key.serialize_pem())?,
    })
}

impl TlsFiles {
    /// etcd's flags for client and peer mTLS with these files.
    pub fn server_args(&self) -> Vec<String> {
        let (ca, cert, key) = (self.ca.display(), self.cert.display(), self.key.display());
        vec![
            format!("--cert-file={cert}"),
            format!("--key-file={key}"),
            format!("--trusted-ca-file={ca}"),
            "--client-cert-auth".to_string(),
            format!("--peer-cert-file={cert}"),
            format!("--peer-key-file={key}"),
            format!("--peer-trusted-ca-file={ca}"),
            "--peer-client-cert-auth".to_string(),
            format!("--peer-cert-allowed-cn={MEMBER_CN}"),
        ]
    }

    /// The workload's client TLS: trusts the CA, presents the member certificate.
    pub fn client_options(&self) -> Result<etcd_client::TlsOptions, TlsError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|source| TlsError::Io {
                path: p.clone(),
                source,
            })
        };
        Ok(etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&self.ca)?))
            .identity(etcd_client::Identity::from_pem(
                read(&self.cert)?,
                read(&self.key)?,
            )))
    }
}
