use flotilla_api::{Kind, Object};

use super::{active_of, ready_of};
use crate::common::is_terminating;
use crate::sim::*;
use flotilla_api::wellknown::POD_NAME_LABEL;

use crate::reconcile;

fn scale(sim: &mut Sim, replicas: i32) {
    sim.edit(Kind::StatefulSet, "db", |o| {
        if let Object::StatefulSet(s) = o {
            s.spec.replicas = Some(replicas)
        }
    });
}

fn names(sim: &Sim) -> Vec<String> {
    let mut v: Vec<String> = sim
        .pods_of("db-")
        .iter()
        .map(|p| p.metadata.name.clone())
        .collect();
    v.sort();
    v
}

#[test]
fn ordered_ready_creates_one_ordinal_at_a_time() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(stateful_set("db", 3, "OrderedReady"));
    for expected in [
        vec!["db-0"],
        vec!["db-0", "db-1"],
        vec!["db-0", "db-1", "db-2"],
    ] {
        sim.round();
        assert_eq!(names(&sim), expected);
        // Until the newest is Ready, nothing more happens.
        sim.agents(0);
        sim.round();
        assert_eq!(names(&sim), expected, "waits for readiness");
        sim.agents(usize::MAX);
    }
    sim.settle(usize::MAX);
    let pod = sim.pod("db-1").expect("db-1");
    assert_eq!(pod.spec.hostname, "db-1");
    assert_eq!(
        pod.metadata.labels.get(POD_NAME_LABEL).map(String::as_str),
        Some("db-1")
    );
    assert_eq!(
        pod.metadata.labels.get("app").map(String::as_str),
        Some("db")
    );
    let status = sim.view.stateful_sets[0].status.clone().expect("status");
    assert_eq!(
        (
            status.replicas,
            status.ready_replicas,
            status.current_replicas
        ),
        (3, 3, 3)
    );
    assert!(reconcile(&sim.view, &sim.limits).is_empty());
}

#[test]
fn never_two_instances_of_one_ordinal() {
    for policy in ["OrderedReady", "Parallel"] {
        let mut sim = Sim::new();
        sim.add(node("n1", true));
        sim.add(stateful_set("db", 3, policy));
        sim.settle(usize::MAX);
        // db-1 is stopping on its node: no replacement while the object exists.
        sim.pods_where(
            |p| p.metadata.name == "db-1",
            |p| p.metadata.deletion_timestamp = Some("2027-01-01T00:00:00Z".into()),
        );
        for _ in 0..3 {
            let actions = sim.round();
            assert!(
                created(&actions, Kind::Pod).is_empty(),
                "{policy}: created while db-1 terminates"
            );
            assert!(
                deleted(&actions, Kind::Pod).is_empty(),
                "{policy}: the terminating pod is left alone"
            );
        }
        sim.agents(0);
        let actions = sim.round();
        assert_eq!(
            created(&actions, Kind::Pod),
            vec!["db-1"],
            "{policy}: replaced once gone"
        );

        // A failed instance is deleted first and replaced on a later round.
        sim.settle(usize::MAX);
        sim.pods_where(|p| p.metadata.name == "db-2", |p| set_phase(p, "Failed"));
        let actions = sim.round();
        assert_eq!(deleted(&actions, Kind::Pod), vec!["db-2"], "{policy}");
        assert!(
            created(&actions, Kind::Pod).is_empty(),
            "{policy}: not in the same round"
        );
        assert!(
            is_terminating(&sim.pod("db-2").expect("still there").metadata),
            "{policy}: graceful"
        );
        assert!(
            created(&sim.round(), Kind::Pod).is_empty(),
            "{policy}: not while it terminates"
        );
        sim.settle(usize::MAX);
        assert_eq!(names(&sim), ["db-0", "db-1", "db-2"]);
        assert_eq!(ready_of(&sim, "db-"), 3);
    }
}

#[test]
fn ordered_ready_blocks_behind_a_terminating_lower_ordinal() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(stateful_set("db", 2, "OrderedReady"));
    sim.settle(usize::MAX);
    sim.pods_where(
        |p| p.metadata.name == "db-0",
        |p| p.metadata.deletion_timestamp = Some("2027-01-01T00:00:00Z".into()),
    );
    scale(&mut sim, 3);
    let actions = sim.round();
    assert!(
        created(&actions, Kind::Pod).is_empty(),
        "db-2 waits for db-0"
    );
}

#[test]
fn ordered_scale_down_removes_the_highest_ordinal_first_one_at_a_time() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(stateful_set("db", 4, "OrderedReady"));
    sim.settle(usize::MAX);
    scale(&mut sim, 1);
    for (gone, left) in [
        ("db-3", vec!["db-0", "db-1", "db-2"]),
        ("db-2", vec!["db-0", "db-1"]),
        ("db-1", vec!["db-0"]),
    ] {
        let actions = sim.round();
        assert_eq!(deleted(&actions, Kind::Pod), vec![gone]);
        assert!(
            deleted(&sim.round(), Kind::Pod).is_empty(),
            "waits while {gone} terminates"
        );
        sim.agents(0);
        assert_eq!(names(&sim), left);
    }
    sim.settle(usize::MAX);
    assert_eq!(names(&sim), ["db-0"]);
}

#[test]
fn ordered_scale_down_waits_for_unready_pods() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(stateful_set("db", 3, "OrderedReady"));
    sim.settle(usize::MAX);
    sim.pods_where(
        |p| p.metadata.name == "db-0",
        |p| set_running(p, false, START_MS),
    );
    scale(&mut sim, 2);
    assert!(deleted(&sim.round(), Kind::Pod).is_empty());
    sim.pods_where(
        |p| p.metadata.name == "db-0",
        |p| set_running(p, true, START_MS),
    );
    assert_eq!(deleted(&sim.round(), Kind::Pod), vec!["db-2"]);
}

#[test]
fn parallel_creates_and_deletes_all_at_once() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(stateful_set("db", 3, "Parallel"));
    let mut got = created(&sim.round(), Kind::Pod);
    got.sort();
    assert_eq!(got, ["db-0", "db-1", "db-2"]);
    sim.settle(usize::MAX);
    scale(&mut sim, 0);
    let mut got = deleted(&sim.round(), Kind::Pod);
    got.sort();
    assert_eq!(got, ["db-0", "db-1", "db-2"]);
    sim.settle(usize::MAX);
    assert!(active_of(&sim, "db-").is_empty());
    assert!(sim.view.pods.is_empty());
}

#[test]
fn a_name_held_by_a_foreign_pod_is_never_created() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    let mut foreign = flotilla_api::pod::Pod {
        metadata: meta("db-0"),
        ..Default::default()
    };
    foreign.spec.node_name = "n1".into();
    sim.add(Object::Pod(foreign));
    sim.add(stateful_set("db", 2, "Parallel"));
    let actions = sim.round();
    assert_eq!(created(&actions, Kind::Pod), vec!["db-1"]);
    assert!(
        deleted(&actions, Kind::Pod).is_empty(),
        "not ours to delete"
    );
}
