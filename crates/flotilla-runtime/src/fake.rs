//! The `fake` runtime: sandboxes and containers that exist only in memory,
//! for simulation, benchmarks and the agent's tests.
//!
//! Nothing runs. A container "runs" from the moment it starts until its
//! script says it exits, or until a test or `stop_container` ends it. The
//! script is read from the container's environment, so manifests drive it:
//!
//! | variable | effect |
//! |---|---|
//! | `FAKE_EXIT_AFTER_MS` | exits this long after it started (default 0 once any exit is scripted) |
//! | `FAKE_EXIT_CODE` | the exit code (default 0) |
//! | `FAKE_EXIT_CODES=1,1,0` | attempt *i* exits with the *i*-th code; the last repeats |
//! | `FAKE_OOM=1` | the exit is reported as the out-of-memory killer's (code 137 unless given) |
//! | `FAKE_LOG` | the container's log |
//! | `FAKE_START_ERROR` | starting fails with this message |
//!
//! Time comes from the `now_unix_ms` function given at construction, never
//! from the host, so a simulator decides when scripted exits happen: an exit
//! is observed when `container_state` is asked after its deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::logs;
use crate::spec::{self, Hostnames, start_error};
use crate::{
    Capabilities, ContainerId, ContainerInfo, ContainerSpec, ContainerState, ExecOutput,
    ExitStatus, NetworkCheck, PodRuntime, RuntimeError, SandboxId, SandboxInfo, SandboxSpec,
};

/// The clock the fake runs on, in milliseconds since the Unix epoch.
pub type NowFn = Arc<dyn Fn() -> u64 + Send + Sync>;

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

pub struct FakeRuntime {
    now_unix_ms: NowFn,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    sandboxes: BTreeMap<SandboxId, SandboxSpec>,
    containers: BTreeMap<ContainerId, Container>,
    /// Pod uids whose network checks fail.
    network_down: BTreeSet<String>,
    /// (pod uid, container name) whose execs exit 1.
    exec_failing: BTreeSet<(String, String)>,
    containers_started: u64,
}

struct Container {
    sandbox: SandboxId,
    pod_uid: String,
    name: String,
    attempt: u32,
    started_at_ms: u64,
    script: Script,
    exited: Option<ExitStatus>,
}

struct Script {
    exit_after_ms: Option<u64>,
    exit_code: i32,
    oom: bool,
    log: Vec<u8>,
}

impl Container {
    /// Applies a scripted exit whose time has come.
    fn settle(&mut self, now_ms: u64) {
        if self.exited.is_some() {
            return;
        }
        if let Some(after) = self.script.exit_after_ms {
            let at = self.started_at_ms.saturating_add(after);
            if at <= now_ms {
                self.exited = Some(ExitStatus {
                    exit_code: self.script.exit_code,
                    signal: self.script.oom.then_some(SIGKILL),
                    oom_killed: self.script.oom,
                    started_at_unix_ms: self.started_at_ms,
                    finished_at_unix_ms: at,
                });
            }
        }
    }

    fn state(&self) -> ContainerState {
        match &self.exited {
            Some(status) => ContainerState::Exited(status.clone()),
            None => ContainerState::Running {
                started_at_unix_ms: self.started_at_ms,
            },
        }
    }
}

fn env<'a>(spec: &'a ContainerSpec, name: &str) -> Option<&'a str> {
    spec.env
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn parse<T: std::str::FromStr>(
    spec: &ContainerSpec,
    name: &str,
    value: &str,
) -> Result<T, RuntimeError> {
    value
        .trim()
        .parse()
        .map_err(|_| start_error(&spec.name, format!("{name}: {value:?} is not a number")))
}

