//! The kinds Flotilla serves, and decoding JSON into them without losing a
//! field silently.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::cluster::{ConfigMap, Event, Namespace, Node};
use crate::meta::ObjectMeta;
use crate::path::{FieldPath, Segment};
use crate::pod::Pod;
use crate::workloads::{DaemonSet, Deployment, Job, ReplicaSet, StatefulSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    ReplicaSet,
    Deployment,
    Job,
    DaemonSet,
    StatefulSet,
    Node,
    Namespace,
    ConfigMap,
    Event,
}

/// Kinds Kubernetes users will try that Flotilla does not serve, so they get
/// "not supported" rather than "unknown".
const KNOWN_UNSUPPORTED: &[&str] = &[
    "Service", "CronJob", "Ingress", "Secret", "PersistentVolumeClaim", "PersistentVolume", "ServiceAccount", "Role",
    "RoleBinding", "ClusterRole", "ClusterRoleBinding", "HorizontalPodAutoscaler", "NetworkPolicy", "Endpoints",
    "EndpointSlice", "StorageClass", "PodDisruptionBudget", "LimitRange", "ResourceQuota", "CustomResourceDefinition",
    "PodTemplate", "ReplicationController",
];

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Pod,
        Kind::ReplicaSet,
        Kind::Deployment,
        Kind::Job,
        Kind::DaemonSet,
        Kind::StatefulSet,
        Kind::Node,
        Kind::Namespace,
        Kind::ConfigMap,
        Kind::Event,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Deployment => "Deployment",
            Kind::Job => "Job",
            Kind::DaemonSet => "DaemonSet",
            Kind::StatefulSet => "StatefulSet",
            Kind::Node => "Node",
            Kind::Namespace => "Namespace",
            Kind::ConfigMap => "ConfigMap",
            Kind::Event => "Event",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::ReplicaSet | Kind::Deployment | Kind::DaemonSet | Kind::StatefulSet => "apps/v1",
            Kind::Job => "batch/v1",
            Kind::Pod | Kind::Node | Kind::Namespace | Kind::ConfigMap | Kind::Event => "v1",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Node | Kind::Namespace)
    }

    /// The lower-case plural kubectl uses (`pods`, `deployments`).
    pub fn plural(self) -> String {
        format!("{}s", self.name().to_ascii_lowercase())
    }

    fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &["po"],
            Kind::ReplicaSet => &["rs"],
            Kind::Deployment => &["deploy"],
            Kind::Job => &[],
            Kind::DaemonSet => &["ds"],
            Kind::StatefulSet => &["sts"],
            Kind::Node => &["no"],
            Kind::Namespace => &["ns"],
            Kind::ConfigMap => &["cm"],
            Kind::Event => &["ev"],
        }
    }

    /// Resolves what a user types, as kubectl does: `Pod`, `pod`, `pods`,
    /// `po`, `deployment.apps`.
    pub fn parse(text: &str) -> Result<Kind, KindError> {
        let bare = text.split('.').next().unwrap_or(text);
        let lower = bare.to_ascii_lowercase();
        for kind in Kind::ALL {
            let name = kind.name().to_ascii_lowercase();
            if lower == name || lower == kind.plural() || kind.short_names().contains(&lower.as_str()) {
                return Ok(kind);
            }
        }
        if let Some(known) = KNOWN_UNSUPPORTED.iter().find(|k| {
            let k = k.to_ascii_lowercase();
            lower == k || lower == format!("{k}s") || lower == format!("{k}es")
        }) {
            return Err(KindError::Unsupported(known.to_string()));
        }
        Err(KindError::Unknown(text.to_string()))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    #[error("kind {0} is not supported by Flotilla (it serves {kinds})", kinds = supported_list())]
    Unsupported(String),
    #[error("unknown kind {0:?} (Flotilla serves {kinds})", kinds = supported_list())]
    Unknown(String),
}

fn supported_list() -> String {
    Kind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
}

/// An object of any served kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Pod(Pod),
    ReplicaSet(ReplicaSet),
    Deployment(Deployment),
    Job(Job),
    DaemonSet(DaemonSet),
    StatefulSet(StatefulSet),
    Node(Node),
    Namespace(Namespace),
    ConfigMap(ConfigMap),
    Event(Event),
}

