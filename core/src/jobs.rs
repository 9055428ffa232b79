//! Messages on the assembly queue.

use serde::{Deserialize, Serialize};

use crate::ids::UploadId;

/// Assemble the upload `upload_id` into its File. Sent with dedup id = group id = upload id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssemblyJob {
    pub upload_id: UploadId,
}

impl AssemblyJob {
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
    pub fn from_body(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}
