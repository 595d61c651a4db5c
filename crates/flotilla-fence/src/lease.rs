//! Whether the leader may tell a node "keep running": only while it holds
//! a lease it can prove. A pure decision over what openraft reports.
//!
//! With several voters the proof is an acknowledgement from a quorum of
//! them within the lease. A leader whose voters are itself alone is its
//! own quorum: no other peer can be elected while its membership says so,
//! so its lease always holds. openraft reports that leader's quorum
//! acknowledgement as the moment it was elected (nothing else ever
//! acknowledges it), which is why the voter set must be looked at and the
//! timestamp cannot be trusted on its own.

use std::collections::BTreeSet;
use std::time::Duration;

/// What the leader knows when a heartbeat arrives.
#[derive(Clone, Debug)]
pub struct LeaderView {
    pub me: u64,
    pub leader: Option<u64>,
    /// Every voter of the effective membership; in a joint configuration,
    /// the voters of both halves.
    pub voters: BTreeSet<u64>,
    /// How long ago a quorum of voters last acknowledged this leader.
    pub quorum_acked_ago: Option<Duration>,
}

/// How the lease is proven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    /// This leader is the only voter.
    SelfQuorum,
    /// A quorum of voters acknowledged this leader within the lease.
    Acknowledged,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoLease {
    #[error("not the leader")]
    NotLeader,
    #[error("the leader's lease is unproven: no quorum of voters has acknowledged it yet")]
    Unproven,
    #[error("the leader's lease has run out: a quorum of voters last acknowledged it {0} ms ago")]
    Expired(u128),
}

/// The leader's lease, or why it holds none.
pub fn lease(view: &LeaderView, lease: Duration) -> Result<Lease, NoLease> {
    if view.leader != Some(view.me) {
        return Err(NoLease::NotLeader);
    }
    if view.voters.len() == 1 && view.voters.contains(&view.me) {
        return Ok(Lease::SelfQuorum);
    }
    match view.quorum_acked_ago {
        Some(ago) if ago < lease => Ok(Lease::Acknowledged),
        Some(ago) => Err(NoLease::Expired(ago.as_millis())),
        None => Err(NoLease::Unproven),
    }
}

/// How many more voters the cluster may lose and still elect a leader and
/// commit, with the voters in `down` already gone: in a joint
/// configuration, the fewer of its two halves.
pub fn failures_tolerated(voter_sets: &[BTreeSet<u64>], down: &BTreeSet<u64>) -> u32 {
    let margin = |v: &BTreeSet<u64>| {
        let alive = v.iter().filter(|id| !down.contains(id)).count();
        alive.saturating_sub(v.len() / 2 + 1) as u32
    };
    voter_sets.iter().map(margin).min().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(200);

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn a_lease_is_held_only_when_it_can_be_proven() {
        // (situation, me, leader, voters, quorum acked ago, expected)
        let rows: &[(&str, u64, Option<u64>, &[u64], Option<Duration>, Result<Lease, NoLease>)] = &[
            ("one voter, just elected", 1, Some(1), &[1], ms(0), Ok(Lease::SelfQuorum)),
            ("one voter, elected long ago, nobody acks", 1, Some(1), &[1], ms(60_000), Ok(Lease::SelfQuorum)),
            ("one voter, no ack recorded at all", 1, Some(1), &[1], None, Ok(Lease::SelfQuorum)),
            ("one voter, its learners cut off", 1, Some(1), &[1], ms(5_000), Ok(Lease::SelfQuorum)),
            ("one voter, not leading (restarting)", 1, None, &[1], None, Err(NoLease::NotLeader)),
            ("three voters, fresh quorum ack", 1, Some(1), &[1, 2, 3], ms(50), Ok(Lease::Acknowledged)),
            ("three voters, ack just inside the lease", 1, Some(1), &[1, 2, 3], ms(199), Ok(Lease::Acknowledged)),
            ("three voters, ack at the lease's end", 1, Some(1), &[1, 2, 3], ms(200), Err(NoLease::Expired(200))),
            ("three voters, partitioned leader", 1, Some(1), &[1, 2, 3], ms(5_000), Err(NoLease::Expired(5_000))),
            ("three voters, never acknowledged", 1, Some(1), &[1, 2, 3], None, Err(NoLease::Unproven)),
            ("three voters, leader changed", 1, Some(2), &[1, 2, 3], ms(10), Err(NoLease::NotLeader)),
            ("two voters, stale ack", 1, Some(1), &[1, 2], ms(900), Err(NoLease::Expired(900))),
            // Growing 1 -> 3 through a joint configuration: the new voters
            // must acknowledge too, so the old self-quorum no longer counts.
            ("joint {1} + {1,2,3}, stale ack", 1, Some(1), &[1, 2, 3], ms(900), Err(NoLease::Expired(900))),
            // A leader that is a learner of the membership it leads into.
            ("leader not among the voters", 1, Some(1), &[2], ms(900), Err(NoLease::Expired(900))),
        ];
        for (situation, me, leader, voters, ago, want) in rows {
            let view = LeaderView { me: *me, leader: *leader, voters: voters.iter().copied().collect(), quorum_acked_ago: *ago };
            assert_eq!(&lease(&view, LEASE), want, "{situation}");
        }
    }

    #[test]
    fn failures_tolerated_counts_the_weaker_half_of_a_joint_configuration() {
        let set = |ids: &[u64]| ids.iter().copied().collect::<BTreeSet<u64>>();
        // (voter sets, voters down, failures the cluster still survives)
        let rows: &[(&[&[u64]], &[u64], u32)] = &[
            (&[&[1]], &[], 0),
            (&[&[1, 2]], &[], 0),
            (&[&[1, 2, 3]], &[], 1),
            (&[&[1, 2, 3]], &[3], 0),
            (&[&[1, 2, 3]], &[2, 3], 0),
            (&[&[1, 2, 3, 4]], &[], 1),
            (&[&[1, 2, 3, 4, 5]], &[], 2),
            (&[&[1, 2, 3, 4, 5]], &[5], 1),
            (&[&[1], &[1, 2, 3]], &[], 0),
            (&[&[1, 2, 3], &[1, 2, 3, 4, 5]], &[], 1),
            (&[], &[], 0),
        ];
        for (sets, down, want) in rows {
            let sets: Vec<_> = sets.iter().map(|s| set(s)).collect();
            assert_eq!(failures_tolerated(&sets, &set(down)), *want, "{sets:?} with {down:?} down");
        }
    }
}