fn script(spec: &ContainerSpec, attempt: u32) -> Result<Script, RuntimeError> {
    if let Some(message) = env(spec, "FAKE_START_ERROR") {
        return Err(start_error(&spec.name, message));
    }
    let oom = env(spec, "FAKE_OOM").is_some_and(|v| v == "1" || v == "true");
    let mut code = match env(spec, "FAKE_EXIT_CODE") {
        Some(v) => Some(parse::<i32>(spec, "FAKE_EXIT_CODE", v)?),
        None => None,
    };
    if let Some(list) = env(spec, "FAKE_EXIT_CODES") {
        let codes = list
            .split(',')
            .map(|v| parse::<i32>(spec, "FAKE_EXIT_CODES", v))
            .collect::<Result<Vec<_>, _>>()?;
        let index = (attempt as usize).min(codes.len() - 1);
        code = Some(codes[index]);
    }
    let after = match env(spec, "FAKE_EXIT_AFTER_MS") {
        Some(v) => Some(parse::<u64>(spec, "FAKE_EXIT_AFTER_MS", v)?),
        None => None,
    };
    let exits = after.is_some() || code.is_some() || oom;
    Ok(Script {
        exit_after_ms: if exits {
            Some(after.unwrap_or(0))
        } else {
            None
        },
        exit_code: code.unwrap_or(if oom { 137 } else { 0 }),
        oom,
        log: env(spec, "FAKE_LOG")
            .unwrap_or_default()
            .as_bytes()
            .to_vec(),
    })
}

