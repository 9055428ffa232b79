//! The IETF "Resumable Uploads for HTTP" draft (draft-ietf-httpbis-resumable-upload) on the
//! same endpoint as tus 1.0 (DESIGN §3 step 7): a request that names its draft in
//! `Upload-Draft-Interop-Version` speaks the draft, any other speaks tus. Pure header rules,
//! unit-tested here; the handlers in [`super`] do the rest through the same appends.
//!
//! | interop version | draft | completeness | `PATCH` media type |
//! |---|---|---|---|
//! | 3 | -01 (iOS 17, macOS 14) | `Upload-Incomplete: ?0` means complete | any |
//! | 4 | -02 | `Upload-Complete: ?1` | any |
//! | 5 | -03 (iOS 18, macOS 15) | `Upload-Complete` | any |
//! | 6 | -04, -05 (iOS 18.1, macOS 15.1) | `Upload-Complete` | `application/partial-upload` |
//!
//! Creation is a `POST` whose body is the file or its first part: complete when it says so,
//! its length then the body's; `Upload-Length` declares it otherwise, and without either the
//! length is deferred until a request that completes the upload. The answer to a creation
//! and to a `HEAD` carries `Upload-Offset`, the completeness, `Upload-Length` once known and
//! `Upload-Limit`. An append at another offset is `409` with the draft's problem type
//! `mismatching-upload-offset` and its `expected-offset` / `provided-offset`. The informational
//! `104 (Upload Resumption Supported)` is not sent: the HTTP stack (hyper 1) has no way to send
//! an interim response from a server, so a client learns the upload's URL from the final
//! answer of the creation (see docs/protocol.md).

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use service_kit::problem::Problem;

use super::checksum::{Algorithm, Checksum};
use super::headers::{media_type, UPLOAD_OFFSET};

pub const UPLOAD_DRAFT_INTEROP_VERSION: HeaderName =
    HeaderName::from_static("upload-draft-interop-version");
pub const UPLOAD_COMPLETE: HeaderName = HeaderName::from_static("upload-complete");
pub const UPLOAD_INCOMPLETE: HeaderName = HeaderName::from_static("upload-incomplete");
pub const UPLOAD_LIMIT: HeaderName = HeaderName::from_static("upload-limit");
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("content-digest");
pub const REPR_DIGEST: HeaderName = HeaderName::from_static("repr-digest");

/// The media type of an append from interop version 6 on.
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";
/// The interop versions spoken, for the refusal of another.
pub const SPOKEN: &str = "3, 4, 5, 6";

/// An interop version of the draft that is spoken here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interop(u8);

impl Interop {
    /// The version a request names: `None` without the header (tus), `Err` for one not spoken.
    pub fn of(headers: &HeaderMap) -> Result<Option<Self>, Problem> {
        let Some(value) = headers.get(&UPLOAD_DRAFT_INTEROP_VERSION) else {
            return Ok(None);
        };
        match value.to_str().ok().map(str::trim) {
            Some("3") => Ok(Some(Self(3))),
            Some("4") => Ok(Some(Self(4))),
            Some("5") => Ok(Some(Self(5))),
            Some("6") => Ok(Some(Self(6))),
            _ => Err(Problem::bad_request(
                "interop-version",
                format!("Upload-Draft-Interop-Version {value:?} is not spoken here; these are: {SPOKEN}"),
            )),
        }
    }

    pub fn header(self) -> HeaderValue {
        HeaderValue::from(u16::from(self.0))
    }

    /// Whether the request says the upload is complete with its body (`None`: it does not
    /// say, which is "not complete").
    pub fn completes(self, headers: &HeaderMap) -> Result<bool, Problem> {
        let (name, complete_when) = self.completeness();
        match headers.get(&name) {
            None => Ok(false),
            Some(v) => match v.as_bytes() {
                b"?1" => Ok(complete_when),
                b"?0" => Ok(!complete_when),
                _ => Err(Problem::bad_request(
                    "invalid-header",
                    format!("{name} is a structured boolean: ?0 or ?1"),
                )),
            },
        }
    }

