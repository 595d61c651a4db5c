//! The `process` runtime: a Pod's containers are processes of the host,
//! run from the host's programs (the image is only recorded).
//!
//! This module holds the runtime's state (a map of sandboxes and their
//! containers) and its `PodRuntime` face; each concern lives in a module
//! of its own: `sandbox`, `container`, `exec`, `logs`, `proxy` (host
//! ports), `records` and `leftovers` (what survives a restart), and below
//! them `spawn`, `sys`, `cgroup` and `rootfs`.
//!
//! # Sandbox layout
//!
//! A sandbox is one Pod. Where the peer may make namespaces (it is root
//! and `unshare` works, found once at construction):
//!
//! - a *holder* process (`sleep infinity`) owns the Pod's network, UTS and
//!   IPC namespaces: `lo` is brought up in it and its hostname is the
//!   Pod's. Every container joins them, so the Pod's containers reach each
//!   other on localhost and two Pods can listen on the same port.
//! - each container gets its own mount namespace and an assembled root
//!   under `<state_dir>/<pod_uid>/rootfs/<container>`: the host's system
//!   directories bound read-only, fresh `/tmp`, `/proc` and a minimal
//!   `/dev`, and the Pod's volumes at their mount paths. Mount paths are
//!   never created on the host (see the `rootfs` module).
//! - volumes live in `<state_dir>/<pod_uid>/volumes/<name>` (emptyDir and
//!   files), host paths are used as they are.
//! - logs of each attempt go to `<state_dir>/<pod_uid>/logs/<container>/<attempt>.log`.
//! - `sandbox.json` and `containers/<name>.json` record the processes (pid
//!   and start time, which rules out a reused pid) for after a restart.
//!
//! With cgroups writable, each Pod has a cgroup holding all its processes
//! (`flotilla/<peer>/<pod_uid>`), with one per container inside for memory
//! and cpu limits and out-of-memory detection (see the `cgroup` module).
//! Each container has a pid namespace of its own, or the Pod's under
//! `shareProcessNamespace` (the holder is then its first process). What
//! cannot be had is reported in [`Capabilities::limitations`] and the Pods
//! run without it.
//!
//! # Safety
//!
//! Only the peer can stop its Pods: when it is cut off from the leader it
//! fences them, and the cluster then starts replacements elsewhere. A Pod
//! that outlived its peer would run beside its replacement, with nobody to
//! stop it. So every process this runtime starts asks the kernel for
//! SIGKILL when its parent dies (`PR_SET_PDEATHSIG`), and they are all
//! forked from one thread that lives as long as the peer process (the
//! signal follows the forking *thread*; see the `spawn` module). A
//! container's first process is an init of ours (`sys::run_init`) that
//! never execs or changes its credentials, so the signal holds, and it is
//! the first process of the container's pid namespace, so the kernel kills
//! everything the program forked, however detached, with it. Anything left
//! over from a previous run of the peer is killed when the runtime starts
//! again: whatever is in its Pods' cgroups, and processes its records
//! name, once verified as ours by pid and start time.
//!
//! This runtime isolates Pods from each other, not the host from the Pods:
//! containers run as the peer's user.

mod cgroup;
mod container;
mod exec;
mod leftovers;
mod logs;
mod proxy;
mod records;
mod rootfs;
mod sandbox;
mod spawn;
mod sys;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{
    Capabilities, ContainerId, ContainerInfo, ContainerSpec, ContainerState,
    DEFAULT_LOG_LIMIT_BYTES, ExecOutput, ExitStatus, NetworkCheck, PodRuntime, RuntimeError,
    SandboxId, SandboxInfo, SandboxSpec,
};
use cgroup::{Cgroups, Group};
use records::parse_container_id;
use spawn::probe_namespaces;

/// The file in the state directory naming the directories of this peer's
/// Pod cgroups, one per line.
pub const CGROUPS_FILE: &str = "cgroups";
/// Where a container looks for programs unless its env says otherwise.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const HOLDER_PROGRAMS: &[&str] = &["/usr/bin/sleep", "/bin/sleep"];
/// How long a killed container may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long output still in the pipe may take to reach the log once the
/// container has exited.
const LOG_DRAIN: Duration = Duration::from_secs(2);
/// Polls (20 ms apart) for a dead container's process group to vanish.
const GROUP_GONE_POLLS: usize = 100;
/// Concurrent connections per host port at most.
const MAX_PROXY_CONNECTIONS: usize = 256;

