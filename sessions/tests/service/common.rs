//! A real sessions service on 127.0.0.1:0 over embedded stores in a temporary directory,
//! with a real gRPC client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use lfusys_core::digest::crc64nvme;
use sessions::{Config, SessionsState};
use sessions_api::proto::sessions_client::SessionsClient;
use sessions_api::proto::{
    self, BeginChunkOutcome, BeginChunkRequest, BeginChunkResponse, CommitChunkOutcome,
    CommitChunkRequest, CommitChunkResponse, CompleteAssemblyRequest, CreateUploadRequest,
    DeclareChecksumsRequest, GetAssemblyRequest,
};
use storage::{ChunkTarget, PartRef};
use stores::StorageConfig;
use test_support::sessions::SessionsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// Small chunks keep the tests fast while exercising multi-chunk plans.
pub const CHUNK: u64 = 1024;
pub const MAX_UPLOAD: u64 = 1024 * 1024;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub state: SessionsState,
    pub client: SessionsClient<Channel>,
    server: SessionsServer,
}

pub async fn start() -> Harness {
    start_with(|_| {}).await
}

pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(StorageConfig::embedded(dir.path()));
    config.preferred_chunk_size = CHUNK;
    config.max_upload_size = MAX_UPLOAD;
    // Tests sweep explicitly with `sweep_once`.
    config.sweep_interval = Duration::from_secs(3600);
    adjust(&mut config);
    let state = SessionsState::open(&config).await.unwrap();
    let server = SessionsServer::start(state.clone()).await;
    let client = sessions_api::client::connect_lazy(&server.url).unwrap();
    Harness {
        dir,
        addr: server.addr,
        state,
        client,
        server,
    }
}

