//! The safety invariants, judged from outside the peers: from what each
//! peer's storage holds and what each fake runtime runs. A violation names
//! what broke, where and when; the driver stops the seed at the first one.

use std::collections::BTreeMap;

use flotilla_api::{Node, Pod};
use flotilla_raft::Backend;
use flotilla_raft::inspect;

/// The StatefulSet whose Pods must never run twice at once.
pub const STATEFULSET: &str = "db";

/// One peer as the checks see it.
pub struct PeerView<'a> {
    pub name: &'a str,
    pub backend: &'a dyn Backend,
}

#[derive(Default)]
pub struct Checker {
    /// The leader of each term, from votes committed (granted by a quorum).
    leaders: BTreeMap<u64, String>,
    /// Every committed entry seen, by index, encoded.
    committed: BTreeMap<u64, Vec<u8>>,
    /// Per peer, the last index whose entry was compared.
    compared_upto: BTreeMap<String, u64>,
}

impl Checker {
    /// One leader per term. Returns the leaders first seen now, for the
    /// trace.
    pub fn leaders(&mut self, peers: &[PeerView<'_>]) -> Result<Vec<(u64, String)>, String> {
        let mut new = Vec::new();
        for p in peers {
            let Some(vote) = inspect::vote(p.backend).map_err(|e| format!("{}: unreadable vote: {e}", p.name))? else {
                continue;
            };
            if !vote.committed || vote.leader_id.voted_for != peer_id(p.name) {
                continue;
            }
            let term = vote.leader_id.term;
            match self.leaders.get(&term) {
                Some(leader) if leader != p.name => {
                    return Err(format!("two leaders in term {term}: {leader} and {}", p.name));
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(term, p.name.to_string());
                    new.push((term, p.name.to_string()));
                }
            }
        }
        Ok(new)
    }

    /// Committed entries never change: an entry a peer has applied (so
    /// committed) is the same, byte for byte, on every peer that holds it
    /// and at every later look.
    pub fn committed_entries(&mut self, peers: &[PeerView<'_>]) -> Result<(), String> {
        for p in peers {
            let applied = inspect::last_applied(p.backend).map_err(|e| format!("{}: {e}", p.name))?;
            let Some(applied) = applied else { continue };
            let from = self.compared_upto.get(p.name).map_or(0, |i| i + 1);
            if applied.index < from {
                continue;
            }
            let entries = inspect::log_entries(p.backend, from, applied.index + 1).map_err(|e| format!("{}: {e}", p.name))?;
            for (index, bytes) in entries {
                match self.committed.get(&index) {
                    Some(seen) if *seen != bytes => {
                        return Err(format!("committed entry {index} differs on {} from what was committed before", p.name));
                    }
                    Some(_) => {}
                    None => {
                        self.committed.insert(index, bytes);
                    }
                }
            }
            self.compared_upto.insert(p.name.to_string(), applied.index);
        }
        Ok(())
    }

    pub fn committed_count(&self) -> usize {
        self.committed.len()
    }
}

fn peer_id(name: &str) -> u64 {
    name.strip_prefix("peer-").and_then(|n| n.parse().ok()).expect("peers are named peer-<id>")
}

/// No acknowledged write is lost: a peer whose applied state has reached
/// the revision a write was acknowledged at holds what it wrote (the
/// client never deletes). `acked` holds (ConfigMap name, revision).
pub fn acknowledged_writes(peer: &PeerView<'_>, acked: &[(String, u64)]) -> Result<(), String> {
    let revision = inspect::revision(peer.backend).map_err(|e| format!("{}: {e}", peer.name))?;
    if acked.iter().all(|(_, r)| *r > revision) {
        return Ok(());
    }
    let maps = inspect::objects(peer.backend, "ConfigMap").map_err(|e| format!("{}: {e}", peer.name))?;
    let present: std::collections::BTreeSet<&str> = maps.iter().map(|(k, _)| k.name.as_str()).collect();
    match acked.iter().find(|(name, r)| *r <= revision && !present.contains(name.as_str())) {
        Some((name, r)) => Err(format!(
            "acknowledged write lost: {} has applied revision {revision} but lacks {name}, acknowledged at revision {r}",
            peer.name
        )),
        None => Ok(()),
    }
}

/// No node holds more than it can: the CPU its Pods request and their
/// number stay within its allocatable, on the state `backend` applied.
pub fn capacity(backend: &dyn Backend) -> Result<(), String> {
    let nodes = inspect::objects(backend, "Node").map_err(|e| e.to_string())?;
    let pods = inspect::objects(backend, "Pod").map_err(|e| e.to_string())?;
    let mut used: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (key, stored) in &pods {
        let pod: Pod = serde_json::from_str(&stored.json).map_err(|e| format!("{}: {e}", key.name))?;
        let phase = pod.status.as_ref().map_or("", |s| s.phase.as_str());
        if pod.spec.node_name.is_empty() || matches!(phase, "Succeeded" | "Failed") {
            continue;
        }
        let cpu: u64 = pod
            .spec
            .containers
            .iter()
            .filter_map(|c| c.resources.requests.get("cpu").and_then(|q| q.millis().ok()))
            .sum();
        let entry = used.entry(pod.spec.node_name.clone()).or_default();
        entry.0 += cpu;
        entry.1 += 1;
    }
    for (key, stored) in &nodes {
        let node: Node = serde_json::from_str(&stored.json).map_err(|e| format!("{}: {e}", key.name))?;
        let Some(status) = &node.status else { continue };
        let (cpu, count) = used.get(&key.name).copied().unwrap_or_default();
        let allocatable_cpu = status.allocatable.get("cpu").and_then(|q| q.millis().ok()).unwrap_or(u64::MAX);
        let allocatable_pods = status.allocatable.get("pods").and_then(|q| q.millis().ok()).map_or(u64::MAX, |m| m / 1000);
        if cpu > allocatable_cpu || count > allocatable_pods {
            return Err(format!(
                "node {} holds {count} Pods requesting {cpu}m CPU, over its allocatable {allocatable_cpu}m and {allocatable_pods} Pods",
                key.name
            ));
        }
    }
    Ok(())
}

/// At most one running instance of each StatefulSet Pod across every
/// peer's runtime. `running` holds, per peer, the (namespace, name, uid)
/// of each Pod with a running container.
pub fn one_instance_per_ordinal<'a>(
    running: impl IntoIterator<Item = (&'a str, &'a (String, String, String))>,
) -> Result<(), String> {
    let mut seen: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    let prefix = format!("{STATEFULSET}-");
    for (peer, (_, name, uid)) in running {
        if !name.strip_prefix(&prefix).is_some_and(|n| n.parse::<u32>().is_ok()) {
            continue;
        }
        if let Some((other_peer, other_uid)) = seen.insert(name, (peer, uid)) {
            return Err(format!("{name} runs twice: on {other_peer} (uid {other_uid}) and on {peer} (uid {uid})"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_missing_from_a_peer_past_its_revision_is_caught() {
        use flotilla_raft::backend::{Batch, Cf};
        use flotilla_raft::codec::encode;
        use flotilla_store::{ObjectKey, StoredObject};

        let backend = flotilla_raft::MemoryBackend::default();
        let mut batch = Batch::default();
        batch.put(Cf::Applied, b"revision".to_vec(), encode(&5u64));
        let stored = StoredObject { json: "{}".into(), create_revision: 3, mod_revision: 3 };
        batch.put(Cf::Objects, ObjectKey::new("ConfigMap", "default", "w-0").encode(), encode(&stored));
        backend.write(batch, true).unwrap();
        let peer = PeerView { name: "peer-1", backend: &backend };
        // Present, or acknowledged past what the peer applied: fine.
        assert!(acknowledged_writes(&peer, &[("w-0".into(), 3), ("w-1".into(), 9)]).is_ok());
        let err = acknowledged_writes(&peer, &[("w-0".into(), 3), ("w-1".into(), 4)]).unwrap_err();
        assert!(err.contains("peer-1 has applied revision 5 but lacks w-1, acknowledged at revision 4"), "{err}");
    }

    #[test]
    fn a_second_running_copy_of_an_ordinal_is_caught() {
        let pod = |name: &str, uid: &str| ("default".to_string(), name.to_string(), uid.to_string());
        let (a, b, c, d) = (pod("db-0", "u1"), pod("db-1", "u2"), pod("web-x", "u3"), pod("web-x", "u4"));
        assert!(one_instance_per_ordinal([("peer-1", &a), ("peer-2", &b), ("peer-1", &c), ("peer-2", &d)]).is_ok());
        let again = pod("db-0", "u9");
        let err = one_instance_per_ordinal([("peer-1", &a), ("peer-3", &again)]).unwrap_err();
        assert!(err.contains("db-0 runs twice: on peer-1 (uid u1) and on peer-3 (uid u9)"), "{err}");
    }
}
