//! The worker driven by a scripted, synchronous runtime: every answer is
//! computed from the script and the simulated time, 100 ms per tick.
//! Long because one scripted runtime drives every scenario of the worker,
//! and the scenarios read best side by side.

use flotilla_api::meta::ObjectMeta;
use flotilla_api::pod::{
    ConfigMapVolumeSource, ContainerPort, EnvVar, EnvVarSource, ExecAction, HttpGetAction,
    KeyToPath, ObjectFieldSelector, PodSpec, TcpSocketAction, Volume,
};

use super::*;

const T0: u64 = 1_700_000_000_000;
const TICK_MS: u64 = 100;

fn at(secs: u64) -> u64 {
    T0 + secs * 1000
}

#[derive(Clone)]
struct Script {
    codes: Vec<i32>,
    run_ms: Option<u64>,
    oom: bool,
}

fn forever() -> Script {
    Script {
        codes: vec![0],
        run_ms: None,
        oom: false,
    }
}

fn exits(run_ms: u64, codes: &[i32]) -> Script {
    Script {
        codes: codes.to_vec(),
        run_ms: Some(run_ms),
        oom: false,
    }
}

struct Live {
    name: String,
    exit: Option<ExitStatus>,
    started_at: u64,
}

struct Sim {
    w: PodWorker,
    now: u64,
    pending: Vec<Observation>,
    scripts: BTreeMap<String, Script>,
    start_errors: BTreeMap<String, String>,
    live: BTreeMap<ContainerId, Live>,
    next_id: u64,
    /// (container, attempt, time)
    starts: Vec<(String, u32, u64)>,
    /// (container, kind, check, time)
    probes: Vec<(String, ProbeKind, ProbeCheck, u64)>,
    exec_ok: bool,
    net_ok: bool,
    stops: Vec<(String, u64)>,
    sandboxes: Vec<SandboxSpec>,
    /// Every container as the worker asked for it to start.
    started_specs: Vec<ContainerSpec>,
    removed: bool,
    events: Vec<WorkerEvent>,
}

impl Sim {
    fn new(pod: Pod, scripts: &[(&str, Script)]) -> Sim {
        Sim::with(config(), pod, BTreeMap::new(), scripts)
    }

    fn with(
        config: AgentConfig,
        pod: Pod,
        config_maps: BTreeMap<String, BTreeMap<String, String>>,
        scripts: &[(&str, Script)],
    ) -> Sim {
        Sim {
            w: PodWorker::new(config, pod, config_maps),
            now: T0,
            pending: Vec::new(),
            scripts: scripts
                .iter()
                .map(|(n, s)| (n.to_string(), s.clone()))
                .collect(),
            start_errors: BTreeMap::new(),
            live: BTreeMap::new(),
            next_id: 0,
            starts: Vec::new(),
            probes: Vec::new(),
            exec_ok: true,
            net_ok: true,
            stops: Vec::new(),
            sandboxes: Vec::new(),
            started_specs: Vec::new(),
            removed: false,
            events: Vec::new(),
        }
    }

    fn tick(&mut self) {
        let observations = std::mem::take(&mut self.pending);
        let actions = self.w.step(self.now, observations);
        self.events.extend(self.w.take_events());
        for a in actions {
            self.perform(a);
        }
    }

    fn run_to(&mut self, t: u64) {
        while self.now < t {
            self.tick();
            self.now += TICK_MS;
        }
        self.tick();
    }

