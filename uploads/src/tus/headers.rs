//! The request and answer headers of tus 1.0.0: parsing what clients send, formatting what
//! they read. Pure functions, unit-tested here.

use std::time::{Duration, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use service_kit::problem::Problem;

pub const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
pub const TUS_VERSION_HEADER: HeaderName = HeaderName::from_static("tus-version");
pub const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
pub const TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
pub const TUS_CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("tus-checksum-algorithm");
pub const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
pub const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
pub const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
pub const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
pub const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
pub const UPLOAD_CONCAT: HeaderName = HeaderName::from_static("upload-concat");
pub const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");

/// The one protocol version spoken.
pub const TUS_VERSION: &str = "1.0.0";
/// The media type of a PATCH body.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// A non-negative integer header (`Upload-Length`, `Upload-Offset`): `None` when absent.
pub fn number(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, Problem> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            Problem::bad_request(
                "invalid-header",
                format!("{name} must be a non-negative integer"),
            )
        })
}

/// Whether a creation defers its length: `Upload-Defer-Length: 1` (the only value).
pub fn defer_length(headers: &HeaderMap) -> Result<bool, Problem> {
    match headers.get(&UPLOAD_DEFER_LENGTH) {
        None => Ok(false),
        Some(v) if v.as_bytes() == b"1" => Ok(true),
        Some(_) => Err(Problem::bad_request(
            "invalid-header",
            "Upload-Defer-Length must be 1: the length is declared by a later PATCH",
        )),
    }
}

/// What an upload's `Upload-Metadata` says LFUSYS keeps: the file's name and media type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub name: Option<String>,
    pub content_type: Option<String>,
}

/// Parses `Upload-Metadata`: comma-separated pairs `key base64(value)` (or a key alone). The
/// name comes from `filename` (else `name`), the media type from `filetype` (else `type`),
/// the keys tus-js-client's and Uppy's users set; other keys are accepted and not kept.
pub fn metadata(headers: &HeaderMap) -> Result<Metadata, Problem> {
    let Some(value) = headers.get(&UPLOAD_METADATA) else {
        return Ok(Metadata::default());
    };
    let invalid = |why: &str| {
        Problem::bad_request(
            "invalid-header",
            format!("Upload-Metadata must be comma-separated `key base64-value` pairs: {why}"),
        )
    };
    let text = value.to_str().map_err(|_| invalid("it is not text"))?;
    let mut pairs: Vec<(String, String)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let mut parts = item.split(' ').filter(|p| !p.is_empty());
        let key = parts.next().unwrap_or_default();
        let value = match parts.next() {
            None => String::new(),
            Some(encoded) => {
                let bytes = STANDARD
                    .decode(encoded)
                    .map_err(|_| invalid(&format!("the value of `{key}` is not base64")))?;
                String::from_utf8(bytes)
                    .map_err(|_| invalid(&format!("the value of `{key}` is not UTF-8")))?
            }
        };
        if parts.next().is_some() {
            return Err(invalid(&format!("`{key}` has more than one value")));
        }
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(invalid(&format!("`{key}` appears twice")));
        }
        pairs.push((key.to_owned(), value));
    }
    let find = |keys: &[&str]| {
        keys.iter().find_map(|k| {
            pairs
                .iter()
                .find(|(key, v)| key == k && !v.is_empty())
                .map(|(_, v)| v.clone())
        })
    };
    Ok(Metadata {
        name: find(&["filename", "name"]),
        content_type: find(&["filetype", "type"]),
    })
}

/// `Upload-Metadata` of an upload, as HEAD answers it.
pub fn encode_metadata(name: &str, content_type: &str) -> String {
    let name = format!("filename {}", STANDARD.encode(name));
    if content_type.is_empty() {
        return name;
    }
    format!("{name},filetype {}", STANDARD.encode(content_type))
}

/// An `Upload-Expires` value (an HTTP date) of a time in milliseconds since the epoch.
pub fn http_date(at_ms: i64) -> HeaderValue {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(at_ms).unwrap_or_default());
    HeaderValue::from_str(&httpdate::fmt_http_date(at.max(UNIX_EPOCH)))
        .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// Whether a request's `Content-Type` is `application/offset+octet-stream`.
pub fn is_offset_stream(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|t| t.eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
}

/// A request's media type: its `Content-Type` without parameters (`None` when absent or empty).
pub fn media_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// What `Upload-Concat` asks for (the concatenation extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concat {
    /// `partial`: a part of a parallel upload.
    Partial,
    /// `final;<url> <url> …`: the upload made of these partial uploads (their ids), in order.
    Final(Vec<String>),
}

