//! TLS for the connection to a member's client port (rustls with the `ring` provider,
//! the same TLS stack tonic's own TLS uses, driven by this crate's connector).
//!
//! Guarantees:
//! - The server's certificate chain is verified against the CA bundle given
//!   ([`TlsOptions::ca_pem`]) or, without one, against the system's bundle (the files
//!   Go's `crypto/x509` reads on Linux, or `SSL_CERT_FILE`), and its name against the
//!   endpoint's host (or [`TlsOptions::server_name`]); IP addresses are checked
//!   against the certificate's IP SANs.
//! - [`TlsOptions::insecure_skip_verify`] skips the chain and name check only (as Go's
//!   `InsecureSkipVerify` does); the handshake signatures are still checked, so the
//!   peer at least holds the key of the certificate it shows.
//! - A client certificate ([`TlsOptions::identity`]) is presented when the server asks.
//! - The connection offers ALPN `h2` only (gRPC).
//! - A handshake that fails is a connection that was never established: nothing of a
//!   request was sent (see [`crate::pool`]), so even a write may be tried elsewhere.
//! - Bad PEM is refused when the client is built ([`crate::Client::connect`]), never
//!   at the first call.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::Error;

/// The CA bundles Go's `crypto/x509` looks for on Linux, in its order.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// A client certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Identity {
    /// The certificate chain (leaf first), PEM.
    pub cert_pem: Vec<u8>,
    /// The private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// How to speak TLS to members (etcdctl's `--cacert`, `--cert`, `--key`,
/// `--insecure-skip-tls-verify`). `TlsOptions::default()` verifies against the system's
/// CA bundle and presents no client certificate.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The CA certificates (PEM) that may sign a member's certificate; `None`: the
    /// system's bundle.
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate and key to present, if any.
    pub identity: Option<Identity>,
    /// Accept any server certificate (for testing only, as etcdctl warns).
    pub insecure_skip_verify: bool,
    /// The name to verify the server's certificate against instead of the endpoint's
    /// host (etcdctl sets it from `--discovery-srv`).
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// Builds the rustls configuration these options describe.
    pub(crate) fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some(id) => {
                let certs = CertificateDer::pem_slice_iter(&id.cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Error::Tls(format!("client certificate: {e}")))?;
                if certs.is_empty() {
                    return Err(Error::Tls(
                        "client certificate: no certificate found".into(),
                    ));
                }
                let key = PrivateKeyDer::from_pem_slice(&id.key_pem)
                    .map_err(|e| Error::Tls(format!("client key: {e}")))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| Error::Tls(format!("client certificate and key: {e}")))?
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    fn roots(&self) -> Result<rustls::RootCertStore, Error> {
        let pem = match &self.ca_pem {
            Some(p) => p.clone(),
            None => system_bundle()?,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| Error::Tls(format!("CA bundle: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::Tls(format!("CA bundle: {e}")))?;
        }
        if roots.is_empty() {
            return Err(Error::Tls("CA bundle: no certificate found".into()));
        }
        Ok(roots)
    }

    /// The name the server's certificate must carry for an endpoint on `host`.
    pub(crate) fn server_name(&self, host: &str) -> Result<ServerName<'static>, Error> {
        let name = self.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_string())
            .map_err(|e| Error::Tls(format!("server name {name:?}: {e}")))
    }
}

/// The system's CA bundle: `SSL_CERT_FILE`, else the first of Go's Linux paths.
fn system_bundle() -> Result<Vec<u8>, Error> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let candidates = from_env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from));
    for path in candidates {
        if let Ok(pem) = std::fs::read(&path) {
            return Ok(pem);
        }
    }
    Err(Error::Tls(
        "no CA bundle given and none found on this system".into(),
    ))
}

/// Accepts any certificate chain and name; still checks the handshake signatures
/// with the provider's algorithms.
#[derive(Debug)]
struct SkipVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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

    #[test]
    fn bad_pem_is_refused_when_building() {
        let opts = TlsOptions {
            ca_pem: Some(b"not a certificate".to_vec()),
            ..TlsOptions::default()
        };
        assert!(matches!(opts.client_config(), Err(Error::Tls(_))));
        let opts = TlsOptions {
            insecure_skip_verify: true,
            identity: Some(Identity {
                cert_pem: b"nothing".to_vec(),
                key_pem: b"nothing".to_vec(),
            }),
            ..TlsOptions::default()
        };
        assert!(matches!(opts.client_config(), Err(Error::Tls(_))));
    }

    #[test]
    fn skip_verify_needs_no_bundle_and_offers_h2() {
        let opts = TlsOptions {
            ca_pem: Some(Vec::new()),
            insecure_skip_verify: true,
            ..TlsOptions::default()
        };
        let config = opts.client_config().unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }

    #[test]
    fn server_names_are_hosts_or_ips() {
        let opts = TlsOptions::default();
        assert!(matches!(
            opts.server_name("127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            opts.server_name("localhost").unwrap(),
            ServerName::DnsName(_)
        ));
    }
}
