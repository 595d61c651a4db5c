//! A cgroup per Pod, whatever its limits, with one per container inside
//! for memory and cpu limits and out-of-memory detection, so that every
//! process a Pod starts can be found and killed as one. Works with cgroup
//! v2 (unified) and v1 (memory, cpu and, to kill a Pod as a whole,
//! freezer hierarchies).
//!
//! Layout, under each hierarchy's root:
//!
//! ```text
//! flotilla/<node>/<pod uid>/<container>   a container's processes
//! flotilla/<node>/<pod uid>/.holder       the Pod's namespace holder
//! ```
//!
//! `<node>` names the peer's state directory, so that peers sharing a
//! machine never touch each other's Pods. `.holder` cannot clash with a
//! container name, which is a DNS label.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::sys;

const PARENT: &str = "flotilla";
const HOLDER: &str = ".holder";
/// cfs period: 100 ms, as Kubernetes uses.
const CPU_PERIOD_US: u64 = 100_000;
/// The kernel refuses quotas under 1 ms.
const MIN_CPU_QUOTA_US: u64 = 1_000;
/// Rounds of killing a cgroup's processes before giving up (each one
/// catches what was forked during the previous, where nothing freezes).
const KILL_ROUNDS: usize = 50;
/// Polls (10 ms apart) for a freeze to take hold.
const FREEZE_POLLS: usize = 100;
/// Nesting below a Pod's cgroup that is searched for processes at most.
const MAX_DEPTH: usize = 8;

#[derive(Clone, Debug)]
enum Layout {
    V2 {
        node: PathBuf,
    },
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        /// Without it a Pod is killed in rounds, which a fork bomb outruns.
        freezer: Option<PathBuf>,
    },
}

/// The cgroups of this peer's Pods.
#[derive(Clone, Debug)]
pub(crate) struct Cgroups {
    layout: Layout,
}

/// One cgroup, in each hierarchy for v1.
#[derive(Clone, Debug)]
pub(crate) struct Group {
    v2: bool,
    /// memory then cpu for v1; the one directory for v2.
    dirs: Vec<PathBuf>,
    /// The v1 freezer's directory.
    freezer: Option<PathBuf>,
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn ensure_dir(path: &Path) -> io::Result<()> {
    match std::fs::create_dir_all(path) {
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        Ok(()) => Ok(()),
    }
}

/// Enables the memory and cpu controllers for `dir`'s children (v2).
fn delegate(dir: &Path) -> io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&file).unwrap_or_default();
    if enabled.contains("memory") && enabled.contains("cpu") {
        return Ok(());
    }
    write(&file, "+memory +cpu")
}

impl Cgroups {
    /// Finds the hierarchy under `root` (normally `/sys/fs/cgroup`), makes
    /// the parent of this peer's Pods (`node` names it) and proves a
    /// container cgroup can be made and limited; the error says why not.
    pub(crate) fn detect(root: &Path, node: &str) -> Result<Cgroups, String> {
        let layout = if root.join("cgroup.controllers").exists() {
            let parent = root.join(PARENT);
            // Controllers must be enabled on the way down; the root's write
            // may fail where another manager owns it, and then the check
            // below tells whether they are on anyway.
            let _ = delegate(root);
            ensure_dir(&parent).map_err(|e| e.to_string())?;
            let _ = delegate(&parent);
            let node = parent.join(node);
            ensure_dir(&node).map_err(|e| e.to_string())?;
            let _ = delegate(&node);
            let enabled =
                std::fs::read_to_string(node.join("cgroup.subtree_control")).unwrap_or_default();
            if !(enabled.contains("memory") && enabled.contains("cpu")) {
                return Err(format!(
                    "the memory and cpu controllers cannot be enabled under {}",
                    node.display()
                ));
            }
            Layout::V2 { node }
        } else if root.join("memory").is_dir() && root.join("cpu").is_dir() {
            let under = |hierarchy: &str| root.join(hierarchy).join(PARENT).join(node);
            let (memory, cpu) = (under("memory"), under("cpu"));
            ensure_dir(&memory).map_err(|e| e.to_string())?;
            ensure_dir(&cpu).map_err(|e| e.to_string())?;
            let freezer = root
                .join("freezer")
                .is_dir()
                .then(|| under("freezer"))
                .filter(|dir| ensure_dir(dir).is_ok());
            Layout::V1 {
                memory,
                cpu,
                freezer,
            }
        } else {
            return Err(format!(
                "no cgroup v2 or v1 memory and cpu hierarchy at {}",
                root.display()
            ));
        };
        let cgroups = Cgroups { layout };
        let probe = format!("probe-{}", std::process::id());
        let made = cgroups
            .create_container(&probe, "probe", Some(64 << 20), Some(500))
            .map_err(|e| e.to_string())?;
        made.remove().map_err(|e| e.to_string())?;
        cgroups.pod(&probe).remove().map_err(|e| e.to_string())?;
        Ok(cgroups)
    }

