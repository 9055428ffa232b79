//! Assembly (DESIGN §3.4): an assembler takes the job of a completed set, reads the upload's
//! parts (each with its CRC-64/NVME), commits the blob once the blob store has verified it
//! against the whole file's CRC (the parts' CRCs combined, and the one the client declared,
//! if it did), and publishes the File with that CRC — or fails the upload with the reason
//! stated. The File's SHA-256 is the one the client declared or, when it declared none, the
//! one the workers hashed as they received the file in order (the last chunk's SHA-256 chain,
//! see `chunks`); who vouches for it is its `sha256_source`. Redelivered or duplicated jobs
//! are harmless: the File id derives from the upload id and every step is idempotent. The
//! callers are workers: these rules take no owner.

use lfusys_core::clock::now_ms;
use lfusys_core::digest::{to_hex, Crc64};
use lfusys_core::failpoint;
use lfusys_core::ids::{self, FileId, UploadId};
use lfusys_core::jobs::AssemblyJob;
use lfusys_core::sha256_chain::Sha256Chain;
use lfusys_core::state::UploadState;
use storage::{ChunkRecord, Concat, FileRecord, Sha256Source, StoreError, UploadRecord};

use super::cancel::release_storage;
use super::{transitioned, validate, Conflict, DomainError, DomainResult, SessionsDomain};
use crate::SessionsState;

/// Longer failure reasons are cut: they are shown to the owner, not a log.
const MAX_REASON_BYTES: usize = 1000;

/// What an assembler needs to commit an upload's blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssemblyPlan {
    pub upload: UploadRecord,
    /// The recorded chunks, ascending: the parts to commit.
    pub chunks: Vec<ChunkRecord>,
    /// The File the upload becomes.
    pub file_id: FileId,
    /// Where the blob is committed.
    pub blob_key: String,
}

impl SessionsDomain {
    /// The upload and its parts, whatever its state (the assembler decides).
    pub async fn get_assembly(&self, upload_id: &UploadId) -> DomainResult<AssemblyPlan> {
        let upload = self.any_upload(upload_id).await?;
        let chunks = self.chunks(&upload.upload_id).await?;
        let file_id = ids::file_id_for_upload(&upload.upload_id);
        Ok(AssemblyPlan {
            upload,
            chunks,
            blob_key: ids::blob_key_for_file(&file_id),
            file_id,
        })
    }

    /// Publishes the File of an assembled upload (moving it to completed), once: a
    /// redelivered job gets the same File again. The assembled `size` must be the upload's,
    /// and `crc64nvme` (the whole file's, which the blob store verified the blob against) the
    /// one the client declared, if it did.
    pub async fn complete_assembly(
        &self,
        upload_id: &UploadId,
        crc64nvme: Crc64,
        size: u64,
        copied_sha256: Option<&str>,
    ) -> DomainResult<FileRecord> {
        let rec = self.any_upload(upload_id).await?;
        let file_id = ids::file_id_for_upload(&rec.upload_id);
        match rec.state {
            UploadState::Assembling => {}
            UploadState::Completed => {
                // A redelivered job: the same File again (its partials' release, if a crash
                // cut it short, finished).
                self.release_parts(&rec).await;
                return self
                    .state
                    .metadata
                    .get_file(&file_id)
                    .await
                    .map_err(DomainError::storage("reading the file"))?
                    .ok_or(DomainError::Conflict(Conflict::FileDeletedSince));
            }
            other => return Err(Conflict::NotAssembling(other).into()),
        }
        check_assembled(&rec, crc64nvme, size)?;
        let found = match (&rec.concat, copied_sha256) {
            (Concat::Final(_), Some(copied)) => {
                copied_file_sha256(&rec, validate::sha256_hex("sha256", copied)?)
            }
            (Concat::Final(_), None) => {
                return Err(DomainError::invalid(
                    "sha256",
                    "a final upload's assembler hashes the bytes it copies: send their SHA-256",
                ))
            }
            _ => {
                let last = match (rec.crc64nvme.is_none(), rec.total_chunks.checked_sub(1)) {
                    (true, Some(index)) => self.chunk(&rec.upload_id, index).await?,
                    _ => None,
                };
                file_sha256(&rec, last.as_ref())
            }
        };
        let (sha256, sha256_source) = match found {
            Ok(found) => found,
            Err(reason) => {
                // The bytes received are not the file the client described: never published.
                self.fail_upload(&rec.upload_id, &reason).await?;
                return Err(Conflict::AssembledSha256Differs.into());
            }
        };
        let now = now_ms();
        let file = FileRecord {
            blob_key: ids::blob_key_for_file(&file_id),
            file_id,
            owner_id: rec.owner_id.clone(),
            upload_id: rec.upload_id.clone(),
            name: rec.name.clone(),
            size: rec.size,
            content_type: rec.content_type.clone(),
            sha256,
            sha256_source,
            crc64nvme: Some(crc64nvme),
            created_at_ms: now,
        };
        let published = self
            .state
            .metadata
            .publish_file(&file, now)
            .await
            .map_err(DomainError::storage("publishing the file"))?;
        transitioned(&self.state, &rec.upload_id, UploadState::Completed);
        tracing::info!(upload_id = %rec.upload_id, file_id = %published.file_id, size = published.size, "file published");
        self.release_parts(&rec).await;
        // The chunk records stay until the file is deleted: a client retrying a chunk after
        // completion still gets "already stored", and the upload's status stays complete.
        Ok(published)
    }

