//! Test harness: a real sessions server and real upload workers on loopback listeners, over
//! one temporary data directory (SQLite + local disk), with a key pair whose public half the
//! workers verify upload tokens with.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use lfusys_core::digest::{format_content_digest, Sha256};
use lfusys_core::plan::UploadPlan;
use lfusys_core::state::UploadState;
use lfusys_core::tokens::TokenSigner;
use sessions_api::proto::sessions_client::SessionsClient;
use sessions_api::proto::{CreateUploadRequest, GetUploadRequest, ListFilesRequest};
use sha2::Digest;
use storage::{BlobStore, JobQueue, QueueDepth, ReceivedJob, StoreResult};
use stores::StorageConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

pub use test_support::data::{random_bytes, sha256_hex};
use test_support::sessions::SessionsServer;
pub use test_support::wait::eventually;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const KIB: u64 = 1024;
pub const CHUNK: u64 = 64 * KIB;
pub const OWNER: &str = "user-a";

/// A real queue that counts what passes through it.
pub struct CountingQueue {
    inner: Arc<dyn JobQueue>,
    pub sent: AtomicU32,
    pub deleted: AtomicU32,
    /// `receive_count` of every message received.
    pub receives: Mutex<Vec<u32>>,
}

impl CountingQueue {
    pub fn new(inner: Arc<dyn JobQueue>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            sent: AtomicU32::new(0),
            deleted: AtomicU32::new(0),
            receives: Mutex::default(),
        })
    }
    pub fn sent(&self) -> u32 {
        self.sent.load(Ordering::SeqCst)
    }
    pub fn deleted(&self) -> u32 {
        self.deleted.load(Ordering::SeqCst)
    }
    pub fn receives(&self) -> Vec<u32> {
        self.receives.lock().unwrap().clone()
    }
}

#[async_trait]
impl JobQueue for CountingQueue {
    async fn send(&self, dedup_id: &str, body: &str) -> StoreResult<()> {
        self.inner.send(dedup_id, body).await?;
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn receive(
        &self,
        wait: Duration,
        visibility: Duration,
    ) -> StoreResult<Option<ReceivedJob>> {
        let job = self.inner.receive(wait, visibility).await?;
        if let Some(j) = &job {
            self.receives.lock().unwrap().push(j.receive_count);
        }
        Ok(job)
    }
    async fn extend_visibility(&self, receipt: &str, visibility: Duration) -> StoreResult<()> {
        self.inner.extend_visibility(receipt, visibility).await
    }
    async fn delete(&self, receipt: &str) -> StoreResult<()> {
        self.inner.delete(receipt).await?;
        self.deleted.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn depth(&self) -> StoreResult<QueueDepth> {
        self.inner.depth().await
    }
    async fn check(&self) -> StoreResult<()> {
        self.inner.check().await
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub chunk_size: u64,
    pub upload_ttl: Duration,
    pub chunk_lease: Duration,
    pub worker: WorkerOptions,
}

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub assemblers: usize,
    pub visibility: Duration,
    pub max_attempts: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            chunk_size: CHUNK,
            upload_ttl: Duration::from_secs(3600),
            chunk_lease: Duration::from_secs(60),
            worker: WorkerOptions::default(),
        }
    }
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            assemblers: 1,
            visibility: Duration::from_secs(30),
            max_attempts: 5,
        }
    }
}

/// One running upload worker.
pub struct Worker {
    pub addr: std::net::SocketAddr,
    pub url: String,
    pub queue: Arc<CountingQueue>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), uploads::Error>>>,
}

impl Worker {
    /// Graceful shutdown: waits for the server and its assemblers to stop.
    pub async fn stop(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub signer: TokenSigner,
    pub sessions_url: String,
    pub grpc: SessionsClient<Channel>,
    /// The queue the sessions service sends assembly jobs to.
    pub sessions_queue: Arc<CountingQueue>,
    pub worker: Worker,
    pub http: reqwest::Client,
    _sessions: SessionsServer,
}

/// A created upload, its source bytes and a token for it.
pub struct TestUpload {
    pub id: String,
    pub data: Vec<u8>,
    pub plan: UploadPlan,
    pub token: String,
    /// The whole-file SHA-256 declared at creation, if any.
    pub declared_sha256: Option<String>,
}

impl TestUpload {
    pub fn chunk(&self, index: u32) -> &[u8] {
        let start = self.plan.offset(index) as usize;
        let len = self.plan.chunk_len(index).unwrap() as usize;
        &self.data[start..start + len]
    }
    pub fn sha256_hex(&self) -> String {
        sha256_hex(&self.data)
    }
    /// The File's SHA-256: the declared one (verified), or none when none was declared.
    pub fn file_sha256(&self) -> String {
        self.declared_sha256.clone().unwrap_or_default()
    }
}

/// An HTTP answer with its JSON body (problem or receipt).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: serde_json::Value,
}

