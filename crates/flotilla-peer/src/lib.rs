//! The Flotilla peer daemon: opens the data directory, starts Raft over
//! RocksDB and tonic, serves the peer and client APIs on one address, joins
//! or bootstraps the cluster, and shuts down cleanly.

mod api;
mod changes;
pub mod clock;
pub mod config;
mod leader;
mod node;
mod nodes;

use std::future::Future;
use std::sync::Arc;

use flotilla_proto::api::cluster_server::ClusterServer;
use flotilla_agent::{Agent, AgentConfig};
use flotilla_proto::api::objects_server::ObjectsServer;
use flotilla_proto::node::nodes_server::NodesServer;
use flotilla_runtime::PodRuntime;
use flotilla_proto::raft::raft_transport_server::RaftTransportServer;
use flotilla_raft::network::{Channels, MAX_PEER_MESSAGE_BYTES, NetworkFactory};
use flotilla_raft::backend::Cf;
use flotilla_raft::{Backend, IoMode, LogStore, Raft, RocksBackend, StateMachine};
use futures::StreamExt;
use tokio::sync::watch;

use crate::clock::{Clock, NeverBackwards, SystemClock};
use crate::config::PeerConfig;
use flotilla_raft::identity::{Identity, IdentityError, IdentityFile};
use flotilla_raft::membership::ClusterMembership;
use flotilla_raft::proposer::{LeaderLink, Proposer};
use flotilla_raft::transport::TransportService;

/// Largest request a client may send. Objects are capped at 1 MiB; the
/// rest is headroom for the envelope. Larger requests are refused by the
/// transport with a clear error and never reach the store.
pub const MAX_CLIENT_REQUEST_BYTES: usize = flotilla_store::MAX_OBJECT_BYTES + 64 * 1024;
/// Largest reply to a client (a list of many objects).
const MAX_CLIENT_REPLY_BYTES: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("data directory {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
    #[error("listen: cannot bind {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("raft: {0}")]
    Raft(String),
    #[error("runtime: {0}")]
    Runtime(String),
    #[error("server: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// The peer's randomness, which the simulator seeds (see
/// [`flotilla_raft::entropy`]), as the control plane takes it.
struct Random;

impl flotilla_control::Entropy for Random {
    fn fill(&self, dest: &mut [u8]) {
        flotilla_raft::entropy::fill(dest);
    }
}

fn raft_config(config: &PeerConfig) -> Result<openraft::Config, PeerError> {
    let t = &config.timing;
    openraft::Config {
        cluster_name: config.cluster.clone(),
        heartbeat_interval: t.heartbeat_ms,
        election_timeout_min: t.election_timeout_min_ms,
        election_timeout_max: t.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.raft.snapshot_after_logs),
        max_in_snapshot_log_to_keep: config.raft.keep_logs_after_snapshot,
        snapshot_max_chunk_size: config.raft.snapshot_chunk_bytes as u64,
        // Entries per append RPC: bounds message size while letting a
        // lagging follower catch up quickly.
        max_payload_entries: 512,
        // A peer that was cut off, restarted or left behind asks first
        // whether it could win, instead of raising the term and unseating
        // a healthy leader the moment it is back. Over 20 simulated seeds
        // it cut the healed network faults followed by a new election from
        // 47 of 74 to 11 (docs/SIMULATION.md).
        enable_pre_vote: Some(true),
        ..Default::default()
    }
    .validate()
    .map_err(|e| PeerError::Raft(e.to_string()))
}

