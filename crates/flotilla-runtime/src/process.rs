//! The `process` runtime: a Pod's containers are processes of the host,
//! run from the host's programs (the image is only recorded).
//! Long because it is the whole `PodRuntime` implementation over one map
//! of sandboxes; system calls, cgroups, spawning, roots and logs live in
//! its submodules.
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
mod logs;
mod rootfs;
mod spawn;
mod sys;

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::spec::{self, Hostnames, check_name, start_error, valid_name};
use crate::{
    Capabilities, ContainerId, ContainerInfo, ContainerSpec, ContainerState,
    DEFAULT_LOG_LIMIT_BYTES, ExecOutput, ExitStatus, NetworkCheck, PodRuntime, RuntimeError,
    SandboxId, SandboxInfo, SandboxSpec, VolumeSource, blocking, volumes,
};
use cgroup::{Cgroups, Group};
use spawn::{PidNamespace, parent_pid, probe_namespaces, spawn_child};
use sys::ChildSetup;

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

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct ProcRecord {
    pid: i32,
    start_ticks: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SandboxRecord {
    pod_uid: String,
    namespace: String,
    name: String,
    hostname: String,
    holder: Option<ProcRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ContainerRecord {
    name: String,
    attempt: u32,
    image: String,
    process: Option<ProcRecord>,
    started_at_unix_ms: u64,
    exit: Option<ExitRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ExitRecord {
    exit_code: i32,
    signal: Option<i32>,
    oom_killed: bool,
    finished_at_unix_ms: u64,
}

impl ContainerRecord {
    fn exit_status(&self) -> Option<ExitStatus> {
        self.exit.as_ref().map(|e| ExitStatus {
            exit_code: e.exit_code,
            signal: e.signal,
            oom_killed: e.oom_killed,
            started_at_unix_ms: self.started_at_unix_ms,
            finished_at_unix_ms: e.finished_at_unix_ms,
        })
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(value).map_err(io::Error::other)?,
    )?;
    std::fs::rename(tmp, path)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn container_id(uid: &str, name: &str, attempt: u32) -> ContainerId {
    ContainerId(format!("{uid}/{name}/{attempt}"))
}

fn parse_container_id(id: &ContainerId) -> Option<(&str, &str, u32)> {
    let mut parts = id.0.splitn(3, '/');
    let (uid, name, attempt) = (parts.next()?, parts.next()?, parts.next()?.parse().ok()?);
    (valid_name(uid) && valid_name(name)).then_some((uid, name, attempt))
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
        }
        let isolated = holder_program.is_some();
        let capabilities = Capabilities {
            network_isolation: isolated,
            filesystem_isolation: isolated,
            memory_limits: cgroups.is_some(),
            cpu_limits: cgroups.is_some(),
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

    /// Takes in the sandboxes a previous run left in the state directory:
    /// kills what still runs of them and records their containers exited,
    /// so the agent finds them and removes or re-creates them.
    fn adopt_leftovers(&self) -> io::Result<()> {
        let mut killed = Vec::new();
        for entry in std::fs::read_dir(&self.state_dir)? {
            let entry = entry?;
            let Some(uid) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !valid_name(&uid) || !entry.file_type()?.is_dir() {
                continue;
            }
            let dir = entry.path();
            let record: Option<SandboxRecord> = read_json(&dir.join("sandbox.json"));
            if let Some(holder) = record.as_ref().and_then(|r| r.holder)
                && sys::is_same_process(holder.pid, holder.start_ticks)
            {
                sys::kill_group(holder.pid, libc::SIGKILL);
                killed.push(holder.pid);
            }
            let mut containers = BTreeMap::new();
            for file in std::fs::read_dir(dir.join("containers"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = file.path();
                let Some(mut record) = read_json::<ContainerRecord>(&path) else {
                    continue;
                };
                if !valid_name(&record.name) {
                    continue;
                }
                let cgroup = self
                    .cgroups
                    .as_ref()
                    .map(|c| c.container(&uid, &record.name));
                if record.exit.is_none() {
                    if let Some(p) = record.process
                        && sys::is_same_process(p.pid, p.start_ticks)
                    {
                        sys::kill_group(p.pid, libc::SIGKILL);
                        killed.push(p.pid);
                    }
                    if let Some(cgroup) = &cgroup {
                        cgroup.kill_all();
                    }
                    record.exit = Some(ExitRecord {
                        exit_code: 128 + libc::SIGKILL,
                        signal: Some(libc::SIGKILL),
                        oom_killed: false,
                        finished_at_unix_ms: sys::unix_ms(),
                    });
                    write_json(&path, &record)?;
                }
                let container = Container {
                    id: container_id(&uid, &record.name, record.attempt),
                    name: record.name.clone(),
                    attempt: record.attempt,
                    pid: 0,
                    has_init: false,
                    start_ticks: 0,
                    started_at_unix_ms: record.started_at_unix_ms,
                    env: Vec::new(),
                    working_dir: None,
                    cgroup,
                    exit: watch::Sender::new(record.exit_status()),
                };
                containers.insert(record.name.clone(), Arc::new(container));
            }
            let state = SandboxState {
                containers,
                ..SandboxState::default()
            };
            let sandbox = Sandbox {
                uid: uid.clone(),
                dir,
                ops: Arc::default(),
                state: Mutex::new(state),
            };
            self.sandboxes().insert(uid, Arc::new(sandbox));
        }
        // Killed processes are gone once their parent reaps them; wait a
        // bounded while so a caller sees them gone.
        let deadline = std::time::Instant::now() + KILL_WAIT;
        while killed
            .iter()
            .any(|pid| sys::start_ticks(*pid).is_some() && !is_zombie(*pid))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            t.rfind(')')
                .map(|i| t[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
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

fn container_env(spec: &ContainerSpec, hostname: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("PATH", DEFAULT_PATH),
        ("HOME", "/root"),
        ("HOSTNAME", hostname),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (key, value) in &spec.env {
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.clone(),
            None => env.push((key.clone(), value.clone())),
        }
    }
    env
}

fn exit_of(status: io::Result<std::process::ExitStatus>) -> (i32, Option<i32>) {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => (code, None),
            (None, Some(signal)) => (128 + signal, Some(signal)),
            (None, None) => (-1, None),
        },
        Err(_) => (-1, None),
    }
}

/// Waits for a container's process, then finishes it off: kills what it
/// forked, lets its output reach the log, and records how it ended.
async fn reap(
    mut child: tokio::process::Child,
    program_status: Option<io::PipeReader>,
    container: Arc<Container>,
    log_task: JoinHandle<io::Result<()>>,
    oom_baseline: Option<u64>,
    record_path: PathBuf,
    mut record: ContainerRecord,
) {
    let mut status = child.wait().await;
    let finished_at_unix_ms = sys::unix_ms();
    // An init reports how its program ended; if the init itself was
    // killed, its own end is the container's.
    if let Some(mut reader) = program_status {
        use std::io::Read;
        use std::os::unix::process::ExitStatusExt;
        let mut raw = [0u8; 4];
        // The init is gone, so the pipe holds its word or is at its end.
        if reader.read_exact(&mut raw).is_ok() {
            status = Ok(std::process::ExitStatus::from_raw(i32::from_ne_bytes(raw)));
        }
    }
    // What the container forked ends with it, as it would with a
    // container's own pid namespace.
    sys::kill_group(container.pid, libc::SIGKILL);
    if let Some(cgroup) = container.cgroup.clone() {
        let _ = tokio::task::spawn_blocking(move || cgroup.kill_all()).await;
    }
    // Killed processes linger until reaped by whoever inherited them; wait
    // a bounded while so that "exited" means gone.
    for _ in 0..GROUP_GONE_POLLS {
        if !sys::group_alive(container.pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Ok(Ok(Err(e))) = tokio::time::timeout(LOG_DRAIN, log_task).await {
        tracing::warn!(container = %container.id.0, error = %e, "container log copy failed");
    }
    let (exit_code, signal) = exit_of(status);
    let oom_killed = match (&container.cgroup, oom_baseline) {
        (Some(cgroup), Some(before)) => cgroup.oom_kills().is_some_and(|now| now > before),
        _ => false,
    };
    let exit = ExitRecord {
        exit_code,
        signal,
        oom_killed,
        finished_at_unix_ms,
    };
    record.exit = Some(exit);
    if let Err(e) = write_json(&record_path, &record) {
        tracing::warn!(container = %container.id.0, error = %e, "cannot record container exit");
    }
    container.exit.send_replace(record.exit_status());
}

async fn read_capped(reader: Option<impl AsyncRead + Unpin>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let Some(mut reader) = reader else {
        return Ok(out);
    };
    let mut buf = [0u8; 8192];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(out);
        }
        // Past the cap the output is read and dropped, so the command never
        // blocks on a full pipe.
        crate::logs::push_capped(&mut out, &buf[..n]);
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Forwards a host port to `port` inside the sandbox (or on the host,
/// without isolation).
async fn proxy(listener: tokio::net::TcpListener, netns: Option<PathBuf>, port: u16) {
    let mut connections = JoinSet::new();
    loop {
        let mut inbound = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of fds and the like: back off rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_PROXY_CONNECTIONS {
            continue;
        }
        let netns = netns.clone();
        connections.spawn(async move {
            let Ok(socket) = sys::tcp_socket_in(netns).await else {
                return;
            };
            let Ok(mut outbound) = socket.connect(loopback(port)).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

impl ProcessRuntime {
    /// Starts the process holding a Pod's namespaces; with
    /// `shareProcessNamespace` it is also the first process of the Pod's
    /// pid namespace, which the containers join.
    async fn spawn_holder(&self, spec: &SandboxSpec) -> Result<Holder, RuntimeError> {
        let program = self
            .inner
            .holder_program
            .clone()
            .ok_or_else(|| RuntimeError::Other("namespaces are not available".into()))?;
        let mut setup = ChildSetup {
            parent_pid: parent_pid(),
            in_pid_namespace: spec.share_process_namespace,
            unshare: libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC,
            hostname: Some(sys::cstring(&spec.hostname)?),
            loopback_up: true,
            ..ChildSetup::default()
        };
        if let Some(cgroups) = self.inner.cgroups.clone() {
            let uid = spec.pod_uid.clone();
            let holder = blocking(move || cgroups.create_holder(&uid)).await;
            setup.cgroup_procs = holder
                .and_then(|h| h.open_procs())
                .map_err(|e| RuntimeError::Other(format!("the sandbox's cgroup: {e}")))?;
        }
        let pid_ns = if spec.share_process_namespace {
            PidNamespace::New
        } else {
            PidNamespace::Peer
        };
        let mut command = tokio::process::Command::new(program);
        command
            .arg("infinity")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: ChildSetup::run makes only async-signal-safe calls.
        unsafe { command.pre_exec(move || setup.run()) };
        let child = spawn_child(command, pid_ns).await.map_err(|e| {
            RuntimeError::Other(format!("cannot start the sandbox's namespace holder: {e}"))
        })?;
        let pid = child.id().ok_or_else(|| {
            RuntimeError::Other("the sandbox's namespace holder exited at once".into())
        })? as i32;
        Ok(Holder { pid, child })
    }

    async fn stop(&self, container: &Arc<Container>, grace: Duration) -> Result<(), RuntimeError> {
        if !container.running() {
            return Ok(());
        }
        let mut exit = container.exit.subscribe();
        if container.has_init {
            // The init passes it on to the program alone, as a container
            // engine signals a container's first process.
            sys::kill_pid(container.pid, libc::SIGTERM);
        } else {
            sys::kill_group(container.pid, libc::SIGTERM);
        }
        if tokio::time::timeout(grace, exit.wait_for(Option::is_some))
            .await
            .is_err()
        {
            sys::kill_group(container.pid, libc::SIGKILL);
            if let Some(cgroup) = container.cgroup.clone() {
                let _ = tokio::task::spawn_blocking(move || cgroup.kill_all()).await;
            }
        }
        match tokio::time::timeout(KILL_WAIT, exit.wait_for(Option::is_some)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(RuntimeError::Other(format!(
                "container {} did not stop within {} ms of SIGKILL",
                container.id.0,
                KILL_WAIT.as_millis()
            ))),
        }
    }

    fn log_dir(&self, uid: &str, name: &str) -> PathBuf {
        self.inner.state_dir.join(uid).join("logs").join(name)
    }

    /// The log file of `id` (or of the attempt before it).
    fn log_path(&self, id: &ContainerId, previous: bool) -> Result<PathBuf, RuntimeError> {
        let (uid, name, attempt) =
            parse_container_id(id).ok_or_else(|| RuntimeError::NoContainer(id.clone()))?;
        if !self.inner.sandboxes().contains_key(uid) {
            return Err(RuntimeError::NoContainer(id.clone()));
        }
        let dir = self.log_dir(uid, name);
        let attempt = if previous {
            logs::attempts(&dir)
                .into_iter()
                .rfind(|a| *a < attempt)
                .ok_or_else(|| {
                    RuntimeError::Other(format!("container {} has no previous attempt's log", id.0))
                })?
        } else {
            attempt
        };
        Ok(logs::attempt_path(&dir, attempt))
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
        spec::check_sandbox(spec, Hostnames::Kernel)?;
        let id = SandboxId(spec.pod_uid.clone());
        // A sandbox being removed is out of the map once its lock is free.
        let (sandbox, _ops) = loop {
            let sandbox = self
                .inner
                .sandboxes()
                .entry(spec.pod_uid.clone())
                .or_insert_with(|| {
                    Arc::new(Sandbox {
                        uid: spec.pod_uid.clone(),
                        dir: self.inner.state_dir.join(&spec.pod_uid),
                        ops: Arc::default(),
                        state: Mutex::new(SandboxState::default()),
                    })
                })
                .clone();
            let ops = sandbox.ops.clone().lock_owned().await;
            if !sandbox.state().removed {
                break (sandbox, ops);
            }
        };
        {
            let mut state = sandbox.state();
            let holder_ok = match state.holder.as_mut() {
                Some(holder) => holder.alive(),
                None => !self.inner.isolated(),
            };
            if holder_ok && state.spec.as_ref() == Some(spec) {
                return Ok(id);
            }
        }
        let dir = sandbox.dir.clone();
        let volume_spec = spec.clone();
        blocking(move || {
            for sub in ["volumes", "logs", "rootfs", "containers"] {
                std::fs::create_dir_all(dir.join(sub))?;
            }
            volumes::make(&dir, &volume_spec)
        })
        .await?;
        let old_holder = sandbox.state().holder.take();
        if let Some(mut old) = old_holder {
            sys::kill_group(old.pid, libc::SIGKILL);
            let _ = tokio::time::timeout(KILL_WAIT, old.child.wait()).await;
        }
        let holder = if self.inner.isolated() {
            Some(self.spawn_holder(spec).await?)
        } else {
            None
        };
        let holder_record = holder.as_ref().and_then(|h| {
            sys::start_ticks(h.pid).map(|start_ticks| ProcRecord {
                pid: h.pid,
                start_ticks,
            })
        });
        let netns = holder
            .as_ref()
            .map(|h| PathBuf::from(format!("/proc/{}/ns/net", h.pid)));
        let record = SandboxRecord {
            pod_uid: spec.pod_uid.clone(),
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            hostname: spec.hostname.clone(),
            holder: holder_record,
        };
        {
            let mut state = sandbox.state();
            state.holder = holder;
            state.spec = Some(spec.clone());
            for proxy in state.proxies.drain(..) {
                proxy.abort();
            }
        }
        write_json(&sandbox.dir.join("sandbox.json"), &record)?;
        let mut proxies = Vec::new();
        for &(container_port, host_port) in &spec.host_ports {
            if netns.is_none() && container_port == host_port {
                // Without a network namespace the container binds the host port itself.
                continue;
            }
            match tokio::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, host_port)).await {
                Ok(listener) => {
                    proxies.push(tokio::spawn(proxy(listener, netns.clone(), container_port)))
                }
                Err(e) => {
                    proxies.iter().for_each(JoinHandle::abort);
                    return Err(RuntimeError::Other(format!("host port {host_port}: {e}")));
                }
            }
        }
        sandbox.state().proxies = proxies;
        Ok(id)
    }

    async fn start_container(
        &self,
        sandbox_id: &SandboxId,
        spec: &ContainerSpec,
        attempt: u32,
    ) -> Result<ContainerId, RuntimeError> {
        check_name("container name", &spec.name)?;
        let sandbox = self.inner.sandbox(sandbox_id)?;
        let _ops = sandbox.ops.lock().await;
        let uid = sandbox.uid.clone();
        let (sandbox_spec, holder_pid) = {
            let mut state = sandbox.state();
            if state.removed {
                return Err(RuntimeError::NoSandbox(sandbox_id.clone()));
            }
            let Some(sandbox_spec) = state.spec.clone() else {
                return Err(start_error(
                    &spec.name,
                    format!("sandbox {uid} was left from before a restart: create it again"),
                ));
            };
            if state
                .containers
                .get(&spec.name)
                .is_some_and(|c| c.running())
            {
                return Err(start_error(
                    &spec.name,
                    "a previous attempt is still running",
                ));
            }
            let holder_pid = match state.holder.as_mut() {
                Some(holder) => {
                    if !holder.alive() {
                        return Err(start_error(
                            &spec.name,
                            "the sandbox's namespace holder is gone: create the sandbox again",
                        ));
                    }
                    Some(holder.pid)
                }
                None => None,
            };
            (sandbox_spec, holder_pid)
        };
        let mut argv = spec.command.iter().chain(&spec.args);
        let program = argv
            .next()
            .ok_or_else(|| start_error(&spec.name, "no command: the process runtime runs host programs and has no image entrypoint"))?
            .clone();
        let args: Vec<String> = argv.cloned().collect();
        let env = container_env(spec, &sandbox_spec.hostname);

        let mut volumes = Vec::new();
        for mount in &spec.mounts {
            let volume = sandbox_spec
                .volumes
                .iter()
                .find(|v| v.name == mount.volume)
                .ok_or_else(|| {
                    start_error(
                        &spec.name,
                        format!(
                            "mount names volume {:?} that the Pod does not have",
                            mount.volume
                        ),
                    )
                })?;
            let source = match &volume.source {
                VolumeSource::HostPath { path } => path.clone(),
                _ => sandbox.dir.join("volumes").join(&volume.name),
            };
            let dir = std::fs::metadata(&source)
                .map(|m| m.is_dir())
                .unwrap_or(true);
            volumes.push(rootfs::VolumeMount {
                source,
                target: mount.mount_path.clone(),
                read_only: mount.read_only,
                dir,
            });
        }

        let log_dir = self.log_dir(&uid, &spec.name);
        let log_path = logs::attempt_path(&log_dir, attempt);
        {
            let (log_dir, log_path) = (log_dir.clone(), log_path.clone());
            blocking(move || {
                std::fs::create_dir_all(&log_dir)?;
                logs::prune(&log_dir, attempt)?;
                std::fs::write(&log_path, b"")
            })
            .await?;
        }

        let cgroup = match &self.inner.cgroups {
            Some(cgroups) => {
                let (cgroups, uid, name) = (cgroups.clone(), uid.clone(), spec.name.clone());
                let (memory, cpu) = (spec.memory_limit_bytes, spec.cpu_limit_millis);
                let made =
                    blocking(move || cgroups.create_container(&uid, &name, memory, cpu)).await;
                Some(made.map_err(|e| start_error(&spec.name, format!("cgroup: {e}")))?)
            }
            None => None,
        };
        let oom_baseline = cgroup.as_ref().and_then(Group::oom_kills);

        let launched: Result<
            (
                tokio::process::Child,
                Option<String>,
                io::PipeReader,
                Option<io::PipeReader>,
            ),
            RuntimeError,
        > = async {
            let mut setup = ChildSetup {
                parent_pid: parent_pid(),
                ..ChildSetup::default()
            };
            if let Some(cgroup) = &cgroup {
                setup.cgroup_procs = cgroup
                    .open_procs()
                    .map_err(|e| start_error(&spec.name, format!("cgroup: {e}")))?;
            }
            let mut pid_ns = PidNamespace::Peer;
            let mut status_reader = None;
            let working_dir = match holder_pid {
                Some(holder) => {
                    pid_ns = if sandbox_spec.share_process_namespace {
                        PidNamespace::Join(sys::open_namespace(holder, "pid").map_err(|e| {
                            start_error(&spec.name, format!("sandbox namespace: {e}"))
                        })?)
                    } else {
                        PidNamespace::New
                    };
                    let (reader, writer) = io::pipe()?;
                    status_reader = Some(reader);
                    setup.init_status = Some(writer.into());
                    setup.in_pid_namespace = true;
                    for (kind, flag) in [
                        ("net", libc::CLONE_NEWNET),
                        ("uts", libc::CLONE_NEWUTS),
                        ("ipc", libc::CLONE_NEWIPC),
                    ] {
                        let fd = sys::open_namespace(holder, kind).map_err(|e| {
                            start_error(&spec.name, format!("sandbox namespace: {e}"))
                        })?;
                        setup.join.push((fd, flag));
                    }
                    setup.unshare = libc::CLONE_NEWNS;
                    let root = sandbox.dir.join("rootfs").join(&spec.name);
                    let planned = root.clone();
                    let mounts = blocking(move || {
                        sys::remove_tree(&planned)?;
                        let plan =
                            rootfs::plan(Path::new("/"), &volumes).map_err(io::Error::other)?;
                        plan.build(&planned)?;
                        plan.child_mounts(&planned)
                    })
                    .await
                    .map_err(|e| start_error(&spec.name, e))?;
                    setup.root = Some((sys::cstring(&root)?, mounts));
                    Some(spec.working_dir.clone().unwrap_or_else(|| "/".into()))
                }
                None => spec.working_dir.clone(),
            };
            setup.working_dir = working_dir.as_ref().map(sys::cstring).transpose()?;

            let (reader, writer) = io::pipe()?;
            let mut command = tokio::process::Command::new(&program);
            command
                .args(&args)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::from(writer.try_clone()?))
                .stderr(Stdio::from(writer));
            // SAFETY: ChildSetup::run makes only async-signal-safe calls.
            unsafe { command.pre_exec(move || setup.run()) };
            let child = spawn_child(command, pid_ns).await.map_err(|e| {
                let dir = working_dir.as_deref().unwrap_or("(the peer's)");
                start_error(
                    &spec.name,
                    format!("{e} (command {program:?}, working directory {dir})"),
                )
            })?;
            Ok((child, working_dir, reader, status_reader))
        }
        .await;
        let (child, working_dir, reader, status_reader) = match launched {
            Ok(launched) => launched,
            Err(e) => {
                // A cgroup no attempt ever ran in would be left behind.
                if let Some(cgroup) = cgroup.clone()
                    && !sandbox.state().containers.contains_key(&spec.name)
                {
                    let _ = blocking(move || cgroup.remove()).await;
                }
                return Err(e);
            }
        };
        let started_at_unix_ms = sys::unix_ms();
        let pid = child
            .id()
            .ok_or_else(|| start_error(&spec.name, "exited before it could be watched"))?
            as i32;
        let start_ticks = sys::start_ticks(pid).unwrap_or(0);
        let log_task = tokio::spawn(logs::copy(
            reader.into(),
            log_path,
            self.inner.log_limit_bytes,
        ));

        let id = container_id(&uid, &spec.name, attempt);
        let container = Arc::new(Container {
            id: id.clone(),
            name: spec.name.clone(),
            attempt,
            pid,
            has_init: status_reader.is_some(),
            start_ticks,
            started_at_unix_ms,
            env,
            working_dir,
            cgroup,
            exit: watch::Sender::new(None),
        });
        let record = ContainerRecord {
            name: spec.name.clone(),
            attempt,
            image: spec.image.clone(),
            process: Some(ProcRecord { pid, start_ticks }),
            started_at_unix_ms,
            exit: None,
        };
        let record_path = sandbox
            .dir
            .join("containers")
            .join(format!("{}.json", spec.name));
        if let Err(e) = write_json(&record_path, &record) {
            tracing::warn!(container = %id.0, error = %e, "cannot record container start");
        }
        sandbox
            .state()
            .containers
            .insert(spec.name.clone(), container.clone());
        tokio::spawn(reap(
            child,
            status_reader,
            container,
            log_task,
            oom_baseline,
            record_path,
            record,
        ));
        Ok(id)
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

    async fn remove_sandbox(&self, sandbox_id: &SandboxId) -> Result<(), RuntimeError> {
        let Ok(sandbox) = self.inner.sandbox(sandbox_id) else {
            return Ok(());
        };
        let _ops = sandbox.ops.lock().await;
        let containers: Vec<Arc<Container>> =
            sandbox.state().containers.values().cloned().collect();
        for container in &containers {
            self.stop(container, Duration::ZERO).await?;
        }
        let (holder, proxies) = {
            let mut state = sandbox.state();
            (state.holder.take(), std::mem::take(&mut state.proxies))
        };
        proxies.iter().for_each(JoinHandle::abort);
        if let Some(mut holder) = holder {
            sys::kill_group(holder.pid, libc::SIGKILL);
            if tokio::time::timeout(KILL_WAIT, holder.child.wait())
                .await
                .is_err()
            {
                return Err(RuntimeError::Other(format!(
                    "the namespace holder of sandbox {} did not die",
                    sandbox.uid
                )));
            }
        }
        let pod_cgroup = self.inner.cgroups.as_ref().map(|c| c.pod(&sandbox.uid));
        let dir = sandbox.dir.clone();
        blocking(move || {
            if let Some(cgroup) = pod_cgroup {
                cgroup.remove()?;
            }
            sys::remove_tree(&dir)
        })
        .await?;
        sandbox.state().removed = true;
        self.inner.sandboxes().remove(&sandbox.uid);
        Ok(())
    }

    async fn exec(
        &self,
        container: &ContainerId,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let c = self.inner.container(container)?;
        if !c.running() || !sys::is_same_process(c.pid, c.start_ticks) {
            return Err(RuntimeError::Other(format!(
                "container {} is not running",
                container.0
            )));
        }
        let (program, args) = command
            .split_first()
            .ok_or_else(|| RuntimeError::Other("exec needs a command".into()))?;
        let mut setup = ChildSetup {
            parent_pid: parent_pid(),
            ..ChildSetup::default()
        };
        if let Some(cgroup) = &c.cgroup {
            setup.cgroup_procs = cgroup.open_procs()?;
        }
        let mut pid_ns = PidNamespace::Peer;
        if self.inner.isolated() {
            for (kind, flag) in [
                ("net", libc::CLONE_NEWNET),
                ("uts", libc::CLONE_NEWUTS),
                ("ipc", libc::CLONE_NEWIPC),
                ("mnt", libc::CLONE_NEWNS),
            ] {
                setup.join.push((sys::open_namespace(c.pid, kind)?, flag));
            }
            if c.has_init {
                pid_ns = PidNamespace::Join(sys::open_namespace(c.pid, "pid")?);
                setup.in_pid_namespace = true;
            }
        }
        setup.working_dir = c.working_dir.as_ref().map(sys::cstring).transpose()?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(c.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: ChildSetup::run makes only async-signal-safe calls.
        unsafe { cmd.pre_exec(move || setup.run()) };
        let mut child = match spawn_child(cmd, pid_ns).await {
            Ok(child) => child,
            // As a shell reports a command it cannot find.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(ExecOutput {
                    exit_code: 127,
                    stdout: Vec::new(),
                    stderr: format!("{program}: {e}\n").into_bytes(),
                });
            }
            Err(e) => {
                return Err(RuntimeError::Other(format!(
                    "cannot exec in container {}: {e}",
                    container.0
                )));
            }
        };
        let pid = child.id().unwrap_or(0) as i32;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let run = async { tokio::join!(read_capped(stdout), read_capped(stderr), child.wait()) };
        match tokio::time::timeout(timeout, run).await {
            Ok((stdout, stderr, status)) => Ok(ExecOutput {
                exit_code: exit_of(status).0,
                stdout: stdout?,
                stderr: stderr?,
            }),
            Err(_) => {
                sys::kill_group(pid, libc::SIGKILL);
                let _ = tokio::time::timeout(KILL_WAIT, child.wait()).await;
                Err(RuntimeError::Other(format!(
                    "exec in container {} timed out after {} ms",
                    container.0,
                    timeout.as_millis()
                )))
            }
        }
    }

    async fn check_network(
        &self,
        sandbox_id: &SandboxId,
        check: &NetworkCheck,
        timeout: Duration,
    ) -> Result<bool, RuntimeError> {
        let sandbox = self.inner.sandbox(sandbox_id)?;
        let netns = if self.inner.isolated() {
            Some(sandbox.holder_netns().ok_or_else(|| {
                RuntimeError::Other(format!("sandbox {} has no network namespace", sandbox.uid))
            })?)
        } else {
            None
        };
        let socket = sys::tcp_socket_in(netns).await?;
        let port = match check {
            NetworkCheck::Tcp { port } | NetworkCheck::Http { port, .. } => *port,
        };
        let probe = async {
            let stream = socket.connect(loopback(port)).await?;
            match check {
                NetworkCheck::Tcp { .. } => Ok(true),
                NetworkCheck::Http { path, .. } => {
                    crate::http_ok(stream, &format!("127.0.0.1:{port}"), path).await
                }
            }
        };
        Ok(matches!(
            tokio::time::timeout(timeout, probe).await,
            Ok(Ok(true))
        ))
    }

    async fn read_logs(
        &self,
        container: &ContainerId,
        previous: bool,
        tail_lines: Option<usize>,
    ) -> Result<Vec<u8>, RuntimeError> {
        let path = self.log_path(container, previous)?;
        let data = match tokio::fs::read(&path).await {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(crate::logs::tail_of(data, tail_lines))
    }

    async fn read_logs_from(
        &self,
        container: &ContainerId,
        offset: u64,
    ) -> Result<(Vec<u8>, u64), RuntimeError> {
        use tokio::io::AsyncSeekExt;
        let path = self.log_path(container, false)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata().await?.len();
        let offset = crate::logs::resume_at(offset, len);
        file.seek(io::SeekFrom::Start(offset)).await?;
        let mut data = Vec::new();
        file.take(crate::logs::MAX_READ_BYTES)
            .read_to_end(&mut data)
            .await?;
        let next = offset + data.len() as u64;
        Ok((data, next))
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
