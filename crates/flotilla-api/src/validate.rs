//! Validation after defaults: every problem is reported, each once, by
//! field path, with Kubernetes' wording where users know it.

use std::collections::{BTreeMap, BTreeSet};

use crate::meta::{LabelSelector, ObjectMeta};
use crate::object::{FieldError, Object};
use crate::path::FieldPath;
use crate::pod::{Container, IntOrString, PodField, PodSpec, PodTemplateSpec, Probe};
use crate::quantity::Quantity;

struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: FieldPath, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }
}

pub fn validate(object: &Object) -> Vec<FieldError> {
    let mut e = Errors(Vec::new());
    let root = FieldPath::root();
    metadata(&mut e, &root.key("metadata"), object.metadata(), object.kind().namespaced());
    let spec = root.key("spec");
    match object {
        Object::Pod(p) => pod_spec(&mut e, &spec, &p.spec, &["Always", "OnFailure", "Never"]),
        Object::ReplicaSet(r) => {
            replicas(&mut e, &spec, r.spec.replicas);
            selector_and_template(&mut e, &spec, Some(&r.spec.selector), &r.spec.template, &["Always"]);
        }
        Object::Deployment(d) => {
            replicas(&mut e, &spec, d.spec.replicas);
            selector_and_template(&mut e, &spec, Some(&d.spec.selector), &d.spec.template, &["Always"]);
            if let Some(s) = &d.spec.strategy {
                let path = spec.key("strategy");
                match s.type_.as_str() {
                    "Recreate" if s.rolling_update.is_some() => {
                        e.add(path.key("rollingUpdate"), "may not be set when strategy type is Recreate")
                    }
                    "Recreate" => {}
                    "RollingUpdate" => {
                        if let Some(ru) = &s.rolling_update {
                            let surge = int_or_percent(&mut e, &path.keys("rollingUpdate.maxSurge"), ru.max_surge.as_ref());
                            let unavailable =
                                int_or_percent(&mut e, &path.keys("rollingUpdate.maxUnavailable"), ru.max_unavailable.as_ref());
                            if surge == Some(0) && unavailable == Some(0) {
                                e.add(path.keys("rollingUpdate.maxUnavailable"), "may not be 0 when maxSurge is 0");
                            }
                        }
                    }
                    other => e.add(path.key("type"), unsupported(other, &["Recreate", "RollingUpdate"])),
                }
            }
            non_negative(&mut e, &spec.key("revisionHistoryLimit"), d.spec.revision_history_limit.map(i64::from));
        }
        Object::Job(j) => {
            selector_and_template(&mut e, &spec, j.spec.selector.as_ref(), &j.spec.template, &["OnFailure", "Never"]);
            non_negative(&mut e, &spec.key("completions"), j.spec.completions.map(i64::from));
            non_negative(&mut e, &spec.key("parallelism"), j.spec.parallelism.map(i64::from));
            non_negative(&mut e, &spec.key("backoffLimit"), j.spec.backoff_limit.map(i64::from));
            if j.spec.active_deadline_seconds.is_some_and(|s| s <= 0) {
                e.add(spec.key("activeDeadlineSeconds"), "must be greater than 0");
            }
        }
        Object::DaemonSet(d) => selector_and_template(&mut e, &spec, Some(&d.spec.selector), &d.spec.template, &["Always"]),
        Object::StatefulSet(s) => {
            replicas(&mut e, &spec, s.spec.replicas);
            selector_and_template(&mut e, &spec, Some(&s.spec.selector), &s.spec.template, &["Always"]);
            let policy = &s.spec.pod_management_policy;
            if policy != "OrderedReady" && policy != "Parallel" {
                e.add(spec.key("podManagementPolicy"), unsupported(policy, &["OrderedReady", "Parallel"]));
            }
        }
        Object::Node(n) => {
            for (i, t) in n.spec.taints.iter().enumerate() {
                let path = spec.key("taints").index(i);
                if t.key.is_empty() {
                    e.add(path.key("key"), "required");
                }
                taint_effect(&mut e, &path.key("effect"), &t.effect, false);
            }
        }
        Object::ConfigMap(c) => {
            for key in c.data.keys() {
                if key.is_empty() || !key.chars().all(|ch| ch.is_ascii_alphanumeric() || "-._".contains(ch)) {
                    e.add(root.key("data").key(key), "keys may hold only letters, digits, '-', '_' and '.'");
                }
            }
        }
        Object::Namespace(_) | Object::Event(_) => {}
    }
    e.0
}

