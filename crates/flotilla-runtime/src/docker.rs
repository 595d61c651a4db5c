//! The `docker` runtime: a Pod's containers are containers of the local
//! Docker Engine, driven through its API.
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
//!   process beside the peer ([`DockerOptions::guard`], [`guard`]) that
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

mod pause;
mod text;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::exec::StartExecResults;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, ContainerSummaryStateEnum,
    ExecConfig, HostConfig, HostConfigLogConfig, Mount, MountType, PortBinding,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ContainerArchiveInfoOptionsBuilder, CreateContainerOptions,
    CreateImageOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::{StreamExt, TryStreamExt};

use text::{split_reference, unix_ms_of};

use crate::logs::{self, push_capped};
use crate::spec::{self, Hostnames, check_name, start_error, valid_name};
use crate::{
    Capabilities, ContainerId, ContainerInfo, ContainerSpec, ContainerState,
    DEFAULT_LOG_LIMIT_BYTES, ExecOutput, ExitStatus, NetworkCheck, PodRuntime, RuntimeError,
    SandboxId, SandboxInfo, SandboxSpec, VolumeSource, blocking, volumes,
};

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
    /// The program that runs [`guard`] for this owner; `None` leaves
    /// containers running when the peer dies.
    pub guard: Option<GuardCommand>,
}

/// How to start the guard: a program that calls [`guard`] with this
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

