//! Joining, the voter cap, learners, and replacing lost voters.

use std::time::Duration;

use flotilla_blackbox::{Cluster, Code, Expect, Options, config_map, key, value_of};

const FORM: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_fill_free_voter_seats_then_stay_learners_that_replicate_but_do_not_vote() {
    let mut cluster = Cluster::start(1, Options::default());
    cluster.wait_leader(FORM).await;
    for id in 2..=5 {
        cluster.add_peer_process(id);
    }
    let status = cluster
        .wait_status(1, "three voters and two learners", FORM, |s| s.voters.len() == 3 && s.learners.len() == 2)
        .await;
    assert_eq!(status.voters, vec![1, 2, 3], "the first joiners take the free seats");
    assert_eq!(status.learners, vec![4, 5], "the cap of 3 voters holds");
    assert_eq!(status.peers.len(), 5);

    // A learner serves writes (forwarded) and reads (its own replica).
    let mut five = cluster.client(5).await;
    let (_, revision) = five.put(key("ConfigMap", "default", "via-learner"), config_map("5"), Expect::Absent).await.unwrap();
    cluster.wait_status(4, "learner 4 applies the write", FORM, |s| s.revision >= revision).await;
    let mut four = cluster.client(4).await;
    assert_eq!(value_of(&four.get(key("ConfigMap", "default", "via-learner"), true).await.unwrap().unwrap()), "5");
    assert_eq!(value_of(&four.get(key("ConfigMap", "default", "via-learner"), false).await.unwrap().unwrap()), "5");

    // With two of three voters gone, the three live peers (one voter, two
    // learners) are no quorum: learners do not vote.
    let leader = cluster.wait_leader(FORM).await;
    let other_voter = [1, 2, 3].into_iter().find(|&v| v != leader).unwrap();
    cluster.kill(leader);
    cluster.kill(other_voter);
    let err = four
        .put(key("ConfigMap", "default", "no-quorum"), config_map("x"), Expect::Anything)
        .await
        .expect_err("no quorum, no write");
    assert!(matches!(err.code(), Code::Unavailable | Code::Unknown), "{err}");
    for id in [4, 5] {
        let s = cluster.client(id).await.local_status().await.unwrap();
        assert!(!s.has_leader || s.leader == leader || s.leader == other_voter, "learner {id} sees a new leader: {s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_silent_for_long_is_replaced_by_a_caught_up_learner() {
    let options = Options { replace_voter_after_ms: 3_000, ..Options::default() };
    let mut cluster = Cluster::start(3, options);
    let leader = cluster.wait_leader(FORM).await;
    cluster.add_peer_process(4);
    cluster.wait_status(leader, "peer 4 as a learner", FORM, |s| s.learners == vec![4]).await;
    let lost = (1..=3).find(|&v| v != leader).unwrap();
    cluster.kill(lost);
    let status = cluster
        .wait_status(leader, "peer 4 promoted in place of the lost voter", FORM, |s| {
            s.voters.contains(&4) && !s.voters.contains(&lost)
        })
        .await;
    assert_eq!(status.voters.len(), 3);
    assert_eq!(status.learners, vec![lost], "the lost voter stays on as a learner");
    // When it returns it catches up as a learner.
    cluster.restart(lost);
    let mut c = cluster.client(leader).await;
    let (_, revision) = c.put(key("ConfigMap", "default", "after"), config_map("1"), Expect::Anything).await.unwrap();
    cluster.wait_status(lost, "the returned peer catches up", FORM, |s| s.revision >= revision).await;
}
