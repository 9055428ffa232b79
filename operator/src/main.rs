use anyhow::Context as _;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::observability::init_tracing();
    let config =
        operator::config::OperatorConfig::from_environment().context("bad configuration")?;
    operator::run(config, service_kit::observability::shutdown_signal()).await?;
    Ok(())
}