fn unsupported(value: &str, supported: &[&str]) -> String {
    if value.is_empty() {
        return format!("required (one of {})", supported.join(", "));
    }
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    format!("unsupported value {value:?}: supported values: {}", list.join(", "))
}

/// A DNS-1123 label: what container, volume and port names must be.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A DNS-1123 subdomain: what object names must be.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn label_value_ok(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn label_key_ok(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && label_value_ok(name)
}

fn metadata(e: &mut Errors, path: &FieldPath, meta: &ObjectMeta, namespaced: bool) {
    if meta.name.is_empty() && meta.generate_name.is_empty() {
        e.add(path.key("name"), "required (or metadata.generateName)");
    } else if !meta.name.is_empty() && !is_dns_subdomain(&meta.name) {
        e.add(
            path.key("name"),
            format!("{:?}: must be lower-case letters, digits, '-' and '.', starting and ending with a letter or digit", meta.name),
        );
    }
    if !meta.generate_name.is_empty() && !is_dns_subdomain(&format!("{}x", meta.generate_name)) {
        e.add(path.key("generateName"), format!("{:?}: not a valid name prefix", meta.generate_name));
    }
    if namespaced && !is_dns_label(&meta.namespace) {
        e.add(path.key("namespace"), format!("{:?}: must be a DNS label", meta.namespace));
    }
    if !namespaced && !meta.namespace.is_empty() {
        e.add(path.key("namespace"), "this kind is cluster-scoped: remove the namespace");
    }
    labels(e, &path.key("labels"), &meta.labels);
    for key in meta.annotations.keys() {
        if !label_key_ok(key) {
            e.add(path.key("annotations").key(key), "not a valid annotation key");
        }
    }
}

fn labels(e: &mut Errors, path: &FieldPath, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        if !label_key_ok(k) {
            e.add(path.key(k), "not a valid label key");
        } else if !label_value_ok(v) {
            e.add(path.key(k), format!("{v:?}: label values are at most 63 letters, digits, '-', '_' or '.'"));
        }
    }
}

fn replicas(e: &mut Errors, spec: &FieldPath, replicas: Option<i32>) {
    non_negative(e, &spec.key("replicas"), replicas.map(i64::from));
}

fn non_negative(e: &mut Errors, path: &FieldPath, value: Option<i64>) {
    if value.is_some_and(|v| v < 0) {
        e.add(path.clone(), "must be greater than or equal to 0");
    }
}

fn selector_and_template(
    e: &mut Errors,
    spec: &FieldPath,
    selector: Option<&LabelSelector>,
    template: &PodTemplateSpec,
    restart_policies: &[&str],
) {
    let tpath = spec.key("template");
    labels(e, &tpath.keys("metadata.labels"), &template.metadata.labels);
    if let Some(sel) = selector {
        let spath = spec.key("selector");
        if sel.is_empty() {
            e.add(spath.clone(), "required: a non-empty selector that matches spec.template.metadata.labels");
        } else {
            for (i, r) in sel.match_expressions.iter().enumerate() {
                let rp = spath.key("matchExpressions").index(i);
                match r.operator.as_str() {
                    "In" | "NotIn" if r.values.is_empty() => e.add(rp.key("values"), "required for In and NotIn"),
                    "Exists" | "DoesNotExist" if !r.values.is_empty() => {
                        e.add(rp.key("values"), "must be empty for Exists and DoesNotExist")
                    }
                    "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                    other => e.add(rp.key("operator"), unsupported(other, &["In", "NotIn", "Exists", "DoesNotExist"])),
                }
            }
            if !sel.matches(&template.metadata.labels) {
                e.add(tpath.keys("metadata.labels"), "selector does not match template labels");
            }
        }
    }
    pod_spec(e, &tpath.key("spec"), &template.spec, restart_policies);
}

