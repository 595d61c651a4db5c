//! `flotilla-chaos`: runs a workload against the five-peer compose cluster
//! while a nemesis injects faults, records the history in Jepsen's form,
//! checks it, and writes `results.json`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use flotilla_chaos::history::{Entry, EntryType, Function, write_jsonl};
use flotilla_chaos::linearizable::{DEFAULT_STEP_BUDGET, Verdict, check_registers};
use flotilla_chaos::nemesis::{Container, heal_all, partition};
use flotilla_client::{Client, ClientError, Code, Expect, key};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const PEERS: u64 = 5;
/// How long one client operation may take before its outcome is unknown.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
/// Entries buffered between the clients and the history writer.
const HISTORY_BUFFER: usize = 4096;
/// How long the cluster may take to elect a leader after `up`.
const FORM_LIMIT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Nemesis {
    /// Two peers cut off from the other three (nftables in their network
    /// namespaces).
    Partition,
    /// SIGKILL of one peer, restarted when the fault ends.
    Kill,
    /// SIGSTOP of one peer's container (`docker pause`), then SIGCONT.
    Pause,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Reads, writes and compare-and-sets on a few keys, checked for
    /// linearizability.
    Register,
}

#[derive(Parser)]
#[command(name = "flotilla-chaos", about = "Jepsen-style chaos runs against the compose cluster")]
struct Args {
    /// Seconds of workload under faults.
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Fixes the fault schedule and the clients' choices; random if absent
    /// (and printed, to replay).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "partition,kill,pause")]
    nemesis: Vec<Nemesis>,
    #[arg(long, value_enum, default_value = "register")]
    workload: Workload,
    /// Concurrent clients (Jepsen's processes).
    #[arg(long, default_value_t = 10)]
    clients: u64,
    #[arg(long, default_value_t = 8)]
    keys: u64,
    /// Reads from the contacted peer's own replica: not linearizable, so
    /// the checker must reject the run. Proves the checker can fail.
    #[arg(long)]
    stale_reads: bool,
    /// Where `<seed>/history.jsonl`, `faults.jsonl` and `results.json` go.
    #[arg(long, default_value = "chaos-results")]
    out: PathBuf,
    /// The compose project; `up` and `down` are run around the test unless
    /// `--keep` leaves the cluster running.
    #[arg(long, default_value = "flotilla-chaos")]
    project: String,
    /// The loopback address the peers are published on (ports 7001-7005).
    #[arg(long, default_value = "127.0.0.1")]
    host_ip: String,
    #[arg(long)]
    keep: bool,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("the chaos crate is in the repository").to_path_buf()
}

