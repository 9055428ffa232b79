//! The `uploads` binary: one upload worker (chunk ingest + assemblers).
//! Configuration comes from the environment; see `uploads::Config`.

// Returns freed chunk buffers to the OS promptly: with the system allocator the workers'
// resident memory grows with fragmentation under many concurrent chunks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::observability::init_tracing();
    let config = uploads::Config::from_environment().context("reading the configuration")?;
    let state = uploads::WorkerState::open(&config)
        .await
        .context("starting the upload worker")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        sessions = %config.sessions_url,
        assemblers = config.assemblers,
        "upload worker started"
    );
    uploads::serve(
        listener,
        state,
        service_kit::observability::shutdown_signal(),
    )
    .await?;
    tracing::info!("upload worker stopped");
    Ok(())
}