fn pod_spec(e: &mut Errors, path: &FieldPath, spec: &PodSpec, restart_policies: &[&str]) {
    if spec.containers.is_empty() {
        e.add(path.key("containers"), "required: at least one container");
    }
    if !restart_policies.contains(&spec.restart_policy.as_str()) {
        e.add(path.key("restartPolicy"), unsupported(&spec.restart_policy, restart_policies));
    }
    if spec.termination_grace_period_seconds.is_some_and(|s| s < 0) {
        e.add(path.key("terminationGracePeriodSeconds"), "must be greater than or equal to 0");
    }
    let mut volume_names = BTreeSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let vp = path.key("volumes").index(i);
        if !is_dns_label(&v.name) {
            e.add(vp.key("name"), format!("{:?}: required, a DNS label", v.name));
        } else if !volume_names.insert(v.name.as_str()) {
            e.add(vp.key("name"), format!("duplicate volume {:?}", v.name));
        }
        let sources = usize::from(v.empty_dir.is_some()) + usize::from(v.host_path.is_some()) + usize::from(v.config_map.is_some());
        if sources != 1 {
            e.add(vp.clone(), "exactly one of emptyDir, hostPath or configMap is required");
        }
        if let Some(h) = &v.host_path
            && !h.path.starts_with('/')
        {
            e.add(vp.keys("hostPath.path"), "must be an absolute path");
        }
        if let Some(c) = &v.config_map
            && c.name.is_empty()
        {
            e.add(vp.keys("configMap.name"), "required");
        }
        if let Some(q) = v.empty_dir.as_ref().and_then(|d| d.size_limit.as_ref()) {
            quantity(e, &vp.keys("emptyDir.sizeLimit"), q);
        }
    }
    let mut container_names = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    for (list, field) in [(&spec.init_containers, "initContainers"), (&spec.containers, "containers")] {
        for (i, c) in list.iter().enumerate() {
            let cp = path.key(field).index(i);
            container(e, &cp, c, &volume_names);
            if is_dns_label(&c.name) && !container_names.insert(c.name.as_str()) {
                e.add(cp.key("name"), format!("duplicate container name {:?}", c.name));
            }
            for (j, p) in c.ports.iter().enumerate() {
                if let Some(hp) = p.host_port
                    && !host_ports.insert((hp, p.protocol.clone()))
                {
                    e.add(cp.key("ports").index(j).key("hostPort"), format!("host port {hp}/{} is used twice", p.protocol));
                }
            }
        }
    }
    for (i, t) in spec.tolerations.iter().enumerate() {
        let tp = path.key("tolerations").index(i);
        match t.operator.as_str() {
            "Equal" => {}
            "Exists" if !t.value.is_empty() => e.add(tp.key("value"), "must be empty when operator is Exists"),
            "Exists" => {}
            other => e.add(tp.key("operator"), unsupported(other, &["Equal", "Exists"])),
        }
        if t.key.is_empty() && t.operator != "Exists" {
            e.add(tp.key("operator"), "must be Exists when key is empty");
        }
        taint_effect(e, &tp.key("effect"), &t.effect, true);
    }
    if let Some(na) = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()) {
        let ap = path.keys("affinity.nodeAffinity");
        if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
            let rp = ap.key("requiredDuringSchedulingIgnoredDuringExecution");
            if req.node_selector_terms.is_empty() {
                e.add(rp.key("nodeSelectorTerms"), "required: at least one term");
            }
            for (i, term) in req.node_selector_terms.iter().enumerate() {
                node_requirements(e, &rp.key("nodeSelectorTerms").index(i), &term.match_expressions);
            }
        }
        for (i, pref) in na.preferred_during_scheduling_ignored_during_execution.iter().enumerate() {
            let pp = ap.key("preferredDuringSchedulingIgnoredDuringExecution").index(i);
            weight(e, &pp.key("weight"), pref.weight);
            node_requirements(e, &pp.key("preference"), &pref.preference.match_expressions);
        }
    }
    for (field, aff) in [("podAffinity", spec.affinity.as_ref().and_then(|a| a.pod_affinity.as_ref())),
        ("podAntiAffinity", spec.affinity.as_ref().and_then(|a| a.pod_anti_affinity.as_ref()))]
    {
        let Some(aff) = aff else { continue };
        let ap = path.key("affinity").key(field);
        for (i, t) in aff.required_during_scheduling_ignored_during_execution.iter().enumerate() {
            if t.topology_key.is_empty() {
                e.add(ap.key("requiredDuringSchedulingIgnoredDuringExecution").index(i).key("topologyKey"), "required");
            }
        }
        for (i, w) in aff.preferred_during_scheduling_ignored_during_execution.iter().enumerate() {
            let wp = ap.key("preferredDuringSchedulingIgnoredDuringExecution").index(i);
            weight(e, &wp.key("weight"), w.weight);
            if w.pod_affinity_term.topology_key.is_empty() {
                e.add(wp.keys("podAffinityTerm.topologyKey"), "required");
            }
        }
    }
}

