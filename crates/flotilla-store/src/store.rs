use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Command, CommandResult, ObjectKey, Op, OpResult, Precondition, WriteError};

/// Largest object the store accepts, as etcd does (1.5 MiB there): big
/// objects make every list, watch and snapshot slow for everyone.
pub const MAX_OBJECT_BYTES: usize = 1024 * 1024;

/// Events kept for watchers that resume from an older revision. A watcher
/// further behind than this re-lists, as with Kubernetes' compaction.
pub const DEFAULT_HISTORY_LIMIT: usize = 20_000;

/// An object as the store keeps it: its JSON text with the metadata the
/// store owns already filled in, and the revisions that created and last
/// changed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredObject {
    pub json: Arc<str>,
    pub create_revision: u64,
    pub mod_revision: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change: what watchers see and what the storage layer persists, in
/// the same batch as the last-applied log id.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub revision: u64,
    pub event_type: EventType,
    pub key: ObjectKey,
    /// The object's new state, or for a delete its last state, as
    /// Kubernetes sends it to watchers.
    pub object: Arc<str>,
    /// What the key holds now: `None` after a delete.
    pub stored: Option<StoredObject>,
    /// What the key held before, so that a list at an older revision can be
    /// rebuilt by undoing events.
    pub prev: Option<StoredObject>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ListResult {
    pub items: Vec<(ObjectKey, StoredObject)>,
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("revision {requested} is too old: history starts after revision {compacted}; list again and watch from the list's revision")]
    TooOld { requested: u64, compacted: u64 },
    #[error("revision {requested} is newer than this replica's revision {current}")]
    Future { requested: u64, current: u64 },
}

/// Everything a peer needs to rebuild the store: written into Raft
/// snapshots, read back on install.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreSnapshot {
    pub revision: u64,
    /// The cluster's time as of `revision` (see `ObjectStore::time_unix_ms`).
    pub time_unix_ms: u64,
    pub objects: Vec<(ObjectKey, StoredObject)>,
}

/// A check of a write against the whole store, made as the write is
/// applied. It must be pure and deterministic: every peer runs it on the
/// same state and must reach the same verdict. A refusal fails that op
/// alone, as `WriteError::Invalid`.
pub trait Admission: Send + Sync + std::fmt::Debug {
    fn admit(&self, store: &ObjectStore, key: &ObjectKey, prev: Option<&StoredObject>, next: &Value) -> Result<(), String>;
}

/// What the store must know of the kinds it otherwise holds as plain JSON,
/// given by the API that defines them (`flotilla_api::object::ApiKinds`):
/// the store names no kind itself. Pure and deterministic, as every peer
/// applies the same commands with the same rules.
pub trait KindRules: Send + Sync + std::fmt::Debug {
    /// Whether objects of `kind` are bound to a node at `spec.nodeName`,
    /// and so indexed by node for admission.
    fn bound_to_nodes(&self, kind: &str) -> bool;
    /// Whether objects of `kind` get a fencing token: the revision of their
    /// creation, in [`KindRules::fencing_token_annotation`].
    fn carries_fencing_token(&self, kind: &str) -> bool;
    /// The annotation holding the fencing token, which only the store
    /// writes: a client's value is dropped from every kind.
    fn fencing_token_annotation(&self) -> &'static str;
}

/// No kind is bound or fenced: a store of plain objects.
#[derive(Debug)]
pub struct PlainObjects;

impl KindRules for PlainObjects {
    fn bound_to_nodes(&self, _: &str) -> bool {
        false
    }

    fn carries_fencing_token(&self, _: &str) -> bool {
        false
    }

    fn fencing_token_annotation(&self) -> &'static str {
        ""
    }
}

/// The object store. Deterministic: the same commands in the same order give
/// the same objects, revisions and events on every peer.
#[derive(Debug)]
pub struct ObjectStore {
    objects: BTreeMap<ObjectKey, StoredObject>,
    /// The cluster-wide revision: bumped once for every change.
    revision: u64,
    /// The cluster's time: the latest time any applied command carried.
    /// Commands are stamped by whichever peer leads, whose clock may be
    /// behind the previous leader's; taking the maximum keeps timestamps in
    /// revision order, so a deadline or a creation time never moves back.
    time_unix_ms: u64,
    history: VecDeque<Event>,
    history_limit: usize,
    /// Events at or below this revision are no longer in `history`.
    compacted: u64,
    /// What the layer above checks on apply (a Pod's binding fits its node).
    admission: Option<Arc<dyn Admission>>,
    /// Which kinds are bound to nodes and fenced.
    kinds: Arc<dyn KindRules>,
    /// Pods by the node they are bound to, so that checking a binding
    /// reads that node's Pods rather than every Pod of the cluster.
    pods_by_node: BTreeMap<String, BTreeSet<ObjectKey>>,
    /// The node each bound Pod is on, to update `pods_by_node` without
    /// parsing the previous object.
    node_of_pod: BTreeMap<ObjectKey, String>,
}

