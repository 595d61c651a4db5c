//! The `docker` runtime: a Pod's containers are containers of the local
//! Docker Engine, driven through its API.
//!
//! This module holds the runtime's options, its connection and its
//! `PodRuntime` face; each concern lives in a module of its own: `sandbox`
//! (volumes and the pause container), `container`, `exec`, `logs`,
//! `engine` (finding and inspecting the owner's containers), `guard`, and
//! `pause` and `text` below them.
//!
//! # Sandbox layout
//!
//! - a sandbox is one *pause* container (see the `pause` module) on the
//!   default bridge network, with the Pod's hostname and its host ports
//!   published. It holds the Pod's network and IPC namespaces; every
//!   container of the Pod joins them (`container:<pause>`), so they reach
//!   each other on localhost and share the hostname.
//! - volumes are host directories under `<state_dir>/<pod_uid>/volumes/`
//!   (emptyDir and files) bind-mounted into the containers: an emptyDir
//!   outlives container restarts and goes with the sandbox. Host paths are
//!   bound as they are; nothing is created on the host for a mount.
//! - each attempt of a container is a new Docker container. The attempt
//!   before it is kept, stopped, for `--previous`; older ones are removed.
//!   Logs are the engine's json-file logs, bounded by `log_limit_bytes`.
//! - everything is labelled with the runtime's owner (the node's name), the
//!   Pod's uid and, for containers, their name and attempt. Nothing else is
//!   recorded outside the engine: `list_sandboxes` finds a previous run's
//!   sandboxes by their labels. Containers of another owner are never
//!   listed, touched or removed, so several peers can share one engine.
//!
//! # Differences from the process runtime
//!
//! - nothing like `PR_SET_PDEATHSIG` reaches containers, yet a Pod must
//!   not outlive its peer: nobody else could fence it, and the cluster
//!   replaces it once the node is lost. So the runtime starts a *guard*
//!   process beside the peer ([`DockerOptions::guard`], [`guard()`]) that
//!   holds the read end of a pipe only the peer writes to; when the peer
//!   is gone, however it ended, the guard reads the end of the pipe and
//!   kills the owner's containers. The agent removes them when the peer
//!   starts again.
//! - network probes connect from the host to the Pod's address on the
//!   bridge, as Kubernetes' do: a port bound to 127.0.0.1 only answers the
//!   Pod's own containers.
//! - stdout and stderr reach the log through pipes of their own: lines of
//!   one stream keep their order, but not against those of the other.
//! - the engine does not tell a death by signal from `exit(128 + n)`: an
//!   exit code from 129 to 192 is reported as signal `code - 128`.
//! - each container runs under the engine's init (`docker-init`) unless
//!   turned off, so that, as under the process runtime, SIGTERM ends a
//!   program that does not handle it: as PID 1 it would ignore it and die
//!   only by SIGKILL when the grace is over. As the init would start even
//!   without the program, the program is looked for in the created
//!   container first, so a missing one is still a failed start.

mod container;
mod engine;
mod exec;
mod guard;
mod logs;
mod pause;
mod sandbox;
mod text;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;

use crate::spec::check_name;
use crate::{
    Capabilities, ContainerId, ContainerSpec, ContainerState, DEFAULT_LOG_LIMIT_BYTES, ExecOutput,
    NetworkCheck, PodRuntime, RuntimeError, SandboxId, SandboxInfo, SandboxSpec,
};
use guard::start_guard;
use sandbox::ensure_pause_image;

pub use guard::guard;

/// The repository of the pause image; its tag is the program's hash.
pub const PAUSE_REPOSITORY: &str = "flotilla-pause";

/// The runtime's owner (the node's name), on every container it makes.
pub const LABEL_OWNER: &str = "io.flotilla.owner";
/// The Pod's uid, on every container.
pub const LABEL_POD_UID: &str = "io.flotilla.pod-uid";
/// `sandbox` (the pause container) or `container`.
pub const LABEL_ROLE: &str = "io.flotilla.role";
/// The Pod's `namespace/name`, for people reading `docker ps`.
const LABEL_POD: &str = "io.flotilla.pod";
/// On the pause container: the hostname and host ports it was made with.
const LABEL_NETWORK: &str = "io.flotilla.network";
/// On a container: the pause container whose namespaces it joined.
const LABEL_SANDBOX: &str = "io.flotilla.sandbox";
const LABEL_CONTAINER: &str = "io.flotilla.container";
const LABEL_ATTEMPT: &str = "io.flotilla.attempt";
const ROLE_SANDBOX: &str = "sandbox";
const ROLE_CONTAINER: &str = "container";

