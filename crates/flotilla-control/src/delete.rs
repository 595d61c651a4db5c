//! How an object is deleted (a Pod that may be running is stopped by its
//! node first) and whom a cascading delete reaches next.

use flotilla_api::{Kind, Node, Pod};
use flotilla_store::{ObjectKey, ObjectStore};
use serde_json::Value;

/// Objects one cascading delete removes at most.
pub const MAX_CASCADE_OBJECTS: usize = 10_000;

/// Every object in `namespace` with an owner reference to `uid`.
pub fn owned_by(store: &ObjectStore, namespace: &str, uid: &str) -> Vec<ObjectKey> {
    if uid.is_empty() {
        return Vec::new();
    }
    let mut owned = Vec::new();
    for kind in Kind::ALL.iter().filter(|k| k.namespaced()) {
        let Ok(listed) = store.list(kind.name(), Some(namespace), 0) else { continue };
        for (key, object) in listed.items {
            let Ok(v) = serde_json::from_str::<Value>(&object.json) else { continue };
            let refs = v.pointer("/metadata/ownerReferences").and_then(Value::as_array);
            if refs.is_some_and(|r| r.iter().any(|o| o.get("uid").and_then(Value::as_str) == Some(uid))) {
                owned.push(key);
            }
        }
    }
    owned
}

/// How one object is deleted.
#[derive(Debug, PartialEq)]
pub enum Deletion {
    /// Remove it from the store now: compare-and-set on the revision that
    /// was judged, so a Pod bound meanwhile is judged again.
    Now { revision: Option<u64> },
    /// Write it back with its deletionTimestamp set (compare-and-set on
    /// the revision): a Pod bound to a live node, which stops it first.
    Graceful { object: String, revision: u64 },
    /// A Pod whose node is already stopping it.
    Terminating { uid: String, revision: u64 },
}

/// How the object at `key` is deleted now.
pub fn deletion(store: &ObjectStore, key: &ObjectKey, now_unix_ms: u64) -> Deletion {
    let Some(stored) = store.get(key) else { return Deletion::Now { revision: None } };
    if key.kind != "Pod" {
        return Deletion::Now { revision: Some(stored.mod_revision) };
    }
    let Ok(pod) = serde_json::from_str::<Pod>(&stored.json) else { return Deletion::Now { revision: Some(stored.mod_revision) } };
    let node = (!pod.spec.node_name.is_empty())
        .then(|| store.get(&ObjectKey::new("Node", "", pod.spec.node_name.clone())))
        .flatten()
        .and_then(|n| serde_json::from_str::<Node>(&n.json).ok());
    pod_deletion(&pod, stored.mod_revision, node.as_ref(), now_unix_ms)
}

/// How `pod`, stored at `revision` and bound to `node` (as decoded, if it
/// exists), is deleted now.
pub fn pod_deletion(pod: &Pod, revision: u64, node: Option<&Node>, now_unix_ms: u64) -> Deletion {
    let now = Deletion::Now { revision: Some(revision) };
    if pod.spec.node_name.is_empty() {
        return now;
    }
    // A lost node has fenced itself: nothing runs there any more.
    if node.is_none_or(flotilla_controllers::node_lost) {
        return now;
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Deletion::Terminating { uid: pod.metadata.uid.clone(), revision };
    }
    let terminal = pod.status.as_ref().is_some_and(|s| s.phase == "Succeeded" || s.phase == "Failed");
    if terminal {
        return now;
    }
    let mut deleted = pod.clone();
    deleted.metadata.deletion_timestamp = Some(flotilla_api::time::format_rfc3339(now_unix_ms));
    Deletion::Graceful { object: serde_json::to_string(&deleted).expect("API types serialize"), revision }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod, put};
    use serde_json::json;

    #[test]
    fn a_pod_that_may_be_running_is_deleted_gracefully() {
        let mut store = ObjectStore::default();
        put(&mut store, node("live", false));
        put(&mut store, node("lost", true));
        let mut terminating = pod("terminating", "live", "Running");
        terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        for object in [
            pod("unbound", "", "Pending"),
            pod("running", "live", "Running"),
            pod("done", "live", "Succeeded"),
            pod("on-lost", "lost", "Running"),
            pod("on-missing", "gone", "Running"),
            terminating,
        ] {
            put(&mut store, object);
        }
        let key = |name: &str| ObjectKey::new("Pod", "default", name);
        let revision = |name: &str| store.get(&key(name)).unwrap().mod_revision;
        for now in ["unbound", "done", "on-lost", "on-missing"] {
            assert_eq!(deletion(&store, &key(now), 5), Deletion::Now { revision: Some(revision(now)) }, "{now}");
        }
        assert_eq!(
            deletion(&store, &key("terminating"), 5),
            Deletion::Terminating { uid: "uid-terminating".into(), revision: revision("terminating") }
        );
        let Deletion::Graceful { object, revision: r } = deletion(&store, &key("running"), 1_000) else { panic!("graceful") };
        assert_eq!(r, revision("running"));
        assert_eq!(serde_json::from_str::<Value>(&object).unwrap()["metadata"]["deletionTimestamp"], "1970-01-01T00:00:01Z");
        assert_eq!(deletion(&store, &key("absent"), 5), Deletion::Now { revision: None });
        assert_eq!(deletion(&store, &ObjectKey::new("Node", "", "live"), 5), Deletion::Now { revision: Some(1) });
    }

    #[test]
    fn a_cascade_finds_what_an_owner_owns_in_its_namespace() {
        let mut store = ObjectStore::default();
        let mut owned = pod("owned", "", "Pending");
        owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1"}]);
        put(&mut store, owned);
        put(&mut store, pod("free", "", "Pending"));
        assert_eq!(owned_by(&store, "default", "rs-1"), [ObjectKey::new("Pod", "default", "owned")]);
        assert!(owned_by(&store, "other", "rs-1").is_empty());
        assert!(owned_by(&store, "default", "").is_empty());
    }
}