    /// Whether a Pod is killed by freezing it first (or by `cgroup.kill`),
    /// rather than in rounds that a fast forker could outrun.
    pub(crate) fn kills_atomically(&self) -> bool {
        match &self.layout {
            Layout::V2 { node } => {
                node.join("cgroup.freeze").exists() || node.join("cgroup.kill").exists()
            }
            Layout::V1 { freezer, .. } => freezer.is_some(),
        }
    }

    /// The cgroup at `path` below this peer's parent, whether or not it
    /// exists.
    fn group(&self, path: &[&str]) -> Group {
        let at = |base: &Path| {
            path.iter()
                .fold(base.to_path_buf(), |dir, part| dir.join(part))
        };
        match &self.layout {
            Layout::V2 { node } => Group {
                v2: true,
                dirs: vec![at(node)],
                freezer: None,
            },
            Layout::V1 {
                memory,
                cpu,
                freezer,
            } => Group {
                v2: false,
                dirs: vec![at(memory), at(cpu)],
                freezer: freezer.as_deref().map(at),
            },
        }
    }

    /// This peer's parent of its Pods' cgroups, in each hierarchy.
    pub(crate) fn node_dirs(&self) -> Vec<PathBuf> {
        self.group(&[]).all_dirs().cloned().collect()
    }

    /// The Pod's cgroup, holding all of its processes.
    pub(crate) fn pod(&self, uid: &str) -> Group {
        self.group(&[uid])
    }

    fn create_pod(&self, uid: &str) -> io::Result<Group> {
        let pod = self.pod(uid);
        pod.make()?;
        if pod.v2 {
            delegate(&pod.dirs[0])?;
        }
        Ok(pod)
    }

    /// Makes (or re-uses) the cgroup of the Pod's namespace holder.
    pub(crate) fn create_holder(&self, uid: &str) -> io::Result<Group> {
        self.create_pod(uid)?;
        let holder = self.group(&[uid, HOLDER]);
        holder.make()?;
        Ok(holder)
    }

    /// The container's cgroup, whether or not it exists.
    pub(crate) fn container(&self, uid: &str, name: &str) -> Group {
        self.group(&[uid, name])
    }

    /// Makes (or re-uses) a container's cgroup with these limits.
    pub(crate) fn create_container(
        &self,
        uid: &str,
        name: &str,
        memory_bytes: Option<u64>,
        cpu_millis: Option<u64>,
    ) -> io::Result<Group> {
        self.create_pod(uid)?;
        let cgroup = self.container(uid, name);
        cgroup.make()?;
        let quota_us = cpu_millis.map(|m| (m * CPU_PERIOD_US / 1000).max(MIN_CPU_QUOTA_US));
        if cgroup.v2 {
            let dir = &cgroup.dirs[0];
            write(
                &dir.join("memory.max"),
                &memory_bytes.map_or("max".into(), |b| b.to_string()),
            )?;
            // Without swap limited, a hog would swap instead of being killed.
            if dir.join("memory.swap.max").exists() {
                write(
                    &dir.join("memory.swap.max"),
                    if memory_bytes.is_some() { "0" } else { "max" },
                )?;
            }
            let quota = quota_us.map_or("max".into(), |q| q.to_string());
            write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        } else {
            let (memory, cpu) = (&cgroup.dirs[0], &cgroup.dirs[1]);
            let limit = memory_bytes.map_or("-1".into(), |b| b.to_string());
            let memsw = memory.join("memory.memsw.limit_in_bytes");
            if memory_bytes.is_none() && memsw.exists() {
                // memsw must stay at least the plain limit: lift it first.
                write(&memsw, "-1")?;
            }
            write(&memory.join("memory.limit_in_bytes"), &limit)?;
            if memory_bytes.is_some() && memsw.exists() {
                write(&memsw, &limit)?;
            }
            write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write(
                &cpu.join("cpu.cfs_quota_us"),
                &quota_us.map_or("-1".into(), |q| q.to_string()),
            )?;
        }
        Ok(cgroup)
    }

    /// The uids of every Pod with a cgroup here, in any hierarchy.
    pub(crate) fn pod_uids(&self) -> Vec<String> {
        let root = self.group(&[]);
        let mut uids: Vec<String> = root
            .all_dirs()
            .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
            .collect();
        uids.sort_unstable();
        uids.dedup();
        uids
    }
}

impl Group {
    fn all_dirs(&self) -> impl Iterator<Item = &PathBuf> {
        self.dirs.iter().chain(&self.freezer)
    }

    fn make(&self) -> io::Result<()> {
        self.dirs.iter().try_for_each(|d| ensure_dir(d))?;
        // The v1 freezer is best effort: a Pod without it is killed in rounds.
        if let Some(freezer) = &self.freezer {
            let _ = ensure_dir(freezer);
        }
        Ok(())
    }

