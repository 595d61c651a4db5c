//! Bad input gets one clear error and never hurts a running peer.

use std::process::Command;
use std::time::Duration;

use flotilla_blackbox::{Cluster, Code, Expect, Options, config_map, flotilla_bin, key};

const FORM: Duration = Duration::from_secs(30);

fn run_peer(config: &std::path::Path) -> (i32, String) {
    let out = Command::new(flotilla_bin()).arg("peer").arg("--config").arg(config).output().expect("running flotilla");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn a_broken_config_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = format!(
        "id = 1\nlisten = \"127.0.0.1:7999\"\ndata_dir = \"{}\"\n\n[[peers]]\nid = 1\naddr = \"127.0.0.1:7999\"\n",
        dir.path().join("d").display()
    );
    let cases = [
        (good.replace("id = 1\nlisten", "listen"), "missing field `id`"),
        (good.replace("127.0.0.1:7999\"\ndata_dir", "not-an-address\"\ndata_dir"), "line 2: invalid socket address syntax"),
        (format!("{good}\n[timing]\nheartbeat_ms = 400\n"), "timing.election_timeout_min_ms: 200 must exceed twice timing.heartbeat_ms (400)"),
        (format!("{good}\n[timing]\nheart_beat = 4\n"), "unknown field `heart_beat`"),
        (format!("max_voters = 2\n{good}"), "max_voters: 2 is not one of 1, 3 or 5"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (code, stderr) = run_peer(&path);
        assert_ne!(code, 0, "case {i} must fail");
        assert!(stderr.contains(want), "case {i}: want {want:?} in {stderr:?}");
        assert!(stderr.contains(&format!("bad{i}.toml")), "the error names the file: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    }
    let (code, stderr) = run_peer(&dir.path().join("missing.toml"));
    assert_ne!(code, 0);
    assert!(stderr.contains("missing.toml: No such file"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_cluster_or_peer_is_refused() {
    let mut alpha = Cluster::start(3, Options { cluster: "alpha".into(), ..Options::default() });
    alpha.wait_leader(FORM).await;
    alpha.client(1).await.put(key("ConfigMap", "default", "a"), config_map("1"), Expect::Absent).await.unwrap();
    alpha.stop(1);
    let data_dir = alpha.peer(1).data_dir.clone();

    let dir = tempfile::tempdir().unwrap();
    let config = |cluster: &str, id: u64| {
        format!(
            "id = {id}\ncluster = \"{cluster}\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[[peers]]\nid = {id}\naddr = \"127.0.0.1:7998\"\n",
            data_dir.display()
        )
    };
    let path = dir.path().join("beta.toml");
    std::fs::write(&path, config("beta", 1)).unwrap();
    let (code, stderr) = run_peer(&path);
    assert_ne!(code, 0);
    assert!(stderr.contains("belongs to cluster \"alpha\", but the config names cluster \"beta\""), "{stderr}");

    std::fs::write(&path, config("alpha", 7)).unwrap();
    let (code, stderr) = run_peer(&path);
    assert_ne!(code, 0);
    assert!(stderr.contains("belongs to peer 1, but the config says id = 7"), "{stderr}");

    // The refused starts changed nothing: the peer comes back with its data.
    alpha.restart(1);
    alpha.wait_leader(FORM).await;
    assert!(alpha.client(1).await.get(key("ConfigMap", "default", "a"), true).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_gets_a_clear_error_and_the_peer_keeps_serving() {
    let cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    let mut c = cluster.client(2).await;
    let huge = "x".repeat(3 << 20);
    let err = c.put(key("ConfigMap", "default", "huge"), config_map(&huge), Expect::Anything).await.unwrap_err();
    assert!(err.to_string().starts_with("request too large"), "{err}");

    let just_over = "x".repeat((1 << 20) + 100);
    let err = c.put(key("ConfigMap", "default", "big"), config_map(&just_over), Expect::Anything).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.to_string().contains("over the limit of 1048576 bytes"), "{err}");

    let err = c.put(key("ConfigMap", "default", "Bad_Name"), config_map("v"), Expect::Anything).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.to_string().contains("metadata.name"), "{err}");

    let err = c.put(key("ConfigMap", "default", "notjson"), "{".into(), Expect::Anything).await.unwrap_err();
    assert!(err.to_string().contains("object is not valid JSON"), "{err}");

    // Still serving, on this connection and others.
    c.put(key("ConfigMap", "default", "fine"), config_map("ok"), Expect::Absent).await.unwrap();
    let mut other = cluster.client(1).await;
    assert!(other.get(key("ConfigMap", "default", "fine"), false).await.unwrap().is_some());
}
