//! A peer that dies, by any means, leaves no process of its Pods behind:
//! forks, `setsid` grandchildren and processes that ignore SIGTERM end with
//! it, within the fence window, on the default (process) runtime. Pods'
//! processes are found by the Pods' hostnames (their UTS namespaces) and
//! cgroups, never by command lines that could match anything else.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_blackbox::{Client, Cluster, Options, apply, name, phase, require, wait_pods};
use serde_json::Value;

const FORM: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(60);
/// The peers' `fence_after_ms` (the default).
const FENCE_WINDOW: Duration = Duration::from_millis(1_200);

/// Pods pinned to node `node`, each with its own way of leaving processes
/// behind, and the programs (with their arguments) each must show.
fn stubborn_pods(node: &str) -> (String, BTreeMap<&'static str, Vec<&'static str>>) {
    let pod = |name: &str, spec: &str| {
        format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: {node}}}\n{spec}")
    };
    let one = |command: &str| format!("  containers:\n  - name: main\n    image: busybox\n    command: {command}\n");
    let manifest = [
        pod("forks", &one(r#"["sh", "-c", "sleep 3601 & sleep 3602 & wait"]"#)),
        // A subshell backgrounds setsid: a double fork into a session of its own.
        pod("detaches", &one(r#"["sh", "-c", "(setsid sleep 3603 &); exec sleep 3604"]"#)),
        pod("ignores-term", &one(r#"["sh", "-c", "trap '' TERM; sleep 3605 & while true; do sleep 1; done"]"#)),
        pod("execs", &one(r#"["sleep", "3606"]"#)),
        pod(
            "shares",
            "  shareProcessNamespace: true\n  containers:\n  - name: a\n    image: busybox\n    command: [\"sh\", \"-c\", \"sleep 3607 & wait\"]\n  - name: b\n    image: busybox\n    command: [\"sleep\", \"3608\"]\n",
        ),
    ]
    .concat();
    let expected = BTreeMap::from([
        ("forks", vec!["sleep 3601", "sleep 3602"]),
        ("detaches", vec!["sleep 3603", "sleep 3604"]),
        ("ignores-term", vec!["sleep 3605"]),
        ("execs", vec!["sleep 3606"]),
        ("shares", vec!["sleep 3607", "sleep 3608"]),
    ]);
    (manifest, expected)
}

#[derive(Debug)]
struct Proc {
    pid: i32,
    /// The UTS namespace's inode: the Pod's hostname lives there.
    uts: u64,
    /// `/proc/<pid>/cgroup`, every line.
    cgroups: String,
    cmdline: String,
}

fn processes() -> Vec<Proc> {
    use std::os::unix::fs::MetadataExt;
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let (Ok(uts), Ok(cgroups), Ok(cmdline)) = (
            std::fs::metadata(format!("/proc/{pid}/ns/uts")),
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")),
            std::fs::read(format!("/proc/{pid}/cmdline")),
        ) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')) {
            continue;
        }
        let cmdline = String::from_utf8_lossy(&cmdline).split('\0').filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
        all.push(Proc { pid, uts: uts.ino(), cgroups, cmdline });
    }
    all
}

/// The hostname seen in `pid`'s UTS namespace, read from a short-lived
/// thread that joins it.
fn hostname_of(pid: i32) -> Option<String> {
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/uts")).ok()?;
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWUTS) } != 0 {
            return None;
        }
        let mut buf = [0u8; 65];
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
            return None;
        }
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        Some(String::from_utf8_lossy(&buf[..end]).into_owned())
    })
    .join()
    .ok()?
}

/// What marks a Pod's processes: its UTS namespace and its uid, which
/// names its cgroup.
struct PodMarks {
    uts: BTreeMap<String, u64>,
    uids: BTreeMap<String, String>,
}