impl Default for ObjectStore {
    fn default() -> Self {
        Self::new(DEFAULT_HISTORY_LIMIT)
    }
}

impl ObjectStore {
    pub fn new(history_limit: usize) -> Self {
        assert!(history_limit > 0, "a watch history needs room for at least one event");
        Self {
            objects: BTreeMap::new(),
            revision: 0,
            time_unix_ms: 0,
            history: VecDeque::new(),
            history_limit,
            compacted: 0,
            admission: None,
            kinds: Arc::new(PlainObjects),
            pods_by_node: BTreeMap::new(),
            node_of_pod: BTreeMap::new(),
        }
    }

    /// A store that knows `kinds`; made empty, before anything is stored.
    pub fn with_kinds(mut self, kinds: Arc<dyn KindRules>) -> Self {
        assert!(self.objects.is_empty(), "kind rules come before any object");
        self.kinds = kinds;
        self
    }

    pub fn kinds(&self) -> Arc<dyn KindRules> {
        self.kinds.clone()
    }

    pub fn set_admission(&mut self, admission: Option<Arc<dyn Admission>>) {
        self.admission = admission;
    }

    pub fn admission(&self) -> Option<Arc<dyn Admission>> {
        self.admission.clone()
    }

    /// Rebuilds the store from persisted state. There is no history across a
    /// restore: watchers from before it re-list.
    pub fn restore(snapshot: StoreSnapshot, history_limit: usize, kinds: Arc<dyn KindRules>) -> Self {
        let mut store = Self::new(history_limit).with_kinds(kinds);
        store.revision = snapshot.revision;
        store.time_unix_ms = snapshot.time_unix_ms;
        store.compacted = snapshot.revision;
        for (key, object) in snapshot.objects {
            assert!(object.mod_revision <= snapshot.revision, "object {key} is newer than the store");
            if store.kinds.bound_to_nodes(&key.kind) {
                let value: Value = serde_json::from_str(&object.json).unwrap_or(Value::Null);
                store.index_pod(&key, Some(&value));
            }
            store.objects.insert(key, object);
        }
        store
    }

    pub fn snapshot(&self) -> StoreSnapshot {
        StoreSnapshot {
            revision: self.revision,
            time_unix_ms: self.time_unix_ms,
            objects: self.objects.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The cluster's time: never less than at any earlier revision.
    pub fn time_unix_ms(&self) -> u64 {
        self.time_unix_ms
    }

    pub fn history_limit(&self) -> usize {
        self.history_limit
    }

    pub fn compacted_revision(&self) -> u64 {
        self.compacted
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&StoredObject> {
        self.objects.get(key)
    }

    /// The Pods bound to `node` (`spec.nodeName`), in key order.
    pub fn pods_on_node<'a>(&'a self, node: &str) -> impl Iterator<Item = (&'a ObjectKey, &'a StoredObject)> + 'a {
        self.pods_by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|k| self.objects.get(k).map(|o| (k, o)))
    }

