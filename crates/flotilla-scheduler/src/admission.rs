//! The state machine's re-check of bindings. The leader plans on the state
//! it has applied; a plan made before a leader change, or on a replica a
//! little behind, may bind onto a node that has filled up meanwhile. Every
//! peer checks each binding against its node as it applies it, so a stale
//! plan fails (and is planned again) instead of oversubscribing the node.

use flotilla_api::{Node, Pod};
use flotilla_store::{Admission, ObjectKey, ObjectStore, StoredObject};
use serde_json::Value;

use crate::check_fit;

/// Admits a Pod's binding (its `spec.nodeName` going from empty to set)
/// only if the Pod fits on that node beside the Pods already bound there.
/// Pods created already bound (a DaemonSet's, or a user's with
/// `nodeName`) are admitted as Kubernetes admits them: by the node.
#[derive(Debug, Default)]
pub struct BindingAdmission;

fn node_name_of(value: &Value) -> &str {
    value.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("")
}

impl Admission for BindingAdmission {
    fn admit(&self, store: &ObjectStore, key: &ObjectKey, prev: Option<&StoredObject>, next: &Value) -> Result<(), String> {
        if key.kind != "Pod" {
            return Ok(());
        }
        let node_name = node_name_of(next);
        let Some(prev) = prev else { return Ok(()) };
        let was_bound = serde_json::from_str::<Value>(&prev.json).is_ok_and(|v| !node_name_of(&v).is_empty());
        if node_name.is_empty() || was_bound {
            return Ok(());
        }
        let node_key = ObjectKey::new("Node", "", node_name);
        let node: Node = store
            .get(&node_key)
            .and_then(|o| serde_json::from_str(&o.json).ok())
            .ok_or_else(|| format!("spec.nodeName: node {node_name} does not exist"))?;
        let pod: Pod = serde_json::from_value(next.clone()).map_err(|e| format!("not a Pod: {e}"))?;
        let bound: Vec<Pod> = store
            .pods_on_node(node_name)
            .filter(|(k, _)| *k != key)
            .filter_map(|(_, o)| serde_json::from_str::<Pod>(&o.json).ok())
            .collect();
        let refs: Vec<&Pod> = bound.iter().collect();
        check_fit(&node, &refs, &pod)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flotilla_store::{Command, Op, Precondition, WriteError};
    use serde_json::json;

    use super::*;

    fn put(key: ObjectKey, object: Value, precondition: Precondition) -> Op {
        Op::Put { uid: format!("uid-{}", key.name), key, object: object.to_string(), precondition }
    }

    fn pod(name: &str, node: &str) -> Value {
        json!({"kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "600m"}}}]}})
    }

    fn apply(store: &mut ObjectStore, op: Op) -> Result<u64, WriteError> {
        let (mut results, _) = store.apply(&Command { time_unix_ms: 1_795_474_389_000, ops: vec![op] });
        results.pop().expect("one result").map(|r| r.revision)
    }

    #[test]
    fn a_stale_binding_that_would_oversubscribe_its_node_is_refused() {
        let mut store = ObjectStore::default().with_kinds(Arc::new(flotilla_api::object::ApiKinds));
        store.set_admission(Some(Arc::new(BindingAdmission)));
        let node = json!({"kind": "Node", "metadata": {"name": "n1"},
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}});
        apply(&mut store, put(ObjectKey::new("Node", "", "n1"), node, Precondition::MustNotExist)).unwrap();
        let mut revisions = Vec::new();
        for name in ["a", "b"] {
            let key = ObjectKey::new("Pod", "default", name);
            revisions.push(apply(&mut store, put(key, pod(name, ""), Precondition::MustNotExist)).unwrap());
        }
        // Two plans, each made when the node was empty: the first binds.
        let bind = |name: &str, rev: u64| put(ObjectKey::new("Pod", "default", name), pod(name, "n1"), Precondition::Revision(rev));
        apply(&mut store, bind("a", revisions[0])).unwrap();
        let refused = apply(&mut store, bind("b", revisions[1])).unwrap_err();
        assert!(matches!(&refused, WriteError::Invalid { reason, .. } if reason.contains("insufficient cpu")), "{refused}");
        // A binding to a node that does not exist is refused by name.
        let c = ObjectKey::new("Pod", "default", "c");
        let rev = apply(&mut store, put(c.clone(), pod("c", ""), Precondition::MustNotExist)).unwrap();
        let refused = apply(&mut store, put(c, pod("c", "n9"), Precondition::Revision(rev))).unwrap_err();
        assert!(refused.to_string().contains("node n9 does not exist"), "{refused}");
        // Updates of a bound Pod and creates already bound are not bindings.
        let a = store.get(&ObjectKey::new("Pod", "default", "a")).unwrap().mod_revision;
        apply(&mut store, put(ObjectKey::new("Pod", "default", "a"), pod("a", "n1"), Precondition::Revision(a))).unwrap();
        apply(&mut store, put(ObjectKey::new("Pod", "default", "d"), pod("d", "n1"), Precondition::MustNotExist)).unwrap();
    }
}