impl PodMarks {
    /// Processes on this machine carrying any of the marks.
    fn survivors(&self) -> Vec<String> {
        let uts: BTreeSet<u64> = self.uts.values().copied().collect();
        processes()
            .into_iter()
            .filter(|p| uts.contains(&p.uts) || self.uids.values().any(|uid| p.cgroups.contains(&format!("/{uid}/"))))
            .map(|p| format!("{} {}", p.pid, p.cmdline))
            .collect()
    }
}

/// Waits until every Pod shows its expected programs, then checks that
/// each process in a Pod's UTS namespace is in that Pod's cgroup, and that
/// the namespace holds the Pod's hostname. Returns the marks and the
/// peer's cgroup parent (where its Pods' cgroups are).
async fn marks_of(client: &mut Client, expected: &BTreeMap<&str, Vec<&str>>) -> (PodMarks, PathBuf) {
    let (items, _) = client.list("Pod", Some("default"), false).await.unwrap();
    let uids: BTreeMap<String, String> = items
        .iter()
        .map(|j| serde_json::from_str::<Value>(j).unwrap())
        .filter(|p| expected.contains_key(name(p)))
        .map(|p| (name(&p).to_string(), p["metadata"]["uid"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(uids.len(), expected.len(), "{uids:?}");
    let deadline = Instant::now() + SETTLE;
    loop {
        let all = processes();
        let of = |uid: &str| all.iter().filter(move |p| p.cgroups.contains(&format!("/{uid}/"))).collect::<Vec<_>>();
        let missing: Vec<String> = expected
            .iter()
            .flat_map(|(pod, programs)| {
                let found = of(&uids[*pod]);
                programs.iter().filter(move |want| !found.iter().any(|p| &p.cmdline == *want)).map(move |want| format!("{pod}: {want}"))
            })
            .collect();
        if !missing.is_empty() {
            assert!(Instant::now() < deadline, "never seen in their Pods' cgroups: {missing:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let mut uts = BTreeMap::new();
        let mut cgroup_line = String::new();
        for (pod, uid) in &uids {
            let mine = of(uid);
            let program = mine.iter().find(|p| p.cmdline.starts_with("sleep 36")).expect("a sleep of the Pod");
            assert_eq!(hostname_of(program.pid).as_deref(), Some(pod.as_str()), "the hostname of {pod}'s {}", program.cmdline);
            uts.insert(pod.clone(), program.uts);
            cgroup_line = node_cgroup_dir(&program.cgroups, uid).display().to_string();
            for p in all.iter().filter(|p| p.uts == program.uts) {
                assert!(p.cgroups.contains(&format!("/{uid}/")), "{} ({}) runs with {pod}'s hostname outside its cgroup:\n{}", p.pid, p.cmdline, p.cgroups);
            }
        }
        return (PodMarks { uts, uids }, PathBuf::from(cgroup_line));
    }
}

/// Polls until none of the Pods' processes is left; fails if one outlives
/// the fence window counted from `since`.
async fn assert_all_gone(marks: &PodMarks, since: Instant, what: &str) {
    loop {
        let left = marks.survivors();
        if left.is_empty() {
            println!("{what}: every Pod process gone {} ms after the peer died", since.elapsed().as_millis());
            return;
        }
        assert!(since.elapsed() < FENCE_WINDOW, "{what}: Pod processes outlived the fence window: {left:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The directory of this peer's Pod cgroups in the memory hierarchy (v1)
/// or the unified one (v2), from a Pod process's `/proc/<pid>/cgroup`.
fn node_cgroup_dir(cgroup_lines: &str, uid: &str) -> PathBuf {
    let line = |want: &dyn Fn(&str) -> bool| {
        cgroup_lines.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            want(controllers).then(|| (controllers.to_string(), path.to_string()))
        })
    };
    // A v1 memory line where there is one; the unified line on v2 alone.
    let (mount, path) = match line(&|c| c.split(',').any(|c| c == "memory")) {
        Some((controllers, path)) => (format!("/sys/fs/cgroup/{controllers}"), path),
        None => ("/sys/fs/cgroup".to_string(), line(&|c| c.is_empty()).expect("a cgroup line").1),
    };
    let pod = path.find(&format!("/{uid}/")).map(|i| &path[..i]).expect("the Pod's uid in its cgroup path");
    PathBuf::from(format!("{mount}{pod}"))
}

fn isolated() -> bool {
    require("Pod isolation (root, namespaces and cgroups)", unsafe { libc::geteuid() } == 0 && Path::new("/proc/self/ns/pid").exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_of_a_killed_peers_pods_survives_and_a_restart_kills_leftovers() {
    if !isolated() {
        return;
    }
    let mut cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    cluster.wait_nodes_ready(1, 3, FORM).await;
    let (manifest, expected) = stubborn_pods("peer-2");
    apply(&cluster, 1, &manifest);
    wait_pods(&cluster, 1, "every Pod Running", SETTLE, |p| p.iter().filter(|p| phase(p) == "Running").count() == expected.len()).await;
    let mut client = cluster.client(1).await;
    let (marks, node_dir) = marks_of(&mut client, &expected).await;

    let killed = Instant::now();
    cluster.kill(2);
    assert_all_gone(&marks, killed, "SIGKILL of the peer").await;

    // Nothing was left, and the peer says so when it starts again.
    let quiet = |log: &str| log.matches("no process of an earlier run of this peer was left running").count();
    let before = quiet(&cluster.peer(2).log_text());
    cluster.restart(2);
    let log = wait_log(&cluster, 2, |log| quiet(log) > before).await;
    assert!(!log.contains("killed processes an earlier run"), "{log}");
    cluster.wait_nodes_ready(1, 3, SETTLE).await;

    // A crash that left a process in one of the peer's Pod cgroups (made
    // here by hand): the next start kills it, and says so, before the node
    // is Ready again.
    cluster.kill(2);
    let planted_dir = node_dir.join("left-by-a-crash");
    std::fs::create_dir_all(&planted_dir).unwrap();
    let mut planted = Command::new("sleep").arg("3609").stdin(Stdio::null()).spawn().unwrap();
    std::fs::write(planted_dir.join("cgroup.procs"), planted.id().to_string()).unwrap();
    cluster.restart(2);
    cluster.wait_nodes_ready(1, 3, SETTLE).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = planted.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the planted leftover {} still runs", planted.id());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let log = wait_log(&cluster, 2, |log| log.contains("killed processes an earlier run")).await;
    let line = log.lines().find(|l| l.contains("killed processes an earlier run")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("left-by-a-crash") && line.contains(&format!("{} (sleep)", planted.id())), "{line}");
    assert!(!planted_dir.exists(), "the leftover's cgroup was not removed");
}

/// Polls peer `id`'s log until `done` holds for it.
async fn wait_log(cluster: &Cluster, id: u64, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + SETTLE;
    loop {
        let log = cluster.peer(id).log_text();
        if done(&log) {
            return log;
        }
        assert!(Instant::now() < deadline, "peer {id}'s log never showed it:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a memory cgroup holding `pid` alone, limited to `limit` bytes.
fn memory_cgroup_around(pid: u32, limit: u64) -> Option<PathBuf> {
    let (dir, limit_file) = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        (PathBuf::from(format!("/sys/fs/cgroup/flotilla-test-oom-{pid}")), "memory.max")
    } else {
        (PathBuf::from(format!("/sys/fs/cgroup/memory/flotilla-test-oom-{pid}")), "memory.limit_in_bytes")
    };
    std::fs::create_dir(&dir).ok()?;
    std::fs::write(dir.join("cgroup.procs"), pid.to_string()).ok()?;
    std::fs::write(dir.join(limit_file), limit.to_string()).ok()?;
    Some(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_of_a_peer_killed_for_memory_survives() {
    if !isolated() {
        return;
    }
    let mut cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    cluster.wait_nodes_ready(1, 3, FORM).await;
    let (manifest, expected) = stubborn_pods("peer-3");
    apply(&cluster, 1, &manifest);
    wait_pods(&cluster, 1, "every Pod Running", SETTLE, |p| p.iter().filter(|p| phase(p) == "Running").count() == expected.len()).await;
    let mut client = cluster.client(1).await;
    let (marks, _) = marks_of(&mut client, &expected).await;

    let pid = cluster.peer(3).pid().unwrap();
    // Already past this limit: the peer's next allocations wake the
    // out-of-memory killer, and the peer is all the cgroup holds.
    let Some(cgroup) = memory_cgroup_around(pid, 4 << 20) else {
        assert!(!require("a memory cgroup for the peer", false));
        return;
    };
    // Writes reach every peer: peer 3 allocates as it applies them.
    let filler = "x".repeat(64 << 10);
    let deadline = Instant::now() + SETTLE;
    let mut n = 0;
    while cluster.peer(3).rss_bytes().is_some() && std::fs::metadata(format!("/proc/{pid}/stat")).is_ok() && !zombie(pid) {
        assert!(Instant::now() < deadline, "the peer was never killed for memory");
        let object = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"v": filler}}).to_string();
        let _ = client.put(flotilla_blackbox::key("ConfigMap", "default", &format!("filler-{n}")), object, flotilla_blackbox::Expect::Anything).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = Instant::now();
    let status = cluster.wait_exit(3);
    assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGKILL), "the peer ended otherwise than by the out-of-memory killer");
    assert_all_gone(&marks, killed, "the out-of-memory kill of the peer").await;
    let _ = std::fs::remove_dir(&cgroup);
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// A `flotilla up` and its peers, all killed when the test ends, however it
/// ends.
struct LocalCluster {
    up: Child,
    data_dir: String,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for p in processes().into_iter().filter(|p| p.cmdline.contains(" peer --config ") && p.cmdline.contains(&self.data_dir)) {
            unsafe { libc::kill(p.pid, libc::SIGKILL) };
        }
        let _ = self.up.kill();
        let _ = self.up.wait();
        for peer in std::fs::read_dir(&self.data_dir).into_iter().flatten().flatten() {
            flotilla_blackbox::remove_pod_cgroups(&peer.path());
        }
    }
}

/// `flotilla up` with every one of its peers SIGKILLed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_of_a_local_cluster_survives_the_kill_of_every_peer() {
    if !isolated() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base_port = flotilla_blackbox::local_base_port(3);
    let up: Child = Command::new(flotilla_blackbox::flotilla_bin())
        .args(["up", "--peers", "3", "--base-port", &base_port.to_string(), "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let local = LocalCluster { up, data_dir: dir.path().canonicalize().unwrap().display().to_string() };
    let server = format!("127.0.0.1:{base_port}");
    let deadline = Instant::now() + SETTLE;
    let mut client = loop {
        if let Ok(mut c) = Client::connect(&server).await
            && c.list("Node", None, false).await.is_ok_and(|(nodes, _)| nodes.len() == 3)
        {
            break c;
        }
        assert!(Instant::now() < deadline, "flotilla up never formed a cluster");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (manifest, expected) = stubborn_pods("peer-2");
    let out = flotilla_blackbox::cli(&server, &["apply", "-f", "-"], Some(&manifest));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (marks, _) = marks_of(&mut client, &expected).await;

    // Every peer of this cluster: their configs live in its data directory.
    let parent = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| s.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse::<u32>().ok());
    let peers: Vec<i32> = processes()
        .into_iter()
        .filter(|p| p.cmdline.contains(" peer --config ") && p.cmdline.contains(&local.data_dir) && parent(p.pid) == Some(local.up.id()))
        .map(|p| p.pid)
        .collect();
    assert_eq!(peers.len(), 3, "{peers:?}");
    let killed = Instant::now();
    for pid in &peers {
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    assert_all_gone(&marks, killed, "SIGKILL of every peer").await;
}