fn weight(e: &mut Errors, path: &FieldPath, w: i32) {
    if !(1..=100).contains(&w) {
        e.add(path.clone(), format!("{w} must be in the range 1-100"));
    }
}

fn node_requirements(e: &mut Errors, path: &FieldPath, reqs: &[crate::pod::NodeSelectorRequirement]) {
    for (i, r) in reqs.iter().enumerate() {
        let rp = path.key("matchExpressions").index(i);
        if r.key.is_empty() {
            e.add(rp.key("key"), "required");
        }
        match r.operator.as_str() {
            "In" | "NotIn" if r.values.is_empty() => e.add(rp.key("values"), "required for In and NotIn"),
            "Gt" | "Lt" if r.values.len() != 1 || r.values[0].parse::<i64>().is_err() => {
                e.add(rp.key("values"), "Gt and Lt need exactly one integer value")
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {}
            other => e.add(rp.key("operator"), unsupported(other, &["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"])),
        }
    }
}

fn taint_effect(e: &mut Errors, path: &FieldPath, effect: &str, empty_ok: bool) {
    if effect.is_empty() && empty_ok {
        return;
    }
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        e.add(path.clone(), unsupported(effect, &["NoSchedule", "PreferNoSchedule", "NoExecute"]));
    }
}

fn container(e: &mut Errors, path: &FieldPath, c: &Container, volumes: &BTreeSet<&str>) {
    if c.name.is_empty() {
        e.add(path.key("name"), "required");
    } else if !is_dns_label(&c.name) {
        e.add(path.key("name"), format!("{:?}: must be a DNS label (lower-case letters, digits and '-')", c.name));
    }
    if c.image.trim().is_empty() {
        e.add(path.key("image"), "required");
    }
    for (i, env) in c.env.iter().enumerate() {
        let at = path.key("env").index(i);
        if env.name.is_empty() || env.name.contains('=') {
            e.add(at.key("name"), "required, without '='");
        }
        if let Some(from) = &env.value_from {
            if !env.value.is_empty() {
                e.add(at.key("valueFrom"), "may not be set together with value");
            }
            match &from.field_ref {
                Some(r) => {
                    if let Err(reason) = PodField::parse(&r.field_path) {
                        e.add(at.key("valueFrom").key("fieldRef").key("fieldPath"), reason);
                    }
                }
                None => e.add(at.key("valueFrom"), "needs fieldRef, the one source supported"),
            }
        }
    }
    if !c.working_dir.is_empty() && !c.working_dir.starts_with('/') {
        e.add(path.key("workingDir"), "must be an absolute path");
    }
    let mut port_names = BTreeSet::new();
    for (i, p) in c.ports.iter().enumerate() {
        let pp = path.key("ports").index(i);
        if !(1..=65535).contains(&p.container_port) {
            e.add(pp.key("containerPort"), format!("{} must be between 1 and 65535", p.container_port));
        }
        if let Some(hp) = p.host_port
            && !(1..=65535).contains(&hp)
        {
            e.add(pp.key("hostPort"), format!("{hp} must be between 1 and 65535"));
        }
        if !["TCP", "UDP", "SCTP"].contains(&p.protocol.as_str()) {
            e.add(pp.key("protocol"), unsupported(&p.protocol, &["TCP", "UDP", "SCTP"]));
        }
        if !p.name.is_empty() && !port_names.insert(p.name.as_str()) {
            e.add(pp.key("name"), format!("duplicate port name {:?}", p.name));
        }
    }
    for (which, list) in [("requests", &c.resources.requests), ("limits", &c.resources.limits)] {
        for (res, q) in list {
            let rp = path.keys("resources").key(which).key(res);
            if !["cpu", "memory", "ephemeral-storage"].contains(&res.as_str()) {
                e.add(rp, "Flotilla accounts for cpu, memory and ephemeral-storage only");
                continue;
            }
            quantity(e, &rp, q);
        }
    }
    for (res, req) in &c.resources.requests {
        if let (Some(limit), Ok(r)) = (c.resources.limits.get(res), req.value())
            && limit.value().is_ok_and(|l| r > l)
        {
            e.add(path.keys("resources.requests").key(res), format!("{req} must be less than or equal to the {res} limit {limit}"));
        }
    }
    for (field, probe) in [("livenessProbe", &c.liveness_probe), ("readinessProbe", &c.readiness_probe), ("startupProbe", &c.startup_probe)] {
        if let Some(p) = probe {
            probe_checks(e, &path.key(field), p, field != "readinessProbe");
        }
    }
    let mut mount_paths = BTreeSet::new();
    for (i, m) in c.volume_mounts.iter().enumerate() {
        let mp = path.key("volumeMounts").index(i);
        if !volumes.contains(m.name.as_str()) {
            e.add(mp.key("name"), format!("{:?}: no such volume in spec.volumes", m.name));
        }
        if !m.mount_path.starts_with('/') {
            e.add(mp.key("mountPath"), "must be an absolute path");
        } else if !mount_paths.insert(m.mount_path.as_str()) {
            e.add(mp.key("mountPath"), format!("{:?}: mounted twice", m.mount_path));
        }
    }
}