async fn open_runtime(config: &PeerConfig, clock: Arc<dyn Clock>) -> Result<Arc<dyn PodRuntime>, PeerError> {
    match config.node.runtime.as_str() {
        "fake" => Ok(Arc::new(flotilla_runtime::fake::FakeRuntime::new(Arc::new(move || clock.now_unix_ms())))),
        "docker" => {
            // Labelled with the node's name, so that peers sharing one
            // engine never adopt or remove each other's containers.
            let mut options = flotilla_runtime::docker::DockerOptions::new(config.node_name(), config.data_dir.join("docker"));
            // Containers must die with the peer, as process-runtime Pods do:
            // this same binary, as `flotilla docker-guard`, kills them.
            let program = std::env::current_exe().map_err(|e| PeerError::Runtime(format!("cannot find this program: {e}")))?;
            options.guard = Some(flotilla_runtime::docker::GuardCommand {
                program,
                args: vec!["docker-guard".into(), "--owner".into(), config.node_name()],
            });
            let runtime = flotilla_runtime::docker::DockerRuntime::new(options)
                .await
                .map_err(|e| PeerError::Runtime(e.to_string()))?;
            Ok(Arc::new(runtime))
        }
        _ => {
            let runtime = flotilla_runtime::process::ProcessRuntime::new(
                config.data_dir.join("pods"),
                flotilla_runtime::process::ProcessOptions::default(),
            )
            .map_err(|e| PeerError::Runtime(e.to_string()))?;
            Ok(Arc::new(runtime))
        }
    }
}

/// The docker runtime's guard (`flotilla docker-guard`): once the peer that
/// started it is gone, kills the containers of node `owner`.
pub async fn docker_guard(owner: &str) -> Result<usize, PeerError> {
    flotilla_runtime::docker::guard(owner, None).await.map_err(|e| PeerError::Runtime(e.to_string()))
}

/// Where `FaultsConfig::clock` reads the clock's offset, in the data
/// directory.
pub const CLOCK_OFFSET_FILE: &str = "clock-offset-ms";

/// SIGUSR1 cuts the peer off from the others, SIGUSR2 reconnects it (see
/// `FaultsConfig::signals`).
async fn isolate_on_signals(channels: Channels) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut cut), Ok(mut heal)) = (signal(SignalKind::user_defined1()), signal(SignalKind::user_defined2())) else {
        tracing::error!("cannot listen for fault-injection signals");
        return;
    };
    loop {
        tokio::select! {
            Some(()) = cut.recv() => {
                tracing::warn!("fault injection: cut off from every other peer");
                channels.set_isolated(true);
            }
            Some(()) = heal.recv() => {
                tracing::warn!("fault injection: reconnected to the other peers");
                channels.set_isolated(false);
            }
            else => return,
        }
    }
}

/// What a peer runs on, where the simulator puts its own: storage, how
/// storage waits for the disk, the network to the other peers, the clock
/// and the Pod runtime.
pub struct Seams {
    pub backend: Arc<dyn Backend>,
    pub io: IoMode,
    pub channels: Channels,
    pub clock: Arc<dyn Clock>,
    pub runtime: Arc<dyn PodRuntime>,
}

/// Runs a peer until `shutdown` resolves, then stops it cleanly: the
/// servers stop accepting, Raft stops, and the storage is synced.
pub async fn run(config: PeerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), PeerError> {
    let data_dir = config.data_dir.clone();
    let dir_error = |source| PeerError::DataDir { dir: data_dir.display().to_string(), source };
    std::fs::create_dir_all(&data_dir).map_err(dir_error)?;
    let backend: Arc<dyn Backend> = Arc::new(RocksBackend::open(&data_dir.join("db")).map_err(dir_error)?);
    // A data directory of another cluster or peer is refused before the
    // runtime (the docker one builds an image) or the port is touched.
    open_identity(&config, backend.as_ref())?;
    let system_clock = Arc::new(SystemClock::default());
    if config.faults.clock {
        tokio::spawn(system_clock.clone().follow_offset_file(data_dir.join(CLOCK_OFFSET_FILE)));
    }
    let clock: Arc<dyn Clock> = system_clock;
    let runtime = open_runtime(&config, clock.clone()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| PeerError::Bind { addr: config.listen.to_string(), source })?;
    // Small Raft and client messages must not wait for Nagle's algorithm:
    // with delayed ACKs that adds ~40 ms to every round trip. The builder's
    // own nodelay setting does not reach sockets from a custom listener.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|socket| {
        if let Ok(s) = &socket {
            let _ = s.set_nodelay(true);
        }
        socket
    });
    let seams = Seams { backend, io: IoMode::Threads, channels: Channels::default(), clock, runtime };
    run_with(config, seams, incoming, shutdown).await
}