    /// Moves `key` in the node index to where `pod` (None: deleted) is bound.
    fn index_pod(&mut self, key: &ObjectKey, pod: Option<&Value>) {
        let node = pod.and_then(|p| p.pointer("/spec/nodeName")).and_then(Value::as_str).filter(|n| !n.is_empty());
        if self.node_of_pod.get(key).map(String::as_str) == node {
            return;
        }
        if let Some(old) = self.node_of_pod.remove(key)
            && let Some(keys) = self.pods_by_node.get_mut(&old)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.pods_by_node.remove(&old);
            }
        }
        if let Some(node) = node {
            self.node_of_pod.insert(key.clone(), node.to_string());
            self.pods_by_node.entry(node.to_string()).or_default().insert(key.clone());
        }
    }

    /// Applies one committed command. Returns each op's result and the
    /// events it caused, which the caller persists and publishes.
    pub fn apply(&mut self, command: &Command) -> (CommandResult, Vec<Event>) {
        let mut results = Vec::with_capacity(command.ops.len());
        let mut events = Vec::new();
        self.time_unix_ms = self.time_unix_ms.max(command.time_unix_ms);
        for op in &command.ops {
            let result = self.apply_op(op, self.time_unix_ms);
            if result.is_ok() {
                let event = self.history.back().expect("a successful op records an event");
                debug_assert_eq!(event.revision, self.revision);
                events.push(event.clone());
            }
            results.push(result);
        }
        (results, events)
    }

    fn apply_op(&mut self, op: &Op, time_unix_ms: u64) -> Result<OpResult, WriteError> {
        let key = op.key();
        let current = self.objects.get(key);
        let precondition = match op {
            Op::Put { precondition, .. } | Op::Delete { precondition, .. } => *precondition,
        };
        match (precondition, current) {
            (Precondition::MustNotExist, Some(_)) => {
                return Err(WriteError::AlreadyExists { key: key.clone() });
            }
            (Precondition::MustExist | Precondition::Revision(_), None) => {
                return Err(WriteError::NotFound { key: key.clone() });
            }
            (Precondition::Revision(expected), Some(found)) if found.mod_revision != expected => {
                return Err(WriteError::Conflict { key: key.clone(), expected, actual: found.mod_revision });
            }
            _ => {}
        }
        match op {
            Op::Delete { .. } => {
                let Some(prev) = self.objects.remove(key) else {
                    return Err(WriteError::NotFound { key: key.clone() });
                };
                if self.kinds.bound_to_nodes(&key.kind) {
                    self.index_pod(key, None);
                }
                let revision = self.next_revision();
                self.record(Event {
                    revision,
                    event_type: EventType::Deleted,
                    key: key.clone(),
                    object: prev.json.clone(),
                    stored: None,
                    prev: Some(prev.clone()),
                });
                Ok(OpResult { object: prev.json.to_string(), revision })
            }
            Op::Put { object, uid, .. } => {
                let prev = current.cloned();
                let json = self.stamp(key, object, prev.as_ref(), uid, time_unix_ms)?;
                if let Some(admission) = &self.admission {
                    admission
                        .admit(self, key, prev.as_ref(), &json)
                        .map_err(|reason| WriteError::Invalid { key: key.clone(), reason })?;
                }
                let revision = self.next_revision();
                if self.kinds.bound_to_nodes(&key.kind) {
                    self.index_pod(key, Some(&json));
                }
                let json = set_resource_version(json, revision);
                let stored = StoredObject {
                    json: Arc::from(json.as_str()),
                    create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                    mod_revision: revision,
                };
                self.objects.insert(key.clone(), stored.clone());
                self.record(Event {
                    revision,
                    event_type: if prev.is_some() { EventType::Modified } else { EventType::Added },
                    key: key.clone(),
                    object: stored.json.clone(),
                    stored: Some(stored),
                    prev,
                });
                Ok(OpResult { object: json, revision })
            }
        }
    }

    /// Validates the incoming object and fills in the metadata the store
    /// owns: name and namespace from the key; uid and creationTimestamp set
    /// at creation and kept by updates, whatever the client sent, as
    /// Kubernetes does; generation counting changes of `spec`.
    fn stamp(
        &self,
        key: &ObjectKey,
        object: &str,
        prev: Option<&StoredObject>,
        uid: &str,
        time_unix_ms: u64,
    ) -> Result<Value, WriteError> {
        let invalid = |reason: String| WriteError::Invalid { key: key.clone(), reason };
        if object.len() > MAX_OBJECT_BYTES {
            return Err(invalid(format!(
                "object is {} bytes, over the limit of {MAX_OBJECT_BYTES} bytes",
                object.len()
            )));
        }
        key.validate().map_err(|e| invalid(e.to_string()))?;
        let mut value: Value =
            serde_json::from_str(object).map_err(|e| invalid(format!("object is not valid JSON: {e}")))?;
        let Value::Object(root) = &mut value else {
            return Err(invalid("object must be a JSON object".into()));
        };
        match root.get("kind") {
            None => {
                root.insert("kind".into(), Value::String(key.kind.clone()));
            }
            Some(Value::String(kind)) if *kind == key.kind => {}
            Some(other) => return Err(invalid(format!("kind: {other} does not match the key's kind {}", key.kind))),
        }
        let meta = root.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(meta) = meta else {
            return Err(invalid("metadata: must be an object".into()));
        };
        check_matches(meta, "name", &key.name).map_err(&invalid)?;
        meta.insert("name".into(), Value::String(key.name.clone()));
        if !key.namespace.is_empty() {
            check_matches(meta, "namespace", &key.namespace).map_err(&invalid)?;
            meta.insert("namespace".into(), Value::String(key.namespace.clone()));
        }
        let prev_value: Option<Value> = prev.map(|p| serde_json::from_str(&p.json).expect("stored objects are JSON"));
        let prev_meta = prev_value.as_ref().and_then(|v| v.get("metadata"));
        match prev_meta {
            Some(pm) => {
                for field in ["uid", "creationTimestamp"] {
                    if let Some(v) = pm.get(field) {
                        meta.insert(field.into(), v.clone());
                    }
                }
                let prev_generation = pm.get("generation").and_then(Value::as_u64).unwrap_or(1);
                let spec_changed = prev_value.as_ref().and_then(|v| v.get("spec")) != root.get("spec");
                let generation = if spec_changed { prev_generation + 1 } else { prev_generation };
                let meta = root.get_mut("metadata").and_then(Value::as_object_mut).expect("metadata was inserted");
                meta.insert("generation".into(), Value::from(generation));
                let annotation = self.kinds.fencing_token_annotation();
                let token = pm.get("annotations").and_then(|a| a.get(annotation)).cloned();
                set_fencing_token(meta, annotation, token).map_err(&invalid)?;
            }
            None => {
                if uid.is_empty() {
                    return Err(invalid("a create needs a uid from the proposer".into()));
                }
                meta.insert("uid".into(), Value::String(uid.to_string()));
                meta.insert("creationTimestamp".into(), Value::String(rfc3339(time_unix_ms)));
                meta.insert("generation".into(), Value::from(1u64));
                // The revision this create will commit at: larger than any
                // earlier Pod's of the same name.
                let token =
                    self.kinds.carries_fencing_token(&key.kind).then(|| Value::String((self.revision + 1).to_string()));
                set_fencing_token(meta, self.kinds.fencing_token_annotation(), token).map_err(&invalid)?;
            }
        }
        Ok(value)
    }

    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn record(&mut self, event: Event) {
        self.history.push_back(event);
        while self.history.len() > self.history_limit {
            let dropped = self.history.pop_front().expect("history is over its limit, so not empty");
            self.compacted = dropped.revision;
        }
    }

    /// Lists objects of `kind` (in `namespace`, or in all namespaces when
    /// `None`) as they were at `revision`, or now when `revision` is 0.
    pub fn list(&self, kind: &str, namespace: Option<&str>, revision: u64) -> Result<ListResult, ReadError> {
        let at = if revision == 0 { self.revision } else { revision };
        if at > self.revision {
            return Err(ReadError::Future { requested: at, current: self.revision });
        }
        if at < self.compacted {
            return Err(ReadError::TooOld { requested: at, compacted: self.compacted });
        }
        let in_scope = |k: &ObjectKey| k.kind == kind && namespace.is_none_or(|ns| k.namespace == ns);
        let lower = ObjectKey::new(kind, namespace.unwrap_or(""), "");
        let mut items: BTreeMap<ObjectKey, StoredObject> = self
            .objects
            .range((Bound::Included(lower), Bound::Unbounded))
            .take_while(|(k, _)| k.kind == kind && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Undo the events after `at`, newest first.
        for event in self.history.iter().rev().take_while(|e| e.revision > at) {
            if !in_scope(&event.key) {
                continue;
            }
            match &event.prev {
                Some(prev) => items.insert(event.key.clone(), prev.clone()),
                None => items.remove(&event.key),
            };
        }
        Ok(ListResult { items: items.into_iter().collect(), revision: at })
    }

    /// The events after `revision`, oldest first, up to `limit` of them.
    pub fn events_after(&self, revision: u64, limit: usize) -> Result<Vec<Event>, ReadError> {
        if revision < self.compacted {
            return Err(ReadError::TooOld { requested: revision, compacted: self.compacted });
        }
        if revision > self.revision {
            return Err(ReadError::Future { requested: revision, current: self.revision });
        }
        // History revisions are consecutive, so the position is arithmetic.
        let skip = (revision - self.compacted) as usize;
        Ok(self.history.iter().skip(skip).take(limit).cloned().collect())
    }
}

