//! Scheduling throughput: three voters with fsync, the fake runtime, and
//! many simulated ("hollow") Nodes that exist only as objects, as
//! Kubernetes' scheduler_perf does. A ReplicaSet is scaled from 0 to N and
//! the figure is Pods bound per second: the controller creating the Pods,
//! the scheduler placing them, and both committed through Raft.

use std::time::{Duration, Instant};

use flotilla_blackbox::{Cluster, Expect, Options, key};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::ms;

/// Hollow Nodes never heartbeat: the peers' timings are stretched so that
/// none is declared NotReady during a run.
const LONG_TIMING: &str = "node_heartbeat_ms = 100\nnot_ready_after_ms = 3600000\nfence_after_ms = 3600000\nlost_after_ms = 3601000\n";
/// Node objects written at once while the cluster is set up.
const NODE_WRITERS: usize = 32;
const HOLLOW_LABEL: &str = "flotilla.io/hollow";
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

pub async fn schedule(nodes: usize, pods: usize) -> anyhow::Result<Value> {
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

    let mut created = 0usize;
    let mut bound = std::collections::HashSet::with_capacity(pods);
    let mut last_created = Duration::ZERO;
    let mut max_rss = 0u64;
    let mut progress = Vec::new();
    let mut next_report = Duration::from_secs(1);
    while bound.len() < pods {
        let event = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .map_err(|_| anyhow::anyhow!("no Pod changed for 30 s: {created} created, {} of {pods} bound", bound.len()))?
            .ok_or_else(|| anyhow::anyhow!("the watch ended"))??;
        let pod: Value = serde_json::from_str(&event.object_json)?;
        let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if event.r#type == flotilla_client::api::EventType::Added as i32 {
            created += 1;
            last_created = t0.elapsed();
        }
        if pod.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty()) {
            bound.insert(name);
        }
        let now = t0.elapsed();
        if now >= next_report {
            max_rss = max_rss.max(peer.rss_bytes().unwrap_or(0));
            println!("{:>6.1} s: {created:>7} created, {:>7} bound", now.as_secs_f64(), bound.len());
            progress.push(json!({"seconds": now.as_secs_f64(), "created": created, "bound": bound.len()}));
            next_report = now + Duration::from_secs(1);
        }
        anyhow::ensure!(now < RUN_LIMIT, "gave up after {RUN_LIMIT:?} with {} of {pods} bound", bound.len());
    }
    let took = t0.elapsed();
    max_rss = max_rss.max(peer.rss_bytes().unwrap_or(0));
    let cpu = peer.cpu_seconds().unwrap_or(0.0) - cpu_before;
    let bound_per_sec = pods as f64 / took.as_secs_f64();
    println!(
        "{pods} Pods on {nodes} nodes: all bound after {:.2} s: {bound_per_sec:.0} Pods bound/s (all created after {:.2} s); leader used {cpu:.1} s of CPU ({:.0}% of one core), RSS up to {:.0} MiB",
        took.as_secs_f64(),
        last_created.as_secs_f64(),
        100.0 * cpu / took.as_secs_f64(),
        max_rss as f64 / (1 << 20) as f64
    );
    Ok(json!({
        "bench": format!("schedule-{nodes}-nodes-{pods}-pods"),
        "nodes": nodes,
        "pods": pods,
        "seconds": took.as_secs_f64(),
        "all_created_ms": ms(last_created),
        "bound_per_sec": bound_per_sec,
        "leader_cpu_seconds": cpu,
        "leader_max_rss_bytes": max_rss,
        "progress": progress,
    }))
}
