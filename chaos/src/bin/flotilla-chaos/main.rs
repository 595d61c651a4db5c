//! `flotilla-chaos`: runs workloads against the five-peer compose cluster
//! while nemeses inject faults, records everything, checks it, and writes
//! `results.json` and `report.html`.

mod cluster;
mod faults;
mod pods;
mod register;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use flotilla_chaos::history::{Entry, EntryType, write_jsonl};
use flotilla_chaos::invariants::{check_convergence, check_jobs, check_ordinals, ordinal_runs};
use flotilla_chaos::linearizable::{DEFAULT_STEP_BUDGET, Verdict, check_registers};
use flotilla_chaos::report::{self, ReportInput};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::cluster::{Clock, HOST_IP, compose, container_ids, copy_records, wait_for_leader};
use crate::faults::{Nemeses, Nemesis};
use crate::register::ClientTask;

/// Entries buffered between the clients and the history writer.
const HISTORY_BUFFER: usize = 4096;
/// Time after the last stamp for the StatefulSet's Pods to have written
/// it, before their records are read.
const RECORD_FLUSH: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Reads, writes and compare-and-sets on a few keys, checked for
    /// linearizability.
    Register,
    /// A StatefulSet whose Pods stamp the time while they run, checked for
    /// at most one running instance per ordinal.
    Statefulset,
    /// A Deployment whose ready replicas must return to the desired count
    /// within a bound after the faults heal.
    Deployment,
    /// Jobs run one after another, each completion counted exactly once.
    Job,
}

impl Workload {
    fn name(self) -> String {
        self.to_possible_value().expect("no variant is skipped").get_name().to_string()
    }
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
    /// Faults to draw from (`all`: every one).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    nemesis: Vec<String>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "register,statefulset,deployment,job")]
    workload: Vec<Workload>,
    /// Concurrent register clients (Jepsen's processes).
    #[arg(long, default_value_t = 10)]
    clients: u64,
    #[arg(long, default_value_t = 8)]
    keys: u64,
    /// Seconds the workloads may take to converge after the last heal.
    #[arg(long, default_value_t = 60)]
    converge_bound: u64,
    /// Reads from the contacted peer's own replica: not linearizable, so
    /// the checker must reject the run. Proves the checker can fail.
    #[arg(long)]
    stale_reads: bool,
    /// Where `<seed>/history.jsonl`, `faults.jsonl`, `results.json` and
    /// `report.html` go.
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

fn nemeses(names: &[String]) -> anyhow::Result<Vec<Nemesis>> {
    let mut kinds = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if name == "all" {
            kinds.extend(Nemesis::ALL);
        } else if name != "none" {
            kinds.push(Nemesis::from_str(name, true).map_err(|_| {
                let known: Vec<String> = Nemesis::ALL.iter().map(|n| n.name()).collect();
                anyhow::anyhow!("--nemesis: unknown {name:?}; one of all, none, {}", known.join(", "))
            })?);
        }
    }
    kinds.sort_by_key(|k| Nemesis::ALL.iter().position(|a| a == k));
    kinds.dedup();
    Ok(kinds)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kinds = nemeses(&args.nemesis)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    HOST_IP.set(args.host_ip.clone()).expect("set once");
    let nemesis_names: Vec<String> = kinds.iter().map(|n| n.name()).collect();
    let workload_names: Vec<String> = args.workload.iter().map(|w| w.name()).collect();
    println!("chaos: seed {seed}, workloads {}, nemeses {}, {} s", workload_names.join(","), nemesis_names.join(","), args.time_limit);
    if !Command::new("docker").args(["image", "inspect", "flotilla:local"]).output().is_ok_and(|o| o.status.success()) {
        bail!("no flotilla:local image: build it with scripts/image.sh");
    }
    compose(&args.project, &["up", "--detach"])?;
    let flags = if args.stale_reads { " --stale-reads" } else { "" };
    let reproduce = format!(
        "cargo run -p flotilla-chaos -- --seed {seed} --time-limit {} --nemesis {} --workload {} --clients {} --keys {}{flags}",
        args.time_limit,
        if nemesis_names.is_empty() { "none".to_string() } else { nemesis_names.join(",") },
        workload_names.join(","),
        args.clients,
        args.keys
    );
    let outcome = run(&args, kinds, seed, &reproduce).await;
    if !args.keep {
        compose(&args.project, &["down", "--volumes", "--timeout", "5"])?;
    }
    let valid = outcome?;
    println!("reproduce: {reproduce}");
    if !valid {
        bail!("the run is not valid: see the results above");
    }
    Ok(())
}

fn read_dir_texts(dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<(String, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_string_lossy().to_string(), std::fs::read_to_string(e.path()).ok()?)))
        .collect();
    files.sort();
    files
}

