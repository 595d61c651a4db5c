use std::collections::BTreeMap;

use flotilla_api::cluster::Node;
use flotilla_api::{Kind, Object};

use super::active_of;
use crate::common::{is_terminal, node_ready, phase};
use crate::sim::*;
use crate::{Action, NodeTiming, declared_lost, node_lifecycle};

const TIMING: NodeTiming = NodeTiming {
    not_ready_after_ms: 10_000,
    lost_after_ms: 40_000,
    leader_grace_ms: 15_000,
};

fn ready_condition(n: &Node) -> (String, String) {
    let c = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .expect("ready condition");
    (c.status.clone(), c.reason.clone())
}

fn node_updates(actions: &[Action]) -> Vec<(String, String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Update(Object::Node(n)) => {
                let (s, r) = ready_condition(n);
                Some((n.metadata.name.clone(), s, r))
            }
            _ => None,
        })
        .collect()
}

/// Runs the lifecycle at `now`, applies it, and checks that a second call
/// on the result writes nothing (transitions only).
fn step(
    sim: &mut Sim,
    now: u64,
    heartbeats: &BTreeMap<String, u64>,
    leader_since: u64,
) -> Vec<Action> {
    sim.view.now_unix_ms = now;
    let actions = node_lifecycle(&sim.view, heartbeats, leader_since, &TIMING);
    sim.apply(&actions);
    assert!(
        node_lifecycle(&sim.view, heartbeats, leader_since, &TIMING).is_empty(),
        "repeated write at {now}"
    );
    actions
}

#[test]
fn ready_then_not_ready_then_lost_then_back() {
    let t0 = START_MS;
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(node("n2", true));
    let hb = |n1: u64, n2: u64| BTreeMap::from([("n1".to_string(), n1), ("n2".to_string(), n2)]);
    // (now after t0, last heartbeat of n1 after t0, expected transition of n1)
    type Case = (u64, u64, Option<(&'static str, &'static str)>);
    let cases: &[Case] = &[
        (5_000, 5_000, None),
        (14_000, 3_000, Some(("Unknown", "NodeStatusUnknown"))),
        (20_000, 3_000, None),
        (42_000, 3_000, None),
        (43_000, 3_000, Some(("Unknown", "NodeLost"))),
        (90_000, 3_000, None),
        (91_000, 91_000, Some(("True", "NodeReady"))),
        (95_000, 91_000, None),
    ];
    for (now, n1_hb, want) in cases {
        let actions = step(&mut sim, t0 + now, &hb(t0 + n1_hb, t0 + now), t0 - 60_000);
        let got = node_updates(&actions);
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(s, r)| ("n1".to_string(), s.to_string(), r.to_string()))
            .collect();
        assert_eq!(got, want, "at +{now}ms");
        let declared: Vec<String> = declared_lost(&actions).into_iter().collect();
        let lost_now = want.iter().any(|(_, _, r)| r == "NodeLost");
        assert_eq!(declared, if lost_now { vec!["n1".to_string()] } else { vec![] }, "declared lost at +{now}ms");
    }
    assert!(sim.view.nodes.iter().all(node_ready));
}

#[test]
fn a_new_leader_waits_for_its_grace_period() {
    let leader_since = START_MS;
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    let none = BTreeMap::new();
    for (after, want) in [
        (0, None),
        (14_999, None),
        (15_000, Some("NodeStatusUnknown")),
        (39_999, None),
        (40_000, Some("NodeLost")),
    ] {
        let actions = step(&mut sim, leader_since + after, &none, leader_since);
        let got = node_updates(&actions).into_iter().map(|(_, _, r)| r).next();
        assert_eq!(got.as_deref(), want, "+{after}ms after takeover");
    }
    // Even a long-silent node is not declared within the grace period.
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    let old = BTreeMap::from([("n1".to_string(), leader_since - 100_000)]);
    assert!(step(&mut sim, leader_since + 1_000, &old, leader_since).is_empty());
}

#[test]
fn a_not_ready_reported_by_the_agent_is_not_overwritten() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.edit(Kind::Node, "n1", |o| {
        if let Object::Node(n) = o {
            let c = &mut n.status.as_mut().expect("status").conditions[0];
            c.status = "False".into();
            c.reason = "RuntimeUnavailable".into();
        }
    });
    let hb = BTreeMap::from([("n1".to_string(), START_MS)]);
    assert!(step(&mut sim, START_MS + 1_000, &hb, 0).is_empty());
}

#[test]
fn pods_of_a_lost_node_fail_and_their_controllers_replace_them() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(node("n2", true));
    sim.add(replica_set("web", 2));
    sim.settle(usize::MAX);
    let doomed: Vec<String> = sim
        .pods_of("web-")
        .iter()
        .map(|p| p.metadata.name.clone())
        .collect();
    let doomed_uids: Vec<String> = sim
        .pods_of("web-")
        .iter()
        .map(|p| p.metadata.uid.clone())
        .collect();
    // One of them was already being deleted when its node vanished.
    sim.pods_where(
        |p| p.metadata.name == doomed[1],
        |p| p.metadata.deletion_timestamp = Some("2027-01-01T00:00:00Z".into()),
    );
    let now = START_MS + 100_000;
    let hb = BTreeMap::from([("n1".to_string(), START_MS), ("n2".to_string(), now)]);
    sim.view.now_unix_ms = now;
    let actions = node_lifecycle(&sim.view, &hb, 0, &TIMING);
    assert_eq!(
        node_updates(&actions),
        vec![(
            "n1".to_string(),
            "Unknown".to_string(),
            "NodeLost".to_string()
        )]
    );
    sim.apply(&actions);
    for name in &doomed {
        let pod = sim.pod(name).expect("kept, failed");
        assert_eq!(phase(pod), "Failed");
        let status = pod.status.as_ref().expect("status");
        assert_eq!(
            (status.reason.as_str(), status.message.as_str()),
            ("NodeLost", "node n1 was lost")
        );
        assert!(!status.container_statuses.is_empty());
        assert!(
            status
                .container_statuses
                .iter()
                .all(|c| c.state.terminated.is_some() && !c.ready)
        );
    }
    // Next call: the terminating one is removed directly (its node fenced itself).
    let actions = node_lifecycle(&sim.view, &hb, 0, &TIMING);
    assert_eq!(deleted(&actions, Kind::Pod), vec![doomed[1].clone()]);
    sim.apply(&actions);
    assert!(node_lifecycle(&sim.view, &hb, 0, &TIMING).is_empty());

    // The ReplicaSet replaces them; the scheduler (here: the sim) uses n2.
    sim.bind_to = Some("n2".into());
    sim.settle(usize::MAX);
    let active = active_of(&sim, "web-");
    assert_eq!(active.len(), 2);
    // Names may be reused once freed; the instances are new.
    assert!(
        active
            .iter()
            .all(|p| p.spec.node_name == "n2" && !doomed_uids.contains(&p.metadata.uid))
    );
    assert!(
        sim.view.pods.iter().all(|p| !is_terminal(p)),
        "failed pods of the lost node are gone"
    );
}
