//! The lifecycle of one Pod as a pure, synchronous state machine.
//!
//! [`PodWorker::step`] takes the time and what the runtime answered to the
//! previous actions ([`Observation`]s) and returns the next
//! [`RuntimeAction`]s; [`PodWorker::status`] is the Kubernetes `PodStatus`
//! that follows, and [`PodWorker::take_events`] the events kubelet would
//! have recorded. No clock, no IO: the driver (or a test, or the simulator)
//! performs the actions and feeds the answers back.

use std::collections::{BTreeMap, VecDeque};

use flotilla_api::pod::{
    Condition, Container, ContainerState as ApiContainerState, ContainerStateRunning,
    ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, EnvVar, IntOrString, Pod, PodField, PodStatus,
    Probe,
};
use flotilla_runtime::{
    ContainerId, ContainerSpec, ContainerState, ExitStatus, MountSpec, NetworkCheck, SandboxId,
    SandboxSpec, VolumeSource, VolumeSpec,
};

use crate::AgentConfig;
use crate::time::go_duration;
use flotilla_api::time::format_rfc3339 as rfc3339;

/// Events kept between two `take_events`; the oldest go first.
const MAX_PENDING_EVENTS: usize = 256;
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// Exit code kubelet reports for a container that could not start.
const START_ERROR_EXIT_CODE: i32 = 128;
/// Exit code kubelet reports for a container that vanished.
const UNKNOWN_EXIT_CODE: i32 = 137;

/// Which container of the Pod: `init` picks `initContainers`, else
/// `containers`; `index` is its position there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerRef {
    pub init: bool,
    pub index: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    fn title(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeCheck {
    Exec(Vec<String>),
    Network(NetworkCheck),
}

/// What the worker asks the runtime to do. Every action is answered by at
/// least one [`Observation`] except `Inspect` of a container still running
/// and failed inspections, which the next poll repeats.
#[derive(Clone, Debug, PartialEq)]
pub enum RuntimeAction {
    CreateSandbox(SandboxSpec),
    StartContainer {
        target: ContainerRef,
        sandbox: SandboxId,
        spec: ContainerSpec,
        attempt: u32,
    },
    /// Ask `container_state`; answered by `ContainerState` or `ContainerGone`.
    Inspect {
        id: ContainerId,
    },
    Probe {
        id: ContainerId,
        sandbox: SandboxId,
        kind: ProbeKind,
        check: ProbeCheck,
        timeout_ms: u64,
    },
    /// Stop, then inspect: answered by `ContainerState`, `ContainerGone` or
    /// `StopFailed`.
    StopContainer {
        id: ContainerId,
        grace_ms: u64,
    },
    RemoveSandbox(SandboxId),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    SandboxCreated(SandboxId),
    SandboxFailed(String),
    ContainerStarted {
        target: ContainerRef,
        id: ContainerId,
        started_at_ms: u64,
    },
    ContainerStartFailed {
        target: ContainerRef,
        message: String,
    },
    ContainerState {
        id: ContainerId,
        state: ContainerState,
    },
    ContainerGone {
        id: ContainerId,
    },
    ProbeResult {
        id: ContainerId,
        kind: ProbeKind,
        success: bool,
        detail: String,
    },
    StopFailed {
        id: ContainerId,
        message: String,
    },
    SandboxRemoved,
    SandboxRemoveFailed(String),
}

/// An event as kubelet records them on the Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerEvent {
    pub reason: String,
    pub message: String,
    pub warning: bool,
}

/// Why a Pod is being stopped; the first reason given wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// It has a deletionTimestamp.
    Deleted,
    /// It is no longer bound to this node.
    Removed,
    /// The leader is unreachable: stop before anyone replaces the Pod.
    Fenced,
    /// The agent itself stops.
    Shutdown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    Always,
    OnFailure,
    Never,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Terminated {
    exit_code: i32,
    signal: Option<i32>,
    reason: String,
    message: String,
    started_at_ms: u64,
    finished_at_ms: u64,
}

impl Terminated {
    fn from_exit(status: &ExitStatus) -> Self {
        let reason = if status.oom_killed {
            "OOMKilled"
        } else if status.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        Terminated {
            exit_code: status.exit_code,
            signal: status.signal,
            reason: reason.into(),
            message: String::new(),
            started_at_ms: status.started_at_unix_ms,
            finished_at_ms: status.finished_at_unix_ms,
        }
    }