    fn perform(&mut self, action: RuntimeAction) {
        let now = self.now;
        match action {
            RuntimeAction::CreateSandbox(spec) => {
                self.sandboxes.push(spec);
                self.pending
                    .push(Observation::SandboxCreated(SandboxId("sb".into())));
            }
            RuntimeAction::StartContainer {
                target,
                spec,
                attempt,
                ..
            } => {
                self.started_specs.push(spec.clone());
                if let Some(message) = self.start_errors.get(&spec.name) {
                    self.pending.push(Observation::ContainerStartFailed {
                        target,
                        message: message.clone(),
                    });
                    return;
                }
                self.next_id += 1;
                let id = ContainerId(format!("c{}", self.next_id));
                let script = self
                    .scripts
                    .get(&spec.name)
                    .cloned()
                    .unwrap_or_else(forever);
                let exit = script.run_ms.map(|run| ExitStatus {
                    exit_code: script.codes[(attempt as usize).min(script.codes.len() - 1)],
                    signal: None,
                    oom_killed: script.oom,
                    started_at_unix_ms: now,
                    finished_at_unix_ms: now + run,
                });
                self.starts.push((spec.name.clone(), attempt, now));
                self.live.insert(
                    id.clone(),
                    Live {
                        name: spec.name.clone(),
                        exit,
                        started_at: now,
                    },
                );
                self.pending.push(Observation::ContainerStarted {
                    target,
                    id,
                    started_at_ms: now,
                });
            }
            RuntimeAction::Inspect { id } => {
                let live = &self.live[&id];
                if let Some(exit) = live.exit.as_ref().filter(|e| e.finished_at_unix_ms <= now) {
                    let state = ContainerState::Exited(exit.clone());
                    self.pending.push(Observation::ContainerState { id, state });
                }
            }
            RuntimeAction::Probe {
                id, kind, check, ..
            } => {
                let name = self.live[&id].name.clone();
                let success = match check {
                    ProbeCheck::Exec(_) => self.exec_ok,
                    ProbeCheck::Network(_) => self.net_ok,
                };
                self.probes.push((name, kind, check, now));
                let detail = if success {
                    String::new()
                } else {
                    "scripted failure".into()
                };
                self.pending.push(Observation::ProbeResult {
                    id,
                    kind,
                    success,
                    detail,
                });
            }
            RuntimeAction::StopContainer { id, grace_ms } => {
                let live = self.live.get_mut(&id).expect("known container");
                self.stops.push((live.name.clone(), grace_ms));
                if live
                    .exit
                    .as_ref()
                    .is_none_or(|e| e.finished_at_unix_ms > now)
                {
                    live.exit = Some(ExitStatus {
                        exit_code: 143,
                        signal: Some(15),
                        oom_killed: false,
                        started_at_unix_ms: live.started_at,
                        finished_at_unix_ms: now,
                    });
                }
                let state = ContainerState::Exited(live.exit.clone().expect("set"));
                self.pending.push(Observation::ContainerState { id, state });
            }
            RuntimeAction::RemoveSandbox(_) => {
                self.removed = true;
                self.pending.push(Observation::SandboxRemoved);
            }
        }
    }

    fn status(&self) -> PodStatus {
        self.w.status()
    }

    fn container(&self, name: &str) -> ContainerStatus {
        let s = self.status();
        s.container_statuses
            .into_iter()
            .chain(s.init_container_statuses)
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no status for {name}"))
    }

    fn condition(&self, type_: &str) -> Condition {
        self.status()
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .expect("condition")
    }

    fn starts_of(&self, name: &str) -> Vec<u64> {
        self.starts
            .iter()
            .filter(|(n, ..)| n == name)
            .map(|(.., t)| *t)
            .collect()
    }

    fn events_with(&self, reason: &str) -> Vec<&WorkerEvent> {
        self.events.iter().filter(|e| e.reason == reason).collect()
    }
}

fn config() -> AgentConfig {
    AgentConfig::new("node-1")
}

fn container(name: &str) -> Container {
    Container {
        name: name.into(),
        image: format!("registry/{name}:1"),
        ..Default::default()
    }
}

fn pod(policy: &str, init: Vec<Container>, app: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: "web".into(),
            namespace: "default".into(),
            uid: "uid-1".into(),
            ..Default::default()
        },
        spec: PodSpec {
            init_containers: init,
            containers: app,
            restart_policy: policy.into(),
            termination_grace_period_seconds: Some(30),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn probe(period: i32, failure: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: vec!["check".into()],
        }),
        initial_delay_seconds: Some(0),
        timeout_seconds: Some(1),
        period_seconds: Some(period),
        success_threshold: Some(1),
        failure_threshold: Some(failure),
        ..Default::default()
    }
}