    /// Says whether the upload is complete, in this version's words.
    pub fn set_complete(self, headers: &mut HeaderMap, complete: bool) {
        let (name, complete_when) = self.completeness();
        let value = if complete == complete_when {
            "?1"
        } else {
            "?0"
        };
        headers.insert(name, HeaderValue::from_static(value));
    }

    /// The header that says it, and the value that means "complete".
    fn completeness(self) -> (HeaderName, bool) {
        if self.0 == 3 {
            (UPLOAD_INCOMPLETE, false)
        } else {
            (UPLOAD_COMPLETE, true)
        }
    }

    /// Whether an append must be `application/partial-upload`.
    pub fn checks_media_type(self) -> bool {
        self.0 >= 6
    }
}

/// Whether an append's `Content-Type` is `application/partial-upload`.
pub fn is_partial_upload(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|t| t.eq_ignore_ascii_case(PARTIAL_UPLOAD))
}

/// `Upload-Limit`: the sizes this server takes.
pub fn limit(max_size: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("min-size=0, max-size={max_size}"))
        .unwrap_or_else(|_| HeaderValue::from_static("min-size=0"))
}

/// The file's name and media type from a creation's `Content-Disposition` and `Content-Type`.
pub fn representation(headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let name = headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(disposition_filename);
    let media = media_type(headers)
        .filter(|t| !t.eq_ignore_ascii_case(PARTIAL_UPLOAD))
        .map(str::to_owned);
    (name, media)
}

/// `filename` of a `Content-Disposition` (quoted or not).
fn disposition_filename(value: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|param| {
        let (key, v) = param.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("filename") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        (!v.is_empty()).then(|| v.to_owned())
    })
}

/// `Content-Digest` (RFC 9530) of a request's content, as a checksum to verify like tus's
/// `Upload-Checksum`: `sha-256` is checked (and `sha` — SHA-1 — of older clients); a digest
/// of only other algorithms is not, and is refused rather than ignored.
pub fn content_digest(headers: &HeaderMap) -> Result<Option<Checksum>, Problem> {
    digest_of(headers, &CONTENT_DIGEST, true)
}

/// `Repr-Digest` (RFC 9530) of a creation: the whole file's SHA-256 (lowercase hex), which the
/// File must have — the workers' SHA-256 of the bytes received is checked against it at
/// assembly, and a mismatch fails the upload.
pub fn repr_digest(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    Ok(digest_of(headers, &REPR_DIGEST, false)?.map(|c| hex::encode(c.digest)))
}

/// The first digest of `name` in an algorithm checked here (`sha-256`; `sha` too if `sha1`).
fn digest_of(
    headers: &HeaderMap,
    name: &HeaderName,
    sha1: bool,
) -> Result<Option<Checksum>, Problem> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let invalid = |why: &str| {
        Problem::bad_request(
            "invalid-digest",
            format!("{name} must be `sha-256=:<base64>:`: {why}"),
        )
    };
    let text = value.to_str().map_err(|_| invalid("it is not text"))?;
    for member in text.split(',') {
        let Some((alg, digest)) = member.trim().split_once('=') else {
            continue;
        };
        let algorithm = match alg.trim() {
            "sha-256" => Algorithm::Sha256,
            "sha" if sha1 => Algorithm::Sha1,
            _ => continue,
        };
        let encoded = digest
            .trim()
            .strip_prefix(':')
            .and_then(|d| d.strip_suffix(':'))
            .ok_or_else(|| invalid("a digest is a byte sequence, `:<base64>:`"))?;
        let digest = STANDARD
            .decode(encoded)
            .map_err(|_| invalid("the digest is not base64"))?;
        if digest.len() != algorithm.digest_len() {
            return Err(invalid(&format!(
                "a {} digest is {} bytes, this one is {}",
                alg.trim(),
                algorithm.digest_len(),
                digest.len()
            )));
        }
        return Ok(Some(Checksum { algorithm, digest }));
    }
    Err(invalid("no sha-256 digest in it"))
}

