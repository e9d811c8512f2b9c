//! etcd 3.4's `jwt` auth tokens: `--auth-token
//! jwt,pub-key=FILE,priv-key=FILE,sign-method=ALG,ttl=DURATION`.
//!
//! Guarantees:
//! - The options are parsed as etcd parses them ([`JwtOptions::parse`]): comma-separated
//!   `name=value` pairs (a pair without `=` or given twice is refused), `sign-method`
//!   required (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384/512), `ttl` a Go
//!   duration (default 5m); unknown names are warned about, not refused.
//! - The keys are read as etcd reads them ([`JwtTokens::load`]): RSA private keys in
//!   PKCS#1 or PKCS#8 PEM, EC private keys in SEC1 or PKCS#8 PEM, public keys as a PKIX
//!   public key or a certificate; an HMAC key is the private key file's bytes. With
//!   only a public key the member verifies tokens and cannot issue them (etcd's
//!   verify-only mode: `Authenticate` answers `auth: token signing attempted with
//!   verify-only key`). Given both, they must be one pair (etcd: `auth: public and
//!   private keys don't match`).
//! - A token carries etcd's claims, `username`, `revision` (the auth store's revision
//!   when it was issued) and `exp` (issue time + `ttl`, Unix seconds), so a token
//!   signed by etcd with the same key is accepted here and the other way round.
//!   Verification requires the configured algorithm and a valid signature, and refuses
//!   a token past its `exp` (or before an `nbf`), with no leeway, as etcd's jwt-go.
//!   Tokens are not remembered: they stay valid until `exp` whatever happens to the
//!   user; the auth layer refuses a token whose revision is older than the store's
//!   where etcd does (`etcdserver: revision of auth store is old`).
//!
//! Signing and verifying is jsonwebtoken's (on ring), but for ES512, which it does not
//! offer: P-521 tokens are put together here (base64url header, claims and the 132
//! bytes of `r || s`, as jwt-go writes them) with RustCrypto's `p521`, and checked
//! with the same rules (algorithm, signature, `exp`, `nbf`).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::KeyPair;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::PrivateKeyDer;
use skiff_api::EtcdError;

/// etcd's default `ttl` (`auth.DefaultTTL`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

/// Why the `jwt` options or keys were refused; the texts are etcd's where it has one.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("auth: invalid auth options")]
    InvalidOptions,
    #[error("auth: invalid auth signature method")]
    InvalidMethod,
    #[error("auth: missing key data")]
    MissingKey,
    #[error("auth: public and private keys don't match")]
    KeyMismatch,
    #[error("auth: cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("auth: {path} is not a valid {what} key for {method}: {reason}")]
    BadKey {
        path: String,
        what: &'static str,
        method: &'static str,
        reason: String,
    },
}

/// A `sign-method` etcd accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMethod {
    Hmac(Algorithm),
    Rsa(Algorithm),
    Ec(Algorithm),
    Es512,
}