impl Reply {
    /// Asserts a problem+json answer with `status` whose type ends with `kind`.
    pub fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.content_type, "application/problem+json", "{self:?}");
        assert_eq!(self.body["status"], status, "{self:?}");
        let t = self.body["type"].as_str().unwrap_or_default();
        assert!(
            t.ends_with(&format!("/{kind}")),
            "expected kind {kind}: {self:?}"
        );
        assert!(
            !self.body["detail"].as_str().unwrap_or_default().is_empty(),
            "{self:?}"
        );
    }
}

pub fn digest_of(data: &[u8]) -> Sha256 {
    sha2::Sha256::digest(data).into()
}

pub fn digest_header(data: &[u8]) -> String {
    format_content_digest(&digest_of(data))
}

pub fn now_s() -> i64 {
    lfusys_core::clock::now_ms() / 1000
}

impl Harness {
    pub async fn start(opts: Options) -> Self {
        // Logs go to the test's captured output (shown when it fails); RUST_LOG filters.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let storage = StorageConfig::embedded(dir.path());
        let mut config = sessions::Config::new(storage.clone());
        config.preferred_chunk_size = opts.chunk_size;
        config.upload_ttl = opts.upload_ttl;
        config.chunk_lease = opts.chunk_lease;
        let sessions_queue = CountingQueue::new(storage.job_queue().await.unwrap());
        let state = sessions::SessionsState::new(
            config,
            storage.metadata_store().await.unwrap(),
            storage.blob_store().await.unwrap(),
            Arc::clone(&sessions_queue) as Arc<dyn JobQueue>,
        );
        let sessions = SessionsServer::start(state).await;
        let sessions_url = sessions.url.clone();
        let grpc = sessions_api::client::connect_lazy(&sessions_url).unwrap();
        let signer = TokenSigner::generate().unwrap();
        let mut h = Self {
            worker: Worker {
                addr: "127.0.0.1:1".parse().unwrap(),
                url: String::new(),
                queue: CountingQueue::new(storage.job_queue().await.unwrap()),
                stop: None,
                task: None,
            },
            dir,
            signer,
            sessions_url,
            grpc,
            sessions_queue,
            http: reqwest::Client::new(),
            _sessions: sessions,
        };
        h.worker = h.start_worker(&opts.worker).await;
        h
    }

    pub fn storage(&self) -> StorageConfig {
        StorageConfig::embedded(self.dir.path())
    }

    /// Starts another worker on the same data directory and sessions service.
    pub async fn start_worker(&self, opts: &WorkerOptions) -> Worker {
        self.start_worker_with(opts, self.storage().blob_store().await.unwrap())
            .await
    }

