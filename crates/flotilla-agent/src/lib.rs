//! The node agent: runs the Pods bound to this peer, as kubelet does.
//!
//! It is split in two:
//!
//! - [`pod_worker`] is the pod lifecycle as a pure, synchronous state machine
//!   per Pod: sandbox, init containers in order, restart policies with
//!   exponential back-off, probes, phases, conditions, container statuses and
//!   kubelet's events. It takes the time and the runtime's answers as plain
//!   data and returns the next runtime actions, so it is unit-tested
//!   exhaustively and driven by the simulator without tokio.
//! - [`Agent`] is the thin async driver: one task per Pod performs the
//!   worker's actions on the [`PodRuntime`], feeds the answers back, and
//!   sends status changes and events to the IO layer through a bounded,
//!   coalescing channel. It also does what spans Pods: removing leftovers at
//!   start, fencing, logs and exec.
//!
//! The runtime knows no policy: it creates sandboxes, starts and stops
//! containers and reports what happened. Restart policies, back-off, probe
//! thresholds and phases live here once, so the process, docker and fake
//! runtimes give a Pod exactly the same semantics, and a new runtime cannot
//! get them subtly wrong.

mod perform;
pub mod pod_worker;
mod sink;
pub mod time;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use flotilla_api::pod::{Pod, PodStatus};
use flotilla_runtime::{
    ContainerId, ExecOutput, PodRuntime, RuntimeError,
};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::perform::perform_all;
use crate::pod_worker::{PodWorker, StopReason};
use crate::sink::{Sink, SinkQueue, forward};

/// Milliseconds since the Unix epoch, from whatever clock the peer uses.
pub type NowFn = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Runtime calls in flight at once across all Pods, other than stops.
const MAX_RUNTIME_CALLS: usize = 32;
/// Stops in flight at once: a stop waits out a grace period, so many run
/// side by side, still bounded.
const MAX_STOPS: usize = 1024;
/// Events queued for the IO layer; beyond this the oldest are dropped.
/// Statuses are never dropped, only coalesced to the latest per Pod.
const MAX_QUEUED_EVENTS: usize = 4096;
/// A runtime call other than a stop that takes longer has failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Time a stop may take beyond its grace period.
const STOP_SLACK: Duration = Duration::from_secs(60);
/// Attempts at removing one leftover sandbox at start.
const LEFTOVER_REMOVE_ATTEMPTS: u32 = 5;
/// Bytes of a failing probe's output kept in the Unhealthy event.
const MAX_PROBE_DETAIL_BYTES: usize = 1024;
/// How long `shutdown` waits for queued reports to be taken.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    pub node_name: String,
    /// First restart delay of a failed container; doubles per restart.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// A container that ran this long before exiting starts its back-off over.
    pub backoff_reset_after_ms: u64,
    /// How often runtime states are polled (probes keep their own periods).
    pub sync_interval_ms: u64,
    /// Capacity of the report channel: how many reports the IO layer can
    /// take in one batch before the agent starts coalescing.
    pub max_status_batch: usize,
}