/// Parses `Upload-Concat`: `partial`, or `final;` and the partial uploads' URLs separated by
/// spaces, each absolute or a path, ending in `{route}/{id}`. `None` when absent.
pub fn concat(headers: &HeaderMap, route: &str) -> Result<Option<Concat>, Problem> {
    let Some(value) = headers.get(&UPLOAD_CONCAT) else {
        return Ok(None);
    };
    let invalid = |why: String| {
        Problem::bad_request(
            "invalid-header",
            format!("Upload-Concat must be `partial` or `final;` and the partial uploads' URLs separated by spaces: {why}"),
        )
    };
    let value = value
        .to_str()
        .map_err(|_| invalid("it is not ASCII".to_owned()))?
        .trim();
    if value == "partial" {
        return Ok(Some(Concat::Partial));
    }
    let Some(urls) = value.strip_prefix("final;") else {
        return Err(invalid(format!("got {value:?}")));
    };
    let prefix = format!("{route}/");
    let ids = urls
        .split(' ')
        .filter(|u| !u.is_empty())
        .map(|url| {
            let path = url.split(['?', '#']).next().unwrap_or_default();
            path.rfind(&prefix)
                .map(|at| &path[at + prefix.len()..])
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .map(str::to_owned)
                .ok_or_else(|| {
                    invalid(format!(
                        "{url} is not the URL of an upload here ({prefix}<id>)"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err(invalid("no partial upload is named".to_owned()));
    }
    Ok(Some(Concat::Final(ids)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn numbers_are_non_negative_integers() {
        assert_eq!(number(&HeaderMap::new(), &UPLOAD_OFFSET).unwrap(), None);
        assert_eq!(
            number(&with(&UPLOAD_OFFSET, "1024"), &UPLOAD_OFFSET).unwrap(),
            Some(1024)
        );
        for bad in ["-1", "1.5", "", "12a", "99999999999999999999999"] {
            let p = number(&with(&UPLOAD_LENGTH, bad), &UPLOAD_LENGTH).unwrap_err();
            assert_eq!(p.status, 400, "{bad}");
            assert!(p.detail.contains("upload-length"), "{}", p.detail);
        }
    }

    #[test]
    fn metadata_gives_the_name_and_type() {
        // filename "a b.txt", filetype "text/plain", an empty key and another one.
        let h = with(
            &UPLOAD_METADATA,
            "filename YSBiLnR4dA==,filetype dGV4dC9wbGFpbg==, is_confidential ,x eQ==",
        );
        assert_eq!(
            metadata(&h).unwrap(),
            Metadata {
                name: Some("a b.txt".into()),
                content_type: Some("text/plain".into())
            }
        );
        // Uppy's `name` / `type` when there is no filename / filetype.
        let h = with(
            &UPLOAD_METADATA,
            "name eC5iaW4=,type YXBwbGljYXRpb24vb2N0ZXQtc3RyZWFt",
        );
        let m = metadata(&h).unwrap();
        assert_eq!(m.name.as_deref(), Some("x.bin"));
        assert_eq!(m.content_type.as_deref(), Some("application/octet-stream"));
        assert_eq!(metadata(&HeaderMap::new()).unwrap(), Metadata::default());
    }

    #[test]
    fn bad_metadata_is_refused_with_the_reason() {
        for (value, why) in [
            ("filename !!!", "not base64"),
            ("filename YQ== Yg==", "more than one value"),
            ("a YQ==,a Yg==", "appears twice"),
            ("filename //8=", "not UTF-8"),
        ] {
            let p = metadata(&with(&UPLOAD_METADATA, value)).unwrap_err();
            assert_eq!(p.status, 400);
            assert!(p.detail.contains(why), "{value}: {}", p.detail);
        }
    }

    #[test]
    fn metadata_round_trips() {
        let h = with(&UPLOAD_METADATA, &encode_metadata("ü.txt", "text/plain"));
        assert_eq!(
            metadata(&h).unwrap(),
            Metadata {
                name: Some("ü.txt".into()),
                content_type: Some("text/plain".into())
            }
        );
        assert_eq!(encode_metadata("a", ""), "filename YQ==");
    }

    #[test]
    fn dates_and_media_types() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            http_date(1_700_000_000_000),
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
        assert!(is_offset_stream(&with(
            &axum::http::header::CONTENT_TYPE,
            "application/offset+octet-stream"
        )));
        assert!(!is_offset_stream(&with(
            &axum::http::header::CONTENT_TYPE,
            "application/octet-stream"
        )));
        assert!(!is_offset_stream(&HeaderMap::new()));
    }

    #[test]
    fn upload_concat_names_partial_uploads_by_url() {
        let of = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(UPLOAD_CONCAT, HeaderValue::from_str(v).unwrap());
            concat(&h, "/api/v1/tus")
        };
        assert_eq!(concat(&HeaderMap::new(), "/api/v1/tus").unwrap(), None);
        assert_eq!(of("partial").unwrap(), Some(Concat::Partial));
        assert_eq!(
            of("final;http://127.0.0.1:8080/api/v1/tus/a /api/v1/tus/b  https://x/api/v1/tus/c?x=1")
                .unwrap(),
            Some(Concat::Final(vec!["a".into(), "b".into(), "c".into()]))
        );
        for bad in [
            "final;",
            "final; ",
            "whole",
            "final;/api/v1/uploads/a",
            "final;/api/v1/tus/",
            "final;/api/v1/tus/a/b",
        ] {
            let p = of(bad).unwrap_err();
            assert_eq!(p.status, 400, "{bad}");
        }
    }
}
