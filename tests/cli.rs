//! The kubectl-style CLI against a real three-peer cluster.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use flotilla_blackbox::{Cluster, Options, cli, flotilla_bin, key};
use serde_json::Value;

const FORM: Duration = Duration::from_secs(30);

fn seed_job() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/flotilla-api/tests/golden/job.yaml")).unwrap()
}


const WEB: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: busybox, command: [sleep, '3600']}]\n";

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_update_and_delete_through_the_cli() {
    let cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    let (a, b) = (cluster.addr_of(1), cluster.addr_of(3));

    // The seed's Job, unchanged, through standard input.
    assert_eq!(ok(&cli(&a, &["apply", "-f", "-"], Some(&seed_job()))).trim(), "job.batch/hello created");
    assert_eq!(ok(&cli(&b, &["apply", "-f", "-"], Some(&seed_job()))).trim(), "job.batch/hello unchanged");

    // Tables and JSON, from another peer.
    let table = ok(&cli(&b, &["get", "jobs"], None));
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], vec!["NAME", "STATUS", "COMPLETIONS", "AGE"]);
    assert_eq!(rows[1][..3], ["hello", "Running", "0/1"]);
    let list: Value = serde_json::from_str(&ok(&cli(&b, &["get", "jobs", "-o", "json"], None))).unwrap();
    let job = &list["items"][0];
    assert_eq!(job["metadata"]["name"], "hello");
    assert_eq!(job["metadata"]["namespace"], "default");
    assert_eq!(job["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(job["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().is_ok());
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["image"], "busybox");
    let one: Value = serde_json::from_str(&ok(&cli(&a, &["get", "job", "hello", "-o", "json"], None))).unwrap();
    assert_eq!(one["kind"], "Job");
    let yaml = ok(&cli(&a, &["get", "job", "hello", "-o", "yaml"], None));
    assert!(yaml.contains("restartPolicy: OnFailure"), "{yaml}");
    assert_eq!(ok(&cli(&a, &["get", "jobs", "-o", "name"], None)).trim(), "job.batch/hello");

    // An update through apply keeps the status the Job controller wrote.
    let mut c = cluster.client(2).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let live: Value = serde_json::from_str(&c.get(key("Job", "default", "hello"), false).await.unwrap().unwrap()).unwrap();
        if live["status"]["active"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the Job controller never counted its Pod: {live}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let changed = seed_job().replace("sleep 3600", "sleep 60");
    assert_eq!(ok(&cli(&a, &["apply", "-f", "-"], Some(&changed))).trim(), "job.batch/hello configured");
    let after: Value = serde_json::from_str(&ok(&cli(&b, &["get", "job", "hello", "-o", "json"], None))).unwrap();
    assert_eq!(after["status"]["active"], 1, "apply keeps status");
    assert!(after["spec"]["template"]["spec"]["containers"][0]["command"][2].as_str().unwrap().ends_with("sleep 60"));
    assert_eq!(after["metadata"]["uid"], job["metadata"]["uid"], "same object");
    assert_eq!(after["metadata"]["generation"], 2);

    // `create` refuses an existing object.
    let out = cli(&a, &["create", "-f", "-"], Some(&seed_job()));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    // Deleting a Deployment removes what it owns, transitively: its
    // ReplicaSet and the Pods the controllers made, which their peers stop.
    ok(&cli(&a, &["apply", "-f", "-"], Some(WEB)));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let selected = ok(&cli(&b, &["get", "pods", "-l", "app=web", "-o", "name"], None));
        if selected.lines().count() == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the Deployment's Pods never appeared: {selected}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(ok(&cli(&a, &["get", "rs", "-o", "name"], None)).lines().count(), 1);
    let out = ok(&cli(&b, &["delete", "deployment", "web", "--wait"], None));
    assert_eq!(out.trim(), "deployment.apps \"web\" deleted");
    for (kind, selector) in [("deployments", ""), ("replicasets", ""), ("pods", "app=web")] {
        let left = ok(&cli(&a, &["get", kind, "-l", selector, "-o", "name"], None));
        assert!(left.trim().is_empty(), "{kind} left after a cascading delete: {left}");
    }

    // A broken manifest is refused whole, naming file, line and field.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.yaml");
    std::fs::write(&path, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n").unwrap();
    let out = cli(&a, &["apply", "-f", path.to_str().unwrap()], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("two.yaml:10: spec.containers[0].image: required"), "{stderr}");
    assert!(ok(&cli(&a, &["get", "configmaps", "-o", "name"], None)).trim().is_empty(), "nothing applied");

    let out = cli(&a, &["get", "services"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kind Service is not supported by Flotilla"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_cordon_drain_wait_and_events() {
    let cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    cluster.wait_nodes_ready(1, 3, FORM).await;
    let a = cluster.addr_of(2);
    let agent = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec:\n      containers: [{name: c, image: busybox, command: [sleep, '3600']}]\n";
    ok(&cli(&a, &["apply", "-f", "-"], Some(&format!("{WEB}---\n{agent}"))));

    assert_eq!(ok(&cli(&a, &["scale", "deployment", "web", "--replicas", "6"], None)).trim(), "deployment.apps/web scaled");
    let d: Value = serde_json::from_str(&ok(&cli(&a, &["get", "deploy", "web", "-o", "json"], None))).unwrap();
    assert_eq!(d["spec"]["replicas"], 6);
    assert!(!cli(&a, &["scale", "job", "x", "--replicas", "1"], None).status.success());
    let on_node = |node: &str| -> Vec<String> {
        let pods: Value = serde_json::from_str(&ok(&cli(&a, &["get", "pods", "-o", "json"], None))).unwrap();
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["spec"]["nodeName"] == node && p["status"]["phase"] == "Running")
            .map(|p| p["metadata"]["labels"]["app"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while on_node("peer-3").len() < 3 {
        assert!(std::time::Instant::now() < deadline, "peer-3 never ran its share: {:?}", on_node("peer-3"));
        std::thread::sleep(Duration::from_millis(200));
    }

    assert_eq!(ok(&cli(&a, &["cordon", "peer-3"], None)).trim(), "node/peer-3 cordoned");
    assert!(ok(&cli(&a, &["get", "nodes"], None)).contains("SchedulingDisabled"));
    assert_eq!(ok(&cli(&a, &["uncordon", "peer-3"], None)).trim(), "node/peer-3 uncordoned");
    let n: Value = serde_json::from_str(&ok(&cli(&a, &["get", "node", "peer-3", "-o", "json"], None))).unwrap();
    assert!(n["spec"].get("unschedulable").is_none());

    // Drain evicts the Deployment's Pods (their peer stops them, the
    // ReplicaSet replaces them elsewhere); the DaemonSet's Pod stays.
    let out = ok(&cli(&a, &["drain", "peer-3"], None));
    assert!(out.contains("evicting pod default/web-"), "{out}");
    assert!(!out.contains("agent-"), "{out}");
    assert!(out.trim_end().ends_with("node/peer-3 drained"), "{out}");
    assert_eq!(on_node("peer-3"), vec!["agent".to_string()], "DaemonSet Pods stay");
    let n: Value = serde_json::from_str(&ok(&cli(&a, &["get", "node", "peer-3", "-o", "json"], None))).unwrap();
    assert_eq!(n["spec"]["unschedulable"], true, "drain cordons first");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while on_node("peer-1").len() + on_node("peer-2").len() < 8 {
        assert!(std::time::Instant::now() < deadline, "the evicted Pods were not replaced");
        std::thread::sleep(Duration::from_millis(200));
    }

    // wait: a condition, then a deletion that does not come in time.
    let pods: Value = serde_json::from_str(&ok(&cli(&a, &["get", "pods", "-l", "app=agent", "-o", "json"], None))).unwrap();
    let agent_pod = pods["items"][0]["metadata"]["name"].as_str().unwrap().to_string();
    let out = cli(&cluster.addr_of(1), &["wait", "pod", &agent_pod, "--for=condition=Ready", "--timeout-seconds", "20"], None);
    assert_eq!(ok(&out).trim(), format!("pod/{agent_pod} condition met"));
    let out = cli(&a, &["wait", "pod", &agent_pod, "--for=delete", "--timeout-seconds", "1"], None);
    assert!(!out.status.success(), "times out while the pod exists");
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out after 1s"));

    let events = ok(&cli(&a, &["events"], None));
    assert!(events.contains("Scheduled") && events.contains("Started"), "{events}");
}

/// Follows a child's standard output line by line on a thread.
fn lines_of(mut child: std::process::Child) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_status_follows_a_rolling_update_and_get_watch_prints_changes() {
    let cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    let a = cluster.addr_of(1);
    let (watch, watched) = lines_of(
        Command::new(flotilla_bin())
            .args(["get", "deployments", "-w", "--server", &a])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let recv = |rx: &std::sync::mpsc::Receiver<String>| rx.recv_timeout(Duration::from_secs(60)).expect("output line");
    assert!(recv(&watched).starts_with("NAME"));
    ok(&cli(&a, &["apply", "-f", "-"], Some(WEB)));
    let rolled = |server: &str| {
        let out = cli(server, &["rollout", "status", "deployment", "web"], None);
        let text = ok(&out);
        assert_eq!(text.lines().last(), Some("deployment \"web\" successfully rolled out"), "{text}");
    };
    rolled(&cluster.addr_of(3));
    // The watch printed one row per change, until both replicas were ready.
    let mut ready = Vec::new();
    while ready.last().map(String::as_str) != Some("2/2") {
        let line = recv(&watched);
        ready.push(line.split_whitespace().nth(1).unwrap().to_string());
    }
    assert!(ready.len() >= 2, "{ready:?}");
    let mut watch = watch;
    watch.kill().unwrap();
    watch.wait().unwrap();

    // A new template rolls out through a second ReplicaSet; the first is
    // scaled to zero and kept for `rollout undo`.
    ok(&cli(&a, &["apply", "-f", "-"], Some(&WEB.replace("'3600'", "'3601'"))));
    rolled(&cluster.addr_of(2));
    let rs: Value = serde_json::from_str(&ok(&cli(&a, &["get", "rs", "-o", "json"], None))).unwrap();
    let mut replicas: Vec<i64> = rs["items"].as_array().unwrap().iter().map(|r| r["spec"]["replicas"].as_i64().unwrap()).collect();
    replicas.sort();
    assert_eq!(replicas, vec![0, 2], "{rs}");
    let history = ok(&cli(&a, &["rollout", "history", "deployment", "web"], None));
    let revisions: Vec<&str> = history.lines().skip(2).map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(revisions, vec!["1", "2"], "{history}");

    // Undo goes back to the first template, through its own ReplicaSet,
    // which becomes revision 3.
    assert_eq!(ok(&cli(&a, &["rollout", "undo", "deployment", "web"], None)).trim(), "deployment.apps/web rolled back to revision 1");
    rolled(&cluster.addr_of(1));
    let d: Value = serde_json::from_str(&ok(&cli(&a, &["get", "deploy", "web", "-o", "json"], None))).unwrap();
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["command"][1], "3600", "{d}");
    let history = ok(&cli(&a, &["rollout", "history", "deployment", "web"], None));
    let revisions: Vec<&str> = history.lines().skip(2).map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(revisions, vec!["2", "3"], "{history}");
    let out = cli(&a, &["rollout", "undo", "deployment", "web", "--to-revision", "9"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("revision 9 not found"), "{out:?}");
}
