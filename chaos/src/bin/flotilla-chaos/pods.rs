//! The Pod workloads: a StatefulSet whose Pods stamp the time while they
//! run, a Deployment whose ready replicas are sampled, and Jobs run one
//! after another whose completions are read back. Their Pods run in the
//! peers' containers (process runtime) and write to the volume the compose
//! file mounts at `/records` in every peer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flotilla_chaos::invariants::JobOutcome;
use flotilla_chaos::report::ReplicaSample;
use flotilla_api::wellknown::FENCING_TOKEN_ANNOTATION;
use flotilla_client::api::ApplyRequest;
use flotilla_client::{Client, key};
use serde_json::{Value, json};

use crate::cluster::{Clock, PEERS, connect};

pub const STATEFULSET_REPLICAS: u64 = 3;
pub const DEPLOYMENT_REPLICAS: u64 = 5;
const JOB_COMPLETIONS: u64 = 4;
/// How often the ready replicas are sampled and a Job is polled.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);
/// How long one API call of the samplers may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
const NAMESPACE: &str = "default";

/// Which Pod workloads run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Selected {
    pub statefulset: bool,
    pub deployment: bool,
    pub job: bool,
}

fn statefulset() -> Value {
    // A stamp every 100 ms: an overlap shorter than that can hide between
    // a run's last stamp and its end. Each stamp goes through the
    // ordinal's fence, shared by every peer through the records volume:
    // under its lock, a stamp carrying a fencing token smaller than the
    // largest seen is refused (and recorded as such), so an instance that
    // thaws after its replacement started cannot write. The largest token
    // is replaced by rename, so a Pod killed mid-write never leaves it torn.
    let script = r#"mkdir -p /records/sts /records/fence; me=$(hostname); f=/records/sts/$me.$(date +%s%N)
fence=/records/fence/$me; exec 9>>$fence.lock
while true; do
  flock 9
  seen=$(cat $fence 2>/dev/null)
  if [ "$TOKEN" -ge "${seen:-0}" ]; then
    if [ "$TOKEN" != "$seen" ]; then echo $TOKEN > $fence.new && mv $fence.new $fence; fi
    date +%s%N >> $f
  else
    echo "$(date +%s%N) refused" >> $f
  fi
  flock -u 9
  sleep 0.1
done"#;
    let token = json!({"fieldRef": {"fieldPath": format!("metadata.annotations['{FENCING_TOKEN_ANNOTATION}']")}});
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "chaos-sts"},
        "spec": {
            "serviceName": "chaos-sts", "replicas": STATEFULSET_REPLICAS, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"chaos": "statefulset"}},
            "template": {
                "metadata": {"labels": {"chaos": "statefulset"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "rec", "image": "flotilla:local", "command": ["sh", "-c", script],
                                    "env": [{"name": "TOKEN", "valueFrom": token}],
                                    "volumeMounts": [{"name": "records", "mountPath": "/records"}]}],
                    "volumes": [{"name": "records", "hostPath": {"path": "/records"}}]
                }
            }
        }
    })
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "chaos-deploy"},
        "spec": {
            "replicas": DEPLOYMENT_REPLICAS,
            "selector": {"matchLabels": {"chaos": "deployment"}},
            "template": {
                "metadata": {"labels": {"chaos": "deployment"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": "flotilla:local", "command": ["sleep", "1000000"],
                                    "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}]
                }
            }
        }
    })
}

fn job(name: &str) -> Value {
    let script = format!("mkdir -p /records/jobs; echo $(hostname) >> /records/jobs/{name}; sleep 2");
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completions": JOB_COMPLETIONS, "parallelism": 2, "backoffLimit": 100,
            "template": {
                "metadata": {"labels": {"chaos": "job"}},
                "spec": {
                    "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "work", "image": "flotilla:local", "command": ["sh", "-c", script],
                                    "volumeMounts": [{"name": "records", "mountPath": "/records"}]}],
                    "volumes": [{"name": "records", "hostPath": {"path": "/records"}}]
                }
            }
        }
    })
}

/// A client of whichever peer answers first, starting from `from`.
async fn any_client(from: u64) -> Option<Client> {
    for i in 0..PEERS {
        if let Some(c) = connect(1 + (from + i) % PEERS, CALL_TIMEOUT).await {
            return Some(c);
        }
    }
    None
}

async fn apply(manifest: &Value) -> anyhow::Result<()> {
    let mut client = any_client(0).await.ok_or_else(|| anyhow::anyhow!("no peer answers"))?;
    client
        .apply(ApplyRequest { object_json: manifest.to_string(), namespace: NAMESPACE.into(), ..Default::default() })
        .await?;
    Ok(())
}

pub async fn start(selected: Selected) -> anyhow::Result<()> {
    if selected.statefulset {
        apply(&statefulset()).await?;
    }
    if selected.deployment {
        apply(&deployment()).await?;
    }
    Ok(())
}

fn is_ready(pod: &Value) -> bool {
    let running = pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some();
    let ready = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    running && ready && !deleting
}

async fn list_pods(client: &mut Client) -> Option<Vec<Value>> {
    let (items, _) = tokio::time::timeout(CALL_TIMEOUT, client.list("Pod", Some(NAMESPACE), false)).await.ok()?.ok()?;
    Some(items.iter().filter_map(|j| serde_json::from_str(j).ok()).collect())
}

