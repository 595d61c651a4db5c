//! Pod benchmarks on three peers: healing after a peer is killed (process
//! runtime), and the latency from creating a Pod to Running (process or
//! docker runtime).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_testkit::{Client, Cluster, Options, key};
use serde_json::{Value, json};

use crate::{Runtime, ms, percentile};

/// Longest any single wait may take before the benchmark gives up.
const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// How often the healing benchmark looks at the Pods: the figure's
/// resolution.
const HEAL_POLL: Duration = Duration::from_millis(20);

fn deployment(replicas: usize) -> String {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "heal", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "heal"}},
            "template": {
                "metadata": {"labels": {"app": "heal"}},
                "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}
            }
        }
    })
    .to_string()
}

/// Running, not terminating Pods of the benchmark by node.
async fn running_by_node(client: &mut Client, selector: &str) -> anyhow::Result<BTreeMap<String, usize>> {
    let (items, _) = client.list_selected("Pod", Some("default"), selector, 0, true).await?;
    let mut by_node = BTreeMap::new();
    for json in items {
        let pod: Value = serde_json::from_str(&json)?;
        let running = pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
        if running && pod.pointer("/metadata/deletionTimestamp").is_none() {
            let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("").to_string();
            *by_node.entry(node).or_insert(0) += 1;
        }
    }
    Ok(by_node)
}

