//! LFUSYS upload workers (DESIGN §3, steps 2–4).
//!
//! - **Chunk ingest**: `PUT /api/v1/chunks/{upload_id}/{index}` verifies the upload token
//!   locally (the gateway's public key, no database), takes a lease on the chunk from the
//!   sessions service, streams the body into the blob store while hashing it, and records it.
//!   The native protocol's adapter is [`chunks`]; the protocol-neutral use case it calls
//!   (lease, stream and verify, record; typed errors and their problem+json table) is
//!   [`ingest`].
//! - **Assembly**: `Config::assemblers` tasks consume the assembly queue and turn complete
//!   uploads into Files. See [`assembler`].
//!
//! - **tus 1.0.0** at `/api/v1/tus` (DESIGN §3 step 7): uploads by tus-js-client, Uppy and the
//!   other tus clients, authenticated as the user, through the same ingest core. See [`tus`].
//!
//! Both run inside [`serve`]; `/healthz`, `/readyz` and `/metrics` come with [`app`].

pub mod assembler;
pub mod chunks;
mod config;
pub mod ingest;
mod streams;
pub mod tus;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::Router;
use lfusys_core::tokens::{KeyError, TokenVerifier};
use service_kit::observability::{ops_router, ReadinessCheck};
use sessions_api::proto::sessions_client::SessionsClient;
use storage::{AuthStore, BlobStore, JobQueue, StoreError};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

pub use config::{default_assemblers, Config, DEFAULT_LISTEN, DEFAULT_SESSIONS_URL};

/// Errors of starting or running a worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] lfusys_core::env::ConfigError),
    #[error("loading the token public key")]
    Key(#[from] KeyError),
    #[error("opening storage")]
    Store(#[from] StoreError),
    #[error("invalid sessions service address")]
    SessionsUrl(#[from] tonic::transport::Error),
    #[error("serving HTTP")]
    Io(#[from] std::io::Error),
}

/// Everything the handlers and assemblers share. Cheap to clone.
#[derive(Clone)]
pub struct WorkerState {
    inner: Arc<Inner>,
}

struct Inner {
    verifier: TokenVerifier,
    /// Users' token families, to refuse the access token of a signed-out session (tus).
    auth: Arc<dyn AuthStore>,
    blob: Arc<dyn BlobStore>,
    queue: Arc<dyn JobQueue>,
    sessions: SessionsClient<Channel>,
    config: Config,
}

impl WorkerState {
    pub fn new(
        verifier: TokenVerifier,
        auth: Arc<dyn AuthStore>,
        blob: Arc<dyn BlobStore>,
        queue: Arc<dyn JobQueue>,
        sessions: SessionsClient<Channel>,
        config: Config,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                verifier,
                auth,
                blob,
                queue,
                sessions,
                config,
            }),
        }
    }

    /// Loads the public key, opens the configured stores and prepares a (lazy) connection to
    /// the sessions service.
    pub async fn open(config: &Config) -> Result<Self, Error> {
        let verifier = TokenVerifier::load(&config.public_key_file)?;
        let auth = config.storage.auth_store().await?;
        let blob = config.storage.blob_store().await?;
        let queue = config.storage.job_queue().await?;
        // Connects on first use, so workers may start before the sessions service.
        let sessions = sessions_api::client::connect_lazy(&config.sessions_url)?;
        Ok(Self::new(
            verifier,
            auth,
            blob,
            queue,
            sessions,
            config.clone(),
        ))
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn verifier(&self) -> &TokenVerifier {
        &self.inner.verifier
    }

    pub(crate) fn auth(&self) -> &Arc<dyn AuthStore> {
        &self.inner.auth
    }

    pub(crate) fn blob(&self) -> &Arc<dyn BlobStore> {
        &self.inner.blob
    }

    pub(crate) fn queue(&self) -> &Arc<dyn JobQueue> {
        &self.inner.queue
    }

    pub(crate) fn sessions(&self) -> SessionsClient<Channel> {
        self.inner.sessions.clone()
    }
}

/// The worker's HTTP surface: the chunk route, `/healthz` `/readyz` `/metrics`, request
/// metrics and CORS (browsers upload from the gateway's origin to the workers).
pub fn app(state: WorkerState) -> Router {
    let cors = cors_layer(&state.config().cors_allowed_origins);
    chunks::router(state.clone())
        .merge(tus::router(state.clone()))
        .merge(ops_router(readiness(state)))
        .fallback(service_kit::problem::not_found_fallback)
        .layer(axum::middleware::from_fn(
            service_kit::observability::track_http,
        ))
        .layer(cors)
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::from(Any)
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| {
                let v = HeaderValue::from_str(o).ok();
                if v.is_none() {
                    tracing::warn!(origin = %o, "ignoring an invalid CORS origin");
                }
                v
            })
            .collect();
        AllowOrigin::list(list)
    };
    let named = |names: &[&'static str]| -> Vec<HeaderName> {
        names.iter().map(|n| HeaderName::from_static(n)).collect()
    };
    let mut allowed = vec![header::AUTHORIZATION, header::CONTENT_TYPE];
    allowed.extend(named(&[
        "content-digest",
        "x-csrf-token",
        "x-http-method-override",
        "x-requested-with",
        "tus-resumable",
        "upload-length",
        "upload-metadata",
        "upload-offset",
        "upload-defer-length",
        "upload-concat",
        "upload-checksum",
        "upload-complete",
        "upload-draft-interop-version",
    ]));
    // What browsers let tus clients read (and `Retry-After` of a 409 chunk-in-progress or 503).
    let mut exposed = vec![header::RETRY_AFTER, header::LOCATION];
    exposed.extend(named(&[
        "upload-offset",
        "upload-length",
        "upload-metadata",
        "upload-defer-length",
        "upload-concat",
        "upload-expires",
        "upload-complete",
        "upload-draft-interop-version",
        "upload-limit",
        "tus-version",
        "tus-resumable",
        "tus-extension",
        "tus-max-size",
        "tus-checksum-algorithm",
    ]));
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::PUT,
            Method::POST,
            Method::HEAD,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(allowed)
        .expose_headers(exposed)
        .max_age(Duration::from_secs(3600))
}

/// Ready when the blob store and the queue answer and the sessions service responds to a
/// request (any gRPC answer but "unavailable" counts: it is up and talking).
fn readiness(state: WorkerState) -> ReadinessCheck {
    Arc::new(move || {
        let state = state.clone();
        Box::pin(async move {
            state
                .blob()
                .check()
                .await
                .map_err(|e| format!("blob store: {e}"))?;
            state
                .queue()
                .check()
                .await
                .map_err(|e| format!("job queue: {e}"))?;
            sessions_api::client::probe(&state.sessions()).await
        })
    })
}

/// Serves the worker on an already-bound listener and runs its assemblers until `shutdown`
/// resolves; then stops accepting, finishes in-flight requests and stops the assemblers.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: WorkerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let stop = CancellationToken::new();
    let assemblers = assembler::spawn(&state, state.config().assemblers, &stop);
    let trigger = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    let http_stop = stop.clone();
    let result = axum::serve(listener, app(state))
        .with_graceful_shutdown(async move { http_stop.cancelled().await })
        .await;
    // The HTTP server may end on its own (an I/O error); the assemblers go with it.
    stop.cancel();
    for task in assemblers {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "an assembler task panicked");
        }
    }
    result.map_err(Error::Io)
}
