//! Benchmarks against real `flotilla peer` processes on loopback with real
//! RocksDB and fsync. Every figure is printed with the command that
//! reproduces it, and the raw results are written as JSON.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use flotilla_testkit::{Cluster, Expect, Options, key};
use serde_json::json;

#[derive(Parser)]
#[command(name = "flotilla-bench", about = "Flotilla benchmarks on loopback peers")]
struct Cli {
    /// Where raw results (JSON) are written.
    #[arg(long, default_value = "bench-results", global = true)]
    out: PathBuf,
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Small replicated writes: throughput and latency per concurrency.
    Writes {
        /// Concurrent clients, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        clients: Vec<usize>,
        /// Measured seconds per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Bytes of payload per write.
        #[arg(long, default_value_t = 128)]
        value_bytes: usize,
        /// Repetitions per concurrency; figures are medians over them.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Send writes to every peer in turn (followers forward them), or to
        /// the leader only.
        #[arg(long, value_enum, default_value = "all")]
        via: Via,
    },
    /// Writes and linearizable reads against Flotilla and against etcd
    /// (Debian's etcd-server), three members each on loopback, in one run.
    Etcd {
        /// Concurrent clients, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
        clients: Vec<usize>,
        /// Measured seconds per run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 128)]
        value_bytes: usize,
        /// Runs per system and client count, alternating; figures are
        /// medians over them.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Time to N containers running: Flotilla's docker runtime against
    /// Docker Swarm on the same engine.
    Swarm {
        #[arg(long, value_delimiter = ',', default_value = "10,100")]
        replicas: Vec<usize>,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Time from SIGKILL of the leader to the first acknowledged write
    /// through another peer.
    Failover {
        #[arg(long, default_value_t = 20)]
        kills: usize,
    },
    /// Time from SIGKILL of a peer to all of its Pods Running on the
    /// others (process runtime, default timings).
    Heal {
        #[arg(long, default_value_t = 20)]
        kills: usize,
        /// Replicas of the Deployment spread over the three peers.
        #[arg(long, default_value_t = 6)]
        replicas: usize,
    },
    /// Time from creating a single-container Pod to its Running status
    /// (`--runtime process` or `docker`), and the peers' memory idle and with the Pods.
    Start {
        #[arg(long, default_value_t = 200)]
        pods: usize,
        #[arg(long, value_enum, default_value_t = Runtime::Process)]
        runtime: Runtime,
    },
    /// Pods bound per second on many simulated nodes (fake runtime): a
    /// ReplicaSet scaled from 0 to `--pods`.
    Schedule {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        /// Runs, each on a fresh cluster; figures are medians over them.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The size of the `flotilla` binary, as built and stripped.
    Footprint {
        #[arg(long)]
        binary: PathBuf,
    },
    /// Rewrites the measured sections of the benchmark page (tables, plots,
    /// machine) from the raw results in `--out`; the prose is left alone.
    Report {
        #[arg(long, default_value = "docs/BENCHMARKS.md")]
        page: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Via {
    All,
    Leader,
}

/// The runtime the start benchmark's peers run Pods with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Runtime {
    Process,
    Docker,
}

mod etcd;
mod plot;
mod pods;
mod provenance;
mod report;
mod schedule;
mod swarm;

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The profile matters to every figure: name the one this binary is.
    let profile = if cfg!(debug_assertions) { "" } else { " --release" };
    format!("cargo run{profile} -p flotilla-bench -- {}", args.join(" "))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.out).with_context(|| format!("--out {}", cli.out.display()))?;
    let result = match cli.command {
        Bench::Writes { clients, seconds, value_bytes, runs, via } => writes(&clients, seconds, value_bytes, runs, via).await?,
        Bench::Etcd { clients, seconds, value_bytes, runs } => etcd::compare(&clients, seconds, value_bytes, runs, &cli.out).await?,
        Bench::Swarm { replicas, runs } => swarm::compare(&replicas, runs).await?,
        Bench::Failover { kills } => failover(kills).await?,
        Bench::Heal { kills, replicas } => pods::heal(kills, replicas).await?,
        Bench::Start { pods, runtime } => pods::start(pods, runtime).await?,
        Bench::Schedule { nodes, pods, runs } => schedule::schedule(nodes, pods, runs, &cli.out).await?,
        Bench::Footprint { binary } => footprint(&binary)?,
        Bench::Report { page } => {
            report::write(&cli.out, &page)?;
            println!("regenerated the measured sections of {} from {}", page.display(), cli.out.display());
            return Ok(());
        }
    };
    let mut result = result;
    result["run"] = provenance::describe(&command_line());
    let name = result["bench"].as_str().unwrap_or("bench").to_string();
    let path = cli.out.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&result)?)?;
    println!("raw results: {}", path.display());
    println!("reproduce:   {}", command_line());
    Ok(())
}

