//! What can go wrong in a sessions rule, in domain terms. The gRPC layer maps it to a status
//! (`crate::grpc::status`); the rules never speak gRPC.

use lfusys_core::plan::PlanError;
use lfusys_core::state::UploadState;
use storage::StoreError;

/// The kind of record a [`DomainError::NotFound`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Upload,
    File,
}

impl Subject {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::File => "file",
        }
    }
}

/// Why a request does not fit the current state of an upload or file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("the upload is {0} and can no longer be cancelled")]
    NotCancellable(UploadState),
    #[error("the upload is {0}, not assembling")]
    NotAssembling(UploadState),
    #[error("the upload is {0} and cannot be failed")]
    NotFailable(UploadState),
    #[error("the upload completed but its file has since been deleted")]
    FileDeletedSince,
    #[error(
        "the assembled file is {assembled} bytes but the upload is {expected} bytes; fail the upload instead"
    )]
    AssembledSizeDiffers { assembled: u64, expected: u64 },
    #[error(
        "the assembled file's CRC-64/NVME differs from the one the client declared; fail the upload instead"
    )]
    AssembledChecksumDiffers,
    #[error(
        "the bytes received do not hash to the SHA-256 the client declared; the upload is failed"
    )]
    AssembledSha256Differs,
    #[error("the upload is {0}: whole-file checksums are declared while it is uploading")]
    NotUploading(UploadState),
    #[error("the upload is {0}: its length is declared while it is uploading")]
    LengthNotDeclarable(UploadState),
    #[error("the upload's length is {0} bytes; it cannot change")]
    LengthSet(u64),
    #[error("partial upload {upload_id} is {state}; a final upload is made of partial uploads that are still uploading")]
    PartialNotUploading {
        upload_id: String,
        state: UploadState,
    },
    #[error("partial upload {upload_id} has {received} of its {size} bytes; a final upload takes it once every byte is stored")]
    PartialIncomplete {
        upload_id: String,
        received: u64,
        size: u64,
    },
    #[error(
        "partial upload {0} has no length yet; declare it (Upload-Length) before the final upload"
    )]
    PartialLengthDeferred(String),
}

/// The failure of a sessions rule.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The record does not exist, or belongs to someone else: for anyone but its owner an
    /// upload or a file does not exist (DESIGN §3), so "not yours" is "not found" too.
    #[error("{} not found", .0.as_str())]
    NotFound(Subject),
    /// A request field that can never be accepted; `message` is shown to the caller.
    #[error("{message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    /// The upload is larger than the deployment accepts.
    #[error("{}", PlanError::TooLarge { size: *.size, max: *.max })]
    TooLarge { size: u64, max: u64 },
    /// The request does not fit the upload's (or file's) current state.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// Other whole-file checksums than the request's are declared for the upload already
    /// (they are declared once).
    #[error("other whole-file checksums are declared for this upload already")]
    ChecksumsDeclared,
    /// The upload kept changing state under the request; retrying may succeed.
    #[error("the upload changed state concurrently; try again")]
    ChangedConcurrently,
    /// A store failed while `context` (e.g. "reading the upload"); `source` says how, and
    /// whether it is transient ([`StoreError::Unavailable`]).
    #[error("{context} failed: {source}")]
    Storage {
        context: &'static str,
        #[source]
        source: StoreError,
    },
}

impl DomainError {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            message: message.into(),
        }
    }

    /// Wraps a store failure that happened while `context`: `.map_err(DomainError::storage("…"))`.
    pub(crate) fn storage(context: &'static str) -> impl FnOnce(StoreError) -> Self {
        move |source| Self::Storage { context, source }
    }
}

impl From<PlanError> for DomainError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::EmptyOrNegative => Self::invalid("size", e.to_string()),
            PlanError::TooLarge { size, max } => Self::TooLarge { size, max },
        }
    }
}

pub type DomainResult<T> = Result<T, DomainError>;
