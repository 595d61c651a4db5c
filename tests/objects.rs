//! The object store through the client API: compare-and-set, lists at a
//! revision, and watch.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_blackbox::{Cluster, Code, Expect, Options, config_map, key, value_of};
use flotilla_client::api::EventType;

const FORM: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_refuses_stale_writes() {
    let cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    let mut c = cluster.client(2).await;
    let k = || key("ConfigMap", "default", "cas");
    let (obj, r1) = c.put(k(), config_map("a"), Expect::Absent).await.unwrap();
    let meta: serde_json::Value = serde_json::from_str(&obj).unwrap();
    assert_eq!(meta["metadata"]["resourceVersion"], r1.to_string());
    assert_eq!(meta["metadata"]["uid"].as_str().unwrap().len(), 36);

    let err = c.put(k(), config_map("b"), Expect::Absent).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    let err = c.put(k(), config_map("b"), Expect::Revision(r1 + 100)).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert!(err.to_string().contains(&format!("resourceVersion {} does not match the stored {r1}", r1 + 100)), "{err}");
    let (_, r2) = c.put(k(), config_map("b"), Expect::Revision(r1)).await.unwrap();
    assert!(r2 > r1);
    let err = c.put(k(), config_map("c"), Expect::Revision(r1)).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "the old revision is stale now");
    let err = c.delete(k(), Expect::Revision(r1)).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    let mut other = cluster.client(3).await;
    assert_eq!(value_of(&other.get(k(), false).await.unwrap().unwrap()), "b");
    other.delete(k(), Expect::Revision(r2)).await.unwrap();
    assert!(c.get(k(), false).await.unwrap().is_none());
    let err = c.put(k(), config_map("d"), Expect::Present).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_revision_delivers_every_later_event_once_and_in_order() {
    let cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    let mut c = cluster.client(1).await;
    for i in 0..5 {
        c.put(key("ConfigMap", "watched", &format!("pre{i}")), config_map("0"), Expect::Anything).await.unwrap();
    }
    let (before, from) = c.list("ConfigMap", Some("watched"), false).await.unwrap();
    assert_eq!(before.len(), 5);

    let mut watcher = cluster.client(2).await;
    let mut stream = watcher.watch("ConfigMap", Some("watched"), from).await.unwrap();

    // Concurrent writers through every peer: creates, updates, deletes, and
    // noise in another namespace the watch must not see.
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let addr = cluster.addr_of(w % 3 + 1);
        tasks.push(tokio::spawn(async move {
            let mut c = flotilla_client::Client::connect(&addr).await.unwrap();
            let mut revisions = Vec::new();
            for i in 0..40u64 {
                let name = format!("w{w}-{}", i % 7);
                let r = if i % 5 == 4 {
                    c.delete(key("ConfigMap", "watched", &name), Expect::Anything).await.map(|r| r.1)
                } else {
                    c.put(key("ConfigMap", "watched", &name), config_map(&i.to_string()), Expect::Anything).await.map(|r| r.1)
                };
                match r {
                    Ok(rev) => revisions.push(rev),
                    Err(e) if e.code() == Code::NotFound => {}
                    Err(e) => panic!("write failed: {e}"),
                }
                c.put(key("ConfigMap", "noise", &name), config_map("n"), Expect::Anything).await.unwrap();
            }
            revisions
        }));
    }
    let mut expected = BTreeSet::new();
    for t in tasks {
        expected.extend(t.await.unwrap());
    }
    let last = *expected.iter().max().unwrap();
    let mut seen = Vec::new();
    while seen.last().is_none_or(|&r| r < last) {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("watch stalled")
            .unwrap()
            .expect("watch ended");
        let obj: serde_json::Value = serde_json::from_str(&ev.object_json).unwrap();
        assert_eq!(obj["metadata"]["namespace"], "watched", "the namespace filter holds");
        if ev.r#type != EventType::Deleted as i32 {
            assert_eq!(obj["metadata"]["resourceVersion"], ev.revision.to_string());
        }
        seen.push(ev.revision);
    }
    assert!(seen.iter().all(|&r| r > from), "only events after the list's revision");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, each once: {seen:?}");
    let seen_set: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(seen_set, expected, "exactly the acknowledged changes in the namespace");

    // A list at the old revision still shows the state the watch started from.
    let (at_from, r) = c.list_at("ConfigMap", Some("watched"), from, false).await.unwrap();
    assert_eq!(r, from);
    assert_eq!(at_from.len(), 5);
}

/// A client's open watch must not hold a peer's graceful shutdown: the
/// server waits for every open stream, so the peer ends its streams
/// first. The watcher sees its stream end and can go to another peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_open_watches_stops_on_sigterm() {
    let mut cluster = Cluster::start(3, Options::default());
    cluster.wait_leader(FORM).await;
    let mut watcher = cluster.client(2).await;
    let mut stream = watcher.watch("ConfigMap", Some("watched"), 0).await.unwrap();
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
    let stopper = std::thread::spawn(move || {
        let code = cluster.stop(2);
        let _ = stopped_tx.send(code);
        cluster
    });
    let code = tokio::task::spawn_blocking(move || stopped_rx.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("peer 2 did not stop within 10 s of SIGTERM while a watch was open");
    assert_eq!(code, Some(0), "peer 2 stops cleanly");
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("the watch ends");
    assert!(!matches!(ended, Ok(Some(_))), "no event after the peer stopped: {ended:?}");
    drop(stopper.join().expect("the stopping thread"));
}
