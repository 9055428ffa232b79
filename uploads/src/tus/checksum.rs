//! The tus checksum extension: `Upload-Checksum: <algorithm> <base64 digest>` on a `PATCH`
//! (or the body of a creation) declares the digest of that request's body; a body whose
//! digest differs is answered `460 Checksum Mismatch` and nothing of it is kept.
//!
//! "Nothing kept" is kept by where the check happens: the body is hashed as it streams, and
//! the frame that carries its last byte is handed on only when the digest matches — on a
//! mismatch the stream fails in its place. So the part being written last (a staged piece, or
//! a chunk) fails as any broken body does and is not kept, and the chunks the request
//! completed before it, written to their places under their leases but not yet recorded
//! ([`crate::ingest::HeldChunk`]), are recorded only once the whole body has passed
//! ([`super::append`]). A checksum needs the body's length up front (`Content-Length`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures::StreamExt;
use service_kit::problem::Problem;
use sha1::Digest as _;
use storage::ByteStream;

use super::headers::UPLOAD_CHECKSUM;

/// The algorithms spoken, as `Tus-Checksum-Algorithm` lists them.
pub const ALGORITHMS: &str = "sha1,sha256";

/// A digest algorithm of `Upload-Checksum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
}

impl Algorithm {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            _ => None,
        }
    }

    pub(super) fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    fn hasher(self) -> Hasher {
        match self {
            Self::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Self::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }
}

enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(bytes),
            Self::Sha256(h) => h.update(bytes),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// What a request's `Upload-Checksum` declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: Algorithm,
    pub digest: Vec<u8>,
}

/// Parses `Upload-Checksum` (`None` when absent); an algorithm not spoken, or a digest that is
/// not base64 of the algorithm's length, is `400`.
pub fn declared(headers: &HeaderMap) -> Result<Option<Checksum>, Problem> {
    let Some(value) = headers.get(&UPLOAD_CHECKSUM) else {
        return Ok(None);
    };
    let invalid = |why: String| {
        Problem::bad_request(
            "invalid-checksum",
            format!("Upload-Checksum must be `<algorithm> <base64 digest>` with algorithm {ALGORITHMS}: {why}"),
        )
    };
    let text = value
        .to_str()
        .map_err(|_| invalid("it is not text".into()))?;
    let (name, encoded) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| invalid("there is no digest".into()))?;
    let algorithm = Algorithm::parse(name.trim())
        .ok_or_else(|| invalid(format!("`{}` is not spoken here", name.trim())))?;
    let digest = STANDARD
        .decode(encoded.trim())
        .map_err(|_| invalid("the digest is not base64".into()))?;
    if digest.len() != algorithm.digest_len() {
        return Err(invalid(format!(
            "a {name} digest is {} bytes, this one is {}",
            algorithm.digest_len(),
            digest.len()
        )));
    }
    Ok(Some(Checksum { algorithm, digest }))
}

/// Whether the checked body matched: set once its last byte has passed.
#[derive(Debug, Clone, Default)]
pub struct Verdict(Arc<AtomicBool>);

impl Verdict {
    /// The body's digest was not the declared one.
    pub fn mismatched(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// `body` (of `len` bytes) hashed as it streams; the frame with its last byte passes only
/// when the digest is `checksum`'s — otherwise the stream fails there and `Verdict` says why.
pub fn verified(body: ByteStream, len: u64, checksum: Checksum) -> (ByteStream, Verdict) {
    let verdict = Verdict::default();
    let (expected, flag) = (checksum.digest, verdict.clone());
    // The bytes seen, and the hasher until the last byte has passed.
    let start = (0u64, Some(checksum.algorithm.hasher()));
    let stream = body.scan(start, move |(seen, hasher), item| {
        let out = item.and_then(|bytes| {
            let Some(h) = hasher.as_mut() else {
                return Ok(bytes);
            };
            h.update(&bytes);
            *seen += bytes.len() as u64;
            if *seen < len {
                return Ok(bytes);
            }
            let digest = hasher.take().map(Hasher::finish).unwrap_or_default();
            if digest == expected {
                Ok(bytes)
            } else {
                flag.0.store(true, Ordering::SeqCst);
                Err(std::io::Error::other(
                    "the body's checksum is not the declared Upload-Checksum",
                ))
            }
        });
        futures::future::ready(Some(out))
    });
    (Box::pin(stream), verdict)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use bytes::Bytes;
    use futures::TryStreamExt;

    use super::*;

    fn header(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(UPLOAD_CHECKSUM, HeaderValue::from_str(value).unwrap());
        h
    }

    fn frames(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<std::io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures::stream::iter(items))
    }

    fn sha1_of(bytes: &[u8]) -> Vec<u8> {
        sha1::Sha1::digest(bytes).to_vec()
    }

    #[test]
    fn parses_the_algorithms_spoken() {
        assert_eq!(declared(&HeaderMap::new()).unwrap(), None);
        // SHA-1 of "hello".
        let c = declared(&header("sha1 qvTGHdzF6KLavt4PO0gs2a6pQ00="))
            .unwrap()
            .unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha1);
        assert_eq!(c.digest, sha1_of(b"hello"));
        let c = declared(&header(&format!("sha256 {}", STANDARD.encode([7u8; 32]))))
            .unwrap()
            .unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha256);
    }

    #[test]
    fn refuses_what_it_cannot_check() {
        for (value, why) in [
            ("md5 XUFAKrxLKna5cZ2REBfFkg==", "`md5` is not spoken"),
            ("sha1", "no digest"),
            ("sha1 !!!", "not base64"),
            (
                "sha256 qvTGHdzF6KLavt4PO0gs2a6pQ00=",
                "32 bytes, this one is 20",
            ),
        ] {
            let p = declared(&header(value)).unwrap_err();
            assert_eq!(p.status, 400, "{value}");
            assert!(p.detail.contains(why), "{value}: {}", p.detail);
        }
    }

    #[tokio::test]
    async fn a_matching_body_passes_whole() {
        let checksum = Checksum {
            algorithm: Algorithm::Sha1,
            digest: sha1_of(b"hello world"),
        };
        let (s, verdict) = verified(frames(&[b"hello", b" ", b"world"]), 11, checksum);
        let out: Vec<Bytes> = s.try_collect().await.unwrap();
        assert_eq!(out.concat(), b"hello world");
        assert!(!verdict.mismatched());
    }

    #[tokio::test]
    async fn a_mismatching_body_fails_in_place_of_its_last_frame() {
        let checksum = Checksum {
            algorithm: Algorithm::Sha1,
            digest: sha1_of(b"hello world"),
        };
        let (mut s, verdict) = verified(frames(&[b"hello", b" ", b"wOrld"]), 11, checksum);
        assert_eq!(s.next().await.unwrap().unwrap(), "hello");
        assert_eq!(s.next().await.unwrap().unwrap(), " ");
        assert!(!verdict.mismatched(), "not known before the last byte");
        assert!(s.next().await.unwrap().is_err());
        assert!(verdict.mismatched());
    }
}
