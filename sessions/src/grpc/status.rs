//! The one mapping from a [`DomainError`] to a gRPC status. The codes are part of the
//! contract: the gateway and the upload workers turn them into HTTP statuses.
//!
//! | domain error | code | message |
//! |---|---|---|
//! | `NotFound(Upload)` / `NotFound(File)` | `NOT_FOUND` | `upload not found` / `file not found` |
//! | `InvalidArgument` | `INVALID_ARGUMENT` | its message |
//! | `TooLarge` | `RESOURCE_EXHAUSTED` | the plan's message |
//! | `Conflict(_)` | `FAILED_PRECONDITION` | the conflict's message |
//! | `ChecksumsDeclared` | `ALREADY_EXISTS` | `other whole-file checksums are declared for this upload already` |
//! | `ChangedConcurrently` | `ABORTED` | `the upload changed state concurrently; try again` |
//! | `Storage` | by the store error, see [`store_status`] | |

use storage::StoreError;
use tonic::Status;

use crate::domain::DomainError;

impl From<DomainError> for Status {
    fn from(err: DomainError) -> Self {
        match err {
            DomainError::Storage { context, source } => store_status(context, source),
            e @ DomainError::NotFound(_) => Status::not_found(e.to_string()),
            e @ DomainError::InvalidArgument { .. } => Status::invalid_argument(e.to_string()),
            e @ DomainError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
            DomainError::Conflict(c) => Status::failed_precondition(c.to_string()),
            e @ DomainError::ChecksumsDeclared => Status::already_exists(e.to_string()),
            e @ DomainError::ChangedConcurrently => Status::aborted(e.to_string()),
        }
    }
}

/// Maps a store failure: transient ones stay retryable (`UNAVAILABLE`), unexpected ones are
/// logged in full and answered without internals.
fn store_status(context: &str, err: StoreError) -> Status {
    match err {
        StoreError::NotFound(what) => Status::not_found(what),
        StoreError::Conflict(what) => Status::failed_precondition(what),
        StoreError::Unavailable { message: what, .. } => {
            tracing::warn!(context, error = %what, "storage unavailable");
            Status::unavailable(format!("storage is unavailable: {what}"))
        }
        e @ (StoreError::DigestMismatch | StoreError::LengthMismatch { .. }) => {
            Status::invalid_argument(e.to_string())
        }
        // A blob store's refusal to commit parts that do not make the expected file.
        e @ StoreError::ChecksumMismatch(_) => Status::failed_precondition(e.to_string()),
        StoreError::Full { message: what, .. } => {
            tracing::warn!(context, error = %what, "storage full");
            service_kit::problem::storage_full_status(format!(
                "{context} failed: the storage is full; retry once space is freed"
            ))
        }
        e @ (StoreError::Body { .. } | StoreError::Other { .. }) => {
            tracing::error!(context, error = %e, "storage error");
            Status::internal(format!("{context} failed: internal storage error"))
        }
    }
}

#[cfg(test)]
mod tests {
    use lfusys_core::plan::PlanError;
    use lfusys_core::state::UploadState;
    use tonic::Code;

    use super::*;
    use crate::domain::{Conflict, Subject};

    fn status(e: DomainError) -> (Code, String) {
        let s = Status::from(e);
        (s.code(), s.message().to_owned())
    }

    fn store(e: StoreError) -> (Code, String) {
        status(DomainError::storage("test")(e))
    }

    #[test]
    fn store_errors() {
        let code = |e| store(e).0;
        assert_eq!(code(StoreError::NotFound("x".into())), Code::NotFound);
        assert_eq!(
            code(StoreError::Conflict("x".into())),
            Code::FailedPrecondition
        );
        assert_eq!(code(StoreError::unavailable("x")), Code::Unavailable);
        let full = Status::from(DomainError::storage("recording the upload")(
            StoreError::full_from("disk", std::io::Error::from_raw_os_error(28)),
        ));
        assert!(service_kit::problem::is_storage_full(&full), "{full:?}");
        assert!(!service_kit::problem::is_storage_full(&Status::from(
            DomainError::TooLarge { size: 2, max: 1 }
        )));
        assert_eq!(code(StoreError::other("x")), Code::Internal);
        assert_eq!(code(StoreError::body("x")), Code::Internal);
        assert_eq!(code(StoreError::DigestMismatch), Code::InvalidArgument);
        assert_eq!(
            code(StoreError::ChecksumMismatch("part 3".into())),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(StoreError::LengthMismatch {
                expected: 1,
                actual: 2
            }),
            Code::InvalidArgument
        );
        let (_, msg) = store(StoreError::other("secret path /var/x"));
        assert!(!msg.contains("secret"));
        assert_eq!(msg, "test failed: internal storage error");
        assert_eq!(
            store(StoreError::unavailable("busy")).1,
            "storage is unavailable: busy"
        );
        assert_eq!(store(StoreError::NotFound("x".into())).1, "x");
    }

    #[test]
    fn domain_errors_keep_their_codes_and_messages() {
        use UploadState::{Assembling, Completed};
        let cases = [
            (
                DomainError::NotFound(Subject::Upload),
                Code::NotFound,
                "upload not found",
            ),
            (
                DomainError::NotFound(Subject::File),
                Code::NotFound,
                "file not found",
            ),
            (
                DomainError::invalid("owner_id", "owner_id is required"),
                Code::InvalidArgument,
                "owner_id is required",
            ),
            (
                PlanError::EmptyOrNegative.into(),
                Code::InvalidArgument,
                "the size must be a positive number of bytes",
            ),
            (
                PlanError::TooLarge { size: 10, max: 5 }.into(),
                Code::ResourceExhausted,
                "the file is 10 bytes; the largest accepted upload is 5 bytes",
            ),
            (
                Conflict::NotCancellable(Assembling).into(),
                Code::FailedPrecondition,
                "the upload is assembling and can no longer be cancelled",
            ),
            (
                Conflict::NotAssembling(Completed).into(),
                Code::FailedPrecondition,
                "the upload is completed, not assembling",
            ),
            (
                Conflict::NotFailable(Completed).into(),
                Code::FailedPrecondition,
                "the upload is completed and cannot be failed",
            ),
            (
                Conflict::FileDeletedSince.into(),
                Code::FailedPrecondition,
                "the upload completed but its file has since been deleted",
            ),
            (
                Conflict::AssembledSizeDiffers {
                    assembled: 3,
                    expected: 4,
                }
                .into(),
                Code::FailedPrecondition,
                "the assembled file is 3 bytes but the upload is 4 bytes; fail the upload instead",
            ),
            (
                Conflict::AssembledChecksumDiffers.into(),
                Code::FailedPrecondition,
                "the assembled file's CRC-64/NVME differs from the one the client declared; fail the upload instead",
            ),
            (
                Conflict::NotUploading(Assembling).into(),
                Code::FailedPrecondition,
                "the upload is assembling: whole-file checksums are declared while it is uploading",
            ),
            (
                DomainError::ChecksumsDeclared,
                Code::AlreadyExists,
                "other whole-file checksums are declared for this upload already",
            ),
            (
                DomainError::ChangedConcurrently,
                Code::Aborted,
                "the upload changed state concurrently; try again",
            ),
        ];
        for (err, code, message) in cases {
            let shown = format!("{err:?}");
            assert_eq!(status(err), (code, message.to_owned()), "{shown}");
        }
    }
}
