//! Input checks of the requests (pure functions): each names the field it refuses.

use super::error::DomainError;
use lfusys_core::ids::UserId;

pub const MAX_NAME_BYTES: usize = 255;
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A file name: what the owner sees and what downloads are saved as.
pub fn file_name(name: &str) -> Result<(), DomainError> {
    if name.is_empty() {
        return Err(DomainError::invalid("name", "name must not be empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(DomainError::invalid(
            "name",
            format!(
                "name is {} bytes long; at most {MAX_NAME_BYTES} bytes are allowed",
                name.len()
            ),
        ));
    }
    if name.contains('/') {
        return Err(DomainError::invalid(
            "name",
            "name must be a file name, without '/'",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            "name",
            "name must not contain NUL or control characters",
        ));
    }
    if name == "." || name == ".." {
        return Err(DomainError::invalid("name", "name must not be '.' or '..'"));
    }
    Ok(())
}

/// The media type to store: the default when none is given; it ends up in response headers,
/// so it must be printable ASCII.
pub fn content_type(value: &str) -> Result<String, DomainError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(DEFAULT_CONTENT_TYPE.to_owned());
    }
    if value.len() > MAX_CONTENT_TYPE_BYTES || !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(DomainError::invalid(
            "content_type",
            "content_type must be a media type of at most 255 printable ASCII characters",
        ));
    }
    Ok(value.to_owned())
}

/// A SHA-256 in hex, normalised to lowercase.
pub fn sha256_hex(field: &'static str, value: &str) -> Result<String, DomainError> {
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(DomainError::invalid(
            field,
            format!("{field} must be a SHA-256 of 64 hexadecimal characters"),
        ))
    }
}

/// An optional SHA-256: empty means not given.
pub fn optional_sha256_hex(
    field: &'static str,
    value: &str,
) -> Result<Option<String>, DomainError> {
    if value.is_empty() {
        Ok(None)
    } else {
        sha256_hex(field, value).map(Some)
    }
}

/// Every request acts for an owner; an empty one is a caller bug, not a missing record.
pub fn owner(owner_id: &UserId) -> Result<(), DomainError> {
    if owner_id.trim().is_empty() {
        Err(DomainError::invalid("owner_id", "owner_id is required"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn refused_field(e: DomainError) -> &'static str {
        match e {
            DomainError::InvalidArgument { field, .. } => field,
            other => panic!("not an invalid argument: {other:?}"),
        }
    }

    #[test]
    fn names() {
        for ok in [
            "a",
            "report.pdf",
            "日本語.txt",
            "with space",
            "a\\b",
            &"x".repeat(255),
        ] {
            assert!(file_name(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "a/b",
            "/",
            "nul\0byte",
            "tab\there",
            "new\nline",
            "del\u{7f}",
            ".",
            "..",
            &"x".repeat(256),
        ] {
            assert_eq!(
                refused_field(file_name(bad).unwrap_err()),
                "name",
                "{bad:?}"
            );
        }
        // 255 bytes, not characters.
        assert!(file_name(&"é".repeat(128)).is_err());
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("").unwrap(), DEFAULT_CONTENT_TYPE);
        assert_eq!(content_type("  ").unwrap(), DEFAULT_CONTENT_TYPE);
        assert_eq!(
            content_type("text/plain; charset=utf-8").unwrap(),
            "text/plain; charset=utf-8"
        );
        assert!(content_type("text/plain\r\nX-Evil: 1").is_err());
        assert!(content_type(&"a".repeat(256)).is_err());
    }

    #[test]
    fn digests() {
        let hex = "AB".repeat(32);
        assert_eq!(sha256_hex("sha256", &hex).unwrap(), "ab".repeat(32));
        assert!(sha256_hex("sha256", "abc").is_err());
        assert!(sha256_hex("sha256", &"zz".repeat(32)).is_err());
        assert_eq!(optional_sha256_hex("sha256", "").unwrap(), None);
        assert!(optional_sha256_hex("sha256", "xyz").is_err());
        assert!(owner(&"".into()).is_err());
        assert!(owner(&"u1".into()).is_ok());
    }
}
