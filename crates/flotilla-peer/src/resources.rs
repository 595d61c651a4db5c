//! Turning applied manifests into store writes, and walking ownership for
//! cascading deletes: the Kubernetes-shaped layer over the object store.

use std::collections::BTreeMap;

use flotilla_api::defaults::apply_defaults;
use flotilla_api::validate::validate;
use flotilla_api::{Kind, Object};
use flotilla_proto::api::ApplyRequest;
use flotilla_store::{ObjectKey, ObjectStore};
use serde_json::Value;

/// Read-merge-write rounds an apply makes before giving up on a hot object.
pub const MAX_APPLY_ATTEMPTS: usize = 5;
/// Objects one cascading delete removes at most.
pub const MAX_CASCADE_OBJECTS: usize = 10_000;
/// Random characters after a generateName prefix, as Kubernetes adds.
const GENERATED_SUFFIX_LEN: usize = 5;

pub struct Prepared {
    pub object: Object,
    pub key: ObjectKey,
    pub warnings: Vec<String>,
}

/// Decodes, defaults and validates an applied manifest. Every problem is
/// reported, each by field.
pub fn prepare(req: &ApplyRequest) -> Result<Prepared, String> {
    let value: Value = serde_json::from_str(&req.object_json).map_err(|e| format!("object is not valid JSON: {e}"))?;
    let decoded = Object::from_value(value).map_err(|e| e.to_string())?;
    let mut warnings = Vec::new();
    if !decoded.unknown_fields.is_empty() {
        let named: Vec<String> = decoded.unknown_fields.iter().map(|p| format!("{p}: field not supported by Flotilla")).collect();
        if !req.warn_unknown_fields {
            return Err(named.join("; "));
        }
        warnings = named.into_iter().map(|w| format!("{w}; ignored")).collect();
    }
    let mut object = decoded.object;
    apply_defaults(&mut object, &req.namespace);
    let meta = object.metadata_mut();
    if meta.name.is_empty() && !meta.generate_name.is_empty() {
        meta.name = format!("{}{}", meta.generate_name, random_suffix());
    }
    let problems = validate(&object);
    if !problems.is_empty() {
        return Err(problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "));
    }
    let kind = object.kind();
    let meta = object.metadata();
    let namespace = if kind.namespaced() { meta.namespace.clone() } else { String::new() };
    let key = ObjectKey::new(kind.name(), namespace, meta.name.clone());
    Ok(Prepared { object, key, warnings })
}

fn random_suffix() -> String {
    // Consonants and digits only, as Kubernetes uses, so no words appear.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..GENERATED_SUFFIX_LEN).map(|_| ALPHABET[flotilla_raft::entropy::below(ALPHABET.len() as u64) as usize] as char).collect()
}

pub fn labels_of(json: &str) -> BTreeMap<String, String> {
    serde_json::from_str::<Value>(json)
        .ok()
        .and_then(|v| v.pointer("/metadata/labels").cloned())
        .and_then(|l| serde_json::from_value(l).ok())
        .unwrap_or_default()
}

pub fn uid_of(json: &str) -> String {
    serde_json::from_str::<Value>(json)
        .ok()
        .and_then(|v| v.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

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

pub fn deletion(store: &ObjectStore, key: &ObjectKey, now_unix_ms: u64) -> Deletion {
    let Some(stored) = store.get(key) else { return Deletion::Now { revision: None } };
    let now = Deletion::Now { revision: Some(stored.mod_revision) };
    if key.kind != "Pod" {
        return now;
    }
    let Ok(mut pod) = serde_json::from_str::<flotilla_api::Pod>(&stored.json) else { return now };
    if pod.spec.node_name.is_empty() {
        return now;
    }
    let node_key = ObjectKey::new("Node", "", pod.spec.node_name.clone());
    let node_lost = store
        .get(&node_key)
        .and_then(|n| serde_json::from_str::<flotilla_api::Node>(&n.json).ok())
        .is_none_or(|n| crate::objects::node_is_lost(&n));
    // A lost node has fenced itself: nothing runs there any more.
    if node_lost {
        return now;
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Deletion::Terminating { uid: pod.metadata.uid, revision: stored.mod_revision };
    }
    let terminal = pod.status.as_ref().is_some_and(|s| s.phase == "Succeeded" || s.phase == "Failed");
    if terminal {
        return now;
    }
    pod.metadata.deletion_timestamp = Some(flotilla_api::time::format_rfc3339(now_unix_ms));
    Deletion::Graceful { object: serde_json::to_string(&pod).expect("API types serialize"), revision: stored.mod_revision }
}
