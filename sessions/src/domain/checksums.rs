//! The whole-file checksums a client declares before its last chunk (DeclareChecksums): the
//! CRC-64/NVME and, if it computed one, the SHA-256 of the file, both from one pass over it.
//! The server verifies the stored file against the CRC at assembly, so the SHA-256 it
//! publishes is then the client's of the verified bytes (`Sha256Source::Client`).
//!
//! They are declared once, while the upload is uploading: the same checksums again answer
//! the upload whatever its state (an idempotent retry), others are refused. A SHA-256 other
//! than the one declared at creation means the client read another file than it announced:
//! the upload fails with the reason stated (and a retry of that declaration answers the
//! failed upload).

use lfusys_core::clock::now_ms;
use lfusys_core::digest::Crc64;
use lfusys_core::ids::{UploadId, UserId};
use lfusys_core::state::UploadState;
use storage::UploadRecord;

use super::{validate, Conflict, DomainError, DomainResult, SessionsDomain};

/// A client's whole-file checksums, as sent (checked by [`SessionsDomain::declare_checksums`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredChecksums {
    pub owner_id: UserId,
    pub upload_id: UploadId,
    /// The file's SHA-256 in hex; empty when the client declares none.
    pub sha256: String,
    pub crc64nvme: Crc64,
}

/// How a declaration meets the upload as read.
enum Verdict {
    /// Nothing to write: answer the upload as read.
    Upload,
    /// Nothing to write: refuse the declaration.
    Refuse(DomainError),
    /// The SHA-256 differs from the creation's: fail the upload with this reason.
    Fail(String),
    /// Record the checksums.
    Declare,
}

impl SessionsDomain {
    /// Records an owner's whole-file checksums (see the module's description); answers the
    /// upload, failed when the SHA-256 is not the one declared at creation.
    pub async fn declare_checksums(&self, req: DeclaredChecksums) -> DomainResult<UploadRecord> {
        let mut rec = self.owned_upload(&req.owner_id, &req.upload_id).await?;
        let sha256 = validate::optional_sha256_hex("sha256", &req.sha256)?;
        // A declaration lost to a concurrent one or a state change: read again, answer once.
        for _ in 0..2 {
            match verdict(&rec, sha256.as_deref(), req.crc64nvme) {
                Verdict::Upload => return Ok(rec),
                Verdict::Refuse(e) => return Err(e),
                Verdict::Fail(reason) => return self.fail_upload(&rec.upload_id, &reason).await,
                Verdict::Declare => {}
            }
            let applied = self
                .state
                .metadata
                .declare_checksums(&rec.upload_id, sha256.as_deref(), req.crc64nvme, now_ms())
                .await
                .map_err(DomainError::storage("recording the checksums"))?;
            rec = self.any_upload(&rec.upload_id).await?;
            if applied {
                tracing::info!(upload_id = %rec.upload_id, sha256 = sha256.is_some(), "whole-file checksums declared");
                return Ok(rec);
            }
        }
        Err(DomainError::ChangedConcurrently)
    }
}

/// What a declaration of `sha256` (lowercase, if any) and `crc64nvme` does to `rec`.
fn verdict(rec: &UploadRecord, sha256: Option<&str>, crc64nvme: Crc64) -> Verdict {
    if let Some(declared) = rec.crc64nvme {
        // No SHA-256 in the request does not contradict one the upload holds.
        let same_sha = sha256.is_none_or(|s| rec.sha256.as_deref() == Some(s));
        return if declared == crc64nvme && same_sha {
            Verdict::Upload
        } else {
            Verdict::Refuse(DomainError::ChecksumsDeclared)
        };
    }
    // A SHA-256 the file must have is checked against the one computed with the CRC: a
    // declaration without one would leave the File's SHA-256 vouched for by no pass.
    if rec.sha256.is_some() && sha256.is_none() && rec.state == UploadState::Uploading {
        return Verdict::Refuse(DomainError::InvalidArgument {
            field: "sha256",
            message: "this upload was created with a sha256: declare the SHA-256 computed with the CRC-64/NVME".to_owned(),
        });
    }
    let mismatch = match (rec.sha256.as_deref(), sha256) {
        (Some(created), Some(computed)) if created != computed => {
            Some(mismatch_reason(created, computed))
        }
        _ => None,
    };
    if let Some(reason) = mismatch {
        // The retry of the declaration that failed the upload: the same answer.
        if rec.state == UploadState::Failed && rec.error.as_deref() == Some(reason.as_str()) {
            return Verdict::Upload;
        }
        if rec.state == UploadState::Uploading {
            return Verdict::Fail(reason);
        }
    }
    if rec.state != UploadState::Uploading {
        return Verdict::Refuse(Conflict::NotUploading(rec.state).into());
    }
    Verdict::Declare
}

/// The failure reason of an upload whose client computed another SHA-256 than it declared.
fn mismatch_reason(created: &str, computed: &str) -> String {
    format!(
        "whole-file SHA-256 mismatch: declared {created} at creation, the client computed {computed} while reading the file"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(state: UploadState, sha256: Option<&str>, crc64nvme: Option<Crc64>) -> UploadRecord {
        super::super::test_upload(state, sha256, crc64nvme)
    }

    fn answered_ok(v: &Verdict) -> bool {
        matches!(v, Verdict::Upload)
    }

    #[test]
    fn declarations_meet_the_upload() {
        use UploadState::{Assembling, Failed, Uploading};
        let (x, y) = ("aa".repeat(32), "bb".repeat(32));
        let (x, y) = (x.as_str(), y.as_str());
        assert!(matches!(
            verdict(&rec(Uploading, None, None), Some(x), 1),
            Verdict::Declare
        ));
        assert!(matches!(
            verdict(&rec(Uploading, Some(x), None), Some(x), 1),
            Verdict::Declare
        ));
        // Created with a SHA-256: the declaration must bind one to the CRC.
        assert!(matches!(
            verdict(&rec(Uploading, Some(x), None), None, 1),
            Verdict::Refuse(DomainError::InvalidArgument {
                field: "sha256",
                ..
            })
        ));
        // Declared already: the same again whatever the state, others refused.
        assert!(answered_ok(&verdict(
            &rec(Assembling, Some(x), Some(1)),
            Some(x),
            1
        )));
        assert!(answered_ok(&verdict(
            &rec(Uploading, Some(x), Some(1)),
            None,
            1
        )));
        for (sha, crc) in [(Some(x), 2), (Some(y), 1)] {
            assert!(matches!(
                verdict(&rec(Uploading, Some(x), Some(1)), sha, crc),
                Verdict::Refuse(DomainError::ChecksumsDeclared)
            ));
        }
        // Not uploading.
        assert!(matches!(
            verdict(&rec(Assembling, None, None), Some(x), 1),
            Verdict::Refuse(DomainError::Conflict(Conflict::NotUploading(Assembling)))
        ));
        // Another SHA-256 than the creation's fails the upload, once.
        let Verdict::Fail(reason) = verdict(&rec(Uploading, Some(x), None), Some(y), 1) else {
            panic!("not failed");
        };
        assert_eq!(
            reason,
            format!("whole-file SHA-256 mismatch: declared {x} at creation, the client computed {y} while reading the file")
        );
        let mut failed = rec(Failed, Some(x), None);
        failed.error = Some(reason);
        assert!(answered_ok(&verdict(&failed, Some(y), 1)));
        failed.error = Some("something else".into());
        assert!(matches!(
            verdict(&failed, Some(y), 1),
            Verdict::Refuse(DomainError::Conflict(Conflict::NotUploading(Failed)))
        ));
    }
}