impl SignMethod {
    fn from_name(name: &str) -> Option<SignMethod> {
        use Algorithm::*;
        Some(match name {
            "HS256" => SignMethod::Hmac(HS256),
            "HS384" => SignMethod::Hmac(HS384),
            "HS512" => SignMethod::Hmac(HS512),
            "RS256" => SignMethod::Rsa(RS256),
            "RS384" => SignMethod::Rsa(RS384),
            "RS512" => SignMethod::Rsa(RS512),
            "PS256" => SignMethod::Rsa(PS256),
            "PS384" => SignMethod::Rsa(PS384),
            "PS512" => SignMethod::Rsa(PS512),
            "ES256" => SignMethod::Ec(ES256),
            "ES384" => SignMethod::Ec(ES384),
            "ES512" => SignMethod::Es512,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        use Algorithm::*;
        match self {
            SignMethod::Es512 => "ES512",
            SignMethod::Hmac(a) | SignMethod::Rsa(a) | SignMethod::Ec(a) => match a {
                HS256 => "HS256",
                HS384 => "HS384",
                HS512 => "HS512",
                RS256 => "RS256",
                RS384 => "RS384",
                RS512 => "RS512",
                PS256 => "PS256",
                PS384 => "PS384",
                PS512 => "PS512",
                ES256 => "ES256",
                ES384 => "ES384",
                EdDSA => "EdDSA",
            },
        }
    }
}

/// The parsed `jwt,...` options (no file read yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtOptions {
    pub method: SignMethod,
    pub pub_key: Option<PathBuf>,
    pub priv_key: Option<PathBuf>,
    pub ttl: Duration,
    /// Option names etcd does not know (it warns about them at start).
    pub unknown: Vec<String>,
}

impl JwtOptions {
    /// Parses the whole `--auth-token` value, which starts with `jwt`.
    pub fn parse(spec: &str) -> Result<JwtOptions, JwtError> {
        let mut parts = spec.split(',');
        if parts.next() != Some("jwt") {
            return Err(JwtError::InvalidOptions);
        }
        let mut map: Vec<(&str, &str)> = Vec::new();
        for part in parts {
            let mut kv = part.split('=');
            let (Some(k), Some(v), None) = (kv.next(), kv.next(), kv.next()) else {
                return Err(JwtError::InvalidOptions);
            };
            if map.iter().any(|(seen, _)| *seen == k) {
                return Err(JwtError::InvalidOptions);
            }
            map.push((k, v));
        }
        let get = |name: &str| {
            map.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| *v)
                .filter(|v| !v.is_empty())
        };
        let ttl = match get("ttl") {
            None => DEFAULT_TTL,
            Some(t) => {
                crate::config::values::go_duration(t).map_err(|_| JwtError::InvalidOptions)?
            }
        };
        // etcd reports a bad method as invalid options too (after logging why).
        let method = SignMethod::from_name(get("sign-method").unwrap_or_default())
            .ok_or(JwtError::InvalidOptions)?;
        Ok(JwtOptions {
            method,
            pub_key: get("pub-key").map(PathBuf::from),
            priv_key: get("priv-key").map(PathBuf::from),
            ttl,
            unknown: map
                .iter()
                .map(|(k, _)| *k)
                .filter(|k| !matches!(*k, "sign-method" | "pub-key" | "priv-key" | "ttl"))
                .map(str::to_string)
                .collect(),
        })
    }
}

/// A member's JWT signer and verifier.
pub struct JwtTokens {
    keys: Keys,
    ttl: Duration,
}

