use flotilla_api::pod::IntOrString;
use flotilla_api::workloads::Deployment;
use flotilla_api::{Kind, Object};

use super::{active_of, ready_of};
use crate::common::{controller_uid, is_terminating};
use crate::sim::*;
use flotilla_api::wellknown::{POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION};

use crate::{reconcile, template_hash};

fn edit_deployment(sim: &mut Sim, name: &str, f: impl FnOnce(&mut Deployment)) {
    sim.edit(Kind::Deployment, name, |o| {
        if let Object::Deployment(d) = o {
            f(d)
        }
    });
}

fn set_image(sim: &mut Sim, name: &str, image: &str) {
    edit_deployment(sim, name, |d| {
        d.spec.template.spec.containers[0].image = image.into()
    });
}

fn revision_of(sim: &Sim, rs: &str) -> String {
    sim.rs(rs)
        .metadata
        .annotations
        .get(REVISION_ANNOTATION)
        .cloned()
        .unwrap_or_default()
}

/// The ReplicaSet whose template runs `image`.
fn rs_for_image(sim: &Sim, image: &str) -> String {
    sim.view
        .replica_sets
        .iter()
        .find(|rs| rs.spec.template.spec.containers[0].image == image)
        .map(|rs| rs.metadata.name.clone())
        .unwrap_or_else(|| panic!("no rs for {image}"))
}

fn pods_of_rs<'a>(sim: &'a Sim, rs: &str) -> Vec<&'a flotilla_api::pod::Pod> {
    let uid = sim.rs(rs).metadata.uid.clone();
    sim.view
        .pods
        .iter()
        .filter(|p| controller_uid(&p.metadata) == Some(uid.as_str()))
        .map(|p| &**p)
        .collect()
}

#[test]
fn creates_a_replica_set_per_template_with_the_hash_label() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(deployment("web", 3, "img:1", 1, 0));
    sim.settle(usize::MAX);
    let hash = template_hash(&sim.deployment("web").spec.template);
    let rs = sim.rs(&format!("web-{hash}"));
    assert_eq!(rs.spec.replicas, Some(3));
    assert_eq!(
        rs.spec.selector.match_labels.get(POD_TEMPLATE_HASH_LABEL),
        Some(&hash)
    );
    assert_eq!(
        rs.spec
            .template
            .metadata
            .labels
            .get(POD_TEMPLATE_HASH_LABEL),
        Some(&hash)
    );
    assert_eq!(rs.metadata.labels.get(POD_TEMPLATE_HASH_LABEL), Some(&hash));
    assert_eq!(revision_of(&sim, &rs.metadata.name), "1");
    let pods = active_of(&sim, "web-");
    assert_eq!(pods.len(), 3);
    assert!(
        pods.iter()
            .all(|p| p.metadata.labels.get(POD_TEMPLATE_HASH_LABEL) == Some(&hash))
    );
    let d = sim.deployment("web");
    let status = d.status.clone().expect("status");
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.ready_replicas,
            status.available_replicas
        ),
        (3, 3, 3, 3)
    );
    assert_eq!(status.unavailable_replicas, 0);
    assert_eq!(status.observed_generation, d.metadata.generation);
    let progressing = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .expect("progressing");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("True", "NewReplicaSetAvailable")
    );
    let available = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .expect("available");
    assert_eq!(available.status, "True");
    assert_eq!(
        d.metadata
            .annotations
            .get(REVISION_ANNOTATION)
            .map(String::as_str),
        Some("1")
    );
    assert!(reconcile(&sim.view, &sim.limits).is_empty());
}

