//! Faults injected into a cluster of containers from the host.
//!
//! Partitions are nftables rules inside each container's network namespace,
//! entered with `nsenter`: they drop traffic between the two sides of a cut
//! in both directions, while the host still reaches every peer. A partition
//! is a *grudge*: for each peer, the peers it cannot hear from, so one shape
//! covers an isolated peer, a majority and a minority, a bridge and a ring.
//! Process faults are `docker kill`, `docker pause` (the whole container is
//! frozen, as a machine that stalls) and clock skew through the peer's
//! offset file (`[faults] clock = true`).

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// The nftables table the nemesis owns in each namespace; healing deletes
/// it whole.
const TABLE: &str = "flotilla_chaos";
/// Where a peer with `[faults] clock = true` reads its clock's offset, as
/// seen from inside its container.
const CLOCK_OFFSET_PATH: &str = "data/clock-offset-ms";
/// The largest clock skew the nemesis sets: five minutes either way.
pub const MAX_SKEW_MS: i64 = 300_000;

#[derive(Debug, thiserror::Error)]
pub enum NemesisError {
    #[error("{command}: {message}")]
    Command { command: String, message: String },
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, NemesisError> {
    let command = format!("{program} {}", args.join(" "));
    let failed = |message: String| NemesisError::Command { command: command.clone(), message };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let Some(text) = stdin {
        child.stdin.take().expect("piped").write_all(text.as_bytes()).map_err(|e| failed(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A container of the cluster, as the host sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub name: String,
    /// Its main process's pid on the host: the way into its namespaces.
    pub pid: u32,
    /// Its address on the cluster's network.
    pub ip: String,
}

impl Container {
    /// A running container; its pid and address change when it restarts,
    /// so inspect it again after a kill.
    pub fn inspect(name: &str) -> Result<Container, NemesisError> {
        let format = "{{.State.Pid}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}";
        let out = run("docker", &["inspect", "--format", format, name], None)?;
        let mut words = out.split_whitespace();
        let bad = |what: &str| NemesisError::Command { command: format!("docker inspect {name}"), message: format!("no {what} in {out:?}") };
        let pid = words.next().and_then(|p| p.parse().ok()).filter(|p| *p > 0).ok_or_else(|| bad("running process"))?;
        let ip = words.next().ok_or_else(|| bad("address"))?.to_string();
        Ok(Container { name: name.to_string(), pid, ip })
    }

    fn nft(&self, script: Option<&str>, args: &[&str]) -> Result<String, NemesisError> {
        let pid = self.pid.to_string();
        let mut all = vec!["--target", pid.as_str(), "--net", "nft"];
        all.extend_from_slice(args);
        run("nsenter", &all, script)
    }

    /// Drops every packet from or to `others` in this container.
    pub fn cut_off_from(&self, others: &[&Container]) -> Result<(), NemesisError> {
        self.heal()?;
        if others.is_empty() {
            return Ok(());
        }
        let ips: Vec<&str> = others.iter().map(|c| c.ip.as_str()).collect();
        let set = ips.join(", ");
        let script = format!(
            "table inet {TABLE} {{\n\
             chain input {{ type filter hook input priority -10; ip saddr {{ {set} }} drop; }}\n\
             chain output {{ type filter hook output priority -10; ip daddr {{ {set} }} drop; }}\n\
             }}\n"
        );
        self.nft(Some(&script), &["-f", "-"]).map(|_| ())
    }

    /// Removes this nemesis's rules, if any.
    pub fn heal(&self) -> Result<(), NemesisError> {
        let tables = self.nft(None, &["list", "tables"])?;
        if tables.lines().any(|l| l.trim() == format!("table inet {TABLE}")) {
            self.nft(None, &["delete", "table", "inet", TABLE])?;
        }
        Ok(())
    }

    /// Whether a TCP connection from this container's network namespace to
    /// `ip:port` opens within half a second: how a test sees a cut.
    pub fn can_connect(&self, ip: &str, port: u16) -> bool {
        let pid = self.pid.to_string();
        let probe = format!("exec 3<>/dev/tcp/{ip}/{port}");
        run("nsenter", &["--target", &pid, "--net", "timeout", "0.5", "bash", "-c", &probe], None).is_ok()
    }

    /// Sets the peer's clock offset (0: its host's time).
    pub fn skew_clock(&self, offset_ms: i64) -> Result<(), NemesisError> {
        let path = format!("/proc/{}/root/{CLOCK_OFFSET_PATH}", self.pid);
        let failed = |e: std::io::Error| NemesisError::Command { command: format!("write {path}"), message: e.to_string() };
        // Written whole and renamed, so the peer never reads half a number.
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, format!("{offset_ms}\n")).map_err(failed)?;
        std::fs::rename(&tmp, &path).map_err(failed)
    }
}

/// Cuts the cluster in two: no traffic crosses between `side` and `rest`.
pub fn partition(side: &[&Container], rest: &[&Container]) -> Result<(), NemesisError> {
    for c in side {
        c.cut_off_from(rest)?;
    }
    for c in rest {
        c.cut_off_from(side)?;
    }
    Ok(())
}

/// Removes every partition rule.
pub fn heal_all(containers: &[&Container]) -> Result<(), NemesisError> {
    for c in containers {
        c.heal()?;
    }
    Ok(())
}

/// For each peer (by index), the peers it cannot exchange traffic with.
/// Always symmetric.
pub type Grudge = Vec<BTreeSet<usize>>;

/// The shapes of partition, over peers `order` (a shuffled list of
/// indices, so that the seed picks who ends up where).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// One peer cut off from all others.
    Isolate,
    /// A minority of peers cut off from the majority.
    MajorityMinority,
    /// Two halves that cannot reach each other, both reaching one peer in
    /// the middle: the bridge is in every majority.
    Bridge,
    /// Each peer reaches only its neighbours on a ring: every peer sees a
    /// majority, no two of them the same one.
    MajoritiesRing,
}

/// The grudge `shape` makes over `order` (every peer's index once).
pub fn grudge(shape: Shape, order: &[usize]) -> Grudge {
    let n = order.len();
    let mut grudge: Grudge = vec![BTreeSet::new(); n];
    let mut cut = |a: usize, b: usize| {
        grudge[order[a]].insert(order[b]);
        grudge[order[b]].insert(order[a]);
    };
    match shape {
        Shape::Isolate => (1..n).for_each(|b| cut(0, b)),
        Shape::MajorityMinority => {
            let minority = n.saturating_sub(1) / 2;
            for a in 0..minority {
                (minority..n).for_each(|b| cut(a, b));
            }
        }
        Shape::Bridge => {
            // order[0..half] | order[half] (bridge) | order[half+1..]
            let half = n / 2;
            for a in 0..half {
                (half + 1..n).for_each(|b| cut(a, b));
            }
        }
        Shape::MajoritiesRing => {
            // On a ring, a peer hears itself and `reach` neighbours on each
            // side: at least a majority (a bare one with five peers).
            let reach = (n / 2).div_ceil(2);
            for a in 0..n {
                for b in a + 1..n {
                    let distance = (b - a).min(n - (b - a));
                    if distance > reach {
                        cut(a, b);
                    }
                }
            }
        }
    }
    grudge
}

/// Puts `grudge` in place over `containers` (by index), replacing any
/// partition before.
pub fn apply_grudge(containers: &[Container], grudge: &Grudge) -> Result<(), NemesisError> {
    for (i, c) in containers.iter().enumerate() {
        let others: Vec<&Container> = grudge[i].iter().map(|j| &containers[*j]).collect();
        c.cut_off_from(&others)?;
    }
    Ok(())
}

/// Peers that can still reach each other, directly, in `grudge`: whether
/// `a` and `b` exchange traffic.
pub fn connected(grudge: &Grudge, a: usize, b: usize) -> bool {
    !grudge[a].contains(&b)
}

/// Clock offsets for a clock fault: one to all peers skewed, each by up to
/// `MAX_SKEW_MS` either way, chosen by `rng`.
pub fn clock_offsets(peers: usize, rng: &mut impl Rng) -> Vec<(usize, i64)> {
    let mut order: Vec<usize> = (0..peers).collect();
    order.shuffle(rng);
    let count = rng.random_range(1..=peers);
    let mut skews: Vec<(usize, i64)> = order[..count].iter().map(|p| (*p, rng.random_range(-MAX_SKEW_MS..=MAX_SKEW_MS))).collect();
    skews.sort();
    skews
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn reachable(grudge: &Grudge, a: usize) -> BTreeSet<usize> {
        (0..grudge.len()).filter(|b| *b != a && connected(grudge, a, *b)).collect()
    }

    fn symmetric(grudge: &Grudge) -> bool {
        (0..grudge.len()).all(|a| grudge[a].iter().all(|b| grudge[*b].contains(&a) && *b != a))
    }

    #[test]
    fn every_shape_is_symmetric_and_cuts_what_it_says() {
        let order = [3, 0, 4, 1, 2];
        let majority = 3;
        for shape in [Shape::Isolate, Shape::MajorityMinority, Shape::Bridge, Shape::MajoritiesRing] {
            let g = grudge(shape, &order);
            assert!(symmetric(&g), "{shape:?}: {g:?}");
            let sees_majority: Vec<bool> = (0..5).map(|p| reachable(&g, p).len() + 1 >= majority).collect();
            match shape {
                Shape::Isolate => {
                    assert!(reachable(&g, 3).is_empty());
                    assert_eq!(sees_majority.iter().filter(|m| **m).count(), 4);
                }
                Shape::MajorityMinority => {
                    assert_eq!(reachable(&g, 3), BTreeSet::from([0]));
                    assert_eq!(reachable(&g, 4), BTreeSet::from([1, 2]));
                }
                Shape::Bridge => {
                    // 3, 0 | 4 | 1, 2
                    assert_eq!(reachable(&g, 4).len(), 4, "the bridge reaches everyone");
                    assert_eq!(reachable(&g, 3), BTreeSet::from([0, 4]));
                    assert_eq!(reachable(&g, 2), BTreeSet::from([1, 4]));
                    assert!(sees_majority.iter().all(|m| *m));
                }
                Shape::MajoritiesRing => {
                    assert!(sees_majority.iter().all(|m| *m), "{g:?}");
                    let views: BTreeSet<BTreeSet<usize>> = (0..5)
                        .map(|p| {
                            let mut v = reachable(&g, p);
                            v.insert(p);
                            v
                        })
                        .collect();
                    assert_eq!(views.len(), 5, "no two peers see the same majority");
                    assert!((0..5).all(|p| reachable(&g, p).len() == 2));
                }
            }
        }
    }

    #[test]
    fn a_ring_of_seven_gives_every_peer_a_majority_of_its_own() {
        let order: Vec<usize> = (0..7).collect();
        let g = grudge(Shape::MajoritiesRing, &order);
        assert!(symmetric(&g));
        for p in 0..7 {
            assert!(reachable(&g, p).len() + 1 >= 4, "{g:?}");
            assert!(!reachable(&g, p).is_empty() && reachable(&g, p).len() < 6, "{g:?}");
        }
    }

    #[test]
    fn clock_offsets_are_bounded_and_fixed_by_the_seed() {
        let a = clock_offsets(5, &mut StdRng::seed_from_u64(9));
        assert_eq!(a, clock_offsets(5, &mut StdRng::seed_from_u64(9)));
        for seed in 0..200 {
            let offsets = clock_offsets(5, &mut StdRng::seed_from_u64(seed));
            assert!(!offsets.is_empty() && offsets.len() <= 5);
            assert!(offsets.iter().all(|(p, o)| *p < 5 && o.abs() <= MAX_SKEW_MS));
        }
    }
}
