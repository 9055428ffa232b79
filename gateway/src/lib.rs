//! The LFUSYS gateway: the public HTTP API (DESIGN §3 uploads and files, §4 auth), its
//! OpenAPI document, and the web app.
//!
//! ```no_run
//! # async fn run() -> Result<(), gateway::Error> {
//! let config = gateway::Config::from_environment()?;
//! let state = gateway::GatewayState::open(&config).await?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! gateway::serve(listener, state, service_kit::observability::shutdown_signal()).await
//! # }
//! ```

pub mod api;
pub mod authn;
pub mod config;
pub mod dto;
pub mod openapi;
pub mod password;
pub mod ratelimit;
pub mod state;
pub mod waits;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Router};
use service_kit::observability::{ops_router, track_http, ReadinessCheck};
use service_kit::problem::Problem;

pub use config::{Config, CookieSecure};
pub use state::GatewayState;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(#[from] lfusys_core::env::ConfigError),
    #[error("invalid sessions URL {url:?}: {reason}")]
    SessionsUrl { url: String, reason: String },
    #[error(transparent)]
    Key(#[from] lfusys_core::tokens::KeyError),
    #[error(transparent)]
    Store(#[from] storage::StoreError),
    #[error(transparent)]
    Password(#[from] password::PasswordError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The gateway's routes: `/api/v1/…`, `/healthz`, `/readyz`, `/metrics`, and the web app.
pub fn app(state: GatewayState) -> Router {
    use api::{auth, files, uploads};
    let web = web::WebApp::new(&state.config().web_dir);
    let api = Router::new()
        .route("/api/v1/auth/register", post(auth::register))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/refresh", post(auth::refresh))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/auth/me", get(auth::me))
        .route(
            "/api/v1/uploads",
            post(uploads::create_upload).get(uploads::list_uploads),
        )
        .route(
            "/api/v1/uploads/{id}",
            get(uploads::get_upload)
                .delete(uploads::cancel_upload)
                .patch(uploads::declare_checksums),
        )
        .route("/api/v1/uploads/{id}/token", post(uploads::renew_token))
        .route("/api/v1/files", get(files::list_files))
        .route(
            "/api/v1/files/{id}",
            get(files::get_file).delete(files::delete_file),
        )
        .route("/api/v1/files/{id}/content", get(files::download))
        .route("/api/v1/openapi.json", get(openapi::serve_document))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    Router::new()
        .merge(api)
        .merge(ops_router(readiness(state)))
        .fallback(move |req: Request| {
            let web = web.clone();
            async move { web.handle(req).await }
        })
        .layer(middleware::from_fn(refuse_chunked_bodies))
        .layer(middleware::from_fn(track_http))
}

/// Request bodies come with `Content-Length`. A `Transfer-Encoding` is refused with `400`:
/// together with a `Content-Length` it is how requests are smuggled past a proxy that frames
/// the message differently (hyper reads such a message by `Transfer-Encoding`, drops the
/// `Content-Length` and closes the connection after the answer, as RFC 9112 §6.3 asks; the
/// refusal makes sure nothing of it is acted on either).
async fn refuse_chunked_bodies(req: Request, next: middleware::Next) -> Response {
    if req
        .headers()
        .contains_key(axum::http::header::TRANSFER_ENCODING)
    {
        return Problem::bad_request(
            "transfer-encoding-refused",
            "send the request body with Content-Length; Transfer-Encoding is not accepted",
        )
        .into_response();
    }
    next.run(req).await
}

async fn method_not_allowed() -> Response {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this method is not allowed on this resource",
    )
    .into_response()
}

/// Ready when the auth store answers and the sessions service is reachable.
fn readiness(state: GatewayState) -> ReadinessCheck {
    Arc::new(move || {
        let state = state.clone();
        Box::pin(async move {
            state
                .auth()
                .check()
                .await
                .map_err(|e| format!("auth store: {e}"))?;
            sessions_api::client::probe(&state.sessions()).await
        })
    })
}

/// Serves the gateway on an already bound listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: GatewayState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    serve_with(listener, state, Router::new(), shutdown).await
}

/// [`serve`], with `routes` of another service on the same listener, outside the gateway's
/// own layers: `lfusys up` serves the upload workers' tus endpoint on the gateway's origin,
/// as the Ingress does in a cluster (DESIGN §3 step 7).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: GatewayState,
    routes: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let service = routes
        .merge(app(state.clone()))
        .into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Long polls answer now with the status as it is, so that connections drain.
            state.waits().stop();
        })
        .await
        .map_err(Error::Io)
}