async fn node_ready(client: &mut Client, node: &str) -> anyhow::Result<bool> {
    let Some(json) = client.get(key("Node", "", node), false).await? else { return Ok(false) };
    let node: Value = serde_json::from_str(&json)?;
    let conditions = node.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

pub async fn heal(kills: usize, replicas: usize) -> anyhow::Result<Value> {
    let mut cluster = Cluster::start(3, Options { node: "runtime = \"process\"\n".into(), ..Options::default() });
    println!("healing: 3 peers, process runtime, a Deployment of {replicas}; default timings (node heartbeat 100 ms, fence 1.2 s, lost 2 s)");
    let leader = cluster.wait_leader(WAIT_LIMIT).await;
    let mut client = cluster.client(leader).await;
    client.apply(flotilla_client::api::ApplyRequest { object_json: deployment(replicas), ..Default::default() }).await?;
    let mut samples = Vec::new();
    for k in 0..kills {
        let leader = cluster.wait_leader(WAIT_LIMIT).await;
        let mut client = cluster.client(leader).await;
        let deadline = Instant::now() + WAIT_LIMIT;
        // The victim: the follower running the most Pods.
        let (victim, count) = loop {
            let by_node = running_by_node(&mut client, "app=heal").await?;
            let total: usize = by_node.values().sum();
            let best = (1..=3u64)
                .filter(|id| *id != leader)
                .map(|id| (id, by_node.get(&format!("peer-{id}")).copied().unwrap_or(0)))
                .max_by_key(|(_, n)| *n)
                .expect("two followers");
            if total == replicas && best.1 > 0 {
                break best;
            }
            anyhow::ensure!(Instant::now() < deadline, "the Deployment did not settle: {by_node:?}");
            tokio::time::sleep(HEAL_POLL).await;
        };
        let victim_node = format!("peer-{victim}");
        let t0 = Instant::now();
        cluster.kill(victim);
        let took = loop {
            let by_node = running_by_node(&mut client, "app=heal").await?;
            if by_node.values().sum::<usize>() == replicas && !by_node.contains_key(&victim_node) {
                break t0.elapsed();
            }
            anyhow::ensure!(t0.elapsed() < WAIT_LIMIT, "Pods of {victim_node} not replaced within {WAIT_LIMIT:?}: {by_node:?}");
            tokio::time::sleep(HEAL_POLL).await;
        };
        println!("kill {:>2}: peer {victim} ran {count} Pods; all Running elsewhere after {:.0} ms", k + 1, ms(took));
        samples.push(took);
        cluster.restart(victim);
        let deadline = Instant::now() + WAIT_LIMIT;
        while !node_ready(&mut client, &victim_node).await? {
            anyhow::ensure!(Instant::now() < deadline, "{victim_node} did not come back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Spread the Pods again, so the next victim has some to lose.
        client.delete_object(key("Deployment", "default", "heal"), true).await?;
        let deadline = Instant::now() + WAIT_LIMIT;
        while !client.list_selected("Pod", Some("default"), "app=heal", 0, false).await?.0.is_empty() {
            anyhow::ensure!(Instant::now() < deadline, "the Deployment's Pods were not removed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        client.apply(flotilla_client::api::ApplyRequest { object_json: deployment(replicas), ..Default::default() }).await?;
    }
    let mut sorted = samples.clone();
    sorted.sort();
    let (p50, p99, max) = (ms(percentile(&sorted, 50.0)), ms(percentile(&sorted, 99.0)), ms(*sorted.last().expect("kills > 0")));
    println!("healing over {kills} kills: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms");
    Ok(json!({
        "bench": "heal",
        "kills": kills,
        "replicas": replicas,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": max,
        "samples_ms": samples.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
    }))
}

fn bare_pod(name: &str, image: &str) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "start"}},
        "spec": {"containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}]}
    })
    .to_string()
}

fn total_rss(cluster: &Cluster) -> u64 {
    cluster.peers.iter().filter_map(|p| p.rss_bytes()).sum()
}

/// The image the docker runtime runs: built locally by `scripts/image.sh`,
/// as no registry can be reached.
const DOCKER_IMAGE: &str = "flotilla:local";

pub async fn start(pods: usize, runtime: Runtime) -> anyhow::Result<Value> {
    let (name, image, options) = match runtime {
        // The process runtime records the image and runs the host's programs.
        Runtime::Process => ("process", "busybox", Options { node: "runtime = \"process\"\n".into(), ..Options::default() }),
        Runtime::Docker => {
            let found = std::process::Command::new("docker").args(["image", "inspect", DOCKER_IMAGE]).output()?;
            anyhow::ensure!(found.status.success(), "no {DOCKER_IMAGE} image: build it with scripts/image.sh");
            let options = Options {
                node: "runtime = \"docker\"\n".into(),
                node_name_prefix: format!("start{}", std::process::id()),
                ..Options::default()
            };
            ("docker", DOCKER_IMAGE, options)
        }
    };
    let cluster = Cluster::start(3, options);
    println!("start latency: 3 peers, {name} runtime; {pods} single-container Pods, created one at a time");
    let leader = cluster.wait_leader(WAIT_LIMIT).await;
    let mut client = cluster.client(leader).await;
    // Let the peers register and settle before measuring memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss = total_rss(&cluster) / 3;
    let mut watcher = cluster.client(leader).await;
    let mut samples = Vec::new();
    let mut rss_at_100 = None;
    for i in 0..pods {
        let pod_name = format!("start-{i}");
        let (_, revision) = client.list("Pod", Some("default"), false).await?;
        let mut events = watcher.watch("Pod", Some("default"), revision).await?;
        let t0 = Instant::now();
        client
            .apply(flotilla_client::api::ApplyRequest { object_json: bare_pod(&pod_name, image), create_only: true, ..Default::default() })
            .await?;
        let took = loop {
            let event = tokio::time::timeout(WAIT_LIMIT, events.message()).await??;
            let Some(event) = event else { anyhow::bail!("the watch ended") };
            let pod: Value = serde_json::from_str(&event.object_json)?;
            if pod["metadata"]["name"] == pod_name.as_str() && pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running") {
                break t0.elapsed();
            }
        };
        samples.push(took);
        if i + 1 == 100 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            rss_at_100 = Some(total_rss(&cluster) / 3);
        }
    }
    let mut sorted = samples.clone();
    sorted.sort();
    let (p50, p99, max) = (ms(percentile(&sorted, 50.0)), ms(percentile(&sorted, 99.0)), ms(*sorted.last().expect("pods > 0")));
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("create to Running over {pods} Pods: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");
    println!("peer RSS (mean of 3): idle {:.1} MiB, with 100 Pods in the cluster {:.1} MiB", mib(idle_rss), mib(rss_at_100.unwrap_or(0)));
    Ok(json!({
        "bench": format!("start-{name}"),
        "runtime": name,
        "pods": pods,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": max,
        "rss_idle_bytes": idle_rss,
        "rss_with_100_pods_bytes": rss_at_100,
        "samples_ms": samples.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
    }))
}