    /// `cgroup.procs` of each directory, opened for a child to join.
    pub(crate) fn open_procs(&self) -> io::Result<Vec<OwnedFd>> {
        self.all_dirs()
            .filter(|d| d.is_dir())
            .map(|d| sys::open_write(&d.join("cgroup.procs")))
            .collect()
    }

    /// How many times the kernel's out-of-memory killer struck here.
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = std::fs::read_to_string(self.dirs[0].join(file)).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// Every process in this cgroup and those below it, in any hierarchy.
    pub(crate) fn pids(&self) -> Vec<i32> {
        fn collect(dir: &Path, depth: usize, out: &mut Vec<i32>) {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
            if depth >= MAX_DEPTH {
                return;
            }
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    collect(&entry.path(), depth + 1, out);
                }
            }
        }
        let mut pids = Vec::new();
        for dir in self.all_dirs() {
            collect(dir, 0, &mut pids);
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Freezes the cgroup (and everything below it); false where it cannot.
    fn freeze(&self, frozen: bool) -> bool {
        let (file, value, done) = match (&self.freezer, self.v2) {
            (Some(dir), _) => (
                dir.join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
                None,
            ),
            (None, true) => (
                self.dirs[0].join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
                Some(self.dirs[0].join("cgroup.events")),
            ),
            (None, false) => return false,
        };
        if write(&file, value).is_err() {
            return false;
        }
        if !frozen {
            return true;
        }
        for _ in 0..FREEZE_POLLS {
            let state = match &done {
                None => std::fs::read_to_string(&file).is_ok_and(|s| s.trim() == "FROZEN"),
                Some(events) => std::fs::read_to_string(events)
                    .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1")),
            };
            if state {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Kills every process of the cgroup and below, however they forked
    /// or detached, as one: `cgroup.kill` on v2, else freeze, kill, thaw;
    /// rounds of kills where neither exists. Waits (bounded) until none is
    /// left and returns the pids it found.
    pub(crate) fn kill_all(&self) -> Vec<i32> {
        let found = self.pids();
        if found.is_empty() {
            return found;
        }
        let kill_file = self.dirs[0].join("cgroup.kill");
        if self.v2 && kill_file.exists() {
            let _ = write(&kill_file, "1");
        } else if self.freeze(true) {
            // Frozen, nothing can fork: one pass reaches every process,
            // and each dies as soon as it is thawed.
            for pid in self.pids() {
                sys::kill_pid(pid, libc::SIGKILL);
            }
            self.freeze(false);
        }
        for _ in 0..KILL_ROUNDS {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                sys::kill_pid(pid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        found
    }

    /// Removes the cgroup and those below it; processes still inside are
    /// killed first.
    pub(crate) fn remove(&self) -> io::Result<()> {
        self.kill_all();
        let mut last = Ok(());
        for _ in 0..KILL_ROUNDS {
            last = Ok(());
            for dir in self.all_dirs() {
                if let Err(e) = remove_tree(dir, 0) {
                    last = Err(e);
                }
            }
            if last.is_ok() {
                break;
            }
            // Killed processes leave the cgroup a moment after dying.
            std::thread::sleep(Duration::from_millis(10));
        }
        last
    }
}

/// The name of this peer's cgroups: its state directory's, hashed (FNV-1a),
/// so that peers sharing a machine, and test runs, never meet.
pub(crate) fn node_name(state_dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let path = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let hash = path
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// Kills every process an earlier run of this peer left in its Pods'
/// cgroups (a crash, or a kill that the parent-death signal did not
/// reach), logging each; removes the cgroups of Pods the state directory
/// no longer knows. Runs before the runtime serves, so before the node is
/// reported Ready.
pub(crate) fn kill_leftovers(cgroups: &Cgroups, state_dir: &Path) -> usize {
    let mut total = 0;
    for uid in cgroups.pod_uids() {
        let pod = cgroups.pod(&uid);
        let seen: Vec<String> = pod
            .pids()
            .into_iter()
            .map(|pid| {
                let command =
                    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                format!("{pid} ({})", command.trim())
            })
            .collect();
        let killed = pod.kill_all();
        if !killed.is_empty() {
            tracing::warn!(pod_uid = %uid, processes = %seen.join(", "), "killed processes an earlier run of this peer left running");
            total += killed.len();
        }
        if !state_dir.join(&uid).is_dir()
            && let Err(e) = pod.remove()
        {
            tracing::warn!(pod_uid = %uid, error = %e, "cannot remove a Pod's cgroup left from an earlier run");
        }
    }
    if total == 0 {
        tracing::info!("no process of an earlier run of this peer was left running");
    }
    total
}

/// Removes a cgroup directory, children first (a cgroup's files cannot be
/// deleted, only its directory once it has no children).
fn remove_tree(dir: &Path, depth: usize) -> io::Result<()> {
    if depth < MAX_DEPTH {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path(), depth + 1)?;
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
        }
        _ => Ok(()),
    }
}
