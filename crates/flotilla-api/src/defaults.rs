//! Kubernetes' defaults, applied once when an object is accepted so that
//! what is stored and printed is what runs.

use crate::object::{Kind, Object};
use crate::pod::{Container, PodSpec, Probe};
use crate::workloads::{DeploymentStrategy, RollingUpdate};
use crate::pod::IntOrString;

pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// Fills in every default. `namespace` is the namespace the client asked
/// for (`-n`), used where the manifest names none.
pub fn apply_defaults(object: &mut Object, namespace: &str) {
    let kind = object.kind();
    {
        let meta = object.metadata_mut();
        if kind.namespaced() && meta.namespace.is_empty() {
            meta.namespace = if namespace.is_empty() { DEFAULT_NAMESPACE.into() } else { namespace.into() };
        }
    }
    match object {
        Object::Pod(p) => {
            envelope(&mut p.api_version, &mut p.kind, kind);
            pod_spec(&mut p.spec, "Always");
        }
        Object::ReplicaSet(r) => {
            envelope(&mut r.api_version, &mut r.kind, kind);
            r.spec.replicas.get_or_insert(1);
            pod_spec(&mut r.spec.template.spec, "Always");
        }
        Object::Deployment(d) => {
            envelope(&mut d.api_version, &mut d.kind, kind);
            d.spec.replicas.get_or_insert(1);
            d.spec.revision_history_limit.get_or_insert(10);
            d.spec.progress_deadline_seconds.get_or_insert(600);
            let strategy = d.spec.strategy.get_or_insert_with(DeploymentStrategy::default);
            if strategy.type_.is_empty() {
                strategy.type_ = "RollingUpdate".into();
            }
            if strategy.type_ == "RollingUpdate" {
                let ru = strategy.rolling_update.get_or_insert_with(RollingUpdate::default);
                ru.max_surge.get_or_insert(IntOrString::String("25%".into()));
                ru.max_unavailable.get_or_insert(IntOrString::String("25%".into()));
            }
            pod_spec(&mut d.spec.template.spec, "Always");
        }
        Object::Job(j) => {
            envelope(&mut j.api_version, &mut j.kind, kind);
            j.spec.completions.get_or_insert(1);
            j.spec.parallelism.get_or_insert(1);
            j.spec.backoff_limit.get_or_insert(6);
            // A Job's template must say OnFailure or Never; validation tells
            // the user rather than guessing.
            pod_spec(&mut j.spec.template.spec, "");
        }
        Object::DaemonSet(d) => {
            envelope(&mut d.api_version, &mut d.kind, kind);
            pod_spec(&mut d.spec.template.spec, "Always");
        }
        Object::StatefulSet(s) => {
            envelope(&mut s.api_version, &mut s.kind, kind);
            s.spec.replicas.get_or_insert(1);
            s.spec.revision_history_limit.get_or_insert(10);
            if s.spec.pod_management_policy.is_empty() {
                s.spec.pod_management_policy = "OrderedReady".into();
            }
            pod_spec(&mut s.spec.template.spec, "Always");
        }
        Object::Node(n) => envelope(&mut n.api_version, &mut n.kind, kind),
        Object::Namespace(n) => envelope(&mut n.api_version, &mut n.kind, kind),
        Object::ConfigMap(c) => envelope(&mut c.api_version, &mut c.kind, kind),
        Object::Event(e) => {
            envelope(&mut e.api_version, &mut e.kind, kind);
            if e.type_.is_empty() {
                e.type_ = "Normal".into();
            }
        }
    }
}

fn envelope(api_version: &mut String, kind_field: &mut String, kind: Kind) {
    if api_version.is_empty() {
        *api_version = kind.api_version().into();
    }
    if kind_field.is_empty() {
        *kind_field = kind.name().into();
    }
}

fn pod_spec(spec: &mut PodSpec, restart_policy: &str) {
    if spec.restart_policy.is_empty() {
        spec.restart_policy = restart_policy.into();
    }
    spec.termination_grace_period_seconds.get_or_insert(DEFAULT_GRACE_SECONDS);
    for c in spec.init_containers.iter_mut().chain(spec.containers.iter_mut()) {
        container(c);
    }
    for t in &mut spec.tolerations {
        if t.operator.is_empty() {
            t.operator = "Equal".into();
        }
    }
}

fn container(c: &mut Container) {
    if c.image_pull_policy.is_empty() {
        // Kubernetes: Always for :latest or an untagged image, else IfNotPresent.
        let tag = c.image.rsplit_once(':').map(|(_, t)| t).filter(|t| !t.contains('/'));
        c.image_pull_policy = if tag.is_none_or(|t| t == "latest") { "Always" } else { "IfNotPresent" }.into();
    }
    for p in &mut c.ports {
        if p.protocol.is_empty() {
            p.protocol = "TCP".into();
        }
    }
    for probe in [&mut c.liveness_probe, &mut c.readiness_probe, &mut c.startup_probe].into_iter().flatten() {
        probe_defaults(probe);
    }
}

fn probe_defaults(p: &mut Probe) {
    p.initial_delay_seconds.get_or_insert(0);
    p.timeout_seconds.get_or_insert(1);
    p.period_seconds.get_or_insert(10);
    p.success_threshold.get_or_insert(1);
    p.failure_threshold.get_or_insert(3);
    if let Some(h) = &mut p.http_get {
        if h.path.is_empty() {
            h.path = "/".into();
        }
        if h.scheme.is_empty() {
            h.scheme = "HTTP".into();
        }
    }
}
