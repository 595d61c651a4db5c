//! A tiny in-memory store and cluster for tests: applies actions the way
//! the IO layer and the store would (uids, resourceVersions, generations,
//! compare-and-set, graceful deletion of bound Pods) and plays the node
//! agents (binds, starts and stops Pods) step by step.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_api::cluster::{Node, NodeStatus, Taint};
use flotilla_api::meta::{LabelSelector, ObjectMeta};
use flotilla_api::pod::IntOrString;
use flotilla_api::pod::{Condition, Container, Pod, PodSpec, PodStatus, PodTemplateSpec};
use flotilla_api::workloads::{
    DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, DeploymentStrategy, Job, JobSpec,
    ReplicaSet, ReplicaSetSpec, RollingUpdate, StatefulSet, StatefulSetSpec,
};
use flotilla_api::{Kind, Object};

use crate::common::{is_terminating, node_lost, phase};
use flotilla_api::time::format_rfc3339;
use crate::{Action, ClusterView, Limits, reconcile};

pub(crate) const NS: &str = "default";
pub(crate) const START_MS: u64 = 1_800_000_000_000;

type Key = (Kind, String, String);

pub(crate) struct Sim {
    pub view: ClusterView,
    pub limits: Limits,
    next_uid: u64,
    next_rv: u64,
    /// (reason, involved object name) of every Event.
    pub events: Vec<(String, String)>,
    /// Node that unscheduled Pods are bound to; `None` leaves them Pending.
    pub bind_to: Option<String>,
}

fn key_of(o: &Object) -> Key {
    (
        o.kind(),
        o.metadata().namespace.clone(),
        o.metadata().name.clone(),
    )
}

impl Sim {
    pub fn new() -> Self {
        Sim {
            view: ClusterView {
                now_unix_ms: START_MS,
                ..ClusterView::default()
            },
            limits: Limits::default(),
            next_uid: 0,
            next_rv: 0,
            events: Vec::new(),
            bind_to: Some("n1".into()),
        }
    }

    fn objects(&self) -> BTreeMap<Key, Object> {
        let v = &self.view;
        let all = v
            .nodes
            .iter()
            .cloned()
            .map(Object::Node)
            .chain(v.pods.iter().map(|p| Object::Pod(Pod::clone(p))))
            .chain(v.replica_sets.iter().cloned().map(Object::ReplicaSet))
            .chain(v.deployments.iter().cloned().map(Object::Deployment))
            .chain(v.jobs.iter().cloned().map(Object::Job))
            .chain(v.daemon_sets.iter().cloned().map(Object::DaemonSet))
            .chain(v.stateful_sets.iter().cloned().map(Object::StatefulSet));
        all.map(|o| (key_of(&o), o)).collect()
    }

    fn store(&mut self, objects: BTreeMap<Key, Object>) {
        let now = self.view.now_unix_ms;
        self.view = ClusterView {
            now_unix_ms: now,
            ..ClusterView::default()
        };
        for o in objects.into_values() {
            match o {
                Object::Node(x) => self.view.nodes.push(x),
                Object::Pod(x) => self.view.pods.push(Arc::new(x)),
                Object::ReplicaSet(x) => self.view.replica_sets.push(x),
                Object::Deployment(x) => self.view.deployments.push(x),
                Object::Job(x) => self.view.jobs.push(x),
                Object::DaemonSet(x) => self.view.daemon_sets.push(x),
                Object::StatefulSet(x) => self.view.stateful_sets.push(x),
                other => panic!("the sim does not hold {}", other.kind()),
            }
        }
    }

    fn bump(&mut self) -> String {
        self.next_rv += 1;
        self.next_rv.to_string()
    }

    /// Creates an object as a user would (the store stamps identity).
    pub fn add(&mut self, mut o: Object) {
        self.next_uid += 1;
        let rv = self.bump();
        let m = o.metadata_mut();
        m.uid = format!("uid-{}", self.next_uid);
        m.resource_version = rv;
        m.generation = Some(1);
        m.creation_timestamp = Some(format_rfc3339(self.view.now_unix_ms));
        if o.kind() != Kind::Node && o.metadata().namespace.is_empty() {
            o.metadata_mut().namespace = NS.into();
        }
        let mut objects = self.objects();
        assert!(objects.insert(key_of(&o), o).is_none(), "added twice");
        self.store(objects);
    }

