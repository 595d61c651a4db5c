//! What the tests of this crate share: a store filled with objects and a
//! randomness that repeats.

use std::cell::Cell;

use flotilla_store::{Command, ObjectKey, ObjectStore, Op, Precondition};
use serde_json::{Value, json};

use crate::Entropy;

/// Draws 0, 1, 2, ... byte by byte.
#[derive(Default)]
pub struct Counting(Cell<u8>);

impl Entropy for Counting {
    fn fill(&self, dest: &mut [u8]) {
        for b in dest {
            *b = self.0.get();
            self.0.set(self.0.get().wrapping_add(1));
        }
    }
}

/// Writes `object` (its kind, namespace and name from its own fields) and
/// returns its revision.
pub fn put(store: &mut ObjectStore, object: Value) -> u64 {
    let kind = object["kind"].as_str().expect("kind").to_string();
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or("").to_string();
    let name = object["metadata"]["name"].as_str().expect("name").to_string();
    let uid = format!("uid-{name}");
    let op = Op::Put { key: ObjectKey::new(kind, namespace, name), object: object.to_string(), precondition: Precondition::None, uid };
    let (results, _) = store.apply(&Command { time_unix_ms: 1, ops: vec![op] });
    results.into_iter().next().expect("one result").expect("written").revision
}

/// A Ready node with room for a few small Pods, or one declared lost.
pub fn node(name: &str, lost: bool) -> Value {
    let (status, reason) = if lost { ("False", "NodeLost") } else { ("True", "KubeletReady") };
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": status, "reason": reason}]
        }
    })
}

/// A Pod bound to `node` (none when empty) in `phase`.
pub fn pod(name: &str, node: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1"]}]},
        "status": {"phase": phase}
    })
}
