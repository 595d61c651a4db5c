use std::collections::{BTreeMap, HashMap};

use flotilla_api::cluster::{Node, NodeStatus, Taint};
use flotilla_api::meta::{LabelSelector, OwnerReference};
use flotilla_api::pod::{
    Affinity, Condition, Container, ContainerPort, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, Pod, PodAffinity, PodAffinityTerm, PodStatus, PreferredSchedulingTerm, ResourceRequirements,
    Toleration, WeightedPodAffinityTerm,
};
use flotilla_api::quantity::Quantity;

use super::*;

fn q(s: &str) -> Quantity {
    Quantity(s.into())
}

fn with<T>(mut t: T, f: impl FnOnce(&mut T)) -> T {
    f(&mut t);
    t
}

fn node(name: &str, cpu: &str, memory: &str) -> Node {
    let mut n = Node::default();
    n.metadata.name = name.into();
    let allocatable = [("cpu", cpu), ("memory", memory), ("pods", "110")].into_iter().map(|(k, v)| (k.to_string(), q(v)));
    n.status = Some(NodeStatus {
        allocatable: allocatable.collect(),
        conditions: vec![Condition { type_: "Ready".into(), status: "True".into(), ..Default::default() }],
        ..Default::default()
    });
    n
}

fn small(name: &str) -> Node {
    node(name, "4", "8Gi")
}

fn label(n: Node, key: &str, value: &str) -> Node {
    with(n, |n| {
        n.metadata.labels.insert(key.into(), value.into());
    })
}

fn taint(n: Node, key: &str, value: &str, effect: &str) -> Node {
    with(n, |n| n.spec.taints.push(Taint { key: key.into(), value: value.into(), effect: effect.into() }))
}

fn container(name: &str, cpu: &str, memory: &str) -> Container {
    let mut requests = BTreeMap::new();
    if !cpu.is_empty() {
        requests.insert("cpu".to_string(), q(cpu));
    }
    if !memory.is_empty() {
        requests.insert("memory".to_string(), q(memory));
    }
    Container {
        name: name.into(),
        image: "busybox".into(),
        resources: ResourceRequirements { requests, limits: BTreeMap::new() },
        ..Default::default()
    }
}

fn pod(name: &str, cpu: &str, memory: &str) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = name.into();
    p.metadata.namespace = "default".into();
    p.metadata.uid = format!("uid-{name}");
    p.metadata.resource_version = "7".into();
    p.metadata.creation_timestamp = Some("2024-01-01T00:00:00Z".into());
    p.spec.containers = vec![container("main", cpu, memory)];
    p
}

fn bound(p: Pod, node: &str) -> Pod {
    with(p, |p| {
        p.spec.node_name = node.into();
        p.status = Some(PodStatus { phase: "Running".into(), ..Default::default() });
    })
}

fn labels(p: Pod, key: &str, value: &str) -> Pod {
    with(p, |p| {
        p.metadata.labels.insert(key.into(), value.into());
    })
}

fn owned(p: Pod, owner_uid: &str) -> Pod {
    with(p, |p| {
        p.metadata.owner_references.push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "rs".into(),
            uid: owner_uid.into(),
            controller: true,
            block_owner_deletion: true,
        })
    })
}

fn host_port(p: Pod, port: i32, protocol: &str) -> Pod {
    with(p, |p| {
        p.spec.containers[0].ports.push(ContainerPort {
            container_port: port,
            host_port: Some(port),
            protocol: protocol.into(),
            ..Default::default()
        })
    })
}

fn tolerate(p: Pod, key: &str, operator: &str, value: &str, effect: &str) -> Pod {
    with(p, |p| {
        p.spec.tolerations.push(Toleration {
            key: key.into(),
            operator: operator.into(),
            value: value.into(),
            effect: effect.into(),
            toleration_seconds: None,
        })
    })
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement { key: key.into(), operator: operator.into(), values: values.iter().map(|v| v.to_string()).collect() }
}

/// Required node affinity: terms ORed, each term's requirements ANDed.
fn node_affinity(p: Pod, terms: Vec<Vec<NodeSelectorRequirement>>) -> Pod {
    with(p, |p| {
        let terms = terms.into_iter().map(|match_expressions| NodeSelectorTerm { match_expressions }).collect();
        p.spec.affinity.get_or_insert_with(Affinity::default).node_affinity = Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector { node_selector_terms: terms }),
            ..Default::default()
        });
    })
}

