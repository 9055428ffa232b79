//! The gRPC layer of `sessions-api/proto/sessions.proto`: each call decodes its request into
//! the input of a domain use case ([`crate::domain`]), calls it, and encodes the answer;
//! a domain error becomes a status through the one mapping of [`status`].

mod encode;
mod status;

use lfusys_core::ids::ClaimId;
use sessions_api::proto::sessions_server::Sessions;
use sessions_api::proto::{
    self, Assembly, BeginChunkRequest, BeginChunkResponse, CancelUploadRequest, CommitChunkRequest,
    CommitChunkResponse, CompleteAssemblyRequest, CreateUploadRequest, DeclareChecksumsRequest,
    DeclareLengthRequest, DeleteFileRequest, DeleteFileResponse, FailUploadRequest,
    GetAssemblyRequest, GetFileRequest, GetUploadRequest, ListFilesRequest, ListFilesResponse,
    ListUploadsRequest, ListUploadsResponse, ReleaseChunkRequest, ReleaseChunkResponse,
};
use storage::Concat;
use tonic::{Request, Response, Status};

use crate::domain::checksums::DeclaredChecksums;
use crate::domain::chunks::{ClaimRequest, CommitRequest};
use crate::domain::create::NewUpload;
use crate::domain::SessionsDomain;
use crate::SessionsState;
use encode::Received;

/// Implements [`Sessions`] over the [`SessionsDomain`] of a [`SessionsState`].
#[derive(Debug, Clone)]
pub struct SessionsService {
    domain: SessionsDomain,
}

impl SessionsService {
    pub fn new(state: SessionsState) -> Self {
        Self {
            domain: SessionsDomain::new(state),
        }
    }
}

/// A claim id on the wire: empty is none.
fn claim(wire: &str) -> Option<ClaimId> {
    sessions_api::optional(wire).map(ClaimId::from)
}

fn upload_without_chunks(rec: &storage::UploadRecord) -> Response<proto::Upload> {
    Response::new(encode::upload(rec, &Received::Chunks(&[])))
}

#[tonic::async_trait]
impl Sessions for SessionsService {
    async fn create_upload(
        &self,
        request: Request<CreateUploadRequest>,
    ) -> Result<Response<proto::Upload>, Status> {
        let req = request.into_inner();
        let rec = self
            .domain
            .create_upload(NewUpload {
                owner_id: req.owner_id.into(),
                name: req.name,
                size: req.size,
                content_type: req.content_type,
                sha256: req.sha256,
                length_deferred: req.length_deferred,
                concat: if req.concat_parts.is_empty() {
                    if req.partial {
                        Concat::Partial
                    } else {
                        Concat::None
                    }
                } else {
                    Concat::Final(req.concat_parts.into_iter().map(Into::into).collect())
                },
            })
            .await?;
        Ok(upload_without_chunks(&rec))
    }

    async fn get_upload(
        &self,
        request: Request<GetUploadRequest>,
    ) -> Result<Response<proto::Upload>, Status> {
        let req = request.into_inner();
        let (owner_id, upload_id) = (req.owner_id.into(), req.upload_id.into());
        let status = if req.wait_ms == 0 {
            self.domain.get_upload(&owner_id, &upload_id).await?
        } else {
            let while_state = sessions_api::upload_state(req.while_state);
            let wait = std::time::Duration::from_millis(u64::from(req.wait_ms));
            self.domain
                .wait_for_upload(&owner_id, &upload_id, while_state, wait)
                .await?
        };
        Ok(Response::new(encode::upload(
            &status.upload,
            &Received::Chunks(&status.chunks),
        )))
    }

    async fn list_uploads(
        &self,
        request: Request<ListUploadsRequest>,
    ) -> Result<Response<ListUploadsResponse>, Status> {
        let req = request.into_inner();
        let uploads = self.domain.list_uploads(&req.owner_id.into()).await?;
        let items = uploads
            .iter()
            .map(|u| encode::upload(&u.upload, &Received::BytesOnly(u.bytes_received)))
            .collect();
        Ok(Response::new(ListUploadsResponse { items }))
    }

    async fn cancel_upload(
        &self,
        request: Request<CancelUploadRequest>,
    ) -> Result<Response<proto::Upload>, Status> {
        let req = request.into_inner();
        let rec = self
            .domain
            .cancel_upload(&req.owner_id.into(), &req.upload_id.into())
            .await?;
        Ok(upload_without_chunks(&rec))
    }

    async fn begin_chunk(
        &self,
        request: Request<BeginChunkRequest>,
    ) -> Result<Response<BeginChunkResponse>, Status> {
        let req = request.into_inner();
        let answer = self
            .domain
            .begin_chunk(ClaimRequest {
                owner_id: req.owner_id.into(),
                upload_id: req.upload_id.into(),
                index: req.index,
                size: req.size,
                claim_id: claim(&req.claim_id),
                sha256_chain: req.sha256_chain,
            })
            .await?;
        let mut resp = BeginChunkResponse {
            claim_id: answer.claim_id.map(String::from).unwrap_or_default(),
            lease_expires_at_ms: answer.lease_expires_at_ms,
            received_count: answer.received_count,
            total_chunks: answer.total_chunks,
            storage_handle: answer.storage_handle.unwrap_or_default(),
            state: encode::state(answer.state),
            stored_crc64nvme: answer.stored_crc64nvme.unwrap_or_default(),
            sha256_chain: answer.sha256_chain,
            ..Default::default()
        };
        resp.set_outcome(encode::claim_verdict(answer.verdict));
        Ok(Response::new(resp))
    }