    /// Replaces an object as a user would (`kubectl apply`): the edit gets a
    /// new resourceVersion and, if the spec changed, a new generation.
    pub fn edit(&mut self, kind: Kind, name: &str, f: impl FnOnce(&mut Object)) {
        let mut objects = self.objects();
        let ns = if kind == Kind::Node {
            String::new()
        } else {
            NS.to_string()
        };
        let mut o = objects
            .get(&(kind, ns, name.to_string()))
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone();
        let before = o.to_value();
        f(&mut o);
        let rv = self.bump();
        if before.get("spec") != o.to_value().get("spec") {
            let g = o.metadata().generation.unwrap_or(1);
            o.metadata_mut().generation = Some(g + 1);
        }
        o.metadata_mut().resource_version = rv;
        objects.insert(key_of(&o), o);
        self.store(objects);
    }

    pub fn remove(&mut self, kind: Kind, name: &str) {
        let mut objects = self.objects();
        let ns = if kind == Kind::Node {
            String::new()
        } else {
            NS.to_string()
        };
        assert!(
            objects.remove(&(kind, ns, name.to_string())).is_some(),
            "no {kind} {name}"
        );
        self.store(objects);
    }

    /// Applies actions as the store would, checking what the controllers
    /// promise: deterministic fresh creates, compare-and-set on the version
    /// read (the sim's views are never stale, so every one must match).
    pub fn apply(&mut self, actions: &[Action]) {
        let mut objects = self.objects();
        let now = self.view.now_unix_ms;
        for action in actions {
            match action {
                Action::Create(o) => {
                    let mut o = o.clone();
                    let m = o.metadata();
                    assert!(
                        m.uid.is_empty() && m.resource_version.is_empty(),
                        "create {} carries identity",
                        m.name
                    );
                    assert!(
                        !m.namespace.is_empty(),
                        "create {} has no namespace",
                        m.name
                    );
                    assert!(
                        m.owner_references.iter().any(|r| r.controller),
                        "create {} has no controller",
                        m.name
                    );
                    let key = key_of(&o);
                    assert!(!objects.contains_key(&key), "create of existing {key:?}");
                    self.next_uid += 1;
                    let rv = self.bump();
                    let m = o.metadata_mut();
                    m.uid = format!("uid-{}", self.next_uid);
                    m.resource_version = rv;
                    m.generation = Some(1);
                    m.creation_timestamp = Some(format_rfc3339(now));
                    objects.insert(key, o);
                }
                Action::Update(o) => {
                    let key = key_of(&o.clone());
                    let current = objects
                        .get(&key)
                        .unwrap_or_else(|| panic!("update of missing {key:?}"));
                    assert_eq!(
                        current.metadata().resource_version,
                        o.metadata().resource_version,
                        "stale update of {key:?}"
                    );
                    let mut o = o.clone();
                    let g = current.metadata().generation.unwrap_or(1);
                    let spec_changed = current.to_value().get("spec") != o.to_value().get("spec");
                    o.metadata_mut().generation = Some(if spec_changed { g + 1 } else { g });
                    o.metadata_mut().resource_version = self.bump();
                    objects.insert(key, o);
                }
                Action::Delete {
                    kind,
                    namespace,
                    name,
                    resource_version,
                } => {
                    let key = (*kind, namespace.clone(), name.clone());
                    let current = objects
                        .get(&key)
                        .unwrap_or_else(|| panic!("delete of missing {key:?}"));
                    assert_eq!(
                        &current.metadata().resource_version,
                        resource_version,
                        "stale delete of {key:?}"
                    );
                    let graceful = match current {
                        Object::Pod(p) if !p.spec.node_name.is_empty() => {
                            let node =
                                objects.get(&(Kind::Node, String::new(), p.spec.node_name.clone()));
                            !matches!(node, Some(Object::Node(n)) if node_lost(n)) && node.is_some()
                        }
                        _ => false,
                    };
                    if graceful {
                        let rv = self.bump();
                        let o = objects.get_mut(&key).expect("checked above");
                        let m = o.metadata_mut();
                        assert!(
                            m.deletion_timestamp.is_none(),
                            "delete of terminating {key:?}"
                        );
                        m.deletion_timestamp = Some(format_rfc3339(now));
                        m.resource_version = rv;
                    } else {
                        objects.remove(&key);
                    }
                }
                Action::Event {
                    involved, reason, ..
                } => self.events.push((reason.clone(), involved.name.clone())),
            }
        }
        self.store(objects);
    }

