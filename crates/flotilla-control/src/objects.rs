//! Typed views of the applied store and the small write helpers the
//! leader's round, the API and the node share.

use std::collections::BTreeMap;

use flotilla_api::cluster::{Event, EventSource, ObjectReference};
use flotilla_api::{Kind, Object, Pod};
use flotilla_store::{ObjectKey, ObjectStore, Op, Precondition};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Entropy;

use flotilla_api::time::format_rfc3339 as rfc3339;

/// Every object of `kind`, decoded; objects that do not decode (written
/// through the raw Put API) are skipped rather than stopping the leader.
pub fn decode_all<T: DeserializeOwned>(store: &ObjectStore, kind: Kind) -> Vec<T> {
    let Ok(listed) = store.list(kind.name(), None, 0) else { return Vec::new() };
    listed.items.iter().filter_map(|(key, o)| decode(key, &o.json)).collect()
}

/// The object decoded, or `None` (logged) for one that does not decode.
pub fn decode<T: DeserializeOwned>(key: &ObjectKey, json: &str) -> Option<T> {
    match serde_json::from_str(json) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::debug!("skipping {key}: {e}");
            None
        }
    }
}

pub fn key_of(object: &Object) -> ObjectKey {
    let kind = object.kind();
    let meta = object.metadata();
    let namespace = if kind.namespaced() { meta.namespace.clone() } else { String::new() };
    ObjectKey::new(kind.name(), namespace, meta.name.clone())
}

pub fn pod_key(pod: &Pod) -> ObjectKey {
    ObjectKey::new("Pod", pod.metadata.namespace.clone(), pod.metadata.name.clone())
}

pub fn reference(object: &Object) -> ObjectReference {
    let kind = object.kind();
    let meta = object.metadata();
    ObjectReference {
        api_version: kind.api_version().into(),
        kind: kind.name().into(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
    }
}

/// A new Event about `involved`. Its name follows Kubernetes'
/// `<object>.<unique suffix>`.
pub fn event_op(
    involved: ObjectReference,
    reason: &str,
    message: &str,
    warning: bool,
    component: &str,
    now: u64,
    entropy: &dyn Entropy,
) -> Op {
    let uid = new_uid(entropy);
    let namespace = if involved.namespace.is_empty() { "default".to_string() } else { involved.namespace.clone() };
    let name = format!("{}.{}", involved.name, &uid[..8]);
    let mut event = Event {
        involved_object: involved,
        reason: reason.into(),
        message: message.into(),
        type_: if warning { "Warning" } else { "Normal" }.into(),
        count: 1,
        first_timestamp: Some(rfc3339(now)),
        last_timestamp: Some(rfc3339(now)),
        source: Some(EventSource { component: component.into(), host: String::new() }),
        ..Default::default()
    };
    event.api_version = Kind::Event.api_version().into();
    event.kind = Kind::Event.name().into();
    event.metadata.name = name.clone();
    event.metadata.namespace = namespace.clone();
    Op::Put {
        key: ObjectKey::new("Event", namespace, name),
        object: serde_json::to_string(&event).expect("API types serialize"),
        precondition: Precondition::MustNotExist,
        uid,
    }
}

/// The labels of a stored object; none when it does not decode.
pub fn labels_of(json: &str) -> BTreeMap<String, String> {
    serde_json::from_str::<Value>(json)
        .ok()
        .and_then(|v| v.pointer("/metadata/labels").cloned())
        .and_then(|l| serde_json::from_value(l).ok())
        .unwrap_or_default()
}

/// The uid of a stored object; empty when it has none.
pub fn uid_of(json: &str) -> String {
    serde_json::from_str::<Value>(json)
        .ok()
        .and_then(|v| v.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

/// A fresh object uid, random like Kubernetes' (UUID version 4 layout).
pub fn new_uid(entropy: &dyn Entropy) -> String {
    let mut b = [0u8; 16];
    entropy.fill(&mut b);
    let v = u128::from_be_bytes(b) & !(0xf000 << 64) & !(0xc000 << 48) | (0x4000 << 64) | (0x8000 << 48);
    let h = format!("{v:032x}");
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}