/// The keys, by who signs with them.
enum Keys {
    /// Every method but ES512: jsonwebtoken.
    Library {
        alg: Algorithm,
        /// `None`: verify-only (a public key and no private key).
        encoding: Option<EncodingKey>,
        decoding: DecodingKey,
        validation: Validation,
    },
    /// ES512: p521.
    Es512 {
        /// `None`: verify-only.
        signing: Option<p521::ecdsa::SigningKey>,
        verifying: p521::ecdsa::VerifyingKey,
    },
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (alg, verify_only) = match &self.keys {
            Keys::Library { alg, encoding, .. } => (format!("{alg:?}"), encoding.is_none()),
            Keys::Es512 { signing, .. } => ("ES512".to_string(), signing.is_none()),
        };
        f.debug_struct("JwtTokens")
            .field("alg", &alg)
            .field("verify_only", &verify_only)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtClaims {
    pub username: String,
    pub revision: u64,
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, JwtError> {
    std::fs::read(path).map_err(|e| JwtError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl JwtTokens {
    /// Reads the keys the options name and checks they fit the method.
    pub fn load(opts: &JwtOptions) -> Result<JwtTokens, JwtError> {
        let private = opts
            .priv_key
            .as_deref()
            .map(|p| Ok((p, read(p)?)))
            .transpose()?;
        let public = opts
            .pub_key
            .as_deref()
            .map(|p| Ok((p, read(p)?)))
            .transpose()?;
        let bad = |path: &std::path::Path, what: &'static str, reason: String| JwtError::BadKey {
            path: path.display().to_string(),
            what,
            method: opts.method.name(),
            reason,
        };
        let (alg, encoding, decoding) = match opts.method {
            SignMethod::Es512 => {
                let verifying = public
                    .map(|(path, pem)| {
                        keys::public_key(&pem, true)
                            .and_then(|k| {
                                p521::ecdsa::VerifyingKey::from_sec1_bytes(&k.0)
                                    .map_err(|e| e.to_string())
                            })
                            .map_err(|r| bad(path, "public", r))
                    })
                    .transpose()?;
                let signing = private
                    .map(|(path, pem)| keys::p521_key(&pem).map_err(|r| bad(path, "private", r)))
                    .transpose()?;
                let verifying = match (&signing, verifying) {
                    (None, None) => return Err(JwtError::MissingKey),
                    (None, Some(v)) => v,
                    (Some(s), v) => {
                        if v.is_some_and(|v| v != *s.verifying_key()) {
                            return Err(JwtError::KeyMismatch);
                        }
                        *s.verifying_key()
                    }
                };
                return Ok(JwtTokens {
                    keys: Keys::Es512 { signing, verifying },
                    ttl: opts.ttl,
                });
            }
            SignMethod::Hmac(alg) => {
                let (_, secret) = private.ok_or(JwtError::MissingKey)?;
                (
                    alg,
                    Some(EncodingKey::from_secret(&secret)),
                    DecodingKey::from_secret(&secret),
                )
            }
            SignMethod::Rsa(alg) | SignMethod::Ec(alg) => {
                let ec = matches!(opts.method, SignMethod::Ec(_));
                let bad =
                    |path: &std::path::Path, what: &'static str, reason: String| JwtError::BadKey {
                        path: path.display().to_string(),
                        what,
                        method: opts.method.name(),
                        reason,
                    };
                let public = public
                    .map(|(path, pem)| {
                        keys::public_key(&pem, ec).map_err(|r| bad(path, "public", r))
                    })
                    .transpose()?;
                let private = private
                    .map(|(path, pem)| {
                        keys::private_key(&pem, alg).map_err(|r| bad(path, "private", r))
                    })
                    .transpose()?;
                match (private, public) {
                    (None, None) => return Err(JwtError::MissingKey),
                    (None, Some(public)) => (alg, None, public.decoding(ec)),
                    (Some((encoding, derived)), public) => {
                        if public.is_some_and(|p| p != derived) {
                            return Err(JwtError::KeyMismatch);
                        }
                        (alg, Some(encoding), derived.decoding(ec))
                    }
                }
            }
        };
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        // etcd's jwt-go accepts a token without `exp`; it checks one that is there.
        validation.required_spec_claims.clear();
        Ok(JwtTokens {
            keys: Keys::Library {
                alg,
                encoding,
                decoding,
                validation,
            },
            ttl: opts.ttl,
        })
    }

    /// A token for `username` at auth store `revision`, valid for the TTL from now.
    pub fn sign(&self, username: &str, revision: u64) -> Result<String, EtcdError> {
        let exp = SystemTime::now()
            .checked_add(self.ttl)
            .unwrap_or(SystemTime::now())
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = serde_json::json!({
            "username": username,
            "revision": revision,
            "exp": exp,
        });
        match &self.keys {
            Keys::Library { alg, encoding, .. } => {
                let key = encoding.as_ref().ok_or(EtcdError::AuthPkgVerifyOnly)?;
                jsonwebtoken::encode(&Header::new(*alg), &claims, key).map_err(|e| {
                    tracing::error!(error = %e, "signing a JWT failed");
                    EtcdError::AuthFailed
                })
            }
            Keys::Es512 { signing, .. } => {
                use p521::ecdsa::signature::Signer;
                let key = signing.as_ref().ok_or(EtcdError::AuthPkgVerifyOnly)?;
                let head = format!(
                    "{}.{}",
                    b64(br#"{"alg":"ES512","typ":"JWT"}"#),
                    b64(claims.to_string().as_bytes())
                );
                let sig: p521::ecdsa::Signature = key.sign(head.as_bytes());
                Ok(format!("{head}.{}", b64(&sig.to_bytes())))
            }
        }
    }

    /// The claims of a valid token, or why it is not (for the log).
    pub fn verify(&self, token: &str) -> Result<JwtClaims, String> {
        let claims = match &self.keys {
            Keys::Library {
                decoding,
                validation,
                ..
            } => {
                jsonwebtoken::decode::<serde_json::Value>(token, decoding, validation)
                    .map_err(|e| e.to_string())?
                    .claims
            }
            Keys::Es512 { verifying, .. } => verify_es512(verifying, token)?,
        };
        let username = claims["username"]
            .as_str()
            .ok_or("no string claim \"username\"")?
            .to_string();
        let revision = claims["revision"]
            .as_f64()
            .filter(|r| *r >= 0.0)
            .ok_or("no numeric claim \"revision\"")? as u64;
        Ok(JwtClaims { username, revision })
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| e.to_string())
}

/// An ES512 token's claims, checked as jwt-go checks one: three parts, header `alg`
/// ES512, the signature over the first two, then `exp` (now <= exp) and `nbf`.
fn verify_es512(key: &p521::ecdsa::VerifyingKey, token: &str) -> Result<serde_json::Value, String> {
    use p521::ecdsa::signature::Verifier;
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not three parts".into());
    };
    let header: serde_json::Value =
        serde_json::from_slice(&unb64(h)?).map_err(|e| format!("header: {e}"))?;
    if header["alg"] != "ES512" {
        return Err(format!("signing method {} is not ES512", header["alg"]));
    }
    let sig = p521::ecdsa::Signature::from_slice(&unb64(s)?).map_err(|e| e.to_string())?;
    key.verify(&token.as_bytes()[..h.len() + 1 + c.len()], &sig)
        .map_err(|_| "signature is invalid".to_string())?;
    let claims: serde_json::Value =
        serde_json::from_slice(&unb64(c)?).map_err(|e| format!("claims: {e}"))?;
    if !claims.is_object() {
        return Err("claims are not an object".into());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64().floor());
    let time = |name: &str| match &claims[name] {
        serde_json::Value::Null => Ok(None),
        v => v
            .as_f64()
            .map(Some)
            .ok_or(format!("claim {name} is not a number")),
    };
    if time("exp")?.is_some_and(|exp| now > exp) {
        return Err("token is expired".into());
    }
    if time("nbf")?.is_some_and(|nbf| now < nbf) {
        return Err("token is not valid yet".into());
    }
    Ok(claims)
}

/// Key decoding: PEM in the forms Go's x509 package (as jwt-go uses it) accepts.
mod keys {
    use super::*;

    /// A public key as ring verifies it: RSA as a PKCS#1 `RSAPublicKey`, EC as the
    /// uncompressed point.
    #[derive(Debug, PartialEq, Eq)]
    pub struct PublicKey(pub Vec<u8>);

    impl PublicKey {
        pub fn decoding(&self, ec: bool) -> DecodingKey {
            if ec {
                DecodingKey::from_ec_der(&self.0)
            } else {
                DecodingKey::from_rsa_der(&self.0)
            }
        }
    }

    /// A PKIX public key or a certificate's (Go's `ParsePKIXPublicKey`, then
    /// `ParseCertificate`), of the right kind.
    pub fn public_key(pem: &[u8], ec: bool) -> Result<PublicKey, String> {
        // Go's pem.Decode does not look at the label, and neither does this.
        let (_, der) =
            <(SectionKind, Vec<u8>)>::from_pem_slice(pem).map_err(|e| format!("{e:?}"))?;
        use x509_parser::prelude::FromDer;
        let spki = match x509_parser::x509::SubjectPublicKeyInfo::from_der(&der) {
            Ok((_, spki)) => spki,
            Err(_) => {
                let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
                    .map_err(|_| "neither a PKIX public key nor a certificate".to_string())?;
                cert.tbs_certificate.subject_pki
            }
        };
        const RSA: &str = "1.2.840.113549.1.1.1";
        const EC: &str = "1.2.840.10045.2.1";
        let oid = spki.algorithm.algorithm.to_id_string();
        let want = if ec { EC } else { RSA };
        if oid != want {
            return Err(format!("key algorithm {oid}, expected {want}"));
        }
        Ok(PublicKey(spki.subject_public_key.data.to_vec()))
    }

    /// The signing key and its public half, from PKCS#1, SEC1 or PKCS#8 PEM.
    pub fn private_key(pem: &[u8], alg: Algorithm) -> Result<(EncodingKey, PublicKey), String> {
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("{e:?}"))?;
        let rng = ring::rand::SystemRandom::new();
        match alg {
            Algorithm::ES256 | Algorithm::ES384 => {
                let (signing, curve) = if alg == Algorithm::ES256 {
                    (&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, P256_OID)
                } else {
                    (&ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING, P384_OID)
                };
                let pkcs8 = match key {
                    PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
                    PrivateKeyDer::Sec1(k) => sec1_to_pkcs8(k.secret_sec1_der(), curve),
                    _ => return Err("not an EC private key".into()),
                };
                let pair = ring::signature::EcdsaKeyPair::from_pkcs8(signing, &pkcs8, &rng)
                    .map_err(|e| e.to_string())?;
                Ok((
                    EncodingKey::from_ec_der(&pkcs8),
                    PublicKey(pair.public_key().as_ref().to_vec()),
                ))
            }
            _ => {
                let pair = match &key {
                    PrivateKeyDer::Pkcs1(k) => {
                        ring::signature::RsaKeyPair::from_der(k.secret_pkcs1_der())
                    }
                    PrivateKeyDer::Pkcs8(k) => {
                        ring::signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der())
                    }
                    _ => return Err("not an RSA private key".into()),
                }
                .map_err(|e| e.to_string())?;
                let encoding = EncodingKey::from_rsa_pem(pem).map_err(|e| e.to_string())?;
                Ok((encoding, PublicKey(pair.public().as_ref().to_vec())))
            }
        }
    }