/// Where a container looks for programs when its image says nothing: the
/// engine's default.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Directories of a PATH searched at most for a container's program.
const MAX_PATH_DIRS: usize = 32;
/// How long one engine call may take (bollard's own default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the engine may take to answer at all when the runtime starts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long pulling a missing image may take: the agent gives a whole
/// start five minutes.
const PULL_TIMEOUT: Duration = Duration::from_secs(240);
/// How long a killed container may take to be seen stopped or removed.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// Between two looks at something expected to change soon.
const POLL: Duration = Duration::from_millis(50);
/// The engine learns of an OOM kill from an event that can arrive just
/// after the container's exit (seen on cgroup v1 under load): a container
/// with a memory limit that died of SIGKILL is inspected again, every
/// `POLL`, until this long after it finished, before it is reported as
/// not OOM-killed.
const OOM_SETTLE_MS: u64 = 1_000;

/// How the docker runtime reaches the engine and keeps its Pods.
#[derive(Clone, Debug)]
pub struct DockerOptions {
    /// The node's name. Everything the runtime makes is labelled with it,
    /// and it sees nothing of another owner's.
    pub owner: String,
    /// Where Pods' volumes live (made if missing). They are bind-mounted,
    /// so it must be a path of the engine's own machine.
    pub state_dir: PathBuf,
    /// The engine's Unix socket; `None` for the local default
    /// (`/var/run/docker.sock`).
    pub socket: Option<PathBuf>,
    /// Bytes of each attempt's log kept at most.
    pub log_limit_bytes: u64,
    /// Pull an image the engine does not have; without it, such a
    /// container fails to start at once. Off unless asked for: where no
    /// registry answers, a pull only delays the failure.
    pub pull_images: bool,
    /// Run the engine's init as each container's PID 1 (see the module
    /// documentation).
    pub init: bool,
    /// The program that runs [`guard()`] for this owner; `None` leaves
    /// containers running when the peer dies.
    pub guard: Option<GuardCommand>,
}

/// How to start the guard: a program that calls [`guard()`] with this
/// runtime's owner and socket.
#[derive(Clone, Debug)]
pub struct GuardCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl DockerOptions {
    pub fn new(owner: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        DockerOptions {
            owner: owner.into(),
            state_dir: state_dir.into(),
            socket: None,
            log_limit_bytes: DEFAULT_LOG_LIMIT_BYTES,
            pull_images: false,
            init: true,
            guard: None,
        }
    }
}

/// Runs Pods as Docker containers; see the module documentation.
pub struct DockerRuntime {
    docker: Docker,
    owner: String,
    state_dir: PathBuf,
    log_limit_bytes: u64,
    pull_images: bool,
    init: bool,
    pause_image: String,
    capabilities: Capabilities,
    /// Sandboxes made by this runtime, each with the spec it was made
    /// with; the lock serialises making, starting in and removing it.
    pods: Mutex<HashMap<String, Pod>>,
    /// The guard, holding the write end of its standard input: never
    /// written, closed by the kernel when this process ends.
    _guard: Option<std::process::Child>,
}

type Pod = Arc<tokio::sync::Mutex<Option<SandboxSpec>>>;

fn other(message: impl Into<String>) -> RuntimeError {
    RuntimeError::Other(message.into())
}

fn docker_error(what: &str, e: bollard::errors::Error) -> RuntimeError {
    other(format!("{what}: {e}"))
}

fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn not_found(e: &bollard::errors::Error) -> bool {
    status_of(e) == Some(404)
}

/// Container ids are taken whole: the engine would also resolve a name or
/// a prefix, which could name a container that is not the one meant.
fn is_docker_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn label<'a>(labels: Option<&'a HashMap<String, String>>, key: &str) -> Option<&'a str> {
    labels?.get(key).map(String::as_str)
}

fn attempt_of(labels: Option<&HashMap<String, String>>) -> Option<u32> {
    label(labels, LABEL_ATTEMPT)?.parse().ok()
}

