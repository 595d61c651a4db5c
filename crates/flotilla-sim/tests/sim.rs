//! The simulator in CI: fifty seeds with every fault, one- and two-peer
//! clusters, exact replay, and a planted bug the invariants must catch.

use flotilla_sim::{PlantedBug, Report, SimOptions};

fn run_seeds(seeds: std::ops::RangeInclusive<u64>) -> Vec<Report> {
    seeds.map(|seed| flotilla_sim::run(&SimOptions::new(seed))).collect()
}

fn assert_clean(reports: &[Report]) {
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("seed {}: {} (replay: cargo run -p flotilla-sim -- --seed {})", r.seed, r.violation.as_deref().unwrap_or(""), r.seed))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    for r in reports {
        // Each seed did real work: faults struck, writes were acknowledged,
        // the cluster came back.
        assert!(r.faults > 0 && r.writes_acked > 0 && r.converged_after_ms.is_some(), "seed {}: {r:?}", r.seed);
    }
}

// Fifty seeds in two halves, so that two test threads share them.
#[test]
fn seeds_1_to_25_keep_every_invariant_and_converge() {
    assert_clean(&run_seeds(1..=25));
}

#[test]
fn seeds_26_to_50_keep_every_invariant_and_converge() {
    assert_clean(&run_seeds(26..=50));
}

/// One peer (the one voter, its own quorum) and two (a voter and a
/// learner), under the faults that apply to them, keep the same
/// invariants and converge.
#[test]
fn one_and_two_peer_clusters_keep_every_invariant_and_converge() {
    let reports: Vec<Report> = [1, 2]
        .into_iter()
        .flat_map(|peers| (1..=4).map(move |seed| SimOptions { peers, faults_ms: 15_000, ..SimOptions::new(seed) }))
        .map(|options| flotilla_sim::run(&options))
        .collect();
    assert_clean(&reports);
}

#[test]
fn a_seed_replays_exactly() {
    let options = SimOptions { faults_ms: 15_000, ..SimOptions::new(20261124) };
    let first = flotilla_sim::run(&options);
    let second = flotilla_sim::run(&options);
    assert!(first.trace.len() > 50, "{:?}", first.trace);
    if let Some(at) = first.trace.iter().zip(&second.trace).position(|(a, b)| a != b) {
        panic!("the traces part at line {at}:\n  {}\n  {}", first.trace[at], second.trace[at]);
    }
    assert_eq!(first.trace.len(), second.trace.len());
    assert_eq!((first.steps, first.writes_acked), (second.steps, second.writes_acked));
}

#[test]
fn a_node_declared_lost_before_it_fenced_is_caught() {
    const MAX_SEEDS: u64 = 20;
    let caught = (1..=MAX_SEEDS).find_map(|seed| {
        let report = flotilla_sim::run(&SimOptions { planted_bug: Some(PlantedBug::EarlyNodeLoss), ..SimOptions::new(seed) });
        report.violation.filter(|v| v.contains("runs twice")).map(|v| (seed, v))
    });
    let (seed, violation) = caught.unwrap_or_else(|| panic!("no seed of {MAX_SEEDS} caught the planted bug"));
    eprintln!("seed {seed} caught the planted bug: {violation}");
}

/// Each seed runs in a process of its own: the lying disk can trip an
/// assertion inside openraft on a path whose unwinding the simulated
/// runtime cannot contain, and the process aborts. That counts as caught
/// too, with the assertion's message as the evidence.
#[test]
fn a_disk_that_acknowledges_syncs_it_never_made_is_caught() {
    const MAX_SEEDS: u64 = 10;
    let caught = (1..=MAX_SEEDS).find_map(|seed| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-sim"))
            .args(["--seed", &seed.to_string(), "--planted-unsynced-disk"])
            .output()
            .expect("running flotilla-sim");
        if out.status.success() {
            return None;
        }
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let evidence = text.lines().find(|l| l.contains("FAILED:") || l.contains("log reversion"))?;
        Some((seed, evidence.to_string()))
    });
    let (seed, violation) = caught.unwrap_or_else(|| panic!("no seed of {MAX_SEEDS} caught the lying disk"));
    eprintln!("seed {seed} caught the lying disk: {violation}");
}
