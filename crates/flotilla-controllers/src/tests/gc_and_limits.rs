use flotilla_api::meta::OwnerReference;
use flotilla_api::pod::Pod;
use flotilla_api::{Kind, Object};

use super::active_of;
use crate::sim::*;
use crate::{Action, Limits, reconcile};

fn owned_pod(name: &str, owners: &[(&str, &str)]) -> Object {
    let mut pod = Pod {
        metadata: meta(name),
        ..Pod::default()
    };
    pod.metadata.owner_references = owners
        .iter()
        .map(|(kind, uid)| OwnerReference {
            api_version: "v1".into(),
            kind: kind.to_string(),
            name: "owner".into(),
            uid: uid.to_string(),
            controller: false,
            block_owner_deletion: false,
        })
        .collect();
    Object::Pod(pod)
}

#[test]
fn orphans_are_collected_and_nothing_else() {
    let mut sim = Sim::new();
    sim.add(replica_set("kept", 0));
    let kept_uid = sim.rs("kept").metadata.uid.clone();
    sim.add(owned_pod("orphan", &[("ReplicaSet", "uid-gone")]));
    sim.add(owned_pod(
        "half-orphan",
        &[("ReplicaSet", "uid-gone"), ("ReplicaSet", &kept_uid)],
    ));
    sim.add(owned_pod("owned", &[("ReplicaSet", &kept_uid)]));
    sim.add(owned_pod("bare", &[]));
    sim.add(owned_pod("unknown-owner-kind", &[("ConfigMap", "uid-cm")]));
    let mut orphan_rs = replica_set("orphan-rs", 0);
    orphan_rs.metadata_mut().owner_references = vec![OwnerReference {
        kind: "Deployment".into(),
        uid: "uid-deleted".into(),
        controller: true,
        ..OwnerReference::default()
    }];
    sim.add(orphan_rs);
    let actions = reconcile(&sim.view, &sim.limits);
    let mut gone: Vec<String> = deleted(&actions, Kind::Pod);
    gone.extend(deleted(&actions, Kind::ReplicaSet));
    gone.sort();
    assert_eq!(gone, ["orphan", "orphan-rs"]);
    sim.apply(&actions);
    assert!(
        reconcile(&sim.view, &sim.limits)
            .iter()
            .all(|a| !matches!(a, Action::Delete { .. }))
    );
}

#[test]
fn one_round_is_bounded_and_the_rest_follows() {
    let mut sim = Sim::new();
    sim.limits = Limits {
        max_actions: 250,
        max_creates_per_object: 150,
    };
    for name in ["a", "b", "c"] {
        sim.add(replica_set(name, 200));
    }
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 50, "no convergence");
        let actions = sim.round();
        assert!(
            actions.len() <= 250,
            "round {rounds}: {} actions",
            actions.len()
        );
        if rounds == 1 {
            assert_eq!(actions.len(), 250, "the first round is full");
        }
        if actions.is_empty() {
            break;
        }
    }
    assert!(rounds > 3);
    for name in ["a-", "b-", "c-"] {
        assert_eq!(active_of(&sim, name).len(), 200, "{name}");
    }
}

#[test]
fn a_full_round_never_writes_one_object_twice() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(deployment("web", 3, "img:1", 1, 0));
    for _ in 0..20 {
        let actions = reconcile(&sim.view, &sim.limits);
        let mut targets: Vec<_> = actions.iter().filter_map(Action::target).collect();
        let n = targets.len();
        targets.sort();
        targets.dedup();
        assert_eq!(targets.len(), n, "one write per object per round");
        sim.apply(&actions);
        sim.agents(usize::MAX);
    }
}
