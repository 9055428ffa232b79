//! Signed tokens (EdDSA / Ed25519 JWTs). The gateway holds the private key and signs access
//! tokens and upload tokens; upload workers hold only the public key and verify upload tokens
//! locally, with no database lookup per chunk.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::plan::UploadPlan;

pub const ISSUER: &str = "lfusys";
pub const ACCESS_AUDIENCE: &str = "lfusys-api";
pub const UPLOAD_AUDIENCE: &str = "lfusys-upload";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading key file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is not a valid Ed25519 PEM key: {reason}")]
    Invalid { path: String, reason: String },
    #[error("generating a key pair failed")]
    Generate,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is invalid")]
    Invalid,
    #[error("signing the token failed")]
    Signing,
}

/// The claims of an access token (API authentication).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// User id.
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    /// Refresh-token family the token was issued with; revoking the family makes the
    /// gateway refuse the access token too.
    pub fam: String,
}

/// The claims of an upload token: who may write which upload, and its chunk plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadClaims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    /// Upload id.
    pub upl: String,
    pub size: u64,
    pub chunk_size: u64,
}

impl UploadClaims {
    pub fn plan(&self) -> UploadPlan {
        UploadPlan::new(self.size, self.chunk_size)
    }
}

/// A public key that verifies tokens.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
}

/// A key pair that signs (and verifies) tokens.
#[derive(Clone)]
pub struct TokenSigner {
    key: EncodingKey,
    verifier: TokenVerifier,
    public_pem: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner").finish_non_exhaustive()
    }
}
impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

fn pem_body(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = text[start..].find(&end)? + start;
    let b64: String = text[start..stop].split_whitespace().collect();
    STANDARD.decode(b64).ok()
}

/// A fresh Ed25519 key pair as PEM documents: (PKCS#8 `PRIVATE KEY`, SPKI `PUBLIC KEY`), the
/// form the services read from `LFUSYS_SIGNING_KEY_FILE` / `LFUSYS_TOKEN_PUBLIC_KEY_FILE`.
pub fn generate_key_pair_pem() -> Result<(String, String), KeyError> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
    let private_pem = pem("PRIVATE KEY", pkcs8.as_ref());
    let signer = TokenSigner::from_pem(&private_pem).map_err(|_| KeyError::Generate)?;
    Ok((private_pem, signer.public_pem().to_owned()))
}