/// How the process runtime may run Pods on this machine.
#[derive(Clone, Debug)]
pub struct ProcessOptions {
    /// Try namespaces (network, hostname, mounts) for each Pod.
    pub isolation: bool,
    /// Try cgroups for memory and cpu limits.
    pub cgroups: bool,
    /// Where the cgroup hierarchy is mounted.
    pub cgroup_root: PathBuf,
    /// Bytes of each attempt's log kept at most.
    pub log_limit_bytes: u64,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            isolation: true,
            cgroups: true,
            cgroup_root: "/sys/fs/cgroup".into(),
            log_limit_bytes: DEFAULT_LOG_LIMIT_BYTES,
        }
    }
}

/// Runs Pods as host processes; see the module documentation.
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    state_dir: PathBuf,
    log_limit_bytes: u64,
    capabilities: Capabilities,
    /// The program holding each Pod's namespaces, when isolation works.
    holder_program: Option<PathBuf>,
    cgroups: Option<Cgroups>,
    sandboxes: Mutex<BTreeMap<String, Arc<Sandbox>>>,
}

struct Sandbox {
    uid: String,
    dir: PathBuf,
    /// Serialises creating, starting in and removing this sandbox.
    ops: Arc<tokio::sync::Mutex<()>>,
    state: Mutex<SandboxState>,
}

#[derive(Default)]
struct SandboxState {
    /// `None` for a sandbox found after a restart: it must be made again.
    spec: Option<SandboxSpec>,
    holder: Option<Holder>,
    /// The latest attempt of each container.
    containers: BTreeMap<String, Arc<Container>>,
    proxies: Vec<JoinHandle<()>>,
    removed: bool,
}

struct Holder {
    pid: i32,
    child: tokio::process::Child,
}

impl Holder {
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

struct Container {
    id: ContainerId,
    name: String,
    attempt: u32,
    /// Also its process group; 0 for one found after a restart. With
    /// isolation it is the container's init (see `sys::run_init`), which
    /// passes signals on to the program.
    pid: i32,
    /// Whether `pid` is such an init, so that a stop signals it alone.
    has_init: bool,
    start_ticks: u64,
    started_at_unix_ms: u64,
    env: Vec<(String, String)>,
    working_dir: Option<String>,
    cgroup: Option<Group>,
    exit: watch::Sender<Option<ExitStatus>>,
}

impl Container {
    fn state(&self) -> ContainerState {
        match &*self.exit.borrow() {
            Some(exit) => ContainerState::Exited(exit.clone()),
            None => ContainerState::Running {
                started_at_unix_ms: self.started_at_unix_ms,
            },
        }
    }

    fn running(&self) -> bool {
        self.exit.borrow().is_none()
    }
}

impl ProcessRuntime {
    /// A runtime keeping its state in `state_dir` (made if missing). Finds
    /// what this machine allows, and kills whatever a previous run of the
    /// peer left running there.
    pub fn new(state_dir: PathBuf, options: ProcessOptions) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(&state_dir)?;
        let mut limitations = vec!["containers run the host's programs as the peer's own user: images are recorded, not pulled".to_owned()];
        let found = HOLDER_PROGRAMS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let holder_program = match (options.isolation, found) {
            (false, _) => {
                limitations.push("namespaces are turned off: Pods share the host's network, hostname, process ids and filesystem".into());
                None
            }
            (true, None) => {
                limitations.push("Pods share the host's network, hostname, process ids and filesystem: no sleep program holds their namespaces".into());
                None
            }
            (true, Some(program)) => match probe_namespaces(&program) {
                Ok(()) => Some(program),
                Err(e) => {
                    limitations.push(format!("Pods share the host's network, hostname, process ids and filesystem: namespaces cannot be made ({e})"));
                    None
                }
            },
        };
        let cgroups = if options.cgroups {
            Cgroups::detect(&options.cgroup_root, &cgroup::node_name(&state_dir))
                .map_err(|e| limitations.push(format!("memory and cpu limits are not enforced, out-of-memory kills not detected and a Pod's processes are not held together: {e}")))
                .ok()
        } else {
            limitations
                .push("cgroups are turned off: memory and cpu limits are not enforced".into());
            None
        };
        if let Some(cgroups) = &cgroups {
            if !cgroups.kills_atomically() {
                limitations.push("no cgroup freezer: a Pod's processes are killed in rounds, which a process forking fast enough may outrun".into());
            }
            cgroup::kill_leftovers(cgroups, &state_dir);
            // Where this peer's Pod cgroups live, for whoever cleans up
            // after the peer is gone (the test kit does; a directory's
            // cgroups outlive it).
            let dirs: String = cgroups.node_dirs().iter().map(|d| format!("{}\n", d.display())).collect();
            std::fs::write(state_dir.join(CGROUPS_FILE), dirs)?;
        }
        let isolated = holder_program.is_some();
        let capabilities = Capabilities {
            network_isolation: isolated,
            filesystem_isolation: isolated,
            memory_limits: cgroups.is_some(),
            cpu_limits: cgroups.is_some(),
            runs_programs: true,
            limitations,
        };
        let inner = Inner {
            state_dir,
            log_limit_bytes: options.log_limit_bytes.max(2),
            capabilities,
            holder_program,
            cgroups,
            sandboxes: Mutex::new(BTreeMap::new()),
        };
        inner.adopt_leftovers()?;
        Ok(ProcessRuntime {
            inner: Arc::new(inner),
        })
    }
}

