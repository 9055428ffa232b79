//! Identifiers. Upload ids are time-ordered UUIDs; a File's id is derived from its upload's id
//! so that a redelivered assembly job can only ever publish the same File.
//!
//! Each kind of id has a type of its own ([`UploadId`], [`FileId`], [`UserId`], [`ClaimId`]),
//! so that a signature taking an owner, an upload and a claim cannot be called with them in
//! the wrong order. They are strings underneath (what the stores and the wire hold), read as
//! `&str` where only the text matters; an adapter turns wire or stored text into an id with
//! `From`, and a request's text is checked with [`is_valid_id`] before it becomes one.

use std::fmt;

use uuid::Uuid;

const FILE_NAMESPACE: Uuid = Uuid::from_u128(0x6c66_7573_7973_4669_6c65_4e61_6d65_7370);

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize,
            serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        /// From any text: `&str`, `&String`, `&&str`, another id's `&`.
        impl<T: AsRef<str> + ?Sized> From<&T> for $name {
            fn from(id: &T) -> Self {
                Self(id.as_ref().to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

id_type!(
    /// An upload session's id: a time-ordered UUID (v7).
    UploadId
);
id_type!(
    /// A File's id: derived from its upload's id ([`file_id_for_upload`]).
    FileId
);
id_type!(
    /// A user's (and so an owner's) id.
    UserId
);
id_type!(
    /// A worker's claim on one chunk: the lease it writes the chunk under.
    ClaimId
);

impl UploadId {
    /// A new, time-ordered upload id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7().to_string())
    }
}

pub fn new_upload_id() -> String {
    Uuid::now_v7().to_string()
}

pub fn new_id() -> String {
    Uuid::now_v7().to_string()
}

/// The File id an upload publishes: stable for a given upload id.
pub fn file_id_for_upload(upload_id: &str) -> FileId {
    FileId(Uuid::new_v5(&FILE_NAMESPACE, upload_id.as_bytes()).to_string())
}

/// The blob-store key of a File's bytes.
pub fn blob_key_for_file(file_id: &str) -> String {
    format!("files/{file_id}")
}

/// Ids in URLs must look like ours before they reach a store.
pub fn is_valid_id(id: &str) -> bool {
    Uuid::parse_str(id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_id_is_stable_and_distinct() {
        let a = new_upload_id();
        let b = new_upload_id();
        assert_eq!(file_id_for_upload(&a), file_id_for_upload(&a));
        assert_ne!(file_id_for_upload(&a), file_id_for_upload(&b));
        assert!(is_valid_id(&file_id_for_upload(&a)));
        assert!(!is_valid_id("../etc/passwd"));
    }

    #[test]
    fn ids_read_as_their_text() {
        let id = UploadId::from("0190a0a0-0000-7000-8000-000000000001");
        assert_eq!(id, "0190a0a0-0000-7000-8000-000000000001");
        assert_eq!(id.to_string(), id.as_str());
        assert_eq!(
            serde_json::to_string(&id).unwrap_or_default(),
            "\"0190a0a0-0000-7000-8000-000000000001\""
        );
        assert!(is_valid_id(&UploadId::generate()));
        let owner: UserId = "alice".into();
        assert_eq!(String::from(owner), "alice");
    }
}
