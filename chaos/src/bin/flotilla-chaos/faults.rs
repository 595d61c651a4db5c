//! The nemesis: one fault episode after another, each one fault or two at
//! once, chosen by the seed, each healed before the next begins.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::ValueEnum;
use flotilla_chaos::nemesis::{Container, Shape, apply_grudge, clock_offsets, grudge};
use flotilla_chaos::report::FaultWindow;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};

use crate::cluster::{Clock, PEERS, docker, leader};

/// Quiet time between episodes, so that the cluster shows it recovers.
const GAP_MS: std::ops::Range<u64> = 2_000..5_000;
/// How long an episode's faults stay in force: from shorter than a node is
/// declared lost (2 s with the compose timings) to well past it.
const HOLD_MS: std::ops::Range<u64> = 1_000..8_000;
/// One episode in this many combines two faults.
const COMBINE_ONE_IN: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Nemesis {
    /// One peer cut off from the others (logged: that peer).
    Isolate,
    /// Two peers cut off from the other three (logged: the two).
    Partition,
    /// Two pairs that cannot reach each other, both reaching a fifth peer
    /// (logged: the bridge).
    Bridge,
    /// Each peer reaches only its two neighbours on a ring (logged: the
    /// ring, in order).
    Ring,
    /// SIGKILL of one peer's container, restarted when the episode ends.
    Kill,
    /// SIGKILL of two peers.
    KillMinority,
    /// SIGKILL of the leader.
    KillLeader,
    /// SIGKILL of one peer's process alone, its container (the machine)
    /// and whatever the peer leaves running in it living on, as a peer
    /// crash on bare metal; restarted when the episode ends.
    KillPeer,
    /// One peer's container frozen (SIGSTOP of every process in it, as a
    /// machine that stalls), then thawed.
    Pause,
    /// One to five peers' clocks skewed by up to five minutes either way.
    Clock,
}

impl Nemesis {
    pub const ALL: [Nemesis; 10] = [
        Nemesis::Isolate,
        Nemesis::Partition,
        Nemesis::Bridge,
        Nemesis::Ring,
        Nemesis::Kill,
        Nemesis::KillMinority,
        Nemesis::KillLeader,
        Nemesis::KillPeer,
        Nemesis::Pause,
        Nemesis::Clock,
    ];

    pub fn name(self) -> String {
        self.to_possible_value().expect("no variant is skipped").get_name().to_string()
    }

    fn shape(self) -> Option<Shape> {
        match self {
            Nemesis::Isolate => Some(Shape::Isolate),
            Nemesis::Partition => Some(Shape::MajorityMinority),
            Nemesis::Bridge => Some(Shape::Bridge),
            Nemesis::Ring => Some(Shape::MajoritiesRing),
            _ => None,
        }
    }

    fn stops_processes(self) -> bool {
        matches!(self, Nemesis::Kill | Nemesis::KillMinority | Nemesis::KillLeader | Nemesis::KillPeer | Nemesis::Pause)
    }
}

/// The faults of one episode: one, or two of different sorts (a partition,
/// a process fault, a clock fault) that can act at once.
pub fn plan_episode(kinds: &[Nemesis], rng: &mut StdRng) -> Vec<Nemesis> {
    let first = *kinds.choose(rng).expect("at least one nemesis");
    let mut episode = vec![first];
    if rng.random_ratio(1, COMBINE_ONE_IN) {
        let sort = |n: Nemesis| (n.shape().is_some(), n.stops_processes(), n == Nemesis::Clock);
        let others: Vec<Nemesis> = kinds.iter().copied().filter(|k| sort(*k) != sort(first)).collect();
        if let Some(second) = others.choose(rng) {
            episode.push(*second);
        }
    }
    episode
}

/// What an episode did, to undo it.
#[derive(Default)]
struct Undo {
    killed: Vec<usize>,
    /// Peers whose process alone was killed.
    peer_killed: Vec<usize>,
    paused: Vec<usize>,
    partitioned: bool,
    skewed: Vec<usize>,
}

