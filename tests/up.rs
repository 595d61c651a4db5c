//! `flotilla up` never leaves its peers behind: whether it is asked to stop
//! (SIGTERM, or SIGHUP when its terminal goes) or killed outright, its
//! peers and their Pods' processes stop too.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_blackbox::{Client, flotilla_bin};
use flotilla_client::api::ApplyRequest;

const SETTLE: Duration = Duration::from_secs(60);

/// Processes whose command line contains `needle`, with their state
/// (zombies, already dead and waiting to be reaped, are left out).
fn processes_with(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let state = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string)))
            .unwrap_or_default();
        if cmdline.contains(needle) && state != "Z" && pid != std::process::id() {
            out.push((pid, cmdline));
        }
    }
    out
}

fn up(dir: &Path, base_port: u16, peers: usize) -> Child {
    let out = std::fs::File::create(dir.join("up.out")).unwrap();
    Command::new(flotilla_bin())
        .args(["up", "--peers", &peers.to_string(), "--data-dir"])
        .arg(dir)
        .args(["--base-port", &base_port.to_string()])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("starting flotilla up")
}

async fn wait_until(what: &str, dir: &Path, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !done() {
        let out = std::fs::read_to_string(dir.join("up.out")).unwrap_or_default();
        assert!(Instant::now() < deadline, "timed out waiting for {what}; flotilla up printed:\n{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_stops_its_peers_and_their_pods_on_sighup_sigterm_and_sigkill() {
    // One peer, the smallest cluster `up` makes, and two.
    for (signal, peer_count) in [(libc::SIGHUP, 1), (libc::SIGTERM, 2), (libc::SIGKILL, 2)] {
        let dir = tempfile::tempdir().unwrap();
        let base_port = flotilla_blackbox::local_base_port(peer_count as u16);
        let marker = format!("up-test-pod-{}", rand::random::<u64>());
        let mut child = up(dir.path(), base_port, peer_count);
        let printed = || std::fs::read_to_string(dir.path().join("up.out")).unwrap_or_default();
        wait_until("the cluster to form", dir.path(), || printed().contains("Flotilla is up")).await;

        let manifest = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "marked"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "marked"}},
                "template": {"metadata": {"labels": {"app": "marked"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox",
                        "command": ["sh", "-c", "sleep 3600; true", &marker]}]}}}
        });
        let mut client = Client::connect(&format!("127.0.0.1:{base_port}")).await.unwrap();
        let request = ApplyRequest { object_json: manifest.to_string(), namespace: "default".into(), ..Default::default() };
        client.apply(request).await.unwrap();
        wait_until("the Pods' processes", dir.path(), || processes_with(&marker).len() == 2).await;
        let data_dir = dir.path().canonicalize().unwrap().display().to_string();
        let peers = processes_with(&format!("{data_dir}/peer"));
        assert_eq!(peers.len(), peer_count, "{peers:?}");

        // SAFETY: a signal to the child this test started.
        unsafe { libc::kill(child.id() as i32, signal) };
        wait_until("the peers and their Pods to stop", dir.path(), || {
            processes_with(&format!("{data_dir}/peer")).is_empty() && processes_with(&marker).is_empty()
        })
        .await;
        let status = child.wait().unwrap();
        if signal == libc::SIGKILL {
            assert!(!status.success());
        } else {
            assert!(printed().contains("all peers stopped"), "signal {signal}: {}", printed());
        }
    }
}
