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
    ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, EnvVar, IntOrString, Pod,
    PodField, PodStatus, Probe,
};
use flotilla_runtime::{
    ContainerId, ContainerSpec, ContainerState, ExitStatus, MountSpec, NetworkCheck, SandboxId,
    SandboxSpec, VolumeSource, VolumeSpec,
};

mod observe;
mod probes;
mod spec;
mod status;

use crate::AgentConfig;
use crate::time::go_duration;
use flotilla_api::time::format_rfc3339 as rfc3339;
use probes::ProbeState;
use spec::{container_spec, probe_check};

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
}

/// The container `target` names, from the Pod's init or app containers.
fn pick<'a>(init: &'a mut [Ctr], app: &'a mut [Ctr], target: ContainerRef) -> Option<&'a mut Ctr> {
    if target.init {
        init.get_mut(target.index)
    } else {
        app.get_mut(target.index)
    }
}

#[cfg(test)]
mod tests;
