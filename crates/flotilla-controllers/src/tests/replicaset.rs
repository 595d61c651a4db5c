use flotilla_api::{Kind, Object};

use super::{active_of, ready_of};
use crate::sim::*;
use crate::{Action, reconcile};

fn scale(sim: &mut Sim, name: &str, replicas: i32) {
    sim.edit(Kind::ReplicaSet, name, |o| {
        if let Object::ReplicaSet(rs) = o {
            rs.spec.replicas = Some(replicas)
        }
    });
}

#[test]
fn scales_to_the_desired_count_and_then_stays_quiet() {
    for (from, to) in [(0, 3), (3, 0), (3, 5), (5, 2), (2, 2), (1, 10)] {
        let mut sim = Sim::new();
        sim.add(node("n1", true));
        sim.add(replica_set("web", from));
        sim.settle(usize::MAX);
        assert_eq!(
            active_of(&sim, "web-").len(),
            from as usize,
            "{from}->{to}: before"
        );
        scale(&mut sim, "web", to);
        sim.settle(usize::MAX);
        assert_eq!(
            active_of(&sim, "web-").len(),
            to as usize,
            "{from}->{to}: after"
        );
        assert_eq!(ready_of(&sim, "web-"), to as usize);
        let status = sim.rs("web").status.clone().expect("status written");
        assert_eq!(
            (
                status.replicas,
                status.ready_replicas,
                status.available_replicas
            ),
            (to, to, to),
            "{from}->{to}"
        );
        assert_eq!(
            status.observed_generation,
            sim.rs("web").metadata.generation
        );
        assert!(
            reconcile(&sim.view, &sim.limits).is_empty(),
            "{from}->{to}: converged"
        );
    }
}

#[test]
fn a_replica_set_of_thousands_gets_them_all_and_names_are_never_reused() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(replica_set("big", 3_000));
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..20 {
        names.extend(created(&sim.round(), Kind::Pod));
        if active_of(&sim, "big-").len() == 3_000 {
            break;
        }
    }
    assert_eq!(active_of(&sim, "big-").len(), 3_000);
    // A replacement after a scale-down and up gets a name never used.
    scale(&mut sim, "big", 0);
    while !sim.round().is_empty() {}
    assert!(sim.pods_of("big-").is_empty());
    scale(&mut sim, "big", 10);
    sim.advance_ms(1);
    let again = created(&sim.round(), Kind::Pod);
    assert_eq!(again.len(), 10);
    assert!(again.iter().all(|n| !names.contains(n)), "a name was reused: {again:?}");
}

#[test]
fn pods_are_named_deterministically_from_the_template() {
    let mut sim = Sim::new();
    sim.add(replica_set("web", 3));
    let first = reconcile(&sim.view, &sim.limits);
    assert_eq!(
        first,
        reconcile(&sim.view, &sim.limits),
        "same view, same actions"
    );
    let names = created(&first, Kind::Pod);
    assert_eq!(names.len(), 3);
    for name in &names {
        let suffix = name.strip_prefix("web-").expect("named after the rs");
        assert_eq!(suffix.len(), 5);
        assert!(
            suffix.bytes().all(|b| crate::NAME_ALPHABET.contains(&b)),
            "{name}"
        );
    }
    let pod = first.iter().find_map(|a| match a {
        Action::Create(Object::Pod(p)) => Some(p),
        _ => None,
    });
    let pod = pod.expect("a pod");
    assert_eq!(
        pod.metadata.labels.get("app").map(String::as_str),
        Some("web")
    );
    assert_eq!(
        pod.metadata.owner_references[0].uid,
        sim.rs("web").metadata.uid
    );
    assert!(pod.metadata.owner_references[0].controller);
    assert_eq!(pod.metadata.namespace, NS);
}

