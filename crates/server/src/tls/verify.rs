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

/// etcd's `AllowedCN` / `AllowedHostname`: what a verified certificate of the other
/// side must carry (`None`: no such check).
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub allowed_cn: Option<String>,
    pub allowed_hostname: Option<String>,
}

impl Identity {
    /// The checks on a verified leaf certificate, with etcd's reasons.
    fn check(&self, leaf: &CertificateDer<'_>) -> Result<(), Error> {
        if let Some(cn) = &self.allowed_cn {
            if common_name(leaf).as_deref() != Some(cn.as_str()) {
                return Err(Error::General("CommonName authentication failed".into()));
            }
        }
        if let Some(host) = &self.allowed_hostname {
            if !valid_for_host(leaf, host) {
                return Err(Error::General("HostName authentication failed".into()));
            }
        }
        Ok(())
    }
}

/// A webpki verifier (`V`: a client or a server certificate verifier), then the
/// [`Identity`] checks.
#[derive(Debug)]
pub struct Checked<V: ?Sized> {
    pub inner: Arc<V>,
    pub identity: Identity,
}

/// The handshake signature checks and schemes, as the inner verifier answers them.
macro_rules! delegate_signatures {
    () => {
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
    };
}

/// The client verifier of a listener.
impl<V: ClientCertVerifier + ?Sized> ClientCertVerifier for Checked<V> {
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
        self.identity.check(end_entity)?;
        Ok(verified)
    }

    delegate_signatures!();
}

/// The server verifier of the peer dialer (webpki checks the chain and the URL's host).
impl<V: ServerCertVerifier + ?Sized> ServerCertVerifier for Checked<V> {
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
        self.identity.check(end_entity)?;
        Ok(verified)
    }

    delegate_signatures!();
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
        let identity = |cn: Option<&str>, host: Option<&str>| Identity {
            allowed_cn: cn.map(str::to_string),
            allowed_hostname: host.map(str::to_string),
        };
        assert!(identity(Some("m1"), Some("m1.example")).check(&der).is_ok());
        let err = identity(Some("m2"), None).check(&der).unwrap_err();
        assert!(
            matches!(&err, Error::General(m) if m == "CommonName authentication failed"),
            "{err}"
        );
        let err = identity(None, Some("other.example"))
            .check(&der)
            .unwrap_err();
        assert!(
            matches!(&err, Error::General(m) if m == "HostName authentication failed"),
            "{err}"
        );
    }
}
