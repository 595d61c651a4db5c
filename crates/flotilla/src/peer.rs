use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use flotilla_peer::config::PeerConfig;

#[derive(Args)]
pub struct PeerArgs {
    /// The peer's TOML configuration.
    #[arg(long)]
    config: PathBuf,
}

pub async fn run(args: PeerArgs, log_json: bool) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let config = PeerConfig::load(&args.config)?;
    crate::init_logging(log_json || config.log.json);
    flotilla_peer::run(config, shutdown).await.context("peer failed")
}

/// Resolves on the first SIGINT or SIGTERM. The handlers are installed
/// here, at once: a signal while the peer is still starting is kept and
/// stops it cleanly as soon as it serves, rather than killing it
/// mid-write.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