/// The engine may still run it (or is about to).
/// Reaches the engine at `socket` (the local default if `None`) and asks
/// what it is.
async fn connect(
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

/// Starts the guard with a pipe as its standard input, in a process group
/// of its own so that a Ctrl-C meant for the peer does not end it first.
fn start_guard(command: &GuardCommand) -> Result<std::process::Child, RuntimeError> {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(&command.program)
        .args(&command.args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| {
            other(format!(
                "cannot start the container guard {}: {e}",
                command.program.display()
            ))
        })
}

/// Attempts at killing a dead peer's containers while the engine fails.
const GUARD_ATTEMPTS: usize = 20;

/// The guard's work: waits until standard input ends, which happens when
/// the peer that started this process is gone, then kills every running
/// container of `owner` created before that moment (a restarted peer's
/// new ones are spared). Returns how many it killed.
pub async fn guard(owner: &str, socket: Option<&Path>) -> Result<usize, RuntimeError> {
    tokio::task::spawn_blocking(|| {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        // Nothing is ever written: this returns at the end of input, or
        // on an error, which means the same.
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
    })
    .await
    .map_err(|e| other(format!("waiting for the peer to end: {e}")))?;
    let peer_gone_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut last_error = None;
    for _ in 0..GUARD_ATTEMPTS {
        match kill_owned(owner, socket, peer_gone_unix_s).await {
            Ok(killed) => return Ok(killed),
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last_error.unwrap_or_else(|| other("no attempt made")))
}

async fn kill_owned(
    owner: &str,
    socket: Option<&Path>,
    created_by_unix_s: i64,
) -> Result<usize, RuntimeError> {
    let (docker, _) = connect(socket).await?;
    let filters = HashMap::from([("label", vec![format!("{LABEL_OWNER}={owner}")])]);
    let options = ListContainersOptionsBuilder::new()
        .filters(&filters)
        .build();
    let running = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| docker_error("cannot list containers", e))?;
    let mut killed = 0;
    for c in running
        .iter()
        .filter(|c| c.created.is_some_and(|t| t <= created_by_unix_s))
    {
        let Some(id) = &c.id else { continue };
        match docker
            .kill_container(id, None::<bollard::query_parameters::KillContainerOptions>)
            .await
        {
            Ok(()) => killed += 1,
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(docker_error(&format!("cannot kill container {id}"), e)),
        }
    }
    Ok(killed)
}

fn summary_running(c: &ContainerSummary) -> bool {
    matches!(
        c.state,
        Some(
            ContainerSummaryStateEnum::RUNNING
                | ContainerSummaryStateEnum::RESTARTING
                | ContainerSummaryStateEnum::PAUSED
        )
    )
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

    fn volume_dir(&self, uid: &str, volume: &str) -> PathBuf {
        self.pod_dir(uid).join("volumes").join(volume)
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

    /// This owner's containers (of any state) with all of `labels`.
    async fn find(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let mut wanted = vec![format!("{LABEL_OWNER}={}", self.owner)];
        wanted.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
        let filters = HashMap::from([("label", wanted)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| docker_error("cannot list containers", e))
    }

    /// The sandbox's pause container, preferring a running one.
    async fn find_pause(&self, uid: &str) -> Result<Option<ContainerSummary>, RuntimeError> {
        let mut found = self
            .find(&[(LABEL_ROLE, ROLE_SANDBOX), (LABEL_POD_UID, uid)])
            .await?;
        found.sort_by_key(|c| !summary_running(c));
        Ok(found.into_iter().find(|c| c.id.is_some()))
    }

    /// A container of this owner's Pods, by id.
    async fn inspect_owned(
        &self,
        id: &ContainerId,
    ) -> Result<ContainerInspectResponse, RuntimeError> {
        if !is_docker_id(&id.0) {
            return Err(RuntimeError::NoContainer(id.clone()));
        }
        let found = match self
            .docker
            .inspect_container(&id.0, None::<InspectContainerOptions>)
            .await
        {
            Ok(found) => found,
            Err(e) if not_found(&e) => return Err(RuntimeError::NoContainer(id.clone())),
            Err(e) => {
                return Err(docker_error(
                    &format!("cannot inspect container {}", id.0),
                    e,
                ));
            }
        };
        let labels = found.config.as_ref().and_then(|c| c.labels.as_ref());
        if label(labels, LABEL_OWNER) == Some(self.owner.as_str())
            && label(labels, LABEL_ROLE) == Some(ROLE_CONTAINER)
        {
            Ok(found)
        } else {
            Err(RuntimeError::NoContainer(id.clone()))
        }
    }

    /// Force-removes a container with its anonymous volumes; gone already
    /// is fine.
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            // Another call is removing it: wait for that.
            Err(e) if status_of(&e) == Some(409) => {
                let deadline = tokio::time::Instant::now() + KILL_WAIT;
                loop {
                    match self
                        .docker
                        .inspect_container(id, None::<InspectContainerOptions>)
                        .await
                    {
                        Err(e) if not_found(&e) => return Ok(()),
                        _ if tokio::time::Instant::now() >= deadline => {
                            return Err(docker_error(&format!("cannot remove container {id}"), e));
                        }
                        _ => tokio::time::sleep(POLL).await,
                    }
                }
            }
            Err(e) => Err(docker_error(&format!("cannot remove container {id}"), e)),
        }
    }

    async fn start_pause(&self, spec: &SandboxSpec, network: &str) -> Result<(), RuntimeError> {
        let mut labels = self.labels(&spec.pod_uid, ROLE_SANDBOX);
        labels.insert(LABEL_NETWORK.into(), network.into());
        labels.insert(
            LABEL_POD.into(),
            format!("{}/{}", spec.namespace, spec.name),
        );
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for (container_port, host_port) in &spec.host_ports {
            let key = format!("{container_port}/tcp");
            exposed.push(key.clone());
            bindings
                .entry(key)
                .or_default()
                .get_or_insert_default()
                .push(PortBinding {
                    host_ip: None,
                    host_port: Some(host_port.to_string()),
                });
        }
        let body = ContainerCreateBody {
            image: Some(self.pause_image.clone()),
            hostname: Some(spec.hostname.clone()),
            labels: Some(labels),
            exposed_ports: Some(exposed),
            // The pause program handles no signal: stopping it is killing it.
            stop_signal: Some("SIGKILL".into()),
            host_config: Some(HostConfig {
                network_mode: Some("bridge".into()),
                // The Pod's containers join its IPC namespace.
                ipc_mode: Some("shareable".into()),
                port_bindings: Some(bindings),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| docker_error("cannot create the sandbox's pause container", e))?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            // Most often a host port already taken; nothing half-made stays.
            let _ = self.remove_container(&created.id).await;
            return Err(docker_error(
                "cannot start the sandbox's pause container",
                e,
            ));
        }
        Ok(())
    }

    /// Makes room for attempt `attempt` of container `name`: refuses while
    /// an earlier one runs, keeps the latest attempt before it (for
    /// `--previous`) and removes every other.
    async fn prune_attempts(
        &self,
        uid: &str,
        name: &str,
        attempt: u32,
    ) -> Result<(), RuntimeError> {
        let found = self
            .find(&[
                (LABEL_ROLE, ROLE_CONTAINER),
                (LABEL_POD_UID, uid),
                (LABEL_CONTAINER, name),
            ])
            .await?;
        if found.iter().any(summary_running) {
            return Err(start_error(name, "a previous attempt is still running"));
        }
        let keep = found
            .iter()
            .filter_map(|c| attempt_of(c.labels.as_ref()))
            .filter(|a| *a < attempt)
            .max();
        for c in &found {
            if let Some(id) = &c.id
                && (keep.is_none() || attempt_of(c.labels.as_ref()) != keep)
            {
                self.remove_container(id).await?;
            }
        }
        Ok(())
    }

    /// Makes sure the engine has `image`, pulling it if allowed.
    async fn ensure_image(&self, image: &str, container: &str) -> Result<(), RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if !not_found(&e) => {
                return Err(start_error(container, format!("image {image}: {e}")));
            }
            Err(_) => {}
        }
        if !self.pull_images {
            return Err(start_error(
                container,
                format!("image {image} is not on this machine and pulling is turned off"),
            ));
        }
        let (name, tag) = split_reference(image);
        let options = CreateImageOptionsBuilder::new()
            .from_image(name)
            .tag(tag)
            .build();
        let pull = self
            .docker
            .create_image(Some(options), None, None)
            .try_for_each(|_| async { Ok(()) });
        match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(start_error(
                container,
                format!("cannot pull image {image}: {e}"),
            )),
            Err(_) => Err(start_error(
                container,
                format!(
                    "pulling image {image} took longer than {} s",
                    PULL_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    /// What the engine is asked to create for attempt `attempt` of `spec`.
    fn container_body(
        &self,
        sandbox: &SandboxSpec,
        pause_id: &str,
        spec: &ContainerSpec,
        attempt: u32,
    ) -> Result<ContainerCreateBody, RuntimeError> {
        let fail = |message: String| start_error(&spec.name, message);
        if spec.image.is_empty() {
            return Err(fail("no image".into()));
        }
        let mut mounts = Vec::new();
        for mount in &spec.mounts {
            let volume = sandbox
                .volumes
                .iter()
                .find(|v| v.name == mount.volume)
                .ok_or_else(|| {
                    fail(format!(
                        "mount names volume {:?} that the Pod does not have",
                        mount.volume
                    ))
                })?;
            if !mount.mount_path.starts_with('/') {
                return Err(fail(format!(
                    "mount path {:?} is not absolute",
                    mount.mount_path
                )));
            }
            let source = match &volume.source {
                VolumeSource::HostPath { path } => path.clone(),
                _ => self.volume_dir(&sandbox.pod_uid, &volume.name),
            };
            let source = source
                .to_str()
                .ok_or_else(|| fail(format!("volume path {source:?} is not UTF-8")))?
                .to_owned();
            mounts.push(Mount {
                target: Some(mount.mount_path.clone()),
                source: Some(source),
                typ: Some(MountType::BIND),
                read_only: Some(mount.read_only),
                ..Default::default()
            });
        }
        let memory = spec
            .memory_limit_bytes
            .map(i64::try_from)
            .transpose()
            .map_err(|_| fail("memory limit is too large".into()))?;
        let nano_cpus = spec
            .cpu_limit_millis
            .map(|m| {
                m.checked_mul(1_000_000)
                    .and_then(|n| i64::try_from(n).ok())
                    .ok_or_else(|| fail("cpu limit is too large".into()))
            })
            .transpose()?;
        let mut env = vec![("HOSTNAME".to_owned(), sandbox.hostname.clone())];
        for (key, value) in &spec.env {
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(fail(format!(
                    "environment variable name {key:?} is not valid"
                )));
            }
            match env.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value.clone(),
                None => env.push((key.clone(), value.clone())),
            }
        }
        // As Kubernetes does: command replaces the image's ENTRYPOINT and
        // args its CMD; a command without args runs without the image's CMD.
        let (entrypoint, cmd) = match (spec.command.is_empty(), spec.args.is_empty()) {
            (false, _) => (Some(spec.command.clone()), Some(spec.args.clone())),
            (true, false) => (None, Some(spec.args.clone())),
            (true, true) => (None, None),
        };
        let mut labels = self.labels(&sandbox.pod_uid, ROLE_CONTAINER);
        labels.insert(LABEL_SANDBOX.into(), pause_id.into());
        labels.insert(LABEL_CONTAINER.into(), spec.name.clone());
        labels.insert(LABEL_ATTEMPT.into(), attempt.to_string());
        // Two files of half the limit each: the engine drops the older one
        // when the newer is full, so the log never holds more.
        let log_config = HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".into(), (self.log_limit_bytes / 2).to_string()),
                ("max-file".into(), "2".into()),
            ])),
        };
        let joined = format!("container:{pause_id}");
        Ok(ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint,
            cmd,
            env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: spec.working_dir.clone().filter(|d| !d.is_empty()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(joined.clone()),
                // The pause container is the Pod's first process, as in
                // Kubernetes: each container has a pid namespace of its own
                // unless the Pod shares one.
                pid_mode: sandbox.share_process_namespace.then(|| joined.clone()),
                ipc_mode: Some(joined),
                mounts: Some(mounts),
                memory,
                // Swap would let a container outgrow its limit unseen.
                memory_swap: memory,
                nano_cpus,
                init: Some(self.init),
                log_config: Some(log_config),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Under an init the engine starts a container whose program is
    /// missing (the init fails to run it later, as an exit): look for the
    /// program in the created container first, so that it is a failed start
    /// as without an init. Only a definite "not there" fails.
    async fn check_program(&self, id: &str, container: &str) -> Result<(), RuntimeError> {
        let Ok(found) = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        else {
            return Ok(());
        };
        let Some(program) = found.path.filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        let config = found.config.unwrap_or_default();
        let candidates: Vec<String> = if program.starts_with('/') {
            vec![program.clone()]
        } else if program.contains('/') {
            let dir = config.working_dir.filter(|d| !d.is_empty());
            vec![format!(
                "{}/{program}",
                dir.as_deref().unwrap_or("").trim_end_matches('/')
            )]
        } else {
            let path = config
                .env
                .unwrap_or_default()
                .into_iter()
                .find_map(|e| e.strip_prefix("PATH=").map(str::to_owned))
                .unwrap_or_else(|| DEFAULT_PATH.to_owned());
            path.split(':')
                .filter(|dir| dir.starts_with('/'))
                .take(MAX_PATH_DIRS)
                .map(|dir| format!("{}/{program}", dir.trim_end_matches('/')))
                .collect()
        };
        for candidate in &candidates {
            let options = ContainerArchiveInfoOptionsBuilder::new()
                .path(candidate)
                .build();
            match self
                .docker
                .get_container_archive_info(id, Some(options))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if not_found(&e) => {}
                Err(_) => return Ok(()),
            }
        }
        Err(start_error(
            container,
            format!(
                "executable file {program:?} not found (looked at {})",
                candidates.join(", ")
            ),
        ))
    }

    /// The container of the attempt before `container`'s.
    async fn previous_attempt(
        &self,
        id: &ContainerId,
        container: &ContainerInspectResponse,
    ) -> Result<ContainerId, RuntimeError> {
        let labels = container.config.as_ref().and_then(|c| c.labels.as_ref());
        let (Some(uid), Some(name), Some(attempt)) = (
            label(labels, LABEL_POD_UID),
            label(labels, LABEL_CONTAINER),
            attempt_of(labels),
        ) else {
            return Err(RuntimeError::NoContainer(id.clone()));
        };
        self.find(&[
            (LABEL_ROLE, ROLE_CONTAINER),
            (LABEL_POD_UID, uid),
            (LABEL_CONTAINER, name),
        ])
        .await?
        .into_iter()
        .filter_map(|c| Some((attempt_of(c.labels.as_ref())?, c.id?)))
        .filter(|(a, _)| *a < attempt)
        .max_by_key(|(a, _)| *a)
        .map(|(_, id)| ContainerId(id))
        .ok_or_else(|| other(format!("container {} has no previous attempt's log", id.0)))
    }

    /// The container's log (stdout and stderr as they came), its newest
    /// `log_limit_bytes` at most.
    async fn logs_of(&self, id: &ContainerId) -> Result<Vec<u8>, RuntimeError> {
        let cap = usize::try_from(self.log_limit_bytes).unwrap_or(usize::MAX);
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
        let read = async {
            let mut stream = self.docker.logs(&id.0, Some(options));
            let mut data = Vec::new();
            while let Some(chunk) = stream.next().await {
                data.extend_from_slice(chunk?.as_ref());
                // Only a log driver ignoring its limit sends more.
                if data.len() > cap.saturating_mul(2) {
                    data.drain(..data.len() - cap);
                }
            }
            Ok::<_, bollard::errors::Error>(data)
        };
        let data = tokio::time::timeout(REQUEST_TIMEOUT, read)
            .await
            .map_err(|_| other(format!("reading the log of {} timed out", id.0)))?
            .map_err(|e| match not_found(&e) {
                true => RuntimeError::NoContainer(id.clone()),
                false => docker_error(&format!("cannot read the log of {}", id.0), e),
            })?;
        Ok(logs::newest(&data, cap).to_vec())
    }

    /// Kills what an exec that timed out still runs. The engine cannot
    /// stop an exec, but its processes are the host's: the peer (root,
    /// beside the engine) kills them, those of the container only.
    async fn kill_exec(&self, container: &str, exec: &str) {
        let Ok(inspect) = self.docker.inspect_exec(exec).await else {
            return;
        };
        let Some(pid) = inspect.pid.and_then(|p| i32::try_from(p).ok()) else {
            return;
        };
        let container = container.to_owned();
        let _ = blocking(move || {
            kill_tree(pid, &container);
            Ok(())
        })
        .await;
    }
}

