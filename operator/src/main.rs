use anyhow::Context as _;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    commons::observability::init_tracing();
    let config =
        operator::config::OperatorConfig::from_environment().context("bad configuration")?;
    operator::run(config, commons::observability::shutdown_signal()).await?;
    Ok(())
}