    /// A P-521 signing key from SEC1 or PKCS#8 PEM.
    pub fn p521_key(pem: &[u8]) -> Result<p521::ecdsa::SigningKey, String> {
        use p521::pkcs8::DecodePrivateKey;
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("{e:?}"))?;
        let secret =
            match key {
                PrivateKeyDer::Sec1(k) => p521::SecretKey::from_sec1_der(k.secret_sec1_der())
                    .map_err(|e| e.to_string())?,
                PrivateKeyDer::Pkcs8(k) => p521::SecretKey::from_pkcs8_der(k.secret_pkcs8_der())
                    .map_err(|e| e.to_string())?,
                _ => return Err("not an EC private key".into()),
            };
        Ok(p521::ecdsa::SigningKey::from(&secret))
    }

    /// DER of the named curves' OIDs (with tag and length).
    const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    /// id-ecPublicKey.
    const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

    fn der(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = body.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(body);
        out
    }

    /// A SEC1 `ECPrivateKey` wrapped as PKCS#8 v1 (what ring reads).
    fn sec1_to_pkcs8(sec1: &[u8], curve: &[u8]) -> Vec<u8> {
        let alg_id = der(0x30, &[EC_PUBLIC_KEY_OID, curve].concat());
        let body = [&[0x02, 0x01, 0x00][..], &alg_id, &der(0x04, sec1)].concat();
        der(0x30, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_as_etcd() {
        let o = JwtOptions::parse("jwt,pub-key=a.pub,priv-key=a.key,sign-method=RS256,ttl=10s")
            .unwrap();
        assert_eq!(o.method, SignMethod::Rsa(Algorithm::RS256));
        assert_eq!(o.ttl, Duration::from_secs(10));
        assert_eq!(o.pub_key, Some(PathBuf::from("a.pub")));
        assert!(o.unknown.is_empty());
        let o = JwtOptions::parse("jwt,sign-method=HS256,priv-key=k,foo=bar").unwrap();
        assert_eq!(o.ttl, DEFAULT_TTL);
        assert_eq!(o.unknown, vec!["foo".to_string()]);
        for bad in [
            "jwt,ttl",
            "jwt,sign-method=XX256",
            "jwt",
            "jwt,sign-method=RS256,ttl=abc",
            "jwt,sign-method=RS256,sign-method=RS384",
            "jwt,sign-method=RS256,a=b=c",
        ] {
            assert_eq!(
                JwtOptions::parse(bad),
                Err(JwtError::InvalidOptions),
                "{bad}"
            );
        }
        assert_eq!(
            JwtOptions::parse("jwt,sign-method=ES512").map(|o| o.method),
            Ok(SignMethod::Es512)
        );
    }

    #[test]
    fn hmac_tokens_round_trip_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("secret");
        std::fs::write(&key, b"0123456789abcdef").unwrap();
        let spec = format!("jwt,sign-method=HS256,priv-key={},ttl=1s", key.display());
        let t = JwtTokens::load(&JwtOptions::parse(&spec).unwrap()).unwrap();
        let tok = t.sign("alice", 7).unwrap();
        assert_eq!(
            t.verify(&tok),
            Ok(JwtClaims {
                username: "alice".into(),
                revision: 7
            })
        );
        let mut forged = tok.clone();
        forged.pop();
        forged.push(if tok.ends_with('A') { 'B' } else { 'A' });
        assert!(t.verify(&forged).is_err(), "a changed signature is refused");
        assert!(t.verify("garbage").is_err());
        std::thread::sleep(Duration::from_millis(2100));
        assert!(t.verify(&tok).is_err(), "expired after its ttl");
    }

    /// etcd's RSA test pair (the public key as a certificate, the private one PKCS#1)
    /// signs and verifies with every RSA method; tokens of one method are refused by
    /// another.
    #[test]
    fn rsa_methods_round_trip_with_etcds_test_pair() {
        let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/jwt");
        let load = |m: &str| {
            let spec = format!(
                "jwt,pub-key={data}/server.crt,priv-key={data}/server.key.insecure,sign-method={m}"
            );
            JwtTokens::load(&JwtOptions::parse(&spec).unwrap()).unwrap()
        };
        let rs384 = load("RS384");
        for m in ["RS256", "RS512", "PS256", "PS384", "PS512"] {
            let t = load(m);
            let tok = t.sign("u", 3).unwrap();
            assert_eq!(t.verify(&tok).map(|c| c.revision), Ok(3), "{m}");
            assert!(rs384.verify(&tok).is_err(), "{m} token under RS384");
        }
        // The EC key is not an RSA key, nor the other way round.
        let spec = format!("jwt,priv-key={data}/server-ecdsa.key.insecure,sign-method=RS256");
        assert!(matches!(
            JwtTokens::load(&JwtOptions::parse(&spec).unwrap()),
            Err(JwtError::BadKey { .. })
        ));
        let spec = format!("jwt,pub-key={data}/server.crt,sign-method=ES256");
        assert!(matches!(
            JwtTokens::load(&JwtOptions::parse(&spec).unwrap()),
            Err(JwtError::BadKey { .. })
        ));
    }

    /// PKCS#8 EC keys work too; a public key that is not the private key's half is
    /// refused at load.
    #[test]
    fn ec_pkcs8_keys_and_mismatched_pairs() {
        let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/jwt");
        let dir = tempfile::tempdir().unwrap();
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let (priv_pem, pub_pem) = (dir.path().join("k.pem"), dir.path().join("p.pem"));
        std::fs::write(&priv_pem, other.serialize_pem()).unwrap();
        std::fs::write(&pub_pem, other.public_key_pem()).unwrap();
        let spec = format!(
            "jwt,pub-key={},priv-key={},sign-method=ES256",
            pub_pem.display(),
            priv_pem.display()
        );
        let t = JwtTokens::load(&JwtOptions::parse(&spec).unwrap()).unwrap();
        let tok = t.sign("u", 9).unwrap();
        assert_eq!(t.verify(&tok).map(|c| c.username), Ok("u".to_string()));
        let spec = format!(
            "jwt,pub-key={},priv-key={data}/server-ecdsa.key.insecure,sign-method=ES256",
            pub_pem.display()
        );
        assert_eq!(
            JwtTokens::load(&JwtOptions::parse(&spec).unwrap()).err(),
            Some(JwtError::KeyMismatch)
        );
    }

    /// ES512 (signed here, not by jsonwebtoken): round trip, a changed signature or
    /// another algorithm's token refused, verify-only, a mismatched pair refused.
    #[test]
    fn es512_round_trips_and_refuses() {
        let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/jwt");
        let load = |spec: String| JwtTokens::load(&JwtOptions::parse(&spec).unwrap());
        let both = load(format!(
            "jwt,pub-key={data}/p521.pub,priv-key={data}/p521.key.insecure,sign-method=ES512"
        ))
        .unwrap();
        let tok = both.sign("u", 4).unwrap();
        assert_eq!(
            tok.split('.').nth(2).map(str::len),
            Some(176),
            "132 bytes of r || s"
        );
        assert_eq!(
            both.verify(&tok),
            Ok(JwtClaims {
                username: "u".into(),
                revision: 4
            })
        );
        let mut forged = tok.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(both.verify(&forged).is_err());
        let verify_only = load(format!("jwt,pub-key={data}/p521.pub,sign-method=ES512")).unwrap();
        assert_eq!(verify_only.verify(&tok).map(|c| c.revision), Ok(4));
        assert_eq!(verify_only.sign("u", 1), Err(EtcdError::AuthPkgVerifyOnly));
        let es256 = load(format!(
            "jwt,priv-key={data}/server-ecdsa.key.insecure,sign-method=ES256"
        ))
        .unwrap();
        assert!(both.verify(&es256.sign("u", 1).unwrap()).is_err());
        assert!(matches!(
            load(format!(
                "jwt,pub-key={data}/p521.pub,priv-key={data}/server-ecdsa.key.insecure,sign-method=ES512"
            )),
            Err(JwtError::BadKey { .. })
        ));
        let short = load(format!(
            "jwt,priv-key={data}/p521.key.insecure,sign-method=ES512,ttl=0s"
        ))
        .unwrap();
        let expired = short.sign("u", 1).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(short.verify(&expired).is_err(), "past its exp");
    }

    #[test]
    fn missing_keys_are_refused() {
        let o = JwtOptions::parse("jwt,sign-method=RS256").unwrap();
        assert_eq!(JwtTokens::load(&o).err(), Some(JwtError::MissingKey));
        let o = JwtOptions::parse("jwt,sign-method=HS256").unwrap();
        assert_eq!(JwtTokens::load(&o).err(), Some(JwtError::MissingKey));
        let o = JwtOptions::parse("jwt,sign-method=ES512").unwrap();
        assert_eq!(JwtTokens::load(&o).err(), Some(JwtError::MissingKey));
    }
}
