//! `--auto-tls` / `--peer-auto-tls`: a self-signed certificate as etcd's `SelfCert`
//! makes it (ECDSA P-256, organization "etcd", valid for one year, the listen URLs'
//! hosts as subject alternative names, usable for server and client auth), kept as
//! `cert.pem` and `key.pem` in the port's fixtures directory and reused while both
//! files exist.
//!
//! Guarantees: the key file is written with mode 0600; an existing pair is never
//! overwritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::TlsError;

fn gen_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// The pair in `dir`, generated for `hosts` if it does not exist yet.
pub fn self_cert(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(dir).map_err(gen_err)?;
    let mut sans: Vec<String> = Vec::new();
    for h in hosts {
        let h = h.trim_start_matches('[').trim_end_matches(']').to_string();
        if !sans.contains(&h) {
            sans.push(h);
        }
    }
    let mut params = rcgen::CertificateParams::new(sans).map_err(gen_err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "etcd");
    // Whole seconds: a fraction would be encoded, and Go's parser refuses it.
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(gen_err)?;
    params.not_before = now;
    params.not_after = now + time::Duration::days(365);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyEncipherment,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let mut serial = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut serial)
        .map_err(|_| TlsError::Generate("no random bytes for the serial number".into()))?;
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS certificate");
    Ok((cert_path, key_path))
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| TlsError::Generate(format!("{}: {e}", path.display())))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| TlsError::Generate(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = dir.path().join("fixtures/client");
        let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let (cert, key) = self_cert(&fixtures, &hosts).unwrap();
        let first = std::fs::read(&cert).unwrap();
        assert_eq!(
            self_cert(&fixtures, &hosts).unwrap(),
            (cert.clone(), key.clone())
        );
        assert_eq!(
            std::fs::read(&cert).unwrap(),
            first,
            "an existing pair is reused"
        );
        let der = super::super::certs(&cert).unwrap().remove(0);
        assert!(super::super::verify::valid_for_host(&der, "127.0.0.1"));
        assert!(super::super::verify::valid_for_host(&der, "localhost"));
        super::super::CertFiles::load(cert, key).unwrap();
    }
}