impl Inner {
    fn isolated(&self) -> bool {
        self.holder_program.is_some()
    }

    fn sandboxes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Sandbox>>> {
        self.sandboxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sandbox(&self, id: &SandboxId) -> Result<Arc<Sandbox>, RuntimeError> {
        self.sandboxes()
            .get(&id.0)
            .cloned()
            .ok_or_else(|| RuntimeError::NoSandbox(id.clone()))
    }

    fn container(&self, id: &ContainerId) -> Result<Arc<Container>, RuntimeError> {
        let (uid, name, attempt) =
            parse_container_id(id).ok_or_else(|| RuntimeError::NoContainer(id.clone()))?;
        let sandbox = self
            .sandboxes()
            .get(uid)
            .cloned()
            .ok_or_else(|| RuntimeError::NoContainer(id.clone()))?;
        let state = sandbox.state();
        match state.containers.get(name) {
            Some(c) if c.attempt == attempt => Ok(c.clone()),
            _ => Err(RuntimeError::NoContainer(id.clone())),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for sandbox in self.sandboxes().values() {
            for proxy in sandbox.state().proxies.drain(..) {
                proxy.abort();
            }
        }
    }
}

impl Sandbox {
    fn state(&self) -> std::sync::MutexGuard<'_, SandboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn holder_netns(&self) -> Option<PathBuf> {
        self.state()
            .holder
            .as_ref()
            .map(|h| PathBuf::from(format!("/proc/{}/ns/net", h.pid)))
    }
}

#[async_trait::async_trait]
impl PodRuntime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities.clone()
    }

    async fn create_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxId, RuntimeError> {
        self.make_sandbox(spec).await
    }

    async fn start_container(
        &self,
        sandbox: &SandboxId,
        spec: &ContainerSpec,
        attempt: u32,
    ) -> Result<ContainerId, RuntimeError> {
        self.start(sandbox, spec, attempt).await
    }

    async fn container_state(
        &self,
        container: &ContainerId,
    ) -> Result<ContainerState, RuntimeError> {
        Ok(self.inner.container(container)?.state())
    }

    async fn stop_container(
        &self,
        container: &ContainerId,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        match self.inner.container(container) {
            Ok(c) => self.stop(&c, grace).await,
            Err(RuntimeError::NoContainer(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn remove_sandbox(&self, sandbox: &SandboxId) -> Result<(), RuntimeError> {
        self.remove(sandbox).await
    }

    async fn exec(
        &self,
        container: &ContainerId,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        self.run_exec(container, command, timeout).await
    }

    async fn check_network(
        &self,
        sandbox: &SandboxId,
        check: &NetworkCheck,
        timeout: Duration,
    ) -> Result<bool, RuntimeError> {
        self.probe_network(sandbox, check, timeout).await
    }

    async fn read_logs(
        &self,
        container: &ContainerId,
        previous: bool,
        tail_lines: Option<usize>,
    ) -> Result<Vec<u8>, RuntimeError> {
        self.read_log(container, previous, tail_lines).await
    }

    async fn read_logs_from(
        &self,
        container: &ContainerId,
        offset: u64,
    ) -> Result<(Vec<u8>, u64), RuntimeError> {
        self.read_log_from(container, offset).await
    }

    async fn list_sandboxes(&self) -> Result<Vec<SandboxInfo>, RuntimeError> {
        let sandboxes: Vec<Arc<Sandbox>> = self.inner.sandboxes().values().cloned().collect();
        Ok(sandboxes
            .iter()
            .map(|sandbox| {
                let state = sandbox.state();
                SandboxInfo {
                    id: SandboxId(sandbox.uid.clone()),
                    pod_uid: sandbox.uid.clone(),
                    containers: state
                        .containers
                        .values()
                        .map(|c| ContainerInfo {
                            id: c.id.clone(),
                            name: c.name.clone(),
                            attempt: c.attempt,
                            state: c.state(),
                        })
                        .collect(),
                }
            })
            .collect())
    }
}
