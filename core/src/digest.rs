//! Checksums of chunks and files: SHA-256, CRC-64/NVME, and the RFC 9530 `Content-Digest`
//! header that carries a chunk's (docs/protocol.md, "Checksums").
//!
//! CRC-64/NVME is what the server computes of every byte it receives and what it verifies
//! the stored file against: it runs at many GB/s on one core, and the CRCs of consecutive
//! pieces combine into the CRC of their concatenation ([`crc64nvme_combine`]) without the
//! bytes, so the whole file's is known from its chunks' — which is also how S3 checks a
//! multipart upload against a full-object CRC-64/NVME (checksum type `FULL_OBJECT`).
//! SHA-256 is what users compare with a published checksum; only a client reading the file
//! in order can compute it in one pass.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use crc_fast::CrcAlgorithm;

pub type Sha256 = [u8; 32];

/// A CRC-64/NVME value (S3's `ChecksumCRC64NVME`: the 8 bytes big-endian, in base64).
pub type Crc64 = u64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error(
        "Content-Digest has neither a crc64nvme nor a sha-256 member (expected `crc64nvme=:<base64>:` or `sha-256=:<base64>:`)"
    )]
    NoKnownAlgorithm,
    #[error("Content-Digest {0} value is not a base64 byte sequence `:...:`")]
    Malformed(&'static str),
    #[error("Content-Digest {algorithm} value must be {expected} bytes, got {got}")]
    WrongLength {
        algorithm: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("a SHA-256 hex digest must be 64 hexadecimal characters")]
    BadHex,
    #[error("a CRC-64/NVME hex value must be 16 hexadecimal characters")]
    BadCrcHex,
}

/// The checksums a client declared for one chunk in its `Content-Digest` (at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkDigests {
    pub crc64nvme: Option<Crc64>,
    pub sha256: Option<Sha256>,
}

impl ChunkDigests {
    /// The `Content-Digest` value that declares these.
    #[must_use]
    pub fn to_header(&self) -> String {
        let mut members = Vec::new();
        if let Some(crc) = self.crc64nvme {
            members.push(format!("crc64nvme=:{}:", crc64_base64(crc)));
        }
        if let Some(sha) = &self.sha256 {
            members.push(format_content_digest(sha));
        }
        members.join(", ")
    }
}

/// The `crc64nvme` and `sha-256` members of a `Content-Digest` field value (a structured-field
/// dictionary; other algorithms may be present and are ignored). At least one must be there.
pub fn parse_content_digest(value: &str) -> Result<ChunkDigests, DigestError> {
    let mut out = ChunkDigests::default();
    for member in value.split(',') {
        let Some((key, val)) = member.trim().split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.eq_ignore_ascii_case("sha-256") {
            let bytes = byte_sequence("sha-256", val)?;
            out.sha256 =
                Some(
                    Sha256::try_from(bytes.as_slice()).map_err(|_| DigestError::WrongLength {
                        algorithm: "sha-256",
                        expected: 32,
                        got: bytes.len(),
                    })?,
                );
        } else if key.eq_ignore_ascii_case("crc64nvme") {
            let bytes = byte_sequence("crc64nvme", val)?;
            let be =
                <[u8; 8]>::try_from(bytes.as_slice()).map_err(|_| DigestError::WrongLength {
                    algorithm: "crc64nvme",
                    expected: 8,
                    got: bytes.len(),
                })?;
            out.crc64nvme = Some(u64::from_be_bytes(be));
        }
    }
    if out.crc64nvme.is_none() && out.sha256.is_none() {
        return Err(DigestError::NoKnownAlgorithm);
    }
    Ok(out)
}

/// The bytes of a structured-field byte sequence `:<base64>:` (parameters may follow).
fn byte_sequence(algorithm: &'static str, val: &str) -> Result<Vec<u8>, DigestError> {
    let val = val.trim().split(';').next().unwrap_or_default().trim();
    let inner = val
        .strip_prefix(':')
        .and_then(|v| v.strip_suffix(':'))
        .ok_or(DigestError::Malformed(algorithm))?;
    STANDARD
        .decode(inner)
        .map_err(|_| DigestError::Malformed(algorithm))
}

pub fn format_content_digest(digest: &Sha256) -> String {
    format!("sha-256=:{}:", STANDARD.encode(digest))
}

/// A running CRC-64/NVME.
pub struct Crc64Nvme(crc_fast::Digest);

impl Default for Crc64Nvme {
    fn default() -> Self {
        Self(crc_fast::Digest::new(CrcAlgorithm::Crc64Nvme))
    }
}

impl Crc64Nvme {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    #[must_use]
    pub fn finish(&self) -> Crc64 {
        self.0.finalize()
    }
}

/// CRC-64/NVME of `data`.
#[must_use]
pub fn crc64nvme(data: &[u8]) -> Crc64 {
    crc_fast::checksum(CrcAlgorithm::Crc64Nvme, data)
}

/// The CRC-64/NVME of `a ‖ b` from the CRCs of `a` and `b` and the length of `b`.
#[must_use]
pub fn crc64nvme_combine(a: Crc64, b: Crc64, b_len: u64) -> Crc64 {
    crc_fast::checksum_combine(CrcAlgorithm::Crc64Nvme, a, b, b_len)
}

/// The CRC-64/NVME of consecutive pieces given as `(crc, len)`, in order.
pub fn crc64nvme_of_pieces(pieces: impl IntoIterator<Item = (Crc64, u64)>) -> Crc64 {
    let mut pieces = pieces.into_iter();
    let Some((first, _)) = pieces.next() else {
        return crc64nvme(&[]);
    };
    pieces.fold(first, |acc, (crc, len)| crc64nvme_combine(acc, crc, len))
}