macro_rules! each_kind {
    ($obj:expr, $o:ident => $body:expr) => {
        match $obj {
            Object::Pod($o) => $body,
            Object::ReplicaSet($o) => $body,
            Object::Deployment($o) => $body,
            Object::Job($o) => $body,
            Object::DaemonSet($o) => $body,
            Object::StatefulSet($o) => $body,
            Object::Node($o) => $body,
            Object::Namespace($o) => $body,
            Object::ConfigMap($o) => $body,
            Object::Event($o) => $body,
        }
    };
}

/// A problem with one field of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: FieldPath,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl FieldError {
    pub fn new(path: FieldPath, message: impl Into<String>) -> Self {
        Self { path, message: message.into() }
    }
}

/// The result of decoding: the object, and the fields it did not know.
#[derive(Debug)]
pub struct Decoded {
    pub object: Object,
    pub unknown_fields: Vec<FieldPath>,
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Pod(_) => Kind::Pod,
            Object::ReplicaSet(_) => Kind::ReplicaSet,
            Object::Deployment(_) => Kind::Deployment,
            Object::Job(_) => Kind::Job,
            Object::DaemonSet(_) => Kind::DaemonSet,
            Object::StatefulSet(_) => Kind::StatefulSet,
            Object::Node(_) => Kind::Node,
            Object::Namespace(_) => Kind::Namespace,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Event(_) => Kind::Event,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        each_kind!(self, o => &o.metadata)
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        each_kind!(self, o => &mut o.metadata)
    }

    pub fn to_value(&self) -> Value {
        each_kind!(self, o => serde_json::to_value(o).expect("API types serialize"))
    }

    pub fn to_json(&self) -> String {
        each_kind!(self, o => serde_json::to_string(o).expect("API types serialize"))
    }

    /// Decodes a JSON object of a served kind. Type errors name their field;
    /// fields the types do not know are returned, never dropped silently.
    pub fn from_value(value: Value) -> Result<Decoded, FieldError> {
        let kind_text = match value.get("kind") {
            Some(Value::String(k)) if !k.is_empty() => k.clone(),
            Some(other) if !other.is_null() => {
                return Err(FieldError::new(FieldPath::field("kind"), format!("must be a string, not {other}")));
            }
            _ => return Err(FieldError::new(FieldPath::field("kind"), "required")),
        };
        let kind = match Kind::parse(&kind_text) {
            Ok(k) if k.name() == kind_text => k,
            Ok(k) => return Err(FieldError::new(FieldPath::field("kind"), format!("{kind_text:?} must be written {:?}", k.name()))),
            Err(e) => return Err(FieldError::new(FieldPath::field("kind"), e.to_string())),
        };
        match value.get("apiVersion") {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) if v == kind.api_version() || v.is_empty() => {}
            Some(other) => {
                return Err(FieldError::new(
                    FieldPath::field("apiVersion"),
                    format!("{other} is not served for {kind}: use {:?}", kind.api_version()),
                ));
            }
        }
        let mut unknown = Vec::new();
        let object = match kind {
            Kind::Pod => Object::Pod(decode(value, &mut unknown)?),
            Kind::ReplicaSet => Object::ReplicaSet(decode(value, &mut unknown)?),
            Kind::Deployment => Object::Deployment(decode(value, &mut unknown)?),
            Kind::Job => Object::Job(decode(value, &mut unknown)?),
            Kind::DaemonSet => Object::DaemonSet(decode(value, &mut unknown)?),
            Kind::StatefulSet => Object::StatefulSet(decode(value, &mut unknown)?),
            Kind::Node => Object::Node(decode(value, &mut unknown)?),
            Kind::Namespace => Object::Namespace(decode(value, &mut unknown)?),
            Kind::ConfigMap => Object::ConfigMap(decode(value, &mut unknown)?),
            Kind::Event => Object::Event(decode(value, &mut unknown)?),
        };
        Ok(Decoded { object, unknown_fields: unknown })
    }
}

