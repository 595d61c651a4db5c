//! Flotilla's test kit: real `flotilla peer` processes on loopback for
//! the black-box tests, the benchmarks and the runtime's tests.
//!
//! Each cluster gets its own loopback address block (127.X.Y.id), so tests
//! running in parallel never fight over ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use flotilla_client::Client;
use flotilla_client::api::StatusResponse;

pub use flotilla_client::{ClientError, Code, Expect, key};

pub mod docker_engine;

const PORT: u16 = 7100;

/// The `flotilla` binary under test: `FLOTILLA_BIN`, or the one built in
/// the same profile as the running executable (a test in
/// `target/<profile>/deps/`, a tool in `target/<profile>/`).
pub fn flotilla_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FLOTILLA_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("executable path");
    let candidates = exe.ancestors().skip(1).take(2).map(|dir| dir.join("flotilla"));
    for bin in candidates {
        if bin.is_file() {
            return bin;
        }
    }
    panic!("no flotilla binary next to {}: build it first (cargo build --bin flotilla)", exe.display());
}

#[derive(Clone, Debug)]
pub struct Options {
    pub max_voters: u32,
    pub snapshot_after_logs: u64,
    pub keep_logs_after_snapshot: u64,
    pub replace_voter_after_ms: u64,
    pub cluster: String,
    /// The `[node]` table of every peer's config.
    pub node: String,
    /// Names the peers' Nodes `<prefix>-<id>` instead of `peer-<id>`:
    /// clusters sharing one Docker engine must not share node names, which
    /// the docker runtime labels its containers with.
    pub node_name_prefix: String,
    /// Lets `Cluster::isolate` cut a peer off (`[faults] signals`).
    pub fault_signals: bool,
    /// More lines of every peer's `[timing]` table.
    pub timing: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_voters: 3,
            snapshot_after_logs: 20_000,
            keep_logs_after_snapshot: 5_000,
            replace_voter_after_ms: 30_000,
            cluster: "test".into(),
            node: "runtime = \"process\"\nrestart_backoff_base_ms = 500\nrestart_backoff_max_ms = 2000\n".into(),
            node_name_prefix: String::new(),
            fault_signals: false,
            timing: String::new(),
        }
    }
}

pub struct Peer {
    pub id: u64,
    pub addr: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Peer {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The peer's resident memory in bytes, from /proc, while it runs.
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// CPU time (user and system) the peer has used so far, from /proc.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds_of(self.pid()?)
    }

    /// The peer's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        Some(self.child.as_ref()?.id())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// CPU time (user and system) a process has used so far, from /proc.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks as f64 / per_second)
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub peers: Vec<Peer>,
    /// The first three octets shared by this cluster's peers.
    net: String,
    options: Options,
    /// Ids of the initial peers, which every config lists.
    initial: Vec<u64>,
}

impl Cluster {
    /// Starts `n` initial peers.
    pub fn start(n: u64, options: Options) -> Cluster {
        let net = format!("127.{}.{}", rand::random_range(1..255u8), rand::random_range(1..255u8));
        let dir = tempfile::tempdir().expect("temporary directory");
        let initial: Vec<u64> = (1..=n).collect();
        let mut cluster = Cluster { dir, peers: Vec::new(), net, options, initial };
        for id in 1..=n {
            cluster.add_peer_process(id);
        }
        cluster
    }

    pub fn addr_of(&self, id: u64) -> String {
        format!("{}.{id}:{PORT}", self.net)
    }

    /// Writes the config of peer `id` and starts it. Peers not among the
    /// initial ones join the running cluster.
    pub fn add_peer_process(&mut self, id: u64) {
        let data_dir = self.dir.path().join(format!("peer{id}"));
        let config = self.dir.path().join(format!("peer{id}.toml"));
        let o = &self.options;
        let mut text = format!(
            "id = {id}\ncluster = \"{}\"\nlisten = \"{}\"\ndata_dir = \"{}\"\nmax_voters = {}\n",
            o.cluster,
            self.addr_of(id),
            data_dir.display(),
            o.max_voters
        );
        if !self.initial.contains(&id) {
            text.push_str(&format!("advertise = \"{}\"\n", self.addr_of(id)));
        }
        for pid in &self.initial {
            text.push_str(&format!("\n[[peers]]\nid = {pid}\naddr = \"{}\"\n", self.addr_of(*pid)));
        }
        text.push_str(&format!(
            "\n[timing]\nreplace_voter_after_ms = {}\n{}",
            o.replace_voter_after_ms, o.timing
        ));
        text.push_str(&format!(
            "\n[raft]\nsnapshot_after_logs = {}\nkeep_logs_after_snapshot = {}\n",
            o.snapshot_after_logs, o.keep_logs_after_snapshot
        ));
        text.push_str(&format!("\n[faults]\nsignals = {}\n", o.fault_signals));
        text.push_str(&format!("\n[node]\n{}", o.node));
        if !o.node_name_prefix.is_empty() {
            text.push_str(&format!("name = \"{}\"\n", self.node_name(id)));
        }
        std::fs::write(&config, text).expect("writing peer config");
        let log = self.dir.path().join(format!("peer{id}.log"));
        let mut peer = Peer { id, addr: self.addr_of(id), config, data_dir, log, child: None };
        spawn(&mut peer);
        self.peers.push(peer);
    }