/// The ready replicas of the StatefulSet and the Deployment now, through
/// the first peer to answer from `turn` on (a linearizable list: what the
/// cluster has agreed, wherever it is asked).
pub async fn sample_once(selected: Selected, turn: u64, time_ns: u64) -> Option<Vec<ReplicaSample>> {
    let mut client = any_client(turn).await?;
    let pods = list_pods(&mut client).await?;
    let mut ready: BTreeMap<&str, u64> = BTreeMap::new();
    for pod in pods.iter().filter(|p| is_ready(p)) {
        if let Some(w) = pod.pointer("/metadata/labels/chaos").and_then(Value::as_str) {
            *ready.entry(w).or_default() += 1;
        }
    }
    let workloads = [("statefulset", selected.statefulset, STATEFULSET_REPLICAS), ("deployment", selected.deployment, DEPLOYMENT_REPLICAS)];
    Some(
        workloads
            .into_iter()
            .filter(|(_, on, _)| *on)
            .map(|(workload, _, desired)| ReplicaSample { time_ns, workload: workload.into(), ready: ready.get(workload).copied().unwrap_or(0), desired })
            .collect(),
    )
}

/// Samples the ready replicas every `SAMPLE_INTERVAL` until `stop`,
/// asking each peer in turn.
pub async fn sample_replicas(selected: Selected, clock: Clock, stop: Arc<AtomicBool>) -> Vec<ReplicaSample> {
    let mut samples = Vec::new();
    let mut turn = 0;
    if !(selected.statefulset || selected.deployment) {
        return samples;
    }
    while !stop.load(Ordering::Relaxed) {
        turn += 1;
        let asked_ns = clock.ns();
        if let Some(round) = sample_once(selected, turn, asked_ns).await {
            samples.extend(round);
        }
        tokio::time::sleep(SAMPLE_INTERVAL).await;
    }
    samples
}

/// Whether every selected workload has all its replicas ready in the last
/// sample round.
pub fn all_ready(samples: &[ReplicaSample], selected: Selected) -> bool {
    let last = |w: &str| samples.iter().rev().find(|s| s.workload == w).is_some_and(|s| s.ready >= s.desired);
    (!selected.statefulset || last("statefulset")) && (!selected.deployment || last("deployment"))
}

/// Runs Jobs one after another until `stop`; the Job running when `stop`
/// comes is followed until it completes or `finish` comes. Returns each
/// Job's outcome, runs recorded not yet filled in.
pub async fn run_jobs(stop: Arc<AtomicBool>, finish: Arc<AtomicBool>) -> Vec<JobOutcome> {
    let mut outcomes = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let name = format!("chaos-job-{n}");
        while apply(&job(&name)).await.is_err() {
            if finish.load(Ordering::Relaxed) {
                return outcomes;
            }
            tokio::time::sleep(SAMPLE_INTERVAL).await;
        }
        let mut outcome = JobOutcome { name: name.clone(), completions: JOB_COMPLETIONS, status_succeeded: 0, succeeded_pods: 0, recorded_runs: 0, complete: false };
        let mut turn = 0;
        while !finish.load(Ordering::Relaxed) {
            turn += 1;
            if let Some(read) = read_job(turn, &name).await {
                outcome.status_succeeded = read.0;
                outcome.succeeded_pods = read.1;
                outcome.complete = read.2;
                if outcome.complete {
                    break;
                }
            }
            tokio::time::sleep(SAMPLE_INTERVAL).await;
        }
        let done = outcome.complete;
        outcomes.push(outcome);
        if !done {
            break;
        }
        // Its Pods go with it; they were counted above.
        if let Some(mut c) = any_client(n).await {
            let _ = tokio::time::timeout(CALL_TIMEOUT, c.delete_object(key("Job", NAMESPACE, &name), true)).await;
        }
    }
    outcomes
}

/// The Job's `status.succeeded`, its Succeeded Pods, and whether it is
/// Complete, all as of one revision: a linearizable list of the Pods, then
/// the Jobs at that list's revision.
async fn read_job(turn: u64, name: &str) -> Option<(u64, u64, bool)> {
    let mut client = any_client(turn).await?;
    let (pod_items, revision) = tokio::time::timeout(CALL_TIMEOUT, client.list("Pod", Some(NAMESPACE), false)).await.ok()?.ok()?;
    let pods: Vec<Value> = pod_items.iter().filter_map(|j| serde_json::from_str(j).ok()).collect();
    let (jobs, _) = tokio::time::timeout(CALL_TIMEOUT, client.list_at("Job", Some(NAMESPACE), revision, true)).await.ok()?.ok()?;
    let job: Value = jobs.iter().filter_map(|j| serde_json::from_str::<Value>(j).ok()).find(|j| j["metadata"]["name"] == name)?;
    let succeeded = job.pointer("/status/succeeded").and_then(Value::as_u64).unwrap_or(0);
    let complete = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Complete" && c["status"] == "True"));
    let owned_succeeded = pods
        .iter()
        .filter(|p| {
            p.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|r| r["kind"] == "Job" && r["name"] == name))
        })
        .filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Succeeded"))
        .count() as u64;
    Some((succeeded, owned_succeeded, complete))
}
