//! The compose cluster as the runner sees it: `docker-compose` and `docker`
//! commands, the peers' published addresses, and the run's clock.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_client::Client;

pub const PEERS: u64 = 5;
/// How long the cluster may take to elect a leader after `up`.
const FORM_LIMIT: Duration = Duration::from_secs(120);
/// How long one status question may take before the peer counts as silent.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// The address peers are published on, as `--host-ip` says.
pub static HOST_IP: OnceLock<String> = OnceLock::new();

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("the chaos crate is in the repository").to_path_buf()
}

pub fn compose(project: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker-compose")
        .env("FLOTILLA_HOST_IP", HOST_IP.get().map_or("127.0.0.1", String::as_str))
        .arg("--project-name")
        .arg(project)
        .arg("--file")
        .arg(repo().join("docker-compose.yml"))
        .args(args)
        .output()
        .context("running docker-compose")?;
    if !out.status.success() {
        bail!("docker-compose {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn docker(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("docker").args(args).output().context("running docker")?;
    if !out.status.success() {
        bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The containers of peers 1 to 5, in order.
pub fn container_ids(project: &str) -> anyhow::Result<Vec<String>> {
    (1..=PEERS).map(|p| compose(project, &["ps", "--quiet", &format!("peer{p}")])).collect()
}

/// Copies the records Pods wrote to the shared volume into `to`.
pub fn copy_records(container: &str, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    docker(&["cp", &format!("{container}:/records/."), &to.display().to_string()])
}

pub fn addr(peer: u64) -> String {
    format!("{}:{}", HOST_IP.get().map_or("127.0.0.1", String::as_str), 7000 + peer)
}

pub async fn connect(peer: u64, timeout: Duration) -> Option<Client> {
    tokio::time::timeout(timeout, Client::connect(&addr(peer))).await.ok().and_then(Result::ok)
}

/// The leader as the first peer to answer sees it.
pub async fn leader() -> Option<u64> {
    for peer in 1..=PEERS {
        if let Some(mut c) = connect(peer, STATUS_TIMEOUT).await
            && let Ok(Ok(s)) = tokio::time::timeout(STATUS_TIMEOUT, c.local_status()).await
            && s.has_leader
        {
            return Some(s.leader);
        }
    }
    None
}

pub async fn wait_for_leader() -> anyhow::Result<u64> {
    let deadline = Instant::now() + FORM_LIMIT;
    loop {
        for peer in 1..=PEERS {
            if let Some(mut c) = connect(peer, STATUS_TIMEOUT).await
                && let Ok(s) = c.status().await
                && s.has_leader
                && s.voters.len() as u64 == PEERS
            {
                return Ok(s.leader);
            }
        }
        if Instant::now() > deadline {
            bail!("no leader of {PEERS} voters after {FORM_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Nanoseconds since the run started: the history's clock.
#[derive(Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }

    pub fn secs(&self) -> f64 {
        self.ns() as f64 / 1e9
    }
}