impl AgentConfig {
    /// Kubernetes' timings: back-off 10 s doubling to 5 min, reset after
    /// 10 min of running.
    pub fn new(node_name: impl Into<String>) -> Self {
        AgentConfig {
            node_name: node_name.into(),
            backoff_base_ms: 10_000,
            backoff_max_ms: 300_000,
            backoff_reset_after_ms: 600_000,
            sync_interval_ms: 1_000,
            max_status_batch: 256,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DesiredPod {
    pub pod: Pod,
    /// Resolved configMap volumes: configMap name to (key to value).
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub status: PodStatus,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentEvent {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub reason: String,
    pub message: String,
    pub warning: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    Status(StatusUpdate),
    Event(AgentEvent),
    /// The Pod was stopped because it had a deletionTimestamp or was
    /// removed; the IO layer then deletes the object.
    Stopped {
        namespace: String,
        name: String,
        uid: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("pod {0} does not run on this node")]
    NoPod(String),
    #[error("pod {pod} has no container {container:?}")]
    NoContainer { pod: String, container: String },
    #[error("container {container:?} of pod {pod} has not started")]
    NotStarted { pod: String, container: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data stays consistent at every await point; a panicked holder
    // must not take the whole agent with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone)]
struct Desire {
    pod: Pod,
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
    stop: Option<StopReason>,
}

struct PodEntry {
    generation: u64,
    desire: watch::Sender<Desire>,
    /// Closed when the Pod's task ends.
    done: watch::Receiver<()>,
    containers: Arc<Mutex<Vec<(String, ContainerId)>>>,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, PodEntry>,
    /// The last set given to `sync`.
    last_desired: Vec<DesiredPod>,
}

struct Shared {
    config: AgentConfig,
    runtime: Arc<dyn PodRuntime>,
    now: NowFn,
    calls: Semaphore,
    stops: Semaphore,
    fenced: AtomicBool,
    /// Until when this node may start containers, as the peer last renewed
    /// it (`None`: no limit). A fence follows its expiry, but a Pod worker
    /// whose back-off ends in between (say the moment a frozen machine
    /// thaws) must not start a container first.
    lease_until: Mutex<Option<tokio::time::Instant>>,
    /// True once the leftovers of a previous run are gone.
    cleaned: watch::Receiver<bool>,
    state: Mutex<State>,
    sink: Arc<Sink>,
    next_generation: AtomicU64,
}

pub struct Agent {
    shared: Arc<Shared>,
    forwarder: JoinHandle<()>,
}

impl Agent {
    /// Starts the agent; must be called inside a tokio runtime. Sandboxes
    /// left by a previous run are removed before any Pod starts; Pods then
    /// start again, by their restart policy, once `sync` lists them.
    pub fn start(
        config: AgentConfig,
        runtime: Arc<dyn PodRuntime>,
        now_unix_ms: NowFn,
    ) -> (Agent, mpsc::Receiver<Report>) {
        let (tx, rx) = mpsc::channel(config.max_status_batch.max(1));
        let (cleaned_tx, cleaned) = watch::channel(false);
        let sink = Arc::new(Sink {
            queue: Mutex::new(SinkQueue::default()),
            notify: Notify::new(),
        });
        let shared = Arc::new(Shared {
            config,
            runtime,
            now: now_unix_ms,
            calls: Semaphore::new(MAX_RUNTIME_CALLS),
            stops: Semaphore::new(MAX_STOPS),
            fenced: AtomicBool::new(false),
            lease_until: Mutex::new(None),
            cleaned,
            state: Mutex::new(State::default()),
            sink: sink.clone(),
            next_generation: AtomicU64::new(0),
        });
        tokio::spawn(remove_leftovers(shared.clone(), cleaned_tx));
        let forwarder = tokio::spawn(forward(sink, tx));
        (Agent { shared, forwarder }, rx)
    }

    /// The complete set of Pods bound to this node (call on every change;
    /// cheap if nothing changed). Pods not in the set are stopped and
    /// removed.
    pub fn sync(&self, desired: Vec<DesiredPod>) {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        let fenced = shared.fenced.load(Ordering::SeqCst);
        let mut wanted = BTreeSet::new();
        for d in &desired {
            let uid = &d.pod.metadata.uid;
            if uid.is_empty() {
                continue;
            }
            wanted.insert(uid.clone());
            match state.pods.get(uid) {
                Some(entry) => {
                    entry.desire.send_if_modified(|cur| {
                        let changed = cur.stop.is_none()
                            && (cur.pod.metadata.deletion_timestamp
                                != d.pod.metadata.deletion_timestamp
                                || cur.config_maps != d.config_maps);
                        if changed {
                            cur.pod = d.pod.clone();
                            cur.config_maps = d.config_maps.clone();
                        }
                        changed
                    });
                }
                None if !fenced => {
                    let entry = spawn_pod(shared, d);
                    state.pods.insert(uid.clone(), entry);
                }
                None => {}
            }
        }
        for (uid, entry) in &state.pods {
            if !wanted.contains(uid) {
                request_stop(entry, StopReason::Removed);
            }
        }
        state.last_desired = desired;
    }

    /// Fencing: stops every Pod now (the leader is unreachable) and refuses
    /// to start any until `unfence`. Returns once they are all stopped.
    ///
    /// Every known container is killed at once, even one already stopping
    /// gracefully: the leader may replace these Pods as soon as it declares
    /// the node lost, and a grace period still running would overlap.
    pub async fn fence(&self) {
        self.shared.fenced.store(true, Ordering::SeqCst);
        let containers: Vec<ContainerId> = {
            let state = lock(&self.shared.state);
            state.pods.values().flat_map(|e| lock(&e.containers).iter().map(|(_, id)| id.clone()).collect::<Vec<_>>()).collect()
        };
        let mut kills = JoinSet::new();
        for id in containers {
            let runtime = self.shared.runtime.clone();
            kills.spawn(async move { runtime.stop_container(&id, Duration::ZERO).await });
        }
        while let Some(result) = kills.join_next().await {
            if let Ok(Err(e)) = result {
                tracing::warn!("fencing: {e}");
            }
        }
        self.stop_all(StopReason::Fenced).await;
    }

    /// Lets Pods run again once the caller has made sure its view of the
    /// cluster is current: nothing starts until the next `sync`, which
    /// must come from that view, never from what was known before the
    /// fence.
    pub fn unfence(&self) {
        self.shared.fenced.store(false, Ordering::SeqCst);
    }

    pub fn is_fenced(&self) -> bool {
        self.shared.fenced.load(Ordering::SeqCst)
    }

    /// Lets containers start until `until` (and no later) while unfenced.
    pub fn renew_lease(&self, until: tokio::time::Instant) {
        *lock(&self.shared.lease_until) = Some(until);
    }

    async fn stop_all(&self, reason: StopReason) {
        let done: Vec<watch::Receiver<()>> = {
            let state = lock(&self.shared.state);
            state
                .pods
                .values()
                .map(|entry| {
                    request_stop(entry, reason);
                    entry.done.clone()
                })
                .collect()
        };
        for mut d in done {
            while d.changed().await.is_ok() {}
        }
    }

    fn container(&self, pod_uid: &str, container: &str) -> Result<ContainerId, AgentError> {
        let state = lock(&self.shared.state);
        let entry = state
            .pods
            .get(pod_uid)
            .ok_or_else(|| AgentError::NoPod(pod_uid.to_string()))?;
        let name = if container.is_empty() {
            match entry.desire.borrow().pod.spec.containers.first() {
                Some(c) => c.name.clone(),
                None => String::new(),
            }
        } else {
            container.to_string()
        };
        if let Some((_, id)) = lock(&entry.containers).iter().find(|(n, _)| *n == name) {
            return Ok(id.clone());
        }
        let spec = &entry.desire.borrow().pod.spec;
        let known = spec
            .containers
            .iter()
            .chain(&spec.init_containers)
            .any(|c| c.name == name);
        let (pod, container) = (pod_uid.to_string(), name);
        Err(if known {
            AgentError::NotStarted { pod, container }
        } else {
            AgentError::NoContainer { pod, container }
        })
    }

    /// For `logs`: the container of a Pod by pod uid and container name
    /// ("" = the first container); `previous` reads the attempt before.
    pub async fn logs(
        &self,
        pod_uid: &str,
        container: &str,
        previous: bool,
        tail_lines: Option<usize>,
    ) -> Result<Vec<u8>, AgentError> {
        let id = self.container(pod_uid, container)?;
        Ok(self
            .shared
            .runtime
            .read_logs(&id, previous, tail_lines)
            .await?)
    }

    /// For `logs -f`: output after `offset` bytes and the new offset.
    pub async fn logs_from(
        &self,
        pod_uid: &str,
        container: &str,
        offset: u64,
    ) -> Result<(Vec<u8>, u64), AgentError> {
        let id = self.container(pod_uid, container)?;
        Ok(self.shared.runtime.read_logs_from(&id, offset).await?)
    }

    pub async fn exec(
        &self,
        pod_uid: &str,
        container: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, AgentError> {
        let id = self.container(pod_uid, container)?;
        Ok(self.shared.runtime.exec(&id, command, timeout).await?)
    }

    /// Graceful stop of the agent (peer shutdown): stops every Pod, then
    /// hands over the reports still queued.
    pub async fn shutdown(self) {
        self.shared.fenced.store(true, Ordering::SeqCst);
        self.stop_all(StopReason::Shutdown).await;
        self.shared.sink.close();
        let mut forwarder = self.forwarder;
        if tokio::time::timeout(SHUTDOWN_DRAIN, &mut forwarder)
            .await
            .is_err()
        {
            forwarder.abort();
        }
    }
}

/// The first reason wins, except fencing, which overrides a graceful stop
/// so the Pod is killed at once.
fn request_stop(entry: &PodEntry, reason: StopReason) {
    entry.desire.send_if_modified(|d| {
        let wins = d.stop.is_none() || (reason == StopReason::Fenced && d.stop != Some(StopReason::Fenced));
        if wins {
            d.stop = Some(reason);
        }
        wins
    });
}

fn spawn_pod(shared: &Arc<Shared>, d: &DesiredPod) -> PodEntry {
    let generation = shared.next_generation.fetch_add(1, Ordering::Relaxed);
    let desire = Desire {
        pod: d.pod.clone(),
        config_maps: d.config_maps.clone(),
        stop: None,
    };
    let (desire_tx, desire_rx) = watch::channel(desire);
    let (done_tx, done) = watch::channel(());
    let containers = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(run_pod(
        shared.clone(),
        generation,
        desire_rx,
        done_tx,
        containers.clone(),
    ));
    PodEntry {
        generation,
        desire: desire_tx,
        done,
        containers,
    }
}

async fn remove_leftovers(shared: Arc<Shared>, cleaned: watch::Sender<bool>) {
    let runtime = &shared.runtime;
    match runtime.list_sandboxes().await {
        Ok(sandboxes) => {
            for sandbox in sandboxes {
                for attempt in 1..=LEFTOVER_REMOVE_ATTEMPTS {
                    match runtime.remove_sandbox(&sandbox.id).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(sandbox = ?sandbox.id, pod_uid = %sandbox.pod_uid, attempt, "cannot remove leftover sandbox: {e}");
                            tokio::time::sleep(Duration::from_millis(
                                shared.config.sync_interval_ms.max(1),
                            ))
                            .await;
                        }
                    }
                }
            }
        }
        Err(e) => tracing::warn!("cannot list leftover sandboxes: {e}"),
    }
    let _ = cleaned.send(true);
}

async fn run_pod(
    shared: Arc<Shared>,
    generation: u64,
    mut desire: watch::Receiver<Desire>,
    _done: watch::Sender<()>,
    containers: Arc<Mutex<Vec<(String, ContainerId)>>>,
) {
    let mut cleaned = shared.cleaned.clone();
    let _ = cleaned.wait_for(|c| *c).await;
    let first = desire.borrow_and_update().clone();
    let (namespace, name, uid) = (
        first.pod.metadata.namespace.clone(),
        first.pod.metadata.name.clone(),
        first.pod.metadata.uid.clone(),
    );
    let mut last_status = first.pod.status.clone();
    let mut worker = PodWorker::new(shared.config.clone(), first.pod, first.config_maps);
    if let Some(reason) = first.stop {
        worker.stop(reason);
    }
    let mut observations = Vec::new();
    let mut agent_gone = false;
    let mut changed = false;
    loop {
        if changed {
            changed = false;
            let d = desire.borrow_and_update().clone();
            worker.update(d.pod, d.config_maps);
            if let Some(reason) = d.stop {
                worker.stop(reason);
            }
        }
        let now = (shared.now)();
        let actions = worker.step(now, std::mem::take(&mut observations));
        *lock(&containers) = worker.container_ids();
        for e in worker.take_events() {
            shared.sink.push(Report::Event(AgentEvent {
                namespace: namespace.clone(),
                pod: name.clone(),
                uid: uid.clone(),
                reason: e.reason,
                message: e.message,
                warning: e.warning,
            }));
        }
        let status = worker.status();
        if last_status.as_ref() != Some(&status) {
            shared.sink.push(Report::Status(StatusUpdate {
                namespace: namespace.clone(),
                name: name.clone(),
                uid: uid.clone(),
                status: status.clone(),
            }));
            last_status = Some(status);
        }
        if worker.is_done() {
            break;
        }
        if !actions.is_empty() {
            observations = perform_all(&shared, actions).await;
            continue;
        }
        let wait_ms = worker
            .next_wakeup_ms()
            .saturating_sub(now)
            .clamp(1, shared.config.sync_interval_ms.max(1));
        let sleep = tokio::time::sleep(Duration::from_millis(wait_ms));
        if agent_gone {
            sleep.await;
            continue;
        }
        tokio::select! {
            _ = sleep => {}
            result = desire.changed() => match result {
                Ok(()) => changed = true,
                Err(_) => {
                    agent_gone = true;
                    worker.stop(StopReason::Shutdown);
                }
            },
        }
    }
    if matches!(
        worker.stop_reason(),
        Some(StopReason::Deleted | StopReason::Removed)
    ) {
        shared.sink.push(Report::Stopped {
            namespace,
            name,
            uid: uid.clone(),
        });
    }
    let mut state = lock(&shared.state);
    if state
        .pods
        .get(&uid)
        .is_some_and(|e| e.generation == generation)
    {
        state.pods.remove(&uid);
    }
}
