//! Where and when a figure was measured, stored with it: the command that
//! reproduces it, the date, the commit and the machine. A figure without
//! these cannot be compared with a later one.

use serde_json::{Value, json};

pub(crate) fn describe(command: &str) -> Value {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    json!({
        "command": command,
        "date_utc": flotilla_api::time::format_rfc3339(now_ms),
        "commit": commit(),
        "machine": machine(),
    })
}

/// The checked-out commit, marked `-dirty` when the code has changes; None
/// outside a git checkout. `docs/` does not count: the results being
/// written there would mark every run after the first.
fn commit() -> Option<String> {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = run(&["rev-parse", "--short=7", "HEAD"])?;
    let dirty = run(&["status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':']).to_string());
    let meminfo = read("/proc/meminfo");
    let memory_kib: Option<u64> =
        meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).and_then(|l| l.split_whitespace().next()?.parse().ok());
    let cgroup = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "v2" } else { "v1" };
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": cpu_model,
        "memory_gib": memory_kib.map(|k| (k as f64 / (1 << 20) as f64 * 10.0).round() / 10.0),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "cgroups": cgroup,
    })
}
