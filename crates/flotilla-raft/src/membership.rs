//! Who is in the cluster: bootstrapping it once, joining it, and keeping
//! the number of voters at its cap.
//!
//! Every peer holds the whole state. At most `max_voters` of them vote;
//! the rest are learners that replicate everything. The voters are always
//! an odd number: a cluster bootstraps with the largest odd number its
//! initial peers allow, and the leader promotes caught-up learners two at
//! a time (1 -> 3 -> 5, see [`review_voters`]). It replaces a voter it has
//! not heard from for `replace_voter_after_ms` (the old voter stays a
//! learner and catches up when it returns).
//!
//! Each member is recorded with the incarnation of its data directory. A
//! peer that returns with a wiped directory under the same id is refused
//! as that member and asks to join; the leader then removes the old member
//! and admits the new directory as a learner, which catches up and takes a
//! free seat like any joiner. (Taking it back as the old member would lose
//! entries and votes it had acknowledged.)

use openraft::Instant as _;
use openraft::async_runtime::WatchReceiver as _;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::api::JoinRequest;
use flotilla_proto::api::cluster_client::ClusterClient;
use flotilla_proto::raft::HelloRequest;
use flotilla_proto::raft::raft_transport_client::RaftTransportClient;
use crate::{PeerNode, Raft};
use crate::network::{Channels, ClusterIdentity};
use openraft::ChangeMembers;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::identity::{Identity, IdentityError, IdentityFile, random_id};

/// How often a peer that is not yet a member retries bootstrap or join.
const BOOTSTRAP_RETRY: Duration = Duration::from_millis(300);
const HELLO_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the leader reviews voters and learners.
const RECONCILE_EVERY: Duration = Duration::from_millis(500);
/// A learner within this many entries of the leader counts as caught up.
const CATCH_UP_SLACK: u64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("this peer belongs to cluster {mine:?}, the sender to cluster {theirs:?}")]
    ForeignCluster { mine: String, theirs: String },
    #[error(
        "the sender means this peer's earlier data directory (incarnation {expected}), not this one ({mine}): \
         the directory was replaced, so this peer asks to join the cluster as a new member"
    )]
    Replaced { expected: String, mine: String },
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// A peer the configuration lists as an initial member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialPeer {
    pub id: u64,
    pub addr: String,
}

/// What membership takes from the peer's configuration.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    pub id: u64,
    /// The initial peers: the lowest id among them bootstraps the cluster.
    pub peers: Vec<InitialPeer>,
    /// The address other peers reach this one at.
    pub advertised_addr: String,
    /// Voters at most (1, 3 or 5).
    pub max_voters: usize,
    /// A voter silent this long gives its seat to a caught-up learner.
    pub replace_voter_after: Duration,
    /// A learner heard from within this is healthy enough to promote.
    pub healthy_within: Duration,
}

impl MembershipConfig {
    fn is_initial_member(&self) -> bool {
        self.peers.iter().any(|p| p.id == self.id)
    }
}

pub struct ClusterMembership {
    pub id: u64,
    config: MembershipConfig,
    /// The cluster id as the transport sends it.
    pub identity: ClusterIdentity,
    file: IdentityFile,
    /// Serializes learning the cluster id so it is written once.
    record: Mutex<Identity>,
    /// This data directory's, fixed when it was made.
    incarnation: String,
    channels: Channels,
}

impl ClusterMembership {
    pub fn new(config: MembershipConfig, file: IdentityFile, record: Identity, channels: Channels) -> Self {
        let identity = ClusterIdentity::new(record.cluster_id.clone());
        let incarnation = record.incarnation.clone();
        Self { id: config.id, config, identity, file, record: Mutex::new(record), incarnation, channels }
    }

    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    /// Accepts a message meant for `expected`: this data directory, or any
    /// when the sender does not know it yet.
    pub fn check_incarnation(&self, expected: &str) -> Result<(), MembershipError> {
        if expected.is_empty() || expected == self.incarnation {
            return Ok(());
        }
        Err(MembershipError::Replaced { expected: expected.to_string(), mine: self.incarnation.clone() })
    }

