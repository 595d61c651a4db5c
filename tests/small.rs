//! Small clusters: one peer alone, one voter with learners, and a
//! one-peer cluster growing to three and five voters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_blackbox::{Cluster, Expect, Options, apply, config_map, key, name, phase, seed_job, wait_pods};
use flotilla_client::node::ExecRequest;
use serde_json::Value;

const FORM: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(60);
/// The shipped `fence_after_ms`: a peer without a leader's answer for this
/// long kills its Pods.
const FENCE_WINDOW: Duration = Duration::from_millis(1_200);

/// A Deployment whose Pods record each start as a file `<pod>.<ns>` in
/// `dir`, then sleep: a restarted Pod leaves a second file.
fn recorders(dir: &std::path::Path, replicas: usize) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: rec}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: rec}}}}
  template:
    metadata: {{labels: {{app: rec}}}}
    spec:
      containers:
      - name: rec
        image: busybox
        command: ["sh", "-c", "touch /rec/$(hostname).$(date +%s%N); exec sleep 3600"]
        resources: {{requests: {{cpu: 10m}}}}
        volumeMounts: [{{name: rec, mountPath: /rec}}]
      volumes: [{{name: rec, hostPath: {{path: {}}}}}]
"#,
        dir.display()
    )
}

/// How many times each Pod has started, from the recorders' files.
fn starts(dir: &std::path::Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().to_string();
        *out.entry(file.rsplit_once('.').unwrap().0.to_string()).or_insert(0) += 1;
    }
    out
}

fn running(pods: &[Value]) -> Vec<&Value> {
    pods.iter().filter(|p| phase(p) == "Running" && p["metadata"]["deletionTimestamp"].is_null()).collect()
}

fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Whether every Node is Ready, read linearizably through peer `via`.
async fn all_nodes_ready(cluster: &Cluster, via: u64) -> Vec<(String, bool)> {
    let (items, _) = cluster.client(via).await.list("Node", None, false).await.unwrap();
    items
        .iter()
        .map(|j| serde_json::from_str::<Value>(j).unwrap())
        .map(|n| (n["metadata"]["name"].as_str().unwrap_or("").to_string(), node_ready(&n)))
        .collect()
}

/// Proves the Pod's container runs now, on the peer that holds it.
async fn exec_true(cluster: &Cluster, via: u64, pod: &str) -> Result<(), String> {
    let request =
        ExecRequest { namespace: "default".into(), pod: pod.into(), command: vec!["true".into()], timeout_ms: 5_000, ..Default::default() };
    match cluster.client(via).await.exec(request).await {
        Ok(r) if r.exit_code == 0 => Ok(()),
        Ok(r) => Err(format!("exit {}: {}", r.exit_code, String::from_utf8_lossy(&r.stderr))),
        Err(e) => Err(e.to_string()),
    }
}