fn decode<T: DeserializeOwned + Serialize>(value: Value, unknown: &mut Vec<FieldPath>) -> Result<T, FieldError> {
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(value, &mut track);
    let result = serde_ignored::deserialize(tracked, |path| unknown.push(ignored_path(&path)));
    result.map_err(|e| {
        let path = tracked_path(&track.path());
        FieldError::new(path, clean_serde_message(&e.to_string()))
    })
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> FieldPath {
    fn walk(p: &serde_ignored::Path<'_>, out: &mut Vec<Segment>) {
        match p {
            serde_ignored::Path::Root => {}
            serde_ignored::Path::Seq { parent, index } => {
                walk(parent, out);
                out.push(Segment::Index(*index));
            }
            serde_ignored::Path::Map { parent, key } => {
                walk(parent, out);
                out.push(Segment::Key(key.clone()));
            }
            serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => walk(parent, out),
        }
    }
    let mut segments = Vec::new();
    walk(path, &mut segments);
    FieldPath(segments)
}

fn tracked_path(path: &serde_path_to_error::Path) -> FieldPath {
    FieldPath(
        path.iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
                serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => None,
            })
            .collect(),
    )
}

/// serde's messages mention Rust types; users know YAML.
fn clean_serde_message(message: &str) -> String {
    message
        .replace("i32", "integer")
        .replace("i64", "integer")
        .replace("u64", "non-negative integer")
        .replace("a string", "text")
        .replace("struct ", "")
        .replace("data did not match any variant of untagged enum IntOrString", "expected an integer or text")
        .replace("data did not match any variant of untagged enum Raw", "expected a quantity such as 500m or 1Gi")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_resolve_like_kubectl() {
        for (text, kind) in [("Pod", Kind::Pod), ("pods", Kind::Pod), ("po", Kind::Pod), ("deploy", Kind::Deployment),
            ("deployment.apps", Kind::Deployment), ("sts", Kind::StatefulSet), ("jobs", Kind::Job), ("cm", Kind::ConfigMap)]
        {
            assert_eq!(Kind::parse(text), Ok(kind), "{text}");
        }
        assert_eq!(Kind::parse("services"), Err(KindError::Unsupported("Service".into())));
        assert!(Kind::parse("CronJob").unwrap_err().to_string().starts_with("kind CronJob is not supported by Flotilla"));
        assert!(matches!(Kind::parse("Wibble"), Err(KindError::Unknown(_))));
    }

    #[test]
    fn decoding_reports_unknown_fields_and_typed_errors_by_path() {
        let v: Value = serde_json::from_str(
            r#"{"kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i","securityContext":{}}],"hostIPC":true}}"#,
        )
        .unwrap();
        let d = Object::from_value(v).unwrap();
        let paths: Vec<String> = d.unknown_fields.iter().map(|p| p.to_string()).collect();
        assert_eq!(paths, vec!["spec.containers[0].securityContext", "spec.hostIPC"]);

        let v: Value = serde_json::from_str(r#"{"kind":"Deployment","spec":{"replicas":"three"}}"#).unwrap();
        let e = Object::from_value(v).unwrap_err();
        assert_eq!(e.path.to_string(), "spec.replicas");
        assert!(e.message.contains("expected integer"), "{}", e.message);

        let v: Value = serde_json::from_str(r#"{"kind":"Service"}"#).unwrap();
        assert!(Object::from_value(v).unwrap_err().to_string().starts_with("kind: kind Service is not supported"));
        let v: Value = serde_json::from_str(r#"{"kind":"Job","apiVersion":"apps/v1"}"#).unwrap();
        assert_eq!(Object::from_value(v).unwrap_err().to_string(), r#"apiVersion: "apps/v1" is not served for Job: use "batch/v1""#);
    }
}

/// The kinds as the store must know them (`flotilla_store::KindRules`):
/// Pods are bound to nodes, and each new Pod gets a fencing token.
#[derive(Debug)]
pub struct ApiKinds;

impl flotilla_store::KindRules for ApiKinds {
    fn bound_to_nodes(&self, kind: &str) -> bool {
        kind == Kind::Pod.name()
    }

    fn carries_fencing_token(&self, kind: &str) -> bool {
        kind == Kind::Pod.name()
    }

    fn fencing_token_annotation(&self) -> &'static str {
        crate::wellknown::FENCING_TOKEN_ANNOTATION
    }
}
