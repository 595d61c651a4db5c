//! Pods end to end on a three-peer cluster with the docker runtime: the
//! init container, probe and restart tests of `pods.rs`, with every
//! container a container of the local Docker engine running the tools image
//! (see `docker_engine`). Each test skips, saying why, where no engine
//! answers.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_blackbox::docker_engine::{
    HTTP_CLIENT, HTTP_SERVER, TOOLS_IMAGE, containers_of, remove_containers_of, running_containers_of, tools_image,
};
use flotilla_blackbox::{Cluster, Options, apply, cli, name, node, phase, pods, wait_pods};
use serde_json::Value;

const FORM: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(60);

/// A three-peer cluster whose peers run their Pods in the local Docker
/// engine. The containers outlive the peers, so they go with the cluster.
struct DockerCluster(Cluster);

impl DockerCluster {
    /// Starts the cluster once the tools image is built, or prints why it
    /// cannot be and returns `None`. Node names hold `test` and this
    /// process's id: clusters of tests running at once share the engine,
    /// and the runtime tells its containers apart by node name only.
    async fn start(test: &str) -> Option<DockerCluster> {
        if let Err(reason) = tokio::task::spawn_blocking(tools_image).await.expect("building the tools image") {
            println!("skipped: {reason}");
            return None;
        }
        let options = Options {
            node: "runtime = \"docker\"\nrestart_backoff_base_ms = 500\nrestart_backoff_max_ms = 2000\n".into(),
            node_name_prefix: format!("{test}-{}", std::process::id()),
            ..Options::default()
        };
        let cluster = DockerCluster(Cluster::start(3, options));
        cluster.wait_leader(FORM).await;
        cluster.wait_nodes_ready(1, 3, FORM).await;
        Some(cluster)
    }

    /// The peer whose Node is `node`.
    fn peer_of(&self, node: &str) -> u64 {
        self.peers.iter().map(|p| p.id).find(|id| self.node_name(*id) == node).unwrap_or_else(|| panic!("no peer runs node {node:?}"))
    }
}

impl Deref for DockerCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.0
    }
}

impl DerefMut for DockerCluster {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.0
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        // The peers go first: a live one would start its Pods again.
        let ids: Vec<u64> = self.0.peers.iter().map(|p| p.id).collect();
        for id in &ids {
            self.0.kill(*id);
        }
        for id in &ids {
            if let Err(e) = remove_containers_of(&self.0.node_name(*id)) {
                eprintln!("containers left behind: {e}");
            }
        }
    }
}

/// A YAML scalar holding `text` as it is.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

fn pod_json(cluster_pods: &[Value], pod: &str) -> Value {
    cluster_pods.iter().find(|p| name(p) == pod).cloned().unwrap_or(Value::Null)
}

