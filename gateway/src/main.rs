//! `gateway`: the LFUSYS public HTTP API. Configured by `LFUSYS_*` variables (see
//! `gateway::Config`).

// Returns freed chunk buffers to the OS promptly: with the system allocator the workers'
// resident memory grows with fragmentation under many concurrent chunks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::observability::init_tracing();
    let config = gateway::Config::from_environment().context("reading the configuration")?;
    let state = gateway::GatewayState::open(&config)
        .await
        .context("opening the gateway's stores and keys")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, sessions = %config.sessions_url, "gateway listening on http://{addr}");
    gateway::serve(
        listener,
        state,
        service_kit::observability::shutdown_signal(),
    )
    .await?;
    tracing::info!("gateway stopped");
    Ok(())
}