#[test]
fn rolling_update_respects_surge_and_unavailability_at_every_step() {
    let cases: &[(i32, IntOrString, IntOrString)] = &[
        (4, IntOrString::Int(1), IntOrString::Int(0)),
        (4, IntOrString::Int(0), IntOrString::Int(1)),
        (5, IntOrString::Int(2), IntOrString::Int(2)),
        (
            4,
            IntOrString::String("25%".into()),
            IntOrString::String("25%".into()),
        ),
        (
            10,
            IntOrString::String("30%".into()),
            IntOrString::String("10%".into()),
        ),
        (1, IntOrString::Int(1), IntOrString::Int(0)),
    ];
    for (replicas, surge, unavailable) in cases {
        let label = format!("{replicas} surge {surge:?} unavailable {unavailable:?}");
        let max_surge =
            flotilla_api::validate::scaled_value(surge, *replicas, true).expect("valid");
        let max_unavailable =
            flotilla_api::validate::scaled_value(unavailable, *replicas, false).expect("valid");
        let mut sim = Sim::new();
        sim.add(node("n1", true));
        sim.add(deployment("web", *replicas, "img:1", 0, 0));
        edit_deployment(&mut sim, "web", |d| {
            let ru = d
                .spec
                .strategy
                .as_mut()
                .and_then(|s| s.rolling_update.as_mut())
                .expect("rolling");
            ru.max_surge = Some(surge.clone());
            ru.max_unavailable = Some(unavailable.clone());
        });
        sim.settle(usize::MAX);
        assert_eq!(ready_of(&sim, "web-"), *replicas as usize, "{label}: v1 up");
        set_image(&mut sim, "web", "img:2");
        let check = |sim: &Sim, when: &str| {
            let active = active_of(sim, "web-").len() as i32;
            let ready = ready_of(sim, "web-") as i32;
            assert!(
                active <= replicas + max_surge,
                "{label} {when}: {active} pods over {replicas}+{max_surge}"
            );
            assert!(
                ready >= replicas - max_unavailable,
                "{label} {when}: {ready} ready under {replicas}-{max_unavailable}"
            );
        };
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds < 200, "{label}: no convergence");
            let actions = sim.round();
            check(&sim, "after controllers");
            // One pod becomes ready per step: the rollout must wait for it.
            let changed = sim.agents(1);
            check(&sim, "after agents");
            if actions.is_empty() && !changed {
                break;
            }
        }
        let new_rs = rs_for_image(&sim, "img:2");
        let old_rs = rs_for_image(&sim, "img:1");
        assert_eq!(
            pods_of_rs(&sim, &new_rs).len(),
            *replicas as usize,
            "{label}"
        );
        assert!(pods_of_rs(&sim, &old_rs).is_empty(), "{label}");
        assert_eq!(sim.rs(&old_rs).spec.replicas, Some(0));
        assert_eq!(revision_of(&sim, &new_rs), "2");
        let status = sim.deployment("web").status.clone().expect("status");
        assert_eq!(status.updated_replicas, *replicas, "{label}");
        assert!(
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Progressing" && c.reason == "NewReplicaSetAvailable")
        );
    }
}

#[test]
fn rollout_waits_while_new_pods_are_not_ready() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(deployment("web", 3, "img:1", 1, 0));
    sim.settle(usize::MAX);
    set_image(&mut sim, "web", "img:2");
    // The agents bind but never start the new pods.
    for _ in 0..10 {
        sim.round();
        sim.agents(0);
    }
    let old_rs = rs_for_image(&sim, "img:1");
    let new_rs = rs_for_image(&sim, "img:2");
    assert_eq!(
        sim.rs(&old_rs).spec.replicas,
        Some(3),
        "no old pod goes while none of the new is ready"
    );
    assert_eq!(
        sim.rs(&new_rs).spec.replicas,
        Some(1),
        "only the surge is created"
    );
    assert_eq!(ready_of(&sim, "web-"), 3);
}

#[test]
fn recreate_removes_every_old_pod_before_starting_new_ones() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(deployment("web", 3, "img:1", 0, 0));
    edit_deployment(&mut sim, "web", |d| {
        let s = d.spec.strategy.as_mut().expect("strategy");
        s.type_ = "Recreate".into();
        s.rolling_update = None;
    });
    sim.settle(usize::MAX);
    set_image(&mut sim, "web", "img:2");
    let mut saw_zero = false;
    for _ in 0..100 {
        let actions = sim.round();
        let old = sim
            .view
            .pods
            .iter()
            .filter(|p| p.spec.containers[0].image == "img:1")
            .count();
        let new = sim
            .view
            .pods
            .iter()
            .filter(|p| p.spec.containers[0].image == "img:2")
            .count();
        assert!(
            old == 0 || new == 0,
            "old ({old}, terminating included) and new ({new}) pods together"
        );
        saw_zero |= old == 0 && new == 0;
        let changed = sim.agents(usize::MAX);
        if actions.is_empty() && !changed {
            break;
        }
    }
    assert!(saw_zero, "there is a moment with no pod at all");
    let new_rs = rs_for_image(&sim, "img:2");
    assert_eq!(pods_of_rs(&sim, &new_rs).len(), 3);
    assert_eq!(ready_of(&sim, "web-"), 3);
}

