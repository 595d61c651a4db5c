//! Scheduling throughput: three voters with fsync, the fake runtime, and
//! many simulated ("hollow") Nodes that exist only as objects, as
//! Kubernetes' scheduler_perf does. A ReplicaSet is scaled from 0 to N.
//! Two figures: Pods bound per second (the controller creating the Pods,
//! the scheduler placing them, both committed through Raft), and Pods
//! Running per second, with hollow kubelets, as Kubernetes' kubemark has
//! them: for each Pod bound to a hollow node, a client reports it Running
//! through the API as a node's agent with an instant runtime would.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use flotilla_testkit::{Cluster, Expect, Options, key};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

use crate::ms;
use crate::plot::{Axis, Series, line_chart};

/// Hollow Nodes never heartbeat: the peers' timings are stretched so that
/// none is declared NotReady during a run.
const LONG_TIMING: &str = "node_heartbeat_ms = 100\nnot_ready_after_ms = 3600000\nfence_after_ms = 3600000\nlost_after_ms = 3601000\n";
/// Node objects written at once while the cluster is set up.
const NODE_WRITERS: usize = 32;
const HOLLOW_LABEL: &str = "flotilla.io/hollow";
/// Concurrent hollow kubelets reporting Pods Running, spread over the peers.
const HOLLOW_KUBELETS: usize = 16;
/// Attempts at one status report before the benchmark gives up on it.
const REPORT_ATTEMPTS: usize = 10;
/// Wait before the next attempt, times the attempts so far.
const REPORT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest a run may take before the benchmark gives up.
const RUN_LIMIT: Duration = Duration::from_secs(900);

fn hollow_node(name: &str) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {HOLLOW_LABEL: "true", "kubernetes.io/hostname": name}},
        "status": {
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Hollow", "message": "a simulated node"}]
        }
    })
    .to_string()
}

fn replica_set(replicas: usize) -> String {
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "load", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "load"}},
            "template": {
                "metadata": {"labels": {"app": "load"}},
                "spec": {
                    "nodeSelector": {HOLLOW_LABEL: "true"},
                    "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]
                }
            }
        }
    })
    .to_string()
}