/// Reaches the engine at `socket` (the local default if `None`) and asks
/// what it is.
pub(super) async fn connect(
    socket: Option<&Path>,
) -> Result<(Docker, bollard::models::SystemInfo), RuntimeError> {
    let place = match socket {
        Some(path) => path.display().to_string(),
        None => "the local default socket".to_owned(),
    };
    let no_engine = |e: String| other(format!("no Docker engine answers at {place}: {e}"));
    let docker = match socket {
        Some(path) => Docker::connect_with_unix(
            path.to_str()
                .ok_or_else(|| other(format!("socket path {path:?} is not UTF-8")))?,
            REQUEST_TIMEOUT.as_secs(),
            bollard::API_DEFAULT_VERSION,
        ),
        None => Docker::connect_with_local_defaults(),
    }
    .map_err(|e| no_engine(e.to_string()))?;
    let answer = async {
        // Speak the engine's API version where it is older than bollard's.
        let docker = docker.negotiate_version().await?;
        docker.ping().await?;
        let info = docker.info().await?;
        Ok::<_, bollard::errors::Error>((docker, info))
    };
    let (docker, info) = tokio::time::timeout(CONNECT_TIMEOUT, answer)
        .await
        .map_err(|_| no_engine(format!("nothing within {} s", CONNECT_TIMEOUT.as_secs())))?
        .map_err(|e| no_engine(e.to_string()))?;

    Ok((docker, info))
}

impl DockerRuntime {
    /// Connects to the engine, fails when none answers, finds what it can
    /// enforce, and builds the pause image there if it is missing.
    pub async fn new(options: DockerOptions) -> Result<Self, RuntimeError> {
        check_name("owner", &options.owner)?;
        tokio::fs::create_dir_all(&options.state_dir).await?;
        let (docker, info) = connect(options.socket.as_deref()).await?;

        let arch = info.architecture.clone().unwrap_or_default();
        let pause_image = ensure_pause_image(&docker, &arch).await?;
        let mut limitations = Vec::new();
        if options.guard.is_none() {
            limitations.push(
                "containers outlive a peer that dies: they are removed when it starts again"
                    .to_owned(),
            );
        }
        let memory_limits = info.memory_limit != Some(false);
        if !memory_limits {
            limitations
                .push("the engine cannot limit memory here: memory limits are not enforced".into());
        }
        let cpu_limits = info.cpu_cfs_quota != Some(false);
        if !cpu_limits {
            limitations
                .push("the engine has no CPU quota here: cpu limits are not enforced".into());
        }
        Ok(DockerRuntime {
            docker,
            owner: options.owner,
            state_dir: options.state_dir,
            log_limit_bytes: options.log_limit_bytes.max(2),
            pull_images: options.pull_images,
            init: options.init,
            pause_image,
            capabilities: Capabilities {
                network_isolation: true,
                filesystem_isolation: true,
                memory_limits,
                cpu_limits,
                runs_programs: true,
                limitations,
            },
            pods: Mutex::new(HashMap::new()),
            _guard: options.guard.as_ref().map(start_guard).transpose()?,
        })
    }

    /// The pause image (`flotilla-pause:<hash>`) this runtime's sandboxes run.
    pub fn pause_image(&self) -> &str {
        &self.pause_image
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn pods(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pod>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.state_dir.join(uid)
    }

    /// Forgets `pod` unless another call waits for it: it is taken only
    /// under the map's lock, so nobody can be about to.
    fn release(&self, uid: &str, pod: &Pod) {
        let mut pods = self.pods();
        if Arc::strong_count(pod) <= 2 && pods.get(uid).is_some_and(|p| Arc::ptr_eq(p, pod)) {
            pods.remove(uid);
        }
    }

    fn labels(&self, uid: &str, role: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_OWNER.to_owned(), self.owner.clone()),
            (LABEL_POD_UID.to_owned(), uid.to_owned()),
            (LABEL_ROLE.to_owned(), role.to_owned()),
        ])
    }
}

#[async_trait::async_trait]
impl PodRuntime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
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
        self.state(container).await
    }

    async fn stop_container(
        &self,
        container: &ContainerId,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        self.stop(container, grace).await
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
        self.list().await
    }
}