/// The image has dash, sleep, cat and perl only: files are made by the
/// shell, removed by perl, and the liveness probe is `cat`.
fn init_and_probes() -> String {
    let server = quoted(HTTP_SERVER);
    let client = quoted(HTTP_CLIENT);
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  volumes:
  - name: site
    emptyDir: {{}}
  initContainers:
  - name: fetch
    image: {TOOLS_IMAGE}
    command: ["sh", "-c", "echo made-by-init > /site/index.html"]
    volumeMounts:
    - {{name: site, mountPath: /site}}
  containers:
  - name: server
    image: {TOOLS_IMAGE}
    command: ["perl", "-e", {server}, "8080", "/site"]
    volumeMounts:
    - {{name: site, mountPath: /site}}
    readinessProbe:
      httpGet: {{path: /index.html, port: 8080}}
      periodSeconds: 1
  - name: client
    image: {TOOLS_IMAGE}
    env: [{{name: FETCH, value: {client}}}]
    command: ["sh", "-c", "while true; do perl -e \"$FETCH\" 8080 /index.html; sleep 1; done"]
  - name: flaky
    image: {TOOLS_IMAGE}
    command: ["sh", "-c", "echo > /tmp/alive; sleep 2; perl -e 'unlink q(/tmp/alive)'; exec sleep 3600"]
    livenessProbe:
      exec: {{command: ["cat", "/tmp/alive"]}}
      periodSeconds: 1
      failureThreshold: 1
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_volumes_localhost_readiness_and_liveness() {
    let Some(cluster) = DockerCluster::start("probes").await else { return };
    apply(&cluster, 1, &init_and_probes());
    let running = wait_pods(&cluster, 1, "web Running", SETTLE, |p| phase(&pod_json(p, "web")) == "Running").await;
    let host = node(&pod_json(&running, "web")).to_string();
    let host_peer = cluster.peer_of(&host);
    // The Pod runs in the engine, as containers labelled with its node only.
    for id in 1..=3 {
        let containers = containers_of(&cluster.node_name(id)).unwrap();
        assert_eq!(containers.is_empty(), id != host_peer, "{} has containers {containers:?}; web runs on {host}", cluster.node_name(id));
    }

    // The init container ran first and wrote the emptyDir; the server
    // serves it over the Pod's own localhost to its sibling container. The
    // logs come through a peer that does not run the Pod.
    let via = (1..=3).find(|id| *id != host_peer).unwrap();
    let deadline = Instant::now() + SETTLE;
    loop {
        let out = cli(&cluster.addr_of(via), &["logs", "web", "-c", "client", "--tail", "1"], None);
        if String::from_utf8_lossy(&out.stdout).trim() == "made-by-init" {
            break;
        }
        assert!(Instant::now() < deadline, "the client never read the init container's file: {out:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The liveness probe restarts the container whose file went away;
    // readiness made the server Ready.
    let mut client = cluster.client(via).await;
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
            assert_eq!(of("client")["restartCount"], 0, "{pod}");
            break;
        }
        assert!(Instant::now() < deadline, "no liveness restart or never ready: {pod}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Pods that append the host's uptime to `<dir>/<pod>` each time their one
/// container starts, then exit with `code`. The image has no `date`; every
/// container reads the same uptime, the host's.
fn starter(dir: &Path, pod: &str, policy: &str, code: i32) -> String {
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
    image: {TOOLS_IMAGE}
    command: ["sh", "-c", "cat /proc/uptime >> /r/{pod}; exit {code}"]
    volumeMounts: [{{name: r, mountPath: /r}}]
---
"#,
        dir = dir.display()
    )
}

/// When a starter's container started, in ms of uptime.
fn starts(dir: &Path, pod: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(dir.join(pod)).unwrap_or_default();
    text.lines().filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok()).map(|s| (s * 1000.0).round() as u64).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_restart_policy_behaves_as_kubernetes_documents_with_back_off() {
    let Some(cluster) = DockerCluster::start("restarts").await else { return };
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

    // The container waits in CrashLoopBackOff between runs.
    let mut client = cluster.client(2).await;
    let mut saw_crash_loop = false;
    let deadline = Instant::now() + SETTLE;
    while starts(&dir, "always-fails").len() < 5 {
        let now = pods(&mut client).await;
        let pod = pod_json(&now, "always-fails");
        let status = &pod["status"]["containerStatuses"][0];
        if status["state"]["waiting"]["reason"] == "CrashLoopBackOff" {
            saw_crash_loop = true;
            assert_eq!(status["lastState"]["terminated"]["exitCode"], 1, "{pod}");
            assert_eq!(status["lastState"]["terminated"]["reason"], "Error", "{pod}");
        }
        assert!(Instant::now() < deadline, "always-fails started {} times", starts(&dir, "always-fails").len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_crash_loop, "never waiting in CrashLoopBackOff");
    let at = starts(&dir, "always-fails");
    let gaps_ms: Vec<u64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("gaps between starts: {gaps_ms:?} ms");
    // Back-off doubles from 500 ms (the test peers' base) to 2 s, counted
    // from the exit: a gap is at least its back-off (less twice uptime's
    // 10 ms resolution), plus the time the engine takes to start a
    // container. That varies by a few hundred ms, too much to compare two
    // gaps closely as the process runtime's test does.
    let backoffs_ms = [500, 1000, 2000, 2000];
    for (gap, backoff) in gaps_ms.iter().zip(backoffs_ms) {
        assert!(gap + 20 >= backoff && *gap < backoff + 2000, "gaps {gaps_ms:?} ms, back-offs {backoffs_ms:?} ms");
    }

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

/// A Job whose container counts its attempts in an emptyDir, which outlives
/// restarts, and succeeds at the third.
fn retried() -> String {
    format!(
        r#"
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
        emptyDir: {{}}
      containers:
      - name: try
        image: {TOOLS_IMAGE}
        command: ["sh", "-c", "n=$(cat /state/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/n; echo attempt $n; [ $n -ge 3 ]"]
        volumeMounts:
        - name: state
          mountPath: /state
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_pod_that_fails_twice_then_succeeds_ends_succeeded_with_two_restarts() {
    let Some(cluster) = DockerCluster::start("job").await else { return };
    apply(&cluster, 2, &retried());
    let done = wait_pods(&cluster, 3, "the Job's Pod Succeeded", SETTLE, |p| p.len() == 1 && phase(&p[0]) == "Succeeded").await;
    let status = &done[0]["status"]["containerStatuses"][0];
    assert_eq!(status["restartCount"], 2, "{status}");
    assert_eq!(status["state"]["terminated"]["exitCode"], 0, "{status}");
    assert_eq!(status["state"]["terminated"]["reason"], "Completed", "{status}");
    let pod = name(&done[0]).to_string();
    let out = cli(&cluster.addr_of(1), &["logs", &pod], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "attempt 3\n", "{}", String::from_utf8_lossy(&out.stderr));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_peers_containers_die_with_it() {
    let Some(mut cluster) = DockerCluster::start("guard").await else { return };
    let victim = cluster.node_name(2);
    let manifest = format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: sleeper}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: sleeper}}}}
  template:
    metadata: {{labels: {{app: sleeper}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {victim}}}
      containers:
      - name: c
        image: {TOOLS_IMAGE}
        command: ["sleep", "3600"]
"#
    );
    apply(&cluster, 1, &manifest);
    wait_pods(&cluster, 1, "the sleeper running", SETTLE, |p| p.len() == 1 && phase(&p[0]) == "Running").await;
    // The Pod's container and its sandbox's pause container.
    assert_eq!(running_containers_of(&victim).unwrap().len(), 2);

    // SIGKILL: the peer has no chance to stop anything itself.
    cluster.kill(2);
    let deadline = Instant::now() + SETTLE;
    loop {
        let running = running_containers_of(&victim).unwrap();
        if running.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still running after the peer died: {running:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The restarted peer runs the Deployment's Pod again (the same one, or
    // its replacement if the node was declared lost meanwhile), and the
    // dead peer's guard leaves the new containers alone.
    cluster.restart(2);
    wait_pods(&cluster, 1, "the sleeper running again", SETTLE, |p| p.iter().any(|p| phase(p) == "Running")).await;
    let deadline = Instant::now() + SETTLE;
    while running_containers_of(&victim).unwrap().len() != 2 {
        assert!(Instant::now() < deadline, "{:?}", running_containers_of(&victim));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
