//! Pods end to end on a three-peer cluster with the process runtime: the
//! leader schedules, every peer's agent runs what is bound to it, and Pods
//! of a killed peer come back on the others.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_blackbox::{Cluster, Options, apply, cli, name, node, phase, pods, wait_pods};
use serde_json::Value;

const FORM: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(60);

fn seed_job() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/flotilla-api/tests/golden/job.yaml")).unwrap()
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

fn pod_json(cluster_pods: &[Value], pod: &str) -> Value {
    cluster_pods.iter().find(|p| name(p) == pod).cloned().unwrap_or(Value::Null)
}

const INIT_RETRIES: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: init-retry}
spec:
  restartPolicy: Always
  volumes: [{name: w, emptyDir: {}}]
  initContainers:
  - name: flaky-init
    image: busybox
    command: ["sh", "-c", "n=$(cat /w/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /w/n; test $n -ge 3"]
    volumeMounts: [{name: w, mountPath: /w}]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "echo app saw $(cat /w/n); exec sleep 3600"]
    volumeMounts: [{name: w, mountPath: /w}]
---
apiVersion: v1
kind: Pod
metadata: {name: init-never}
spec:
  restartPolicy: Never
  volumes: [{name: w, emptyDir: {}}]
  initContainers:
  - name: broken-init
    image: busybox
    command: ["sh", "-c", "exit 3"]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "echo ran > /w/app; exec sleep 3600"]
    volumeMounts: [{name: w, mountPath: /w}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_init_container_blocks_the_app_and_is_retried_by_policy() {
    let cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    cluster.wait_nodes_ready(1, 3, FORM).await;
    apply(&cluster, 1, INIT_RETRIES);
    let now = wait_pods(&cluster, 2, "init-retry Running, init-never Failed", SETTLE, |p| {
        phase(&pod_json(p, "init-retry")) == "Running" && phase(&pod_json(p, "init-never")) == "Failed"
    })
    .await;
    // Always: the init container ran until it succeeded, with back-off,
    // and only then the app started.
    let retry = pod_json(&now, "init-retry");
    let init = &retry["status"]["initContainerStatuses"][0];
    assert_eq!(init["restartCount"], 2, "{retry}");
    assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{retry}");
    let deadline = Instant::now() + SETTLE;
    loop {
        let out = cli(&cluster.addr_of(3), &["logs", "init-retry", "-c", "app"], None);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.trim() == "app saw 3" {
            break;
        }
        assert!(Instant::now() < deadline, "app logs: {text:?} {}", String::from_utf8_lossy(&out.stderr));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Never: one failed init container fails the Pod; the app never ran.
    let never = pod_json(&now, "init-never");
    let init = &never["status"]["initContainerStatuses"][0];
    assert_eq!(init["state"]["terminated"]["exitCode"], 3, "{never}");
    assert_eq!(init["restartCount"], 0, "{never}");
    let app = &never["status"]["containerStatuses"][0];
    assert!(app["state"]["running"].is_null() && app["state"]["terminated"].is_null(), "the app ran: {never}");
    let initialized = never["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Initialized").cloned();
    assert_eq!(initialized.unwrap()["status"], "False", "{never}");
}

/// Pods that append a timestamp (ns) to `<dir>/<pod>` each time their one
/// container starts, then exit with `code`.
fn starter(dir: &std::path::Path, pod: &str, policy: &str, code: i32) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  restartPolicy: {policy}
  volumes: [{{name: r, hostPath: {{path: {dir}}}}}]
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "date +%s%N >> /r/{pod}; exit {code}"]
    volumeMounts: [{{name: r, mountPath: /r}}]
---
"#,
        dir = dir.display()
    )
}