pub struct Nemeses {
    pub kinds: Vec<Nemesis>,
    /// Containers of peers 1 to 5.
    pub ids: Vec<String>,
    pub rng: StdRng,
    pub clock: Clock,
    pub stop: Arc<AtomicBool>,
}

impl Nemeses {
    /// Runs episodes until `stop`, then heals everything; returns the
    /// faults as they were in force.
    pub async fn run(mut self) -> anyhow::Result<Vec<FaultWindow>> {
        let mut log = Vec::new();
        if self.kinds.is_empty() {
            return Ok(log);
        }
        let outcome = self.episodes(&mut log).await;
        self.heal_everything();
        outcome.map(|()| log)
    }

    async fn episodes(&mut self, log: &mut Vec<FaultWindow>) -> anyhow::Result<()> {
        while !self.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(self.rng.random_range(GAP_MS))).await;
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let episode = plan_episode(&self.kinds, &mut self.rng);
            let hold = Duration::from_millis(self.rng.random_range(HOLD_MS));
            let mut undo = Undo::default();
            let mut started = Vec::new();
            // Partitions first: a killed container has no namespace to put
            // rules in.
            let mut ordered = episode.clone();
            ordered.sort_by_key(|n| n.shape().is_none());
            for kind in ordered {
                let peers = self.inject(kind, &mut undo).await?;
                started.push((kind, peers, self.clock.ns()));
            }
            let names: Vec<String> = started.iter().map(|(k, p, _)| format!("{} {p:?}", k.name())).collect();
            println!("{:>7.1} s  nemesis: {} for {:.1} s", self.clock.secs(), names.join(" + "), hold.as_secs_f64());
            tokio::time::sleep(hold).await;
            self.undo(&undo)?;
            let end_ns = self.clock.ns();
            for (kind, peers, start_ns) in started {
                log.push(FaultWindow { fault: kind.name(), peers, start_ns, end_ns });
            }
        }
        Ok(())
    }

    /// Starts one fault; returns the peers it struck (1-based).
    async fn inject(&mut self, kind: Nemesis, undo: &mut Undo) -> anyhow::Result<Vec<u64>> {
        let mut order: Vec<usize> = (0..PEERS as usize).collect();
        order.shuffle(&mut self.rng);
        // A process fault in an episode with a partition must not strike a
        // peer already struck.
        order.retain(|p| !undo.killed.contains(p) && !undo.peer_killed.contains(p) && !undo.paused.contains(p));
        let peers = |indices: &[usize]| indices.iter().map(|i| *i as u64 + 1).collect::<Vec<u64>>();
        if let Some(shape) = kind.shape() {
            let mut all: Vec<usize> = (0..PEERS as usize).collect();
            all.shuffle(&mut self.rng);
            let containers = self.containers()?;
            let g = grudge(shape, &all);
            apply_grudge(&containers, &g)?;
            undo.partitioned = true;
            // The peers that tell the shape: the one cut off, the minority,
            // the bridge, or everyone in ring order.
            let n = all.len();
            let telling: &[usize] = match shape {
                Shape::Isolate => &all[..1],
                Shape::MajorityMinority => &all[..(n - 1) / 2],
                Shape::Bridge => &all[n / 2..n / 2 + 1],
                Shape::MajoritiesRing => &all,
            };
            return Ok(peers(telling));
        }
        match kind {
            Nemesis::Kill | Nemesis::KillMinority | Nemesis::KillLeader => {
                let victims: Vec<usize> = match kind {
                    Nemesis::KillMinority => order.iter().take(2).copied().collect(),
                    Nemesis::KillLeader => match leader().await {
                        Some(l) if order.contains(&(l as usize - 1)) => vec![l as usize - 1],
                        _ => order.iter().take(1).copied().collect(),
                    },
                    _ => order.iter().take(1).copied().collect(),
                };
                for v in &victims {
                    docker(&["kill", "--signal", "KILL", &self.ids[*v]])?;
                    undo.killed.push(*v);
                }
                Ok(peers(&victims))
            }
            Nemesis::KillPeer => {
                let victim = order[0];
                // Through the container's keeper (cluster-config/compose/keeper.sh).
                docker(&["exec", &self.ids[victim], "sh", "-c", "touch /tmp/peer-down && kill -KILL $(cat /tmp/peer.pid)"])?;
                undo.peer_killed.push(victim);
                Ok(peers(&[victim]))
            }
            Nemesis::Pause => {
                let victim = order[0];
                docker(&["pause", &self.ids[victim]])?;
                undo.paused.push(victim);
                Ok(peers(&[victim]))
            }
            Nemesis::Clock => {
                let offsets = clock_offsets(PEERS as usize, &mut self.rng);
                let struck: Vec<usize> = offsets.iter().map(|(p, _)| *p).filter(|p| !undo.killed.contains(p)).collect();
                for (p, offset_ms) in offsets.iter().filter(|(p, _)| struck.contains(p)) {
                    Container::inspect(&self.ids[*p])?.skew_clock(*offset_ms)?;
                    undo.skewed.push(*p);
                }
                let shown: Vec<String> = offsets.iter().map(|(p, o)| format!("peer{} {:+.1} s", p + 1, *o as f64 / 1e3)).collect();
                println!("{:>7.1} s  clock offsets: {}", self.clock.secs(), shown.join(", "));
                Ok(peers(&struck))
            }
            _ => unreachable!("partitions have a shape"),
        }
    }

    fn containers(&self) -> anyhow::Result<Vec<Container>> {
        Ok(self.ids.iter().map(|id| Container::inspect(id)).collect::<Result<_, _>>()?)
    }

    fn undo(&self, undo: &Undo) -> anyhow::Result<()> {
        for p in &undo.paused {
            docker(&["unpause", &self.ids[*p]])?;
        }
        for p in &undo.killed {
            docker(&["start", &self.ids[*p]])?;
        }
        for p in &undo.peer_killed {
            docker(&["exec", &self.ids[*p], "rm", "-f", "/tmp/peer-down"])?;
        }
        for p in &undo.skewed {
            Container::inspect(&self.ids[*p])?.skew_clock(0)?;
        }
        if undo.partitioned {
            for c in self.containers()? {
                c.heal()?;
            }
        }
        Ok(())
    }

    /// Leaves every peer running, connected and on time, whatever state an
    /// error left them in.
    fn heal_everything(&self) {
        for id in &self.ids {
            let _ = docker(&["unpause", id]);
            let _ = docker(&["start", id]);
            let _ = docker(&["exec", id, "rm", "-f", "/tmp/peer-down"]);
        }
        for id in &self.ids {
            if let Ok(c) = Container::inspect(id) {
                if let Err(e) = c.heal() {
                    eprintln!("cannot heal {id}: {e}");
                }
                if let Err(e) = c.skew_clock(0) {
                    eprintln!("cannot reset the clock of {id}: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn episodes_combine_only_faults_of_different_sorts() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut combined = 0;
        for _ in 0..500 {
            let e = plan_episode(&Nemesis::ALL, &mut rng);
            assert!(!e.is_empty() && e.len() <= 2);
            if let [a, b] = e[..] {
                combined += 1;
                assert!(!(a.shape().is_some() && b.shape().is_some()), "{e:?}");
                assert!(!(a.stops_processes() && b.stops_processes()), "{e:?}");
                assert!(!(a == Nemesis::Clock && b == Nemesis::Clock), "{e:?}");
            }
        }
        assert!((100..250).contains(&combined), "about one in three: {combined}");
        assert_eq!(plan_episode(&[Nemesis::Kill], &mut rng), vec![Nemesis::Kill]);
    }
}