/// Waits until every Pod `wait_pods` returns runs its container now.
async fn wait_exec(cluster: &Cluster, pods: &[String]) {
    let deadline = Instant::now() + SETTLE;
    for pod in pods {
        loop {
            match exec_true(cluster, 1, pod).await {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => panic!("{pod} does not run: {e}\n{}", cluster.logs_tail()),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// One peer from a fresh data directory, twenty times: its node is Ready
/// and stays Ready, the seed Job's Pod runs and keeps running past three
/// fence windows, and after a restart of the peer a Deployment's three
/// Pods all run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_peer_cluster_keeps_its_node_ready_and_its_pods_running_across_restarts() {
    for round in 1..=20 {
        let mut cluster = Cluster::start(1, Options::default());
        cluster.wait_leader(FORM).await;
        cluster.wait_nodes_ready(1, 1, FORM).await;
        apply(&cluster, 1, &seed_job());
        let job = wait_pods(&cluster, 1, "the seed Job's Pod running", SETTLE, |p| running(p).len() == 1).await;
        let (pod, uid) = (name(&job[0]).to_string(), job[0]["metadata"]["uid"].clone());

        tokio::time::sleep(FENCE_WINDOW * 3).await;
        let now = wait_pods(&cluster, 1, "the Job's Pod", SETTLE, |p| p.len() == 1).await;
        assert_eq!(phase(&now[0]), "Running", "round {round}: {:#}\n{}", now[0], cluster.logs_tail());
        assert_eq!(now[0]["metadata"]["uid"], uid, "round {round}: the Pod was replaced");
        assert_eq!(now[0].pointer("/status/containerStatuses/0/restartCount"), Some(&Value::from(0)), "round {round}: {:#}", now[0]);
        assert_eq!(all_nodes_ready(&cluster, 1).await, vec![("peer-1".to_string(), true)], "round {round}\n{}", cluster.logs_tail());
        exec_true(&cluster, 1, &pod).await.unwrap_or_else(|e| panic!("round {round}: {pod} is not running: {e}\n{}", cluster.logs_tail()));
        let log = cluster.peer(1).log_text();
        assert!(!log.contains("fencing"), "round {round}: the peer fenced itself:\n{log}");

        let dir = cluster.dir.path().join("runs");
        std::fs::create_dir(&dir).unwrap();
        apply(&cluster, 1, &recorders(&dir, 3));
        let rec = |p: &[Value]| running(p).iter().filter(|p| name(p).starts_with("rec-")).count();
        wait_pods(&cluster, 1, "three recorders running", SETTLE, |p| rec(p) == 3).await;
        // Running says the process began, not that its shell has written
        // its mark yet.
        let deadline = Instant::now() + SETTLE;
        while starts(&dir).len() < 3 {
            assert!(Instant::now() < deadline, "round {round}: starts before the restart {:?}", starts(&dir));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(cluster.stop(1), Some(0), "round {round}: the peer stops cleanly");
        cluster.restart(1);
        cluster.wait_leader(FORM).await;
        cluster.wait_nodes_ready(1, 1, SETTLE).await;
        let after = wait_pods(&cluster, 1, "four Pods running after the restart", SETTLE, |p| running(p).len() == 4).await;
        let names: Vec<String> = after.iter().map(|p| name(p).to_string()).collect();
        wait_exec(&cluster, &names).await;
        // Each recorder started again after the restart: twice in all.
        let deadline = Instant::now() + SETTLE;
        while starts(&dir).values().any(|n| *n < 2) {
            assert!(Instant::now() < deadline, "round {round}: starts {:?}", starts(&dir));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One voter and two learners (`max_voters = 1`): every node stays Ready
/// however long the learners are silent or not, and a learner cut off from
/// the voter fences its own Pods, as any peer does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_voter_with_learners_keeps_every_node_ready_and_a_cut_off_learner_fences() {
    let options = Options { max_voters: 1, fault_signals: true, ..Options::default() };
    let cluster = Cluster::start(3, options);
    cluster.wait_status(1, "one voter and two learners", FORM, |s| s.voters == vec![1] && s.learners == vec![2, 3]).await;
    cluster.wait_nodes_ready(1, 3, FORM).await;
    let pinned = |peer: u64| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: on-{peer}}}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: peer-{peer}}}\n  containers: [{{name: c, image: busybox, command: [sleep, '3600']}}]\n"
        )
    };
    for peer in 1..=3 {
        apply(&cluster, 1, &pinned(peer));
    }
    wait_pods(&cluster, 1, "a Pod on each node", SETTLE, |p| running(p).len() == 3).await;

    // The learners of one voter cut off: the voter keeps its lease alone.
    cluster.isolate(2, true);
    cluster.isolate(3, true);
    tokio::time::sleep(FENCE_WINDOW * 3).await;
    exec_true(&cluster, 1, "on-1").await.unwrap_or_else(|e| panic!("the voter's Pod stopped: {e}\n{}", cluster.logs_tail()));
    let voter_log = cluster.peer(1).log_text();
    assert!(!voter_log.contains("fencing"), "the voter fenced itself:\n{voter_log}");
    for learner in [2, 3] {
        let log = cluster.peer(learner).log_text();
        assert!(log.contains("killing every Pod on this node (fencing)"), "learner {learner} did not fence:\n{log}");
    }
    cluster.isolate(2, false);
    cluster.isolate(3, false);
    // Declared lost, the learners' Pods are gone for good (bare Pods are
    // not replaced); their nodes come back Ready.
    cluster.wait_nodes_ready(1, 3, SETTLE).await;
    let mut c = cluster.client(3).await;
    c.put(key("ConfigMap", "default", "after"), config_map("1"), Expect::Absent).await.unwrap();
    tokio::time::sleep(FENCE_WINDOW * 3).await;
    let ready = all_nodes_ready(&cluster, 2).await;
    assert!(ready.iter().all(|(_, r)| *r), "{ready:?}\n{}", cluster.logs_tail());
    exec_true(&cluster, 2, "on-1").await.unwrap_or_else(|e| panic!("the voter's Pod stopped: {e}\n{}", cluster.logs_tail()));
}