#[test]
fn revisions_count_up_and_undo_reuses_the_old_replica_set() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(deployment("web", 2, "img:1", 1, 0));
    sim.settle(usize::MAX);
    let v1 = rs_for_image(&sim, "img:1");
    set_image(&mut sim, "web", "img:2");
    sim.settle(usize::MAX);
    let v2 = rs_for_image(&sim, "img:2");
    assert_eq!(
        (revision_of(&sim, &v1), revision_of(&sim, &v2)),
        ("1".into(), "2".into())
    );
    // rollout undo: the template goes back to v1's.
    set_image(&mut sim, "web", "img:1");
    sim.settle(usize::MAX);
    assert_eq!(
        sim.view.replica_sets.len(),
        2,
        "no new replica set for a known template"
    );
    assert_eq!(
        revision_of(&sim, &v1),
        "3",
        "the old template becomes the newest revision"
    );
    assert_eq!(sim.rs(&v1).spec.replicas, Some(2));
    assert_eq!(sim.rs(&v2).spec.replicas, Some(0));
    assert_eq!(pods_of_rs(&sim, &v1).len(), 2);
    let d = sim.deployment("web");
    assert_eq!(
        d.metadata
            .annotations
            .get(REVISION_ANNOTATION)
            .map(String::as_str),
        Some("3")
    );
    // And forward again: v2 becomes revision 4.
    set_image(&mut sim, "web", "img:2");
    sim.settle(usize::MAX);
    assert_eq!(revision_of(&sim, &v2), "4");
}

#[test]
fn revision_history_limit_deletes_the_oldest_scaled_down_replica_sets() {
    for limit in [0, 1, 2] {
        let mut sim = Sim::new();
        sim.add(node("n1", true));
        sim.add(deployment("web", 1, "img:1", 1, 0));
        edit_deployment(&mut sim, "web", |d| {
            d.spec.revision_history_limit = Some(limit)
        });
        for v in 1..=5 {
            set_image(&mut sim, "web", &format!("img:{v}"));
            sim.settle(usize::MAX);
        }
        let mut kept: Vec<String> = sim
            .view
            .replica_sets
            .iter()
            .map(|rs| rs.spec.template.spec.containers[0].image.clone())
            .collect();
        kept.sort();
        let want: Vec<String> = ((5 - limit)..=5).map(|v| format!("img:{v}")).collect();
        assert_eq!(kept, want, "limit {limit}");
    }
}

#[test]
fn scaling_without_a_template_change_resizes_the_current_replica_set() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(deployment("web", 2, "img:1", 1, 1));
    sim.settle(usize::MAX);
    for replicas in [5, 1, 0, 3] {
        edit_deployment(&mut sim, "web", |d| d.spec.replicas = Some(replicas));
        sim.settle(usize::MAX);
        assert_eq!(sim.view.replica_sets.len(), 1);
        assert_eq!(active_of(&sim, "web-").len(), replicas as usize);
        assert_eq!(
            sim.deployment("web")
                .status
                .clone()
                .expect("status")
                .replicas,
            replicas
        );
    }
}

#[test]
fn a_paused_deployment_does_not_roll_out() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(deployment("web", 2, "img:1", 1, 0));
    sim.settle(usize::MAX);
    edit_deployment(&mut sim, "web", |d| {
        d.spec.paused = true;
        d.spec.template.spec.containers[0].image = "img:2".into();
    });
    sim.settle(usize::MAX);
    assert_eq!(sim.view.replica_sets.len(), 1);
    let status = sim.deployment("web").status.clone().expect("status");
    assert!(status.conditions.iter().any(|c| c.type_ == "Progressing"
        && c.status == "Unknown"
        && c.reason == "DeploymentPaused"));
    edit_deployment(&mut sim, "web", |d| d.spec.paused = false);
    sim.settle(usize::MAX);
    assert_eq!(pods_of_rs(&sim, &rs_for_image(&sim, "img:2")).len(), 2);
    assert!(sim.view.pods.iter().all(|p| !is_terminating(&p.metadata)));
}