    async fn commit_chunk(
        &self,
        request: Request<CommitChunkRequest>,
    ) -> Result<Response<CommitChunkResponse>, Status> {
        let req = request.into_inner();
        let answer = self
            .domain
            .commit_chunk(CommitRequest {
                owner_id: req.owner_id.into(),
                upload_id: req.upload_id.into(),
                index: req.index,
                size: req.size,
                crc64nvme: req.crc64nvme,
                claim_id: claim(&req.claim_id),
                etag: sessions_api::optional(&req.etag).map(str::to_owned),
                sha256_chain: (!req.sha256_chain.is_empty()).then_some(req.sha256_chain),
            })
            .await?;
        let mut resp = CommitChunkResponse {
            received_count: answer.received_count,
            total_chunks: answer.total_chunks,
            complete: answer.complete,
            completed_set: answer.completed_set,
            ..Default::default()
        };
        resp.set_outcome(encode::commit_verdict(answer.verdict));
        Ok(Response::new(resp))
    }

    async fn release_chunk(
        &self,
        request: Request<ReleaseChunkRequest>,
    ) -> Result<Response<ReleaseChunkResponse>, Status> {
        let req = request.into_inner();
        self.domain
            .release_chunk(
                &req.owner_id.into(),
                &req.upload_id.into(),
                req.index,
                claim(&req.claim_id).as_ref(),
            )
            .await?;
        Ok(Response::new(ReleaseChunkResponse {}))
    }

    async fn get_assembly(
        &self,
        request: Request<GetAssemblyRequest>,
    ) -> Result<Response<Assembly>, Status> {
        let req = request.into_inner();
        let plan = self.domain.get_assembly(&req.upload_id.into()).await?;
        Ok(Response::new(Assembly {
            upload: Some(encode::upload(
                &plan.upload,
                &Received::Chunks(&plan.chunks),
            )),
            parts: plan.chunks.iter().map(encode::part).collect(),
            blob_key: plan.blob_key,
            file_id: plan.file_id.into(),
        }))
    }

    async fn complete_assembly(
        &self,
        request: Request<CompleteAssemblyRequest>,
    ) -> Result<Response<proto::File>, Status> {
        let req = request.into_inner();
        let file = self
            .domain
            .complete_assembly(
                &req.upload_id.into(),
                req.crc64nvme,
                req.size,
                sessions_api::optional(&req.sha256),
            )
            .await?;
        Ok(Response::new(encode::file(&file)))
    }

    async fn fail_upload(
        &self,
        request: Request<FailUploadRequest>,
    ) -> Result<Response<proto::Upload>, Status> {
        let req = request.into_inner();
        let rec = self
            .domain
            .fail_upload(&req.upload_id.into(), &req.reason)
            .await?;
        Ok(upload_without_chunks(&rec))
    }

    async fn declare_checksums(
        &self,
        request: Request<DeclareChecksumsRequest>,
    ) -> Result<Response<proto::Upload>, Status> {
        let req = request.into_inner();
        let rec = self
            .domain
            .declare_checksums(DeclaredChecksums {
                owner_id: req.owner_id.into(),
                upload_id: req.upload_id.into(),
                sha256: req.sha256,
                crc64nvme: req.crc64nvme,
            })
            .await?;
        Ok(upload_without_chunks(&rec))
    }

    async fn declare_length(
        &self,
        request: Request<DeclareLengthRequest>,
    ) -> Result<Response<proto::Upload>, Status> {
        let req = request.into_inner();
        let rec = self
            .domain
            .declare_length(&req.owner_id.into(), &req.upload_id.into(), req.size)
            .await?;
        Ok(upload_without_chunks(&rec))
    }

    async fn list_files(
        &self,
        request: Request<ListFilesRequest>,
    ) -> Result<Response<ListFilesResponse>, Status> {
        let req = request.into_inner();
        let page = self
            .domain
            .list_files(&req.owner_id.into(), &req.cursor, req.limit)
            .await?;
        Ok(Response::new(ListFilesResponse {
            items: page.items.iter().map(encode::file).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn get_file(
        &self,
        request: Request<GetFileRequest>,
    ) -> Result<Response<proto::File>, Status> {
        let req = request.into_inner();
        let file = self
            .domain
            .get_file(&req.owner_id.into(), &req.file_id.into())
            .await?;
        Ok(Response::new(encode::file(&file)))
    }

    async fn delete_file(
        &self,
        request: Request<DeleteFileRequest>,
    ) -> Result<Response<DeleteFileResponse>, Status> {
        let req = request.into_inner();
        self.domain
            .delete_file(&req.owner_id.into(), &req.file_id.into())
            .await?;
        Ok(Response::new(DeleteFileResponse {}))
    }
}
