//! A real gateway and a real sessions server on loopback, over embedded stores in a tempdir.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc
)]

use std::sync::Arc;

use bytes::Bytes;
use lfusys_core::digest::crc64nvme;
use lfusys_core::plan::UploadPlan;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use sessions_api::proto;
use sessions_api::proto::sessions_client::SessionsClient;
use storage::{ByteStream, ChunkTarget, PartRef};
use stores::StorageConfig;
use test_support::sessions::SessionsServer;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub const PASSWORD: &str = "correct horse battery";
/// Sessions' preferred chunk size in these tests, so small files have several chunks.
pub const CHUNK: u64 = 64;
/// Sessions' largest accepted upload in these tests.
pub const MAX_UPLOAD: u64 = 1 << 30;

pub struct Harness {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub state: gateway::GatewayState,
    pub grpc: SessionsClient<Channel>,
    _sessions: SessionsServer,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn start() -> Harness {
    start_with(|_, _| {}).await
}

/// Starts sessions and the gateway; `configure` adjusts both configurations first. Rate
/// limits are off unless `configure` turns them on.
pub async fn start_with(
    configure: impl FnOnce(&mut gateway::Config, &mut sessions::Config),
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageConfig::embedded(dir.path());

    let mut sessions_config = sessions::Config::new(storage.clone());
    sessions_config.preferred_chunk_size = CHUNK;
    sessions_config.max_upload_size = MAX_UPLOAD;
    let mut gateway_config = gateway::Config::new(storage);
    gateway_config.auth_limit_per_client = 0;
    gateway_config.login_limit_per_account = 0;
    gateway_config.web_dir = dir.path().join("no-web-app");
    configure(&mut gateway_config, &mut sessions_config);

    let sessions_state = sessions::SessionsState::open(&sessions_config)
        .await
        .unwrap();
    let sessions = SessionsServer::start(sessions_state).await;
    if gateway_config.sessions_url == gateway::config::DEFAULT_SESSIONS_URL {
        gateway_config.sessions_url.clone_from(&sessions.url);
    }
    let state = gateway::GatewayState::open(&gateway_config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(gateway::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));

    Harness {
        base: format!("http://{addr}"),
        dir,
        state,
        grpc: sessions_api::client::connect_lazy(&sessions.url).unwrap(),
        _sessions: sessions,
        stop: Some(stop),
    }
}

pub fn client() -> Client {
    Client::builder().build().unwrap()
}

/// A client that keeps cookies like a browser; the jar is returned to read them.
pub fn browser() -> (Client, Arc<reqwest::cookie::Jar>) {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let client = Client::builder()
        .cookie_provider(jar.clone())
        .build()
        .unwrap();
    (client, jar)
}

/// The value of a cookie the jar would send to `url`.
pub fn jar_cookie(jar: &reqwest::cookie::Jar, url: &str, name: &str) -> Option<String> {
    use reqwest::cookie::CookieStore;
    let header = jar.cookies(&url.parse().unwrap())?;
    header.to_str().unwrap().split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn register(&self, c: &Client, email: &str, password: &str) -> Response {
        c.post(self.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": password, "name": "Test User"}))
            .send()
            .await
            .unwrap()
    }

    pub async fn login(&self, c: &Client, email: &str, password: &str) -> Response {
        c.post(self.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// Registers and signs in `email`; returns the login body.
    pub async fn user(&self, email: &str) -> Value {
        let c = client();
        assert_eq!(
            self.register(&c, email, PASSWORD).await.status(),
            StatusCode::CREATED
        );
        let res = self.login(&c, email, PASSWORD).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    /// Creates an upload as the holder of `token`; returns the 201 body.
    pub async fn create_upload(&self, token: &str, body: Value) -> Value {
        let res = client()
            .post(self.url("/api/v1/uploads"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json().await.unwrap()
    }

    /// Stores every chunk of an upload and publishes its File the way the workers do, but
    /// straight through the sessions gRPC API and the blob store.
    pub async fn complete_upload(
        &self,
        owner_id: &str,
        upload_id: &str,
        data: &[u8],
    ) -> proto::File {
        let mut grpc = self.grpc.clone();
        let blobs = self.state.blobs();
        let upload = grpc
            .get_upload(proto::GetUploadRequest {
                owner_id: owner_id.to_owned(),
                upload_id: upload_id.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(upload.size, data.len() as u64);
        // As the clients do: the whole file's checksums, from their one pass, before the chunks
        // are all there.
        grpc.declare_checksums(proto::DeclareChecksumsRequest {
            owner_id: owner_id.to_owned(),
            upload_id: upload_id.to_owned(),
            sha256: test_support::data::sha256_hex(data),
            crc64nvme: crc64nvme(data),
        })
        .await
        .unwrap();
        let plan = UploadPlan::new(upload.size, upload.chunk_size);
        for index in 0..plan.total_chunks {
            let offset = plan.offset(index);
            let len = plan.chunk_len(index).unwrap();
            let chunk = &data[offset as usize..(offset + len) as usize];
            let begin = grpc
                .begin_chunk(proto::BeginChunkRequest {
                    owner_id: owner_id.to_owned(),
                    upload_id: upload_id.to_owned(),
                    index,
                    size: len,
                    claim_id: String::new(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(begin.outcome, proto::BeginChunkOutcome::Claimed as i32);
            let target = ChunkTarget {
                upload_id: upload_id.into(),
                handle: sessions_api::optional(&begin.storage_handle).map(str::to_owned),
                index,
                offset,
                len,
                crc64nvme: Some(crc64nvme(chunk)),
            };
            let body: ByteStream = Box::pin(futures::stream::iter([Ok::<_, std::io::Error>(
                Bytes::copy_from_slice(chunk),
            )]));
            let written = blobs.write_chunk(&target, body).await.unwrap();
            let commit = grpc
                .commit_chunk(proto::CommitChunkRequest {
                    owner_id: owner_id.to_owned(),
                    upload_id: upload_id.to_owned(),
                    index,
                    claim_id: begin.claim_id,
                    size: len,
                    etag: written.etag.unwrap_or_default(),
                    crc64nvme: written.crc64nvme,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(commit.outcome, proto::CommitChunkOutcome::Stored as i32);
        }
        let assembly = grpc
            .get_assembly(proto::GetAssemblyRequest {
                upload_id: upload_id.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        let parts: Vec<PartRef> = assembly.parts.iter().map(PartRef::from).collect();
        let handle = assembly.upload.as_ref().unwrap().storage_handle.clone();
        blobs
            .complete_upload(
                &upload_id.into(),
                sessions_api::optional(&handle),
                &parts,
                &assembly.blob_key,
                crc64nvme(data),
            )
            .await
            .unwrap();
        grpc.complete_assembly(proto::CompleteAssemblyRequest {
            upload_id: upload_id.to_owned(),
            size: data.len() as u64,
            crc64nvme: crc64nvme(data),
            sha256: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
    }
}

/// Asserts a problem+json answer with `status`; returns its body.
pub async fn problem(res: Response, status: StatusCode) -> Value {
    assert_eq!(res.status(), status, "url {}", res.url());
    let ct = res.headers()[CONTENT_TYPE].to_str().unwrap().to_owned();
    assert_eq!(ct, "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"].as_str().unwrap().starts_with("https://"));
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}