/// 16 lowercase hex digits.
#[must_use]
pub fn crc64_hex(crc: Crc64) -> String {
    format!("{crc:016x}")
}

/// Parses 16 hex digits (either case).
pub fn parse_crc64_hex(s: &str) -> Result<Crc64, DigestError> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DigestError::BadCrcHex);
    }
    u64::from_str_radix(s, 16).map_err(|_| DigestError::BadCrcHex)
}

/// S3's encoding: base64 of the 8 bytes big-endian.
#[must_use]
pub fn crc64_base64(crc: Crc64) -> String {
    STANDARD.encode(crc.to_be_bytes())
}

/// Parses S3's encoding of a CRC-64/NVME.
#[must_use]
pub fn parse_crc64_base64(s: &str) -> Option<Crc64> {
    let bytes = STANDARD.decode(s).ok()?;
    Some(u64::from_be_bytes(bytes.as_slice().try_into().ok()?))
}

pub fn to_hex(digest: &Sha256) -> String {
    hex::encode(digest)
}

/// Parses a lowercase or uppercase 64-character hex SHA-256.
pub fn parse_hex(s: &str) -> Result<Sha256, DigestError> {
    if s.len() != 64 {
        return Err(DigestError::BadHex);
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| DigestError::BadHex)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn round_trips_content_digest() {
        let d: Sha256 = sha2::Sha256::digest(b"hello").into();
        let header = format_content_digest(&d);
        assert_eq!(
            header,
            "sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:"
        );
        let sha_only = ChunkDigests {
            sha256: Some(d),
            crc64nvme: None,
        };
        assert_eq!(parse_content_digest(&header), Ok(sha_only));
        let multi = format!("sha-512=:AAAA:, {header};x=1");
        assert_eq!(parse_content_digest(&multi), Ok(sha_only));
        let both = ChunkDigests {
            sha256: Some(d),
            crc64nvme: Some(crc64nvme(b"hello")),
        };
        assert_eq!(parse_content_digest(&both.to_header()), Ok(both));
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            parse_content_digest("md5=:AAAA:"),
            Err(DigestError::NoKnownAlgorithm)
        );
        assert_eq!(
            parse_content_digest("sha-256=AAAA"),
            Err(DigestError::Malformed("sha-256"))
        );
        assert_eq!(
            parse_content_digest("crc64nvme=:!!:"),
            Err(DigestError::Malformed("crc64nvme"))
        );
        assert_eq!(
            parse_content_digest("sha-256=:AAAA:"),
            Err(DigestError::WrongLength {
                algorithm: "sha-256",
                expected: 32,
                got: 3
            })
        );
        assert_eq!(
            parse_content_digest("crc64nvme=:AAAA:"),
            Err(DigestError::WrongLength {
                algorithm: "crc64nvme",
                expected: 8,
                got: 3
            })
        );
        assert_eq!(parse_content_digest(""), Err(DigestError::NoKnownAlgorithm));
    }

    #[test]
    fn crc64nvme_is_the_s3_checksum_and_combines() {
        // The check value of CRC-64/NVME (the CRC catalogue's "123456789").
        assert_eq!(crc64nvme(b"123456789"), 0xae8b_1486_0a79_9888);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (a, rest) = data.split_at(40_000);
        let (b, c) = rest.split_at(33_333);
        let whole = crc64nvme_of_pieces([
            (crc64nvme(a), a.len() as u64),
            (crc64nvme(b), b.len() as u64),
            (crc64nvme(c), c.len() as u64),
        ]);
        assert_eq!(whole, crc64nvme(&data));
        let mut running = Crc64Nvme::new();
        running.update(a);
        running.update(rest);
        assert_eq!(running.finish(), whole);
        // Two pieces in the other order make another file, and another CRC.
        let swapped = crc64nvme_of_pieces([
            (crc64nvme(b), b.len() as u64),
            (crc64nvme(a), a.len() as u64),
        ]);
        assert_ne!(
            swapped,
            crc64nvme_of_pieces([
                (crc64nvme(a), a.len() as u64),
                (crc64nvme(b), b.len() as u64),
            ])
        );
        assert_eq!(crc64nvme_of_pieces([]), crc64nvme(&[]));
    }

    #[test]
    fn crc64_encodings() {
        let crc = crc64nvme(b"x");
        assert_eq!(parse_crc64_hex(&crc64_hex(crc)), Ok(crc));
        assert_eq!(parse_crc64_hex(&crc64_hex(crc).to_uppercase()), Ok(crc));
        assert_eq!(parse_crc64_hex("abc"), Err(DigestError::BadCrcHex));
        assert_eq!(
            parse_crc64_hex("+bcdef0123456789"),
            Err(DigestError::BadCrcHex)
        );
        assert_eq!(parse_crc64_base64(&crc64_base64(crc)), Some(crc));
        assert_eq!(parse_crc64_base64("AAAA"), None);
    }

    #[test]
    fn hex() {
        let d: Sha256 = sha2::Sha256::digest(b"x").into();
        assert_eq!(parse_hex(&to_hex(&d)), Ok(d));
        assert_eq!(parse_hex(&to_hex(&d).to_uppercase()), Ok(d));
        assert_eq!(parse_hex("abc"), Err(DigestError::BadHex));
        assert_eq!(parse_hex(&"zz".repeat(32)), Err(DigestError::BadHex));
    }
}