fn tcp_probe(period: i32) -> Probe {
    Probe {
        exec: None,
        tcp_socket: Some(TcpSocketAction {
            port: IntOrString::Int(80),
            host: String::new(),
        }),
        ..probe(period, 3)
    }
}

fn waiting_reason(c: &ContainerStatus) -> String {
    c.state
        .waiting
        .as_ref()
        .map(|w| w.reason.clone())
        .unwrap_or_default()
}

fn terminated(state: &ApiContainerState) -> &ContainerStateTerminated {
    state.terminated.as_ref().expect("terminated")
}

#[test]
fn init_containers_run_one_by_one_before_the_app() {
    let p = pod(
        "Always",
        vec![container("i1"), container("i2")],
        vec![container("app")],
    );
    let mut sim = Sim::new(
        p,
        &[
            ("i1", exits(2_000, &[0])),
            ("i2", exits(3_000, &[0])),
            ("app", forever()),
        ],
    );
    sim.run_to(at(1));
    assert_eq!(sim.status().phase, "Pending");
    assert_eq!(sim.starts_of("i1").len(), 1);
    assert!(sim.starts_of("i2").is_empty());
    let initialized = sim.condition("Initialized");
    assert_eq!(initialized.status, "False");
    assert_eq!(
        initialized.message,
        "containers with incomplete status: [i1 i2]"
    );
    assert_eq!(waiting_reason(&sim.container("app")), "PodInitializing");
    assert_eq!(waiting_reason(&sim.container("i2")), "PodInitializing");
    assert!(sim.container("i1").state.running.is_some());

    sim.run_to(at(20));
    let order: Vec<&str> = sim.starts.iter().map(|(n, ..)| n.as_str()).collect();
    assert_eq!(order, ["i1", "i2", "app"]);
    assert!(sim.starts_of("i2")[0] >= sim.starts_of("i1")[0] + 2_000);
    assert!(sim.starts_of("app")[0] >= sim.starts_of("i2")[0] + 3_000);
    assert_eq!(sim.status().phase, "Running");
    assert_eq!(sim.condition("Initialized").status, "True");
    assert_eq!(terminated(&sim.container("i1").state).reason, "Completed");
    assert_eq!(sim.container("i1").restart_count, 0);
    assert!(sim.container("app").ready);
}

#[test]
fn init_failure_fails_the_pod_or_retries_by_policy() {
    for policy in ["Never", "OnFailure", "Always"] {
        let p = pod(policy, vec![container("i1")], vec![container("app")]);
        let mut sim = Sim::new(p, &[("i1", exits(1_000, &[1, 0]))]);
        sim.run_to(at(60));
        let i1 = sim.container("i1");
        if policy == "Never" {
            assert_eq!(sim.status().phase, "Failed", "{policy}");
            assert!(sim.starts_of("app").is_empty(), "{policy}");
            assert_eq!(terminated(&i1.state).exit_code, 1);
            assert_eq!(terminated(&i1.state).reason, "Error");
            assert_eq!(i1.restart_count, 0);
            assert_eq!(sim.condition("Initialized").status, "False");
        } else {
            assert_eq!(sim.status().phase, "Running", "{policy}");
            let starts = sim.starts_of("i1");
            assert_eq!(starts.len(), 2, "{policy}");
            let gap = starts[1] - (starts[0] + 1_000);
            assert!((10_000..10_200).contains(&gap), "{policy}: back-off {gap}");
            assert_eq!(i1.restart_count, 1);
            assert_eq!(terminated(&i1.last_state).exit_code, 1);
            assert_eq!(sim.starts_of("app").len(), 1);
        }
    }
}