    /// Starts another worker over the given blob store.
    pub async fn start_worker_with(
        &self,
        opts: &WorkerOptions,
        blob: Arc<dyn BlobStore>,
    ) -> Worker {
        let storage = self.storage();
        let mut config = uploads::Config::embedded(self.dir.path());
        config.sessions_url.clone_from(&self.sessions_url);
        config.assemblers = opts.assemblers;
        config.assembly_visibility = opts.visibility;
        config.assembly_max_attempts = opts.max_attempts;
        let queue = CountingQueue::new(storage.job_queue().await.unwrap());
        let state = uploads::WorkerState::new(
            self.signer.verifier(),
            storage.auth_store().await.unwrap(),
            blob,
            Arc::clone(&queue) as Arc<dyn JobQueue>,
            sessions_api::client::connect_lazy(&self.sessions_url).unwrap(),
            config,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(uploads::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Worker {
            addr,
            url: format!("http://{addr}"),
            queue,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Creates an upload of `size` random bytes (optionally declaring a whole-file SHA-256)
    /// and signs an upload token for it.
    pub async fn create_upload(&self, size: usize, declared_sha256: Option<String>) -> TestUpload {
        self.create_upload_of(random_bytes(size), declared_sha256)
            .await
    }

    /// Creates an upload of `data`.
    pub async fn create_upload_of(
        &self,
        data: Vec<u8>,
        declared_sha256: Option<String>,
    ) -> TestUpload {
        let size = data.len();
        let up = self
            .grpc
            .clone()
            .create_upload(CreateUploadRequest {
                owner_id: OWNER.to_owned(),
                name: "data.bin".to_owned(),
                size: size as u64,
                content_type: String::new(),
                sha256: declared_sha256.clone().unwrap_or_default(),
                length_deferred: false,
                partial: false,
                concat_parts: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let plan = UploadPlan::new(up.size, up.chunk_size);
        assert_eq!(plan.total_chunks, up.total_chunks);
        let token = self
            .signer
            .sign_upload(OWNER, &up.upload_id, plan, now_s(), 3600)
            .unwrap();
        TestUpload {
            id: up.upload_id,
            data,
            plan,
            token,
            declared_sha256,
        }
    }

    pub fn chunk_url(&self, upload_id: &str, index: &str) -> String {
        format!("{}/api/v1/chunks/{upload_id}/{index}", self.worker.url)
    }

    /// `PUT` with the given token, `Content-Digest` and body (Content-Length set from it).
    pub async fn put(
        &self,
        url: &str,
        token: Option<&str>,
        digest: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self.http.put(url).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(d) = digest {
            req = req.header("content-digest", d);
        }
        reply(req.send().await.unwrap()).await
    }

    /// Uploads chunk `index` of `up` correctly.
    pub async fn put_chunk(&self, up: &TestUpload, index: u32) -> Reply {
        self.put_chunk_to(&self.worker, up, index).await
    }

    /// Uploads chunk `index` of `up` correctly to `worker`.
    pub async fn put_chunk_to(&self, worker: &Worker, up: &TestUpload, index: u32) -> Reply {
        let data = up.chunk(index).to_vec();
        let digest = digest_header(&data);
        let url = format!("{}/api/v1/chunks/{}/{index}", worker.url, up.id);
        self.put(&url, Some(&up.token), Some(&digest), data).await
    }

    pub async fn get_upload(&self, upload_id: &str) -> sessions_api::proto::Upload {
        self.grpc
            .clone()
            .get_upload(GetUploadRequest {
                owner_id: OWNER.to_owned(),
                upload_id: upload_id.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Polls until the upload reaches `state` (panics after `within`).
    pub async fn wait_for_state(
        &self,
        upload_id: &str,
        state: UploadState,
        within: Duration,
    ) -> sessions_api::proto::Upload {
        let deadline = Instant::now() + within;
        loop {
            let up = self.get_upload(upload_id).await;
            if sessions_api::upload_state(up.state) == Some(state) {
                return up;
            }
            assert!(
                Instant::now() < deadline,
                "upload never became {state}: {up:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn files(&self) -> Vec<sessions_api::proto::File> {
        self.grpc
            .clone()
            .list_files(ListFilesRequest {
                owner_id: OWNER.to_owned(),
                cursor: String::new(),
                limit: 100,
            })
            .await
            .unwrap()
            .into_inner()
            .items
    }

    /// The bytes of a committed blob, read through the blob store.
    pub async fn read_blob(&self, blob_key: &str) -> Vec<u8> {
        let blob = self.storage().blob_store().await.unwrap();
        let mut stream = blob.read_blob(blob_key, None).await.unwrap();
        let mut out = Vec::new();
        while let Some(b) = stream.next().await {
            out.extend_from_slice(&b.unwrap());
        }
        out
    }
}

pub async fn reply(res: reqwest::Response) -> Reply {
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Reply {
        status,
        content_type,
        body,
    }
}

/// Opens a connection and sends a `PUT` head declaring `content_length` and then only
/// `body` (possibly less than declared), leaving the connection open.
pub async fn raw_put(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
    digest: &str,
    content_length: u64,
    body: &[u8],
) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Digest: {digest}\r\nContent-Length: {content_length}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body).await.unwrap();
    conn.flush().await.unwrap();
    conn
}

/// Reads what the server answers on a raw connection until it closes it; the status code
/// if an answer came.
pub async fn raw_status(conn: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}