impl Harness {
    pub fn client(&self) -> SessionsClient<Channel> {
        self.client.clone()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server and waits for `serve` to return.
    pub async fn shutdown(&mut self) -> Result<(), sessions::Error> {
        self.server.shutdown().await
    }

    pub async fn create(&self, owner: &str, name: &str, size: u64) -> proto::Upload {
        self.client()
            .create_upload(CreateUploadRequest {
                owner_id: owner.into(),
                name: name.into(),
                size,
                content_type: String::new(),
                sha256: String::new(),
                length_deferred: false,
                partial: false,
                concat_parts: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn begin(
        &self,
        owner: &str,
        upload_id: &str,
        index: u32,
        data: &[u8],
        claim_id: &str,
    ) -> BeginChunkResponse {
        self.try_begin(owner, upload_id, index, data.len() as u64, claim_id)
            .await
            .unwrap()
    }

    pub async fn try_begin(
        &self,
        owner: &str,
        upload_id: &str,
        index: u32,
        size: u64,
        claim_id: &str,
    ) -> Result<BeginChunkResponse, tonic::Status> {
        self.client()
            .begin_chunk(BeginChunkRequest {
                owner_id: owner.into(),
                upload_id: upload_id.into(),
                index,
                size,
                claim_id: claim_id.into(),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn commit(
        &self,
        owner: &str,
        upload_id: &str,
        index: u32,
        data: &[u8],
        claim_id: &str,
    ) -> CommitChunkResponse {
        self.client()
            .commit_chunk(commit_request(owner, upload_id, index, data, claim_id))
            .await
            .unwrap()
            .into_inner()
    }

    /// Writes a chunk's bytes to the blob store, as a worker does between begin and commit.
    pub async fn write(&self, upload: &proto::Upload, index: u32, data: &[u8]) {
        let target = ChunkTarget {
            upload_id: upload.upload_id.as_str().into(),
            handle: sessions_api::optional(&upload.storage_handle).map(str::to_owned),
            index,
            offset: u64::from(index) * upload.chunk_size,
            len: data.len() as u64,
            crc64nvme: Some(crc64nvme(data)),
        };
        let body = Bytes::copy_from_slice(data);
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let written = self
            .state
            .blobs
            .write_chunk(&target, Box::pin(stream))
            .await
            .unwrap();
        assert_eq!(
            written.crc64nvme,
            crc64nvme(data),
            "the store's CRC of chunk {index}"
        );
    }

    /// `DeclareChecksums` of `sha256` (hex or empty) and `crc`.
    pub async fn declare(
        &self,
        owner: &str,
        upload_id: &str,
        sha256: &str,
        crc: u64,
    ) -> Result<proto::Upload, tonic::Status> {
        self.client()
            .declare_checksums(DeclareChecksumsRequest {
                owner_id: owner.into(),
                upload_id: upload_id.into(),
                sha256: sha256.into(),
                crc64nvme: crc,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Uploads every chunk of `data` (claim, write, commit) in order; returns the upload and
    /// the last commit's response.
    pub async fn upload_all(
        &self,
        owner: &str,
        name: &str,
        data: &[u8],
    ) -> (proto::Upload, CommitChunkResponse) {
        let upload = self.create(owner, name, data.len() as u64).await;
        let mut last = None;
        for (index, chunk) in chunks_of(&upload, data) {
            let begun = self.begin(owner, &upload.upload_id, index, chunk, "").await;
            assert_eq!(begun.outcome(), BeginChunkOutcome::Claimed);
            self.write(&upload, index, chunk).await;
            let committed = self
                .commit(owner, &upload.upload_id, index, chunk, &begun.claim_id)
                .await;
            assert_eq!(committed.outcome(), CommitChunkOutcome::Stored);
            last = Some(committed);
        }
        (upload, last.unwrap())
    }

    /// Does what an assembler does after the last chunk: commit the blob (verified against the
    /// CRC of `data`) and publish the File.
    pub async fn assemble(&self, upload_id: &str, data: &[u8]) -> proto::File {
        let assembly = self
            .client()
            .get_assembly(GetAssemblyRequest {
                upload_id: upload_id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let upload = assembly.upload.unwrap();
        let parts: Vec<PartRef> = assembly.parts.iter().map(PartRef::from).collect();
        self.state
            .blobs
            .complete_upload(
                &upload_id.into(),
                sessions_api::optional(&upload.storage_handle),
                &parts,
                &assembly.blob_key,
                crc64nvme(data),
            )
            .await
            .unwrap();
        self.client()
            .complete_assembly(CompleteAssemblyRequest {
                upload_id: upload_id.into(),
                size: data.len() as u64,
                crc64nvme: crc64nvme(data),
                sha256: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// A published File of `data` owned by `owner`.
    pub async fn publish(&self, owner: &str, name: &str, data: &[u8]) -> proto::File {
        let (upload, _) = self.upload_all(owner, name, data).await;
        self.assemble(&upload.upload_id, data).await
    }

    /// Every `.part` file of the upload anywhere under the data directory.
    pub fn part_files(&self, upload_id: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        walk(self.data_dir(), &mut |p| {
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(upload_id))
                && p.extension().is_some_and(|e| e == "part")
            {
                found.push(p.to_path_buf());
            }
        });
        found
    }

    /// A plain HTTP/1.1 GET on the service's port: (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_owned())
    }
}

fn walk(dir: &Path, f: &mut impl FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, f);
        } else {
            f(&path);
        }
    }
}

pub fn commit_request(
    owner: &str,
    upload_id: &str,
    index: u32,
    data: &[u8],
    claim_id: &str,
) -> CommitChunkRequest {
    CommitChunkRequest {
        owner_id: owner.into(),
        upload_id: upload_id.into(),
        index,
        claim_id: claim_id.into(),
        size: data.len() as u64,
        etag: String::new(),
        crc64nvme: crc64nvme(data),
        ..Default::default()
    }
}

/// The chunks of `data` under the upload's plan.
pub fn chunks_of<'a>(upload: &proto::Upload, data: &'a [u8]) -> Vec<(u32, &'a [u8])> {
    data.chunks(upload.chunk_size as usize)
        .enumerate()
        .map(|(i, c)| (i as u32, c))
        .collect()
}
