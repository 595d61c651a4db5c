//! `flotilla up`: a local cluster on loopback, each peer its own process,
//! the way a user first meets Flotilla.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use flotilla_client::Client;

use crate::local_peer::LocalPeer;
use tokio::sync::watch;

/// Peers `up` starts at most: a loopback demo, not a deployment.
const MAX_LOCAL_PEERS: u32 = 9;
/// How long to wait for the cluster to elect a leader and admit every peer.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a peer has to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct UpArgs {
    /// How many peers to start.
    #[arg(long, default_value_t = 3)]
    peers: u32,
    /// Where the peers keep their configs, logs and data. Reused across
    /// runs: the cluster comes back with its state.
    #[arg(long, default_value = ".flotilla/up")]
    data_dir: PathBuf,
    /// Port of the first peer; the others follow.
    #[arg(long, default_value_t = 7101)]
    base_port: u16,
    /// Voters at most (1, 3 or 5); further peers are learners. Defaults to
    /// 3, or 1 with fewer than 3 peers.
    #[arg(long)]
    max_voters: Option<u32>,
    /// Once up, run a Deployment, kill a peer, and show its Pods coming
    /// back on the others.
    #[arg(long)]
    demo: bool,
}

/// Resolves once `up` is asked to stop: Ctrl-C, SIGTERM, or SIGHUP (the
/// terminal closed, an SSH session dropped). The handlers are installed
/// once, at start, so a signal between two stages is not lost.
fn stop_requests() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let (tx, rx) = watch::channel(false);
    // Ends at the first signal; `up` exits soon after.
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
            _ = hangup.recv() => {}
        }
        tx.send_replace(true);
    });
    Ok(rx)
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.peers == 0 || args.peers > MAX_LOCAL_PEERS {
        bail!("--peers: {} is outside 1 to {MAX_LOCAL_PEERS}", args.peers);
    }
    let max_voters = args.max_voters.unwrap_or(if args.peers >= 3 { 3 } else { 1 });
    if u32::from(args.base_port) + args.peers > u32::from(u16::MAX) {
        bail!("--base-port: {} leaves no room for {} peers", args.base_port, args.peers);
    }
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("--data-dir {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let exe = std::env::current_exe().context("locating the flotilla binary")?;
    let stop = stop_requests()?;
    let addrs: Vec<(u64, String)> =
        (1..=args.peers).map(|i| (u64::from(i), format!("127.0.0.1:{}", args.base_port + i as u16 - 1))).collect();

    let mut peers = Vec::new();
    for (id, addr) in &addrs {
        let config = write_config(&data_dir, *id, addr, &addrs, max_voters)?;
        let log = data_dir.join(format!("peer{id}.log"));
        println!("peer {id}  {addr}  log {}", log.display());
        peers.push(LocalPeer::start(&exe, *id, addr, config, log)?);
    }

    let formed = tokio::select! {
        r = wait_for_cluster(&addrs) => r,
        _ = stopped(stop.clone()) => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = formed {
        stop_all(&mut peers).await;
        return Err(e.context(format!("the cluster did not form; see the logs in {}", data_dir.display())));
    }
    println!();
    println!("Flotilla is up. Point the CLI at any peer:  export FLOTILLA_SERVER={}", addrs[0].1);
    if args.demo {
        let demo = tokio::select! {
            r = crate::demo::run(&exe, &mut peers) => r,
            _ = stopped(stop.clone()) => Err(anyhow::anyhow!("interrupted")),
        };
        if let Err(e) = demo {
            stop_all(&mut peers).await;
            return Err(e.context(format!("the demo failed; see the logs in {}", data_dir.display())));
        }
    }
    println!("Press Ctrl-C to stop the peers.");

    supervise(&mut peers, stop).await;
    stop_all(&mut peers).await;
    println!("all peers stopped");
    Ok(())
}

fn write_config(dir: &Path, id: u64, addr: &str, all: &[(u64, String)], max_voters: u32) -> anyhow::Result<PathBuf> {
    let mut text = format!(
        "# Written by `flotilla up`.\nid = {id}\ncluster = \"local\"\nlisten = \"{addr}\"\ndata_dir = \"{}\"\nmax_voters = {max_voters}\n",
        dir.join(format!("peer{id}")).display()
    );
    for (pid, paddr) in all {
        text.push_str(&format!("\n[[peers]]\nid = {pid}\naddr = \"{paddr}\"\n"));
    }
    let path = dir.join(format!("peer{id}.toml"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Polls until one leader is known and every peer is a member, printing
/// progress meanwhile.
pub async fn wait_for_cluster(addrs: &[(u64, String)]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + FORM_TIMEOUT;
    let mut last_line = String::new();
    loop {
        let line = match probe(&addrs[0].1).await {
            Ok(s) if s.has_leader && s.peers.len() == addrs.len() => {
                print!("\r{:<60}\r", "");
                println!("leader: peer {}, term {}, {} voters, {} learners", s.leader, s.term, s.voters.len(), s.learners.len());
                print!("{}", crate::cluster::status_table(&s));
                return Ok(());
            }
            Ok(s) if s.has_leader => format!("leader elected (peer {}); {}/{} peers joined", s.leader, s.peers.len(), addrs.len()),
            Ok(_) => "waiting for a leader".to_string(),
            Err(_) => "waiting for the peers to listen".to_string(),
        };
        if line != last_line {
            print!("\r{line:<60}");
            std::io::stdout().flush().ok();
            last_line = line;
        }
        if tokio::time::Instant::now() > deadline {
            println!();
            bail!("no cluster after {}s ({last_line})", FORM_TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn probe(addr: &str) -> anyhow::Result<flotilla_client::api::StatusResponse> {
    let mut c = Client::connect(addr).await?;
    Ok(c.status().await?)
}

/// Waits until `up` is asked to stop, reporting any peer that exits
/// meanwhile.
async fn supervise(peers: &mut [LocalPeer], stop: watch::Receiver<bool>) {
    let mut signal = std::pin::pin!(stopped(stop));
    let mut alive: Vec<bool> = vec![true; peers.len()];
    loop {
        tokio::select! {
            _ = &mut signal => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for (i, p) in peers.iter_mut().enumerate() {
                    if alive[i] && let Ok(Some(status)) = p.child.try_wait() {
                        alive[i] = false;
                        eprintln!("peer {} ({}) exited: {status}; see {}", p.id, p.addr, p.log.display());
                    }
                }
            }
        }
    }
}

/// SIGTERM to every peer, then SIGKILL to any still running after the grace.
async fn stop_all(peers: &mut [LocalPeer]) {
    for p in peers.iter() {
        if let Some(pid) = p.child.id() {
            // SAFETY: plain signal to a child process we started.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
    for p in peers.iter_mut() {
        match tokio::time::timeout(STOP_GRACE, p.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("peer {} did not stop within {}s; killing it", p.id, STOP_GRACE.as_secs());
                let _ = p.child.kill().await;
            }
        }
    }
}