    pub fn cluster_id(&self) -> String {
        self.identity.get()
    }

    /// Accepts Raft traffic from `cluster_id`. A peer that has never been in
    /// a cluster adopts the first one that reaches it, and remembers it
    /// durably before answering.
    pub fn accept_cluster(&self, cluster_id: &str) -> Result<(), MembershipError> {
        let mut record = self.record.lock().expect("identity lock");
        if record.cluster_id == cluster_id {
            return Ok(());
        }
        if record.cluster_id.is_empty() && !cluster_id.is_empty() {
            record.cluster_id = cluster_id.to_string();
            self.file.save(&record)?;
            self.identity.set(cluster_id.to_string());
            tracing::info!(cluster_id, "joined cluster");
            return Ok(());
        }
        Err(MembershipError::ForeignCluster { mine: record.cluster_id.clone(), theirs: cluster_id.to_string() })
    }

    fn is_member(&self, raft: &Raft) -> bool {
        raft.metrics().borrow_watched().membership_config.membership().get_node(&self.id).is_some()
    }

    /// Runs until this peer is a member: bootstraps the cluster if this is
    /// the lowest-id initial peer and a majority of initial peers are fresh,
    /// otherwise asks the running cluster to add it.
    pub async fn bootstrap_or_join(self: Arc<Self>, raft: Raft, mut shutdown: watch::Receiver<bool>) {
        let initial: Vec<_> = {
            let mut p = self.config.peers.clone();
            p.sort_by_key(|p| p.id);
            p
        };
        let lowest_initial = initial.first().map(|p| p.id);
        loop {
            if self.is_member(&raft) {
                return;
            }
            let mut fresh = 0usize;
            let mut running = false;
            let mut incarnations = BTreeMap::from([(self.id, self.incarnation.clone())]);
            for p in initial.iter().filter(|p| p.id != self.id) {
                if let Some(h) = self.hello(&p.addr).await {
                    if h.initialized {
                        running = true;
                    } else {
                        fresh += 1;
                        if h.peer_id == p.id {
                            incarnations.insert(p.id, h.incarnation);
                        }
                    }
                }
            }
            if running || raft.is_initialized().await.unwrap_or(false) {
                self.ask_to_join().await;
            } else if self.config.is_initial_member() && lowest_initial == Some(self.id) {
                let majority = initial.len() / 2 + 1;
                if fresh + 1 >= majority {
                    self.initialize(&raft, &initial, &incarnations).await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(BOOTSTRAP_RETRY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Bootstraps with the initial peers, recording the incarnations of
    /// those that answered; the leader learns the others' later.
    async fn initialize(&self, raft: &Raft, initial: &[InitialPeer], incarnations: &BTreeMap<u64, String>) {
        let cluster_id = random_id();
        if let Err(e) = self.accept_cluster(&cluster_id) {
            tracing::error!("cannot record the new cluster id: {e}");
            return;
        }
        let voters: BTreeMap<u64, PeerNode> = initial
            .iter()
            .take(initial_voters(initial.len(), self.config.max_voters))
            .map(|p| (p.id, PeerNode::new(p.addr.clone(), incarnations.get(&p.id).cloned().unwrap_or_default())))
            .collect();
        match raft.initialize(voters.clone()).await {
            Ok(()) => tracing::info!(cluster_id = %self.cluster_id(), voters = ?voters.keys().collect::<Vec<_>>(), "bootstrapped the cluster"),
            Err(e) => tracing::warn!("bootstrap skipped: {e}"),
        }
    }

    async fn hello(&self, addr: &str) -> Option<flotilla_proto::raft::HelloReply> {
        let channel = self.channels.get(addr).ok()?;
        let mut client = RaftTransportClient::new(channel);
        let mut req = tonic::Request::new(HelloRequest { cluster_id: self.cluster_id() });
        req.set_timeout(HELLO_TIMEOUT);
        client.hello(req).await.ok().map(|r| r.into_inner())
    }

    async fn ask_to_join(&self) {
        let me = JoinRequest { id: self.id, addr: self.config.advertised_addr.clone(), incarnation: self.incarnation.clone() };
        for p in self.config.peers.iter().filter(|p| p.id != self.id) {
            let Ok(channel) = self.channels.get(&p.addr) else { continue };
            let mut req = tonic::Request::new(me.clone());
            req.set_timeout(Duration::from_secs(2));
            match ClusterClient::new(channel).join(req).await {
                Ok(_) => {
                    tracing::debug!(through = %p.addr, "asked to join the cluster");
                    return;
                }
                Err(e) => tracing::debug!(through = %p.addr, "join attempt failed: {}", e.message()),
            }
        }
    }

    /// On the leader: adds a peer as a learner (promotion comes later, from
    /// [`Self::reconcile_voters`]). A member of that id with another data
    /// directory is removed first: the peer lost what it had acknowledged,
    /// so it comes back as a new member that must catch up before it votes.
    pub async fn add_learner(&self, raft: &Raft, id: u64, addr: String, incarnation: String) -> Result<(), String> {
        let metrics = raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        if let Some(current) = membership.get_node(&id) {
            if current.incarnation == incarnation {
                if current.addr == addr {
                    return Ok(());
                }
            } else if current.incarnation.is_empty() {
                // Bootstrapped without answering: the cluster never knew
                // which directory it had, so the one it joins with is taken
                // as that directory, as `learn_incarnations` does. It may
                // already hold entries: it asked before they reached it.
                let node = BTreeMap::from([(id, PeerNode::new(addr, incarnation))]);
                return match self.record_incarnations(raft, node).await {
                    true => Ok(()),
                    false => Err(format!("recording peer {id}'s data directory failed; ask again")),
                };
            } else {
                if id == self.id {
                    return Err(format!("peer {id} is this leader, which answers from incarnation {}", self.incarnation));
                }
                tracing::warn!(
                    peer = id,
                    was = %current.incarnation,
                    now = %incarnation,
                    "peer {id}'s data directory was replaced: removing the old member to admit the new one"
                );
                let ids = BTreeSet::from([id]);
                let removal = if membership.voter_ids().any(|v| v == id) {
                    ChangeMembers::RemoveVoters(ids)
                } else {
                    ChangeMembers::RemoveNodes(ids)
                };
                raft.change_membership(removal, false).await.map_err(|e| e.to_string())?;
            }
        }
        raft.add_learner(id, PeerNode::new(addr, incarnation), false).await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// On the leader: records the incarnation of members that bootstrapped
    /// without answering, once they answer as members of this cluster.
    /// Returns whether it changed the membership.
    async fn learn_incarnations(&self, raft: &Raft, membership: &openraft::Membership<u64, PeerNode>) -> bool {
        let cluster_id = self.cluster_id();
        let mut learned = BTreeMap::new();
        for (&id, node) in membership.nodes().filter(|(_, n)| n.incarnation.is_empty()) {
            if id == self.id {
                learned.insert(id, PeerNode::new(node.addr.clone(), self.incarnation.clone()));
                continue;
            }
            let Some(h) = self.hello(&node.addr).await else { continue };
            if h.peer_id == id && h.initialized && h.cluster_id == cluster_id && !h.incarnation.is_empty() {
                learned.insert(id, PeerNode::new(node.addr.clone(), h.incarnation));
            }
        }
        !learned.is_empty() && self.record_incarnations(raft, learned).await
    }

    async fn record_incarnations(&self, raft: &Raft, nodes: BTreeMap<u64, PeerNode>) -> bool {
        tracing::info!(peers = ?nodes.keys().collect::<Vec<_>>(), "recording the data directories of members");
        match raft.change_membership(ChangeMembers::SetNodes(nodes), true).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("recording members' data directories failed: {e}");
                false
            }
        }
    }

    /// On the leader, forever: grow the voters to their cap and replace
    /// voters that have been silent too long, as [`review_voters`] decides.
    pub async fn reconcile_voters(self: Arc<Self>, raft: Raft, mut shutdown: watch::Receiver<bool>) {
        let replace_after = self.config.replace_voter_after;
        let mut leading_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RECONCILE_EVERY) => {}
                _ = shutdown.changed() => return,
            }
            let m = raft.metrics().borrow_watched().clone();
            if m.current_leader != Some(self.id) {
                leading_since = None;
                continue;
            }
            let since = *leading_since.get_or_insert_with(Instant::now);
            let membership = m.membership_config.membership();
            if membership.get_joint_config().len() > 1 {
                continue;
            }
            // A member that never answers must not hold up promotions and
            // replacements: only a change made ends the round early.
            if membership.nodes().any(|(_, n)| n.incarnation.is_empty()) && self.learn_incarnations(&raft, membership).await {
                continue;
            }
            let last = m.last_log_index.unwrap_or(0);
            let matched = |id: u64| -> u64 {
                m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map_or(0, |l| l.index)
            };
            // The leader's own view of when each peer last answered; a peer
            // never heard from counts from when this leader took over.
            let silent_for = |id: u64| -> Duration {
                if id == self.id {
                    return Duration::ZERO;
                }
                let acked = m.heartbeat.as_ref().and_then(|h| h.get(&id).cloned().flatten());
                match acked {
                    Some(at) => at.elapsed(),
                    None => since.elapsed(),
                }
            };
            let healthy_within = self.config.healthy_within;
            let voters: BTreeSet<u64> = membership.voter_ids().collect();
            let members: Vec<Member> = membership
                .nodes()
                .map(|(&id, _)| Member {
                    id,
                    voter: voters.contains(&id),
                    caught_up: matched(id) + CATCH_UP_SLACK >= last,
                    silent_for: silent_for(id),
                })
                .collect();
            let change = match review_voters(&members, self.config.max_voters, healthy_within, replace_after) {
                Some(VoterChange::Promote(learners)) => {
                    tracing::info!(?learners, "promoting learners to voters");
                    Some(ChangeMembers::AddVoterIds(learners))
                }
                Some(VoterChange::Replace { voter, learner }) => {
                    tracing::warn!(voter, learner, "replacing a voter silent for {:?}", silent_for(voter));
                    let mut next = voters.clone();
                    next.remove(&voter);
                    next.insert(learner);
                    Some(ChangeMembers::ReplaceAllVoters(next))
                }
                None => None,
            };
            if let Some(change) = change
                && let Err(e) = raft.change_membership(change, true).await
            {
                tracing::warn!("membership change failed: {e}");
            }
        }
    }
}

/// One member as the leader sees it when it reviews the voters.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: u64,
    pub voter: bool,
    /// Within `CATCH_UP_SLACK` entries of the leader's log.
    pub caught_up: bool,
    /// Since the leader last heard from it (zero for the leader itself).
    pub silent_for: Duration,
}

