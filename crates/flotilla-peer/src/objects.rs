//! Typed views of the applied store and the small write helpers the
//! leader loop and the node share.

use flotilla_api::cluster::{Event, EventSource, ObjectReference};
use flotilla_api::pod::Condition;
use flotilla_api::{Kind, Node, Object, Pod};
use flotilla_store::{ObjectKey, ObjectStore, Op, Precondition};
use flotilla_raft::AppliedEvent;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

pub use flotilla_api::time::format_rfc3339 as rfc3339;

/// The reason a lost node's condition and its Pods carry.
pub const NODE_LOST_REASON: &str = "NodeLost";

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

/// Whether the lifecycle controller has declared this node lost.
pub fn node_is_lost(node: &Node) -> bool {
    node.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == NODE_LOST_REASON))
}

/// Sets a condition, moving its transition time only when its status
/// changes, as Kubernetes does.
pub fn set_condition(conditions: &mut Vec<Condition>, type_: &str, status: &str, reason: &str, message: &str, now: u64) {
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.status = status.into();
                c.last_transition_time = Some(rfc3339(now));
            }
            c.reason = reason.into();
            c.message = message.into();
        }
        None => conditions.push(Condition {
            type_: type_.into(),
            status: status.into(),
            last_transition_time: Some(rfc3339(now)),
            reason: reason.into(),
            message: message.into(),
        }),
    }
}

/// A new Event about `involved`. Its name follows Kubernetes'
/// `<object>.<unique suffix>`.
pub fn event_op(involved: ObjectReference, reason: &str, message: &str, warning: bool, component: &str, now: u64) -> Op {
    let uid = new_uid();
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

/// Waits for an applied change to an object of a kind `relevant` accepts
/// (or for anything a watcher must treat as a change: a snapshot install,
/// lagging behind). `seen` is shown every event received on the way, or
/// `None` when some were missed. False when the store is gone.
pub async fn next_change(
    events: &mut broadcast::Receiver<AppliedEvent>,
    relevant: impl Fn(&str) -> bool,
    mut seen: impl FnMut(Option<&AppliedEvent>),
) -> bool {
    loop {
        match events.recv().await {
            Ok(event) => {
                seen(Some(&event));
                match &event {
                    AppliedEvent::Changes(changes) if !changes.iter().any(|e| relevant(&e.key.kind)) => {}
                    _ => return true,
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                seen(None);
                return true;
            }
            Err(broadcast::error::RecvError::Closed) => return false,
        }
    }
}

/// A fresh object uid, random like Kubernetes' (UUID version 4 layout).
pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    flotilla_raft::entropy::fill(&mut b);
    let v = u128::from_be_bytes(b) & !(0xf000 << 64) & !(0xc000 << 48) | (0x4000 << 64) | (0x8000 << 48);
    let h = format!("{v:032x}");
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}
