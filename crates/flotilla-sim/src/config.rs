//! The configuration of a simulated peer: the shipped timing, small
//! snapshots so that they happen, and the `fake` runtime.

use flotilla_peer::config::PeerConfig;

use crate::{FENCE_AFTER_MS, LOST_AFTER_MS, NODE_CPU_MILLIS, PORT, PlantedBug};

/// Peer `index`'s configuration in a cluster of `peers`: up to 3 voters (5 in a
/// cluster of five), the rest learners.
pub(crate) fn peer_config(index: usize, peers: usize, dir: &std::path::Path, bug: Option<PlantedBug>) -> PeerConfig {
    let id = index + 1;
    let ip = turmoil::lookup(format!("peer-{id}"));
    let entries: String = (1..=peers).map(|p| format!("[[peers]]\nid = {p}\naddr = \"peer-{p}:{PORT}\"\n\n")).collect();
    let text = format!(
        r#"id = {id}
cluster = "sim"
listen = "{ip}:{PORT}"
advertise = "peer-{id}:{PORT}"
data_dir = "{dir}"
max_voters = {voters}

{entries}
[timing]
heartbeat_ms = 50
election_timeout_min_ms = 200
election_timeout_max_ms = 400
replace_voter_after_ms = 3600000
node_heartbeat_ms = 100
not_ready_after_ms = 600
fence_after_ms = {FENCE_AFTER_MS}
lost_after_ms = {LOST_AFTER_MS}

[raft]
snapshot_after_logs = 500
keep_logs_after_snapshot = 100

[node]
name = "peer-{id}"
runtime = "fake"
cpu_millis = {cpu_millis}
memory_bytes = 8589934592
restart_backoff_base_ms = 1000
restart_backoff_max_ms = 10000
"#,
        dir = dir.display(),
        voters = if peers >= 5 { 5 } else { 3 },
        cpu_millis = if peers < 3 { 2 * NODE_CPU_MILLIS } else { NODE_CPU_MILLIS },
    );
    let mut config = PeerConfig::parse(&text, "simulated peer").expect("the simulated configuration is valid");
    if bug == Some(PlantedBug::EarlyNodeLoss) {
        // Past validation, which would refuse it.
        config.timing.lost_after_ms = 300;
    }
    config
}
