//! `flotilla-sim --seed S` replays one seed and prints its trace;
//! `flotilla-sim --seeds N` runs N seeds and prints one line per seed.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use flotilla_sim::{PlantedBug, SimOptions};

#[derive(Parser)]
#[command(about = "Deterministic simulation of a Flotilla cluster")]
struct Args {
    /// Replay this seed and print everything that happened.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds, from --first.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// The first seed of a --seeds run.
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Peers in the simulated cluster (1, 2, 3 or 5). One or two peers
    /// have one voter; two have a learner besides.
    #[arg(long, default_value_t = 3)]
    peers: usize,
    /// Simulated milliseconds of faults after the cluster has booted.
    #[arg(long, default_value_t = 30_000)]
    faults_ms: u64,
    /// Plant a known bug, to see the invariants catch it: the leader
    /// declares a node lost before the node has fenced its Pods.
    #[arg(long)]
    planted_early_node_loss: bool,
    /// Plant a known bug: disks acknowledge syncs they never make.
    #[arg(long, conflicts_with = "planted_early_node_loss")]
    planted_unsynced_disk: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if ![1, 2, 3, 5].contains(&args.peers) {
        eprintln!("--peers: must be 1, 2, 3 or 5");
        return ExitCode::from(2);
    }
    let options = |seed| SimOptions {
        seed,
        peers: args.peers,
        faults_ms: args.faults_ms,
        planted_bug: if args.planted_early_node_loss {
            Some(PlantedBug::EarlyNodeLoss)
        } else if args.planted_unsynced_disk {
            Some(PlantedBug::UnsyncedDisk)
        } else {
            None
        },
    };
    if let Some(seed) = args.seed {
        let started = Instant::now();
        let report = flotilla_sim::run(&options(seed));
        for line in &report.trace {
            println!("{line}");
        }
        println!("{}", summary(&report, started.elapsed().as_secs_f64()));
        return if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let mut failed = Vec::new();
    let started = Instant::now();
    for seed in args.first..args.first + args.seeds {
        let one = Instant::now();
        let report = flotilla_sim::run(&options(seed));
        println!("{}", summary(&report, one.elapsed().as_secs_f64()));
        if !report.passed() {
            failed.push(seed);
        }
    }
    let total = started.elapsed().as_secs_f64();
    println!(
        "{} of {} seeds clean in {total:.1} s ({:.2} s per seed){}",
        args.seeds as usize - failed.len(),
        args.seeds,
        total / args.seeds.max(1) as f64,
        if failed.is_empty() { String::new() } else { format!("; failed: {failed:?} (replay: flotilla-sim --seed S)") }
    );
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn summary(r: &flotilla_sim::Report, wall_s: f64) -> String {
    let outcome = match &r.violation {
        None => format!("ok, converged {} ms after the heal", r.converged_after_ms.unwrap_or(0)),
        Some(v) => format!("FAILED: {v}"),
    };
    format!(
        "seed {}: {} peers, {} faults, {} writes acknowledged, {} entries committed, {:.1} s simulated in {wall_s:.1} s: {outcome}",
        r.seed,
        r.peers,
        r.faults,
        r.writes_acked,
        r.committed_entries,
        r.sim_ms as f64 / 1000.0
    )
}