    /// One leader round: reconcile and apply.
    pub fn round(&mut self) -> Vec<Action> {
        let actions = reconcile(&self.view, &self.limits);
        self.apply(&actions);
        actions
    }

    /// Edits every Pod matching `select` with `f`, bumping versions.
    pub fn pods_where(&mut self, select: impl Fn(&Pod) -> bool, f: impl Fn(&mut Pod)) -> usize {
        let names: Vec<String> = self
            .view
            .pods
            .iter()
            .filter(|p| select(p))
            .map(|p| p.metadata.name.clone())
            .collect();
        for name in &names {
            self.edit(Kind::Pod, name, |o| {
                if let Object::Pod(p) = o {
                    f(p)
                }
            });
        }
        names.len()
    }

    /// The node agents, one step: terminating Pods finish and disappear,
    /// unscheduled ones are bound, bound Pending ones start (at most
    /// `max_starts`, ready at once). Says whether anything changed.
    pub fn agents(&mut self, max_starts: usize) -> bool {
        let mut objects = self.objects();
        let lost_nodes: Vec<String> = self
            .view
            .nodes
            .iter()
            .filter(|n| node_lost(n))
            .map(|n| n.metadata.name.clone())
            .collect();
        let gone: Vec<Key> = objects
            .iter()
            .filter(|(_, o)| matches!(o, Object::Pod(p) if is_terminating(&p.metadata) && !lost_nodes.contains(&p.spec.node_name)))
            .map(|(k, _)| k.clone())
            .collect();
        let mut changed = !gone.is_empty();
        for k in gone {
            objects.remove(&k);
        }
        self.store(objects);
        if let Some(node) = self.bind_to.clone() {
            changed |= self.pods_where(
                |p| p.spec.node_name.is_empty() && !is_terminating(&p.metadata),
                |p| p.spec.node_name = node.clone(),
            ) > 0;
        }
        let mut started = 0;
        let startable: Vec<String> = self
            .view
            .pods
            .iter()
            .filter(|p| {
                !p.spec.node_name.is_empty() && phase(p).is_empty() && !is_terminating(&p.metadata)
            })
            .filter(|p| !lost_nodes.contains(&p.spec.node_name))
            .map(|p| p.metadata.name.clone())
            .collect();
        for name in startable.into_iter().take(max_starts) {
            let now = self.view.now_unix_ms;
            self.pods_where(|p| p.metadata.name == name, |p| set_running(p, true, now));
            started += 1;
        }
        changed || started > 0
    }

    /// Rounds (with the agents starting up to `max_starts` Pods a step)
    /// until neither the controllers nor the agents change anything.
    pub fn settle(&mut self, max_starts: usize) -> usize {
        for rounds in 1..=200 {
            let actions = self.round();
            let agents_changed = self.agents(max_starts);
            if actions.is_empty() && !agents_changed {
                return rounds;
            }
        }
        panic!("no convergence in 200 rounds");
    }

    pub fn advance_ms(&mut self, ms: u64) {
        self.view.now_unix_ms += ms;
    }

    pub fn pods_of(&self, prefix: &str) -> Vec<&Pod> {
        self.view
            .pods
            .iter()
            .filter(|p| p.metadata.name.starts_with(prefix))
            .map(|p| &**p)
            .collect()
    }

    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.view.pods.iter().find(|p| p.metadata.name == name).map(|p| &**p)
    }

    pub fn rs(&self, name: &str) -> &ReplicaSet {
        self.view
            .replica_sets
            .iter()
            .find(|r| r.metadata.name == name)
            .unwrap_or_else(|| panic!("no rs {name}"))
    }

    pub fn deployment(&self, name: &str) -> &Deployment {
        self.view
            .deployments
            .iter()
            .find(|d| d.metadata.name == name)
            .expect("deployment")
    }

    pub fn job(&self, name: &str) -> &Job {
        self.view
            .jobs
            .iter()
            .find(|d| d.metadata.name == name)
            .expect("job")
    }
}