fn selector(key: &str, value: &str) -> LabelSelector {
    LabelSelector { match_labels: [(key.to_string(), value.to_string())].into(), ..Default::default() }
}

fn affinity_term(key: &str, value: &str, topology_key: &str) -> PodAffinityTerm {
    PodAffinityTerm { label_selector: Some(selector(key, value)), namespaces: vec![], topology_key: topology_key.into() }
}

fn anti_affinity(p: Pod, term: PodAffinityTerm) -> Pod {
    with(p, |p| {
        p.spec
            .affinity
            .get_or_insert_with(Affinity::default)
            .pod_anti_affinity
            .get_or_insert_with(PodAffinity::default)
            .required_during_scheduling_ignored_during_execution
            .push(term)
    })
}

fn pod_affinity(p: Pod, term: PodAffinityTerm) -> Pod {
    with(p, |p| {
        p.spec
            .affinity
            .get_or_insert_with(Affinity::default)
            .pod_affinity
            .get_or_insert_with(PodAffinity::default)
            .required_during_scheduling_ignored_during_execution
            .push(term)
    })
}

fn created(p: Pod, at: &str) -> Pod {
    with(p, |p| p.metadata.creation_timestamp = Some(at.into()))
}

/// Where the Pod named `name` went: Ok(node) or Err(message).
fn outcome(plan: &Plan, name: &str) -> Result<String, String> {
    if let Some(b) = plan.bindings.iter().find(|b| b.name == name) {
        return Ok(b.node.clone());
    }
    match plan.unschedulable.iter().find(|u| u.name == name) {
        Some(u) => Err(u.message.clone()),
        None => panic!("{name} is neither bound nor unschedulable in {plan:?}"),
    }
}

fn placements(plan: &Plan) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for b in &plan.bindings {
        *counts.entry(b.node.clone()).or_default() += 1;
    }
    counts
}