/// Builds the pause image for the engine's architecture unless it is there.
async fn ensure_pause_image(docker: &Docker, arch: &str) -> Result<String, RuntimeError> {
    let program = pause::program(arch).ok_or_else(|| {
        other(format!(
            "the docker runtime has a pause program for x86_64 and aarch64 only, and the engine runs on {arch:?}"
        ))
    })?;
    let image = format!("{PAUSE_REPOSITORY}:{}", pause::image_tag(&program));
    match docker.inspect_image(&image).await {
        Ok(_) => return Ok(image),
        Err(e) if !not_found(&e) => {
            return Err(docker_error(&format!("cannot inspect image {image}"), e));
        }
        Err(_) => {}
    }
    let context = pause::build_context(&program)?;
    let options = BuildImageOptionsBuilder::new()
        .t(&image)
        .rm(true)
        .forcerm(true)
        .build();
    let build = docker
        .build_image(options, None, Some(bollard::body_full(context.into())))
        .try_for_each(|_| async { Ok(()) });
    tokio::time::timeout(REQUEST_TIMEOUT, build)
        .await
        .map_err(|_| other(format!("building image {image} timed out")))?
        .map_err(|e| docker_error(&format!("cannot build image {image}"), e))?;
    Ok(image)
}

/// What a pause container is made with and cannot change: a sandbox asked
/// for with other values needs a new one.
fn network_label(spec: &SandboxSpec) -> String {
    let mut ports: Vec<String> = spec
        .host_ports
        .iter()
        .map(|(c, h)| format!("{c}:{h}"))
        .collect();
    ports.sort();
    format!("{} {}", spec.hostname, ports.join(","))
}

