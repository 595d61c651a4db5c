//! Three real peers: election, replication, crash recovery and catch-up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_blackbox::{Cluster, Code, Expect, Options, config_map, key, value_of};

const FORM: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_elect_one_leader_and_writes_through_any_peer_reach_every_peer() {
    let cluster = Cluster::start(3, Options::default());
    let leader = cluster.wait_leader(FORM).await;
    let status = cluster.wait_status(leader, "three voters", FORM, |s| s.voters.len() == 3).await;
    assert_eq!(status.voters, vec![1, 2, 3]);
    assert!(status.learners.is_empty());
    assert!(status.term >= 1);

    for via in 1..=3u64 {
        let mut c = cluster.client(via).await;
        c.put(key("ConfigMap", "default", &format!("from-{via}")), config_map(&via.to_string()), Expect::Absent)
            .await
            .unwrap_or_else(|e| panic!("write through peer {via}: {e}"));
    }
    for reader in 1..=3u64 {
        let mut c = cluster.client(reader).await;
        for writer in 1..=3u64 {
            let got = c.get(key("ConfigMap", "default", &format!("from-{writer}")), false).await.unwrap();
            assert_eq!(value_of(&got.expect("present")), writer.to_string(), "linearizable read on peer {reader}");
        }
        let (items, revision) = c.list("ConfigMap", Some("default"), false).await.unwrap();
        assert_eq!(items.len(), 3);
        assert!(revision >= 3);
    }
    // Every peer reports the same leader through `cluster status`.
    let mut seen = Vec::new();
    for via in 1..=3u64 {
        seen.push(cluster.client(via).await.status().await.unwrap().leader);
    }
    assert!(seen.iter().all(|l| *l == leader), "{seen:?}");
}

/// Acknowledged writes, per key, in the order they were acknowledged.
type Acked = Arc<Mutex<BTreeMap<String, u64>>>;

