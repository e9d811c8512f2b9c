//! A certificate and key pair read from disk, read again on the first handshake after
//! either file changed, as etcd reads them per handshake.
//!
//! Guarantees: a handshake always gets a pair that loaded and matched (certificate
//! and key together); when the files change into something that does not load, the
//! previous pair stays in use and the failure is logged once per change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use super::{certs, read, TlsError};

/// What identifies a version of the files: modification time and length of each.
type Stamp = [(Option<SystemTime>, u64); 2];

#[derive(Debug)]
struct Loaded {
    stamp: Stamp,
    key: Arc<CertifiedKey>,
}

/// The pair, shared by every configuration that serves or presents it.
#[derive(Debug, Clone)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    loaded: Arc<Mutex<Loaded>>,
}

fn stamp(cert: &PathBuf, key: &PathBuf) -> Stamp {
    let one =
        |p: &PathBuf| std::fs::metadata(p).map_or((None, 0), |m| (m.modified().ok(), m.len()));
    [one(cert), one(key)]
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certs(cert)?;
    let key_pem = read(key)?;
    let der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey(key.to_path_buf()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, der, &provider)?;
    Ok(Arc::new(certified))
}

impl CertFiles {
    /// Reads the pair now (an error here stops the member from starting).
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<CertFiles, TlsError> {
        let stamp = stamp(&cert, &key);
        let certified = load(&cert, &key)?;
        Ok(CertFiles {
            cert,
            key,
            loaded: Arc::new(Mutex::new(Loaded {
                stamp,
                key: certified,
            })),
        })
    }

    /// The pair to present now, read again if the files changed since last time.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.cert, &self.key);
        if now != loaded.stamp {
            loaded.stamp = now;
            match load(&self.cert, &self.key) {
                Ok(key) => {
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    loaded.key = key;
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "TLS certificate files changed but do not load; keeping the previous pair"
                ),
            }
        }
        loaded.key.clone()
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for CertFiles {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
