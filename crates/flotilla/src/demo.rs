//! `flotilla up --demo`: what Flotilla is for, in a minute. A Deployment
//! is scheduled over the local peers and run as host processes; then one
//! peer is killed and its Pods come back on the others (on one peer there
//! is nowhere to go, so that step is skipped).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use flotilla_client::Client;
use flotilla_client::api::ApplyRequest;
use serde_json::Value;

use crate::local_peer::LocalPeer;

const REPLICAS: usize = 6;
/// Longest each stage of the demo may take before it gives up.
const STAGE_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

fn manifest() -> String {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "demo"},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": "demo"}},
            "template": {
                "metadata": {"labels": {"app": "demo"}},
                "spec": {"containers": [{
                    "name": "demo",
                    "image": "busybox",
                    "command": ["sh", "-c", "echo serving from $HOSTNAME; exec sleep 3600"],
                    "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}}
                }]}
            }
        }
    })
    .to_string()
}

/// Running, not terminating demo Pods by node.
async fn running(client: &mut Client) -> anyhow::Result<(BTreeMap<String, Vec<String>>, usize)> {
    let (items, _) = client.list_selected("Pod", Some("default"), "app=demo", 0, false).await?;
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut total = 0;
    for json in items {
        let pod: Value = serde_json::from_str(&json)?;
        total += 1;
        let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        if phase == "Running" && pod.pointer("/metadata/deletionTimestamp").is_none() {
            let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("").to_string();
            by_node.entry(node).or_default().push(pod["metadata"]["name"].as_str().unwrap_or("").to_string());
        }
    }
    Ok((by_node, total))
}

/// Waits until `REPLICAS` demo Pods run and `accept` holds, showing
/// progress on one line.
async fn wait_running(
    client: &mut Client,
    what: &str,
    accept: impl Fn(&BTreeMap<String, Vec<String>>) -> bool,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let deadline = Instant::now() + STAGE_TIMEOUT;
    loop {
        let (by_node, _) = running(client).await.unwrap_or_default();
        let n: usize = by_node.values().map(Vec::len).sum();
        print!("\r  {what}: {n}/{REPLICAS} Running   ");
        std::io::stdout().flush().ok();
        if n == REPLICAS && accept(&by_node) {
            println!();
            return Ok(by_node);
        }
        if Instant::now() > deadline {
            println!();
            bail!("{what}: only {n}/{REPLICAS} Pods Running after {}s", STAGE_TIMEOUT.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every peer's node registered and Ready, so the Pods spread over all.
async fn wait_nodes_ready(client: &mut Client, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + STAGE_TIMEOUT;
    loop {
        let (items, _) = client.list("Node", None, false).await?;
        let ready = items
            .iter()
            .filter_map(|j| serde_json::from_str::<Value>(j).ok())
            .filter(|n| {
                n.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
            .count();
        if ready >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {count} nodes Ready after {}s", STAGE_TIMEOUT.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}

fn print_placement(by_node: &BTreeMap<String, Vec<String>>) {
    for (node, pods) in by_node {
        println!("    {node:<8} {}", pods.join("  "));
    }
}

pub async fn run(exe: &Path, peers: &mut [LocalPeer]) -> anyhow::Result<()> {
    let mut client = Client::connect(&peers[0].addr).await?;
    println!();
    if peers.len() == 1 {
        println!("Demo: a Deployment of {REPLICAS} Pods (host processes) on one peer.");
    } else {
        println!("Demo: a Deployment of {REPLICAS} Pods (host processes), then a peer is killed.");
    }
    wait_nodes_ready(&mut client, peers.len()).await?;
    let applied = client
        .apply(ApplyRequest { object_json: manifest(), namespace: "default".into(), ..Default::default() })
        .await?;
    let action = ["created", "configured", "unchanged"].get(applied.action as usize).copied().unwrap_or("applied");
    println!("  deployment.apps/demo {action}");
    let started = Instant::now();
    let placed = wait_running(&mut client, "scheduled and started", |_| true).await?;
    println!("  {REPLICAS} Pods Running after {} ms:", started.elapsed().as_millis());
    print_placement(&placed);

    if peers.len() == 1 {
        println!("  Killing a peer is skipped: with one peer, its Pods have no other machine to come back on.");
        println!("  Start more (flotilla up --peers 3 --demo) to see Pods move when a peer dies.");
        println!();
        return Ok(());
    }
    let status = client.status().await?;
    let victim = placed
        .keys()
        .filter_map(|node| node.strip_prefix("peer-").and_then(|id| id.parse::<u64>().ok()))
        .find(|id| *id != status.leader && peers.iter().any(|p| p.id == *id));
    let Some(victim) = victim else {
        println!("  every Pod runs on the leader; nothing to show by killing a follower");
        return Ok(());
    };
    let victim_node = format!("peer-{victim}");
    let index = peers.iter().position(|p| p.id == victim).expect("the victim is one of ours");
    println!("  SIGKILL peer {victim}, which runs {} of the Pods", placed[&victim_node].len());
    peers[index].child.kill().await?;
    let killed = Instant::now();
    let survivor = peers.iter().find(|p| p.id != victim).expect("another peer").addr.clone();
    let mut client = Client::connect(&survivor).await?;
    let healed = wait_running(&mut client, "rescheduling", |by_node| !by_node.contains_key(&victim_node)).await?;
    println!("  all {REPLICAS} Pods Running again {} ms after the kill:", killed.elapsed().as_millis());
    print_placement(&healed);

    let p = &mut peers[index];
    *p = LocalPeer::start(exe, p.id, &p.addr.clone(), p.config.clone(), p.log.clone())?;
    println!("  peer {victim} restarted; it rejoins and takes new Pods. Try: flotilla get pods -o wide");
    println!();
    Ok(())
}
