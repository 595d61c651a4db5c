//! The leader's table of answered heartbeats, for one term of leadership.
//! Never written to the log: only the transitions the node lifecycle
//! derives from it are.
//!
//! A round of the leader reads the table, decides which silent nodes are
//! lost, and appends that. A heartbeat answered between the read and the
//! append would let the node catch up to an index before the declaration
//! and start its Pods while their replacements are being made. So every
//! answer bumps an epoch, a declaration is made only on a reading whose
//! epochs for those nodes still stand, and while it is being appended
//! those nodes are not answered.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the leader is declaring node {0} lost: its Pods are being replaced")]
    BeingDeclaredLost(String),
}

/// What a round read: each node's last answered heartbeat, with the epoch
/// that a declaration made on this reading is conditional on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    pub last_heartbeat: BTreeMap<String, Instant>,
    epochs: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default)]
pub struct Heartbeats {
    /// The term this table belongs to, while this peer leads in it.
    term: Option<u64>,
    leader_since: Option<Instant>,
    beats: BTreeMap<String, (Instant, u64)>,
    epoch: u64,
    declaring: BTreeSet<String>,
}

impl Heartbeats {
    /// Starts or ends a term of leadership (`None`: not leading) and
    /// returns since when this peer leads. A new term knows nothing of the
    /// nodes' past heartbeats: it starts empty, and the lifecycle gives
    /// every node a grace period from `leader_since`.
    pub fn set_leading(&mut self, term: Option<u64>, now: Instant) -> Option<Instant> {
        if self.term != term {
            self.term = term;
            self.leader_since = term.map(|_| now);
            self.beats.clear();
            self.declaring.clear();
        }
        self.leader_since
    }

    /// A heartbeat from `node`, answered in `term` at `now`. One from
    /// another term (leadership lost and regained meanwhile, or not yet
    /// taken up by a round) is not this table's and is not recorded.
    pub fn accept(&mut self, term: u64, node: &str, now: Instant) -> Result<(), Refused> {
        if self.declaring.contains(node) {
            return Err(Refused::BeingDeclaredLost(node.to_string()));
        }
        if self.term == Some(term) {
            self.epoch += 1;
            self.beats.insert(node.to_string(), (now, self.epoch));
        }
        Ok(())
    }

    pub fn read(&self) -> Reading {
        Reading {
            last_heartbeat: self.beats.iter().map(|(n, (at, _))| (n.clone(), *at)).collect(),
            epochs: self.beats.iter().map(|(n, (_, e))| (n.clone(), *e)).collect(),
        }
    }

    /// Begins declaring `lost` lost on `reading`: refused, naming the
    /// nodes answered since, when any was; otherwise those nodes get no
    /// answer until [`Self::declared`].
    pub fn declare_lost(&mut self, reading: &Reading, lost: &BTreeSet<String>) -> Result<(), Vec<String>> {
        let answered_since: Vec<String> = lost
            .iter()
            .filter(|n| self.beats.get(*n).map(|(_, e)| *e) != reading.epochs.get(*n).copied())
            .cloned()
            .collect();
        if !answered_since.is_empty() {
            return Err(answered_since);
        }
        self.declaring.extend(lost.iter().cloned());
        Ok(())
    }

    /// The declaration of `lost` is appended (or failed): answers resume.
    /// An answer from then on reaches a node whose catch-up covers it.
    pub fn declared(&mut self, lost: &BTreeSet<String>) {
        self.declaring.retain(|n| !lost.contains(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// The race: a round reads the table, the node's heartbeat is answered,
    /// and the round would append "lost" after the node caught up. The
    /// declaration made on the stale reading is refused.
    #[test]
    fn a_node_answered_after_the_reading_is_not_declared_lost_on_it() {
        let t0 = Instant::now();
        let mut table = Heartbeats::default();
        table.set_leading(Some(3), t0);
        table.accept(3, "n1", t0).unwrap();
        let reading = table.read();
        table.accept(3, "n1", t0 + Duration::from_secs(9)).unwrap();
        assert_eq!(table.declare_lost(&reading, &set(&["n1"])), Err(vec!["n1".to_string()]));
        // Nothing is held back: the node is still answered.
        assert_eq!(table.accept(3, "n1", t0 + Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn a_node_never_heard_and_then_answered_is_not_declared_lost() {
        let t0 = Instant::now();
        let mut table = Heartbeats::default();
        table.set_leading(Some(1), t0);
        let reading = table.read();
        table.accept(1, "n2", t0).unwrap();
        assert_eq!(table.declare_lost(&reading, &set(&["n2"])), Err(vec!["n2".to_string()]));
    }

    #[test]
    fn while_a_declaration_is_appended_the_node_is_not_answered() {
        let t0 = Instant::now();
        let mut table = Heartbeats::default();
        table.set_leading(Some(1), t0);
        table.accept(1, "n1", t0).unwrap();
        table.accept(1, "n2", t0).unwrap();
        let reading = table.read();
        table.declare_lost(&reading, &set(&["n1"])).unwrap();
        assert_eq!(table.accept(1, "n1", t0), Err(Refused::BeingDeclaredLost("n1".into())));
        assert_eq!(table.accept(1, "n2", t0), Ok(()), "other nodes are answered");
        table.declared(&set(&["n1"]));
        assert_eq!(table.accept(1, "n1", t0), Ok(()));
    }

    #[test]
    fn a_declaration_stands_only_for_the_nodes_unchanged_since_the_reading() {
        let t0 = Instant::now();
        let mut table = Heartbeats::default();
        table.set_leading(Some(1), t0);
        table.accept(1, "a", t0).unwrap();
        table.accept(1, "b", t0).unwrap();
        let reading = table.read();
        table.accept(1, "b", t0).unwrap();
        assert_eq!(table.declare_lost(&reading, &set(&["a", "b"])), Err(vec!["b".to_string()]));
        assert_eq!(table.accept(1, "a", t0), Ok(()), "a refused declaration holds nothing back");
        let fresh = table.read();
        assert_eq!(table.declare_lost(&fresh, &set(&["a", "b"])), Ok(()));
    }

    #[test]
    fn a_new_term_starts_empty_and_ignores_other_terms() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut table = Heartbeats::default();
        assert_eq!(table.set_leading(Some(1), t0), Some(t0));
        assert_eq!(table.set_leading(Some(1), t1), Some(t0), "same term: same start");
        table.accept(1, "n1", t0).unwrap();
        table.accept(7, "n2", t0).unwrap();
        assert_eq!(table.read().last_heartbeat.keys().collect::<Vec<_>>(), ["n1"]);
        let reading = table.read();
        table.declare_lost(&reading, &set(&["n1"])).unwrap();
        assert_eq!(table.set_leading(Some(2), t1), Some(t1));
        assert!(table.read().last_heartbeat.is_empty());
        assert_eq!(table.accept(2, "n1", t1), Ok(()), "a new term declares nothing yet");
        assert_eq!(table.set_leading(None, t1), None);
    }
}