async fn register_hollow_nodes(cluster: &Cluster, leader: u64, count: usize) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for w in 0..NODE_WRITERS {
        let addr = cluster.addr_of(leader);
        tasks.push(tokio::spawn(async move {
            let mut client = flotilla_client::Client::connect(&addr).await?;
            for i in (w..count).step_by(NODE_WRITERS) {
                let name = format!("hollow-{i:05}");
                client.put(key("Node", "", &name), hollow_node(&name), Expect::Anything).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The Pod as an agent with an instant runtime reports it once its one
/// container runs.
fn running(mut pod: Value, now: &str) -> Value {
    let condition = |type_: &str| json!({"type": type_, "status": "True", "lastTransitionTime": now});
    pod["status"] = json!({
        "phase": "Running",
        "startTime": now,
        "conditions": [condition("PodScheduled"), condition("Initialized"), condition("ContainersReady"), condition("Ready")],
        "containerStatuses": [{"name": "c", "image": "busybox", "ready": true, "started": true, "restartCount": 0,
                               "state": {"running": {"startedAt": now}}}]
    });
    pod
}

/// Hollow kubelets: each takes bound Pods from `bound` and reports them
/// Running, compare-and-set on the revision it read, re-reading on a race.
fn start_hollow_kubelets(cluster: &Cluster, bound: mpsc::Receiver<Value>) -> Vec<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let bound = Arc::new(Mutex::new(bound));
    (0..HOLLOW_KUBELETS)
        .map(|i| {
            let addr = cluster.addr_of(1 + (i % 3) as u64);
            let bound = bound.clone();
            tokio::spawn(async move {
                let mut client = flotilla_client::Client::connect(&addr).await?;
                loop {
                    let Some(mut pod) = bound.lock().await.recv().await else { break };
                    let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    let k = key("Pod", "default", &name);
                    for attempt in 1..=REPORT_ATTEMPTS {
                        let revision: u64 = pod["metadata"]["resourceVersion"].as_str().unwrap_or("0").parse()?;
                        let now = flotilla_api::time::format_rfc3339(unix_ms());
                        match client.put(k.clone(), running(pod.clone(), &now).to_string(), Expect::Revision(revision)).await {
                            Ok(_) => break,
                            Err(e) if attempt == REPORT_ATTEMPTS => {
                                anyhow::bail!("could not report {name} Running in {REPORT_ATTEMPTS} attempts: {e}")
                            }
                            // Raced with another write to the Pod, or the
                            // cluster pushed back: wait, read it again.
                            Err(_) => {
                                tokio::time::sleep(REPORT_BACKOFF * attempt as u32).await;
                                match client.get(k.clone(), false).await {
                                    Ok(Some(current)) => pod = serde_json::from_str(&current)?,
                                    Ok(None) => break,
                                    Err(_) => {}
                                }
                            }
                        }
                    }
                }
                Ok(())
            })
        })
        .collect()
}

/// `runs` runs, each on a fresh cluster; the figures are the medians, and
/// the plot is the progress of the run whose bound rate is the median.
pub async fn schedule(nodes: usize, pods: usize, runs: usize, out: &Path) -> anyhow::Result<Value> {
    anyhow::ensure!(runs > 0, "at least one run");
    let mut results = Vec::with_capacity(runs);
    for run in 1..=runs {
        println!("run {run} of {runs}");
        results.push(schedule_once(nodes, pods).await?);
    }
    let figure = |r: &Value, field: &str| r[field].as_f64().unwrap_or(0.0);
    let mut by_bound: Vec<&Value> = results.iter().collect();
    by_bound.sort_by(|a, b| figure(a, "bound_per_sec").total_cmp(&figure(b, "bound_per_sec")));
    let middle = by_bound[by_bound.len() / 2];
    let median_of = |field: &str| crate::median(results.iter().map(|r| figure(r, field)).collect());
    let (bound_per_sec, running_per_sec) = (median_of("bound_per_sec"), median_of("running_per_sec"));
    println!("{pods} Pods on {nodes} nodes, median of {runs}: {bound_per_sec:.0} Pods bound/s, {running_per_sec:.0} Pods Running/s");

    let name = format!("schedule-{nodes}-nodes-{pods}-pods");
    let plot = out.join(format!("{name}.svg"));
    let progress = middle["progress"].as_array().cloned().unwrap_or_default();
    let line = |label: &str, colour, field: &str| Series {
        name: label.into(),
        colour,
        dashed: false,
        points: progress.iter().map(|p| (figure(p, "seconds"), figure(p, field))).collect(),
    };
    let series = [line("created", "#7f7f7f", "created"), line("bound", "#1f77b4", "bound"), line("Running", "#2ca02c", "running")];
    std::fs::write(&plot, line_chart(&format!("{pods} Pods on {nodes} nodes"), Axis::Linear("seconds"), &series))?;
    println!("plot: {}", plot.display());
    Ok(json!({
        "bench": name,
        "plot": plot.display().to_string(),
        "nodes": nodes,
        "pods": pods,
        "bound_per_sec": bound_per_sec,
        "running_per_sec": running_per_sec,
        "all_bound_ms": median_of("all_bound_ms"),
        "seconds": median_of("seconds"),
        "leader_cpu_seconds": median_of("leader_cpu_seconds"),
        "leader_max_rss_bytes": median_of("leader_max_rss_bytes"),
        "runs": results,
    }))
}

/// One run on a fresh cluster.
async fn schedule_once(nodes: usize, pods: usize) -> anyhow::Result<Value> {
    let options = Options { node: "runtime = \"fake\"\n".into(), timing: LONG_TIMING.into(), ..Options::default() };
    let cluster = Cluster::start(3, options);
    println!("scheduling: 3 voters on loopback with fsync, fake runtime, {nodes} hollow nodes, a ReplicaSet scaled 0 -> {pods}");
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    cluster.wait_nodes_ready(leader, 3, Duration::from_secs(30)).await;
    let t = Instant::now();
    register_hollow_nodes(&cluster, leader, nodes).await?;
    println!("{nodes} hollow nodes registered in {:.1} s", t.elapsed().as_secs_f64());

    let mut client = cluster.client(leader).await;
    let (_, revision) = client.list("Pod", Some("default"), false).await?;
    let mut events = client.watch("Pod", Some("default"), revision).await?;
    let peer = cluster.peer(leader);
    let cpu_before = peer.cpu_seconds().unwrap_or(0.0);
    let t0 = Instant::now();
    client.put(key("ReplicaSet", "default", "load"), replica_set(pods), Expect::Anything).await?;

    let (to_report, reports) = mpsc::channel(pods.max(1));
    let kubelets = start_hollow_kubelets(&cluster, reports);
    let mut created = 0usize;
    let mut bound = std::collections::HashSet::with_capacity(pods);
    let mut running = std::collections::HashSet::with_capacity(pods);
    let mut all_bound = None;
    let mut last_created = Duration::ZERO;
    let mut max_rss = 0u64;
    let mut progress = Vec::new();
    let mut next_report = Duration::from_secs(1);
    while running.len() < pods {
        let event = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .map_err(|_| anyhow::anyhow!("no Pod changed for 30 s: {created} created, {} bound, {} Running of {pods}", bound.len(), running.len()))?
            .ok_or_else(|| anyhow::anyhow!("the watch ended"))??;
        let pod: Value = serde_json::from_str(&event.object_json)?;
        let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if event.r#type == flotilla_client::api::EventType::Added as i32 {
            created += 1;
            last_created = t0.elapsed();
        }
        if pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running") {
            running.insert(name);
        } else if pod.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty()) && bound.insert(name) {
            if to_report.send(pod).await.is_err() {
                // Every hollow kubelet has stopped: one of them says why.
                for kubelet in kubelets {
                    kubelet.await??;
                }
                anyhow::bail!("the hollow kubelets stopped");
            }
            if bound.len() == pods {
                all_bound = Some(t0.elapsed());
            }
        }
        let now = t0.elapsed();
        if now >= next_report {
            max_rss = max_rss.max(peer.rss_bytes().unwrap_or(0));
            println!("{:>6.1} s: {created:>7} created, {:>7} bound, {:>7} Running", now.as_secs_f64(), bound.len(), running.len());
            progress.push(json!({"seconds": now.as_secs_f64(), "created": created, "bound": bound.len(), "running": running.len()}));
            next_report = now + Duration::from_secs(1);
        }
        anyhow::ensure!(now < RUN_LIMIT, "gave up after {RUN_LIMIT:?} with {} bound and {} Running of {pods}", bound.len(), running.len());
    }
    let took = t0.elapsed();
    drop(to_report);
    for kubelet in kubelets {
        kubelet.await??;
    }
    let all_bound = all_bound.unwrap_or(took);
    max_rss = max_rss.max(peer.rss_bytes().unwrap_or(0));
    let cpu = peer.cpu_seconds().unwrap_or(0.0) - cpu_before;
    let bound_per_sec = pods as f64 / all_bound.as_secs_f64();
    let running_per_sec = pods as f64 / took.as_secs_f64();
    println!(
        "{pods} Pods on {nodes} nodes: all bound after {:.2} s: {bound_per_sec:.0} Pods bound/s (all created after {:.2} s); all Running after {:.2} s: {running_per_sec:.0} Pods Running/s; leader used {cpu:.1} s of CPU ({:.0}% of one core), RSS up to {:.0} MiB",
        all_bound.as_secs_f64(),
        last_created.as_secs_f64(),
        took.as_secs_f64(),
        100.0 * cpu / took.as_secs_f64(),
        max_rss as f64 / (1 << 20) as f64
    );
    Ok(json!({
        "nodes": nodes,
        "pods": pods,
        "seconds": took.as_secs_f64(),
        "all_created_ms": ms(last_created),
        "all_bound_ms": ms(all_bound),
        "bound_per_sec": bound_per_sec,
        "running_per_sec": running_per_sec,
        "leader_cpu_seconds": cpu,
        "leader_max_rss_bytes": max_rss,
        "progress": progress,
    }))
}