pub(crate) fn set_running(p: &mut Pod, ready: bool, now: u64) {
    let status = p.status.get_or_insert_with(PodStatus::default);
    status.phase = "Running".into();
    status.conditions = vec![Condition {
        type_: "Ready".into(),
        status: if ready { "True" } else { "False" }.into(),
        last_transition_time: Some(format_rfc3339(now)),
        ..Condition::default()
    }];
}

pub(crate) fn set_phase(p: &mut Pod, phase: &str) {
    let status = p.status.get_or_insert_with(PodStatus::default);
    status.phase = phase.into();
    status.conditions.clear();
}

pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: name.into(),
        namespace: NS.into(),
        ..ObjectMeta::default()
    }
}

pub(crate) fn template(app: &str, image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: ObjectMeta {
            labels: labels(&[("app", app)]),
            ..ObjectMeta::default()
        },
        spec: PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: image.into(),
                ..Container::default()
            }],
            restart_policy: "Always".into(),
            ..PodSpec::default()
        },
    }
}

pub(crate) fn selector(app: &str) -> LabelSelector {
    LabelSelector {
        match_labels: labels(&[("app", app)]),
        ..LabelSelector::default()
    }
}

pub(crate) fn node(name: &str, ready: bool) -> Object {
    Object::Node(Node {
        metadata: ObjectMeta {
            name: name.into(),
            ..ObjectMeta::default()
        },
        status: Some(NodeStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "Unknown" }.into(),
                reason: if ready {
                    "NodeReady"
                } else {
                    "NodeStatusUnknown"
                }
                .into(),
                ..Condition::default()
            }],
            ..NodeStatus::default()
        }),
        ..Node::default()
    })
}

pub(crate) fn tainted(name: &str, key: &str) -> Object {
    let Object::Node(mut n) = node(name, true) else {
        unreachable!("node() makes a Node")
    };
    n.spec.taints.push(Taint {
        key: key.into(),
        value: String::new(),
        effect: "NoSchedule".into(),
    });
    Object::Node(n)
}

pub(crate) fn replica_set(name: &str, replicas: i32) -> Object {
    Object::ReplicaSet(ReplicaSet {
        metadata: meta(name),
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            selector: selector(name),
            template: template(name, "img:1"),
            ..ReplicaSetSpec::default()
        },
        ..ReplicaSet::default()
    })
}

pub(crate) fn deployment(
    name: &str,
    replicas: i32,
    image: &str,
    surge: i32,
    unavailable: i32,
) -> Object {
    Object::Deployment(Deployment {
        metadata: meta(name),
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: selector(name),
            template: template(name, image),
            strategy: Some(DeploymentStrategy {
                type_: "RollingUpdate".into(),
                rolling_update: Some(RollingUpdate {
                    max_surge: Some(IntOrString::Int(surge)),
                    max_unavailable: Some(IntOrString::Int(unavailable)),
                }),
            }),
            revision_history_limit: Some(10),
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    })
}

pub(crate) fn job(name: &str, completions: i32, parallelism: i32, backoff_limit: i32) -> Object {
    let mut t = template(name, "busybox");
    t.spec.restart_policy = "Never".into();
    Object::Job(Job {
        metadata: meta(name),
        spec: JobSpec {
            completions: Some(completions),
            parallelism: Some(parallelism),
            backoff_limit: Some(backoff_limit),
            template: t,
            ..JobSpec::default()
        },
        ..Job::default()
    })
}

pub(crate) fn daemon_set(name: &str) -> Object {
    Object::DaemonSet(DaemonSet {
        metadata: meta(name),
        spec: DaemonSetSpec {
            selector: selector(name),
            template: template(name, "agent:1"),
            ..DaemonSetSpec::default()
        },
        ..DaemonSet::default()
    })
}

pub(crate) fn stateful_set(name: &str, replicas: i32, policy: &str) -> Object {
    Object::StatefulSet(StatefulSet {
        metadata: meta(name),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            selector: selector(name),
            template: template(name, "db:1"),
            pod_management_policy: policy.into(),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    })
}

/// Names of the objects the actions create / delete, of one kind.
pub(crate) fn created(actions: &[Action], kind: Kind) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Create(o) if o.kind() == kind => Some(o.metadata().name.clone()),
            _ => None,
        })
        .collect()
}

pub(crate) fn deleted(actions: &[Action], kind: Kind) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete { kind: k, name, .. } if *k == kind => Some(name.clone()),
            _ => None,
        })
        .collect()
}