impl TokenSigner {
    /// Generates a fresh Ed25519 key pair.
    pub fn generate() -> Result<Self, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8_der(pkcs8.as_ref()).map_err(|_| KeyError::Generate)
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| e.to_string())?;
        let public = pair.public_key().as_ref().to_vec();
        let mut spki = SPKI_ED25519_PREFIX.to_vec();
        spki.extend_from_slice(&public);
        Ok(Self {
            key: EncodingKey::from_ed_der(der),
            verifier: TokenVerifier {
                key: DecodingKey::from_ed_der(&public),
            },
            public_pem: pem("PUBLIC KEY", &spki),
        })
    }

    /// Parses a PKCS#8 `PRIVATE KEY` PEM document.
    pub fn from_pem(text: &str) -> Result<Self, String> {
        let der = pem_body(text, "PRIVATE KEY").ok_or("no PRIVATE KEY PEM block")?;
        Self::from_pkcs8_der(&der)
    }

    /// Loads the key pair kept at `path` (PKCS#8 PEM), generating and saving one (mode 0600)
    /// when the file does not exist yet. Used by the embedded mode.
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        let p = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                Self::from_pem(&text).map_err(|reason| KeyError::Invalid { path: p, reason })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = ring::rand::SystemRandom::new();
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
                let text = pem("PRIVATE KEY", pkcs8.as_ref());
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
                        path: p.clone(),
                        source,
                    })?;
                }
                write_private(path, &text).map_err(|source| KeyError::Io {
                    path: p.clone(),
                    source,
                })?;
                Self::from_pem(&text).map_err(|reason| KeyError::Invalid { path: p, reason })
            }
            Err(source) => Err(KeyError::Io { path: p, source }),
        }
    }

    /// Loads a private key PEM file that must exist.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: p.clone(),
            source,
        })?;
        Self::from_pem(&text).map_err(|reason| KeyError::Invalid { path: p, reason })
    }

    /// The public key as an SPKI `PUBLIC KEY` PEM document (what workers are configured with).
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    pub fn verifier(&self) -> TokenVerifier {
        self.verifier.clone()
    }

    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.key)
            .map_err(|_| TokenError::Signing)
    }

    pub fn sign_access(
        &self,
        user_id: &str,
        family: &str,
        now_s: i64,
        ttl_s: i64,
    ) -> Result<String, TokenError> {
        self.sign(&AccessClaims {
            sub: user_id.to_owned(),
            iss: ISSUER.to_owned(),
            aud: ACCESS_AUDIENCE.to_owned(),
            iat: now_s,
            exp: now_s + ttl_s,
            fam: family.to_owned(),
        })
    }

    pub fn sign_upload(
        &self,
        user_id: &str,
        upload_id: &str,
        plan: UploadPlan,
        now_s: i64,
        ttl_s: i64,
    ) -> Result<String, TokenError> {
        self.sign(&UploadClaims {
            sub: user_id.to_owned(),
            iss: ISSUER.to_owned(),
            aud: UPLOAD_AUDIENCE.to_owned(),
            iat: now_s,
            exp: now_s + ttl_s,
            upl: upload_id.to_owned(),
            size: plan.size,
            chunk_size: plan.chunk_size,
        })
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

impl TokenVerifier {
    /// Parses an SPKI `PUBLIC KEY` PEM document.
    pub fn from_public_pem(text: &str) -> Result<Self, String> {
        let der = pem_body(text, "PUBLIC KEY").ok_or("no PUBLIC KEY PEM block")?;
        let raw = der
            .strip_prefix(&SPKI_ED25519_PREFIX[..])
            .filter(|r| r.len() == 32)
            .ok_or("not an Ed25519 public key")?;
        Ok(Self {
            key: DecodingKey::from_ed_der(raw),
        })
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: p.clone(),
            source,
        })?;
        Self::from_public_pem(&text).map_err(|reason| KeyError::Invalid { path: p, reason })
    }

    fn verify<C: DeserializeOwned>(&self, token: &str, audience: &str) -> Result<C, TokenError> {
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&[audience]);
        v.set_issuer(&[ISSUER]);
        v.leeway = 5;
        v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        jsonwebtoken::decode::<C>(token, &self.key, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }

    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        self.verify(token, ACCESS_AUDIENCE)
    }

    pub fn verify_upload(&self, token: &str) -> Result<UploadClaims, TokenError> {
        self.verify(token, UPLOAD_AUDIENCE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        crate::clock::now_ms() / 1000
    }

    #[test]
    fn signs_and_verifies_with_public_key_only() {
        let signer = TokenSigner::generate().unwrap();
        let verifier = TokenVerifier::from_public_pem(signer.public_pem()).unwrap();
        let plan = UploadPlan::new(100, 30);
        let t = signer.sign_upload("u1", "up1", plan, now(), 60).unwrap();
        let c = verifier.verify_upload(&t).unwrap();
        assert_eq!((c.sub.as_str(), c.upl.as_str()), ("u1", "up1"));
        assert_eq!(c.plan().total_chunks, 4);
        // An upload token is not an access token, and vice versa.
        assert_eq!(verifier.verify_access(&t), Err(TokenError::Invalid));
        let a = signer.sign_access("u1", "fam", now(), 60).unwrap();
        assert_eq!(verifier.verify_access(&a).unwrap().fam, "fam");
        assert_eq!(verifier.verify_upload(&a), Err(TokenError::Invalid));
    }

    #[test]
    fn rejects_expired_tampered_and_foreign_tokens() {
        let signer = TokenSigner::generate().unwrap();
        let other = TokenSigner::generate().unwrap();
        let v = signer.verifier();
        let expired = signer.sign_access("u", "f", now() - 3600, 60).unwrap();
        assert_eq!(v.verify_access(&expired), Err(TokenError::Expired));
        let foreign = other.sign_access("u", "f", now(), 60).unwrap();
        assert_eq!(v.verify_access(&foreign), Err(TokenError::Invalid));
        let good = signer.sign_access("u", "f", now(), 60).unwrap();
        let mut tampered = good.clone();
        tampered.insert(good.find('.').unwrap() + 2, 'x');
        assert_eq!(v.verify_access(&tampered), Err(TokenError::Invalid));
        assert_eq!(v.verify_access("not-a-jwt"), Err(TokenError::Invalid));
    }

    #[test]
    fn a_generated_pem_pair_signs_and_verifies() {
        let (private_pem, public_pem) = generate_key_pair_pem().unwrap();
        assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let signer = TokenSigner::from_pem(&private_pem).unwrap();
        let verifier = TokenVerifier::from_public_pem(&public_pem).unwrap();
        let token = signer.sign_access("user-1", "fam", now(), 60).unwrap();
        assert_eq!(verifier.verify_access(&token).unwrap().sub, "user-1");
        let (other, _) = generate_key_pair_pem().unwrap();
        assert_ne!(other, private_pem);
    }

    #[test]
    fn keys_persist_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing-key.pem");
        let a = TokenSigner::load_or_generate(&path).unwrap();
        let b = TokenSigner::load_or_generate(&path).unwrap();
        assert_eq!(a.public_pem(), b.public_pem());
        let t = a.sign_access("u", "f", now(), 60).unwrap();
        assert!(b.verifier().verify_access(&t).is_ok());
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            TokenSigner::load_or_generate(&path),
            Err(KeyError::Invalid { .. })
        ));
    }
}