fn probe_checks(e: &mut Errors, path: &FieldPath, p: &Probe, success_must_be_one: bool) {
    let handlers = usize::from(p.exec.is_some()) + usize::from(p.http_get.is_some()) + usize::from(p.tcp_socket.is_some());
    if handlers != 1 {
        e.add(path.clone(), "exactly one of exec, httpGet or tcpSocket is required");
    }
    if let Some(x) = &p.exec
        && x.command.is_empty()
    {
        e.add(path.keys("exec.command"), "required");
    }
    if let Some(h) = &p.http_get {
        port(e, &path.keys("httpGet.port"), &h.port);
        if !["HTTP", "HTTPS"].contains(&h.scheme.as_str()) {
            e.add(path.keys("httpGet.scheme"), unsupported(&h.scheme, &["HTTP", "HTTPS"]));
        }
    }
    if let Some(t) = &p.tcp_socket {
        port(e, &path.keys("tcpSocket.port"), &t.port);
    }
    for (field, value, min) in [
        ("initialDelaySeconds", p.initial_delay_seconds, 0),
        ("timeoutSeconds", p.timeout_seconds, 1),
        ("periodSeconds", p.period_seconds, 1),
        ("successThreshold", p.success_threshold, 1),
        ("failureThreshold", p.failure_threshold, 1),
    ] {
        if value.is_some_and(|v| v < min) {
            e.add(path.key(field), format!("must be at least {min}"));
        }
    }
    if success_must_be_one && p.success_threshold.is_some_and(|s| s != 1) {
        e.add(path.key("successThreshold"), "must be 1 for liveness and startup probes");
    }
}

fn port(e: &mut Errors, path: &FieldPath, p: &IntOrString) {
    match p {
        IntOrString::Int(n) if !(1..=65535).contains(n) => e.add(path.clone(), format!("{n} must be between 1 and 65535")),
        IntOrString::String(s) if !is_dns_label(s) => e.add(path.clone(), format!("{s:?} must be a port number or name")),
        _ => {}
    }
}

fn quantity(e: &mut Errors, path: &FieldPath, q: &Quantity) {
    if let Err(msg) = q.value() {
        e.add(path.clone(), msg);
    }
}

/// Resolves a count or percentage against `total`, as a rolling update
/// does; `round_up` for maxSurge, down for maxUnavailable.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("{s:?} must be an integer or a percentage such as \"25%\""))?;
            let scaled = pct * i64::from(total);
            Ok(if round_up { (scaled + 99) / 100 } else { scaled / 100 } as i32)
        }
    }
}

fn int_or_percent(e: &mut Errors, path: &FieldPath, v: Option<&IntOrString>) -> Option<i64> {
    let v = v?;
    match scaled_value(v, 100, true) {
        Ok(n) if n < 0 => {
            e.add(path.clone(), "must be greater than or equal to 0");
            None
        }
        Ok(n) => Some(i64::from(n)),
        Err(msg) => {
            e.add(path.clone(), msg);
            None
        }
    }
}