/// Two initial peers with room for three voters bootstrap as one voter and
/// a learner, never as two voters where losing either stops the cluster;
/// `cluster status` says what the cluster survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_are_one_voter_and_a_learner_and_status_says_what_they_survive() {
    let cluster = Cluster::start(2, Options::default());
    let status = cluster.wait_status(1, "both peers members", FORM, |s| s.has_leader && s.peers.len() == 2).await;
    assert_eq!((status.voters, status.learners, status.failures_tolerated), (vec![1], vec![2], 0));
    cluster.wait_nodes_ready(1, 2, FORM).await;
    let out = flotilla_blackbox::cli(&cluster.addr_of(2), &["cluster", "status"], None);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("survives no voter failure: writes stop while peer 1 (the one voter) is down"), "{table}");
}

/// A one-peer cluster with a running Deployment grows to three peers and
/// then five (`max_voters = 5`): the voters become 3, then 5, in single
/// steps (never 2 or 4); writes succeed throughout; no Pod restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_peer_cluster_grows_to_three_and_five_voters_without_restarting_a_pod() {
    let mut cluster = Cluster::start(1, Options { max_voters: 5, ..Options::default() });
    cluster.wait_leader(FORM).await;
    cluster.wait_nodes_ready(1, 1, FORM).await;
    let dir = cluster.dir.path().join("runs");
    std::fs::create_dir(&dir).unwrap();
    apply(&cluster, 1, &recorders(&dir, 3));
    let before = wait_pods(&cluster, 1, "three recorders running", SETTLE, |p| running(p).len() == 3).await;
    let uids: Vec<Value> = before.iter().map(|p| p["metadata"]["uid"].clone()).collect();

    // A writer through peer 1 for the whole growth: every write succeeds.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut c = cluster.client(1).await;
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let at = Instant::now();
                let written = c.put(key("ConfigMap", "default", &format!("w{n}")), config_map(&n.to_string()), Expect::Absent).await;
                if let Err(e) = written {
                    return Err(format!("write w{n} failed after {:?}: {e}", at.elapsed()));
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(n)
        })
    };
    let mut voter_counts = std::collections::BTreeSet::new();
    for (joiners, voters) in [(2..=3, 3usize), (4..=5, 5)] {
        for id in joiners {
            cluster.add_peer_process(id);
        }
        let deadline = Instant::now() + SETTLE;
        loop {
            let s = cluster.client(1).await.local_status().await.unwrap();
            voter_counts.insert(s.voters.len());
            assert!(s.has_leader && s.leader == 1, "the leader changed while the cluster grew: {s:?}\n{}", cluster.logs_tail());
            if s.voters.len() == voters && s.peers.len() == voters {
                break;
            }
            assert!(Instant::now() < deadline, "voters never became {voters}: {s:?}\n{}", cluster.logs_tail());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Out of the joint configuration, five voters survive two failures.
    let status = cluster.wait_status(4, "five voters, two failures survived", FORM, |s| s.failures_tolerated == 2).await;
    assert_eq!(status.voters, vec![1, 2, 3, 4, 5]);
    assert!(!voter_counts.contains(&2) && !voter_counts.contains(&4), "the voters passed through {voter_counts:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap().unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs_tail()));
    assert!(written > 0);

    let after = wait_pods(&cluster, 5, "the recorders", SETTLE, |p| running(p).len() == 3).await;
    let now: Vec<Value> = after.iter().map(|p| p["metadata"]["uid"].clone()).collect();
    assert_eq!(now, uids, "the Deployment's Pods were replaced");
    for p in &after {
        assert_eq!(p.pointer("/status/containerStatuses/0/restartCount"), Some(&Value::from(0)), "{p:#}");
    }
    assert!(starts(&dir).values().all(|n| *n == 1), "a Pod started twice: {:?}", starts(&dir));
    let names: Vec<String> = after.iter().map(|p| name(p).to_string()).collect();
    wait_exec(&cluster, &names).await;
}