fn starts(dir: &std::path::Path, pod: &str) -> Vec<u128> {
    std::fs::read_to_string(dir.join(pod)).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_restart_policy_behaves_as_kubernetes_documents_with_back_off() {
    let cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    cluster.wait_nodes_ready(1, 3, FORM).await;
    let dir = cluster.dir.path().join("starts");
    std::fs::create_dir(&dir).unwrap();
    let manifest = [
        starter(&dir, "always-fails", "Always", 1),
        starter(&dir, "always-succeeds", "Always", 0),
        starter(&dir, "onfailure-succeeds", "OnFailure", 0),
        starter(&dir, "never-fails", "Never", 1),
    ]
    .concat();
    apply(&cluster, 1, &manifest);

    // Back-off doubles from 500 ms (the test peers' base) to 2 s, and the
    // container waits in CrashLoopBackOff meanwhile.
    let mut client = cluster.client(2).await;
    let mut saw_crash_loop = false;
    let deadline = Instant::now() + SETTLE;
    while starts(&dir, "always-fails").len() < 5 {
        let now = pods(&mut client).await;
        let pod = pod_json(&now, "always-fails");
        if pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff" {
            saw_crash_loop = true;
            assert_eq!(pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 1, "{pod}");
            assert_eq!(pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"], "Error", "{pod}");
        }
        assert!(Instant::now() < deadline, "always-fails started {} times", starts(&dir, "always-fails").len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_crash_loop, "never waiting in CrashLoopBackOff");
    let at = starts(&dir, "always-fails");
    let gaps_ms: Vec<u128> = at.windows(2).map(|w| (w[1] - w[0]) / 1_000_000).collect();
    eprintln!("gaps between starts: {gaps_ms:?} ms");
    assert!(gaps_ms[0] >= 450, "{gaps_ms:?}");
    assert!(gaps_ms[1] >= gaps_ms[0] + 300, "back-off did not grow: {gaps_ms:?}");
    assert!(gaps_ms[2] >= gaps_ms[1] + 600, "back-off did not grow: {gaps_ms:?}");
    assert!(gaps_ms[3] < gaps_ms[2] + 600, "back-off passed its cap: {gaps_ms:?}");

    let now = pods(&mut client).await;
    let status = |pod: &str| pod_json(&now, pod);
    // Always restarts a container that succeeded too.
    assert!(status("always-succeeds")["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap() >= 2, "{}", status("always-succeeds"));
    assert!(starts(&dir, "always-succeeds").len() >= 3);
    assert_eq!(phase(&status("always-succeeds")), "Running");
    // OnFailure leaves a success alone; Never leaves a failure alone.
    assert_eq!(phase(&status("onfailure-succeeds")), "Succeeded", "{}", status("onfailure-succeeds"));
    assert_eq!(starts(&dir, "onfailure-succeeds").len(), 1);
    assert_eq!(phase(&status("never-fails")), "Failed", "{}", status("never-fails"));
    let never = &status("never-fails")["status"]["containerStatuses"][0];
    assert_eq!(never["restartCount"], 0);
    assert_eq!(never["state"]["terminated"]["exitCode"], 1);
    assert_eq!(never["state"]["terminated"]["reason"], "Error");
    assert_eq!(starts(&dir, "never-fails").len(), 1);
}

const HOG: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: python
    command: ["python3", "-c", "x = b'a' * (200 << 20)"]
    resources:
      limits: {memory: 50Mi}
"#;

/// A Pod on peer 1 serving HTTP on port 8080, ready once it answers.
fn server_on_peer_1(name: &str) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: peer-1}}
  containers:
  - name: server
    image: python
    command: ["python3", "-m", "http.server", "8080"]
    readinessProbe:
      httpGet: {{path: /, port: 8080}}
      periodSeconds: 1
"#
    )
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_is_oom_killed_and_two_pods_share_a_port_on_one_peer() {
    let cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    cluster.wait_nodes_ready(1, 3, FORM).await;
    apply(&cluster, 1, &[HOG.to_string(), server_on_peer_1("server-a"), server_on_peer_1("server-b")].concat());
    // Two Pods on one peer listen on port 8080, each in its own network.
    let now = wait_pods(&cluster, 2, "both servers ready, the hog finished", SETTLE, |p| {
        is_ready(&pod_json(p, "server-a")) && is_ready(&pod_json(p, "server-b")) && phase(&pod_json(p, "hog")) == "Failed"
    })
    .await;
    assert_eq!(node(&pod_json(&now, "server-a")), "peer-1");
    assert_eq!(node(&pod_json(&now, "server-b")), "peer-1");

    let hog = pod_json(&now, "hog");
    let mut client = cluster.client(1).await;
    let node_json: Value = serde_json::from_str(&client.get(flotilla_blackbox::key("Node", "", node(&hog)), false).await.unwrap().unwrap()).unwrap();
    let isolation = node_json["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "RuntimeIsolation").cloned().unwrap();
    if isolation["message"].as_str().unwrap_or("").contains("memory and cpu limits are not enforced") {
        println!("skipped the out-of-memory check: {}", isolation["message"]);
        return;
    }
    let terminated = &hog["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{hog}");
    assert_eq!(terminated["exitCode"], 137, "{hog}");
}

/// A Deployment pinned to one peer whose Pods append a timestamp (ns) every
/// 50 ms to a file per run, named `<pod>.<start ns>`.
fn pinned_recorders(dir: &std::path::Path, peer: u64) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: rec}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: rec}}}}
  template:
    metadata: {{labels: {{app: rec}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: peer-{peer}}}
      containers:
      - name: rec
        image: busybox
        command: ["sh", "-c", "f=/rec/$(hostname).$(date +%s%N); while true; do date +%s%N >> $f; sleep 0.05; done"]
        volumeMounts: [{{name: rec, mountPath: /rec}}]
      volumes: [{{name: rec, hostPath: {{path: {}}}}}]
"#,
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_peer_runs_each_of_its_pods_exactly_once() {
    let mut cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    cluster.wait_nodes_ready(1, 3, FORM).await;
    let dir = cluster.dir.path().join("runs");
    std::fs::create_dir(&dir).unwrap();
    apply(&cluster, 1, &pinned_recorders(&dir, 2));
    let running = |p: &[Value]| p.iter().filter(|p| phase(p) == "Running" && p["metadata"]["deletionTimestamp"].is_null()).count();
    wait_pods(&cluster, 1, "4 recorders on peer 2", SETTLE, |p| running(p) == 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    cluster.kill(2);
    cluster.restart(2);
    cluster.wait_nodes_ready(1, 3, SETTLE).await;
    let deadline = Instant::now() + SETTLE;
    let names: Vec<String> = loop {
        let now = wait_pods(&cluster, 1, "4 recorders running again", SETTLE, |p| running(p) == 4).await;
        let names: Vec<String> = now.iter().filter(|p| phase(p) == "Running").map(|p| name(p).to_string()).collect();
        // Running as reported, and recording: each Pod's newest run file
        // grew within the last half second.
        let live = live_runs(&dir);
        if names.iter().all(|n| live.contains_key(n)) {
            break names;
        }
        assert!(Instant::now() < deadline, "running {names:?}, recording {live:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    // At most one live run per Pod, and none of a Pod that is gone (a
    // missed tick under load may hide a run, never add one).
    let live = live_runs(&dir);
    for (pod, count) in &live {
        assert!(names.contains(pod), "{pod} still runs but is not a Pod: live {live:?}, Pods {names:?}");
        assert_eq!(*count, 1, "{pod}: live runs {live:?}");
    }
    // No Pod ever ran twice at once, before, across or after the restart.
    let mut by_pod: BTreeMap<String, Vec<(u128, u128)>> = BTreeMap::new();
    for (file, stamps) in run_files(&dir) {
        let pod = file.rsplit_once('.').unwrap().0.to_string();
        by_pod.entry(pod).or_default().push((stamps[0], *stamps.last().unwrap()));
    }
    for (pod, mut runs) in by_pod {
        runs.sort();
        for w in runs.windows(2) {
            assert!(w[1].0 > w[0].1, "{pod} ran twice at once: {runs:?}");
        }
    }
}

/// Each run file with its timestamps.
fn run_files(dir: &std::path::Path) -> Vec<(String, Vec<u128>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let stamps: Vec<u128> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if !stamps.is_empty() {
            files.push((entry.file_name().to_string_lossy().to_string(), stamps));
        }
    }
    files
}

/// Pods with runs that recorded within the last 500 ms, and how many each.
fn live_runs(dir: &std::path::Path) -> BTreeMap<String, usize> {
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let mut live = BTreeMap::new();
    for (file, stamps) in run_files(dir) {
        if now_ns.saturating_sub(*stamps.last().unwrap()) < 500_000_000 {
            *live.entry(file.rsplit_once('.').unwrap().0.to_string()).or_insert(0) += 1;
        }
    }
    live
}
