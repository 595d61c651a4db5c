use std::collections::BTreeMap;

use flotilla_api::cluster::Node;
use flotilla_api::pod::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
    Toleration,
};
use flotilla_api::workloads::DaemonSetStatus;
use flotilla_api::{Kind, Object};

use super::active_of;
use crate::daemonset::fits;
use crate::reconcile;
use crate::sim::*;

fn nodes_running(sim: &Sim) -> Vec<String> {
    let mut v: Vec<String> = active_of(sim, "agent-")
        .iter()
        .map(|p| p.spec.node_name.clone())
        .collect();
    v.sort();
    v
}

fn ds_status(sim: &Sim) -> DaemonSetStatus {
    sim.view.daemon_sets[0].status.clone().expect("status")
}

#[test]
fn follows_nodes_as_they_come_go_and_are_tainted() {
    let mut sim = Sim::new();
    sim.bind_to = None;
    sim.add(node("n1", true));
    sim.add(node("n2", true));
    sim.add(daemon_set("agent"));
    let first = reconcile(&sim.view, &sim.limits);
    for a in &first {
        if let crate::Action::Create(Object::Pod(p)) = a {
            assert!(!p.spec.node_name.is_empty(), "created bound");
        }
    }
    sim.settle(usize::MAX);
    assert_eq!(nodes_running(&sim), ["n1", "n2"]);
    let s = ds_status(&sim);
    assert_eq!(
        (
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_ready,
            s.number_misscheduled
        ),
        (2, 2, 2, 0)
    );

    sim.add(node("n3", true));
    sim.settle(usize::MAX);
    assert_eq!(nodes_running(&sim), ["n1", "n2", "n3"]);

    sim.remove(Kind::Node, "n2");
    sim.settle(usize::MAX);
    assert_eq!(nodes_running(&sim), ["n1", "n3"]);
    assert_eq!(
        sim.view.pods.len(),
        2,
        "the pod of the vanished node is deleted"
    );

    sim.remove(Kind::Node, "n1");
    sim.add(tainted("n1", "dedicated"));
    sim.settle(usize::MAX);
    assert_eq!(
        nodes_running(&sim),
        ["n3"],
        "a NoSchedule taint not tolerated evicts"
    );
    let s = ds_status(&sim);
    assert_eq!(
        (
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_misscheduled
        ),
        (1, 1, 0)
    );

    sim.edit(Kind::DaemonSet, "agent", |o| {
        if let Object::DaemonSet(ds) = o {
            ds.spec.template.spec.tolerations.push(Toleration {
                key: "dedicated".into(),
                operator: "Exists".into(),
                ..Toleration::default()
            })
        }
    });
    sim.settle(usize::MAX);
    assert_eq!(nodes_running(&sim), ["n1", "n3"], "tolerated again");
    assert_eq!(ds_status(&sim).observed_generation, Some(2));
    assert!(reconcile(&sim.view, &sim.limits).is_empty());
}

#[test]
fn pods_on_nodes_that_are_not_ready_are_left_alone() {
    let mut sim = Sim::new();
    sim.bind_to = None;
    sim.add(node("n1", true));
    sim.add(node("n2", true));
    sim.add(daemon_set("agent"));
    sim.settle(usize::MAX);
    sim.remove(Kind::Node, "n2");
    sim.add(node("n2", false));
    sim.add(node("n3", false));
    let on_n2 = active_of(&sim, "agent-")
        .into_iter()
        .find(|p| p.spec.node_name == "n2")
        .expect("pod")
        .metadata
        .name
        .clone();
    sim.pods_where(|p| p.metadata.name == on_n2, |p| set_phase(p, "Failed"));
    let actions = reconcile(&sim.view, &sim.limits);
    assert!(
        deleted(&actions, Kind::Pod).is_empty(),
        "the failed pod on a not-ready node stays"
    );
    assert!(
        created(&actions, Kind::Pod).is_empty(),
        "nothing new on not-ready nodes"
    );
    sim.apply(&actions);
    assert_eq!(ds_status(&sim).desired_number_scheduled, 3);

    // Back to Ready: the failed pod is replaced, once it is gone.
    sim.remove(Kind::Node, "n2");
    sim.add(node("n2", true));
    let actions = sim.round();
    assert_eq!(deleted(&actions, Kind::Pod), vec![on_n2.clone()]);
    assert!(
        created(&actions, Kind::Pod).is_empty(),
        "one pod per node at a time"
    );
    sim.settle(usize::MAX);
    assert_eq!(nodes_running(&sim), ["n1", "n2"]);
}

