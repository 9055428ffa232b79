//! Identifiers. Upload ids are time-ordered UUIDs; a File's id is derived from its upload's id
//! so that a redelivered assembly job can only ever publish the same File.

use uuid::Uuid;

const FILE_NAMESPACE: Uuid = Uuid::from_u128(0x6c66_7573_7973_4669_6c65_4e61_6d65_7370);

pub fn new_upload_id() -> String {
    Uuid::now_v7().to_string()
}

pub fn new_id() -> String {
    Uuid::now_v7().to_string()
}

/// The File id an upload publishes: stable for a given upload id.
pub fn file_id_for_upload(upload_id: &str) -> String {
    Uuid::new_v5(&FILE_NAMESPACE, upload_id.as_bytes()).to_string()
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
}