impl FakeRuntime {
    pub fn new(now_unix_ms: NowFn) -> Self {
        FakeRuntime {
            now_unix_ms,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest container of that name in the Pod's sandbox.
    fn latest<'a>(
        state: &'a mut State,
        pod_uid: &str,
        name: &str,
    ) -> Option<(&'a ContainerId, &'a mut Container)> {
        state
            .containers
            .iter_mut()
            .filter(|(_, c)| c.pod_uid == pod_uid && c.name == name)
            .max_by_key(|(_, c)| c.attempt)
    }

    /// Makes the newest container of that name exit now with `exit_code`;
    /// false when no such container runs.
    pub fn exit_container(&self, pod_uid: &str, name: &str, exit_code: i32) -> bool {
        let now = (self.now_unix_ms)();
        let mut state = self.lock();
        let Some((_, c)) = Self::latest(&mut state, pod_uid, name) else {
            return false;
        };
        c.settle(now);
        if c.exited.is_some() {
            return false;
        }
        c.exited = Some(ExitStatus {
            exit_code,
            signal: None,
            oom_killed: false,
            started_at_unix_ms: c.started_at_ms,
            finished_at_unix_ms: now,
        });
        true
    }

    /// The id of the newest container of that name in the Pod's sandbox.
    pub fn container_id(&self, pod_uid: &str, name: &str) -> Option<ContainerId> {
        let mut state = self.lock();
        Self::latest(&mut state, pod_uid, name).map(|(id, _)| id.clone())
    }

    /// Whether tcpSocket and httpGet checks of the Pod's sandbox answer.
    pub fn set_network_ok(&self, pod_uid: &str, ok: bool) {
        let mut state = self.lock();
        if ok {
            state.network_down.remove(pod_uid);
        } else {
            state.network_down.insert(pod_uid.to_string());
        }
    }

    /// Whether execs in that container (every attempt) exit 0 or 1.
    pub fn set_exec_ok(&self, pod_uid: &str, container: &str, ok: bool) {
        let mut state = self.lock();
        let key = (pod_uid.to_string(), container.to_string());
        if ok {
            state.exec_failing.remove(&key);
        } else {
            state.exec_failing.insert(key);
        }
    }

    pub fn sandbox_count(&self) -> usize {
        self.lock().sandboxes.len()
    }

    /// Containers running now (scripted exits that are due count as exited).
    pub fn running_container_count(&self) -> usize {
        let now = (self.now_unix_ms)();
        let mut state = self.lock();
        state
            .containers
            .values_mut()
            .map(|c| {
                c.settle(now);
                c.exited.is_none()
            })
            .filter(|running| *running)
            .count()
    }

    /// The Pods with a container running now, as (namespace, name, uid),
    /// each once: what the simulator counts to judge that no two copies of
    /// one StatefulSet Pod run at once.
    pub fn running_pods(&self) -> BTreeSet<(String, String, String)> {
        let now = (self.now_unix_ms)();
        let mut state = self.lock();
        let State {
            containers,
            sandboxes,
            ..
        } = &mut *state;
        containers
            .values_mut()
            .filter_map(|c| {
                c.settle(now);
                let sandbox = sandboxes.get(&c.sandbox)?;
                c.exited.is_none().then(|| {
                    (
                        sandbox.namespace.clone(),
                        sandbox.name.clone(),
                        c.pod_uid.clone(),
                    )
                })
            })
            .collect()
    }

    /// Every `start_container` that succeeded since construction.
    pub fn containers_started(&self) -> u64 {
        self.lock().containers_started
    }
}

#[async_trait::async_trait]
impl PodRuntime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            network_isolation: true,
            filesystem_isolation: true,
            memory_limits: true,
            cpu_limits: true,
            runs_programs: false,
            limitations: Vec::new(),
        }
    }

    async fn create_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxId, RuntimeError> {
        spec::check_sandbox(spec, Hostnames::Kernel)?;
        let mut state = self.lock();
        state.next_id += 1;
        let id = SandboxId(format!("fake-sandbox-{}", state.next_id));
        state.sandboxes.insert(id.clone(), spec.clone());
        Ok(id)
    }

    async fn start_container(
        &self,
        sandbox: &SandboxId,
        spec: &ContainerSpec,
        attempt: u32,
    ) -> Result<ContainerId, RuntimeError> {
        spec::check_name("container name", &spec.name)?;
        let now = (self.now_unix_ms)();
        let mut state = self.lock();
        let pod_uid = match state.sandboxes.get(sandbox) {
            Some(s) => s.pod_uid.clone(),
            None => return Err(RuntimeError::NoSandbox(sandbox.clone())),
        };
        let script = script(spec, attempt)?;
        // Keep the previous attempt for `--previous`, drop anything older so
        // a crash-looping container holds bounded memory.
        state.containers.retain(|_, c| {
            !(c.sandbox == *sandbox && c.name == spec.name && c.attempt.saturating_add(1) < attempt)
        });
        state.next_id += 1;
        state.containers_started += 1;
        let id = ContainerId(format!("fake-container-{}", state.next_id));
        let mut container = Container {
            sandbox: sandbox.clone(),
            pod_uid,
            name: spec.name.clone(),
            attempt,
            started_at_ms: now,
            script,
            exited: None,
        };
        container.settle(now);
        state.containers.insert(id.clone(), container);
        Ok(id)
    }

    async fn container_state(
        &self,
        container: &ContainerId,
    ) -> Result<ContainerState, RuntimeError> {
        let now = (self.now_unix_ms)();
        let mut state = self.lock();
        let c = state
            .containers
            .get_mut(container)
            .ok_or_else(|| RuntimeError::NoContainer(container.clone()))?;
        c.settle(now);
        Ok(c.state())
    }

    async fn stop_container(
        &self,
        container: &ContainerId,
        _grace: Duration,
    ) -> Result<(), RuntimeError> {
        let now = (self.now_unix_ms)();
        let mut state = self.lock();
        if let Some(c) = state.containers.get_mut(container) {
            c.settle(now);
            // A fake container obeys SIGTERM at once.
            if c.exited.is_none() {
                c.exited = Some(ExitStatus {
                    exit_code: 128 + SIGTERM,
                    signal: Some(SIGTERM),
                    oom_killed: false,
                    started_at_unix_ms: c.started_at_ms,
                    finished_at_unix_ms: now,
                });
            }
        }
        Ok(())
    }

    async fn remove_sandbox(&self, sandbox: &SandboxId) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        state.sandboxes.remove(sandbox);
        state.containers.retain(|_, c| c.sandbox != *sandbox);
        Ok(())
    }

    async fn exec(
        &self,
        container: &ContainerId,
        command: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let now = (self.now_unix_ms)();
        let mut state = self.lock();
        let c = state
            .containers
            .get_mut(container)
            .ok_or_else(|| RuntimeError::NoContainer(container.clone()))?;
        c.settle(now);
        if c.exited.is_some() {
            return Err(RuntimeError::Other(format!(
                "container {} is not running",
                c.name
            )));
        }
        let key = (c.pod_uid.clone(), c.name.clone());
        if state.exec_failing.contains(&key) {
            return Ok(ExecOutput {
                exit_code: 1,
                stdout: Vec::new(),
                stderr: b"fake exec failed\n".to_vec(),
            });
        }
        Ok(ExecOutput {
            exit_code: 0,
            stdout: format!("{}\n", command.join(" ")).into_bytes(),
            stderr: Vec::new(),
        })
    }

    async fn check_network(
        &self,
        sandbox: &SandboxId,
        _check: &NetworkCheck,
        _timeout: Duration,
    ) -> Result<bool, RuntimeError> {
        let state = self.lock();
        let spec = state
            .sandboxes
            .get(sandbox)
            .ok_or_else(|| RuntimeError::NoSandbox(sandbox.clone()))?;
        Ok(!state.network_down.contains(&spec.pod_uid))
    }

    async fn read_logs(
        &self,
        container: &ContainerId,
        previous: bool,
        tail_lines: Option<usize>,
    ) -> Result<Vec<u8>, RuntimeError> {
        let state = self.lock();
        let c = state
            .containers
            .get(container)
            .ok_or_else(|| RuntimeError::NoContainer(container.clone()))?;
        if !previous {
            return Ok(logs::tail_of(c.script.log.clone(), tail_lines));
        }
        let before = state
            .containers
            .values()
            .filter(|p| p.sandbox == c.sandbox && p.name == c.name && p.attempt < c.attempt)
            .max_by_key(|p| p.attempt)
            .ok_or_else(|| {
                RuntimeError::Other(format!("container {} has no previous attempt", c.name))
            })?;
        Ok(logs::tail_of(before.script.log.clone(), tail_lines))
    }

    async fn read_logs_from(
        &self,
        container: &ContainerId,
        offset: u64,
    ) -> Result<(Vec<u8>, u64), RuntimeError> {
        let state = self.lock();
        let c = state
            .containers
            .get(container)
            .ok_or_else(|| RuntimeError::NoContainer(container.clone()))?;
        Ok(logs::after(&c.script.log, offset))
    }

    async fn list_sandboxes(&self) -> Result<Vec<SandboxInfo>, RuntimeError> {
        let now = (self.now_unix_ms)();
        let mut state = self.lock();
        let state = &mut *state;
        let mut infos: BTreeMap<SandboxId, SandboxInfo> = state
            .sandboxes
            .iter()
            .map(|(id, spec)| {
                (
                    id.clone(),
                    SandboxInfo {
                        id: id.clone(),
                        pod_uid: spec.pod_uid.clone(),
                        containers: Vec::new(),
                    },
                )
            })
            .collect();
        for (id, c) in state.containers.iter_mut() {
            c.settle(now);
            if let Some(info) = infos.get_mut(&c.sandbox) {
                info.containers.push(ContainerInfo {
                    id: id.clone(),
                    name: c.name.clone(),
                    attempt: c.attempt,
                    state: c.state(),
                });
            }
        }
        Ok(infos.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    fn clock() -> (Arc<AtomicU64>, NowFn) {
        let t = Arc::new(AtomicU64::new(1_000));
        let c = t.clone();
        (t, Arc::new(move || c.load(Ordering::SeqCst)))
    }

    fn sandbox(uid: &str) -> SandboxSpec {
        SandboxSpec {
            pod_uid: uid.into(),
            namespace: "default".into(),
            name: "p".into(),
            hostname: "p".into(),
            volumes: vec![],
            host_ports: vec![],
            share_process_namespace: false,
        }
    }

    fn container(env: &[(&str, &str)]) -> ContainerSpec {
        ContainerSpec {
            name: "c".into(),
            image: "img".into(),
            command: vec![],
            args: vec![],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            working_dir: None,
            mounts: vec![],
            memory_limit_bytes: None,
            cpu_limit_millis: None,
        }
    }

    #[tokio::test]
    async fn scripted_exits_follow_the_clock_and_the_attempt() {
        let (t, now) = clock();
        let rt = FakeRuntime::new(now);
        let sb = rt.create_sandbox(&sandbox("u1")).await.unwrap();
        let spec = container(&[("FAKE_EXIT_AFTER_MS", "500"), ("FAKE_EXIT_CODES", "1,1,0")]);
        let cases = [(0, 1), (1, 1), (2, 0), (7, 0)];
        for (attempt, code) in cases {
            let id = rt.start_container(&sb, &spec, attempt).await.unwrap();
            let start = t.load(Ordering::SeqCst);
            assert_eq!(
                rt.container_state(&id).await.unwrap(),
                ContainerState::Running {
                    started_at_unix_ms: start
                }
            );
            t.fetch_add(499, Ordering::SeqCst);
            assert!(matches!(
                rt.container_state(&id).await.unwrap(),
                ContainerState::Running { .. }
            ));
            t.fetch_add(1, Ordering::SeqCst);
            let ContainerState::Exited(status) = rt.container_state(&id).await.unwrap() else {
                panic!("still running")
            };
            assert_eq!(status.exit_code, code, "attempt {attempt}");
            assert_eq!(status.finished_at_unix_ms, start + 500);
        }
    }

    #[tokio::test]
    async fn oom_stop_and_test_controls() {
        let (_, now) = clock();
        let rt = FakeRuntime::new(now);
        let sb = rt.create_sandbox(&sandbox("u1")).await.unwrap();
        let oom = rt
            .start_container(&sb, &container(&[("FAKE_OOM", "1")]), 0)
            .await
            .unwrap();
        let ContainerState::Exited(s) = rt.container_state(&oom).await.unwrap() else {
            panic!()
        };
        assert!(s.oom_killed);
        assert_eq!(s.exit_code, 137);

        let id = rt.start_container(&sb, &container(&[]), 1).await.unwrap();
        assert_eq!(rt.running_container_count(), 1);
        assert_eq!(rt.container_id("u1", "c"), Some(id.clone()));
        let cmd = vec!["true".to_string()];
        assert_eq!(
            rt.exec(&id, &cmd, Duration::from_secs(1))
                .await
                .unwrap()
                .exit_code,
            0
        );
        rt.set_exec_ok("u1", "c", false);
        assert_eq!(
            rt.exec(&id, &cmd, Duration::from_secs(1))
                .await
                .unwrap()
                .exit_code,
            1
        );
        let tcp = NetworkCheck::Tcp { port: 80 };
        assert!(
            rt.check_network(&sb, &tcp, Duration::from_secs(1))
                .await
                .unwrap()
        );
        rt.set_network_ok("u1", false);
        assert!(
            !rt.check_network(&sb, &tcp, Duration::from_secs(1))
                .await
                .unwrap()
        );

        rt.stop_container(&id, Duration::from_secs(30))
            .await
            .unwrap();
        let ContainerState::Exited(s) = rt.container_state(&id).await.unwrap() else {
            panic!()
        };
        assert_eq!((s.exit_code, s.signal), (143, Some(SIGTERM)));
        assert!(!rt.exit_container("u1", "c", 3), "already exited");
        assert!(rt.exec(&id, &cmd, Duration::from_secs(1)).await.is_err());

        assert_eq!(rt.list_sandboxes().await.unwrap()[0].containers.len(), 2);
        rt.remove_sandbox(&sb).await.unwrap();
        rt.remove_sandbox(&sb).await.unwrap();
        assert_eq!(rt.sandbox_count(), 0);
        assert_eq!(rt.containers_started(), 2);
        assert!(rt.start_container(&sb, &container(&[]), 0).await.is_err());
    }

    #[tokio::test]
    async fn logs_keep_one_previous_attempt() {
        let (_, now) = clock();
        let rt = FakeRuntime::new(now);
        let sb = rt.create_sandbox(&sandbox("u1")).await.unwrap();
        let mut ids = Vec::new();
        for attempt in 0..4u32 {
            let log = format!("a{attempt}\nb{attempt}\n");
            let spec = container(&[("FAKE_LOG", log.as_str()), ("FAKE_EXIT_CODE", "1")]);
            ids.push(rt.start_container(&sb, &spec, attempt).await.unwrap());
        }
        let last = &ids[3];
        assert_eq!(rt.read_logs(last, false, None).await.unwrap(), b"a3\nb3\n");
        assert_eq!(rt.read_logs(last, false, Some(1)).await.unwrap(), b"b3\n");
        assert_eq!(rt.read_logs(last, true, None).await.unwrap(), b"a2\nb2\n");
        assert!(
            rt.container_state(&ids[0]).await.is_err(),
            "older attempts are dropped"
        );
        assert_eq!(
            rt.read_logs_from(last, 3).await.unwrap(),
            (b"b3\n".to_vec(), 6)
        );
        let bad = container(&[("FAKE_EXIT_CODES", "1,x")]);
        assert!(matches!(
            rt.start_container(&sb, &bad, 0).await,
            Err(RuntimeError::Start { .. })
        ));
        let failing = container(&[("FAKE_START_ERROR", "no such program")]);
        assert!(matches!(
            rt.start_container(&sb, &failing, 0).await,
            Err(RuntimeError::Start { .. })
        ));
    }
}