/// `409`: the append's `Upload-Offset` is not the upload's. The draft's problem type.
pub fn mismatching_offset(expected: u64, provided: u64) -> Response {
    let body = serde_json::json!({
        "type": "https://iana.org/assignments/http-problem-types#mismatching-upload-offset",
        "title": "offset from request does not match offset of resource",
        "status": 409,
        "detail": format!("Upload-Offset is {provided} but the upload's offset is {expected}"),
        "expected-offset": expected,
        "provided-offset": provided,
    });
    let mut res = (StatusCode::CONFLICT, body.to_string()).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    h.insert(UPLOAD_OFFSET, HeaderValue::from(expected));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert((*name).clone(), HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn versions_spoken_and_not() {
        assert_eq!(Interop::of(&HeaderMap::new()).unwrap(), None);
        for v in ["3", "4", "5", "6"] {
            let h = with(&[(&UPLOAD_DRAFT_INTEROP_VERSION, v)]);
            assert_eq!(Interop::of(&h).unwrap().unwrap().header(), v);
        }
        let p = Interop::of(&with(&[(&UPLOAD_DRAFT_INTEROP_VERSION, "2")])).unwrap_err();
        assert_eq!(p.status, 400);
        assert!(p.detail.contains("3, 4, 5, 6"), "{}", p.detail);
    }

    #[test]
    fn completeness_in_each_version_s_words() {
        let v3 = Interop(3);
        let v6 = Interop(6);
        assert!(v3.completes(&with(&[(&UPLOAD_INCOMPLETE, "?0")])).unwrap());
        assert!(!v3.completes(&with(&[(&UPLOAD_INCOMPLETE, "?1")])).unwrap());
        assert!(!v3.completes(&with(&[(&UPLOAD_COMPLETE, "?1")])).unwrap());
        assert!(v6.completes(&with(&[(&UPLOAD_COMPLETE, "?1")])).unwrap());
        assert!(!v6.completes(&HeaderMap::new()).unwrap());
        assert!(v6.completes(&with(&[(&UPLOAD_COMPLETE, "true")])).is_err());
        let mut h = HeaderMap::new();
        v3.set_complete(&mut h, true);
        assert_eq!(h.get(&UPLOAD_INCOMPLETE).unwrap(), "?0");
        v6.set_complete(&mut h, false);
        assert_eq!(h.get(&UPLOAD_COMPLETE).unwrap(), "?0");
        assert!(v6.checks_media_type() && !Interop(5).checks_media_type());
    }

    #[test]
    fn the_representation_names_the_file() {
        let h = with(&[
            (
                &header::CONTENT_DISPOSITION,
                "attachment; filename=\"a b.txt\"",
            ),
            (&header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ]);
        assert_eq!(
            representation(&h),
            (Some("a b.txt".into()), Some("text/plain".into()))
        );
        let h = with(&[(&header::CONTENT_TYPE, PARTIAL_UPLOAD)]);
        assert_eq!(representation(&h), (None, None));
    }

    #[test]
    fn content_digests() {
        let sha = STANDARD.encode([9u8; 32]);
        let h = with(&[(&CONTENT_DIGEST, &format!("md5=:AAAA:, sha-256=:{sha}:"))]);
        let c = content_digest(&h).unwrap().unwrap();
        assert_eq!((c.algorithm, c.digest), (Algorithm::Sha256, vec![9u8; 32]));
        assert!(content_digest(&with(&[(&CONTENT_DIGEST, "md5=:AAAA:")])).is_err());
        assert!(content_digest(&with(&[(&CONTENT_DIGEST, "sha-256=abc")])).is_err());
        assert!(content_digest(&with(&[(&CONTENT_DIGEST, "sha-256=:AAAA:")])).is_err());
        assert_eq!(content_digest(&HeaderMap::new()).unwrap(), None);
        let h = with(&[(&REPR_DIGEST, &format!("sha-256=:{sha}:"))]);
        assert_eq!(repr_digest(&h).unwrap(), Some("09".repeat(32)));
        // SHA-1 is no file checksum here.
        let sha1 = STANDARD.encode([1u8; 20]);
        assert!(repr_digest(&with(&[(&REPR_DIGEST, &format!("sha=:{sha1}:"))])).is_err());
    }
}
