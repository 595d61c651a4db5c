//! Flotilla against etcd on the same machine, in the same run, driven by
//! the same load generator: three members of each on loopback, with fsync,
//! the same key and value sizes and the same client counts. Runs alternate
//! between the two systems so that both see the same machine conditions.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_testkit::{Cluster, Expect, Options, key};
use serde_json::{Value, json};

use crate::plot::{Axis, Series, line_chart};
use crate::{median, ms, percentile};

mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;

/// Where Debian's `etcd-server` package puts the server.
const ETCD: &str = "etcd";
/// Loopback ports of the etcd members: clients on 23791.., peers on 23801..
const ETCD_CLIENT_PORT: u16 = 23_791;
const ETCD_PEER_PORT: u16 = 23_801;
const MEMBERS: u16 = 3;
/// How long the members may take to form a cluster.
const FORM_LIMIT: Duration = Duration::from_secs(60);
/// Keys each client cycles through: enough that writes do not all hit one
/// key, few enough that reads find what was written.
const KEYS_PER_CLIENT: u64 = 1_000;
const WARM_UP: Duration = Duration::from_millis(500);

/// Three etcd members on loopback, killed with their data when dropped.
struct EtcdCluster {
    members: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    fn pids(&self) -> Vec<u32> {
        self.members.iter().map(Child::id).collect()
    }
}

impl EtcdCluster {
    fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let initial: Vec<String> = (0..MEMBERS).map(|i| format!("m{i}=http://127.0.0.1:{}", ETCD_PEER_PORT + i)).collect();
        let mut members = Vec::new();
        for i in 0..MEMBERS {
            let log = std::fs::File::create(dir.path().join(format!("m{i}.log")))?;
            let child = Command::new(ETCD)
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("m{i}")))
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{}", ETCD_CLIENT_PORT + i)])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{}", ETCD_CLIENT_PORT + i)])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", ETCD_PEER_PORT + i)])
                .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{}", ETCD_PEER_PORT + i)])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new", "--initial-cluster-token", "flotilla-bench"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {ETCD}: install Debian's etcd-server package (apt-get install etcd-server)"))?;
            members.push(child);
        }
        Ok(Self { members, _dir: dir })
    }

    fn endpoints() -> Vec<String> {
        (0..MEMBERS).map(|i| format!("http://127.0.0.1:{}", ETCD_CLIENT_PORT + i)).collect()
    }

    /// Waits until every member answers a linearizable read.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + FORM_LIMIT;
        for endpoint in Self::endpoints() {
            loop {
                let ready = async {
                    let mut c = KvClient::connect(endpoint.clone()).await.ok()?;
                    c.range(pb::RangeRequest { key: b"ready".to_vec(), serializable: false }).await.ok()
                };
                if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), ready).await {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("etcd member {endpoint} not ready after {FORM_LIMIT:?}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum System {
    Flotilla,
    Etcd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Write,
    Read,
}

/// One client's connection to either system (Flotilla's client, with its
/// three service stubs, is the larger: boxed).
enum Conn {
    Flotilla(Box<flotilla_client::Client>),
    Etcd(KvClient<tonic::transport::Channel>),
}

impl Conn {
    async fn open(system: System, endpoint: &str) -> anyhow::Result<Conn> {
        Ok(match system {
            System::Flotilla => Conn::Flotilla(Box::new(flotilla_client::Client::connect(endpoint).await?)),
            System::Etcd => Conn::Etcd(KvClient::connect(endpoint.to_string()).await?),
        })
    }

    async fn write(&mut self, name: &str, value: &str) -> anyhow::Result<()> {
        match self {
            Conn::Flotilla(c) => {
                c.put(key("ConfigMap", "bench", name), flotilla_testkit::config_map(value), Expect::Anything).await?;
            }
            Conn::Etcd(c) => {
                c.put(pb::PutRequest { key: format!("bench/{name}").into_bytes(), value: value.as_bytes().to_vec() }).await?;
            }
        }
        Ok(())
    }

    async fn read(&mut self, name: &str) -> anyhow::Result<()> {
        match self {
            Conn::Flotilla(c) => {
                c.get(key("ConfigMap", "bench", name), false).await?;
            }
            Conn::Etcd(c) => {
                c.range(pb::RangeRequest { key: format!("bench/{name}").into_bytes(), serializable: false }).await?;
            }
        }
        Ok(())
    }
}

/// What one measured run found.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Figures {
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU time the servers (peers or members) spent per operation: what
    /// one system costs against the other whatever else the machine runs.
    pub server_cpu_us: f64,
    /// CPU time this load generator spent per operation.
    pub client_cpu_us: f64,
}

impl Figures {
    pub(crate) fn json(&self) -> Value {
        json!({
            "per_sec": self.per_sec,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "server_cpu_us_per_op": self.server_cpu_us,
            "client_cpu_us_per_op": self.client_cpu_us,
        })
    }
}

/// CPU seconds used so far by the processes `pids`, all together.
fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| flotilla_testkit::cpu_seconds_of(*p)).sum()
}

