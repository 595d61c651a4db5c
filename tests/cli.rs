//! The kubectl-style CLI against a real three-peer cluster.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use flotilla_blackbox::{Cluster, Expect, Options, flotilla_bin, key};
use serde_json::Value;

const FORM: Duration = Duration::from_secs(30);

fn seed_job() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/flotilla-api/tests/golden/job.yaml")).unwrap()
}

fn cli(server: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(flotilla_bin())
        .args(args)
        .env("FLOTILLA_SERVER", server)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

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

    // An update through apply keeps the status the system wrote.
    let mut c = cluster.client(2).await;
    let mut live: Value = serde_json::from_str(&c.get(key("Job", "default", "hello"), false).await.unwrap().unwrap()).unwrap();
    live["status"] = serde_json::json!({"active": 1, "succeeded": 0, "failed": 0});
    let rv: u64 = live["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    c.put(key("Job", "default", "hello"), live.to_string(), Expect::Revision(rv)).await.unwrap();
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

    // Deleting a Deployment removes what it owns, transitively.
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx}]\n";
    ok(&cli(&a, &["apply", "-f", "-"], Some(deployment)));
    let d: Value = serde_json::from_str(&ok(&cli(&a, &["get", "deploy", "web", "-o", "json"], None))).unwrap();
    let owned = |kind: &str, name: &str, owner_kind: &str, owner: &Value| {
        format!(
            "apiVersion: {}\nkind: {kind}\nmetadata:\n  name: {name}\n  labels: {{app: web}}\n  ownerReferences:\n  - {{apiVersion: {}, kind: {owner_kind}, name: {}, uid: {}, controller: true}}\nspec:\n{}",
            if kind == "Pod" { "v1" } else { "apps/v1" },
            owner["apiVersion"].as_str().unwrap(),
            owner["metadata"]["name"].as_str().unwrap(),
            owner["metadata"]["uid"].as_str().unwrap(),
            if kind == "Pod" {
                "  containers: [{name: web, image: nginx}]\n".to_string()
            } else {
                "  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx}]\n".to_string()
            }
        )
    };
    ok(&cli(&a, &["apply", "-f", "-"], Some(&owned("ReplicaSet", "web-1", "Deployment", &d))));
    let rs: Value = serde_json::from_str(&ok(&cli(&a, &["get", "rs", "web-1", "-o", "json"], None))).unwrap();
    ok(&cli(&a, &["apply", "-f", "-"], Some(&owned("Pod", "web-1-a", "ReplicaSet", &rs))));
    ok(&cli(&a, &["apply", "-f", "-"], Some(&owned("Pod", "web-1-b", "ReplicaSet", &rs))));
    let selected = ok(&cli(&b, &["get", "pods", "-l", "app=web", "-o", "name"], None));
    assert_eq!(selected.lines().count(), 2, "{selected}");
    let out = ok(&cli(&b, &["delete", "deployment", "web", "--wait"], None));
    assert_eq!(out.trim(), "deployment.apps \"web\" deleted");
    for kind in ["deployments", "replicasets", "pods"] {
        let left = ok(&cli(&a, &["get", kind, "-o", "name"], None));
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
    let a = cluster.addr_of(2);
    let manifests = "apiVersion: v1\nkind: Node\nmetadata: {name: worker-1}\n---\n\
apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx}]\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {name: bound-1}\nspec:\n  nodeName: worker-1\n  containers: [{name: c, image: busybox}]\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {name: bound-2, namespace: other}\nspec:\n  nodeName: worker-1\n  containers: [{name: c, image: busybox}]\n---\n\
apiVersion: v1\nkind: Pod\nmetadata:\n  name: agent-x\n  ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: agent, uid: u-1, controller: true}]\nspec:\n  nodeName: worker-1\n  containers: [{name: c, image: busybox}]\n---\n\
apiVersion: v1\nkind: Event\nmetadata: {name: web.1}\ninvolvedObject: {kind: Deployment, name: web, namespace: default}\nreason: ScalingReplicaSet\nmessage: Scaled up replica set web-1 to 1\ncount: 1\n";
    ok(&cli(&a, &["apply", "-f", "-"], Some(manifests)));

    assert_eq!(ok(&cli(&a, &["scale", "deployment", "web", "--replicas", "4"], None)).trim(), "deployment.apps/web scaled");
    let d: Value = serde_json::from_str(&ok(&cli(&a, &["get", "deploy", "web", "-o", "json"], None))).unwrap();
    assert_eq!(d["spec"]["replicas"], 4);
    assert!(!cli(&a, &["scale", "job", "x", "--replicas", "1"], None).status.success());

    assert_eq!(ok(&cli(&a, &["cordon", "worker-1"], None)).trim(), "node/worker-1 cordoned");
    assert!(ok(&cli(&a, &["get", "nodes"], None)).contains("SchedulingDisabled"));
    assert_eq!(ok(&cli(&a, &["uncordon", "worker-1"], None)).trim(), "node/worker-1 uncordoned");
    let n: Value = serde_json::from_str(&ok(&cli(&a, &["get", "node", "worker-1", "-o", "json"], None))).unwrap();
    assert!(n["spec"].get("unschedulable").is_none());

    let out = ok(&cli(&a, &["drain", "worker-1"], None));
    assert!(out.contains("evicting pod default/bound-1") && out.contains("evicting pod other/bound-2"), "{out}");
    assert!(out.trim_end().ends_with("node/worker-1 drained"), "{out}");
    let left = ok(&cli(&a, &["get", "pods", "-A", "-o", "name"], None));
    assert_eq!(left.trim(), "pod/agent-x", "DaemonSet Pods stay");
    let n: Value = serde_json::from_str(&ok(&cli(&a, &["get", "node", "worker-1", "-o", "json"], None))).unwrap();
    assert_eq!(n["spec"]["unschedulable"], true, "drain cordons first");

    // wait: a condition reported later, then a deletion.
    let addr = cluster.addr_of(1);
    let waiter = std::thread::spawn(move || cli(&addr, &["wait", "pod", "agent-x", "--for=condition=Ready", "--timeout-seconds", "20"], None));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut c = cluster.client(3).await;
    let mut pod: Value = serde_json::from_str(&c.get(key("Pod", "default", "agent-x"), false).await.unwrap().unwrap()).unwrap();
    pod["status"] = serde_json::json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
    c.put(key("Pod", "default", "agent-x"), pod.to_string(), Expect::Present).await.unwrap();
    let out = waiter.join().unwrap();
    assert_eq!(ok(&out).trim(), "pod/agent-x condition met");
    assert!(String::from_utf8_lossy(&out.stderr).contains("waiting for pod/agent-x: condition Ready is not reported yet"));
    let out = cli(&a, &["wait", "pod", "agent-x", "--for=delete", "--timeout-seconds", "1"], None);
    assert!(!out.status.success(), "times out while the pod exists");
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out after 1s"));

    let events = ok(&cli(&a, &["events"], None));
    assert!(events.contains("ScalingReplicaSet") && events.contains("deployment/web"), "{events}");
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
async fn rollout_status_follows_stages_and_get_watch_prints_changes() {
    let cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    let a = cluster.addr_of(1);
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx}]\n";
    ok(&cli(&a, &["apply", "-f", "-"], Some(deployment)));

    let (watch, watched) = lines_of(
        Command::new(flotilla_bin())
            .args(["get", "deployments", "-w", "--server", &a])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (rollout, stages) = lines_of(
        Command::new(flotilla_bin())
            .args(["rollout", "status", "deployment", "web", "--server", &cluster.addr_of(3)])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let recv = |rx: &std::sync::mpsc::Receiver<String>| rx.recv_timeout(Duration::from_secs(10)).expect("output line");
    // Each stage is confirmed before the next status is written, so no
    // stage can be skipped however slow the machine.
    assert_eq!(recv(&stages), "Waiting for deployment spec update to be observed...");
    let watched_header = recv(&watched);
    let mut c = cluster.client(2).await;
    for (status, stage) in [
        (serde_json::json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0}),
            "Waiting for deployment \"web\" rollout to finish: 1 out of 2 new replicas have been updated..."),
        (serde_json::json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1}),
            "Waiting for deployment \"web\" rollout to finish: 1 of 2 updated replicas are available..."),
        (serde_json::json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}),
            "deployment \"web\" successfully rolled out"),
    ] {
        let mut d: Value = serde_json::from_str(&c.get(key("Deployment", "default", "web"), false).await.unwrap().unwrap()).unwrap();
        d["status"] = status;
        c.put(key("Deployment", "default", "web"), d.to_string(), Expect::Present).await.unwrap();
        assert_eq!(recv(&stages), stage);
    }
    let mut rollout = rollout;
    assert!(rollout.wait().unwrap().success());

    // The watch printed the table, then one row per change, in order.
    let mut seen = vec![watched_header];
    while seen.len() < 5 {
        seen.push(recv(&watched));
    }
    let mut watch = watch;
    watch.kill().unwrap();
    watch.wait().unwrap();
    assert!(seen[0].starts_with("NAME"), "{seen:?}");
    let ready: Vec<&str> = seen[1..].iter().map(|l| l.split_whitespace().nth(1).unwrap()).collect();
    assert_eq!(ready, vec!["0/2", "0/2", "1/2", "2/2"], "{seen:?}");
}