/// The address peers are published on, as `--host-ip` says.
static HOST_IP: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn compose(project: &str, args: &[&str]) -> anyhow::Result<String> {
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

fn docker(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("docker").args(args).output().context("running docker")?;
    if !out.status.success() {
        bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn addr(peer: u64) -> String {
    format!("{}:{}", HOST_IP.get().map_or("127.0.0.1", String::as_str), 7000 + peer)
}

async fn wait_for_leader() -> anyhow::Result<u64> {
    let deadline = Instant::now() + FORM_LIMIT;
    loop {
        for peer in 1..=PEERS {
            if let Ok(mut c) = Client::connect(&addr(peer)).await
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
struct Clock(Instant);

impl Clock {
    fn ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// Whether a failed write certainly took no effect.
fn definitely_not_applied(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } => true,
        ClientError::Status(s) => match s.code() {
            Code::Unavailable => s.message().contains("not applied"),
            Code::ResourceExhausted | Code::FailedPrecondition | Code::Aborted | Code::AlreadyExists | Code::NotFound => true,
            _ => false,
        },
    }
}

fn register_object(value: i64) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"v": value.to_string()}}).to_string()
}

/// The register's value in a stored object, and its revision.
fn register_value(json: &str) -> (Value, u64) {
    let object: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    let value = object["data"]["v"].as_str().and_then(|v| v.parse::<i64>().ok()).map_or(Value::Null, Value::from);
    let revision = object["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok()).unwrap_or(0);
    (value, revision)
}

struct ClientTask {
    process: u64,
    keys: u64,
    stale_reads: bool,
    clock: Clock,
    stop: Arc<AtomicBool>,
    history: mpsc::Sender<Entry>,
    rng: StdRng,
}

impl ClientTask {
    fn entry(&self, entry_type: EntryType, f: Function, key: &str, value: Value, error: Option<String>) -> Entry {
        Entry { entry_type, process: self.process, time: self.clock.ns(), f, key: key.to_string(), value, error }
    }

    async fn run(mut self) {
        let peer = 1 + self.process % PEERS;
        let mut client = None;
        let mut written = 0i64;
        while !self.stop.load(Ordering::Relaxed) {
            if client.is_none() {
                client = tokio::time::timeout(OPERATION_TIMEOUT, Client::connect(&addr(peer))).await.ok().and_then(Result::ok);
                if client.is_none() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            let c = client.as_mut().expect("connected");
            let name = format!("r{}", self.rng.random_range(0..self.keys));
            let k = key("ConfigMap", "chaos", &name);
            let roll = self.rng.random_range(0..4);
            let (f, invoked) = match roll {
                0 | 1 => (Function::Read, Value::Null),
                2 => {
                    written += 1;
                    (Function::Write, Value::from(self.process as i64 * 1_000_000 + written))
                }
                _ => (Function::Cas, json!([self.rng.random_range(0..5), self.rng.random_range(0..5)])),
            };
            let _ = self.history.send(self.entry(EntryType::Invoke, f, &name, invoked.clone(), None)).await;
            let done = match f {
                Function::Read => {
                    let read = tokio::time::timeout(OPERATION_TIMEOUT, c.get(k, self.stale_reads)).await;
                    match read {
                        Ok(Ok(found)) => {
                            let value = found.map_or(Value::Null, |j| register_value(&j).0);
                            self.entry(EntryType::Ok, f, &name, value, None)
                        }
                        // A read changes nothing: whatever happened, it failed.
                        Ok(Err(e)) => self.entry(EntryType::Fail, f, &name, Value::Null, Some(e.to_string())),
                        Err(_) => self.entry(EntryType::Fail, f, &name, Value::Null, Some("timed out".into())),
                    }
                }
                Function::Write => {
                    let object = register_object(invoked.as_i64().unwrap_or(0));
                    match tokio::time::timeout(OPERATION_TIMEOUT, c.put(k, object, Expect::Anything)).await {
                        Ok(Ok(_)) => self.entry(EntryType::Ok, f, &name, invoked, None),
                        Ok(Err(e)) if definitely_not_applied(&e) => self.entry(EntryType::Fail, f, &name, invoked, Some(e.to_string())),
                        Ok(Err(e)) => self.entry(EntryType::Info, f, &name, invoked, Some(e.to_string())),
                        Err(_) => self.entry(EntryType::Info, f, &name, invoked, Some("timed out".into())),
                    }
                }
                Function::Cas => self.cas(&name, invoked).await,
            };
            let failed_to_reach = done.entry_type != EntryType::Ok;
            let _ = self.history.send(done).await;
            if failed_to_reach {
                // A fresh connection after trouble: the old one may be to a
                // peer that was restarted.
                client = None;
            }
        }
    }

    /// Compare-and-set on the value: a linearizable read, then a write
    /// conditional on the revision read, so it lands only if nothing
    /// changed in between.
    async fn cas(&mut self, name: &str, invoked: Value) -> Entry {
        let f = Function::Cas;
        let [expected, new] = [invoked[0].clone(), invoked[1].clone()];
        let k = key("ConfigMap", "chaos", name);
        let mut client = match tokio::time::timeout(OPERATION_TIMEOUT, Client::connect(&addr(1 + self.process % PEERS))).await {
            Ok(Ok(c)) => c,
            _ => return self.entry(EntryType::Fail, f, name, invoked, Some("cannot connect".into())),
        };
        let current = match tokio::time::timeout(OPERATION_TIMEOUT, client.get(k.clone(), false)).await {
            Ok(Ok(found)) => found.map(|j| register_value(&j)),
            Ok(Err(e)) => return self.entry(EntryType::Fail, f, name, invoked, Some(e.to_string())),
            Err(_) => return self.entry(EntryType::Fail, f, name, invoked, Some("read timed out".into())),
        };
        let Some((_, revision)) = current.filter(|(v, _)| *v == expected) else {
            return self.entry(EntryType::Fail, f, name, invoked, Some("value differs".into()));
        };
        let object = register_object(new.as_i64().unwrap_or(0));
        match tokio::time::timeout(OPERATION_TIMEOUT, client.put(k, object, Expect::Revision(revision))).await {
            Ok(Ok(_)) => self.entry(EntryType::Ok, f, name, invoked, None),
            Ok(Err(e)) if definitely_not_applied(&e) => self.entry(EntryType::Fail, f, name, invoked, Some(e.to_string())),
            Ok(Err(e)) => self.entry(EntryType::Info, f, name, invoked, Some(e.to_string())),
            Err(_) => self.entry(EntryType::Info, f, name, invoked, Some("timed out".into())),
        }
    }
}

/// Injects one fault after another until `stop`, each for a few seconds,
/// chosen by `rng`; returns the fault log.
async fn nemesis(project: String, kinds: Vec<Nemesis>, mut rng: StdRng, clock: Clock, stop: Arc<AtomicBool>) -> anyhow::Result<Vec<Value>> {
    let mut log = Vec::new();
    if kinds.is_empty() {
        return Ok(log);
    }
    let ids: Vec<String> = (1..=PEERS).map(|p| compose(&project, &["ps", "--quiet", &format!("peer{p}")])).collect::<anyhow::Result<_>>()?;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..4_000))).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let kind = kinds[rng.random_range(0..kinds.len())];
        let hold = Duration::from_millis(rng.random_range(2_000..6_000));
        let mut order: Vec<usize> = (0..PEERS as usize).collect();
        order.shuffle(&mut rng);
        let victim = order[0];
        let peers: Vec<u64> = match kind {
            Nemesis::Partition => order[..2].iter().map(|i| *i as u64 + 1).collect(),
            _ => vec![victim as u64 + 1],
        };
        log.push(json!({"time": clock.ns(), "fault": format!("{kind:?}").to_lowercase(), "phase": "start", "peers": peers}));
        println!("{:>7.1} s  nemesis: {kind:?} {peers:?} for {:.1} s", clock.ns() as f64 / 1e9, hold.as_secs_f64());
        match kind {
            Nemesis::Partition => {
                let containers: Vec<Container> = ids.iter().map(|id| Container::inspect(id)).collect::<Result<_, _>>()?;
                let small: Vec<&Container> = order[..2].iter().map(|i| &containers[*i]).collect();
                let large: Vec<&Container> = order[2..].iter().map(|i| &containers[*i]).collect();
                partition(&small, &large)?;
                tokio::time::sleep(hold).await;
                heal_all(&containers.iter().collect::<Vec<_>>())?;
            }
            Nemesis::Kill => {
                docker(&["kill", "--signal", "KILL", &ids[victim]])?;
                tokio::time::sleep(hold).await;
                docker(&["start", &ids[victim]])?;
            }
            Nemesis::Pause => {
                docker(&["pause", &ids[victim]])?;
                tokio::time::sleep(hold).await;
                docker(&["unpause", &ids[victim]])?;
            }
        }
        log.push(json!({"time": clock.ns(), "fault": format!("{kind:?}").to_lowercase(), "phase": "end", "peers": peers}));
    }
    Ok(log)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(rand::random);
    HOST_IP.set(args.host_ip.clone()).expect("set once");
    println!("chaos: seed {seed}, {:?} workload, nemesis {:?}, {} s", args.workload, args.nemesis, args.time_limit);
    if !Command::new("docker").args(["image", "inspect", "flotilla:local"]).output().is_ok_and(|o| o.status.success()) {
        bail!("no flotilla:local image: build it with scripts/image.sh");
    }
    compose(&args.project, &["up", "--detach"])?;
    let outcome = run(&args, seed).await;
    if !args.keep {
        compose(&args.project, &["down", "--volumes", "--timeout", "5"])?;
    }
    let valid = outcome?;
    let flags = if args.stale_reads { " --stale-reads" } else { "" };
    let nemeses: Vec<String> = args.nemesis.iter().map(|n| format!("{n:?}").to_lowercase()).collect();
    println!(
        "reproduce: cargo run -p flotilla-chaos -- --seed {seed} --time-limit {} --nemesis {} --clients {} --keys {}{flags}",
        args.time_limit,
        nemeses.join(","),
        args.clients,
        args.keys
    );
    match valid {
        Verdict::Valid => Ok(()),
        other => bail!("the history is not valid: {other:?}"),
    }
}

