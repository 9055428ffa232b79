//! SHA-256 digests and the RFC 9530 `Content-Digest` header.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

pub type Sha256 = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("Content-Digest has no sha-256 member (expected `sha-256=:<base64>:`)")]
    NoSha256,
    #[error("Content-Digest sha-256 value is not a base64 byte sequence `:...:`")]
    Malformed,
    #[error("Content-Digest sha-256 value must be 32 bytes, got {0}")]
    WrongLength(usize),
    #[error("a SHA-256 hex digest must be 64 hexadecimal characters")]
    BadHex,
}

/// Extracts the SHA-256 from a `Content-Digest` field value (a structured-field dictionary;
/// other algorithms may be present and are ignored).
pub fn parse_content_digest(value: &str) -> Result<Sha256, DigestError> {
    for member in value.split(',') {
        let member = member.trim();
        let Some((key, val)) = member.split_once('=') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case("sha-256") {
            continue;
        }
        let val = val.trim();
        // Parameters (`;foo=bar`) may follow the byte sequence.
        let val = val.split(';').next().unwrap_or_default().trim();
        let inner = val
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .ok_or(DigestError::Malformed)?;
        let bytes = STANDARD.decode(inner).map_err(|_| DigestError::Malformed)?;
        return Sha256::try_from(bytes.as_slice())
            .map_err(|_| DigestError::WrongLength(bytes.len()));
    }
    Err(DigestError::NoSha256)
}

pub fn format_content_digest(digest: &Sha256) -> String {
    format!("sha-256=:{}:", STANDARD.encode(digest))
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
        assert_eq!(parse_content_digest(&header), Ok(d));
        let multi = format!("sha-512=:AAAA:, {header};x=1");
        assert_eq!(parse_content_digest(&multi), Ok(d));
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            parse_content_digest("md5=:AAAA:"),
            Err(DigestError::NoSha256)
        );
        assert_eq!(
            parse_content_digest("sha-256=AAAA"),
            Err(DigestError::Malformed)
        );
        assert_eq!(
            parse_content_digest("sha-256=:!!:"),
            Err(DigestError::Malformed)
        );
        assert_eq!(
            parse_content_digest("sha-256=:AAAA:"),
            Err(DigestError::WrongLength(3))
        );
        assert_eq!(parse_content_digest(""), Err(DigestError::NoSha256));
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
