//! Joining, the voter cap, learners, and replacing lost voters.

use std::time::Duration;

use flotilla_blackbox::{Cluster, Code, Expect, Options, config_map, key, value_of};
use flotilla_client::api::StatusResponse;

const FORM: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_fill_free_voter_seats_then_stay_learners_that_replicate_but_do_not_vote() {
    let mut cluster = Cluster::start(1, Options::default());
    cluster.wait_leader(FORM).await;
    // The first two joiners take the free seats together, once both have
    // caught up; later joiners stay learners.
    cluster.add_peer_process(2);
    cluster.add_peer_process(3);
    cluster.wait_status(1, "three voters", FORM, |s| s.voters.len() == 3).await;
    cluster.add_peer_process(4);
    cluster.add_peer_process(5);
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

/// A voter's disk is wiped and it comes back under the same id with an
/// empty directory. It has lost the entries and votes it acknowledged, so
/// it must not be taken for the voter it was; and the cluster must not
/// stop over it. The leader removes the old member, admits the new
/// directory as a learner, and promotes it once it has caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_whose_data_directory_was_wiped_is_admitted_again_as_a_new_member() {
    let mut cluster = Cluster::start(3, Options::default());
    let leader = cluster.wait_leader(FORM).await;
    let wiped = (1..=3).find(|&id| id != leader).unwrap();
    let mut c = cluster.client(leader).await;
    let mut revision = 0;
    for i in 0..50u64 {
        revision = c.put(key("ConfigMap", "before", &format!("k{i}")), config_map(&i.to_string()), Expect::Absent).await.unwrap().1;
    }
    cluster.wait_status(wiped, "the voter holds every write", FORM, |s| s.revision >= revision).await;
    let before = recorded_incarnations(&cluster, leader).await;

    cluster.kill(wiped);
    std::fs::remove_dir_all(&cluster.peer(wiped).data_dir).unwrap();
    cluster.restart(wiped);

    let status = cluster
        .wait_status(leader, "the wiped peer back as a voter, under its new directory", FORM, |s| {
            s.voters.len() == 3 && s.learners.is_empty() && is_new_voter(s, wiped, &before)
        })
        .await;
    assert_eq!(status.leader, leader, "the leader kept its seat throughout:\n{}", cluster.logs_tail());
    let (_, after) = c.put(key("ConfigMap", "after", "k"), config_map("x"), Expect::Absent).await.unwrap();
    cluster.wait_status(wiped, "the new member applies new writes", FORM, |s| s.revision >= after).await;
    for id in 1..=3 {
        assert!(cluster.peer(id).is_running(), "peer {id} stopped:\n{}", cluster.logs_tail());
    }
    let mut w = cluster.client(wiped).await;
    let (items, _) = w.list("ConfigMap", Some("before"), false).await.unwrap();
    assert_eq!(items.len(), 50, "the new member holds every write made before the wipe");
    let leader_log = cluster.peer(leader).log_text();
    assert!(leader_log.contains("data directory was replaced"), "the leader says why it re-admits the peer:\n{leader_log}");
    let wiped_log = cluster.peer(wiped).log_text();
    assert!(wiped_log.contains("the directory was replaced"), "the wiped peer says why it was refused:\n{wiped_log}");
}

/// Why a wiped voter must not count as the member it was: with the only
/// other holder of the newest writes down, its vote would elect a leader
/// that lacks them, and they would be lost. Refused as the old member, the
/// wiped peer cannot vote; the cluster waits for the peer that holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_voter_cannot_help_elect_a_leader_that_lacks_acknowledged_writes() {
    let mut cluster = Cluster::start(3, Options::default());
    let leader = cluster.wait_leader(FORM).await;
    let before = recorded_incarnations(&cluster, leader).await;
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let (behind, wiped) = (others[0], others[1]);
    cluster.kill(behind);
    let mut c = cluster.client(leader).await;
    for i in 0..20u64 {
        c.put(key("ConfigMap", "acked", &format!("k{i}")), config_map(&i.to_string()), Expect::Absent).await.unwrap();
    }
    // Only the leader and `wiped` hold these writes now.
    cluster.kill(leader);
    cluster.kill(wiped);
    std::fs::remove_dir_all(&cluster.peer(wiped).data_dir).unwrap();
    cluster.restart(behind);
    cluster.restart(wiped);
    // Many election timeouts: time enough for `behind` to win, were the
    // wiped peer's vote taken.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = cluster.client(behind).await.local_status().await.unwrap();
    // It may still name the old leader, whose vote it restored from disk.
    assert!(
        !s.has_leader || s.leader == leader,
        "a leader was elected without the acknowledged writes: {s:?}\n{}",
        cluster.logs_tail()
    );

    cluster.restart(leader);
    let now = cluster.wait_leader(FORM).await;
    let mut c = cluster.client(now).await;
    for i in 0..20u64 {
        let got = c.get(key("ConfigMap", "acked", &format!("k{i}")), false).await.unwrap();
        assert_eq!(got.as_deref().map(value_of), Some(i.to_string()), "acknowledged write k{i}:\n{}", cluster.logs_tail());
    }
    cluster
        .wait_status(now, "the wiped peer admitted again and promoted", FORM, |s| {
            s.voters.len() == 3 && is_new_voter(s, wiped, &before)
        })
        .await;
}

/// Each member's incarnation as `via`'s membership records it, once every
/// member's is known.
async fn recorded_incarnations(cluster: &Cluster, via: u64) -> StatusResponse {
    cluster
        .wait_status(via, "every member's data directory recorded", FORM, |s| {
            s.peers.len() == 3 && s.peers.iter().all(|p| !p.incarnation.is_empty())
        })
        .await
}

/// Whether `id` votes from another data directory than it did in `before`.
fn is_new_voter(s: &StatusResponse, id: u64, before: &StatusResponse) -> bool {
    let incarnation = |s: &StatusResponse| s.peers.iter().find(|p| p.id == id).map(|p| p.incarnation.clone()).unwrap_or_default();
    s.voters.contains(&id) && !incarnation(s).is_empty() && incarnation(s) != incarnation(before)
}