/// One measured run, each client a connection of its own issuing one
/// operation after another, against servers whose processes are `servers`.
pub(crate) async fn run_once(
    system: System,
    op: Op,
    endpoints: &[String],
    servers: &[u32],
    clients: usize,
    length: Duration,
    value: &str,
) -> anyhow::Result<Figures> {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let endpoint = endpoints[c % endpoints.len()].clone();
        let (stop, measuring, value) = (stop.clone(), measuring.clone(), value.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(system, &endpoint).await?;
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("c{c}-{}", i % KEYS_PER_CLIENT);
                i += 1;
                let t = Instant::now();
                match op {
                    Op::Write => conn.write(&name, &value).await?,
                    Op::Read => conn.read(&name).await?,
                }
                if measuring.load(Ordering::Relaxed) {
                    latencies.push(t.elapsed());
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(WARM_UP).await;
    let me = [std::process::id()];
    let (servers_before, client_before) = (cpu_seconds(servers), cpu_seconds(&me));
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(length).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let (servers_cpu, client_cpu) = (cpu_seconds(servers) - servers_before, cpu_seconds(&me) - client_before);
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    // Operations finished in the measured window, as near as the per-op
    // latencies tell: the ones started in it.
    let ops = all.len().max(1) as f64;
    Ok(Figures {
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(percentile(&all, 50.0)),
        p99_ms: ms(percentile(&all, 99.0)),
        server_cpu_us: servers_cpu * 1e6 / ops,
        client_cpu_us: client_cpu * 1e6 / ops,
    })
}

/// Medians over the runs, and every run.
pub(crate) fn summary(runs: &[Figures]) -> Value {
    let median_of = |f: fn(&Figures) -> f64| median(runs.iter().map(f).collect());
    json!({
        "per_sec": median_of(|r| r.per_sec),
        "p50_ms": median_of(|r| r.p50_ms),
        "p99_ms": median_of(|r| r.p99_ms),
        "server_cpu_us_per_op": median_of(|r| r.server_cpu_us),
        "client_cpu_us_per_op": median_of(|r| r.client_cpu_us),
        "runs": runs.iter().map(Figures::json).collect::<Vec<_>>(),
    })
}

pub async fn compare(levels: &[usize], seconds: u64, value_bytes: usize, runs: usize, out: &Path) -> anyhow::Result<Value> {
    anyhow::ensure!(runs > 0 && !levels.is_empty(), "at least one run and one client count");
    let etcd = EtcdCluster::start()?;
    let flotilla = Cluster::start(3, Options::default());
    etcd.wait_ready().await?;
    flotilla.wait_leader(FORM_LIMIT).await;
    let version = Command::new(ETCD).arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())?;
    let flotilla_endpoints: Vec<String> = (1..=3).map(|id| flotilla.addr_of(id)).collect();
    let flotilla_pids: Vec<u32> = flotilla.peers.iter().filter_map(|p| p.pid()).collect();
    let etcd_endpoints = EtcdCluster::endpoints();
    let etcd_pids = etcd.pids();
    let value = "v".repeat(value_bytes);
    let length = Duration::from_secs(seconds);
    println!("Flotilla and {version}: 3 members each on loopback, fsync on, {value_bytes}-byte values, clients spread over the members");
    println!(
        "{:>6} {:>7} {:>12} {:>9} {:>9} {:>9} {:>12} {:>9} {:>9} {:>9} {:>7}",
        "op", "clients", "flotilla/s", "p50 ms", "p99 ms", "cpu µs", "etcd/s", "p50 ms", "p99 ms", "cpu µs", "ratio"
    );
    let mut rows = Vec::new();
    for op in [Op::Write, Op::Read] {
        for &clients in levels {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                // Alternating, so that both see the same machine over time.
                ours.push(run_once(System::Flotilla, op, &flotilla_endpoints, &flotilla_pids, clients, length, &value).await?);
                theirs.push(run_once(System::Etcd, op, &etcd_endpoints, &etcd_pids, clients, length, &value).await?);
            }
            let (f, e) = (summary(&ours), summary(&theirs));
            let ratio = f["per_sec"].as_f64().unwrap_or(0.0) / e["per_sec"].as_f64().unwrap_or(f64::NAN);
            let op_name = if op == Op::Write { "write" } else { "read" };
            let field = |v: &Value, name: &str| v[name].as_f64().unwrap_or(0.0);
            println!(
                "{op_name:>6} {clients:>7} {:>12.0} {:>9.2} {:>9.2} {:>9.0} {:>12.0} {:>9.2} {:>9.2} {:>9.0} {ratio:>7.2}",
                field(&f, "per_sec"),
                field(&f, "p50_ms"),
                field(&f, "p99_ms"),
                field(&f, "server_cpu_us_per_op"),
                field(&e, "per_sec"),
                field(&e, "p50_ms"),
                field(&e, "p99_ms"),
                field(&e, "server_cpu_us_per_op"),
            );
            rows.push(json!({"op": op_name, "clients": clients, "flotilla": f, "etcd": e, "ratio": ratio}));
        }
    }
    let plots = plot(&rows, out)?;
    for p in &plots {
        println!("plot: {}", p.display());
    }
    Ok(json!({
        "bench": "etcd-comparison",
        "etcd_version": version,
        "seconds": seconds,
        "value_bytes": value_bytes,
        "runs": runs,
        "results": rows,
        "plots": plots.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    }))
}

/// Two SVG charts: operations per second and p99 latency against the
/// client count, for both systems and both operations.
fn plot(rows: &[Value], out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for (metric, title, file) in [("per_sec", "operations per second", "etcd-comparison-throughput.svg"), ("p99_ms", "p99 latency (ms)", "etcd-comparison-p99.svg")] {
        let mut series = Vec::new();
        for op in ["write", "read"] {
            for (system, colour) in [("flotilla", "#1f77b4"), ("etcd", "#d62728")] {
                let points: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|r| r["op"] == op)
                    .map(|r| (r["clients"].as_f64().unwrap_or(0.0), r[system][metric].as_f64().unwrap_or(0.0)))
                    .collect();
                series.push(Series { name: format!("{system} {op}"), colour, dashed: op == "read", points });
            }
        }
        let path = out.join(file);
        std::fs::write(&path, line_chart(title, Axis::Categories("clients"), &series))?;
        files.push(path);
    }
    Ok(files)
}