/// Writers hammer the cluster through every peer while the leader is
/// SIGKILLed and restarted again and again. Every acknowledged write must
/// be present afterwards on every peer, including the restarted ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_repeated_leader_kills_under_a_write_storm() {
    let mut cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    let acked: Acked = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..6u64 {
        let addr = cluster.addr_of(w % 3 + 1);
        let acked = acked.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut client = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if client.is_none() {
                    client = flotilla_client::Client::connect(&addr).await.ok();
                    if client.is_none() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
                let name = format!("w{w}-{}", n % 40);
                n += 1;
                let c = client.as_mut().expect("connected");
                match c.put(key("ConfigMap", "storm", &name), config_map(&n.to_string()), Expect::Anything).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(name, n);
                    }
                    Err(e) if e.code() == Code::Unavailable => {
                        client = None;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    // Unknown outcome: if it lands, Raft orders it before
                    // this writer's later writes, whose values are larger.
                    Err(_) => client = None,
                }
            }
        }));
    }
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let leader = cluster.wait_leader(FORM).await;
        cluster.kill(leader);
        let next = cluster.wait_leader(FORM).await;
        assert_ne!(next, leader, "round {round}: a new leader among the survivors");
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.restart(leader);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 100, "the storm wrote too little to prove anything: {}", acked.len());

    let leader = cluster.wait_leader(FORM).await;
    let commit = cluster.client(leader).await.local_status().await.unwrap().commit_index;
    for id in 1..=3u64 {
        cluster.wait_status(id, "catch-up", FORM, |s| s.last_applied >= commit).await;
        let mut c = cluster.client(id).await;
        let (items, _) = c.list("ConfigMap", Some("storm"), true).await.unwrap();
        let stored: BTreeMap<String, u64> = items
            .iter()
            .map(|j| {
                let v: serde_json::Value = serde_json::from_str(j).unwrap();
                (v["metadata"]["name"].as_str().unwrap().to_string(), value_of(j).parse().unwrap())
            })
            .collect();
        for (name, n) in &acked {
            let have = stored.get(name).unwrap_or_else(|| panic!("peer {id} lost acknowledged key {name}"));
            assert!(have >= n, "peer {id}: {name} holds {have}, older than the acknowledged {n}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_fell_far_behind_catches_up_through_a_snapshot() {
    let options = Options { snapshot_after_logs: 200, keep_logs_after_snapshot: 20, ..Options::default() };
    let mut cluster = Cluster::start(3, options);
    let leader = cluster.wait_leader(FORM).await;
    let behind = (1..=3).find(|&id| id != leader).unwrap();
    cluster.stop(behind);
    let via = (1..=3).find(|&id| id != behind).unwrap();
    let mut c = cluster.client(via).await;
    for i in 0..1_000u64 {
        c.put(key("ConfigMap", "bulk", &format!("k{i}")), config_map(&i.to_string()), Expect::Anything).await.unwrap();
    }
    let commit = c.local_status().await.unwrap().commit_index;
    cluster.restart(behind);
    cluster.wait_status(behind, "catch-up", FORM, |s| s.last_applied >= commit).await;
    let mut b = cluster.client(behind).await;
    let (items, _) = b.list("ConfigMap", Some("bulk"), true).await.unwrap();
    assert_eq!(items.len(), 1_000);
    assert_eq!(value_of(&b.get(key("ConfigMap", "bulk", "k999"), true).await.unwrap().unwrap()), "999");
    assert!(
        cluster.peer(behind).log_text().contains("installing snapshot"),
        "the lagging peer should have caught up from a snapshot, not the log:\n{}",
        cluster.logs_tail()
    );
    assert!(cluster.peer(behind).data_dir.join("snapshot.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_keeps_its_state_without_rebootstrapping() {
    let mut cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    let before = cluster.client(1).await.status().await.unwrap().cluster_id;
    let mut c = cluster.client(2).await;
    c.put(key("ConfigMap", "default", "kept"), config_map("yes"), Expect::Absent).await.unwrap();
    for id in 1..=3 {
        let stopped = cluster.stop(id);
        assert_eq!(stopped, Some(0), "peer {id} stops cleanly on SIGTERM:\n{}", cluster.logs_tail());
    }
    for id in 1..=3 {
        cluster.restart(id);
    }
    cluster.wait_leader(FORM).await;
    let mut c = cluster.client(3).await;
    let status = c.status().await.unwrap();
    assert_eq!(status.cluster_id, before, "a restart never re-initialises");
    assert_eq!(value_of(&c.get(key("ConfigMap", "default", "kept"), false).await.unwrap().unwrap()), "yes");
    assert_eq!(cluster.peer(1).log_text().matches("bootstrapped the cluster").count(), 1);
}

/// Writes `from..to` through `via`, each retried for a bounded time: a
/// write may meet a leader change, never a cluster that stopped accepting.
async fn write_range(cluster: &Cluster, via: u64, from: u64, to: u64) {
    let mut c = cluster.client(via).await;
    for i in from..to {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match c.put(key("ConfigMap", "frozen", &format!("k{i}")), config_map(&i.to_string()), Expect::Anything).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("write k{i}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("write k{i} not accepted within 10 s: {e}\n{}", cluster.logs_tail()),
            }
        }
    }
}

/// Replication runs on one long-lived stream per follower. A follower that
/// stops answering (SIGSTOP: its socket stays open, nothing comes back)
/// must fail its stream without holding up the leader, and once thawed it
/// must catch up and carry the quorum on a fresh stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_follower_neither_stalls_the_leader_nor_misses_writes_once_thawed() {
    let cluster = Cluster::start(3, Options::default());
    let leader = cluster.wait_leader(FORM).await;
    let followers: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let (first, second) = (followers[0], followers[1]);
    write_range(&cluster, leader, 0, 50).await;

    cluster.pause(first);
    write_range(&cluster, leader, 50, 100).await;
    cluster.resume(first);
    let commit = cluster.client(leader).await.local_status().await.unwrap().commit_index;
    cluster.wait_status(first, "the thawed follower catches up", FORM, |s| s.last_applied >= commit).await;

    // Now the quorum needs the follower that was frozen.
    cluster.pause(second);
    write_range(&cluster, leader, 100, 150).await;
    cluster.resume(second);

    let mut f = cluster.client(first).await;
    let (items, _) = f.list("ConfigMap", Some("frozen"), false).await.unwrap();
    assert_eq!(items.len(), 150);
    for i in [0u64, 99, 149] {
        let got = f.get(key("ConfigMap", "frozen", &format!("k{i}")), true).await.unwrap().expect("present");
        assert_eq!(value_of(&got), i.to_string());
    }
}
