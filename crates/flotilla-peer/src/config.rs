//! The peer's TOML configuration, checked field by field so that a mistake is
//! reported by name before the peer touches its data directory.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Raft needs an odd number of voters to tolerate failures efficiently, and
/// more than five only slows every commit down.
const ALLOWED_MAX_VOTERS: [u32; 3] = [1, 3, 5];

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// This peer's id, unique in the cluster and never reused.
    pub id: u64,
    /// The cluster's name. A data directory remembers it, so a directory
    /// from another cluster is refused at start.
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// Address the gRPC server binds, serving Raft and the client API.
    pub listen: SocketAddr,
    /// Address other peers use to reach this one, if not the `[[peers]]`
    /// entry for this id nor `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Voters the cluster keeps at most; further peers are learners.
    #[serde(default = "default_max_voters")]
    pub max_voters: u32,
    /// The initial cluster. A peer listed here bootstraps with the others;
    /// a peer not listed joins the running cluster through them.
    pub peers: Vec<PeerEntry>,
    #[serde(default)]
    pub timing: Timing,
    #[serde(default)]
    pub raft: RaftTuning,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub faults: FaultsConfig,
}

/// Fault injection for tests that run every peer on one machine, where the
/// network between peers cannot be cut from outside.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FaultsConfig {
    /// SIGUSR1 cuts this peer off from every other peer (both ways: Raft,
    /// heartbeats, forwarded requests), SIGUSR2 reconnects it. Clients can
    /// still reach it. Off by default, so a stray signal cannot partition a
    /// production peer.
    pub signals: bool,
    /// The peer's clock runs ahead (or behind, if negative) by the number of
    /// milliseconds in `<data_dir>/clock-offset-ms`, re-read as it changes.
    /// Peers that share one host's clock get different times this way.
    pub clock: bool,
}

/// The machine this peer runs Pods on.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// The Node's name; `peer-<id>` when empty.
    pub name: String,
    /// `process` (host processes, the default), `docker` (containers of
    /// the local Docker engine, from images it already has), or `fake` (no
    /// processes: for benchmarks and simulation).
    pub runtime: String,
    /// Labels the Node registers with, besides `kubernetes.io/hostname`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Allocatable CPU in millicores; 0 means what the machine has.
    pub cpu_millis: u64,
    /// Allocatable memory in bytes; 0 means what the machine has.
    pub memory_bytes: u64,
    /// Pods the Node takes at most, as kubelet's `maxPods`.
    pub max_pods: u64,
    /// A failed container restarts after this back-off, doubled on every
    /// further failure up to `restart_backoff_max_ms` (kubelet: 10 s, 300 s).
    pub restart_backoff_base_ms: u64,
    pub restart_backoff_max_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            runtime: "process".into(),
            labels: Default::default(),
            cpu_millis: 0,
            memory_bytes: 0,
            max_pods: 110,
            restart_backoff_base_ms: 10_000,
            restart_backoff_max_ms: 300_000,
        }
    }
}