    /// The name of peer `id`'s Node.
    pub fn node_name(&self, id: u64) -> String {
        match self.options.node_name_prefix.as_str() {
            "" => format!("peer-{id}"),
            prefix => format!("{prefix}-{id}"),
        }
    }

    pub fn peer(&self, id: u64) -> &Peer {
        self.peers.iter().find(|p| p.id == id).expect("no such peer")
    }

    fn peer_mut(&mut self, id: u64) -> &mut Peer {
        self.peers.iter_mut().find(|p| p.id == id).expect("no such peer")
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self, id: u64) {
        let p = self.peer_mut(id);
        if let Some(mut child) = p.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaping the peer");
        }
    }

    /// SIGTERM and wait: the clean shutdown path. Returns the exit code.
    pub fn stop(&mut self, id: u64) -> Option<i32> {
        let p = self.peer_mut(id);
        let mut child = p.child.take()?;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().expect("waiting for the peer").code()
    }

    /// Waits for a peer that is ending by itself (killed from elsewhere)
    /// and returns how it ended.
    pub fn wait_exit(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        self.peer_mut(id).child.take()?.wait().ok()
    }

    pub fn pause(&self, id: u64) {
        let pid = self.peer(id).child.as_ref().expect("running").id();
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    }

    pub fn resume(&self, id: u64) {
        let pid = self.peer(id).child.as_ref().expect("running").id();
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    }

    /// Cuts peer `id` off from every other peer (`true`) or reconnects it;
    /// needs `Options::fault_signals`.
    pub fn isolate(&self, id: u64, isolated: bool) {
        assert!(self.options.fault_signals, "isolate needs Options::fault_signals");
        let pid = self.peer(id).child.as_ref().expect("running").id();
        let signal = if isolated { libc::SIGUSR1 } else { libc::SIGUSR2 };
        unsafe { libc::kill(pid as i32, signal) };
    }

    pub fn restart(&mut self, id: u64) {
        let p = self.peer_mut(id);
        assert!(p.child.is_none(), "peer {id} is still running");
        spawn(p);
    }

    pub async fn client(&self, id: u64) -> Client {
        let addr = self.addr_of(id);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match Client::connect(&addr).await {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("peer {id} never listened: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Polls peer `via`'s view of the cluster until `pred` holds.
    pub async fn wait_status(&self, via: u64, what: &str, timeout: Duration, pred: impl Fn(&StatusResponse) -> bool) -> StatusResponse {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Ok(mut c) = Client::connect(&self.addr_of(via)).await
                && let Ok(s) = c.local_status().await
            {
                if pred(&s) {
                    return s;
                }
                last = Some(s);
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}; last status from peer {via}: {last:#?}\n{}", self.logs_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running peer agrees on one leader, and returns it.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            for p in self.peers.iter().filter(|p| p.is_running()) {
                let seen = match Client::connect(&p.addr).await {
                    Ok(mut c) => c.local_status().await.ok().filter(|s| s.has_leader).map(|s| s.leader),
                    Err(_) => None,
                };
                leaders.push(seen);
            }
            if let Some(Some(first)) = leaders.first()
                && leaders.iter().all(|l| *l == Some(*first))
                && self.peer(*first).is_running()
            {
                return *first;
            }
            if Instant::now() > deadline {
                panic!("no agreed leader after {timeout:?}: {leaders:?}\n{}", self.logs_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `count` Nodes are registered and Ready, so that Pods
    /// applied next can be placed on any of them.
    pub async fn wait_nodes_ready(&self, via: u64, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut client = self.client(via).await;
        loop {
            let (items, _) = client.list("Node", None, false).await.unwrap_or_default();
            let ready = items
                .iter()
                .filter_map(|j| serde_json::from_str::<serde_json::Value>(j).ok())
                .filter(|n| {
                    n.pointer("/status/conditions")
                        .and_then(serde_json::Value::as_array)
                        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                })
                .count();
            if ready >= count {
                return;
            }
            if Instant::now() > deadline {
                panic!("only {ready} of {count} nodes Ready after {timeout:?}\n{}", self.logs_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of every peer's log, for failure messages.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for p in &self.peers {
            let text = p.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(15);
            out.push_str(&format!("--- peer {} log (last {} lines)\n{}\n", p.id, lines.len() - from, lines[from..].join("\n")));
        }
        out
    }
}

fn spawn(p: &mut Peer) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&p.log).expect("peer log file");
    let child = Command::new(flotilla_bin())
        .arg("peer")
        .arg("--config")
        .arg(&p.config)
        .env("RUST_LOG", "info,openraft=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("starting flotilla peer");
    p.child = Some(child);
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.peers {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for p in &self.peers {
            remove_pod_cgroups(&p.data_dir);
        }
        if std::thread::panicking() {
            // Keep the evidence of a failed test.
            let kept = self.dir.path().to_path_buf();
            eprintln!("cluster files kept in {}", kept.display());
            std::mem::forget(std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir")));
        }
    }
}

/// Removes the cgroups a dead peer's process runtime made for its Pods,
/// which outlive the peer and its data directory. Its Pods die with it, a
/// moment after it: a cgroup still holding one is retried, for a bounded
/// while.
pub fn remove_pod_cgroups(data_dir: &std::path::Path) {
    fn remove(dir: &std::path::Path) -> bool {
        let children = std::fs::read_dir(dir).into_iter().flatten().flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir()));
        let all = children.fold(true, |ok, child| remove(&child.path()) && ok);
        all && (std::fs::remove_dir(dir).is_ok() || !dir.exists())
    }
    let listed = data_dir.join("pods").join(flotilla_runtime::process::CGROUPS_FILE);
    let Ok(text) = std::fs::read_to_string(listed) else { return };
    for dir in text.lines().map(std::path::Path::new) {
        for _ in 0..40 {
            if remove(dir) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether a test may use what this machine may lack: `available`, or a
/// skip said out loud, or, with `FLOTILLA_REQUIRE` set (as in CI), a
/// failure.
pub fn require(what: &str, available: bool) -> bool {
    if !available {
        assert!(std::env::var_os("FLOTILLA_REQUIRE").is_none(), "FLOTILLA_REQUIRE is set and this machine lacks {what}");
        println!("skipped: this machine lacks {what}");
    }
    available
}

/// A first port for `flotilla up --base-port` with `peers` free ports on
/// 127.0.0.1 from it. Chosen below the ephemeral range (32768 on), where
/// the tests' own client connections could take a port between this check
/// and the peers binding it.
pub fn local_base_port(peers: u16) -> u16 {
    for _ in 0..100 {
        let base = rand::random_range(20_000..32_000u16);
        if (base..base + peers).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no {peers} free ports in a row on 127.0.0.1 below 32000");
}

/// The Job of the Kubernetes Pod overview, as it stands.
pub fn seed_job() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../flotilla-api/tests/golden/job.yaml")).unwrap()
}

/// A ConfigMap-shaped object holding one value, for store tests.
pub fn config_map(value: &str) -> String {
    serde_json::json!({ "apiVersion": "v1", "kind": "ConfigMap", "data": { "v": value } }).to_string()
}

/// The `data.v` field of a ConfigMap-shaped object.
pub fn value_of(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).expect("object JSON");
    v["data"]["v"].as_str().unwrap_or_default().to_string()
}

/// Runs the `flotilla` CLI against `server`, feeding `stdin` if given.
pub fn cli(server: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(flotilla_bin())
        .args(args)
        .env("FLOTILLA_SERVER", server)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the flotilla CLI");
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("writing stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("waiting for the CLI")
}

/// Applies a manifest through the CLI against peer `via`.
pub fn apply(cluster: &Cluster, via: u64, manifest: &str) {
    let out = cli(&cluster.addr_of(via), &["apply", "-f", "-"], Some(manifest));
    assert!(out.status.success(), "apply failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The Pods of the `default` namespace, linearizably.
pub async fn pods(client: &mut Client) -> Vec<serde_json::Value> {
    let (items, _) = client.list("Pod", Some("default"), false).await.unwrap();
    items.iter().map(|j| serde_json::from_str(j).unwrap()).collect()
}

pub fn phase(pod: &serde_json::Value) -> &str {
    pod.pointer("/status/phase").and_then(serde_json::Value::as_str).unwrap_or("")
}

/// The node a Pod is bound to, or "".
pub fn node(pod: &serde_json::Value) -> &str {
    pod.pointer("/spec/nodeName").and_then(serde_json::Value::as_str).unwrap_or("")
}

pub fn name(pod: &serde_json::Value) -> &str {
    pod["metadata"]["name"].as_str().unwrap()
}

/// Polls the Pods through peer `via` until `done` holds for them.
pub async fn wait_pods(
    cluster: &Cluster,
    via: u64,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    let mut client = cluster.client(via).await;
    loop {
        if let Ok((items, _)) = client.list("Pod", Some("default"), false).await {
            let now: Vec<serde_json::Value> = items.iter().map(|j| serde_json::from_str(j).unwrap()).collect();
            if done(&now) {
                return now;
            }
            if Instant::now() > deadline {
                let summary: Vec<String> = now.iter().map(|p| format!("{} {} {}", name(p), phase(p), node(p))).collect();
                panic!("timed out waiting for {what}; pods: {summary:#?}\n{}", cluster.logs_tail());
            }
        } else if Instant::now() > deadline {
            panic!("timed out waiting for {what}: peer {via} does not answer\n{}", cluster.logs_tail());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