fn check_matches(meta: &Map<String, Value>, field: &str, want: &str) -> Result<(), String> {
    match meta.get(field) {
        None => Ok(()),
        Some(Value::String(s)) if s == want => Ok(()),
        Some(other) => Err(format!("metadata.{field}: {other} does not match the key's {want:?}")),
    }
}

/// The fencing token is the store's to set, as the uid is: whatever a
/// client sends is replaced by the token the Pod was created with.
fn set_fencing_token(meta: &mut Map<String, Value>, annotation: &str, token: Option<Value>) -> Result<(), String> {
    if annotation.is_empty() {
        return Ok(());
    }
    let Some(token) = token else {
        if let Some(Value::Object(annotations)) = meta.get_mut("annotations") {
            annotations.remove(annotation);
        }
        return Ok(());
    };
    let annotations = meta.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(annotations) = annotations else {
        return Err("metadata.annotations: must be an object".into());
    };
    annotations.insert(annotation.into(), token);
    Ok(())
}

fn set_resource_version(mut value: Value, revision: u64) -> String {
    value["metadata"]["resourceVersion"] = Value::String(revision.to_string());
    value.to_string()
}

/// Formats Unix milliseconds as Kubernetes prints timestamps
/// (`2026-11-23T22:53:09Z`), without a calendar crate in the pure core.
pub(crate) fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days over the proleptic Gregorian calendar, eras of 400 years.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests;