/// Runtimes a peer can drive.
const RUNTIMES: [&str; 3] = ["process", "docker", "fake"];
/// What the fence window must leave the leader before it declares a node
/// lost: time for the fenced peer to kill its Pods, plus slack for the two
/// clocks running at slightly different rates and for a heartbeat in flight.
pub const FENCE_MARGIN_MS: u64 = 500;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    pub id: u64,
    pub addr: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// How often the leader sends heartbeats to followers.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in this range
    /// starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A voter the leader has not heard from for this long is replaced by a
    /// caught-up learner, where one exists.
    pub replace_voter_after_ms: u64,
    /// How often a peer tells the leader that its node is alive.
    pub node_heartbeat_ms: u64,
    /// A node silent this long is marked NotReady (no new Pods go there).
    pub not_ready_after_ms: u64,
    /// A peer without an answer from a leader holding a valid lease for
    /// this long stops all its Pods (self-fencing).
    pub fence_after_ms: u64,
    /// A node silent this long is declared lost and its Pods are replaced
    /// elsewhere. Must exceed `fence_after_ms` by `FENCE_MARGIN_MS`, so a
    /// cut-off node has stopped its Pods before their replacements start.
    pub lost_after_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        // A follower notices a dead leader after an election timeout and may
        // vote only once the old leader's lease (the maximum timeout) has
        // run out, so failover takes up to about twice the maximum: these
        // keep it under a second while leaving 4 to 8 heartbeats of slack.
        //
        // A peer must not fence during an ordinary leader failover (up to
        // twice the maximum election timeout), and Pods of a dead node come
        // back after `lost_after_ms`: 2 s keeps healing under 3 s.
        Self {
            heartbeat_ms: 50,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 400,
            replace_voter_after_ms: 30_000,
            node_heartbeat_ms: 100,
            not_ready_after_ms: 600,
            fence_after_ms: 1_200,
            lost_after_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTuning {
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_after_logs: u64,
    /// Entries kept behind a snapshot so that briefly lagging peers catch up
    /// from the log rather than a full snapshot.
    pub keep_logs_after_snapshot: u64,
    /// Bytes per snapshot chunk on the wire.
    pub snapshot_chunk_bytes: usize,
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self { snapshot_after_logs: 20_000, keep_logs_after_snapshot: 5_000, snapshot_chunk_bytes: 1 << 20 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Emit JSON lines instead of human-readable logs.
    pub json: bool,
}

fn default_cluster() -> String {
    "flotilla".into()
}

fn default_max_voters() -> u32 {
    3
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {field}: {reason}")]
    Invalid { path: String, field: &'static str, reason: String },
}

impl PeerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        Self::parse(&text, &shown)
    }

    /// Parses and validates; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: PeerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: describe_toml_error(text, &e),
        })?;
        config.validate().map_err(|(field, reason)| ConfigError::Invalid { path: origin.to_string(), field, reason })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.id == 0 {
            return Err(("id", "must be at least 1".into()));
        }
        if self.cluster.is_empty() || self.cluster.len() > 63 || !self.cluster.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(("cluster", format!("{:?} must be 1 to 63 letters, digits or '-'", self.cluster)));
        }
        if !ALLOWED_MAX_VOTERS.contains(&self.max_voters) {
            return Err(("max_voters", format!("{} is not one of 1, 3 or 5", self.max_voters)));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(("data_dir", "required".into()));
        }
        if self.peers.is_empty() {
            return Err(("peers", "list at least one peer to bootstrap with or join through".into()));
        }
        let mut ids = BTreeSet::new();
        for p in &self.peers {
            if p.id == 0 {
                return Err(("peers.id", "must be at least 1".into()));
            }
            if !ids.insert(p.id) {
                return Err(("peers.id", format!("{} appears twice", p.id)));
            }
            if p.addr.parse::<SocketAddr>().is_err() && !p.addr.contains(':') {
                return Err(("peers.addr", format!("{:?} is not HOST:PORT", p.addr)));
            }
        }
        let t = &self.timing;
        if t.heartbeat_ms == 0 {
            return Err(("timing.heartbeat_ms", "must be at least 1".into()));
        }
        if t.election_timeout_min_ms <= t.heartbeat_ms.saturating_mul(2) {
            return Err((
                "timing.election_timeout_min_ms",
                format!("{} must exceed twice timing.heartbeat_ms ({})", t.election_timeout_min_ms, t.heartbeat_ms),
            ));
        }
        if t.election_timeout_max_ms <= t.election_timeout_min_ms {
            return Err((
                "timing.election_timeout_max_ms",
                format!("{} must exceed timing.election_timeout_min_ms ({})", t.election_timeout_max_ms, t.election_timeout_min_ms),
            ));
        }
        if t.replace_voter_after_ms < t.election_timeout_max_ms.saturating_mul(4) {
            return Err((
                "timing.replace_voter_after_ms",
                format!("{} must be at least four election timeouts ({})", t.replace_voter_after_ms, t.election_timeout_max_ms.saturating_mul(4)),
            ));
        }
        if t.node_heartbeat_ms == 0 {
            return Err(("timing.node_heartbeat_ms", "must be at least 1".into()));
        }
        if t.not_ready_after_ms < t.node_heartbeat_ms.saturating_mul(2) {
            return Err((
                "timing.not_ready_after_ms",
                format!("{} must be at least two node heartbeats ({})", t.not_ready_after_ms, t.node_heartbeat_ms.saturating_mul(2)),
            ));
        }
        let failover_ms = t.election_timeout_max_ms.saturating_mul(2).saturating_add(t.node_heartbeat_ms);
        if t.fence_after_ms < failover_ms {
            return Err((
                "timing.fence_after_ms",
                format!("{} must outlast a leader failover (twice timing.election_timeout_max_ms plus a node heartbeat: {failover_ms}), or every failover stops all Pods", t.fence_after_ms),
            ));
        }
        if t.lost_after_ms < t.fence_after_ms.saturating_add(FENCE_MARGIN_MS) {
            return Err((
                "timing.lost_after_ms",
                format!(
                    "{} must exceed timing.fence_after_ms ({}) by at least {FENCE_MARGIN_MS}: a node cut off must stop its Pods before they are replaced",
                    t.lost_after_ms, t.fence_after_ms
                ),
            ));
        }
        let n = &self.node;
        if !RUNTIMES.contains(&n.runtime.as_str()) {
            return Err(("node.runtime", format!("{:?} is not one of {}", n.runtime, RUNTIMES.join(", "))));
        }
        if !n.name.is_empty() && !is_dns_label(&n.name) {
            return Err(("node.name", format!("{:?} must be lower-case letters, digits and '-', at most 63", n.name)));
        }
        if n.restart_backoff_base_ms == 0 || n.restart_backoff_max_ms < n.restart_backoff_base_ms {
            return Err((
                "node.restart_backoff_max_ms",
                format!("{} must be at least node.restart_backoff_base_ms ({}), which must be at least 1", n.restart_backoff_max_ms, n.restart_backoff_base_ms),
            ));
        }
        if n.max_pods == 0 {
            return Err(("node.max_pods", "must be at least 1".into()));
        }
        let r = &self.raft;
        if r.snapshot_after_logs == 0 {
            return Err(("raft.snapshot_after_logs", "must be at least 1".into()));
        }
        if !(4096..=(16 << 20)).contains(&r.snapshot_chunk_bytes) {
            return Err(("raft.snapshot_chunk_bytes", format!("{} is outside 4096 to 16777216", r.snapshot_chunk_bytes)));
        }
        Ok(())
    }

    /// Where other peers reach this one.
    pub fn advertised_addr(&self) -> String {
        if let Some(a) = &self.advertise {
            return a.clone();
        }
        self.peers.iter().find(|p| p.id == self.id).map_or_else(|| self.listen.to_string(), |p| p.addr.clone())
    }

    /// The name of this peer's Node.
    pub fn node_name(&self) -> String {
        if self.node.name.is_empty() { format!("peer-{}", self.id) } else { self.node.name.clone() }
    }

    /// What membership takes from this configuration.
    pub fn membership(&self) -> flotilla_raft::membership::MembershipConfig {
        flotilla_raft::membership::MembershipConfig {
            id: self.id,
            peers: self
                .peers
                .iter()
                .map(|p| flotilla_raft::membership::InitialPeer { id: p.id, addr: p.addr.clone() })
                .collect(),
            advertised_addr: self.advertised_addr(),
            max_voters: self.max_voters as usize,
            replace_voter_after: std::time::Duration::from_millis(self.timing.replace_voter_after_ms),
            // Two election timeouts without a word: not healthy enough to
            // be given a vote.
            healthy_within: std::time::Duration::from_millis(self.timing.election_timeout_max_ms * 2),
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// toml's errors already name the key and carry a span; turn the span into a
/// line number so the message reads like a compiler's.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = 1
cluster = "local-3"
listen = "127.0.0.1:7101"
data_dir = "/tmp/p1"

[[peers]]
id = 1
addr = "127.0.0.1:7101"

[[peers]]
id = 2
addr = "127.0.0.1:7102"

[timing]
heartbeat_ms = 50
"#;

    #[test]
    fn a_good_config_parses_with_defaults() {
        let c = PeerConfig::parse(GOOD, "peer1.toml").unwrap();
        assert_eq!(c.id, 1);
        assert_eq!(c.max_voters, 3);
        assert_eq!(c.timing.election_timeout_min_ms, 200);
        assert_eq!(c.advertised_addr(), "127.0.0.1:7101");
        assert_eq!(c.membership().peers.iter().map(|p| p.id).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn each_mistake_names_its_field() {
        let cases: &[(&str, &str)] = &[
            ("id = 1\n", "peer1.toml: line 1: missing field `listen`"),
            (&GOOD.replace("id = 1\ncluster", "id = \"one\"\ncluster"), "peer1.toml: line 2: invalid type: string \"one\", expected u64"),
            (&GOOD.replace("listen = \"127.0.0.1:7101\"", "listen = \"nowhere\""), "peer1.toml: line 4: invalid socket address syntax"),
            (&GOOD.replace("heartbeat_ms = 50", "heartbeat_ms = 50\nhartbeat = 3"), "peer1.toml: line 17: unknown field `hartbeat`, expected one of `heartbeat_ms`, `election_timeout_min_ms`, `election_timeout_max_ms`, `replace_voter_after_ms`, `node_heartbeat_ms`, `not_ready_after_ms`, `fence_after_ms`, `lost_after_ms`"),
            (&GOOD.replace("heartbeat_ms = 50", "heartbeat_ms = 50\nfence_after_ms = 1500\nlost_after_ms = 1800"), "peer1.toml: timing.lost_after_ms: 1800 must exceed timing.fence_after_ms (1500) by at least 500: a node cut off must stop its Pods before they are replaced"),
            (&GOOD.replace("heartbeat_ms = 50", "heartbeat_ms = 50\nfence_after_ms = 500"), "peer1.toml: timing.fence_after_ms: 500 must outlast a leader failover (twice timing.election_timeout_max_ms plus a node heartbeat: 900), or every failover stops all Pods"),
            (&format!("{GOOD}\n[node]\nruntime = \"vm\"\n"), "peer1.toml: node.runtime: \"vm\" is not one of process, docker, fake"),
            (&GOOD.replace("heartbeat_ms = 50", "heartbeat_ms = 200"), "peer1.toml: timing.election_timeout_min_ms: 200 must exceed twice timing.heartbeat_ms (200)"),
            (&GOOD.replace("cluster = \"local-3\"", "cluster = \"local-3\"\nmax_voters = 4"), "peer1.toml: max_voters: 4 is not one of 1, 3 or 5"),
            (&GOOD.replace("id = 2", "id = 1"), "peer1.toml: peers.id: 1 appears twice"),
            (&GOOD.replace("id = 1\ncluster", "id = 0\ncluster"), "peer1.toml: id: must be at least 1"),
            (&GOOD.replace("local-3", "local 3"), "peer1.toml: cluster: \"local 3\" must be 1 to 63 letters, digits or '-'"),
        ];
        for (text, want) in cases {
            let got = PeerConfig::parse(text, "peer1.toml").unwrap_err().to_string();
            assert_eq!(&got, want);
        }
    }
}