    /// Fails an unfinished upload with `reason` (shown to the owner) and releases its
    /// storage, including a blob an assembler may already have committed. Failing a failed
    /// upload again answers it and retries the release.
    pub async fn fail_upload(
        &self,
        upload_id: &UploadId,
        reason: &str,
    ) -> DomainResult<UploadRecord> {
        let reason = cut(reason.trim());
        if reason.is_empty() {
            return Err(DomainError::invalid("reason", "a reason is required"));
        }
        let rec = self.any_upload(upload_id).await?;
        if rec.state.is_unfinished() {
            let applied = self
                .state
                .metadata
                .transition(
                    &rec.upload_id,
                    &[UploadState::Uploading, UploadState::Assembling],
                    UploadState::Failed,
                    Some(reason),
                    now_ms(),
                )
                .await
                .map_err(DomainError::storage("failing the upload"))?;
            if applied {
                transitioned(&self.state, &rec.upload_id, UploadState::Failed);
                tracing::warn!(upload_id = %rec.upload_id, reason, "upload failed");
            }
        }
        let rec = self.any_upload(upload_id).await?;
        if rec.state != UploadState::Failed {
            return Err(Conflict::NotFailable(rec.state).into());
        }
        // Also on a repeated call: heals a release that failed halfway.
        release_storage(&self.state, &rec, true)
            .await
            .map_err(DomainError::storage("releasing the upload's storage"))?;
        Ok(rec)
    }
}

/// The assembled file must be the upload's: its size, and the whole-file CRC the client
/// declared, if it did (the assembler compares them first and fails the upload; this guards
/// against publishing what it did not).
fn check_assembled(rec: &UploadRecord, crc64nvme: Crc64, size: u64) -> DomainResult<()> {
    if size != rec.size {
        return Err(Conflict::AssembledSizeDiffers {
            assembled: size,
            expected: rec.size,
        }
        .into());
    }
    if rec.crc64nvme.is_some_and(|declared| declared != crc64nvme) {
        return Err(Conflict::AssembledChecksumDiffers.into());
    }
    Ok(())
}

/// The SHA-256 a File gets from its upload and who vouches for it: the client, when it
/// declared the whole-file CRC-64/NVME too (computed in the same pass, and the server verified
/// that CRC). Otherwise the chain of the `last` chunk finished, when it covers the whole file
/// (the workers hashed the bytes as received): it must be the SHA-256 declared at creation, if
/// one was (the IETF draft's `Repr-Digest`) — `Err` with the reason when not. Without a chain,
/// a declared SHA-256 is vouched for by no one. None otherwise.
fn file_sha256(
    rec: &UploadRecord,
    last: Option<&ChunkRecord>,
) -> Result<(Option<String>, Option<Sha256Source>), String> {
    if let (Some(sha), Some(_)) = (&rec.sha256, rec.crc64nvme) {
        return Ok((Some(sha.clone()), Some(Sha256Source::Client)));
    }
    let received = last
        .and_then(|c| c.sha256_chain.as_deref())
        .and_then(|bytes| Sha256Chain::from_bytes(bytes).ok())
        .filter(|chain| chain.len() == rec.size)
        .map(|chain| to_hex(&chain.finish()));
    match (&rec.sha256, received) {
        (Some(declared), Some(received)) if *declared != received => Err(format!(
            "whole-file SHA-256 mismatch: the client declared {declared}, the bytes received hash to {received}"
        )),
        (_, Some(received)) => Ok((Some(received), Some(Sha256Source::Received))),
        (Some(declared), None) => Ok((Some(declared.clone()), Some(Sha256Source::Declared))),
        (None, None) => Ok((None, None)),
    }
}

/// The SHA-256 of a final upload: the one its assembler hashed as it copied the partials'
/// bytes (`Received`); a SHA-256 declared at creation must be it.
fn copied_file_sha256(
    rec: &UploadRecord,
    copied: String,
) -> Result<(Option<String>, Option<Sha256Source>), String> {
    match &rec.sha256 {
        Some(declared) if *declared != copied => Err(format!(
            "whole-file SHA-256 mismatch: the client declared {declared}, the partial uploads' bytes hash to {copied}"
        )),
        _ => Ok((Some(copied), Some(Sha256Source::Received))),
    }
}

/// Sends the assembly job of an assembling upload (dedup id = upload id, so a second send is
/// dropped), then takes the upload out of the outbox. A crash or an error before the mark
/// leaves it in the outbox, and the relay (`crate::outbox`) sends it again.
pub(crate) async fn send_assembly_job(
    state: &SessionsState,
    upload_id: &UploadId,
) -> Result<(), StoreError> {
    let job = AssemblyJob {
        upload_id: upload_id.to_owned(),
    };
    state.queue.send(upload_id, &job.to_body()).await?;
    metrics::counter!("lfusys_assembly_jobs_enqueued_total").increment(1);
    failpoint::hit(failpoint::AFTER_JOB_SENT);
    state.metadata.mark_job_sent(upload_id).await
}

