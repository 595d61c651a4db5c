//! One cgroup per container under a `flotilla` parent, for memory and cpu
//! limits, out-of-memory detection and killing everything a container
//! started. Works with cgroup v2 (unified) and v1 (memory and cpu
//! hierarchies).

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::sys;

const PARENT: &str = "flotilla";
/// cfs period: 100 ms, as Kubernetes uses.
const CPU_PERIOD_US: u64 = 100_000;
/// The kernel refuses quotas under 1 ms.
const MIN_CPU_QUOTA_US: u64 = 1_000;
/// Rounds of killing a cgroup's processes before giving up (each one
/// catches what was forked during the previous).
const KILL_ROUNDS: usize = 50;

#[derive(Clone, Debug)]
enum Layout {
    V2 { parent: PathBuf },
    V1 { memory: PathBuf, cpu: PathBuf },
}

/// The cgroup hierarchy this machine lets the peer use.
#[derive(Clone, Debug)]
pub(crate) struct Cgroups {
    layout: Layout,
}

/// A container's cgroup (in each hierarchy for v1).
#[derive(Clone, Debug)]
pub(crate) struct ContainerCgroup {
    v2: bool,
    /// Where its processes are listed: one directory for v2, memory then
    /// cpu for v1.
    dirs: Vec<PathBuf>,
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn ensure_dir(path: &Path) -> io::Result<()> {
    match std::fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        }
        _ => Ok(()),
    }
}

impl Cgroups {
    /// Finds the hierarchy under `root` (normally `/sys/fs/cgroup`), makes
    /// the `flotilla` parent and proves a container cgroup can be made and
    /// limited; the error says why not.
    pub(crate) fn detect(root: &Path) -> Result<Cgroups, String> {
        let layout = if root.join("cgroup.controllers").exists() {
            let parent = root.join(PARENT);
            // Controllers must be enabled on the way down; the root's write
            // may fail where another manager owns it, and then the check
            // below tells whether they are on anyway.
            let _ = write(&root.join("cgroup.subtree_control"), "+memory +cpu");
            ensure_dir(&parent).map_err(|e| e.to_string())?;
            let _ = write(&parent.join("cgroup.subtree_control"), "+memory +cpu");
            let enabled =
                std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
            if !(enabled.contains("memory") && enabled.contains("cpu")) {
                return Err(format!(
                    "the memory and cpu controllers cannot be enabled under {}",
                    parent.display()
                ));
            }
            Layout::V2 { parent }
        } else if root.join("memory").is_dir() && root.join("cpu").is_dir() {
            let (memory, cpu) = (
                root.join("memory").join(PARENT),
                root.join("cpu").join(PARENT),
            );
            ensure_dir(&memory).map_err(|e| e.to_string())?;
            ensure_dir(&cpu).map_err(|e| e.to_string())?;
            Layout::V1 { memory, cpu }
        } else {
            return Err(format!(
                "no cgroup v2 or v1 memory and cpu hierarchy at {}",
                root.display()
            ));
        };
        let cgroups = Cgroups { layout };
        let probe = format!("probe-{}", std::process::id());
        let made = cgroups
            .create(&probe, Some(64 << 20), Some(500))
            .map_err(|e| e.to_string())?;
        made.remove().map_err(|e| e.to_string())?;
        Ok(cgroups)
    }

    /// The cgroup named `name`, whether or not it exists.
    pub(crate) fn cgroup(&self, name: &str) -> ContainerCgroup {
        match &self.layout {
            Layout::V2 { parent } => ContainerCgroup {
                v2: true,
                dirs: vec![parent.join(name)],
            },
            Layout::V1 { memory, cpu } => ContainerCgroup {
                v2: false,
                dirs: vec![memory.join(name), cpu.join(name)],
            },
        }
    }

    /// Makes (or re-uses) the cgroup `name` with these limits.
    pub(crate) fn create(
        &self,
        name: &str,
        memory_bytes: Option<u64>,
        cpu_millis: Option<u64>,
    ) -> io::Result<ContainerCgroup> {
        let cgroup = self.cgroup(name);
        for dir in &cgroup.dirs {
            ensure_dir(dir)?;
        }
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
}

impl ContainerCgroup {
    /// `cgroup.procs` of each directory, opened for a child to join.
    pub(crate) fn open_procs(&self) -> io::Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
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

    pub(crate) fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Kills every process in the cgroup, even those that left the
    /// container's process group, and waits (bounded) until none is left.
    pub(crate) fn kill_all(&self) {
        let kill_file = self.dirs[0].join("cgroup.kill");
        for _ in 0..KILL_ROUNDS {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            if self.v2 && kill_file.exists() {
                let _ = write(&kill_file, "1");
            } else {
                for pid in pids {
                    sys::kill_pid(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Removes the cgroup; one still holding processes cannot be removed,
    /// so they are killed first.
    pub(crate) fn remove(&self) -> io::Result<()> {
        self.kill_all();
        let mut last = Ok(());
        for _ in 0..KILL_ROUNDS {
            last = Ok(());
            for dir in &self.dirs {
                match std::fs::remove_dir(dir) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        last = Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
                    }
                    _ => {}
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
