//! Server-side apply: what an applied manifest becomes when merged onto the
//! live object. The manifest owns the desired state (spec, labels,
//! annotations, data); the system owns status, identity and bindings.

use serde_json::Value;

use crate::object::Object;

/// Metadata the store sets; never taken from a manifest.
const SYSTEM_METADATA: &[&str] = &["uid", "resourceVersion", "creationTimestamp", "generation", "deletionTimestamp"];

/// Merges `manifest` (already defaulted and validated) onto `live`.
pub fn merge_onto_live(manifest: &Object, live: Option<&Value>) -> Value {
    let mut merged = manifest.to_value();
    strip_system_metadata(&mut merged);
    let Some(live) = live else { return merged };
    if let Some(status) = live.get("status") {
        merged["status"] = status.clone();
    }
    let owners = merged.pointer("/metadata/ownerReferences").is_some();
    if !owners && let Some(refs) = live.pointer("/metadata/ownerReferences") {
        merged["metadata"]["ownerReferences"] = refs.clone();
    }
    // A Pod's binding is the scheduler's, not the manifest's.
    if merged.get("kind").and_then(Value::as_str) == Some("Pod")
        && merged.pointer("/spec/nodeName").is_none()
        && let Some(node) = live.pointer("/spec/nodeName")
    {
        merged["spec"]["nodeName"] = node.clone();
    }
    merged
}

/// Whether two objects want the same thing, ignoring what the system owns.
pub fn same_desired_state(a: &Value, b: &Value) -> bool {
    let mut a = a.clone();
    let mut b = b.clone();
    strip_system_metadata(&mut a);
    strip_system_metadata(&mut b);
    a == b
}

fn strip_system_metadata(v: &mut Value) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SYSTEM_METADATA {
            meta.remove(*field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ValidateMode, parse};

    fn pod(yaml: &str) -> Object {
        let parsed = parse(yaml, "t.yaml", "", ValidateMode::Strict);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        parsed.objects.into_iter().next().unwrap().object
    }

    #[test]
    fn apply_keeps_status_binding_and_owners_but_takes_the_spec() {
        let live: Value = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "uid": "u1", "resourceVersion": "7",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u0", "controller": true}]},
            "spec": {"nodeName": "peer-2", "containers": [{"name": "c", "image": "old"}]},
            "status": {"phase": "Running"}
        });
        let manifest = pod("kind: Pod\nmetadata: {name: p, labels: {a: b}}\nspec:\n  containers: [{name: c, image: new}]\n");
        let merged = merge_onto_live(&manifest, Some(&live));
        assert_eq!(merged["status"]["phase"], "Running");
        assert_eq!(merged["spec"]["nodeName"], "peer-2");
        assert_eq!(merged["spec"]["containers"][0]["image"], "new");
        assert_eq!(merged["metadata"]["labels"]["a"], "b");
        assert_eq!(merged["metadata"]["ownerReferences"][0]["uid"], "u0");
        assert!(merged["metadata"].get("uid").is_none(), "identity is the store's");
        assert!(!same_desired_state(&merged, &live));
        assert!(same_desired_state(&merged, &{
            let mut m = merged.clone();
            m["metadata"]["resourceVersion"] = "99".into();
            m
        }));
    }

    #[test]
    fn a_new_object_is_the_manifest() {
        let manifest = pod("kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: i}]\n");
        assert_eq!(merge_onto_live(&manifest, None), manifest.to_value());
    }
}