async fn run(args: &Args, kinds: Vec<Nemesis>, seed: u64, reproduce: &str) -> anyhow::Result<bool> {
    let leader = wait_for_leader().await?;
    println!("cluster up: peer {leader} leads");
    let dir = args.out.join(seed.to_string());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let has = |w: Workload| args.workload.contains(&w);
    let selected = pods::Selected { statefulset: has(Workload::Statefulset), deployment: has(Workload::Deployment), job: has(Workload::Job) };
    pods::start(selected).await?;

    let clock = Clock(Instant::now());
    let stop = Arc::new(AtomicBool::new(false));
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let finish_jobs = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel(HISTORY_BUFFER);
    let mut clients = Vec::new();
    if has(Workload::Register) {
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
    }
    drop(tx);
    let collect = tokio::spawn(async move {
        let mut entries: Vec<Entry> = Vec::new();
        while let Some(e) = rx.recv().await {
            entries.push(e);
        }
        entries
    });
    let sampler = tokio::spawn(pods::sample_replicas(selected, clock, stop_sampling.clone()));
    let jobs = selected.job.then(|| tokio::spawn(pods::run_jobs(stop.clone(), finish_jobs.clone())));
    let ids = container_ids(&args.project)?;
    let nemeses = Nemeses { kinds, ids: ids.clone(), rng: StdRng::seed_from_u64(seed), clock, stop: stop.clone() };
    let faults = tokio::spawn(nemeses.run());

    tokio::time::sleep(Duration::from_secs(args.time_limit)).await;
    stop.store(true, Ordering::Relaxed);
    let fault_log = faults.await??;
    println!("{:>7.1} s  faults healed; waiting for the workloads to converge", clock.secs());
    for c in clients {
        c.await?;
    }
    let history = collect.await?;
    // Convergence after the last heal: the sampler and the last Job go on
    // until every workload is back or the bound has passed.
    let settle_deadline = Instant::now() + Duration::from_secs(args.converge_bound);
    loop {
        let jobs_done = jobs.as_ref().is_none_or(|j| j.is_finished());
        if (jobs_done && replicas_back(selected).await) || Instant::now() > settle_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    finish_jobs.store(true, Ordering::Relaxed);
    // One more sample round shows the state the run ends in.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_sampling.store(true, Ordering::Relaxed);
    let samples = sampler.await?;
    let job_outcomes = match jobs {
        Some(j) => j.await?,
        None => Vec::new(),
    };
    tokio::time::sleep(RECORD_FLUSH).await;
    let records = dir.join("records");
    if selected.statefulset || selected.job {
        copy_records(&ids[0], &records)?;
    }

    let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl"))?);
    write_jsonl(&mut file, &history)?;
    let faults_text: String = fault_log.iter().map(|f| format!("{}\n", serde_json::to_string(f).expect("serializes"))).collect();
    std::fs::write(dir.join("faults.jsonl"), faults_text)?;
    let samples_text: String = samples.iter().map(|s| format!("{}\n", serde_json::to_string(s).expect("serializes"))).collect();
    std::fs::write(dir.join("replicas.jsonl"), samples_text)?;

    let mut verdicts = Vec::new();
    let mut results = serde_json::Map::new();
    let count = |t: EntryType| history.iter().filter(|e| e.entry_type == t).count();
    if has(Workload::Register) {
        let result = check_registers(&history, DEFAULT_STEP_BUDGET)?;
        let valid = match result.valid {
            Verdict::Valid => "valid",
            Verdict::Invalid => "invalid",
            Verdict::Unknown => "unknown",
        };
        let summary = format!("{} operations ({} ok, {} fail, {} info)", count(EntryType::Invoke), count(EntryType::Ok), count(EntryType::Fail), count(EntryType::Info));
        verdicts.push(report::Verdict { workload: "register".into(), valid: valid.into(), summary });
        if let Some(example) = &serde_json::to_value(&result)?["counter_example"].as_object() {
            println!("register counter-example: {}", serde_json::to_string(example)?);
        }
        results.insert(
            "register".into(),
            json!({"valid": valid, "operations": count(EntryType::Invoke), "ok": count(EntryType::Ok), "fail": count(EntryType::Fail), "info": count(EntryType::Info), "stale_reads": args.stale_reads, "linearizability": result}),
        );
    }
    let bound_ms = args.converge_bound * 1000;
    if selected.statefulset {
        let texts = read_dir_texts(&records.join("sts"));
        let runs = ordinal_runs(texts.iter().map(|(f, t)| (f.as_str(), t.as_str())));
        let ordinals = check_ordinals(&runs);
        let convergence = check_convergence("statefulset", &samples, &fault_log, bound_ms);
        let valid = ordinals.valid && convergence.valid && ordinals.ordinals as u64 == pods::STATEFULSET_REPLICAS;
        let summary = format!(
            "{} runs of {} ordinals, {} overlapping, {} unfenced; {} thawed runs refused by the fence ({} stamps); closest handover {}; {}",
            ordinals.runs,
            ordinals.ordinals,
            ordinals.overlaps.len(),
            ordinals.unfenced.len(),
            ordinals.fenced_runs,
            ordinals.refused_stamps,
            ordinals.closest_handover_ms.map_or("none".into(), |ms| format!("{ms:.0} ms")),
            convergence.error.clone().unwrap_or_else(|| format!("ready again at most {} after a heal", fmt_ms(convergence.slowest_ms))),
        );
        verdicts.push(report::Verdict { workload: "statefulset".into(), valid: valid_word(valid).into(), summary });
        results.insert("statefulset".into(), json!({"valid": valid_word(valid), "ordinals": ordinals, "convergence": convergence}));
    }
    if selected.deployment {
        let convergence = check_convergence("deployment", &samples, &fault_log, bound_ms);
        let summary = convergence.error.clone().unwrap_or_else(|| {
            format!("{} heals, ready again at most {} after each", convergence.recoveries.len(), fmt_ms(convergence.slowest_ms))
        });
        verdicts.push(report::Verdict { workload: "deployment".into(), valid: valid_word(convergence.valid).into(), summary });
        results.insert("deployment".into(), json!({"valid": valid_word(convergence.valid), "convergence": convergence}));
    }
    if selected.job {
        let mut outcomes = job_outcomes;
        for o in &mut outcomes {
            let text = std::fs::read_to_string(records.join("jobs").join(&o.name)).unwrap_or_default();
            o.recorded_runs = text.lines().count() as u64;
        }
        let check = check_jobs(&outcomes);
        let reruns: u64 = outcomes.iter().map(|o| o.recorded_runs.saturating_sub(o.completions)).sum();
        let summary = check.error.clone().unwrap_or_else(|| {
            format!("{} Jobs complete, each completion counted once ({reruns} Pods ran again after a fault)", check.completed)
        });
        verdicts.push(report::Verdict { workload: "job".into(), valid: valid_word(check.valid).into(), summary });
        results.insert("job".into(), json!({"valid": valid_word(check.valid), "check": check, "outcomes": outcomes}));
    }

    let all_valid = verdicts.iter().all(|v| v.valid == "valid");
    let overall = if all_valid {
        "valid"
    } else if verdicts.iter().any(|v| v.valid == "invalid") {
        "invalid"
    } else {
        "unknown"
    };
    let summary = json!({
        "seed": seed,
        "valid": overall,
        "reproduce": reproduce,
        "time_limit_s": args.time_limit,
        "nemeses": args.nemesis,
        "faults": fault_log.len(),
        "fault_counts": fault_counts(&fault_log),
        "workloads": Value::Object(results),
    });
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(&summary)?)?;
    let html = report::render(&ReportInput {
        title: format!("Flotilla chaos run {seed}"),
        seed,
        reproduce: reproduce.to_string(),
        duration_ns: clock.ns(),
        history: &history,
        faults: &fault_log,
        replicas: &samples,
        verdicts: &verdicts,
    });
    std::fs::write(dir.join("report.html"), html)?;
    if !all_valid {
        // The cluster goes down with the run: keep what explains a failure.
        if let Err(e) = dump_cluster(&args.project, &dir).await {
            eprintln!("cannot keep the cluster's state: {e}");
        }
    }
    for v in &verdicts {
        println!("{:<12} {:<8} {}", v.workload, v.valid, v.summary);
    }
    println!("{} faults; valid: {overall}; results in {}", fault_log.len(), dir.display());
    Ok(all_valid)
}

