//! TLS for the client and peer ports (rustls with ring), built from etcd's TLS flags
//! ([`TlsInfo`]).
//!
//! What it guarantees, as etcd 3.4's `transport.TLSInfo` does:
//! - TLS 1.2 or newer; `--cipher-suites` limits the TLS 1.2 suites (TLS 1.3's are fixed).
//! - With `--client-cert-auth` (`--peer-client-cert-auth`) every client must present a
//!   certificate that chains to `--trusted-ca-file` and is not in the CRL file, else
//!   the handshake fails; the connection never reaches gRPC or HTTP.
//! - `--peer-cert-allowed-cn` / `--*-cert-allowed-hostname`: a verified certificate of
//!   the other side must carry that Common Name / be valid for that host name, on
//!   both the listening and the dialing side.
//! - The certificate and key are read again from disk on the next handshake after
//!   either file changed (etcd reads them per handshake); a change that does not load
//!   keeps the previous pair and is logged.
//! - Auto TLS ([`auto`]) generates a self-signed pair, as etcd's `SelfCert`; as in
//!   etcd, such a pair authenticates nobody: a dialer does not verify a self-signed
//!   peer (encryption only) and no client certificate is asked for.
//! - The dialer verifies the peer's certificate against `--peer-trusted-ca-file` and
//!   the URL's host unless the peer port uses auto TLS.

pub mod auto;
pub mod listen;
mod reload;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

use crate::config::TlsInfo;

pub use reload::CertFiles;
pub use verify::common_name;

/// The Common Name of the client certificate a request came with, if it came over
/// TLS with a verified client certificate (`--client-cert-auth`): `""` when that
/// certificate has no Common Name (Go reads an absent one as empty); `None` without
/// a verified certificate. etcd uses it as the user name of gRPC requests that carry
/// no token when auth is on (`crate::facade::caller`). Works on the
/// extensions of any request served by `crate::serve` (gRPC and HTTP alike); a
/// tonic handler can pass `request.extensions()`'s `http::Extensions` via
/// `tonic::Request::into_parts`, or call `tonic::Request::peer_certs` and
/// [`common_name`].
pub fn client_common_name(extensions: &axum::http::Extensions) -> Option<String> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let info = extensions.get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    Some(common_name(certs.first()?.as_ref()).unwrap_or_default())
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{0}: no certificate found")]
    NoCertificate(PathBuf),
    #[error("{0}: no private key found")]
    NoKey(PathBuf),
    #[error("{0} needs {1} (Skiff trusts no system CA for this)")]
    NeedsCa(&'static str, &'static str),
    #[error("--cipher-suites: {0} is not available in Skiff's TLS library")]
    UnavailableSuite(String),
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS verifier: {0}")]
    Verifier(String),
}

/// Which port a configuration is for (the flag names in messages differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Client,
    Peer,
}

/// A port's TLS material, resolved: given files, or generated ones (auto TLS).
#[derive(Debug, Clone)]
pub struct Material {
    pub info: TlsInfo,
    pub cert: CertFiles,
    /// The pair was generated (auto TLS): peers using it are not verified.
    pub self_signed: bool,
}

