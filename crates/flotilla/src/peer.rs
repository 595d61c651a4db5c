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
    let config = PeerConfig::load(&args.config)?;
    crate::init_logging(log_json || config.log.json);
    flotilla_peer::run(config, shutdown_signal()).await.context("peer failed")
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