#[test]
fn restart_policy_decides_restarts_and_phase() {
    // (policy, exit codes per attempt, phase, restart count after 10 min)
    let cases: &[(&str, &[i32], &str, i32)] = &[
        ("Never", &[1], "Failed", 0),
        ("Never", &[0], "Succeeded", 0),
        ("OnFailure", &[0], "Succeeded", 0),
        ("OnFailure", &[1, 1, 0], "Succeeded", 2),
        ("OnFailure", &[2, 0], "Succeeded", 1),
        ("Always", &[0], "Running", 5),
        ("Always", &[1], "Running", 5),
    ];
    for (policy, codes, phase, restarts) in cases {
        let mut sim = Sim::new(
            pod(policy, vec![], vec![container("app")]),
            &[("app", exits(1_000, codes))],
        );
        sim.run_to(at(600));
        let app = sim.container("app");
        let what = format!("{policy} {codes:?}");
        assert_eq!(sim.status().phase, *phase, "{what}");
        assert_eq!(app.restart_count, *restarts, "{what}");
        match *phase {
            "Succeeded" => {
                assert_eq!(terminated(&app.state).reason, "Completed", "{what}");
                let ready = sim.condition("Ready");
                assert_eq!(
                    (ready.status.as_str(), ready.reason.as_str()),
                    ("False", "PodCompleted"),
                    "{what}"
                );
            }
            "Failed" => assert_eq!(terminated(&app.state).reason, "Error", "{what}"),
            _ => assert!(
                app.state.running.is_some() || waiting_reason(&app) == "CrashLoopBackOff",
                "{what}"
            ),
        }
        if *restarts > 0 {
            assert_eq!(terminated(&app.last_state).exit_code, codes[0], "{what}");
        }
    }
}

