//! The sessions service: the single authority over users' uploads and files metadata.
//!
//! It serves the gRPC contract `sessions-api/proto/sessions.proto` (used by the gateway and the
//! upload workers) and, on the same port, `/healthz`, `/readyz` and `/metrics`. In the
//! background, the outbox relay sends the assembly jobs a crash or a queue error kept from
//! being sent (see [`outbox`]), and the sweeper expires abandoned uploads, finishes releases
//! that were cut short and re-enqueues assembly jobs the queue lost (see [`sweeper`]).
//!
//! The rules live in [`domain`] (over the storage ports, with their own error type); [`grpc`]
//! only decodes requests, calls them and encodes the answers, and maps the domain error to a
//! status in one place. The sweeper and the dead-letter consumer call the domain too.
//!
//! On a queue with a dead-letter queue (SQS), the service also consumes the dead-letter queue
//! and fails the uploads whose assembly jobs landed there (see [`dead_letters`]).
//!
//! Choices the contract leaves open:
//! - Chunk records of a completed upload are kept until its File is deleted, so a chunk
//!   retried after completion is still answered `ALREADY_STORED` with its CRC-64/NVME (the
//!   worker tells a retry from other bytes) and the upload's status keeps listing every chunk. Cancelled, expired and failed uploads drop
//!   their chunk records together with their storage.
//! - An upload is refused past its `expires_at` even before the sweeper runs: `BeginChunk`
//!   expires it on the spot and answers `GONE`.
//! - Cancelling or failing an upload again answers its state and retries the (idempotent)
//!   storage release, which heals a release that failed halfway.
//! - A stuck assembly is re-sent with the upload id as dedup id, so re-sends within the
//!   queue's deduplication window are dropped; `assembly_stale_after` should exceed it.

pub mod config;
pub mod dead_letters;
pub mod domain;
pub mod grpc;
pub mod outbox;
pub mod sweeper;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use lfusys_core::plan::PlanPolicy;
use service_kit::observability::{ops_router, track_http, ReadinessCheck};
use sessions_api::proto::sessions_server::SessionsServer;
use storage::{BlobStore, JobQueue, MetadataStore, StoreError};

pub use config::{Config, ConfigError};
pub use domain::{DomainError, SessionsDomain};
pub use grpc::SessionsService;
pub use outbox::{relay_once, RelayReport};
pub use sweeper::{sweep_once, SweepReport};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the {what}: {source}")]
    Storage {
        what: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything the service works with; cheap to clone.
#[derive(Clone)]
pub struct SessionsState {
    pub metadata: Arc<dyn MetadataStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub queue: Arc<dyn JobQueue>,
    pub policy: PlanPolicy,
    pub config: Arc<Config>,
    /// Waiters of the long poll, woken by this process's state changes.
    pub changes: Arc<domain::changes::UploadChanges>,
}

impl std::fmt::Debug for SessionsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionsState")
            .field("policy", &self.policy)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SessionsState {
    /// Opens the metadata store, blob store and queue that `config.storage` names.
    pub async fn open(config: &Config) -> Result<Self, Error> {
        let storage = |what| move |source| Error::Storage { what, source };
        let metadata = config
            .storage
            .metadata_store()
            .await
            .map_err(storage("metadata store"))?;
        let blobs = config
            .storage
            .blob_store()
            .await
            .map_err(storage("blob store"))?;
        let queue = config
            .storage
            .job_queue()
            .await
            .map_err(storage("job queue"))?;
        Ok(Self::new(config.clone(), metadata, blobs, queue))
    }

    /// A state over explicitly given stores.
    pub fn new(
        config: Config,
        metadata: Arc<dyn MetadataStore>,
        blobs: Arc<dyn BlobStore>,
        queue: Arc<dyn JobQueue>,
    ) -> Self {
        Self {
            metadata,
            blobs,
            queue,
            policy: config.plan_policy(),
            config: Arc::new(config),
            changes: Arc::default(),
        }
    }

    /// Readiness: all three stores answer.
    pub fn readiness(&self) -> ReadinessCheck {
        let state = self.clone();
        Arc::new(move || {
            let state = state.clone();
            Box::pin(async move {
                let (m, b, q) = tokio::join!(
                    state.metadata.check(),
                    state.blobs.check(),
                    state.queue.check()
                );
                m.map_err(|e| format!("metadata store: {e}"))?;
                b.map_err(|e| format!("blob store: {e}"))?;
                q.map_err(|e| format!("job queue: {e}"))?;
                Ok(())
            })
        })
    }
}

/// The gRPC service and the ops endpoints on one router (gRPC rides on HTTP/2 without TLS,
/// the ops endpoints answer HTTP/1.1 and HTTP/2 alike).
pub fn app(state: SessionsState) -> Router {
    let readiness = state.readiness();
    let grpc = tonic::service::Routes::new(SessionsServer::new(SessionsService::new(state)))
        .into_axum_router();
    grpc.merge(ops_router(readiness))
        .fallback(service_kit::problem::not_found_fallback)
        .layer(axum::middleware::from_fn(track_http))
}

/// Serves [`app`] on an already-bound listener, with the sweeper and the outbox relay running
/// alongside, until `shutdown` resolves; then stops them and drains the open connections.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: SessionsState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // SQS moves a job received too often to its dead-letter queue; this service settles it.
    let dead_letter_consumer = state
        .queue
        .dead_letters()
        .map(|dlq| tokio::spawn(dead_letters::run(state.clone(), dlq, stop_rx.clone())));
    let relay = tokio::spawn(outbox::run(state.clone(), stop_rx.clone()));
    let sweeper = tokio::spawn(sweeper::run(state.clone(), stop_rx));
    let stop = stop_tx.clone();
    let changes = Arc::clone(&state.changes);
    let result = service_kit::server::serve(listener, app(state), async move {
        shutdown.await;
        let _ = stop.send(true);
        // Waiting status reads answer now, so that the open connections can drain.
        changes.close();
    })
    .await;
    let _ = stop_tx.send(true);
    if let Err(e) = sweeper.await {
        tracing::error!(error = %e, "the sweeper task failed");
    }
    if let Err(e) = relay.await {
        tracing::error!(error = %e, "the outbox relay failed");
    }
    if let Some(task) = dead_letter_consumer {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "the dead-letter consumer failed");
        }
    }
    result.map_err(Error::Io)
}
