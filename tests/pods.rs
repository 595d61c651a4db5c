//! Pods end to end on a three-peer cluster with the process runtime: the
//! leader schedules, every peer's agent runs what is bound to it, and Pods
//! of a killed peer come back on the others.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_blackbox::{Client, Cluster, Options, cli};
use serde_json::Value;

const FORM: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(60);

fn seed_job() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/flotilla-api/tests/golden/job.yaml")).unwrap()
}

fn apply(cluster: &Cluster, via: u64, manifest: &str) {
    let out = cli(&cluster.addr_of(via), &["apply", "-f", "-"], Some(manifest));
    assert!(out.status.success(), "apply failed: {}", String::from_utf8_lossy(&out.stderr));
}

async fn pods(client: &mut Client) -> Vec<Value> {
    let (items, _) = client.list("Pod", Some("default"), false).await.unwrap();
    items.iter().map(|j| serde_json::from_str(j).unwrap()).collect()
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("")
}

fn node(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("")
}

fn name(pod: &Value) -> &str {
    pod["metadata"]["name"].as_str().unwrap()
}

/// Polls the Pods through peer `via` until `done` holds for them.
async fn wait_pods(cluster: &Cluster, via: u64, what: &str, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    let mut client = cluster.client(via).await;
    loop {
        let now = pods(&mut client).await;
        if done(&now) {
            return now;
        }
        if Instant::now() > deadline {
            let summary: Vec<String> = now.iter().map(|p| format!("{} {} {}", name(p), phase(p), node(p))).collect();
            panic!("timed out waiting for {what}; pods: {summary:#?}\n{}", cluster.logs_tail());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_job_runs_and_its_logs_reach_every_peer() {
    let cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    cluster.wait_nodes_ready(1, 3, FORM).await;
    apply(&cluster, 1, &seed_job());
    let running = wait_pods(&cluster, 2, "the Job's Pod running", SETTLE, |p| p.len() == 1 && phase(&p[0]) == "Running").await;
    let pod = name(&running[0]).to_string();
    assert!(pod.starts_with("hello-"), "{pod}");
    let owner = &running[0]["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Job");
    // From every peer, whichever runs it.
    for via in 1..=3 {
        let deadline = Instant::now() + SETTLE;
        loop {
            let out = cli(&cluster.addr_of(via), &["logs", &pod], None);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text.contains("Hello, Kubernetes!") {
                break;
            }
            assert!(Instant::now() < deadline, "logs via peer {via}: {text:?} {}", String::from_utf8_lossy(&out.stderr));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let out = cli(&cluster.addr_of(3), &["exec", &pod, "--", "sh", "-c", "echo $HOSTNAME"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pod);
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 6
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: busybox
        command: ["sleep", "3600"]
        resources:
          requests:
            cpu: 10m
"#;

fn running_by_node(pods: &[Value]) -> BTreeMap<String, usize> {
    let mut by_node = BTreeMap::new();
    for p in pods.iter().filter(|p| phase(p) == "Running" && p["metadata"]["deletionTimestamp"].is_null()) {
        *by_node.entry(node(p).to_string()).or_insert(0) += 1;
    }
    by_node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_spreads_over_the_peers_and_heals_when_one_is_killed() {
    let mut cluster = Cluster::start(3, Options::default());
    let leader = cluster.wait_leader(FORM).await;
    cluster.wait_nodes_ready(1, 3, FORM).await;
    apply(&cluster, 1, WEB);
    let spread = wait_pods(&cluster, 1, "6 Running Pods, 2 per peer", SETTLE, |p| {
        let by_node = running_by_node(p);
        by_node.len() == 3 && by_node.values().all(|n| *n == 2)
    })
    .await;
    assert_eq!(spread.len(), 6);

    let victim = (1..=3).find(|id| *id != leader).unwrap();
    let victim_node = format!("peer-{victim}");
    cluster.kill(victim);
    let survivor = (1..=3).find(|id| *id != victim).unwrap();
    let healed = wait_pods(&cluster, survivor, "6 Running Pods on the two surviving peers", SETTLE, |p| {
        let by_node = running_by_node(p);
        by_node.values().sum::<usize>() == 6 && !by_node.contains_key(&victim_node)
    })
    .await;
    // Every replica is a fresh Pod: the lost ones were failed and replaced.
    let before: Vec<&str> = spread.iter().filter(|p| node(p) == victim_node).map(name).collect();
    for p in &healed {
        assert!(!before.contains(&name(p)) || phase(p) == "Failed", "{p}");
    }
    let mut client = cluster.client(survivor).await;
    let node: Value = serde_json::from_str(&client.get(flotilla_blackbox::key("Node", "", &victim_node), false).await.unwrap().unwrap()).unwrap();
    let ready = node["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!(ready["reason"], "NodeLost", "{node}");

    // The peer comes back: its node is Ready again and runs nothing of
    // what was replaced; the Deployment still has exactly 6 replicas.
    cluster.restart(victim);
    let deadline = Instant::now() + SETTLE;
    loop {
        let node: Value = serde_json::from_str(&client.get(flotilla_blackbox::key("Node", "", &victim_node), false).await.unwrap().unwrap()).unwrap();
        let ready = node["status"]["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the restarted node never became Ready: {node}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = pods(&mut client).await;
    assert_eq!(running_by_node(&after).values().sum::<usize>(), 6, "{after:#?}");
}

const RETRIED: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: retried
spec:
  template:
    spec:
      restartPolicy: OnFailure
      volumes:
      - name: state
        emptyDir: {}
      containers:
      - name: try
        image: busybox
        command: ["sh", "-c", "n=$(cat /state/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/n; echo attempt $n; [ $n -ge 3 ]"]
        volumeMounts:
        - name: state
          mountPath: /state
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_pod_that_fails_twice_then_succeeds_ends_succeeded_with_two_restarts() {
    let cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    cluster.wait_nodes_ready(1, 3, FORM).await;
    apply(&cluster, 2, RETRIED);
    let done = wait_pods(&cluster, 3, "the Job's Pod Succeeded", SETTLE, |p| p.len() == 1 && phase(&p[0]) == "Succeeded").await;
    let status = &done[0]["status"]["containerStatuses"][0];
    assert_eq!(status["restartCount"], 2, "{status}");
    assert_eq!(status["state"]["terminated"]["exitCode"], 0, "{status}");
    assert_eq!(status["state"]["terminated"]["reason"], "Completed", "{status}");
    let mut client = cluster.client(1).await;
    let deadline = Instant::now() + SETTLE;
    loop {
        let job: Value = serde_json::from_str(&client.get(flotilla_blackbox::key("Job", "default", "retried"), false).await.unwrap().unwrap()).unwrap();
        if job["status"]["succeeded"] == 1 {
            assert!(job["status"]["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "Complete" && c["status"] == "True"), "{job}");
            break;
        }
        assert!(Instant::now() < deadline, "job never counted its completion: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const INIT_AND_PROBES: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  volumes:
  - name: site
    emptyDir: {}
  initContainers:
  - name: fetch
    image: busybox
    command: ["sh", "-c", "echo made-by-init > /site/index.html"]
    volumeMounts:
    - {name: site, mountPath: /site}
  containers:
  - name: server
    image: python
    command: ["python3", "-m", "http.server", "8080", "--directory", "/site"]
    volumeMounts:
    - {name: site, mountPath: /site}
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
  - name: client
    image: busybox
    command: ["sh", "-c", "while true; do python3 -c 'import urllib.request as u; print(u.urlopen(\"http://localhost:8080/index.html\").read().decode().strip())' && sleep 1; done"]
  - name: flaky
    image: busybox
    command: ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; sleep 3600"]
    livenessProbe:
      exec: {command: ["test", "-e", "/tmp/alive"]}
      periodSeconds: 1
      failureThreshold: 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_volumes_localhost_readiness_and_liveness() {
    let cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    cluster.wait_nodes_ready(1, 3, FORM).await;
    apply(&cluster, 1, INIT_AND_PROBES);
    // The init container ran first and wrote the emptyDir; the server
    // serves it over the Pod's own localhost to its sibling container.
    let deadline = Instant::now() + SETTLE;
    loop {
        let out = cli(&cluster.addr_of(2), &["logs", "web", "-c", "client", "--tail", "1"], None);
        if String::from_utf8_lossy(&out.stdout).trim() == "made-by-init" {
            break;
        }
        assert!(Instant::now() < deadline, "the client never read the init container's file: {out:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The liveness probe restarts the container whose file went away;
    // readiness made the server Ready.
    let mut client = cluster.client(3).await;
    let deadline = Instant::now() + SETTLE;
    loop {
        let pod: Value = serde_json::from_str(&client.get(flotilla_blackbox::key("Pod", "default", "web"), false).await.unwrap().unwrap()).unwrap();
        let statuses = pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
        let of = |n: &str| statuses.iter().find(|s| s["name"] == n).cloned().unwrap_or(Value::Null);
        let init = &pod["status"]["initContainerStatuses"][0];
        let restarted = of("flaky")["restartCount"].as_i64().unwrap_or(0) >= 1;
        if restarted && of("server")["ready"] == true {
            assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{pod}");
            assert!(pod["status"]["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "Initialized" && c["status"] == "True"), "{pod}");
            assert_eq!(of("server")["restartCount"], 0, "{pod}");
            break;
        }
        assert!(Instant::now() < deadline, "no liveness restart or never ready: {pod}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const AGENT: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: busybox
        command: ["sleep", "3600"]
"#;

fn agents_by_node(pods: &[Value]) -> Vec<String> {
    let mut nodes: Vec<String> = pods
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "agent" && p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| node(p).to_string())
        .collect();
    nodes.sort();
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemonset_follows_nodes_joining_and_leaving() {
    let mut cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    cluster.wait_nodes_ready(1, 3, FORM).await;
    apply(&cluster, 1, AGENT);
    let nodes = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let three = nodes(&["peer-1", "peer-2", "peer-3"]);
    wait_pods(&cluster, 1, "one agent per node", SETTLE, |p| agents_by_node(p) == three).await;

    // A fourth peer joins: its node gets an agent of its own.
    cluster.add_peer_process(4);
    let four = nodes(&["peer-1", "peer-2", "peer-3", "peer-4"]);
    let joined = wait_pods(&cluster, 2, "an agent on the new node", SETTLE, |p| {
        agents_by_node(p) == four && p.iter().all(|p| p["metadata"]["labels"]["app"] != "agent" || phase(p) == "Running")
    })
    .await;
    assert_eq!(joined.len(), 4);

    // The peer goes away for good and its Node is removed: so is its agent.
    cluster.kill(4);
    let out = cli(&cluster.addr_of(1), &["delete", "node", "peer-4"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_pods(&cluster, 3, "the removed node's agent gone", SETTLE, |p| {
        let all: Vec<String> = {
            let mut v: Vec<String> = p.iter().filter(|p| p["metadata"]["labels"]["app"] == "agent").map(|p| node(p).to_string()).collect();
            v.sort();
            v
        };
        all == three
    })
    .await;
}
