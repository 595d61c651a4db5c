//! The seam between the node agent and whatever runs containers.
//!
//! A runtime knows sandboxes (what a Pod's containers share: network
//! namespace, hostname, volumes) and containers (one process tree each). It
//! knows nothing of restart policies, probes' thresholds or Pod phases: the
//! agent owns those, so every runtime (process, docker, fake) gets the same
//! Pod semantics.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub mod docker;
pub mod fake;
mod logs;
pub mod process;
mod spec;
mod volumes;

/// Bytes a container's log keeps at most; older output is dropped in halves
/// so a chatty container never fills the disk.
pub const DEFAULT_LOG_LIMIT_BYTES: u64 = 10 << 20;

/// Everything a Pod's containers share.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxSpec {
    /// The Pod's uid: sandboxes are found again by it after a restart.
    pub pod_uid: String,
    pub namespace: String,
    pub name: String,
    /// The Pod's hostname (its name unless `spec.hostname` says otherwise).
    pub hostname: String,
    pub volumes: Vec<VolumeSpec>,
    /// TCP ports the Pod's containers listen on that the host should reach
    /// (`hostPort`): container port to host port.
    pub host_ports: Vec<(u16, u16)>,
    /// `shareProcessNamespace`: the Pod's containers see each other's
    /// processes; otherwise each container has a pid namespace of its own.
    pub share_process_namespace: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VolumeSpec {
    pub name: String,
    pub source: VolumeSource,
}

#[derive(Clone, Debug, PartialEq)]
pub enum VolumeSource {
    /// A directory that lives as long as the sandbox.
    EmptyDir,
    /// A path of the host, used as it is.
    HostPath { path: PathBuf },
    /// Files written once when the sandbox is made: file name to contents.
    Files { files: BTreeMap<String, String> },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    /// Recorded by the process runtime (commands come from the host);
    /// run by the docker runtime (from images the engine has; pulled only
    /// where `DockerOptions::pull_images` says so).
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub mounts: Vec<MountSpec>,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_limit_millis: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MountSpec {
    /// Names a volume of the sandbox.
    pub volume: String,
    pub mount_path: String,
    pub read_only: bool,
}

/// Opaque handles, stable across a peer restart where the runtime can
/// adopt what it finds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxId(pub String);

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(pub String);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Running { started_at_unix_ms: u64 },
    Exited(ExitStatus),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    pub exit_code: i32,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// The kernel's out-of-memory killer ended it.
    pub oom_killed: bool,
    pub started_at_unix_ms: u64,
    pub finished_at_unix_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// What a probe checks from outside the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkCheck {
    Tcp { port: u16 },
    Http { port: u16, path: String },
}

/// What this runtime can enforce on this machine, found once at start and
/// shown in the Node's status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub network_isolation: bool,
    pub filesystem_isolation: bool,
    pub memory_limits: bool,
    pub cpu_limits: bool,
    /// Containers run programs: their output, their exits, the files they
    /// write and the ports they listen on are the programs' own. False
    /// for the fake, whose containers follow a script.
    pub runs_programs: bool,
    /// One sentence per thing it cannot do, and why.
    pub limitations: Vec<String>,
}

/// A sandbox found on the machine, as `list_sandboxes` reports it after a
/// peer restart.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxInfo {
    pub id: SandboxId,
    pub pod_uid: String,
    pub containers: Vec<ContainerInfo>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ContainerInfo {
    pub id: ContainerId,
    pub name: String,
    pub attempt: u32,
    pub state: ContainerState,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("sandbox {0:?} not found")]
    NoSandbox(SandboxId),
    #[error("container {0:?} not found")]
    NoContainer(ContainerId),
    /// The container could not start (no such program, bad working
    /// directory, ...): the agent reports it and retries with back-off.
    #[error("cannot start container {container}: {message}")]
    Start { container: String, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Runs blocking file-system work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

/// Bytes of an HTTP probe's answer read at most while looking for its
/// status line.
const MAX_HTTP_HEAD_BYTES: usize = 1024;

/// Sends `GET path` to `host` (`addr:port`) over `stream`, as an httpGet
/// probe does, and tells whether the status is 200 to 399.
pub(crate) async fn http_ok(
    mut stream: tokio::net::TcpStream,
    host: &str,
    path: &str,
) -> std::io::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = if path.is_empty() { "/" } else { path };
    // A path that could split the request line is no probe at all.
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Ok(false);
    }
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: flotilla-probe\r\nAccept: */*\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < MAX_HTTP_HEAD_BYTES {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let status = match (words.next(), words.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") => code.parse::<u16>().ok(),
        _ => None,
    };
    Ok(status.is_some_and(|s| (200..=399).contains(&s)))
}

/// Runs sandboxes and containers. Every method is safe to call again after
/// a failure; `stop_container` and `remove_sandbox` on something already
/// gone succeed.
#[async_trait::async_trait]
pub trait PodRuntime: Send + Sync + 'static {
    /// `process`, `docker` or `fake`.
    fn name(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    async fn create_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxId, RuntimeError>;

    /// Starts one container in the sandbox. `attempt` counts restarts of
    /// this container from 0; a runtime keeps at least the previous
    /// attempt's log for `--previous`.
    async fn start_container(
        &self,
        sandbox: &SandboxId,
        spec: &ContainerSpec,
        attempt: u32,
    ) -> Result<ContainerId, RuntimeError>;

    async fn container_state(
        &self,
        container: &ContainerId,
    ) -> Result<ContainerState, RuntimeError>;

    /// SIGTERM, then SIGKILL once `grace` has passed; returns when the
    /// container's processes are gone.
    async fn stop_container(
        &self,
        container: &ContainerId,
        grace: Duration,
    ) -> Result<(), RuntimeError>;

    /// Stops whatever still runs in the sandbox and removes it with its
    /// emptyDir volumes.
    async fn remove_sandbox(&self, sandbox: &SandboxId) -> Result<(), RuntimeError>;

    /// Runs a command inside a running container, as `exec` and exec
    /// probes do, killing it after `timeout`.
    async fn exec(
        &self,
        container: &ContainerId,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError>;

    /// Checks a port of the sandbox from inside its network, as tcpSocket
    /// and httpGet probes do: true when it answers (HTTP 200 to 399).
    async fn check_network(
        &self,
        sandbox: &SandboxId,
        check: &NetworkCheck,
        timeout: Duration,
    ) -> Result<bool, RuntimeError>;

    /// The container's output so far (stdout and stderr interleaved), the
    /// last `tail_lines` lines if given; with `previous`, the attempt
    /// before this container's.
    async fn read_logs(
        &self,
        container: &ContainerId,
        previous: bool,
        tail_lines: Option<usize>,
    ) -> Result<Vec<u8>, RuntimeError>;

    /// Output appended after `offset` bytes (for `logs -f`), and the new
    /// offset.
    async fn read_logs_from(
        &self,
        container: &ContainerId,
        offset: u64,
    ) -> Result<(Vec<u8>, u64), RuntimeError>;

    /// Sandboxes left from before a peer restart.
    async fn list_sandboxes(&self) -> Result<Vec<SandboxInfo>, RuntimeError>;
}