#[test]
fn pod_requests_follow_the_kubernetes_rules() {
    let with_limits = |cpu: &str, memory: &str| {
        with(container("l", "", ""), |c| {
            c.resources.limits.insert("cpu".into(), q(cpu));
            c.resources.limits.insert("memory".into(), q(memory));
        })
    };
    type Case = (&'static str, Vec<Container>, Vec<Container>, u64, u64);
    let cases: Vec<Case> = vec![
        ("nothing requested", vec![container("a", "", "")], vec![], 0, 0),
        ("containers are summed", vec![container("a", "250m", "64Mi"), container("b", "500m", "64Mi")], vec![], 750, 128 << 20),
        ("the largest init container wins when larger", vec![container("a", "100m", "64Mi")], vec![container("i", "2", "32Mi"), container("j", "1", "16Mi")], 2000, 64 << 20),
        ("init containers run one at a time", vec![container("a", "300m", "")], vec![container("i", "200m", ""), container("j", "200m", "")], 300, 0),
        ("limits stand in for missing requests", vec![with_limits("1", "1Gi")], vec![], 1000, 1 << 30),
        ("a request beats a limit", vec![with(container("a", "100m", ""), |c| { c.resources.limits.insert("cpu".into(), q("2")); })], vec![], 100, 0),
    ];
    for (name, containers, init, cpu, memory) in cases {
        let p = with(pod("p", "", ""), |p| {
            p.spec.containers = containers;
            p.spec.init_containers = init;
        });
        assert_eq!(pod_requests(&p), Resources { cpu_millis: cpu, memory_bytes: memory, pods: 1 }, "{name}");
    }
}

#[test]
fn each_filter_accepts_and_refuses_with_kubernetes_wording() {
    let not_ready = with(small("n1"), |n| n.status.as_mut().unwrap().conditions[0].status = "False".into());
    let no_status = with(small("n1"), |n| n.status.as_mut().unwrap().conditions.clear());
    let cordoned = with(small("n1"), |n| n.spec.unschedulable = true);
    let zoned = label(small("n1"), "zone", "a");
    let sized = label(small("n1"), "cores", "8");
    let one = "0/1 nodes are available: 1";
    type Case = (&'static str, Node, Vec<Pod>, Pod, Result<&'static str, String>);
    let cases: Vec<Case> = vec![
        ("a ready node takes the pod", small("n1"), vec![], pod("p", "1", "1Gi"), Ok("n1")),
        ("not ready", not_ready.clone(), vec![], pod("p", "", ""), Err(format!("{one} node(s) were not ready."))),
        ("no conditions is not ready", no_status, vec![], pod("p", "", ""), Err(format!("{one} node(s) were not ready."))),
        ("not-ready toleration", not_ready, vec![], tolerate(pod("p", "", ""), "node.kubernetes.io/not-ready", "Exists", "", ""), Ok("n1")),
        ("cordoned", cordoned.clone(), vec![], pod("p", "", ""), Err(format!("{one} node(s) were unschedulable."))),
        ("cordon tolerated", cordoned, vec![], tolerate(pod("p", "", ""), "node.kubernetes.io/unschedulable", "Exists", "", "NoSchedule"), Ok("n1")),
        ("NoSchedule taint", taint(small("n1"), "dedicated", "gpu", "NoSchedule"), vec![], pod("p", "", ""), Err(format!("{one} node(s) had untolerated taint {{dedicated: gpu}}."))),
        ("NoExecute taint", taint(small("n1"), "gone", "", "NoExecute"), vec![], pod("p", "", ""), Err(format!("{one} node(s) had untolerated taint {{gone: }}."))),
        ("Equal toleration", taint(small("n1"), "dedicated", "gpu", "NoSchedule"), vec![], tolerate(pod("p", "", ""), "dedicated", "Equal", "gpu", "NoSchedule"), Ok("n1")),
        ("Equal toleration, other value", taint(small("n1"), "dedicated", "gpu", "NoSchedule"), vec![], tolerate(pod("p", "", ""), "dedicated", "Equal", "cpu", ""), Err(format!("{one} node(s) had untolerated taint {{dedicated: gpu}}."))),
        ("toleration for another effect", taint(small("n1"), "dedicated", "gpu", "NoSchedule"), vec![], tolerate(pod("p", "", ""), "dedicated", "Exists", "", "NoExecute"), Err(format!("{one} node(s) had untolerated taint {{dedicated: gpu}}."))),
        ("empty key with Exists tolerates all", taint(taint(small("n1"), "a", "1", "NoSchedule"), "b", "2", "NoExecute"), vec![], tolerate(pod("p", "", ""), "", "Exists", "", ""), Ok("n1")),
        ("PreferNoSchedule does not filter", taint(small("n1"), "soft", "x", "PreferNoSchedule"), vec![], pod("p", "", ""), Ok("n1")),
        ("nodeSelector matches", zoned.clone(), vec![], with(pod("p", "", ""), |p| { p.spec.node_selector.insert("zone".into(), "a".into()); }), Ok("n1")),
        ("nodeSelector mismatch", zoned.clone(), vec![], with(pod("p", "", ""), |p| { p.spec.node_selector.insert("zone".into(), "b".into()); }), Err(format!("{one} node(s) didn't match Pod's node affinity/selector."))),
        ("hostname defaults to the node name", small("n1"), vec![], with(pod("p", "", ""), |p| { p.spec.node_selector.insert("kubernetes.io/hostname".into(), "n1".into()); }), Ok("n1")),
        ("affinity In", zoned.clone(), vec![], node_affinity(pod("p", "", ""), vec![vec![requirement("zone", "In", &["a", "b"])]]), Ok("n1")),
        ("affinity In refuses", zoned.clone(), vec![], node_affinity(pod("p", "", ""), vec![vec![requirement("zone", "In", &["b"])]]), Err(format!("{one} node(s) didn't match Pod's node affinity/selector."))),
        ("affinity NotIn", zoned.clone(), vec![], node_affinity(pod("p", "", ""), vec![vec![requirement("zone", "NotIn", &["a"])]]), Err(format!("{one} node(s) didn't match Pod's node affinity/selector."))),
        ("affinity NotIn on a missing label", small("n1"), vec![], node_affinity(pod("p", "", ""), vec![vec![requirement("zone", "NotIn", &["a"])]]), Ok("n1")),
        ("affinity Exists", zoned.clone(), vec![], node_affinity(pod("p", "", ""), vec![vec![requirement("zone", "Exists", &[])]]), Ok("n1")),
        ("affinity DoesNotExist", zoned.clone(), vec![], node_affinity(pod("p", "", ""), vec![vec![requirement("zone", "DoesNotExist", &[])]]), Err(format!("{one} node(s) didn't match Pod's node affinity/selector."))),
        ("affinity Gt", sized.clone(), vec![], node_affinity(pod("p", "", ""), vec![vec![requirement("cores", "Gt", &["4"])]]), Ok("n1")),
        ("affinity Gt refuses", sized.clone(), vec![], node_affinity(pod("p", "", ""), vec![vec![requirement("cores", "Gt", &["8"])]]), Err(format!("{one} node(s) didn't match Pod's node affinity/selector."))),
        ("affinity Lt", sized.clone(), vec![], node_affinity(pod("p", "", ""), vec![vec![requirement("cores", "Lt", &["16"])]]), Ok("n1")),
        ("affinity Lt on a non-number", zoned.clone(), vec![], node_affinity(pod("p", "", ""), vec![vec![requirement("zone", "Lt", &["16"])]]), Err(format!("{one} node(s) didn't match Pod's node affinity/selector."))),
        ("requirements in a term are ANDed", zoned.clone(), vec![], node_affinity(pod("p", "", ""), vec![vec![requirement("zone", "In", &["a"]), requirement("gpu", "Exists", &[])]]), Err(format!("{one} node(s) didn't match Pod's node affinity/selector."))),
        ("terms are ORed", zoned.clone(), vec![], node_affinity(pod("p", "", ""), vec![vec![requirement("gpu", "Exists", &[])], vec![requirement("zone", "In", &["a"])]]), Ok("n1")),
        ("an empty term matches nothing", zoned, vec![], node_affinity(pod("p", "", ""), vec![vec![]]), Err(format!("{one} node(s) didn't match Pod's node affinity/selector."))),
        ("host port in use", small("n1"), vec![bound(host_port(pod("web", "", ""), 8080, "TCP"), "n1")], host_port(pod("p", "", ""), 8080, ""), Err(format!("{one} node(s) didn't have free ports for the requested pod ports."))),
        ("host port on another protocol", small("n1"), vec![bound(host_port(pod("web", "", ""), 8080, "TCP"), "n1")], host_port(pod("p", "", ""), 8080, "UDP"), Ok("n1")),
        ("insufficient cpu", small("n1"), vec![bound(pod("big", "3", ""), "n1")], pod("p", "2", ""), Err(format!("{one} Insufficient cpu."))),
        ("insufficient memory", small("n1"), vec![], pod("p", "", "9Gi"), Err(format!("{one} Insufficient memory."))),
        ("short of both", small("n1"), vec![], pod("p", "5", "9Gi"), Err(format!("{one} Insufficient cpu, 1 Insufficient memory."))),
        ("exactly full fits", small("n1"), vec![bound(pod("big", "3", "4Gi"), "n1")], pod("p", "1", "4Gi"), Ok("n1")),
        ("too many pods", with(small("n1"), |n| { n.status.as_mut().unwrap().allocatable.insert("pods".into(), q("1")); }), vec![bound(pod("other", "", ""), "n1")], pod("p", "", ""), Err(format!("{one} Too many pods."))),
        ("finished pods free their resources", small("n1"), vec![with(bound(pod("done", "4", ""), "n1"), |p| p.status.as_mut().unwrap().phase = "Succeeded".into())], pod("p", "4", ""), Ok("n1")),
        ("capacity when allocatable is missing", with(small("n1"), |n| { let s = n.status.as_mut().unwrap(); s.capacity = std::mem::take(&mut s.allocatable); }), vec![], pod("p", "4", "8Gi"), Ok("n1")),
        ("anti-affinity on hostname", small("n1"), vec![bound(labels(pod("db-0", "", ""), "app", "db"), "n1")], anti_affinity(pod("p", "", ""), affinity_term("app", "db", "kubernetes.io/hostname")), Err(format!("{one} node(s) didn't match pod anti-affinity rules."))),
        ("anti-affinity in another namespace", small("n1"), vec![bound(labels(with(pod("db-0", "", ""), |p| p.metadata.namespace = "other".into()), "app", "db"), "n1")], anti_affinity(pod("p", "", ""), affinity_term("app", "db", "kubernetes.io/hostname")), Ok("n1")),
        ("anti-affinity on a key the node lacks", small("n1"), vec![bound(labels(pod("db-0", "", ""), "app", "db"), "n1")], anti_affinity(pod("p", "", ""), affinity_term("app", "db", "zone")), Ok("n1")),
        ("existing pod's anti-affinity", small("n1"), vec![bound(anti_affinity(pod("loner", "", ""), affinity_term("app", "web", "kubernetes.io/hostname")), "n1")], labels(pod("p", "", ""), "app", "web"), Err(format!("{one} node(s) didn't satisfy existing pods anti-affinity rules."))),
        ("required pod affinity unmet", small("n1"), vec![bound(labels(pod("db-0", "", ""), "app", "cache"), "n1")], pod_affinity(pod("p", "", ""), affinity_term("app", "db", "kubernetes.io/hostname")), Err(format!("{one} node(s) didn't match pod affinity rules."))),
        ("first of a self-affine group", small("n1"), vec![], pod_affinity(labels(pod("p", "", ""), "app", "db"), affinity_term("app", "db", "kubernetes.io/hostname")), Ok("n1")),
    ];
    for (name, n, existing, p, expected) in cases {
        let mut pods = existing;
        pods.push(p);
        let plan = schedule(&[n], &pods, &SchedulerConfig::default());
        assert_eq!(outcome(&plan, "p"), expected.map(str::to_string), "{name}");
        assert_eq!(plan.bindings.len() + plan.unschedulable.len(), 1, "{name}: only the pending pod is planned");
    }
}

#[test]
fn reasons_are_counted_per_node_and_sorted_like_kubernetes() {
    let nodes = vec![
        node("a", "1", "8Gi"),
        node("b", "1", "8Gi"),
        taint(small("c"), "dedicated", "gpu", "NoSchedule"),
    ];
    let plan = schedule(&nodes, &[pod("p", "2", "")], &SchedulerConfig::default());
    assert_eq!(
        outcome(&plan, "p"),
        Err("0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu.".into())
    );
    let plan = schedule(&[], &[pod("p", "", "")], &SchedulerConfig::default());
    assert_eq!(outcome(&plan, "p"), Err("0/0 nodes are available: no nodes available to schedule pods.".into()));
}

#[test]
fn pods_fit_on_the_one_node_that_fits() {
    let nodes = vec![node("a", "1", "8Gi"), small("b"), label(small("c"), "zone", "x")];
    let cases = [
        (pod("p", "2", ""), "b"),
        (with(pod("p", "", ""), |p| { p.spec.node_selector.insert("zone".into(), "x".into()); }), "c"),
    ];
    for (p, want) in cases {
        let plan = schedule(&nodes, &[p], &SchedulerConfig::default());
        assert_eq!(outcome(&plan, "p"), Ok(want.to_string()));
    }
}

#[test]
fn least_allocated_spreads_and_most_allocated_packs() {
    let nodes = vec![small("busy"), small("idle")];
    let pods = vec![bound(pod("load", "2", "4Gi"), "busy"), pod("p", "500m", "512Mi")];
    let least = SchedulerConfig { scoring: Scoring::LeastAllocated, ..Default::default() };
    let most = SchedulerConfig { scoring: Scoring::MostAllocated, ..Default::default() };
    assert_eq!(outcome(&schedule(&nodes, &pods, &least), "p"), Ok("idle".into()));
    assert_eq!(outcome(&schedule(&nodes, &pods, &most), "p"), Ok("busy".into()));
}

#[test]
fn replicas_of_one_owner_spread_evenly_even_when_packing() {
    let nodes = vec![small("a"), small("b"), small("c")];
    let most = SchedulerConfig { scoring: Scoring::MostAllocated, ..Default::default() };
    let replicas: Vec<Pod> = (0..6).map(|i| owned(pod(&format!("web-{i}"), "100m", "64Mi"), "rs-1")).collect();
    let plan = schedule(&nodes, &replicas, &most);
    assert_eq!(placements(&plan), [("a", 2), ("b", 2), ("c", 2)].map(|(n, c)| (n.to_string(), c)).into());
    // Without an owner the same Pods pack onto one node.
    let loose: Vec<Pod> = (0..6).map(|i| pod(&format!("web-{i}"), "100m", "64Mi")).collect();
    let plan = schedule(&nodes, &loose, &most);
    assert_eq!(placements(&plan).len(), 1, "{plan:?}");
}

#[test]
fn preferences_steer_placement() {
    let nodes = vec![small("a"), label(small("b"), "disk", "ssd"), taint(small("c"), "spot", "yes", "PreferNoSchedule")];
    let prefer_ssd = with(pod("p", "", ""), |p| {
        p.spec.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                preferred_during_scheduling_ignored_during_execution: vec![PreferredSchedulingTerm {
                    weight: 50,
                    preference: NodeSelectorTerm { match_expressions: vec![requirement("disk", "In", &["ssd"])] },
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
    });
    let weighted = |p: Pod, anti: bool| {
        with(p, |p| {
            let a = p.spec.affinity.get_or_insert_with(Affinity::default);
            let slot = if anti { &mut a.pod_anti_affinity } else { &mut a.pod_affinity };
            slot.get_or_insert_with(PodAffinity::default).preferred_during_scheduling_ignored_during_execution.push(
                WeightedPodAffinityTerm { weight: 100, pod_affinity_term: affinity_term("app", "cache", "kubernetes.io/hostname") },
            )
        })
    };
    let cache = bound(labels(pod("cache", "", ""), "app", "cache"), "a");
    let cases = [
        ("preferred node affinity", vec![prefer_ssd], "b"),
        ("preferred pod affinity", vec![cache.clone(), weighted(pod("p", "", ""), false)], "a"),
        ("soft taints are avoided", vec![bound(pod("load", "1", "1Gi"), "a"), pod("p", "", "")], "b"),
    ];
    for (name, pods, want) in cases {
        for seed in 0..8 {
            let plan = schedule(&nodes, &pods, &SchedulerConfig { seed, ..Default::default() });
            assert_eq!(outcome(&plan, "p"), Ok(want.to_string()), "{name}, seed {seed}");
        }
    }
    // A soft taint loses to an equally empty node.
    let two = vec![small("a"), taint(small("c"), "spot", "yes", "PreferNoSchedule")];
    for seed in 0..8 {
        let plan = schedule(&two, &[pod("p", "", "")], &SchedulerConfig { seed, ..Default::default() });
        assert_eq!(outcome(&plan, "p"), Ok("a".into()), "seed {seed}");
        let plan = schedule(&[small("a"), small("b")], &[cache.clone(), weighted(pod("p", "", ""), true)], &SchedulerConfig { seed, ..Default::default() });
        assert_eq!(outcome(&plan, "p"), Ok("b".into()), "preferred anti-affinity, seed {seed}");
    }
}

#[test]
fn the_same_seed_gives_the_same_plan_and_seeds_differ() {
    let nodes: Vec<Node> = (0..20).map(|i| small(&format!("n{i:02}"))).collect();
    let pods: Vec<Pod> = (0..40).map(|i| pod(&format!("p{i:02}"), "100m", "64Mi")).collect();
    let config = |seed| SchedulerConfig { seed, ..Default::default() };
    let first = schedule(&nodes, &pods, &config(7));
    assert_eq!(first.bindings.len(), 40);
    assert_eq!(first, schedule(&nodes, &pods, &config(7)));
    let mut reversed_nodes = nodes.clone();
    reversed_nodes.reverse();
    let mut reversed_pods = pods.clone();
    reversed_pods.reverse();
    assert_eq!(first, schedule(&reversed_nodes, &reversed_pods, &config(7)), "input order does not matter");
    assert!((0..10).any(|seed| schedule(&nodes, &pods, &config(seed)) != first), "some seed places differently");
}

#[test]
fn a_round_accounts_for_its_own_bindings() {
    let nodes = vec![node("only", "1", "1Gi")];
    let pods = vec![created(pod("second", "600m", ""), "2024-01-02T00:00:00Z"), created(pod("first", "600m", ""), "2024-01-01T00:00:00Z")];
    let plan = schedule(&nodes, &pods, &SchedulerConfig::default());
    assert_eq!(outcome(&plan, "first"), Ok("only".into()));
    assert_eq!(outcome(&plan, "second"), Err("0/1 nodes are available: 1 Insufficient cpu.".into()));

    let ports = vec![host_port(pod("a", "", ""), 80, "TCP"), host_port(pod("b", "", ""), 80, "TCP")];
    let plan = schedule(&nodes, &ports, &SchedulerConfig::default());
    assert_eq!(outcome(&plan, "a"), Ok("only".into()));
    assert_eq!(outcome(&plan, "b"), Err("0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports.".into()));

    let two = vec![small("x"), small("y")];
    let replicas: Vec<Pod> = (0..3)
        .map(|i| anti_affinity(labels(pod(&format!("db-{i}"), "", ""), "app", "db"), affinity_term("app", "db", "kubernetes.io/hostname")))
        .collect();
    let plan = schedule(&two, &replicas, &SchedulerConfig::default());
    assert_eq!(placements(&plan), [("x".to_string(), 1), ("y".to_string(), 1)].into());
    assert_eq!(outcome(&plan, "db-2"), Err("0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules.".into()));

    // Required affinity is satisfied by a Pod placed earlier in the round.
    let pods = vec![
        created(labels(pod("db", "", ""), "app", "db"), "2024-01-01T00:00:00Z"),
        created(pod_affinity(pod("app", "", ""), affinity_term("app", "db", "kubernetes.io/hostname")), "2024-01-02T00:00:00Z"),
    ];
    let plan = schedule(&two, &pods, &SchedulerConfig::default());
    assert_eq!(outcome(&plan, "app"), outcome(&plan, "db"));
}

#[test]
fn anti_affinity_covers_a_whole_topology_domain() {
    let nodes = vec![label(small("a1"), "zone", "a"), label(small("a2"), "zone", "a"), label(small("b1"), "zone", "b")];
    let pods = vec![
        bound(labels(pod("db-0", "", ""), "app", "db"), "a1"),
        anti_affinity(pod("p", "", ""), affinity_term("app", "db", "zone")),
    ];
    for seed in 0..8 {
        let plan = schedule(&nodes, &pods, &SchedulerConfig { seed, ..Default::default() });
        assert_eq!(outcome(&plan, "p"), Ok("b1".into()), "seed {seed}");
    }
}

#[test]
fn only_pending_pods_are_planned_and_in_creation_order_up_to_the_limit() {
    let nodes = vec![small("n")];
    let pods = vec![
        bound(pod("running", "", ""), "n"),
        with(pod("deleting", "", ""), |p| p.metadata.deletion_timestamp = Some("2024-01-01T00:00:00Z".into())),
        with(pod("failed", "", ""), |p| p.status = Some(PodStatus { phase: "Failed".into(), ..Default::default() })),
        created(pod("late", "", ""), "2024-03-01T00:00:00Z"),
        created(pod("early", "", ""), "2024-01-01T00:00:00Z"),
        created(pod("middle", "", ""), "2024-02-01T00:00:00Z"),
    ];
    let plan = schedule(&nodes, &pods, &SchedulerConfig { max_bindings_per_round: 2, ..Default::default() });
    let names: Vec<&str> = plan.bindings.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["early", "middle"]);
    assert!(plan.unschedulable.is_empty());
    let b = &plan.bindings[0];
    assert_eq!((b.namespace.as_str(), b.uid.as_str(), b.resource_version.as_str()), ("default", "uid-early", "7"));
}

#[test]
fn identical_failures_reuse_the_message_and_checks_are_bounded() {
    let nodes = vec![node("a", "1", "1Gi"), node("b", "1", "1Gi")];
    let pods: Vec<Pod> = (0..50).map(|i| pod(&format!("p{i:02}"), "2", "")).collect();
    let config = SchedulerConfig { max_pods_checked_per_round: 1, ..Default::default() };
    let plan = schedule(&nodes, &pods, &config);
    assert_eq!(plan.unschedulable.len(), 50, "one check answers every identical pod");
    assert!(plan.unschedulable.iter().all(|u| u.message == "0/2 nodes are available: 2 Insufficient cpu."));
    // Different constraints each need a check of their own.
    let mixed = vec![pod("x", "2", ""), pod("y", "3", ""), pod("z", "4", "")];
    assert_eq!(schedule(&nodes, &mixed, &config).unschedulable.len(), 1);
}

#[test]
fn feasible_nodes_to_find_is_adaptive() {
    let cases = [(0, 100, 0), (50, 100, 50), (100, 100, 100), (1_000, 100, 420), (5_000, 100, 500), (100_000, 100, 5_000), (5_000, 2_000, 2_000)];
    for (nodes, min, want) in cases {
        assert_eq!(feasible_nodes_to_find(nodes, min), want, "{nodes} nodes, min {min}");
    }
}

#[test]
fn sampling_still_finds_the_rare_feasible_node() {
    let mut nodes: Vec<Node> = (0..300).map(|i| node(&format!("n{i:03}"), "1", "1Gi")).collect();
    nodes.push(small("big"));
    let config = SchedulerConfig { min_feasible_nodes_to_find: 5, ..Default::default() };
    let plan = schedule(&nodes, &[pod("p", "2", "")], &config);
    assert_eq!(outcome(&plan, "p"), Ok("big".into()));
}

#[test]
fn check_fit_refuses_what_no_longer_fits() {
    let n = small("n1");
    let a = bound(pod("a", "3", "1Gi"), "n1");
    let web = bound(host_port(pod("web", "", ""), 443, "TCP"), "n1");
    let done = with(bound(pod("done", "4", ""), "n1"), |p| p.status.as_mut().unwrap().phase = "Succeeded".into());
    let db = bound(labels(pod("db-0", "", ""), "app", "db"), "n1");
    let itself = bound(pod("p", "4", ""), "n1");
    type Case<'p> = (&'static str, Node, Vec<&'p Pod>, Pod, Result<(), &'static str>);
    let cases: Vec<Case> = vec![
        ("fits", n.clone(), vec![&a], pod("p", "1", "1Gi"), Ok(())),
        ("oversubscribed", n.clone(), vec![&a], pod("p", "2", ""), Err("pod default/p does not fit on node n1: insufficient cpu")),
        ("finished pods are free", n.clone(), vec![&done], pod("p", "4", ""), Ok(())),
        ("itself is not counted twice", n.clone(), vec![&itself], pod("p", "4", ""), Ok(())),
        ("port taken", n.clone(), vec![&web], host_port(pod("p", "", ""), 443, "TCP"), Err("pod default/p does not fit on node n1: node(s) didn't have free ports for the requested pod ports")),
        ("anti-affinity on the node", n.clone(), vec![&db], anti_affinity(pod("p", "", ""), affinity_term("app", "db", "kubernetes.io/hostname")), Err("pod default/p does not fit on node n1: node(s) didn't match pod anti-affinity rules")),
        ("required affinity is left to the scheduler", n.clone(), vec![], pod_affinity(pod("p", "", ""), affinity_term("app", "db", "kubernetes.io/hostname")), Ok(())),
        ("cordoned", with(n.clone(), |n| n.spec.unschedulable = true), vec![], pod("p", "", ""), Err("pod default/p does not fit on node n1: node(s) were unschedulable")),
        ("tainted", taint(n.clone(), "k", "v", "NoSchedule"), vec![], pod("p", "", ""), Err("pod default/p does not fit on node n1: node(s) had untolerated taint {k: v}")),
    ];
    for (name, node, on_node, p, expected) in cases {
        assert_eq!(check_fit(&node, &on_node, &p), expected.map_err(str::to_string), "{name}");
    }
}

#[test]
fn five_thousand_nodes_take_thousands_of_pods_without_oversubscribing() {
    let nodes: Vec<Node> = (0..5_000)
        .map(|i| label(node(&format!("node-{i:04}"), "2", "4Gi"), "zone", &format!("z{}", i % 3)))
        .collect();
    let mut pods: Vec<Pod> = Vec::new();
    // Existing load: 10,000 running Pods.
    for i in 0..10_000 {
        pods.push(bound(owned(pod(&format!("old-{i:05}"), "250m", "256Mi"), "rs-old"), &format!("node-{:04}", i % 5_000)));
    }
    for i in 0..3_000 {
        let p = owned(pod(&format!("new-{i:04}"), if i % 2 == 0 { "500m" } else { "1" }, "512Mi"), &format!("rs-{}", i % 30));
        pods.push(created(p, &format!("2024-01-01T00:{:02}:{:02}Z", i / 60 % 60, i % 60)));
    }
    let config = SchedulerConfig { max_bindings_per_round: 5_000, ..Default::default() };
    let plan = schedule(&nodes, &pods, &config);
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable.first());
    assert_eq!(plan.bindings.len(), 3_000);

    let by_name: HashMap<&str, &Pod> = pods.iter().map(|p| (p.metadata.name.as_str(), p)).collect();
    let mut used: HashMap<&str, Resources> = HashMap::new();
    for p in pods.iter().filter(|p| !p.spec.node_name.is_empty()) {
        used.entry(p.spec.node_name.as_str()).or_default().add(pod_requests(p));
    }
    for b in &plan.bindings {
        used.entry(b.node.as_str()).or_default().add(pod_requests(by_name[b.name.as_str()]));
    }
    for (node, r) in &used {
        assert!(r.cpu_millis <= 2_000 && r.memory_bytes <= 4 << 30 && r.pods <= 110, "{node} is over capacity: {r:?}");
    }
    // Sampling with rotation still spreads: many distinct nodes are used.
    let distinct = plan.bindings.iter().map(|b| b.node.as_str()).collect::<std::collections::HashSet<_>>().len();
    assert!(distinct > 1_000, "only {distinct} nodes used");
}
