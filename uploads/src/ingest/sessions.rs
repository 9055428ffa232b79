//! What the ingest of one chunk asks the sessions service (gRPC, DESIGN §3 steps 2–3):
//! `BeginChunk` (claim the chunk's lease, or renew a held one), `CommitChunk` (record it:
//! the conditional write that completes the set exactly once), `ReleaseChunk` (give the
//! lease back), and `GetUpload` (whether the upload is gone, so that `410` wins over a
//! request's own errors). Each answer that refuses the chunk becomes its [`IngestError`].

use sessions_api::proto::sessions_client::SessionsClient;
use sessions_api::proto::{
    BeginChunkOutcome, BeginChunkRequest, BeginChunkResponse, CommitChunkOutcome,
    CommitChunkRequest, CommitChunkResponse, GetUploadRequest, ReleaseChunkRequest,
};
use storage::WrittenChunk;
use tonic::transport::Channel;

use super::{ChunkRequest, Gone, IngestError, LeaseGuard};
use crate::WorkerState;

/// The calls about one chunk, with what every one of them names.
#[derive(Clone)]
pub(crate) struct ChunkCalls {
    client: SessionsClient<Channel>,
    owner_id: String,
    upload_id: String,
    index: u32,
    size: u64,
    sha256_chain: bool,
}

impl ChunkCalls {
    pub(crate) fn new(client: SessionsClient<Channel>, req: &ChunkRequest) -> Self {
        Self {
            client,
            owner_id: req.owner_id.clone(),
            upload_id: req.upload_id.clone(),
            index: req.index,
            size: req.len,
            sha256_chain: req.sha256_chain,
        }
    }

    /// `BeginChunk`: an empty `claim_id` asks for the lease, a held one renews it.
    pub(crate) async fn begin(&self, claim_id: &str) -> Result<BeginChunkResponse, IngestError> {
        let req = BeginChunkRequest {
            owner_id: self.owner_id.clone(),
            upload_id: self.upload_id.clone(),
            index: self.index,
            size: self.size,
            claim_id: claim_id.to_owned(),
            sha256_chain: self.sha256_chain,
        };
        self.client
            .clone()
            .begin_chunk(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(IngestError::from_status)
    }

    /// Renews the held lease `claim_id`; any answer but "claimed" means it is lost.
    pub(crate) async fn renew(&self, claim_id: &str) -> Result<(), IngestError> {
        let res = self.begin(claim_id).await?;
        match begin_outcome(&res) {
            BeginChunkOutcome::Claimed => Ok(()),
            BeginChunkOutcome::Gone => Err(IngestError::Gone(Gone::from_state(
                sessions_api::upload_state(res.state),
            ))),
            _ => {
                tracing::warn!(upload_id = %self.upload_id, index = self.index, outcome = res.outcome, "lost the chunk lease while writing");
                Err(IngestError::LeaseLost { index: self.index })
            }
        }
    }

    /// `CommitChunk` under `claim_id` of the chunk the store wrote (with the file's SHA-256
    /// chain after it, if it carried one); `Ok` only when the chunk is (now or already)
    /// recorded.
    pub(crate) async fn commit(
        &self,
        claim_id: &str,
        written: WrittenChunk,
        sha256_chain: Option<Vec<u8>>,
    ) -> Result<CommitChunkResponse, IngestError> {
        let req = CommitChunkRequest {
            owner_id: self.owner_id.clone(),
            upload_id: self.upload_id.clone(),
            index: self.index,
            claim_id: claim_id.to_owned(),
            size: self.size,
            etag: written.etag.unwrap_or_default(),
            crc64nvme: written.crc64nvme,
            sha256_chain: sha256_chain.unwrap_or_default(),
        };
        let res = self
            .client
            .clone()
            .commit_chunk(req)
            .await
            .map_err(IngestError::from_status)?
            .into_inner();
        let index = self.index;
        match CommitChunkOutcome::try_from(res.outcome).unwrap_or(CommitChunkOutcome::Unspecified) {
            CommitChunkOutcome::Stored | CommitChunkOutcome::AlreadyStored => Ok(res),
            CommitChunkOutcome::DigestConflict => Err(IngestError::DigestConflict { index }),
            CommitChunkOutcome::NotAccepting => Err(IngestError::NotRecorded { index }),
            CommitChunkOutcome::Gone => Err(IngestError::Gone(Gone::CancelledOrExpired)),
            CommitChunkOutcome::Unspecified => Err(IngestError::UnexpectedOutcome {
                call: "CommitChunk",
                outcome: res.outcome,
            }),
        }
    }

    /// A guard that gives the lease `claim_id` back unless disarmed (see [`LeaseGuard`]).
    pub(crate) fn lease(&self, claim_id: &str) -> LeaseGuard {
        let mut client = self.client.clone();
        let req = ReleaseChunkRequest {
            owner_id: self.owner_id.clone(),
            upload_id: self.upload_id.clone(),
            index: self.index,
            claim_id: claim_id.to_owned(),
        };
        LeaseGuard::new(async move {
            let (upload_id, index) = (req.upload_id.clone(), req.index);
            // Best effort: an unreleased lease simply runs out.
            if let Err(status) = client.release_chunk(req).await {
                tracing::warn!(%status, %upload_id, index, "releasing a chunk lease failed");
            }
        })
    }
}

pub(crate) fn begin_outcome(res: &BeginChunkResponse) -> BeginChunkOutcome {
    BeginChunkOutcome::try_from(res.outcome).unwrap_or(BeginChunkOutcome::Unspecified)
}

/// Why `BeginChunk` did not grant the lease (for any outcome but "claimed" and "already
/// stored", which are not refusals).
pub(crate) fn begin_refusal(res: &BeginChunkResponse, index: u32) -> IngestError {
    let upload_state = sessions_api::upload_state(res.state);
    match begin_outcome(res) {
        BeginChunkOutcome::DigestConflict => IngestError::DigestConflict { index },
        BeginChunkOutcome::InProgress => IngestError::ChunkInProgress { index },
        BeginChunkOutcome::NotAccepting => IngestError::NotAccepting {
            state: upload_state,
        },
        BeginChunkOutcome::Gone => IngestError::Gone(Gone::from_state(upload_state)),
        BeginChunkOutcome::AlreadyStored
        | BeginChunkOutcome::Claimed
        | BeginChunkOutcome::Unspecified => IngestError::UnexpectedOutcome {
            call: "BeginChunk",
            outcome: res.outcome,
        },
    }
}

/// `410` when the sessions service says the upload is cancelled, expired or unknown. Any
/// other answer (or none) is `None`: the caller's own error stands. Adapters ask this only
/// when a request fails its local checks, so that a good request costs no extra call.
pub async fn upload_gone(
    state: &WorkerState,
    owner_id: &str,
    upload_id: &str,
) -> Option<IngestError> {
    let req = GetUploadRequest {
        owner_id: owner_id.to_owned(),
        upload_id: upload_id.to_owned(),
        ..Default::default()
    };
    match state.sessions().get_upload(req).await {
        Ok(res) => {
            let upload_state = sessions_api::upload_state(res.into_inner().state)?;
            upload_state
                .is_gone()
                .then(|| IngestError::Gone(Gone::from_state(Some(upload_state))))
        }
        Err(status) if status.code() == tonic::Code::NotFound => Some(IngestError::UploadNotFound),
        Err(status) => {
            tracing::warn!(%status, %upload_id, "could not look up the upload's state");
            None
        }
    }
}