#[test]
fn job_pod_on_failure_exiting_1_1_0_ends_succeeded_with_two_restarts() {
    let mut sim = Sim::new(
        pod("OnFailure", vec![], vec![container("pi")]),
        &[("pi", exits(500, &[1, 1, 0]))],
    );
    sim.run_to(at(120));
    let s = sim.status();
    assert_eq!(s.phase, "Succeeded");
    let pi = sim.container("pi");
    assert_eq!(pi.restart_count, 2);
    assert_eq!(terminated(&pi.state).exit_code, 0);
    assert_eq!(terminated(&pi.last_state).exit_code, 1);
    assert_eq!(
        sim.starts.iter().map(|(_, a, _)| *a).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let count = sim.starts.len();
    sim.run_to(at(900));
    assert_eq!(sim.starts.len(), count, "a succeeded pod never runs again");
}

#[test]
fn crash_loop_back_off_doubles_to_the_cap_with_kubelets_message() {
    let mut sim = Sim::new(
        pod("Always", vec![], vec![container("app")]),
        &[("app", exits(1_000, &[1]))],
    );
    sim.run_to(at(20));
    let app = sim.container("app");
    assert_eq!(waiting_reason(&app), "CrashLoopBackOff");
    assert_eq!(
        app.state.waiting.as_ref().unwrap().message,
        "back-off 20s restarting failed container=app pod=web_default(uid-1)"
    );
    assert_eq!(terminated(&app.last_state).reason, "Error");
    assert_eq!(sim.status().phase, "Running");
    assert!(!app.ready);
    assert_eq!(sim.condition("Ready").status, "False");
    let backoff = sim.events_with("BackOff");
    assert_eq!(
        backoff[0].message,
        "Back-off restarting failed container app in pod web_default(uid-1)"
    );
    assert!(backoff[0].warning);

    sim.run_to(at(2_400));
    let starts = sim.starts_of("app");
    let gaps: Vec<u64> = starts.windows(2).map(|w| w[1] - (w[0] + 1_000)).collect();
    let expected = [10, 20, 40, 80, 160, 300, 300, 300];
    for (i, want) in expected.iter().enumerate() {
        assert!(
            (want * 1000..want * 1000 + 200).contains(&gaps[i]),
            "restart {i}: gap {} ms",
            gaps[i]
        );
    }
    assert_eq!(
        sim.container("app").restart_count as usize,
        starts.len() - 1
    );
}

#[test]
fn back_off_starts_over_after_a_long_run() {
    let mut sim = Sim::new(
        pod("Always", vec![], vec![container("app")]),
        &[("app", exits(11 * 60_000, &[1]))],
    );
    sim.run_to(at(40 * 60));
    let starts = sim.starts_of("app");
    assert!(starts.len() >= 3);
    for w in starts.windows(2) {
        let gap = w[1] - (w[0] + 11 * 60_000);
        assert!((10_000..10_200).contains(&gap), "gap {gap}");
    }
}

#[test]
fn liveness_failure_restarts_by_policy() {
    for (policy, phase, restarts) in [("Always", "Running", 1), ("Never", "Failed", 0)] {
        let mut app = container("app");
        app.liveness_probe = Some(Probe {
            initial_delay_seconds: Some(5),
            ..probe(10, 3)
        });
        let mut sim = Sim::new(pod(policy, vec![], vec![app]), &[]);
        sim.run_to(at(60));
        let lively: Vec<u64> = sim.probes.iter().map(|(.., t)| *t).collect();
        assert!(lively.len() >= 5);
        assert!(lively[0] >= sim.starts[0].2 + 5_000, "initial delay");
        assert!(sim.stops.is_empty());
        sim.exec_ok = false;
        sim.run_to(at(100));
        assert_eq!(sim.stops, [("app".to_string(), 30_000)], "{policy}");
        let unhealthy = sim.events_with("Unhealthy");
        assert_eq!(unhealthy.len(), 3, "{policy}");
        assert_eq!(
            unhealthy[0].message,
            "Liveness probe failed: scripted failure"
        );
        assert!(
            sim.events_with("Killing")
                .iter()
                .any(|e| e.message == "Container app failed liveness probe, will be restarted")
        );
        let status = sim.container("app");
        assert_eq!(sim.status().phase, phase, "{policy}");
        assert_eq!(status.restart_count, restarts, "{policy}");
        let ended = if restarts > 0 {
            &status.last_state
        } else {
            &status.state
        };
        assert_eq!(terminated(ended).exit_code, 143);
        assert_eq!(terminated(ended).signal, Some(15));
    }
}

#[test]
fn readiness_gates_ready_and_conditions_change_only_on_transitions() {
    let mut app = container("app");
    app.ports = vec![ContainerPort {
        name: "http".into(),
        container_port: 8080,
        ..Default::default()
    }];
    app.readiness_probe = Some(Probe {
        exec: None,
        http_get: Some(HttpGetAction {
            path: "/healthz".into(),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        success_threshold: Some(2),
        ..probe(5, 3)
    });
    let mut sim = Sim::new(pod("Always", vec![], vec![app]), &[]);
    sim.net_ok = false;
    sim.run_to(at(30));
    let scheduled = sim.condition("PodScheduled");
    assert_eq!(scheduled.status, "True");
    assert_eq!(
        scheduled.last_transition_time.as_deref(),
        Some(rfc3339(T0).as_str())
    );
    assert_eq!(sim.status().phase, "Running");
    assert!(!sim.container("app").ready);
    let ready = sim.condition("Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.message, "containers with unready status: [app]");
    assert_eq!(sim.condition("ContainersReady").status, "False");
    let not_ready_since = ready.last_transition_time.clone();
    assert_eq!(not_ready_since.as_deref(), Some(rfc3339(T0).as_str()));
    let (_, _, check, _) = &sim.probes[0];
    assert_eq!(
        check,
        &ProbeCheck::Network(NetworkCheck::Http {
            port: 8080,
            path: "/healthz".into()
        })
    );

    sim.net_ok = true;
    let healthy_from = sim.now;
    sim.run_to(at(60));
    assert!(sim.container("app").ready);
    let ready = sim.condition("Ready");
    assert_eq!(ready.status, "True");
    let second_success = sim
        .probes
        .iter()
        .map(|(.., t)| *t)
        .filter(|t| *t >= healthy_from)
        .nth(1)
        .unwrap();
    assert_eq!(ready.last_transition_time, Some(rfc3339(second_success)));
    assert_eq!(sim.condition("ContainersReady").status, "True");
    sim.run_to(at(120));
    assert_eq!(
        sim.condition("Ready").last_transition_time,
        Some(rfc3339(second_success))
    );
    assert_eq!(
        sim.condition("PodScheduled").last_transition_time,
        scheduled.last_transition_time
    );

    sim.net_ok = false;
    sim.run_to(at(150));
    assert!(!sim.container("app").ready);
    assert_eq!(sim.condition("Ready").status, "False");
    assert!(sim.stops.is_empty(), "readiness never kills");
}

#[test]
fn unknown_named_port_fails_the_probe() {
    let mut app = container("app");
    app.readiness_probe = Some(Probe {
        exec: None,
        tcp_socket: Some(TcpSocketAction {
            port: IntOrString::String("metrics".into()),
            host: String::new(),
        }),
        ..probe(5, 1)
    });
    let mut sim = Sim::new(pod("Always", vec![], vec![app]), &[]);
    sim.run_to(at(20));
    assert!(!sim.container("app").ready);
    assert!(sim.probes.is_empty());
    assert!(
        sim.events_with("Unhealthy")[0]
            .message
            .contains("no port named \"metrics\"")
    );
}

#[test]
fn startup_probe_gates_liveness_and_readiness() {
    let with_probes = || {
        let mut app = container("app");
        app.startup_probe = Some(probe(10, 3));
        app.liveness_probe = Some(tcp_probe(10));
        app.readiness_probe = Some(tcp_probe(10));
        pod("Always", vec![], vec![app])
    };

    let mut failing = Sim::new(with_probes(), &[]);
    failing.exec_ok = false;
    failing.run_to(at(15));
    let app = failing.container("app");
    assert_eq!(app.started, Some(false));
    assert!(!app.ready);
    assert!(
        failing
            .probes
            .iter()
            .all(|(_, kind, ..)| *kind == ProbeKind::Startup)
    );
    failing.run_to(at(25));
    assert_eq!(failing.stops.len(), 1);
    assert!(
        failing
            .events_with("Killing")
            .iter()
            .any(|e| e.message == "Container app failed startup probe, will be restarted")
    );
    assert!(
        failing
            .probes
            .iter()
            .all(|(_, kind, ..)| *kind == ProbeKind::Startup)
    );
    failing.run_to(at(40));
    assert_eq!(failing.container("app").restart_count, 1);

    let mut passing = Sim::new(with_probes(), &[]);
    passing.run_to(at(15));
    let app = passing.container("app");
    assert_eq!(app.started, Some(true));
    assert!(app.ready);
    let kinds: Vec<ProbeKind> = passing.probes.iter().map(|(_, k, ..)| *k).collect();
    assert_eq!(kinds[0], ProbeKind::Startup);
    assert!(kinds.contains(&ProbeKind::Liveness) && kinds.contains(&ProbeKind::Readiness));
    assert_eq!(
        kinds.iter().filter(|k| **k == ProbeKind::Startup).count(),
        1,
        "startup probing stops once passed"
    );
}

#[test]
fn oom_kill_is_reported_as_oom_killed() {
    let script = Script {
        codes: vec![137],
        run_ms: Some(2_000),
        oom: true,
    };
    let mut sim = Sim::new(
        pod("Never", vec![], vec![container("app")]),
        &[("app", script)],
    );
    sim.run_to(at(10));
    let t = sim.container("app").state.terminated.unwrap();
    assert_eq!((t.exit_code, t.reason.as_str()), (137, "OOMKilled"));
    assert_eq!(sim.status().phase, "Failed");
}

#[test]
fn start_failure_is_a_start_error() {
    let mut sim = Sim::new(pod("Never", vec![], vec![container("app")]), &[]);
    sim.start_errors
        .insert("app".into(), "no such program".into());
    sim.run_to(at(5));
    let t = sim.container("app").state.terminated.unwrap();
    assert_eq!(
        (t.exit_code, t.reason.as_str(), t.message.as_str()),
        (128, "StartError", "no such program")
    );
    assert_eq!(sim.status().phase, "Failed");
    assert_eq!(
        sim.events_with("Failed")[0].message,
        "Error: no such program"
    );
}

#[test]
fn graceful_deletion_stops_containers_then_removes_the_sandbox() {
    let mut p = pod(
        "Always",
        vec![],
        vec![container("app"), container("sidecar")],
    );
    p.spec.termination_grace_period_seconds = Some(45);
    let mut sim = Sim::new(p.clone(), &[]);
    sim.run_to(at(10));
    assert_eq!(sim.status().phase, "Running");
    p.metadata.deletion_timestamp = Some(rfc3339(at(10)));
    sim.w.update(p, BTreeMap::new());
    sim.run_to(at(12));
    let mut stops = sim.stops.clone();
    stops.sort();
    assert_eq!(
        stops,
        [("app".to_string(), 45_000), ("sidecar".to_string(), 45_000)]
    );
    assert!(sim.removed);
    assert!(sim.w.is_done());
    assert_eq!(sim.w.stop_reason(), Some(StopReason::Deleted));
    assert_eq!(sim.status().phase, "Running");
    assert_eq!(sim.events_with("Killing").len(), 2);
    assert_eq!(
        sim.events_with("Killing")[0].message,
        "Stopping container app"
    );
    assert_eq!(sim.starts.len(), 2, "nothing restarts while stopping");
}

#[test]
fn a_pod_stopped_before_it_started_just_goes() {
    let mut sim = Sim::new(pod("Always", vec![], vec![container("app")]), &[]);
    sim.tick();
    sim.w.stop(StopReason::Fenced);
    sim.run_to(at(2));
    assert!(sim.starts.is_empty());
    assert!(sim.removed, "the sandbox being created is removed");
    assert!(sim.w.is_done());
}

#[test]
fn status_timestamps_are_rfc3339() {
    let mut sim = Sim::new(
        pod("Never", vec![], vec![container("app")]),
        &[("app", exits(5_000, &[0]))],
    );
    sim.run_to(at(2));
    let started = sim.starts[0].2;
    assert_eq!(sim.status().start_time, Some(rfc3339(T0)));
    assert_eq!(
        sim.container("app").state.running.unwrap().started_at,
        Some(rfc3339(started))
    );
    sim.run_to(at(10));
    let t = sim.container("app").state.terminated.unwrap();
    assert_eq!(t.started_at, Some(rfc3339(started)));
    assert_eq!(t.finished_at, Some(rfc3339(started + 5_000)));
    assert_eq!(sim.status().start_time, Some(rfc3339(T0)), "set once");
    assert!(rfc3339(T0).ends_with('Z') && rfc3339(T0).contains('T'));
}

#[test]
fn pods_recovered_after_a_peer_restart_continue_by_policy() {
    let reported = |phase: &str| PodStatus {
        phase: phase.into(),
        start_time: Some("2023-01-01T00:00:00Z".into()),
        container_statuses: vec![ContainerStatus {
            name: "app".into(),
            state: ApiContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            },
            restart_count: 3,
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut always = pod("Always", vec![], vec![container("app")]);
    always.status = Some(reported("Running"));
    let mut sim = Sim::new(always, &[]);
    sim.run_to(at(30));
    assert_eq!(sim.starts, [("app".to_string(), 4, sim.starts[0].2)]);
    let app = sim.container("app");
    assert_eq!(app.restart_count, 4);
    assert_eq!(terminated(&app.last_state).reason, "ContainerStatusUnknown");
    assert_eq!(
        sim.status().start_time.as_deref(),
        Some("2023-01-01T00:00:00Z")
    );

    let mut never = pod("Never", vec![], vec![container("app")]);
    never.status = Some(reported("Running"));
    let mut sim = Sim::new(never, &[]);
    sim.run_to(at(30));
    assert!(sim.starts.is_empty());
    assert_eq!(sim.status().phase, "Failed");
    assert_eq!(terminated(&sim.container("app").state).exit_code, 137);

    let mut done = pod("OnFailure", vec![], vec![container("app")]);
    done.status = Some(reported("Succeeded"));
    let mut sim = Sim::new(done.clone(), &[]);
    sim.run_to(at(30));
    assert!(sim.sandboxes.is_empty() && sim.starts.is_empty());
    assert_eq!(sim.status(), done.status.unwrap());
}

#[test]
fn missing_config_map_waits_then_mounts() {
    let mut p = pod("Always", vec![], vec![container("app")]);
    p.spec.volumes = vec![
        Volume {
            name: "settings".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "cfg".into(),
                items: vec![KeyToPath {
                    key: "a".into(),
                    path: "a.txt".into(),
                    mode: None,
                }],
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "scratch".into(),
            ..Default::default()
        },
    ];
    p.metadata
        .annotations
        .insert("flotilla.dev/fencing-token".into(), "42".into());
    let field_ref = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.into(),
            ..Default::default()
        }),
    };
    p.spec.containers[0].env = vec![
        EnvVar {
            name: "X".into(),
            value: "1".into(),
            value_from: None,
        },
        EnvVar {
            name: "TOKEN".into(),
            value: String::new(),
            value_from: Some(field_ref(
                "metadata.annotations['flotilla.dev/fencing-token']",
            )),
        },
        EnvVar {
            name: "POD".into(),
            value: String::new(),
            value_from: Some(field_ref("metadata.name")),
        },
        EnvVar {
            name: "MISSING".into(),
            value: String::new(),
            value_from: Some(field_ref("metadata.labels['absent']")),
        },
    ];
    p.spec.containers[0].ports = vec![ContainerPort {
        container_port: 80,
        host_port: Some(8080),
        ..Default::default()
    }];
    let mut sim = Sim::new(p.clone(), &[]);
    sim.run_to(at(5));
    assert!(sim.sandboxes.is_empty());
    assert_eq!(waiting_reason(&sim.container("app")), "ContainerCreating");
    let failed = sim.events_with("FailedMount");
    assert_eq!(failed.len(), 1);
    assert!(failed[0].message.contains("configmap \"cfg\" not found"));

    let data = BTreeMap::from([
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "2".to_string()),
    ]);
    sim.w.update(p, BTreeMap::from([("cfg".to_string(), data)]));
    sim.run_to(at(15));
    let spec = &sim.sandboxes[0];
    assert_eq!(
        spec.volumes[0].source,
        VolumeSource::Files {
            files: BTreeMap::from([("a.txt".into(), "1".into())])
        }
    );
    assert_eq!(spec.volumes[1].source, VolumeSource::EmptyDir);
    assert_eq!(spec.host_ports, [(80, 8080)]);
    assert_eq!(spec.hostname, "web");
    assert_eq!(sim.status().phase, "Running");
    // The Downward API: values read from the Pod itself.
    assert_eq!(
        sim.started_specs[0].env,
        [
            ("X".to_string(), "1".to_string()),
            ("TOKEN".into(), "42".into()),
            ("POD".into(), "web".into()),
            ("MISSING".into(), String::new()),
        ]
    );
}

#[test]
fn active_deadline_fails_the_pod_and_stops_it() {
    let mut p = pod("Always", vec![], vec![container("app")]);
    p.spec.active_deadline_seconds = Some(30);
    let mut sim = Sim::new(p, &[]);
    sim.run_to(at(60));
    let s = sim.status();
    assert_eq!(
        (s.phase.as_str(), s.reason.as_str()),
        ("Failed", "DeadlineExceeded")
    );
    assert_eq!(sim.stops.len(), 1);
    assert_eq!(sim.starts.len(), 1, "no restart after the deadline");
    assert!(sim.container("app").state.terminated.is_some());
}

#[test]
fn next_wakeup_follows_back_off_and_polls() {
    let mut sim = Sim::new(
        pod("Always", vec![], vec![container("app")]),
        &[("app", exits(1_000, &[1]))],
    );
    sim.run_to(at(3));
    // Waiting out a 10 s back-off still polls at the sync interval.
    let wake = sim.w.next_wakeup_ms();
    assert!(
        wake > sim.now && wake <= sim.now + config().sync_interval_ms,
        "wake {wake} now {}",
        sim.now
    );
}