/// Writes every peer's log and the Pods, Jobs, Nodes and Events as the
/// cluster has them now into `dir`.
async fn dump_cluster(project: &str, dir: &Path) -> anyhow::Result<()> {
    std::fs::write(dir.join("peers.log"), compose(project, &["logs", "--no-color", "--tail", "5000"])?)?;
    let mut client = cluster::connect(1, Duration::from_secs(2)).await.context("no peer answers")?;
    let mut objects = serde_json::Map::new();
    for kind in ["Pod", "Job", "Node", "Event", "StatefulSet", "Deployment", "ReplicaSet"] {
        let (items, _) = client.list(kind, None, true).await?;
        let items: Vec<Value> = items.iter().filter_map(|j| serde_json::from_str(j).ok()).collect();
        objects.insert(kind.into(), Value::Array(items));
    }
    std::fs::write(dir.join("objects.json"), serde_json::to_string_pretty(&objects)?)?;
    println!("kept the peers' logs and the cluster's objects in {}", dir.display());
    Ok(())
}

fn valid_word(valid: bool) -> &'static str {
    if valid { "valid" } else { "invalid" }
}

fn fmt_ms(ms: Option<f64>) -> String {
    ms.map_or("-".into(), |ms| format!("{:.1} s", ms / 1e3))
}

fn fault_counts(faults: &[report::FaultWindow]) -> Value {
    let mut counts = std::collections::BTreeMap::<&str, u64>::new();
    for f in faults {
        *counts.entry(&f.fault).or_default() += 1;
    }
    json!(counts)
}

/// Whether the StatefulSet and the Deployment have every replica ready
/// now, asked of the cluster directly.
async fn replicas_back(selected: pods::Selected) -> bool {
    if !(selected.statefulset || selected.deployment) {
        return true;
    }
    pods::sample_once(selected, 0, 0).await.is_some_and(|samples| pods::all_ready(&samples, selected))
}
