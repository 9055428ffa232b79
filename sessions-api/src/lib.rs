//! The sessions service's gRPC contract (`proto/sessions.proto`, DESIGN §2), the client the
//! gateway and the upload workers connect with, and the conversions between wire values and
//! the domain's types.

pub mod client;
pub mod proto;

use lfusys_core::state::UploadState;

pub use client::{connect_lazy, probe};

impl From<UploadState> for proto::UploadState {
    fn from(state: UploadState) -> Self {
        match state {
            UploadState::Uploading => Self::Uploading,
            UploadState::Assembling => Self::Assembling,
            UploadState::Completed => Self::Completed,
            UploadState::Failed => Self::Failed,
            UploadState::Cancelled => Self::Cancelled,
            UploadState::Expired => Self::Expired,
        }
    }
}

impl From<&proto::Part> for storage::PartRef {
    fn from(p: &proto::Part) -> Self {
        Self {
            index: p.index,
            size: p.size,
            crc64nvme: p.crc64nvme,
            etag: optional(&p.etag).map(str::to_owned),
        }
    }
}

/// A proto3 string field that may be empty, as the domain holds it: empty is none (proto3 has
/// no absent scalar; the wire says "none" with "").
pub fn optional(wire: &str) -> Option<&str> {
    (!wire.is_empty()).then_some(wire)
}

/// The domain source of a File's `sha256_source`; `None` for empty (no SHA-256) or unknown.
pub fn sha256_source(wire: &str) -> Option<storage::Sha256Source> {
    storage::Sha256Source::parse(wire)
}

/// The domain state of a proto enum value; `None` for `UNSPECIFIED`.
pub fn state_from_proto(state: proto::UploadState) -> Option<UploadState> {
    Some(match state {
        proto::UploadState::Unspecified => return None,
        proto::UploadState::Uploading => UploadState::Uploading,
        proto::UploadState::Assembling => UploadState::Assembling,
        proto::UploadState::Completed => UploadState::Completed,
        proto::UploadState::Failed => UploadState::Failed,
        proto::UploadState::Cancelled => UploadState::Cancelled,
        proto::UploadState::Expired => UploadState::Expired,
    })
}

/// The domain state of the wire value of an `UploadState` field; `None` for unknown values.
pub fn upload_state(wire: i32) -> Option<UploadState> {
    proto::UploadState::try_from(wire)
        .ok()
        .and_then(state_from_proto)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_survives_the_wire() {
        for state in UploadState::ALL {
            assert_eq!(state_from_proto(state.into()), Some(state));
            assert_eq!(
                upload_state(proto::UploadState::from(state) as i32),
                Some(state)
            );
        }
        assert_eq!(upload_state(0), None);
        assert_eq!(upload_state(99), None);
    }

    #[test]
    fn parts_keep_their_crc() {
        let p = proto::Part {
            index: 3,
            size: 10,
            etag: String::new(),
            crc64nvme: u64::MAX,
        };
        let part = storage::PartRef::from(&p);
        assert_eq!((part.index, part.crc64nvme, part.etag), (3, u64::MAX, None));
        for source in [
            storage::Sha256Source::Client,
            storage::Sha256Source::Declared,
            storage::Sha256Source::Server,
            storage::Sha256Source::Received,
        ] {
            assert_eq!(sha256_source(source.as_str()), Some(source));
        }
        assert_eq!(sha256_source(""), None);
    }
}
