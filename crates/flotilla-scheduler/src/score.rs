//! Ranking the feasible nodes: each score normalised to 0..=100 over the
//! nodes being compared, then a weighted sum.

use flotilla_api::pod::Pod;

use crate::Scoring;
use crate::matching::{pod_tolerates, seeded_hash, term_matches};
use crate::world::{Candidate, World};

pub const MAX_SCORE: i64 = 100;

/// Weights follow kube-scheduler's defaults: avoiding soft taints matters
/// most, then stated preferences and spreading, then packing.
const RESOURCE_WEIGHT: i64 = 1;
const NODE_AFFINITY_WEIGHT: i64 = 2;
const POD_AFFINITY_WEIGHT: i64 = 2;
const SPREAD_WEIGHT: i64 = 2;
const TAINT_WEIGHT: i64 = 3;

/// The best of `feasible` (indices into `world.nodes`, non-empty) for the
/// candidate; equal totals are ordered by a hash of (seed, pod uid, node
/// name) so ties spread out but the same inputs always pick the same node.
pub fn pick(world: &World<'_>, c: &Candidate<'_>, feasible: &[usize], scoring: Scoring, seed: u64) -> usize {
    let resource: Vec<i64> = feasible.iter().map(|&i| resource_score(world, i, c, scoring)).collect();
    let node_affinity = normalise_by_max(feasible.iter().map(|&i| preferred_node_affinity(c.pod, world, i)).collect());
    let pod_affinity = normalise_min_max(
        feasible.iter().map(|&i| c.preferred.iter().map(|(w, d)| w * d.on(world.nodes[i].node)).sum()).collect(),
    );
    let spread = match c.owner {
        Some(owner) => reverse_by_max(feasible.iter().map(|&i| i64::from(world.nodes[i].owner_count(owner))).collect()),
        None => vec![0; feasible.len()],
    };
    let taints = reverse_by_max(feasible.iter().map(|&i| soft_taints(c.pod, world, i)).collect());
    let uid = c.pod.metadata.uid.as_str();
    (0..feasible.len())
        .map(|k| {
            let total = RESOURCE_WEIGHT * resource[k]
                + NODE_AFFINITY_WEIGHT * node_affinity[k]
                + POD_AFFINITY_WEIGHT * pod_affinity[k]
                + SPREAD_WEIGHT * spread[k]
                + TAINT_WEIGHT * taints[k];
            let node = feasible[k];
            (total, seeded_hash(seed, &[uid, world.nodes[node].name()]), node)
        })
        .max()
        .map(|(_, _, node)| node)
        .expect("pick is called with at least one feasible node")
}

/// Cpu and memory averaged, each the share free (least allocated) or used
/// (most allocated) after placing the Pod.
fn resource_score(world: &World<'_>, node: usize, c: &Candidate<'_>, scoring: Scoring) -> i64 {
    let s = &world.nodes[node];
    let one = |used: u64, want: u64, have: u64| -> i64 {
        if have == 0 {
            return 0;
        }
        let after = u128::from(used.saturating_add(want));
        let have = u128::from(have);
        let score = match scoring {
            Scoring::LeastAllocated => have.saturating_sub(after) * 100 / have,
            Scoring::MostAllocated => after.min(have) * 100 / have,
        };
        score as i64
    };
    let cpu = one(s.scored_cpu_millis, c.scored.0, s.allocatable.cpu_millis);
    let memory = one(s.scored_memory_bytes, c.scored.1, s.allocatable.memory_bytes);
    (cpu + memory) / 2
}

fn preferred_node_affinity(pod: &Pod, world: &World<'_>, node: usize) -> i64 {
    let n = world.nodes[node].node;
    pod.spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .map_or(0, |na| {
            na.preferred_during_scheduling_ignored_during_execution
                .iter()
                .filter(|p| term_matches(&p.preference, n))
                .map(|p| i64::from(p.weight))
                .sum()
        })
}

fn soft_taints(pod: &Pod, world: &World<'_>, node: usize) -> i64 {
    let n = world.nodes[node].node;
    n.spec.taints.iter().filter(|t| t.effect == "PreferNoSchedule" && !pod_tolerates(pod, t)).count() as i64
}

fn normalise_by_max(raw: Vec<i64>) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.into_iter().map(|v| if max > 0 { v.max(0) * MAX_SCORE / max } else { 0 }).collect()
}

/// Fewer is better: the node with the most gets 0, a node with none 100.
fn reverse_by_max(raw: Vec<i64>) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.into_iter().map(|v| if max > 0 { (max - v) * MAX_SCORE / max } else { MAX_SCORE }).collect()
}

fn normalise_min_max(raw: Vec<i64>) -> Vec<i64> {
    let (min, max) = (raw.iter().copied().min().unwrap_or(0), raw.iter().copied().max().unwrap_or(0));
    raw.into_iter().map(|v| if max > min { (v - min) * MAX_SCORE / (max - min) } else { 0 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisations_map_onto_zero_to_hundred() {
        assert_eq!(normalise_by_max(vec![0, 5, 10]), vec![0, 50, 100]);
        assert_eq!(normalise_by_max(vec![0, 0]), vec![0, 0]);
        assert_eq!(reverse_by_max(vec![0, 1, 2]), vec![100, 50, 0]);
        assert_eq!(reverse_by_max(vec![0, 0]), vec![100, 100]);
        assert_eq!(normalise_min_max(vec![-4, 0, 4]), vec![0, 50, 100]);
        assert_eq!(normalise_min_max(vec![3, 3]), vec![0, 0]);
    }
}
