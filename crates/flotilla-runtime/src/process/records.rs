//! What the process runtime writes down about its sandboxes and
//! containers (`sandbox.json`, `containers/<name>.json`), so that a peer
//! started again finds, verifies and kills what a previous run left; and
//! the container ids, which name a container's pod, name and attempt.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::spec::valid_name;
use crate::{ContainerId, ExitStatus};

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(super) struct ProcRecord {
    pub(super) pid: i32,
    pub(super) start_ticks: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SandboxRecord {
    pub(super) pod_uid: String,
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) hostname: String,
    pub(super) holder: Option<ProcRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct ContainerRecord {
    pub(super) name: String,
    pub(super) attempt: u32,
    pub(super) image: String,
    pub(super) process: Option<ProcRecord>,
    pub(super) started_at_unix_ms: u64,
    pub(super) exit: Option<ExitRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct ExitRecord {
    pub(super) exit_code: i32,
    pub(super) signal: Option<i32>,
    pub(super) oom_killed: bool,
    pub(super) finished_at_unix_ms: u64,
}

impl ContainerRecord {
    pub(super) fn exit_status(&self) -> Option<ExitStatus> {
        self.exit.as_ref().map(|e| ExitStatus {
            exit_code: e.exit_code,
            signal: e.signal,
            oom_killed: e.oom_killed,
            started_at_unix_ms: self.started_at_unix_ms,
            finished_at_unix_ms: e.finished_at_unix_ms,
        })
    }
}

pub(super) fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    // A name of this write's own: two writers of one record (a container's
    // waiter and a runtime adopting it after a restart) must not rename
    // each other's half-written file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("json.{}.{n}.tmp", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(value).map_err(io::Error::other)?,
    )?;
    std::fs::rename(tmp, path)
}

pub(super) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

pub(super) fn container_id(uid: &str, name: &str, attempt: u32) -> ContainerId {
    ContainerId(format!("{uid}/{name}/{attempt}"))
}

pub(super) fn parse_container_id(id: &ContainerId) -> Option<(&str, &str, u32)> {
    let mut parts = id.0.splitn(3, '/');
    let (uid, name, attempt) = (parts.next()?, parts.next()?, parts.next()?.parse().ok()?);
    (valid_name(uid) && valid_name(name)).then_some((uid, name, attempt))
}