async fn writes(levels: &[usize], seconds: u64, value_bytes: usize, runs: usize, via: Via) -> anyhow::Result<serde_json::Value> {
    let cluster = Cluster::start(3, Options::default());
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let targets: Vec<String> = match via {
        Via::All => (1..=3).map(|id| cluster.addr_of(id)).collect(),
        Via::Leader => vec![cluster.addr_of(leader)],
    };
    let peers: Vec<u32> = cluster.peers.iter().filter_map(|p| p.pid()).collect();
    let value = "v".repeat(value_bytes);
    let spread = if via == Via::All { "clients spread over all peers" } else { "clients on the leader" };
    println!("replicated writes: 3 peers on loopback, RocksDB with fsync, {value_bytes}-byte values, {spread}");
    println!("{:>8} {:>12} {:>10} {:>10} {:>14} {:>14}", "clients", "writes/s", "p50 ms", "p99 ms", "peers cpu µs", "client cpu µs");
    let mut rows = Vec::new();
    for &clients in levels {
        let mut per_run = Vec::new();
        for _ in 0..runs {
            let length = Duration::from_secs(seconds);
            per_run.push(etcd::run_once(etcd::System::Flotilla, etcd::Op::Write, &targets, &peers, clients, length, &value).await?);
        }
        let mut row = etcd::summary(&per_run);
        row["clients"] = json!(clients);
        let field = |name: &str| row[name].as_f64().unwrap_or(0.0);
        println!(
            "{clients:>8} {:>12.0} {:>10.2} {:>10.2} {:>14.0} {:>14.0}",
            field("per_sec"),
            field("p50_ms"),
            field("p99_ms"),
            field("server_cpu_us_per_op"),
            field("client_cpu_us_per_op")
        );
        rows.push(row);
    }
    let via_name = if via == Via::All { "all" } else { "leader" };
    Ok(json!({ "bench": format!("writes-via-{via_name}"), "seconds": seconds, "value_bytes": value_bytes, "runs": runs, "results": rows }))
}

async fn failover(kills: usize) -> anyhow::Result<serde_json::Value> {
    let mut cluster = Cluster::start(3, Options::default());
    println!("leader failover: 3 peers on loopback, default timings (heartbeat 50 ms, election timeout 200-400 ms)");
    let mut samples = Vec::new();
    for k in 0..kills {
        let leader = cluster.wait_leader(Duration::from_secs(30)).await;
        // Everyone caught up, so any survivor can win the election.
        let commit = cluster.client(leader).await.local_status().await?.commit_index;
        for id in 1..=3 {
            cluster.wait_status(id, "catch-up", Duration::from_secs(30), |s| s.last_applied >= commit).await;
        }
        let via = (1..=3).find(|&id| id != leader).expect("a survivor");
        let mut client = cluster.client(via).await;
        client.put(key("ConfigMap", "bench", "warm"), "{}".into(), Expect::Anything).await?;
        let t0 = Instant::now();
        cluster.kill(leader);
        let mut attempt = 0;
        let took = loop {
            attempt += 1;
            let name = format!("failover-{k}-{attempt}");
            let write = client.put(key("ConfigMap", "bench", &name), "{}".into(), Expect::Anything);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), write).await {
                break t0.elapsed();
            }
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(30), "no write acknowledged 30 s after the leader was killed");
        };
        println!("kill {:>2}: leader {leader} killed, first write acknowledged through peer {via} after {:.0} ms", k + 1, ms(took));
        samples.push(took);
        cluster.restart(leader);
    }
    let mut sorted = samples.clone();
    sorted.sort();
    let (p50, p99, max) = (ms(percentile(&sorted, 50.0)), ms(percentile(&sorted, 99.0)), ms(*sorted.last().expect("kills > 0")));
    println!("failover over {kills} kills: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms");
    Ok(json!({
        "bench": "failover",
        "kills": kills,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": max,
        "samples_ms": samples.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
    }))
}

/// The binary's size as built (with the line tables kept for backtraces)
/// and stripped of all symbols, as a package would ship it.
fn footprint(binary: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let built = std::fs::metadata(binary).with_context(|| format!("--binary {}", binary.display()))?.len();
    let stripped_path = tempfile::NamedTempFile::new()?.into_temp_path();
    let status = std::process::Command::new("objcopy")
        .arg("--strip-all")
        .arg(binary)
        .arg(&stripped_path)
        .status()
        .context("running objcopy (binutils)")?;
    anyhow::ensure!(status.success(), "objcopy --strip-all {} failed", binary.display());
    let stripped = std::fs::metadata(&stripped_path)?.len();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("{}: {:.1} MiB as built, {:.1} MiB stripped", binary.display(), mib(built), mib(stripped));
    Ok(json!({ "bench": "footprint", "binary_bytes": built, "stripped_bytes": stripped }))
}