#[test]
fn scale_down_deletes_unscheduled_then_unready_then_newest() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(replica_set("web", 4));
    sim.bind_to = None;
    sim.round();
    let mut names: Vec<String> = sim
        .pods_of("web-")
        .iter()
        .map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    let (old_ready, unready, unscheduled, new_ready) = (&names[0], &names[1], &names[2], &names[3]);
    let now = sim.view.now_unix_ms;
    for (name, node_name, ready, created_s) in [
        (old_ready, "n1", true, 0),
        (unready, "n1", false, 10),
        (unscheduled, "", false, 0),
        (new_ready, "n1", true, 20),
    ] {
        sim.pods_where(
            |p| &p.metadata.name == name,
            |p| {
                p.spec.node_name = node_name.into();
                p.metadata.creation_timestamp =
                    Some(flotilla_api::time::format_rfc3339(now + created_s * 1000));
                if !node_name.is_empty() {
                    set_running(p, ready, now);
                }
            },
        );
    }
    for (replicas, expect_deleted) in [
        (3, vec![unscheduled.clone()]),
        (2, vec![unscheduled.clone(), unready.clone()]),
        (
            1,
            vec![unscheduled.clone(), unready.clone(), new_ready.clone()],
        ),
    ] {
        let mut view = sim.view.clone();
        for rs in &mut view.replica_sets {
            rs.spec.replicas = Some(replicas);
        }
        let mut got = deleted(&reconcile(&view, &sim.limits), Kind::Pod);
        got.sort();
        let mut want = expect_deleted;
        want.sort();
        assert_eq!(got, want, "scale to {replicas}");
    }
}

#[test]
fn failed_and_node_lost_pods_are_replaced() {
    for reason in ["Error", "NodeLost"] {
        let mut sim = Sim::new();
        sim.add(node("n1", true));
        sim.add(replica_set("web", 3));
        sim.settle(usize::MAX);
        let victim = sim.pods_of("web-")[0].metadata.name.clone();
        sim.pods_where(
            |p| p.metadata.name == victim,
            |p| {
                set_phase(p, "Failed");
                p.status.as_mut().expect("status").reason = reason.into();
            },
        );
        let actions = sim.round();
        assert_eq!(
            deleted(&actions, Kind::Pod),
            vec![victim.clone()],
            "{reason}"
        );
        let replacement = created(&actions, Kind::Pod);
        assert_eq!(replacement.len(), 1, "{reason}: replaced in the same round");
        assert_ne!(replacement[0], victim);
        sim.settle(usize::MAX);
        assert_eq!(active_of(&sim, "web-").len(), 3);
        assert!(
            sim.pod(&victim).is_none(),
            "{reason}: the failed pod is gone"
        );
    }
}

#[test]
fn terminating_pods_are_left_alone_and_not_counted() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(replica_set("web", 2));
    sim.settle(usize::MAX);
    let victim = sim.pods_of("web-")[0].metadata.name.clone();
    sim.pods_where(
        |p| p.metadata.name == victim,
        |p| p.metadata.deletion_timestamp = Some("2027-01-01T00:00:00Z".into()),
    );
    let actions = sim.round();
    assert!(
        deleted(&actions, Kind::Pod).is_empty(),
        "never deletes a terminating pod again"
    );
    assert_eq!(created(&actions, Kind::Pod).len(), 1, "but replaces it");
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Update(Object::Pod(_))))
    );
}

#[test]
fn pods_not_selected_or_not_controlled_do_not_count() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(replica_set("web", 2));
    sim.settle(usize::MAX);
    // Relabelled out of the selector: the RS makes a new replica.
    let relabelled = sim.pods_of("web-")[0].metadata.name.clone();
    sim.pods_where(
        |p| p.metadata.name == relabelled,
        |p| {
            p.metadata.labels.insert("app".into(), "debug".into());
        },
    );
    let actions = sim.round();
    assert_eq!(created(&actions, Kind::Pod).len(), 1);
    assert!(deleted(&actions, Kind::Pod).is_empty());
}