/// A change of the voter set the leader should make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoterChange {
    /// These caught-up learners become voters, in one membership change.
    Promote(BTreeSet<u64>),
    /// A voter silent for too long gives its seat to a caught-up learner.
    Replace { voter: u64, learner: u64 },
}

/// The voter policy. Voters grow to the largest odd number the caught-up
/// learners and `max_voters` allow, in one step (1 -> 3, 3 -> 5, even
/// 1 -> 5): an even number of voters survives no more failures than one
/// fewer and needs more of them to commit, so the cluster never stops at
/// 2 or 4 on the way. A voter silent for `replace_after` is replaced by a
/// caught-up learner. Shrinking is left to the operator.
pub fn review_voters(members: &[Member], max_voters: usize, healthy_within: Duration, replace_after: Duration) -> Option<VoterChange> {
    let voters = members.iter().filter(|m| m.voter).count();
    let mut candidates = members.iter().filter(|m| !m.voter && m.caught_up && m.silent_for < healthy_within).map(|m| m.id);
    let reachable = max_voters.min(voters + candidates.clone().count());
    let target = if reachable % 2 == 1 { reachable } else { reachable.saturating_sub(1) };
    if target > voters {
        return Some(VoterChange::Promote(candidates.take(target - voters).collect()));
    }
    let dead = members.iter().find(|m| m.voter && m.silent_for >= replace_after)?;
    Some(VoterChange::Replace { voter: dead.id, learner: candidates.next()? })
}