async fn run(args: &Args, seed: u64) -> anyhow::Result<Verdict> {
    let leader = wait_for_leader().await?;
    println!("cluster up: peer {leader} leads");
    let dir = args.out.join(seed.to_string());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let clock = Clock(Instant::now());
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel(HISTORY_BUFFER);
    let mut clients = Vec::new();
    for process in 0..args.clients {
        let task = ClientTask {
            process,
            keys: args.keys,
            stale_reads: args.stale_reads,
            clock,
            stop: stop.clone(),
            history: tx.clone(),
            rng: StdRng::seed_from_u64(seed.wrapping_add(process + 1)),
        };
        clients.push(tokio::spawn(task.run()));
    }
    drop(tx);
    let faults = tokio::spawn(nemesis(args.project.clone(), args.nemesis.clone(), StdRng::seed_from_u64(seed), clock, stop.clone()));
    let collect = tokio::spawn(async move {
        let mut entries = Vec::new();
        while let Some(e) = rx.recv().await {
            entries.push(e);
        }
        entries
    });
    tokio::time::sleep(Duration::from_secs(args.time_limit)).await;
    stop.store(true, Ordering::Relaxed);
    let fault_log = faults.await??;
    for c in clients {
        c.await?;
    }
    let history = collect.await?;

    let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl"))?);
    write_jsonl(&mut file, &history)?;
    let faults_text: String = fault_log.iter().map(|f| format!("{f}\n")).collect();
    std::fs::write(dir.join("faults.jsonl"), faults_text)?;
    let result = check_registers(&history, DEFAULT_STEP_BUDGET)?;
    let valid = result.valid.clone();
    let count = |t: EntryType| history.iter().filter(|e| e.entry_type == t).count();
    let summary = json!({
        "seed": seed,
        "valid": result.valid,
        "workload": "register",
        "operations": count(EntryType::Invoke),
        "ok": count(EntryType::Ok),
        "fail": count(EntryType::Fail),
        "info": count(EntryType::Info),
        "faults": fault_log.len() / 2,
        "stale_reads": args.stale_reads,
        "linearizability": result,
    });
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(&summary)?)?;
    println!(
        "{} operations ({} ok, {} fail, {} info), {} faults: valid {:?}; results in {}",
        summary["operations"], summary["ok"], summary["fail"], summary["info"], summary["faults"], summary["valid"], dir.display()
    );
    if let Some(example) = &summary["linearizability"]["counter_example"].as_object() {
        println!("counter-example: {}", serde_json::to_string(example)?);
    }
    Ok(valid)
}
