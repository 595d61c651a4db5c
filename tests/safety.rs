//! Safety under faults, on real peers with the process runtime: a peer cut
//! off from the others stops its Pods before they are replaced, a Job's
//! completions are counted once across a leader kill, and a rolling update
//! keeps enough Pods ready.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_blackbox::{Cluster, Options, apply, key, name, node, phase, pods, wait_pods};
use futures::StreamExt;
use serde_json::Value;

const FORM: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(60);

/// The peer whose Node is `node` (`peer-<id>`).
fn peer_of(node: &str) -> u64 {
    node.strip_prefix("peer-").and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("not a peer's node: {node:?}"))
}

/// A StatefulSet whose Pods append a timestamp (ns) every 50 ms to a file of
/// their own in `dir`: one file per run of an ordinal, named
/// `<ordinal's name>.<start ns>`.
fn recorder(dir: &Path) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: rec}}
spec:
  serviceName: rec
  replicas: 3
  podManagementPolicy: Parallel
  selector: {{matchLabels: {{app: rec}}}}
  template:
    metadata: {{labels: {{app: rec}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: rec
        image: busybox
        command: ["sh", "-c", "f=/rec/$(hostname).$(date +%s%N); while true; do date +%s%N >> $f; sleep 0.05; done"]
        volumeMounts: [{{name: rec, mountPath: /rec}}]
      volumes:
      - name: rec
        hostPath: {{path: {}}}
"#,
        dir.display()
    )
}

/// Each ordinal's runs as (first, last) timestamps, sorted by start.
fn runs(dir: &Path) -> BTreeMap<String, Vec<(u128, u128)>> {
    let mut by_ordinal: BTreeMap<String, Vec<(u128, u128)>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let file = entry.file_name().to_string_lossy().to_string();
        let (ordinal, _) = file.split_once('.').unwrap();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let stamps: Vec<u128> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if let (Some(first), Some(last)) = (stamps.first(), stamps.last()) {
            by_ordinal.entry(ordinal.to_string()).or_default().push((*first, *last));
        }
    }
    for runs in by_ordinal.values_mut() {
        runs.sort();
    }
    by_ordinal
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cut_off_stops_its_pods_before_they_are_replaced() {
    let cluster = Cluster::start(3, Options { fault_signals: true, ..Options::default() });
    cluster.wait_leader(FORM).await;
    cluster.wait_nodes_ready(1, 3, FORM).await;
    let record = cluster.dir.path().join("runs");
    std::fs::create_dir(&record).unwrap();
    apply(&cluster, 1, &recorder(&record));
    let running = wait_pods(&cluster, 1, "3 recorders running", SETTLE, |p| {
        p.len() == 3 && p.iter().all(|p| phase(p) == "Running")
    })
    .await;
    let first = running.iter().find(|p| name(p) == "rec-0").unwrap();
    let cut_node = node(first).to_string();
    let cut = peer_of(&cut_node);
    let survivor = (1..=3).find(|id| *id != cut).unwrap();

    cluster.isolate(cut, true);
    let cut_at = Instant::now();
    let moved = wait_pods(&cluster, survivor, "rec-0 running on another node", SETTLE, |p| {
        p.iter().any(|p| name(p) == "rec-0" && phase(p) == "Running" && node(p) != cut_node)
    })
    .await;
    let healed_after = cut_at.elapsed();
    // Both sides run on: a replacement overlapping the original would show
    // up in the records now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.isolate(cut, false);
    cluster.wait_nodes_ready(survivor, 3, SETTLE).await;
    wait_pods(&cluster, cut, "all 3 recorders running after the heal", SETTLE, |p| {
        p.len() == 3 && p.iter().all(|p| phase(p) == "Running")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let moved_pods: Vec<&Value> = moved.iter().filter(|p| node(p) != cut_node).collect();
    let runs = runs(&record);
    eprintln!("rec-0 ran again {healed_after:?} after the cut; runs: {runs:?}");
    for (ordinal, list) in &runs {
        for pair in list.windows(2) {
            assert!(
                pair[1].0 > pair[0].1,
                "{ordinal} ran twice at once: a run from {} to {} and one starting at {}",
                pair[0].0,
                pair[0].1,
                pair[1].0
            );
        }
    }
    assert!(runs["rec-0"].len() >= 2, "rec-0 was never replaced: {runs:?}");
    // The cut-off peer's records stopped before the replacement's started,
    // with the whole fence margin between them.
    let replaced = &runs["rec-0"];
    let gap_ms = (replaced[1].0 - replaced[0].1) / 1_000_000;
    assert!(gap_ms >= 300, "only {gap_ms} ms between rec-0's runs");
    assert!(moved_pods.iter().any(|p| name(p) == "rec-0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_exactly_once_across_a_leader_kill() {
    let mut cluster = Cluster::start(3, Options::default());
    let leader = cluster.wait_leader(FORM).await;
    cluster.wait_nodes_ready(1, 3, FORM).await;
    let worker = (1..=3).find(|id| *id != leader).unwrap();
    let done = cluster.dir.path().join("done");
    std::fs::create_dir(&done).unwrap();
    let job = format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: once}}
spec:
  completions: 4
  parallelism: 1
  template:
    spec:
      restartPolicy: Never
      nodeSelector: {{kubernetes.io/hostname: peer-{worker}}}
      containers:
      - name: c
        image: busybox
        command: ["sh", "-c", "sleep 0.5; echo $(hostname) >> /done/log"]
        volumeMounts: [{{name: done, mountPath: /done}}]
      volumes:
      - name: done
        hostPath: {{path: {}}}
"#,
        done.display()
    );
    apply(&cluster, worker, &job);
    let mut client = cluster.client(worker).await;
    let job_status = |client_json: Option<String>| -> Value {
        client_json.map(|j| serde_json::from_str::<Value>(&j).unwrap()["status"].clone()).unwrap_or(Value::Null)
    };
    let deadline = Instant::now() + SETTLE;
    loop {
        let status = job_status(client.get(key("Job", "default", "once"), false).await.unwrap_or(None));
        if status["succeeded"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no completion: {status}\n{}", cluster.logs_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.kill(leader);

    let deadline = Instant::now() + SETTLE;
    let status = loop {
        let status = job_status(client.get(key("Job", "default", "once"), false).await.unwrap_or(None));
        let complete = status["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Complete" && c["status"] == "True"));
        if complete {
            break status;
        }
        assert!(Instant::now() < deadline, "the Job never completed: {status}\n{}", cluster.logs_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    cluster.restart(leader);
    cluster.wait_leader(FORM).await;
    // Time for a controller that miscounted to start one more Pod.
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(status["succeeded"], 4, "{status}");
    let now = pods(&mut client).await;
    let summary: Vec<String> = now.iter().map(|p| format!("{} {}", name(p), phase(p))).collect();
    assert_eq!(now.len(), 4, "{summary:?}");
    assert!(now.iter().all(|p| phase(p) == "Succeeded"), "{summary:?}");
    let runs = std::fs::read_to_string(done.join("log")).unwrap();
    assert_eq!(runs.lines().count(), 4, "the Pods ran {runs:?}");
    let last = job_status(client.get(key("Job", "default", "once"), false).await.unwrap());
    assert_eq!(last["succeeded"], 4, "{last}");
}

const ROLLING: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: roll}
spec:
  replicas: 6
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 1}
  selector: {matchLabels: {app: roll}}
  template:
    metadata: {labels: {app: roll}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: ["sh", "-c", "sleep 0.5; touch /tmp/ready; exec sleep 3600"]
        env: [{name: VERSION, value: "VALUE"}]
        readinessProbe:
          exec: {command: [cat, /tmp/ready]}
          periodSeconds: 1
"#;

fn is_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Neither terminating nor finished: what counts against maxSurge.
fn is_live(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null() && !matches!(phase(pod), "Succeeded" | "Failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_never_drops_below_replicas_minus_max_unavailable() {
    let cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    cluster.wait_nodes_ready(1, 3, FORM).await;
    apply(&cluster, 1, &ROLLING.replace("VALUE", "1"));
    let before = wait_pods(&cluster, 2, "6 ready Pods", SETTLE, |p| p.iter().filter(|p| is_ready(p)).count() == 6).await;
    let old: Vec<String> = before.iter().map(|p| name(p).to_string()).collect();

    // Every change to a Pod from here on, in commit order.
    let mut client = cluster.client(2).await;
    let (items, revision) = client.list("Pod", Some("default"), false).await.unwrap();
    let mut live: BTreeMap<String, Value> = items
        .iter()
        .map(|j| serde_json::from_str::<Value>(j).unwrap())
        .map(|p| (name(&p).to_string(), p))
        .collect();
    let mut events = client.watch("Pod", Some("default"), revision).await.unwrap();
    apply(&cluster, 1, &ROLLING.replace("VALUE", "2"));

    let (mut min_ready, mut max_live) = (usize::MAX, 0);
    let deadline = Instant::now() + SETTLE;
    loop {
        let event = tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), events.next())
            .await
            .unwrap_or_else(|_| panic!("the rollout did not finish\n{}", cluster.logs_tail()))
            .expect("watch ended")
            .expect("watch failed");
        let pod: Value = serde_json::from_str(&event.object_json).unwrap();
        if event.r#type == flotilla_client::api::EventType::Deleted as i32 {
            live.remove(name(&pod));
        } else {
            live.insert(name(&pod).to_string(), pod);
        }
        let ready = live.values().filter(|p| is_ready(p)).count();
        min_ready = min_ready.min(ready);
        max_live = max_live.max(live.values().filter(|p| is_live(p)).count());
        let finished = live.len() == 6 && ready == 6 && live.keys().all(|n| !old.contains(n));
        if finished {
            break;
        }
    }
    eprintln!("during the rollout: at least {min_ready} ready, at most {max_live} Pods");
    assert!(min_ready >= 5, "only {min_ready} Pods were ready at one point (replicas 6, maxUnavailable 1)");
    assert!(max_live <= 7, "{max_live} Pods at once (replicas 6, maxSurge 1)");
}