/// How many voters a cluster bootstraps with: the largest odd number the
/// initial peers and `max_voters` allow. The others join as learners.
pub fn initial_voters(initial_peers: usize, max_voters: usize) -> usize {
    let n = initial_peers.min(max_voters).max(1);
    if n % 2 == 1 { n } else { n - 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEALTHY: Duration = Duration::from_millis(800);
    const REPLACE: Duration = Duration::from_secs(30);

    /// `v` a voter, `l` a caught-up learner, `b` a learner behind, `s` a
    /// silent learner, `d` a voter silent past the replacement time; ids
    /// count from 1.
    fn members(shape: &str) -> Vec<Member> {
        shape
            .chars()
            .enumerate()
            .map(|(i, c)| Member {
                id: i as u64 + 1,
                voter: c == 'v' || c == 'd',
                caught_up: c != 'b',
                silent_for: match c {
                    'd' => REPLACE,
                    's' => HEALTHY,
                    _ => Duration::ZERO,
                },
            })
            .collect()
    }

    #[test]
    fn voters_grow_in_odd_steps_and_dead_voters_are_replaced() {
        let promote = |ids: &[u64]| Some(VoterChange::Promote(ids.iter().copied().collect()));
        // (situation, members, max_voters, expected)
        let rows: &[(&str, &str, usize, Option<VoterChange>)] = &[
            ("one peer alone", "v", 3, None),
            ("one voter, one learner: never two voters", "vl", 3, None),
            ("one voter, two caught-up learners: 1 -> 3 at once", "vll", 3, promote(&[2, 3])),
            ("one voter, one learner behind", "vlb", 3, None),
            ("one voter, one learner silent", "vls", 3, None),
            ("one voter, learners beyond the cap", "vllll", 3, promote(&[2, 3])),
            ("max 1: learners stay learners", "vll", 1, None),
            ("max 5, four caught up: 1 -> 5 at once", "vllll", 5, promote(&[2, 3, 4, 5])),
            ("max 5, three caught up: 1 -> 3", "vlll", 5, promote(&[2, 3])),
            ("three voters, one learner: never four", "vvvl", 5, None),
            ("three voters, two learners: 3 -> 5", "vvvll", 5, promote(&[4, 5])),
            ("three voters at the cap", "vvvll", 3, None),
            ("two voters (bootstrapped so): 2 -> 3", "vvl", 3, promote(&[3])),
            ("two voters, nobody to promote", "vv", 3, None),
            ("a voter silent too long, a learner ready", "vdvl", 3, Some(VoterChange::Replace { voter: 2, learner: 4 })),
            ("a voter silent too long, no learner ready", "vdvb", 3, None),
            ("below the cap, a dead voter and one learner", "vdvl", 5, Some(VoterChange::Replace { voter: 2, learner: 4 })),
        ];
        for (situation, shape, max, want) in rows {
            assert_eq!(&review_voters(&members(shape), *max, HEALTHY, REPLACE), want, "{situation}");
        }
    }

    #[test]
    fn a_cluster_bootstraps_with_an_odd_number_of_voters() {
        for (peers, max, want) in [(1, 3, 1), (2, 3, 1), (3, 3, 3), (4, 5, 3), (5, 5, 5), (9, 5, 5), (2, 1, 1), (3, 1, 1)] {
            assert_eq!(initial_voters(peers, max), want, "{peers} peers, max_voters {max}");
        }
    }
}