fn state_of(container: &ContainerInspectResponse) -> ContainerState {
    let state = container.state.clone().unwrap_or_default();
    let started_at_unix_ms = state.started_at.as_deref().map_or(0, unix_ms_of);
    if state.running == Some(true) {
        return ContainerState::Running { started_at_unix_ms };
    }
    let exit_code = state
        .exit_code
        .map_or(-1, |c| i32::try_from(c).unwrap_or(-1));
    ContainerState::Exited(ExitStatus {
        exit_code,
        // 128 + n is how an init and the engine report death by signal n.
        signal: (129..=192).contains(&exit_code).then(|| exit_code - 128),
        oom_killed: state.oom_killed == Some(true),
        started_at_unix_ms,
        // The engine stamps the start once the program runs, which a quick
        // one can outlast by a millisecond or two.
        finished_at_unix_ms: state
            .finished_at
            .as_deref()
            .map_or(0, unix_ms_of)
            .max(started_at_unix_ms),
    })
}

/// Kills `root` and every process descended from it that belongs to
/// `container` (by its cgroup), so a pid reused by now is never hit.
/// Descendants are found before any dies, as orphans move to the
/// container's init.
fn kill_tree(root: i32, container: &str) {
    let in_container = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(container))
    };
    if root <= 1 || !in_container(root) {
        return;
    }
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: the fields
        // after it are the state, then the parent's pid.
        let parent = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse().ok());
        if let Some(parent) = parent {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut doomed = vec![root];
    let mut next = 0;
    while let Some(&pid) = doomed.get(next) {
        doomed.extend(children.get(&pid).into_iter().flatten());
        next += 1;
    }
    for pid in doomed {
        if pid > 1 && in_container(pid) {
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
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
        spec::check_sandbox(spec, Hostnames::Dns)?;
        let uid = spec.pod_uid.clone();
        let pod = self.pods().entry(uid.clone()).or_default().clone();
        let mut made = pod.lock().await;
        let (dir, volumes) = (self.pod_dir(&uid), spec.clone());
        blocking(move || volumes::make(&dir, &volumes)).await?;
        let network = network_label(spec);
        let mut kept = false;
        for pause in self
            .find(&[(LABEL_ROLE, ROLE_SANDBOX), (LABEL_POD_UID, &uid)])
            .await?
        {
            let Some(id) = &pause.id else { continue };
            let same = summary_running(&pause)
                && label(pause.labels.as_ref(), LABEL_NETWORK) == Some(network.as_str());
            if same && !kept {
                kept = true;
            } else {
                self.remove_container(id).await?;
            }
        }
        if !kept {
            self.start_pause(spec, &network).await?;
        }
        *made = Some(spec.clone());
        Ok(SandboxId(uid))
    }

    async fn start_container(
        &self,
        sandbox_id: &SandboxId,
        spec: &ContainerSpec,
        attempt: u32,
    ) -> Result<ContainerId, RuntimeError> {
        check_name("container name", &spec.name)?;
        let uid = &sandbox_id.0;
        let pod = self.pods().get(uid).cloned();
        let made = match &pod {
            Some(pod) => pod.lock().await,
            None if valid_name(uid) && self.find_pause(uid).await?.is_some() => {
                return Err(start_error(
                    &spec.name,
                    format!("sandbox {uid} was made before this runtime started: create it again"),
                ));
            }
            None => return Err(RuntimeError::NoSandbox(sandbox_id.clone())),
        };
        let Some(sandbox) = made.clone() else {
            // Removed while this call waited.
            return Err(RuntimeError::NoSandbox(sandbox_id.clone()));
        };
        let pause = self
            .find_pause(uid)
            .await?
            .filter(summary_running)
            .and_then(|p| p.id)
            .ok_or_else(|| {
                start_error(
                    &spec.name,
                    "the sandbox's pause container is not running: create the sandbox again",
                )
            })?;
        self.prune_attempts(uid, &spec.name, attempt).await?;
        self.ensure_image(&spec.image, &spec.name).await?;
        let body = self.container_body(&sandbox, &pause, spec, attempt)?;
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| start_error(&spec.name, e))?;
        let started = match self.init {
            true => self.check_program(&created.id, &spec.name).await,
            false => Ok(()),
        };
        let started = match started {
            Ok(()) => self
                .docker
                .start_container(&created.id, None)
                .await
                .map_err(|e| start_error(&spec.name, e)),
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            // No program, a bad mount...: nothing half-made stays.
            let _ = self.remove_container(&created.id).await;
            return Err(e);
        }
        Ok(ContainerId(created.id))
    }

    async fn container_state(
        &self,
        container: &ContainerId,
    ) -> Result<ContainerState, RuntimeError> {
        let mut found = self.inspect_owned(container).await?;
        loop {
            let state = state_of(&found);
            let ContainerState::Exited(exit) = &state else {
                return Ok(state);
            };
            let limited = found
                .host_config
                .as_ref()
                .and_then(|h| h.memory)
                .is_some_and(|bytes| bytes > 0);
            let now_unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let settled = now_unix_ms >= exit.finished_at_unix_ms + OOM_SETTLE_MS;
            if exit.oom_killed || exit.signal != Some(9) || !limited || settled {
                return Ok(state);
            }
            tokio::time::sleep(POLL).await;
            found = self.inspect_owned(container).await?;
        }
    }

    async fn stop_container(
        &self,
        container: &ContainerId,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        match self.inspect_owned(container).await {
            Ok(_) => {}
            Err(RuntimeError::NoContainer(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        // The engine counts whole seconds: round up, never cut the grace.
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let options = StopContainerOptionsBuilder::new()
            .t(i32::try_from(secs).unwrap_or(i32::MAX))
            .build();
        // The engine answers once the container is stopped, after the grace.
        let docker = self
            .docker
            .clone()
            .with_timeout(Duration::from_secs(secs) + KILL_WAIT + REQUEST_TIMEOUT);
        match docker.stop_container(&container.0, Some(options)).await {
            Ok(()) => {}
            Err(e) if not_found(&e) => return Ok(()),
            Err(e) => {
                return Err(docker_error(
                    &format!("cannot stop container {}", container.0),
                    e,
                ));
            }
        }
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        loop {
            match self.container_state(container).await {
                Ok(ContainerState::Exited(_)) | Err(RuntimeError::NoContainer(_)) => return Ok(()),
                Err(e) => return Err(e),
                Ok(ContainerState::Running { .. }) if tokio::time::Instant::now() >= deadline => {
                    return Err(other(format!(
                        "container {} still runs {} s after it was killed",
                        container.0,
                        KILL_WAIT.as_secs()
                    )));
                }
                Ok(ContainerState::Running { .. }) => tokio::time::sleep(POLL).await,
            }
        }
    }

    async fn remove_sandbox(&self, sandbox_id: &SandboxId) -> Result<(), RuntimeError> {
        let uid = &sandbox_id.0;
        if !valid_name(uid) {
            // Nothing of this runtime's can have it.
            return Ok(());
        }
        let pod = self.pods().get(uid).cloned();
        let mut made = match &pod {
            Some(pod) => Some(pod.lock().await),
            None => None,
        };
        let found = self.find(&[(LABEL_POD_UID, uid)]).await?;
        // The Pod's containers go before the pause container whose
        // namespaces they use.
        let (pauses, containers): (Vec<_>, Vec<_>) = found
            .iter()
            .partition(|c| label(c.labels.as_ref(), LABEL_ROLE) == Some(ROLE_SANDBOX));
        for c in containers.into_iter().chain(pauses) {
            if let Some(id) = &c.id {
                self.remove_container(id).await?;
            }
        }
        let left = self.find(&[(LABEL_POD_UID, uid)]).await?;
        if !left.is_empty() {
            return Err(other(format!(
                "{} containers of sandbox {uid} are still there after their removal",
                left.len()
            )));
        }
        let dir = self.pod_dir(uid);
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            done => done,
        })
        .await?;
        if let (Some(made), Some(pod)) = (made.as_mut(), &pod) {
            **made = None;
            self.release(uid, pod);
        }
        Ok(())
    }

    async fn exec(
        &self,
        container: &ContainerId,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        if command.is_empty() {
            return Err(other("exec needs a command"));
        }
        let state = self.inspect_owned(container).await?;
        if !matches!(state_of(&state), ContainerState::Running { .. }) {
            return Err(other(format!("container {} is not running", container.0)));
        }
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(command.to_vec()),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(&container.0, config)
            .await
            .map_err(|e| docker_error(&format!("cannot exec in container {}", container.0), e))?
            .id;
        let run = async {
            let mut output = match self.docker.start_exec(&exec, None).await? {
                StartExecResults::Attached { output, .. } => output,
                // Only asked for with `detach`, which this call does not.
                StartExecResults::Detached => return Ok(None),
            };
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            while let Some(chunk) = output.next().await {
                match chunk? {
                    bollard::container::LogOutput::StdErr { message } => {
                        push_capped(&mut stderr, &message)
                    }
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => {
                        push_capped(&mut stdout, &message)
                    }
                    bollard::container::LogOutput::StdIn { .. } => {}
                }
            }
            // The output ends with the command; its exit code lands a
            // moment later.
            loop {
                let inspect = self.docker.inspect_exec(&exec).await?;
                if inspect.running != Some(true) {
                    let exit_code = inspect
                        .exit_code
                        .map_or(-1, |c| i32::try_from(c).unwrap_or(-1));
                    return Ok::<_, bollard::errors::Error>(Some(ExecOutput {
                        exit_code,
                        stdout,
                        stderr,
                    }));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(Some(output))) => Ok(output),
            Ok(Ok(None)) => Err(other(format!(
                "exec in container {} did not attach its output",
                container.0
            ))),
            Ok(Err(e)) => Err(docker_error(
                &format!("exec in container {}", container.0),
                e,
            )),
            Err(_) => {
                self.kill_exec(&container.0, &exec).await;
                Err(other(format!(
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
        let uid = &sandbox_id.0;
        if !valid_name(uid) {
            return Err(RuntimeError::NoSandbox(sandbox_id.clone()));
        }
        let pause = self
            .find_pause(uid)
            .await?
            .ok_or_else(|| RuntimeError::NoSandbox(sandbox_id.clone()))?;
        let ip = pause
            .network_settings
            .and_then(|n| n.networks)
            .into_iter()
            .flat_map(HashMap::into_values)
            .filter_map(|endpoint| endpoint.ip_address?.parse::<IpAddr>().ok())
            .next()
            .filter(|_| pause.state == Some(ContainerSummaryStateEnum::RUNNING))
            .ok_or_else(|| {
                other(format!(
                    "sandbox {uid} has no network address: its pause container is not running"
                ))
            })?;
        let port = match check {
            NetworkCheck::Tcp { port } | NetworkCheck::Http { port, .. } => *port,
        };
        let probe = async {
            let stream = tokio::net::TcpStream::connect((ip, port)).await?;
            match check {
                NetworkCheck::Tcp { .. } => Ok(true),
                NetworkCheck::Http { path, .. } => {
                    let host = match ip {
                        IpAddr::V4(ip) => format!("{ip}:{port}"),
                        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
                    };
                    crate::http_ok(stream, &host, path).await
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
        let found = self.inspect_owned(container).await?;
        let data = if previous {
            let before = self.previous_attempt(container, &found).await?;
            self.logs_of(&before).await?
        } else {
            self.logs_of(container).await?
        };
        Ok(logs::tail_of(data, tail_lines))
    }

    async fn read_logs_from(
        &self,
        container: &ContainerId,
        offset: u64,
    ) -> Result<(Vec<u8>, u64), RuntimeError> {
        self.inspect_owned(container).await?;
        let data = self.logs_of(container).await?;
        Ok(logs::after(&data, offset))
    }

    async fn list_sandboxes(&self) -> Result<Vec<SandboxInfo>, RuntimeError> {
        let mut found = self.find(&[]).await?;
        // Newest attempts first: only the latest of each container is told.
        found.sort_by_key(|c| std::cmp::Reverse(attempt_of(c.labels.as_ref())));
        let mut pods: BTreeMap<String, BTreeMap<String, ContainerInfo>> = BTreeMap::new();
        for c in found {
            let labels = c.labels.as_ref();
            let (Some(id), Some(uid)) = (&c.id, label(labels, LABEL_POD_UID)) else {
                continue;
            };
            let containers = pods.entry(uid.to_owned()).or_default();
            let (Some(ROLE_CONTAINER), Some(name), Some(attempt)) = (
                label(labels, LABEL_ROLE),
                label(labels, LABEL_CONTAINER),
                attempt_of(labels),
            ) else {
                continue;
            };
            if containers.contains_key(name) {
                continue;
            }
            let id = ContainerId(id.clone());
            let state = match self.inspect_owned(&id).await {
                Ok(found) => state_of(&found),
                Err(RuntimeError::NoContainer(_)) => continue,
                Err(e) => return Err(e),
            };
            containers.insert(
                name.to_owned(),
                ContainerInfo {
                    id,
                    name: name.to_owned(),
                    attempt,
                    state,
                },
            );
        }
        Ok(pods
            .into_iter()
            .map(|(uid, containers)| SandboxInfo {
                id: SandboxId(uid.clone()),
                pod_uid: uid,
                containers: containers.into_values().collect(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_above_128_read_as_signals() {
        let exited = |code: i64, oom: bool| ContainerInspectResponse {
            state: Some(bollard::models::ContainerState {
                running: Some(false),
                exit_code: Some(code),
                oom_killed: Some(oom),
                started_at: Some("1970-01-01T00:00:01Z".into()),
                finished_at: Some("1970-01-01T00:00:02Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let status = |c: &ContainerInspectResponse| match state_of(c) {
            ContainerState::Exited(e) => {
                (e.exit_code, e.signal, e.oom_killed, e.finished_at_unix_ms)
            }
            running => panic!("{running:?}"),
        };
        assert_eq!(status(&exited(0, false)), (0, None, false, 2000));
        assert_eq!(status(&exited(3, false)), (3, None, false, 2000));
        assert_eq!(status(&exited(143, false)), (143, Some(15), false, 2000));
        assert_eq!(status(&exited(137, true)), (137, Some(9), true, 2000));
    }
}