fn labelled(labels: &[(&str, &str)]) -> Node {
    let Object::Node(mut n) = node("n", true) else {
        unreachable!("node() makes a Node")
    };
    n.metadata.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    n
}

fn affinity(expressions: Vec<(&str, &str, &[&str])>) -> Option<Affinity> {
    Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: expressions
                        .into_iter()
                        .map(|(k, op, vals)| NodeSelectorRequirement {
                            key: k.into(),
                            operator: op.into(),
                            values: vals.iter().map(|v| v.to_string()).collect(),
                        })
                        .collect(),
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    })
}

#[test]
fn fits_checks_selector_affinity_and_taints() {
    let ssd = labelled(&[("disk", "ssd"), ("cores", "8")]);
    let mut tainted_node = labelled(&[]);
    tainted_node.spec.taints.push(flotilla_api::cluster::Taint {
        key: "gpu".into(),
        value: "yes".into(),
        effect: "NoExecute".into(),
    });
    let mut soft_tainted = labelled(&[]);
    soft_tainted.spec.taints.push(flotilla_api::cluster::Taint {
        key: "gpu".into(),
        value: "yes".into(),
        effect: "PreferNoSchedule".into(),
    });
    let selector = |k: &str, v: &str| PodSpec {
        node_selector: BTreeMap::from([(k.to_string(), v.to_string())]),
        ..PodSpec::default()
    };
    let with_affinity = |e| PodSpec {
        affinity: affinity(e),
        ..PodSpec::default()
    };
    let tolerating = |key: &str, op: &str, value: &str, effect: &str| PodSpec {
        tolerations: vec![Toleration {
            key: key.into(),
            operator: op.into(),
            value: value.into(),
            effect: effect.into(),
            ..Toleration::default()
        }],
        ..PodSpec::default()
    };
    let cases: Vec<(&str, &Node, PodSpec, bool)> = vec![
        ("no constraints", &ssd, PodSpec::default(), true),
        ("selector matches", &ssd, selector("disk", "ssd"), true),
        ("selector differs", &ssd, selector("disk", "hdd"), false),
        (
            "affinity In",
            &ssd,
            with_affinity(vec![("disk", "In", &["ssd", "nvme"])]),
            true,
        ),
        (
            "affinity NotIn",
            &ssd,
            with_affinity(vec![("disk", "NotIn", &["ssd"])]),
            false,
        ),
        (
            "affinity Gt",
            &ssd,
            with_affinity(vec![("cores", "Gt", &["4"])]),
            true,
        ),
        (
            "affinity Lt",
            &ssd,
            with_affinity(vec![("cores", "Lt", &["4"])]),
            false,
        ),
        (
            "affinity DoesNotExist",
            &ssd,
            with_affinity(vec![("gpu", "DoesNotExist", &[])]),
            true,
        ),
        ("affinity empty term", &ssd, with_affinity(vec![]), false),
        (
            "untolerated taint",
            &tainted_node,
            PodSpec::default(),
            false,
        ),
        (
            "PreferNoSchedule ignored",
            &soft_tainted,
            PodSpec::default(),
            true,
        ),
        (
            "tolerated by Equal",
            &tainted_node,
            tolerating("gpu", "Equal", "yes", "NoExecute"),
            true,
        ),
        (
            "Equal with another value",
            &tainted_node,
            tolerating("gpu", "Equal", "no", ""),
            false,
        ),
        (
            "tolerated by Exists, any effect",
            &tainted_node,
            tolerating("gpu", "Exists", "", ""),
            true,
        ),
        (
            "Exists with an empty key tolerates all",
            &tainted_node,
            tolerating("", "Exists", "", ""),
            true,
        ),
        (
            "toleration of another effect",
            &tainted_node,
            tolerating("gpu", "Exists", "", "NoSchedule"),
            false,
        ),
    ];
    for (name, node, spec, want) in cases {
        assert_eq!(fits(node, &spec), want, "{name}");
    }
}