    fn to_api(&self) -> ContainerStateTerminated {
        ContainerStateTerminated {
            exit_code: self.exit_code,
            signal: self.signal,
            reason: self.reason.clone(),
            message: self.message.clone(),
            started_at: Some(rfc3339(self.started_at_ms)),
            finished_at: Some(rfc3339(self.finished_at_ms)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Run {
    /// Not started yet, or waiting out its back-off before a restart.
    Waiting,
    Starting,
    Running {
        id: ContainerId,
        started_at_ms: u64,
    },
    /// A stop is wanted; `in_flight` while the runtime works on it, else
    /// (after a failed stop) sent again once `retry_at_ms` has passed.
    Killing {
        id: ContainerId,
        started_at_ms: u64,
        in_flight: bool,
        retry_at_ms: u64,
    },
    /// Exited and will not run again.
    Exited(Terminated),
}

#[derive(Clone, Debug)]
struct ProbeState {
    kind: ProbeKind,
    probe: Probe,
    next_at_ms: u64,
    in_flight: bool,
    successes: u32,
    failures: u32,
}

impl ProbeState {
    fn period_ms(&self) -> u64 {
        seconds_ms(self.probe.period_seconds.unwrap_or(10)).max(1)
    }
    fn success_threshold(&self) -> u32 {
        self.probe.success_threshold.unwrap_or(1).max(1) as u32
    }
    fn failure_threshold(&self) -> u32 {
        self.probe.failure_threshold.unwrap_or(3).max(1) as u32
    }
}

#[derive(Clone, Debug)]
struct Ctr {
    spec: Container,
    run: Run,
    restart_count: u32,
    /// Ran at least once (in this worker or before a peer restart): the
    /// next start is a restart.
    has_run: bool,
    /// The termination before the current run: `lastState`.
    last: Option<Terminated>,
    /// Restarts since the container last ran long enough to reset back-off.
    consecutive_restarts: u32,
    backoff_ms: u64,
    backoff_until_ms: u64,
    /// The startup probe passed (or there is none) in this run.
    started: bool,
    readiness_ok: bool,
    ready: bool,
    probes: Vec<ProbeState>,
    /// The newest runtime container, for logs and exec.
    id: Option<ContainerId>,
}

impl Ctr {
    fn new(spec: Container) -> Self {
        Ctr {
            spec,
            run: Run::Waiting,
            restart_count: 0,
            has_run: false,
            last: None,
            consecutive_restarts: 0,
            backoff_ms: 0,
            backoff_until_ms: 0,
            started: false,
            readiness_ok: false,
            ready: false,
            probes: Vec::new(),
            id: None,
        }
    }

    fn running_id(&self) -> Option<&ContainerId> {
        match &self.run {
            Run::Running { id, .. } | Run::Killing { id, .. } => Some(id),
            _ => None,
        }
    }

    fn succeeded(&self) -> bool {
        matches!(&self.run, Run::Exited(t) if t.exit_code == 0)
    }

    fn reset_probes(&mut self, started_at_ms: u64) {
        let c = &self.spec;
        self.probes = [
            (ProbeKind::Startup, &c.startup_probe),
            (ProbeKind::Liveness, &c.liveness_probe),
            (ProbeKind::Readiness, &c.readiness_probe),
        ]
        .into_iter()
        .filter_map(|(kind, probe)| {
            let probe = probe.clone()?;
            let next_at_ms = started_at_ms + seconds_ms(probe.initial_delay_seconds.unwrap_or(0));
            Some(ProbeState {
                kind,
                probe,
                next_at_ms,
                in_flight: false,
                successes: 0,
                failures: 0,
            })
        })
        .collect();
        self.started = c.startup_probe.is_none();
        self.readiness_ok = false;
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Sandbox {
    Absent,
    Creating,
    Ready(SandboxId),
    Removing(SandboxId),
    Removed,
}

fn seconds_ms(seconds: i32) -> u64 {
    u64::try_from(seconds).unwrap_or(0).saturating_mul(1000)
}

/// The phase from the containers alone, as kubelet computes it.
fn phase_of(policy: Policy, init: &[Ctr], app: &[Ctr]) -> &'static str {
    if init
        .iter()
        .any(|c| matches!(&c.run, Run::Exited(t) if t.exit_code != 0))
    {
        return "Failed";
    }
    if !init.iter().all(Ctr::succeeded) || app.iter().any(|c| !c.has_run) {
        return "Pending";
    }
    let exited: Vec<&Terminated> = app
        .iter()
        .filter_map(|c| match &c.run {
            Run::Exited(t) => Some(t),
            _ => None,
        })
        .collect();
    if app.is_empty() || exited.len() < app.len() || policy == Policy::Always {
        return "Running";
    }
    if exited.iter().all(|t| t.exit_code == 0) {
        "Succeeded"
    } else {
        "Failed"
    }
}

pub struct PodWorker {
    config: AgentConfig,
    pod: Pod,
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
    policy: Policy,
    sandbox: Sandbox,
    sandbox_failures: u32,
    sandbox_retry_at_ms: u64,
    init: Vec<Ctr>,
    app: Vec<Ctr>,
    /// Containers that ran before a peer restart, whose end is applied to
    /// the restart policy at the first step.
    recovered: Vec<(ContainerRef, Terminated)>,
    /// A Pod reported Succeeded or Failed before: nothing runs again, its
    /// status stays as reported.
    frozen: Option<PodStatus>,
    /// Succeeded or Failed, with the Pod's reason and message: final.
    terminal: Option<(&'static str, String, String)>,
    stopping: Option<StopReason>,
    phase_at_stop: &'static str,
    done: bool,
    now_ms: u64,
    start_ms: Option<u64>,
    start_time: Option<String>,
    conditions: Vec<Condition>,
    next_poll_ms: u64,
    events: VecDeque<WorkerEvent>,
}

impl PodWorker {
    /// A worker for a Pod newly seen on this node. The Pod's reported
    /// status, if any, carries restart counts, start time and condition
    /// times over a peer restart.
    pub fn new(
        config: AgentConfig,
        pod: Pod,
        config_maps: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Self {
        let policy = match pod.spec.restart_policy.as_str() {
            "Never" => Policy::Never,
            "OnFailure" => Policy::OnFailure,
            _ => Policy::Always,
        };
        let reported = pod.status.clone().unwrap_or_default();
        let frozen =
            matches!(reported.phase.as_str(), "Succeeded" | "Failed").then(|| reported.clone());
        let mut recovered = Vec::new();
        let mut containers =
            |specs: &[Container], statuses: &[ContainerStatus], init: bool| -> Vec<Ctr> {
                specs
                    .iter()
                    .enumerate()
                    .map(|(index, spec)| {
                        let mut c = Ctr::new(spec.clone());
                        let Some(s) = statuses.iter().find(|s| s.name == spec.name) else {
                            return c;
                        };
                        c.restart_count = u32::try_from(s.restart_count).unwrap_or(0);
                        // Init containers run again in the new sandbox; app
                        // containers that ran are restarted by their policy.
                        if init {
                            return c;
                        }
                        let ended = if s.state.running.is_some() {
                            Some((UNKNOWN_EXIT_CODE, "ContainerStatusUnknown".to_string()))
                        } else {
                            s.state
                                .terminated
                                .as_ref()
                                .or(s.last_state.terminated.as_ref())
                                .map(|t| (t.exit_code, t.reason.clone()))
                        };
                        if let Some((exit_code, reason)) = ended {
                            c.has_run = true;
                            let t = Terminated {
                                exit_code,
                                signal: None,
                                reason,
                                message: String::new(),
                                started_at_ms: 0,
                                finished_at_ms: 0,
                            };
                            recovered.push((ContainerRef { init, index }, t));
                        }
                        c
                    })
                    .collect()
            };
        let init = containers(
            &pod.spec.init_containers,
            &reported.init_container_statuses,
            true,
        );
        let app = containers(&pod.spec.containers, &reported.container_statuses, false);
        let mut worker = PodWorker {
            config,
            policy,
            sandbox: Sandbox::Absent,
            sandbox_failures: 0,
            sandbox_retry_at_ms: 0,
            init,
            app,
            recovered,
            frozen,
            terminal: None,
            stopping: None,
            phase_at_stop: "Pending",
            done: false,
            now_ms: 0,
            start_ms: None,
            start_time: reported.start_time.clone(),
            conditions: reported.conditions.clone(),
            next_poll_ms: 0,
            events: VecDeque::new(),
            config_maps,
            pod,
        };
        if worker.pod.metadata.deletion_timestamp.is_some() {
            worker.stop(StopReason::Deleted);
        }
        worker
    }

    pub fn uid(&self) -> &str {
        &self.pod.metadata.uid
    }

    pub fn pod(&self) -> &Pod {
        &self.pod
    }

    /// A newer version of the Pod and its configMaps. Only the deletion
    /// timestamp and the configMaps (before the sandbox exists) matter: a
    /// Pod's spec does not change while it runs.
    pub fn update(&mut self, pod: Pod, config_maps: BTreeMap<String, BTreeMap<String, String>>) {
        let deleted = pod.metadata.deletion_timestamp.is_some();
        self.pod.metadata = pod.metadata;
        self.config_maps = config_maps;
        if deleted {
            self.stop(StopReason::Deleted);
        }
    }

    /// Stops every container (SIGTERM, SIGKILL after the grace period) and
    /// removes the sandbox; then [`PodWorker::is_done`].
    /// The first reason wins, except fencing, which turns a graceful stop
    /// into an immediate kill.
    pub fn stop(&mut self, reason: StopReason) {
        match self.stopping {
            None => {
                self.phase_at_stop = self.phase();
                self.stopping = Some(reason);
            }
            Some(current) if reason == StopReason::Fenced && current != StopReason::Fenced => {
                self.stopping = Some(reason);
            }
            Some(_) => {}
        }
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stopping
    }

    /// Stopped and its sandbox removed: the worker has nothing left to do.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The newest runtime container of each container name, for logs and
    /// exec; init containers first.
    pub fn container_ids(&self) -> Vec<(String, ContainerId)> {
        self.init
            .iter()
            .chain(&self.app)
            .filter_map(|c| Some((c.spec.name.clone(), c.id.clone()?)))
            .collect()
    }

    pub fn take_events(&mut self) -> Vec<WorkerEvent> {
        self.events.drain(..).collect()
    }

    /// When the worker next has something to do without a new observation.
    pub fn next_wakeup_ms(&self) -> u64 {
        let mut at = self.next_poll_ms;
        let mut consider = |t: u64| {
            if t > self.now_ms {
                at = at.min(t);
            }
        };
        consider(self.sandbox_retry_at_ms);
        for c in self.init.iter().chain(&self.app) {
            if c.run == Run::Waiting {
                consider(c.backoff_until_ms);
            }
            for p in &c.probes {
                consider(p.next_at_ms);
            }
        }
        if let (Some(start), Some(deadline)) =
            (self.start_ms, self.pod.spec.active_deadline_seconds)
        {
            consider(
                start.saturating_add(u64::try_from(deadline).unwrap_or(0).saturating_mul(1000)),
            );
        }
        at
    }

    fn event(&mut self, reason: &str, message: String, warning: bool) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(WorkerEvent {
            reason: reason.into(),
            message,
            warning,
        });
    }

    fn pod_label(&self) -> String {
        let m = &self.pod.metadata;
        format!("{}_{}({})", m.name, m.namespace, m.uid)
    }

    /// A fenced Pod is killed at once: the leader may declare the node lost
    /// `lost_after_ms` after its last heartbeat and start a replacement, and
    /// a grace period would let the two overlap.
    fn grace_ms(&self) -> u64 {
        if self.stopping == Some(StopReason::Fenced) {
            return 0;
        }
        let seconds = self
            .pod
            .spec
            .termination_grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        u64::try_from(seconds).unwrap_or(0).saturating_mul(1000)
    }

    fn halted(&self) -> bool {
        self.stopping.is_some() || self.terminal.is_some()
    }

    fn ctr(&mut self, target: ContainerRef) -> Option<&mut Ctr> {
        pick(&mut self.init, &mut self.app, target)
    }

    fn find_running(&self, id: &ContainerId) -> Option<ContainerRef> {
        let find = |list: &[Ctr], init: bool| {
            list.iter()
                .position(|c| c.running_id() == Some(id))
                .map(|index| ContainerRef { init, index })
        };
        find(&self.init, true).or_else(|| find(&self.app, false))
    }

    /// Advances the Pod: applies what the runtime reported, then returns
    /// what it should do next.
    pub fn step(&mut self, now_ms: u64, observations: Vec<Observation>) -> Vec<RuntimeAction> {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        let mut actions = Vec::new();
        if self.frozen.is_some() {
            self.done = self.stopping.is_some();
            return actions;
        }
        if self.start_ms.is_none() {
            self.start_ms = Some(now);
            self.start_time.get_or_insert_with(|| rfc3339(now));
        }
        for (target, mut t) in std::mem::take(&mut self.recovered) {
            t.started_at_ms = now;
            t.finished_at_ms = now;
            self.on_exit(target, t, false);
        }
        for o in observations {
            self.observe(now, o);
        }
        self.check_deadline(now);
        let poll = now >= self.next_poll_ms;
        if poll {
            self.next_poll_ms = now + self.config.sync_interval_ms.max(1);
        }
        if self.halted() {
            self.kill_all();
        } else {
            self.advance(now, &mut actions);
        }
        self.send_stops(now, &mut actions);
        if poll {
            for c in self.init.iter().chain(&self.app) {
                if let Run::Running { id, .. } = &c.run {
                    actions.push(RuntimeAction::Inspect { id: id.clone() });
                }
            }
        }
        if self.stopping.is_some() {
            self.teardown(now, &mut actions);
        }
        self.refresh(now);
        actions
    }

    fn observe(&mut self, now: u64, o: Observation) {
        match o {
            Observation::SandboxCreated(id) => {
                if self.sandbox == Sandbox::Creating {
                    self.sandbox = Sandbox::Ready(id);
                    self.sandbox_failures = 0;
                }
            }
            Observation::SandboxFailed(message) => {
                if self.sandbox == Sandbox::Creating {
                    self.sandbox = Sandbox::Absent;
                    self.sandbox_failed(
                        now,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {message}"),
                    );
                }
            }
            Observation::ContainerStarted {
                target,
                id,
                started_at_ms,
            } => {
                let Some(c) = self.ctr(target) else { return };
                if c.run != Run::Starting {
                    return;
                }
                if c.has_run {
                    c.restart_count += 1;
                }
                c.has_run = true;
                c.run = Run::Running {
                    id: id.clone(),
                    started_at_ms,
                };
                c.id = Some(id);
                c.reset_probes(started_at_ms);
                let (name, image) = (c.spec.name.clone(), c.spec.image.clone());
                self.event(
                    "Pulled",
                    format!("Container image {image:?} already present on machine"),
                    false,
                );
                self.event("Created", format!("Created container {name}"), false);
                self.event("Started", format!("Started container {name}"), false);
            }
            Observation::ContainerStartFailed { target, message } => {
                let Some(c) = self.ctr(target) else { return };
                if c.run != Run::Starting {
                    return;
                }
                if c.has_run {
                    c.restart_count += 1;
                }
                c.has_run = true;
                self.event("Failed", format!("Error: {message}"), true);
                let t = Terminated {
                    exit_code: START_ERROR_EXIT_CODE,
                    signal: None,
                    reason: "StartError".into(),
                    message,
                    started_at_ms: now,
                    finished_at_ms: now,
                };
                self.on_exit(target, t, true);
            }
            Observation::ContainerState { id, state } => {
                if let (Some(target), ContainerState::Exited(status)) =
                    (self.find_running(&id), state)
                {
                    self.on_exit(target, Terminated::from_exit(&status), true);
                }
            }
            Observation::ContainerGone { id } => {
                if let Some(target) = self.find_running(&id) {
                    let started_at_ms = match self.ctr(target).map(|c| &c.run) {
                        Some(
                            Run::Running { started_at_ms, .. } | Run::Killing { started_at_ms, .. },
                        ) => *started_at_ms,
                        _ => now,
                    };
                    let t = Terminated {
                        exit_code: UNKNOWN_EXIT_CODE,
                        signal: None,
                        reason: "ContainerStatusUnknown".into(),
                        message: "The container could not be located".into(),
                        started_at_ms,
                        finished_at_ms: now,
                    };
                    self.on_exit(target, t, true);
                }
            }
            Observation::ProbeResult {
                id,
                kind,
                success,
                detail,
            } => {
                if let Some(target) = self.find_running(&id) {
                    self.on_probe(now, target, kind, success, &detail);
                }
            }
            Observation::StopFailed { id, message } => {
                let retry = now + self.config.sync_interval_ms.max(1);
                if let Some(target) = self.find_running(&id) {
                    let c = self.ctr(target).expect("found");
                    if let Run::Killing {
                        in_flight,
                        retry_at_ms,
                        ..
                    } = &mut c.run
                    {
                        *in_flight = false;
                        *retry_at_ms = retry;
                    }
                    let name = c.spec.name.clone();
                    self.event(
                        "FailedKillPod",
                        format!("error killing container {name}: {message}"),
                        true,
                    );
                }
            }
            Observation::SandboxRemoved => {
                if matches!(self.sandbox, Sandbox::Removing(_)) {
                    self.sandbox = Sandbox::Removed;
                }
            }
            Observation::SandboxRemoveFailed(message) => {
                if let Sandbox::Removing(id) = &self.sandbox {
                    self.sandbox = Sandbox::Ready(id.clone());
                    self.sandbox_retry_at_ms = now + self.config.sync_interval_ms.max(1);
                    self.event(
                        "FailedKillPod",
                        format!("error removing pod sandbox: {message}"),
                        true,
                    );
                }
            }
        }
    }

    fn backoff_for(&self, failures: u32) -> u64 {
        let doublings = failures.saturating_sub(1).min(63);
        let base = self.config.backoff_base_ms;
        base.saturating_mul(1u64 << doublings)
            .min(self.config.backoff_max_ms)
    }

    fn sandbox_failed(&mut self, now: u64, reason: &str, message: String) {
        self.sandbox_failures += 1;
        self.sandbox_retry_at_ms = now + self.backoff_for(self.sandbox_failures);
        self.event(reason, message, true);
    }

    /// A container's run ended: restart it after back-off if its policy
    /// says so and the Pod still runs, else it stays exited.
    fn on_exit(&mut self, target: ContainerRef, t: Terminated, announce: bool) {
        let policy = self.policy;
        let halted = self.halted();
        let reset_after = self.config.backoff_reset_after_ms;
        let label = self.pod_label();
        let Some(c) = self.ctr(target) else { return };
        c.ready = false;
        c.started = false;
        c.readiness_ok = false;
        c.probes.clear();
        let restart = !halted
            && match (target.init, policy) {
                (_, Policy::Never) => false,
                (true, _) | (false, Policy::OnFailure) => t.exit_code != 0,
                (false, Policy::Always) => true,
            };
        if !restart {
            c.run = Run::Exited(t);
            return;
        }
        if t.finished_at_ms.saturating_sub(t.started_at_ms) >= reset_after {
            c.consecutive_restarts = 0;
        }
        c.consecutive_restarts += 1;
        let failures = c.consecutive_restarts;
        let finished = t.finished_at_ms;
        let name = c.spec.name.clone();
        c.last = Some(t);
        c.run = Run::Waiting;
        let backoff = self.backoff_for(failures);
        let c = self.ctr(target).expect("present");
        c.backoff_ms = backoff;
        c.backoff_until_ms = finished.saturating_add(backoff);
        if announce {
            self.event(
                "BackOff",
                format!("Back-off restarting failed container {name} in pod {label}"),
                true,
            );
        }
    }

    fn on_probe(
        &mut self,
        now: u64,
        target: ContainerRef,
        kind: ProbeKind,
        success: bool,
        detail: &str,
    ) {
        let Some(c) = self.ctr(target) else { return };
        let Some(p) = c.probes.iter_mut().find(|p| p.kind == kind) else {
            return;
        };
        p.in_flight = false;
        if success {
            p.successes += 1;
            p.failures = 0;
        } else {
            p.failures += 1;
            p.successes = 0;
        }
        let (successes, failures) = (p.successes, p.failures);
        let (success_threshold, failure_threshold) = (p.success_threshold(), p.failure_threshold());
        let name = c.spec.name.clone();
        let mut kill = false;
        match kind {
            ProbeKind::Startup if success => {
                c.started = true;
                for p in c.probes.iter_mut().filter(|p| p.kind != ProbeKind::Startup) {
                    p.next_at_ms = p.next_at_ms.max(now);
                }
            }
            ProbeKind::Startup | ProbeKind::Liveness => kill = failures >= failure_threshold,
            ProbeKind::Readiness => {
                if successes >= success_threshold {
                    c.readiness_ok = true;
                } else if failures >= failure_threshold {
                    c.readiness_ok = false;
                }
            }
        }
        if !success {
            self.event(
                "Unhealthy",
                format!("{} probe failed: {detail}", kind.title()),
                true,
            );
        }
        if kill {
            let what = kind.title().to_lowercase();
            self.event(
                "Killing",
                format!("Container {name} failed {what} probe, will be restarted"),
                false,
            );
            self.kill(target);
        }
    }

    fn kill(&mut self, target: ContainerRef) {
        let Some(c) = self.ctr(target) else { return };
        if let Run::Running { id, started_at_ms } = &c.run {
            c.run = Run::Killing {
                id: id.clone(),
                started_at_ms: *started_at_ms,
                in_flight: false,
                retry_at_ms: 0,
            };
        }
    }

    fn kill_all(&mut self) {
        let running: Vec<(ContainerRef, String)> = [(true, &self.init), (false, &self.app)]
            .into_iter()
            .flat_map(|(init, list)| {
                list.iter()
                    .enumerate()
                    .filter(|(_, c)| matches!(c.run, Run::Running { .. }))
                    .map(move |(index, c)| (ContainerRef { init, index }, c.spec.name.clone()))
            })
            .collect();
        for (target, name) in running {
            self.event("Killing", format!("Stopping container {name}"), false);
            self.kill(target);
        }
    }

    fn send_stops(&mut self, now: u64, actions: &mut Vec<RuntimeAction>) {
        let grace_ms = self.grace_ms();
        for c in self.init.iter_mut().chain(self.app.iter_mut()) {
            if let Run::Killing {
                id,
                in_flight,
                retry_at_ms,
                ..
            } = &mut c.run
                && !*in_flight
                && now >= *retry_at_ms
            {
                *in_flight = true;
                actions.push(RuntimeAction::StopContainer {
                    id: id.clone(),
                    grace_ms,
                });
            }
        }
    }

    fn check_deadline(&mut self, now: u64) {
        let (Some(start), Some(deadline)) = (self.start_ms, self.pod.spec.active_deadline_seconds)
        else {
            return;
        };
        let at = start.saturating_add(u64::try_from(deadline).unwrap_or(0).saturating_mul(1000));
        if self.halted() || now < at {
            return;
        }
        let message = "Pod was active on the node longer than the specified deadline";
        self.terminal = Some(("Failed", "DeadlineExceeded".into(), message.into()));
        self.event("DeadlineExceeded", message.into(), true);
    }

    /// Creates the sandbox, runs init containers in order, then the app
    /// containers, and probes what runs.
    fn advance(&mut self, now: u64, actions: &mut Vec<RuntimeAction>) {
        let sandbox = match &self.sandbox {
            Sandbox::Ready(id) => id.clone(),
            Sandbox::Absent if now >= self.sandbox_retry_at_ms => {
                match self.sandbox_spec() {
                    Ok(spec) => {
                        self.sandbox = Sandbox::Creating;
                        actions.push(RuntimeAction::CreateSandbox(spec));
                    }
                    Err(message) => self.sandbox_failed(now, "FailedMount", message),
                }
                return;
            }
            _ => return,
        };
        let mut starts = Vec::new();
        let mut init_done = true;
        for (index, c) in self.init.iter().enumerate() {
            if c.succeeded() {
                continue;
            }
            init_done = false;
            if c.run == Run::Waiting && now >= c.backoff_until_ms {
                starts.push(ContainerRef { init: true, index });
            }
            break;
        }
        if init_done {
            for (index, c) in self.app.iter().enumerate() {
                if c.run == Run::Waiting && now >= c.backoff_until_ms {
                    starts.push(ContainerRef { init: false, index });
                }
            }
        }
        for target in starts {
            // Borrowed apart from the Pod, which the spec reads.
            let c = pick(&mut self.init, &mut self.app, target).expect("listed");
            c.run = Run::Starting;
            let attempt = if c.has_run {
                c.restart_count + 1
            } else {
                c.restart_count
            };
            let spec = container_spec(&c.spec, &self.pod);
            actions.push(RuntimeAction::StartContainer {
                target,
                sandbox: sandbox.clone(),
                spec,
                attempt,
            });
        }
        self.probe(now, &sandbox, actions);
    }

    fn probe(&mut self, now: u64, sandbox: &SandboxId, actions: &mut Vec<RuntimeAction>) {
        let mut unresolved = Vec::new();
        for (target, c) in self
            .init
            .iter_mut()
            .enumerate()
            .map(|(index, c)| (ContainerRef { init: true, index }, c))
            .chain(
                self.app
                    .iter_mut()
                    .enumerate()
                    .map(|(index, c)| (ContainerRef { init: false, index }, c)),
            )
        {
            let Run::Running { id, .. } = &c.run else {
                continue;
            };
            let started = c.started;
            for p in &mut c.probes {
                let gated = if p.kind == ProbeKind::Startup {
                    started
                } else {
                    !started
                };
                if gated || p.in_flight || now < p.next_at_ms {
                    continue;
                }
                p.next_at_ms = now + p.period_ms();
                match probe_check(&c.spec, &p.probe) {
                    Ok(check) => {
                        p.in_flight = true;
                        let timeout_ms = seconds_ms(p.probe.timeout_seconds.unwrap_or(1)).max(1);
                        actions.push(RuntimeAction::Probe {
                            id: id.clone(),
                            sandbox: sandbox.clone(),
                            kind: p.kind,
                            check,
                            timeout_ms,
                        });
                    }
                    Err(detail) => unresolved.push((target, p.kind, detail)),
                }
            }
        }
        for (target, kind, detail) in unresolved {
            self.on_probe(now, target, kind, false, &detail);
        }
    }

    fn teardown(&mut self, now: u64, actions: &mut Vec<RuntimeAction>) {
        let busy = self.init.iter().chain(&self.app).any(|c| {
            matches!(
                c.run,
                Run::Starting | Run::Running { .. } | Run::Killing { .. }
            )
        });
        if busy || self.sandbox == Sandbox::Creating {
            return;
        }
        match &self.sandbox {
            Sandbox::Ready(id) if now >= self.sandbox_retry_at_ms => {
                actions.push(RuntimeAction::RemoveSandbox(id.clone()));
                self.sandbox = Sandbox::Removing(id.clone());
            }
            Sandbox::Absent | Sandbox::Removed => self.done = true,
            _ => {}
        }
    }

    fn sandbox_spec(&self) -> Result<SandboxSpec, String> {
        let spec = &self.pod.spec;
        let mut volumes = Vec::new();
        for v in &spec.volumes {
            let source = if let Some(h) = &v.host_path {
                VolumeSource::HostPath {
                    path: h.path.clone().into(),
                }
            } else if let Some(cm) = &v.config_map {
                let mut files = BTreeMap::new();
                match self.config_maps.get(&cm.name) {
                    None if cm.optional => {}
                    None => {
                        return Err(format!(
                            "MountVolume.SetUp failed for volume {:?}: configmap {:?} not found",
                            v.name, cm.name
                        ));
                    }
                    Some(data) if cm.items.is_empty() => files = data.clone(),
                    Some(data) => {
                        for item in &cm.items {
                            match data.get(&item.key) {
                                Some(value) => {
                                    files.insert(item.path.clone(), value.clone());
                                }
                                None if cm.optional => {}
                                None => {
                                    return Err(format!(
                                        "MountVolume.SetUp failed for volume {:?}: configmap {:?} has no key {:?}",
                                        v.name, cm.name, item.key
                                    ));
                                }
                            }
                        }
                    }
                }
                VolumeSource::Files { files }
            } else {
                VolumeSource::EmptyDir
            };
            volumes.push(VolumeSpec {
                name: v.name.clone(),
                source,
            });
        }
        let host_ports = spec
            .containers
            .iter()
            .chain(&spec.init_containers)
            .flat_map(|c| &c.ports)
            .filter_map(|p| {
                Some((
                    u16::try_from(p.container_port).ok()?,
                    u16::try_from(p.host_port?).ok()?,
                ))
            })
            .collect();
        let m = &self.pod.metadata;
        Ok(SandboxSpec {
            pod_uid: m.uid.clone(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            hostname: if spec.hostname.is_empty() {
                m.name.clone()
            } else {
                spec.hostname.clone()
            },
            volumes,
            host_ports,
            share_process_namespace: spec.share_process_namespace,
        })
    }

    fn phase(&self) -> &'static str {
        if let Some(f) = &self.frozen {
            return if f.phase == "Succeeded" {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        if let Some((phase, ..)) = &self.terminal {
            return phase;
        }
        if self.stopping.is_some() {
            return self.phase_at_stop;
        }
        phase_of(self.policy, &self.init, &self.app)
    }

    /// Notes a terminal phase, readiness and the conditions' transitions.
    fn refresh(&mut self, now: u64) {
        if self.terminal.is_none() && self.stopping.is_none() {
            let phase = phase_of(self.policy, &self.init, &self.app);
            if phase == "Succeeded" || phase == "Failed" {
                self.terminal = Some((phase, String::new(), String::new()));
            }
        }
        for c in self.init.iter_mut().chain(self.app.iter_mut()) {
            let has_readiness = c.spec.readiness_probe.is_some();
            c.ready = matches!(c.run, Run::Running { .. })
                && c.started
                && (!has_readiness || c.readiness_ok);
        }
        let pending_init: Vec<&str> = self
            .init
            .iter()
            .filter(|c| !c.succeeded())
            .map(|c| c.spec.name.as_str())
            .collect();
        let unready: Vec<&str> = self
            .app
            .iter()
            .filter(|c| !c.ready)
            .map(|c| c.spec.name.as_str())
            .collect();
        let completed = matches!(self.terminal, Some(("Succeeded", ..)));
        let list = |names: &[&str]| format!("[{}]", names.join(" "));
        let initialized = if pending_init.is_empty() {
            (true, "", String::new())
        } else {
            (
                false,
                "ContainersNotInitialized",
                format!("containers with incomplete status: {}", list(&pending_init)),
            )
        };
        let ready = if unready.is_empty() {
            (true, "", String::new())
        } else if completed {
            (false, "PodCompleted", String::new())
        } else {
            (
                false,
                "ContainersNotReady",
                format!("containers with unready status: {}", list(&unready)),
            )
        };
        let wanted = [
            ("Initialized", initialized.clone()),
            ("Ready", ready.clone()),
            ("ContainersReady", ready),
            ("PodScheduled", (true, "", String::new())),
        ];
        let old = std::mem::take(&mut self.conditions);
        self.conditions = wanted
            .into_iter()
            .map(|(type_, (ok, reason, message))| {
                let status = if ok { "True" } else { "False" };
                let previous = old.iter().find(|c| c.type_ == type_ && c.status == status);
                Condition {
                    type_: type_.into(),
                    status: status.into(),
                    last_transition_time: previous
                        .and_then(|c| c.last_transition_time.clone())
                        .or_else(|| Some(rfc3339(now))),
                    reason: reason.into(),
                    message,
                }
            })
            .collect();
    }

    fn container_status(&self, c: &Ctr, default_waiting: &str) -> ContainerStatus {
        let waiting = |reason: &str, message: String| ApiContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: reason.into(),
                message,
            }),
            ..Default::default()
        };
        let state = match &c.run {
            Run::Waiting | Run::Starting if c.last.is_some() && !self.halted() => {
                let message = format!(
                    "back-off {} restarting failed container={} pod={}",
                    go_duration(c.backoff_ms),
                    c.spec.name,
                    self.pod_label()
                );
                waiting("CrashLoopBackOff", message)
            }
            Run::Waiting | Run::Starting => waiting(default_waiting, String::new()),
            Run::Running { started_at_ms, .. } | Run::Killing { started_at_ms, .. } => {
                ApiContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(rfc3339(*started_at_ms)),
                    }),
                    ..Default::default()
                }
            }
            Run::Exited(t) => ApiContainerState {
                terminated: Some(t.to_api()),
                ..Default::default()
            },
        };
        let running = matches!(c.run, Run::Running { .. } | Run::Killing { .. });
        ContainerStatus {
            name: c.spec.name.clone(),
            state,
            last_state: c
                .last
                .as_ref()
                .map(|t| ApiContainerState {
                    terminated: Some(t.to_api()),
                    ..Default::default()
                })
                .unwrap_or_default(),
            ready: c.ready,
            restart_count: i32::try_from(c.restart_count).unwrap_or(i32::MAX),
            image: c.spec.image.clone(),
            started: Some(running && c.started),
        }
    }

    /// The Pod's status as of the last step.
    pub fn status(&self) -> PodStatus {
        if let Some(f) = &self.frozen {
            return f.clone();
        }
        let init_done = self.init.iter().all(Ctr::succeeded);
        let app_waiting = if init_done {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let (reason, message) = match &self.terminal {
            Some((_, reason, message)) => (reason.clone(), message.clone()),
            None => (String::new(), String::new()),
        };
        PodStatus {
            phase: self.phase().into(),
            conditions: self.conditions.clone(),
            reason,
            message,
            host_ip: String::new(),
            pod_ip: String::new(),
            start_time: self.start_time.clone(),
            init_container_statuses: self
                .init
                .iter()
                .map(|c| self.container_status(c, "PodInitializing"))
                .collect(),
            container_statuses: self
                .app
                .iter()
                .map(|c| self.container_status(c, app_waiting))
                .collect(),
        }
    }
}

/// The container `target` names, from the Pod's init or app containers.
fn pick<'a>(init: &'a mut [Ctr], app: &'a mut [Ctr], target: ContainerRef) -> Option<&'a mut Ctr> {
    if target.init {
        init.get_mut(target.index)
    } else {
        app.get_mut(target.index)
    }
}

fn container_spec(c: &Container, pod: &Pod) -> ContainerSpec {
    ContainerSpec {
        name: c.name.clone(),
        image: c.image.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        env: c.env.iter().map(|e| (e.name.clone(), env_value(e, pod))).collect(),
        working_dir: (!c.working_dir.is_empty()).then(|| c.working_dir.clone()),
        mounts: c
            .volume_mounts
            .iter()
            .map(|m| MountSpec {
                volume: m.name.clone(),
                mount_path: m.mount_path.clone(),
                read_only: m.read_only,
            })
            .collect(),
        memory_limit_bytes: c
            .resources
            .limits
            .get("memory")
            .and_then(|q| q.bytes().ok()),
        cpu_limit_millis: c.resources.limits.get("cpu").and_then(|q| q.millis().ok()),
    }
}

/// A variable's literal value, or the Pod field its `fieldRef` names.
/// Validation refused unknown field paths at admission; one that still
/// fails to parse here gives the empty value, as a missing label does.
fn env_value(e: &EnvVar, pod: &Pod) -> String {
    let field = e.value_from.as_ref().and_then(|f| f.field_ref.as_ref());
    match field {
        Some(r) => PodField::parse(&r.field_path).map(|f| pod.field(&f)).unwrap_or_default(),
        None => e.value.clone(),
    }
}

fn resolve_port(c: &Container, port: &IntOrString) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => c
            .ports
            .iter()
            .find(|p| p.name == *name)
            .map(|p| p.container_port)
            .ok_or_else(|| format!("container {} has no port named {name:?}", c.name))?,
    };
    u16::try_from(number).map_err(|_| format!("port {number} is out of range"))
}

fn probe_check(c: &Container, probe: &Probe) -> Result<ProbeCheck, String> {
    if let Some(exec) = &probe.exec {
        return Ok(ProbeCheck::Exec(exec.command.clone()));
    }
    if let Some(http) = &probe.http_get {
        let path = if http.path.is_empty() {
            "/".to_string()
        } else {
            http.path.clone()
        };
        return Ok(ProbeCheck::Network(NetworkCheck::Http {
            port: resolve_port(c, &http.port)?,
            path,
        }));
    }
    if let Some(tcp) = &probe.tcp_socket {
        return Ok(ProbeCheck::Network(NetworkCheck::Tcp {
            port: resolve_port(c, &tcp.port)?,
        }));
    }
    Err("probe has no exec, httpGet or tcpSocket handler".into())
}

#[cfg(test)]
#[path = "pod_worker_tests.rs"]
mod tests;
