//! Killing and taking in what a previous run of the peer left in the
//! state directory.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::records::{
    ContainerRecord, ExitRecord, SandboxRecord, container_id, read_json, write_json,
};
use super::{Container, Inner, KILL_WAIT, Sandbox, SandboxState, sys};
use crate::spec::valid_name;

impl Inner {
    /// Takes in the sandboxes a previous run left in the state directory:
    /// kills what still runs of them and records their containers exited,
    /// so the agent finds them and removes or re-creates them.
    pub(super) fn adopt_leftovers(&self) -> io::Result<()> {
        let mut killed = Vec::new();
        for entry in std::fs::read_dir(&self.state_dir)? {
            let entry = entry?;
            let Some(uid) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !valid_name(&uid) || !entry.file_type()?.is_dir() {
                continue;
            }
            let dir = entry.path();
            let record: Option<SandboxRecord> = read_json(&dir.join("sandbox.json"));
            if let Some(holder) = record.as_ref().and_then(|r| r.holder)
                && sys::is_same_process(holder.pid, holder.start_ticks)
            {
                sys::kill_group(holder.pid, libc::SIGKILL);
                killed.push(holder.pid);
            }
            let mut containers = BTreeMap::new();
            for file in std::fs::read_dir(dir.join("containers"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = file.path();
                // A record half-written when the peer died is not one.
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let Some(mut record) = read_json::<ContainerRecord>(&path) else {
                    continue;
                };
                if !valid_name(&record.name) {
                    continue;
                }
                let cgroup = self
                    .cgroups
                    .as_ref()
                    .map(|c| c.container(&uid, &record.name));
                if record.exit.is_none() {
                    if let Some(p) = record.process
                        && sys::is_same_process(p.pid, p.start_ticks)
                    {
                        sys::kill_group(p.pid, libc::SIGKILL);
                        killed.push(p.pid);
                    }
                    if let Some(cgroup) = &cgroup {
                        cgroup.kill_all();
                    }
                    record.exit = Some(ExitRecord {
                        exit_code: 128 + libc::SIGKILL,
                        signal: Some(libc::SIGKILL),
                        oom_killed: false,
                        finished_at_unix_ms: sys::unix_ms(),
                    });
                    write_json(&path, &record)?;
                }
                let container = Container {
                    id: container_id(&uid, &record.name, record.attempt),
                    name: record.name.clone(),
                    attempt: record.attempt,
                    pid: 0,
                    has_init: false,
                    start_ticks: 0,
                    started_at_unix_ms: record.started_at_unix_ms,
                    env: Vec::new(),
                    working_dir: None,
                    cgroup,
                    exit: watch::Sender::new(record.exit_status()),
                };
                containers.insert(record.name.clone(), Arc::new(container));
            }
            let state = SandboxState {
                containers,
                ..SandboxState::default()
            };
            let sandbox = Sandbox {
                uid: uid.clone(),
                dir,
                ops: Arc::default(),
                state: Mutex::new(state),
            };
            self.sandboxes().insert(uid, Arc::new(sandbox));
        }
        // Killed processes are gone once their parent reaps them; wait a
        // bounded while so a caller sees them gone.
        let deadline = std::time::Instant::now() + KILL_WAIT;
        while killed
            .iter()
            .any(|pid| sys::start_ticks(*pid).is_some() && !is_zombie(*pid))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            t.rfind(')')
                .map(|i| t[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