/// Fails an upload whose assembly job was dead-lettered (see `crate::dead_letters`), if it is
/// still assembling, and releases its storage (also when it was failed before: heals a release
/// that failed halfway). Returns whether the upload is failed; an unknown upload, or one no
/// longer assembling (it completed after all, or is gone), is left alone.
pub(crate) async fn fail_dead_lettered(
    state: &SessionsState,
    upload_id: &UploadId,
    reason: &str,
) -> Result<bool, StoreError> {
    let Some(rec) = state.metadata.get_upload(upload_id).await? else {
        return Ok(false);
    };
    if rec.state == UploadState::Assembling
        && state
            .metadata
            .transition(
                upload_id,
                &[UploadState::Assembling],
                UploadState::Failed,
                Some(reason),
                now_ms(),
            )
            .await?
    {
        transitioned(state, upload_id, UploadState::Failed);
        tracing::warn!(%upload_id, %reason, "upload failed: its assembly job was dead-lettered");
    }
    let Some(rec) = state.metadata.get_upload(upload_id).await? else {
        return Ok(false);
    };
    if rec.state != UploadState::Failed {
        return Ok(false);
    }
    release_storage(state, &rec, true).await?;
    Ok(true)
}

fn cut(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(sha256: Option<&str>, crc64nvme: Option<Crc64>) -> UploadRecord {
        super::super::test_upload(UploadState::Assembling, sha256, crc64nvme)
    }

    #[test]
    fn the_sha256_source_says_who_vouches() {
        let sha = "ab".repeat(32);
        let source = |rec: &UploadRecord| file_sha256(rec, None).unwrap().1;
        assert_eq!(
            source(&rec(Some(&sha), Some(7))),
            Some(Sha256Source::Client)
        );
        assert_eq!(source(&rec(Some(&sha), None)), Some(Sha256Source::Declared));
        assert_eq!(file_sha256(&rec(None, Some(7)), None), Ok((None, None)));
        assert_eq!(file_sha256(&rec(None, None), None), Ok((None, None)));
    }

    #[test]
    fn without_a_declared_sha256_the_last_chunk_s_chain_gives_it() {
        let upload = rec(None, None);
        let data = vec![5u8; usize::try_from(upload.size).unwrap()];
        let mut chain = Sha256Chain::new();
        chain.update(&data);
        let last = |chain: Option<Vec<u8>>| ChunkRecord {
            index: upload.total_chunks - 1,
            size: 1,
            crc64nvme: 0,
            etag: None,
            sha256_chain: chain,
        };
        let expected = to_hex(&<sha2::Sha256 as sha2::Digest>::digest(&data).into());
        assert_eq!(
            file_sha256(&upload, Some(&last(Some(chain.to_bytes())))),
            Ok((Some(expected.clone()), Some(Sha256Source::Received)))
        );
        // A chain that stops short of the file's end, a broken one, or none: no SHA-256.
        let mut short = Sha256Chain::new();
        short.update(&data[1..]);
        for broken in [Some(short.to_bytes()), Some(vec![1, 2]), None] {
            assert_eq!(file_sha256(&upload, Some(&last(broken))), Ok((None, None)));
        }
        // A declared SHA-256 (Repr-Digest) is checked against the chain: the same is received
        // (verified), another fails the upload with both named.
        assert_eq!(
            file_sha256(
                &rec(Some(&expected), None),
                Some(&last(Some(chain.to_bytes())))
            ),
            Ok((Some(expected.clone()), Some(Sha256Source::Received)))
        );
        let other = "ab".repeat(32);
        let why = file_sha256(
            &rec(Some(&other), None),
            Some(&last(Some(chain.to_bytes()))),
        )
        .unwrap_err();
        assert!(why.contains(&other) && why.contains(&expected), "{why}");
    }

    #[test]
    fn the_assembled_file_is_the_upload_s() {
        assert!(check_assembled(&rec(None, None), 1, 10).is_ok());
        assert!(check_assembled(&rec(None, Some(7)), 7, 10).is_ok());
        assert!(matches!(
            check_assembled(&rec(None, Some(7)), 8, 10),
            Err(DomainError::Conflict(Conflict::AssembledChecksumDiffers))
        ));
        assert!(matches!(
            check_assembled(&rec(None, None), 1, 11),
            Err(DomainError::Conflict(Conflict::AssembledSizeDiffers { .. }))
        ));
    }

    #[test]
    fn reasons_are_cut_on_char_boundaries() {
        assert_eq!(cut("short"), "short");
        let long = "é".repeat(MAX_REASON_BYTES);
        let c = cut(&long);
        assert!(c.len() <= MAX_REASON_BYTES && c.len() >= MAX_REASON_BYTES - 1);
    }
}