impl Material {
    /// Resolves `info` for `port`: the given pair, or (auto TLS) a generated one kept
    /// in `auto_dir` for `hosts`. `None` when the port has no TLS material at all.
    pub fn resolve(
        info: &TlsInfo,
        auto_dir: &Path,
        hosts: &[String],
    ) -> Result<Option<Material>, TlsError> {
        if info.uses_auto_tls() {
            let (cert, key) = auto::self_cert(auto_dir, hosts)?;
            // etcd replaces the whole TLS info by the generated one.
            let info = TlsInfo {
                cert_file: Some(cert.clone()),
                key_file: Some(key.clone()),
                cipher_suites: info.cipher_suites.clone(),
                ..TlsInfo::default()
            };
            return Ok(Some(Material {
                info,
                cert: CertFiles::load(cert, key)?,
                self_signed: true,
            }));
        }
        match (&info.cert_file, &info.key_file) {
            (Some(cert), Some(key)) => Ok(Some(Material {
                info: info.clone(),
                cert: CertFiles::load(cert.clone(), key.clone())?,
                self_signed: false,
            })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(TlsError::NoKey(PathBuf::from("--key-file"))),
            (None, Some(_)) => Err(TlsError::NoCertificate(PathBuf::from("--cert-file"))),
        }
    }

    /// What the other side's verified certificate must carry.
    fn identity(&self) -> verify::Identity {
        verify::Identity {
            allowed_cn: self.info.allowed_cn.clone(),
            allowed_hostname: self.info.allowed_hostname.clone(),
        }
    }

    /// The listening side's configuration (ALPN h2 and http/1.1).
    pub fn server_config(&self, port: Port) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = provider(&self.info.cipher_suites)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if self.info.client_cert_auth {
            let Some(ca) = &self.info.trusted_ca_file else {
                return Err(match port {
                    Port::Client => TlsError::NeedsCa("--client-cert-auth", "--trusted-ca-file"),
                    Port::Peer => {
                        TlsError::NeedsCa("--peer-client-cert-auth", "--peer-trusted-ca-file")
                    }
                });
            };
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider);
            if let Some(crl) = &self.info.crl_file {
                // As etcd: refuse a client whose certificate's serial is listed;
                // a certificate no CRL speaks about is not refused.
                verifier = verifier
                    .with_crls(crls(crl)?)
                    .only_check_end_entity_revocation()
                    .allow_unknown_revocation_status();
            }
            let inner = verifier
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(verify::Checked {
                inner,
                identity: self.identity(),
            }))
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(Arc::new(self.cert.clone()));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The dialing side's configuration (the peer transport): our certificate as the
    /// client certificate, the other member verified against the trusted CA (unless
    /// auto TLS), ALPN h2.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = provider(&self.info.cipher_suites)?;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if self.self_signed {
            tracing::warn!(
                "--peer-auto-tls: peers' self-signed certificates are not verified (as in etcd); \
                 use --peer-cert-file, --peer-trusted-ca-file and --peer-client-cert-auth to authenticate peers"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verify::Unverified(provider)))
        } else {
            let Some(ca) = &self.info.trusted_ca_file else {
                return Err(TlsError::NeedsCa(
                    "an https peer URL",
                    "--peer-trusted-ca-file",
                ));
            };
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider,
            )
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verify::Checked {
                    inner,
                    identity: self.identity(),
                }))
        };
        let mut config = builder.with_client_cert_resolver(Arc::new(self.cert.clone()));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// ring's provider, with the TLS 1.2 suites limited to `--cipher-suites` (Go names).
fn provider(cipher_suites: &[String]) -> Result<Arc<CryptoProvider>, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !cipher_suites.is_empty() {
        for name in cipher_suites {
            let found = provider
                .cipher_suites
                .iter()
                .any(|s| is_go_name(s.suite(), name));
            if !found {
                return Err(TlsError::UnavailableSuite(name.clone()));
            }
        }
        provider.cipher_suites.retain(|s| {
            s.version() == &rustls::version::TLS13
                || cipher_suites.iter().any(|n| is_go_name(s.suite(), n))
        });
    }
    Ok(Arc::new(provider))
}

/// Whether rustls's `suite` is the one Go calls `name` (Go drops the `_SHA256` of
/// the ChaCha20 suites).
fn is_go_name(suite: rustls::CipherSuite, name: &str) -> bool {
    let rustls_name = format!("{suite:?}");
    rustls_name == name || rustls_name == format!("{name}_SHA256")
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Every certificate of a PEM file.
fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// The trusted CAs of a PEM file.
fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs(path)? {
        store.add(cert).map_err(|e| TlsError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(store)
}

/// The revocation lists of a PEM (or DER) file.
fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let data = read(path)?;
    let pem: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if pem.is_empty() {
        // etcd accepts a DER CRL as well.
        return Ok(vec![CertificateRevocationListDer::from(data)]);
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_suites_limit_tls12_only() {
        let all = provider(&[]).unwrap();
        let one = provider(&["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305".to_string()]).unwrap();
        let tls12 = |p: &CryptoProvider| {
            p.cipher_suites
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS12)
                .count()
        };
        let tls13 = |p: &CryptoProvider| {
            p.cipher_suites
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .count()
        };
        assert!(tls12(&all) > 1);
        assert_eq!(tls12(&one), 1, "only the named TLS 1.2 suite is left");
        assert_eq!(
            tls13(&one),
            tls13(&all),
            "TLS 1.3 suites are not configurable"
        );
        // A Go suite rustls does not implement (CBC) is refused, not ignored.
        let err = provider(&["TLS_RSA_WITH_AES_128_CBC_SHA".to_string()]).unwrap_err();
        assert!(
            err.to_string().contains("TLS_RSA_WITH_AES_128_CBC_SHA"),
            "{err}"
        );
    }
}
