//! `sessions`: the LFUSYS sessions service (gRPC + ops endpoints on one port).
//! Configuration comes from the environment; see `sessions::Config`.

// Returns freed chunk buffers to the OS promptly: with the system allocator the workers'
// resident memory grows with fragmentation under many concurrent chunks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use service_kit::observability::{init_tracing, shutdown_signal};
use sessions::{serve, Config, SessionsState};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let config = Config::from_environment()?;
    let state = SessionsState::open(&config)
        .await
        .context("opening the storage")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        storage = ?config.storage,
        "sessions service listening (gRPC, /healthz, /readyz, /metrics)"
    );
    serve(listener, state, shutdown_signal()).await?;
    tracing::info!("sessions service stopped");
    Ok(())
}