/// The data directory's identity, created on a first start. A directory
/// of another cluster or peer is refused, and so is one holding Raft state
/// but no identity: it belongs to a peer that never finished joining, or
/// to another program.
fn open_identity(config: &PeerConfig, backend: &dyn Backend) -> Result<(IdentityFile, Identity), PeerError> {
    let dir_error = |source| PeerError::DataDir { dir: config.data_dir.display().to_string(), source };
    let mut holds_state = false;
    for cf in [Cf::Log, Cf::Meta, Cf::Applied] {
        holds_state |= backend.last(cf).map_err(dir_error)?.is_some();
    }
    let file = IdentityFile::new(&config.data_dir);
    let record = file.load_or_create(&config.cluster, config.id, holds_state)?;
    Ok((file, record))
}

/// Runs a peer on the given seams, serving the connections `incoming`
/// yields, until `shutdown` resolves.
pub async fn run_with<I, IO, IE>(
    config: PeerConfig,
    seams: Seams,
    incoming: I,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), PeerError>
where
    I: futures::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Seams { backend, io, channels, clock, runtime } = seams;
    let data_dir = config.data_dir.clone();
    let dir_error = |source| PeerError::DataDir { dir: data_dir.display().to_string(), source };
    std::fs::create_dir_all(&data_dir).map_err(dir_error)?;
    let (identity_file, record) = open_identity(&config, backend.as_ref())?;
    let log_store = LogStore::new(backend.clone(), io.clone());
    let state_machine = StateMachine::open(
        backend.clone(),
        Some(data_dir.join("snapshot.bin")),
        flotilla_store::DEFAULT_HISTORY_LIMIT,
        // A binding planned on stale state must not oversubscribe a node:
        // every peer re-checks it as it applies it.
        Some(Arc::new(flotilla_scheduler::BindingAdmission)),
        &io,
    )
    .map_err(dir_error)?;
    let store = state_machine.handle();
    let membership = Arc::new(ClusterMembership::new(config.membership(), identity_file, record, channels.clone()));
    let network = NetworkFactory {
        identity: membership.identity.clone(),
        channels: channels.clone(),
        snapshot_chunk_bytes: config.raft.snapshot_chunk_bytes,
        // A follower that has not answered for an election timeout is as
        // good as gone; sooner, it may only be slow.
        min_append_answer: std::time::Duration::from_millis(config.timing.election_timeout_max_ms),
    };
    let raft = Raft::new(config.id, Arc::new(raft_config(&config)?), network, log_store, state_machine)
        .await
        .map_err(|e| PeerError::Raft(e.to_string()))?;
    let link = LeaderLink { raft: raft.clone(), channels: channels.clone(), identity: membership.identity.clone() };
    let proposer = Proposer::start(raft.clone(), channels.clone(), membership.identity.clone(), {
        let clock = clock.clone();
        Arc::new(move || clock.now_unix_ms())
    });
    let capabilities = runtime.capabilities();
    for limitation in &capabilities.limitations {
        tracing::warn!("{} runtime: {limitation}", runtime.name());
    }
    let agent_config = AgentConfig {
        backoff_base_ms: config.node.restart_backoff_base_ms,
        backoff_max_ms: config.node.restart_backoff_max_ms,
        // Statuses must reach the leader quickly: a Pod's readiness gates
        // rollouts and its phase drives every controller.
        sync_interval_ms: 200,
        ..AgentConfig::new(config.node_name())
    };
    // Pod workers schedule on this clock: it must never run backwards.
    let now = NeverBackwards::new(clock.clone());
    let (agent, reports) = Agent::start(agent_config, runtime, Arc::new(move || now.now_unix_ms()));
    let agent = Arc::new(agent);
    let (closing_tx, closing) = watch::channel(false);
    let liveness = Arc::new(leader::Liveness::new(
        config.id,
        raft.clone(),
        std::time::Duration::from_millis(config.timing.election_timeout_min_ms),
    ));
    let side = Arc::new(node::NodeSide {
        config: config.clone(),
        store: store.clone(),
        proposer: proposer.clone(),
        link: link.clone(),
        channels: channels.clone(),
        membership: membership.clone(),
        liveness: liveness.clone(),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(membership.clone().bootstrap_or_join(raft.clone(), stop_rx.clone()));
    tokio::spawn(membership.clone().reconcile_voters(raft.clone(), stop_rx.clone()));
    let rounds = leader::Leader {
        store: store.clone(),
        link: link.clone(),
        liveness: liveness.clone(),
        timing: config.timing.clone(),
        clock: clock.clone(),
    };
    tokio::spawn(leader::run(rounds, stop_rx.clone()));
    tokio::spawn(node::write_reports(side.clone(), reports, clock.clone()));
    {
        let (side, agent, stop_rx, clock) = (side.clone(), agent.clone(), stop_rx.clone(), clock.clone());
        tokio::spawn(async move {
            // No Pod runs until a leader with a lease answers and this
            // replica has caught up (see `node::heartbeat_loop`).
            agent.fence().await;
            // The Node must exist before Pods can be bound to it; retry
            // until a leader accepts it.
            while let Err(e) = node::register(&side, &capabilities, clock.as_ref()).await {
                tracing::warn!("{e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            tokio::spawn(node::heartbeat_loop(side.clone(), agent.clone(), stop_rx.clone()));
            node::feed_agent(side, agent, stop_rx).await;
        });
    }

    if config.faults.signals {
        tokio::spawn(isolate_on_signals(channels.clone()));
    }
    tracing::info!(id = config.id, listen = %config.listen, cluster = %config.cluster, data_dir = %data_dir.display(), "peer started");
    let shutdown = async move {
        shutdown.await;
        let _ = closing_tx.send(true);
    };
    let objects = api::ObjectsService {
        store: store.clone(),
        proposer: proposer.clone(),
        link: link.clone(),
        clock: clock.clone(),
        closing: closing.clone(),
    };
    let cluster = api::ClusterService {
        id: config.id,
        raft: raft.clone(),
        store: store.clone(),
        link: link.clone(),
        channels: channels.clone(),
        membership: membership.clone(),
        max_voters: config.max_voters,
        silence_limit: std::time::Duration::from_millis(config.timing.election_timeout_max_ms * 2),
    };
    let nodes = nodes::NodesService {
        id: config.id,
        node_name: config.node_name(),
        advertised_addr: config.advertised_addr(),
        store,
        liveness,
        membership: membership.clone(),
        channels,
        agent: agent.clone(),
        closing: closing.clone(),
    };
    let transport = TransportService::new(raft.clone(), link, proposer, membership, closing);
    let served = tonic::transport::Server::builder()
        .add_service(
            RaftTransportServer::new(transport)
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
        )
        .add_service(
            ObjectsServer::new(objects)
                .max_decoding_message_size(MAX_CLIENT_REQUEST_BYTES)
                .max_encoding_message_size(MAX_CLIENT_REPLY_BYTES),
        )
        .add_service(ClusterServer::new(cluster))
        .add_service(NodesServer::new(nodes))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    // Pods stop with their peer, at once: once it is gone nobody could
    // fence them, and the leader will replace them.
    agent.fence().await;
    if let Err(e) = raft.shutdown().await {
        tracing::warn!("raft did not stop cleanly: {e}");
    }
    backend.sync().map_err(dir_error)?;
    tracing::info!("stopped");
    served.map_err(PeerError::from)
}

