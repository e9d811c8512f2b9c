//! Certificate checks on top of webpki's chain verification: etcd's allowed Common
//! Name and allowed host name, and the unverified dialing of auto-TLS peers.
//!
//! Guarantees: the extra checks run only after the chain verified, and a failure is a
//! handshake failure with etcd's reason text ("CommonName authentication failed",
//! "HostName authentication failed"); everything else is the inner verifier's answer.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The Common Name of a certificate's subject, if it has one.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok().map(str::to_string));
    cn
}

/// Go's `Certificate.VerifyHostname`: an IP must be among the IP SANs, a name must
/// match a DNS SAN (a leading `*.` matches one label).
pub fn valid_for_host(der: &[u8], host: &str) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: Option<IpAddr> = host.parse().ok();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    san.value.general_names.iter().any(|name| match (name, ip) {
        (GeneralName::IPAddress(bytes), Some(ip)) => match ip {
            IpAddr::V4(v4) => *bytes == v4.octets().as_slice(),
            IpAddr::V6(v6) => *bytes == v6.octets().as_slice(),
        },
        (GeneralName::DNSName(pattern), None) => {
            let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(rest) => host
                    .split_once('.')
                    .is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
                None => pattern == host,
            }
        }
        _ => false,
    })
}

/// etcd's `AllowedCN` / `AllowedHostname` checks on a verified leaf certificate.
fn check_identity(
    leaf: &CertificateDer<'_>,
    allowed_cn: Option<&str>,
    allowed_hostname: Option<&str>,
) -> Result<(), Error> {
    if let Some(cn) = allowed_cn {
        if common_name(leaf).as_deref() != Some(cn) {
            return Err(Error::General("CommonName authentication failed".into()));
        }
    }
    if let Some(host) = allowed_hostname {
        if !valid_for_host(leaf, host) {
            return Err(Error::General("HostName authentication failed".into()));
        }
    }
    Ok(())
}

/// The client verifier of a listener: webpki, then the identity checks.
#[derive(Debug)]
pub struct CheckedClients {
    inner: Arc<dyn ClientCertVerifier>,
    allowed_cn: Option<String>,
    allowed_hostname: Option<String>,
}

impl CheckedClients {
    pub fn new(
        inner: Arc<dyn ClientCertVerifier>,
        allowed_cn: Option<String>,
        allowed_hostname: Option<String>,
    ) -> CheckedClients {
        CheckedClients {
            inner,
            allowed_cn,
            allowed_hostname,
        }
    }
}

impl ClientCertVerifier for CheckedClients {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_identity(
            end_entity,
            self.allowed_cn.as_deref(),
            self.allowed_hostname.as_deref(),
        )?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The server verifier of the peer dialer: webpki (chain and the URL's host), then
/// the identity checks.
#[derive(Debug)]
pub struct CheckedServers {
    inner: Arc<dyn ServerCertVerifier>,
    allowed_cn: Option<String>,
    allowed_hostname: Option<String>,
}

impl CheckedServers {
    pub fn new(
        inner: Arc<dyn ServerCertVerifier>,
        allowed_cn: Option<String>,
        allowed_hostname: Option<String>,
    ) -> CheckedServers {
        CheckedServers {
            inner,
            allowed_cn,
            allowed_hostname,
        }
    }
}

impl ServerCertVerifier for CheckedServers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        check_identity(
            end_entity,
            self.allowed_cn.as_deref(),
            self.allowed_hostname.as_deref(),
        )?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// etcd's dialer for auto-TLS peers (`InsecureSkipVerify`): any certificate is
/// accepted, but the handshake signatures are still checked, so the connection is
/// encrypted to whoever holds the presented key. Used only with `--peer-auto-tls`.
#[derive(Debug)]
pub struct Unverified(pub Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[&str]) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn identity_checks() {
        let der = cert("m1", &["127.0.0.1", "*.peers.example", "m1.example"]);
        assert_eq!(common_name(&der).as_deref(), Some("m1"));
        assert!(valid_for_host(&der, "127.0.0.1"));
        assert!(!valid_for_host(&der, "127.0.0.2"));
        assert!(valid_for_host(&der, "a.peers.example"));
        assert!(!valid_for_host(&der, "a.b.peers.example"));
        assert!(valid_for_host(&der, "M1.example."));
        let der = CertificateDer::from(der);
        assert!(check_identity(&der, Some("m1"), Some("m1.example")).is_ok());
        let err = check_identity(&der, Some("m2"), None).unwrap_err();
        assert!(
            matches!(&err, Error::General(m) if m == "CommonName authentication failed"),
            "{err}"
        );
        let err = check_identity(&der, None, Some("other.example")).unwrap_err();
        assert!(
            matches!(&err, Error::General(m) if m == "HostName authentication failed"),
            "{err}"
        );
    }
}
