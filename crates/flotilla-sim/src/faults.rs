//! The faults of one seed: a schedule drawn from the seed alone, before the
//! simulation starts, so that it is the same on every replay. Faults come
//! one after another; each ends (heals) before the next begins, and the
//! driver applies both ends between simulation steps.

use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Mixed into the seed so that the schedule's draws do not mirror the
/// simulation's own.
const SCHEDULE_STREAM: u64 = 0x5eed_fa17_5eed_fa17;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// One peer cut off from every other, both ways.
    Isolate(usize),
    /// The peers split in two groups (the first is the smaller).
    Split(Vec<usize>, Vec<usize>),
    /// Messages between two peers dropped for a moment: the connection
    /// between them loses segments and has to be replaced.
    Drop(usize, usize),
    /// Messages between one peer and the others held, then delivered late.
    Delay(usize),
    /// A peer crashes, losing every write it had not synced, and restarts
    /// when the fault ends.
    Crash(usize),
    /// The leader of the moment crashes (chosen when the fault starts).
    CrashLeader,
    /// A peer is gone for longer than the leader waits before declaring its
    /// node lost, so its Pods are replaced elsewhere; it returns at the end.
    NodeLoss(usize),
    /// A peer's disk syncs slowly.
    SlowDisk(usize, u64),
    /// A peer crashes and loses its disk: it returns under the same id with
    /// an empty data directory, and must be admitted again as a new member.
    Wipe(usize),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peer = |i: &usize| format!("peer-{}", i + 1);
        let group = |g: &[usize]| g.iter().map(peer).collect::<Vec<_>>().join(",");
        match self {
            Fault::Isolate(p) => write!(f, "isolate {}", peer(p)),
            Fault::Split(a, b) => write!(f, "split {} | {}", group(a), group(b)),
            Fault::Drop(a, b) => write!(f, "drop messages {} <-> {}", peer(a), peer(b)),
            Fault::Delay(p) => write!(f, "delay messages of {}", peer(p)),
            Fault::Crash(p) => write!(f, "crash {}", peer(p)),
            Fault::CrashLeader => write!(f, "crash the leader"),
            Fault::NodeLoss(p) => write!(f, "lose {} (node lost)", peer(p)),
            Fault::SlowDisk(p, ms) => write!(f, "slow disk on {} ({ms} ms per sync)", peer(p)),
            Fault::Wipe(p) => write!(f, "crash {} and wipe its disk", peer(p)),
        }
    }
}

/// One fault and when it holds, in simulated milliseconds from the start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    pub start_ms: u64,
    pub end_ms: u64,
    pub fault: Fault,
}

/// Whether fault kind `kind` (as `schedule` draws it) means anything for
/// `peers` peers. One peer has no network to cut. Fewer than three peers
/// have one voter, the only holder of acknowledged writes: wiping its disk
/// loses them by design, so no disk is wiped there.
fn applies(kind: u32, peers: usize) -> bool {
    match kind {
        0..=3 => peers >= 2,
        7 => peers >= 3,
        _ => true,
    }
}

/// The faults of `seed` for `peers` peers between `from_ms` and `until_ms`.
/// `lost_after_ms` is how long a node-loss fault must last at least.
pub fn schedule(seed: u64, peers: usize, from_ms: u64, until_ms: u64, lost_after_ms: u64) -> Vec<Scheduled> {
    assert!(peers >= 1, "a cluster has a peer");
    let mut rng = StdRng::seed_from_u64(seed ^ SCHEDULE_STREAM);
    let mut out = Vec::new();
    let mut at = from_ms + rng.random_range(0..1_000);
    while at < until_ms {
        let peer = rng.random_range(0..peers);
        // Drawn again until it applies: three and five peers draw exactly
        // what they always did.
        let kind = loop {
            let kind = rng.random_range(0..9);
            if applies(kind, peers) {
                break kind;
            }
        };
        let (fault, duration_ms) = match kind {
            0 => (Fault::Isolate(peer), rng.random_range(500..6_000)),
            1 => {
                let mut all: Vec<usize> = (0..peers).collect();
                // A seeded shuffle: the minority is the first `peers / 2`.
                for i in (1..all.len()).rev() {
                    all.swap(i, rng.random_range(0..=i));
                }
                let minority = all[..peers / 2].to_vec();
                let majority = all[peers / 2..].to_vec();
                (Fault::Split(minority, majority), rng.random_range(500..6_000))
            }
            2 => {
                let other = (peer + rng.random_range(1..peers)) % peers;
                (Fault::Drop(peer.min(other), peer.max(other)), rng.random_range(50..400))
            }
            3 => (Fault::Delay(peer), rng.random_range(100..1_500)),
            4 => (Fault::Crash(peer), rng.random_range(200..5_000)),
            5 => (Fault::CrashLeader, rng.random_range(200..3_000)),
            6 => (Fault::NodeLoss(peer), lost_after_ms + rng.random_range(1_000..4_000)),
            7 => (Fault::Wipe(peer), rng.random_range(200..5_000)),
            _ => (Fault::SlowDisk(peer, rng.random_range(5..150)), rng.random_range(1_000..5_000)),
        };
        out.push(Scheduled { start_ms: at, end_ms: at + duration_ms, fault });
        // Time between faults for the cluster to show what it did.
        at += duration_ms + rng.random_range(200..2_500);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_fixes_the_schedule_and_faults_never_overlap() {
        let a = schedule(42, 3, 5_000, 60_000, 2_000);
        assert_eq!(a, schedule(42, 3, 5_000, 60_000, 2_000));
        assert_ne!(a, schedule(43, 3, 5_000, 60_000, 2_000));
        assert!(a.len() > 5, "{a:?}");
        for pair in a.windows(2) {
            assert!(pair[0].end_ms < pair[1].start_ms, "{pair:?}");
        }
        for s in &a {
            if let Fault::NodeLoss(_) = s.fault {
                assert!(s.end_ms - s.start_ms > 2_000);
            }
        }
        // Every kind turns up over enough seeds.
        let kinds: std::collections::BTreeSet<String> = (0..20)
            .flat_map(|seed| schedule(seed, 5, 0, 60_000, 2_000))
            .map(|s| format!("{:?}", s.fault).split('(').next().unwrap().to_string())
            .collect();
        assert_eq!(kinds.len(), 9, "{kinds:?}");
    }

    #[test]
    fn small_clusters_draw_only_faults_that_apply_to_them() {
        let kinds = |peers| -> std::collections::BTreeSet<String> {
            (0..50)
                .flat_map(|seed| schedule(seed, peers, 0, 60_000, 2_000))
                .map(|s| format!("{:?}", s.fault).split('(').next().unwrap().to_string())
                .collect()
        };
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<std::collections::BTreeSet<_>>();
        assert_eq!(kinds(1), names(&["Crash", "CrashLeader", "NodeLoss", "SlowDisk"]));
        assert_eq!(kinds(2), names(&["Crash", "CrashLeader", "Delay", "Drop", "Isolate", "NodeLoss", "SlowDisk", "Split"]));
    }
}
