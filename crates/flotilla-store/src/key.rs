use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest name Kubernetes accepts for most objects (a DNS subdomain).
const MAX_NAME_BYTES: usize = 253;
/// Kinds are short CamelCase words; anything longer is a client bug.
const MAX_KIND_BYTES: usize = 63;

/// Where an object lives: its kind, its namespace (empty for cluster-scoped
/// kinds such as Node) and its name. Ordered so that one kind, and one
/// namespace of one kind, are contiguous ranges.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{field}: required")]
    Empty { field: &'static str },
    #[error("{field}: longer than {limit} bytes")]
    TooLong { field: &'static str, limit: usize },
    #[error("{field}: {value:?} may hold only lower-case letters, digits, '-' and '.'")]
    BadCharacter { field: &'static str, value: String },
    #[error("kind: {value:?} must be a CamelCase word of ASCII letters and digits")]
    BadKind { value: String },
}

impl ObjectKey {
    pub fn new(kind: impl Into<String>, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { kind: kind.into(), namespace: namespace.into(), name: name.into() }
    }

    /// Checks the key against the rules the API promises, so that a key
    /// accepted once can always be encoded, stored and listed again.
    pub fn validate(&self) -> Result<(), KeyError> {
        if self.kind.is_empty() {
            return Err(KeyError::Empty { field: "kind" });
        }
        if self.kind.len() > MAX_KIND_BYTES {
            return Err(KeyError::TooLong { field: "kind", limit: MAX_KIND_BYTES });
        }
        if !self.kind.starts_with(|c: char| c.is_ascii_uppercase())
            || !self.kind.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(KeyError::BadKind { value: self.kind.clone() });
        }
        if self.name.is_empty() {
            return Err(KeyError::Empty { field: "metadata.name" });
        }
        check_dns_name("metadata.name", &self.name)?;
        if !self.namespace.is_empty() {
            check_dns_name("metadata.namespace", &self.namespace)?;
        }
        Ok(())
    }

    /// The byte encoding used as the storage key: `kind/namespace/name`.
    /// Kind and names never contain '/', so the encoding is unambiguous and
    /// sorts like the struct.
    pub fn encode(&self) -> Vec<u8> {
        format!("{}/{}/{}", self.kind, self.namespace, self.name).into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(3, '/');
        Some(Self::new(parts.next()?, parts.next()?, parts.next()?))
    }
}

fn check_dns_name(field: &'static str, value: &str) -> Result<(), KeyError> {
    if value.len() > MAX_NAME_BYTES {
        return Err(KeyError::TooLong { field, limit: MAX_NAME_BYTES });
    }
    let ok = value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok { Ok(()) } else { Err(KeyError::BadCharacter { field, value: value.to_string() }) }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_sorts_like_the_key() {
        let a = ObjectKey::new("Pod", "default", "a");
        let b = ObjectKey::new("Pod", "default", "b.c");
        let n = ObjectKey::new("Node", "", "peer-1");
        for k in [&a, &b, &n] {
            assert_eq!(ObjectKey::decode(&k.encode()).as_ref(), Some(k));
        }
        assert!(a.encode() < b.encode());
        assert!(n.encode() < a.encode());
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (ObjectKey::new("", "default", "a"), "kind: required"),
            (ObjectKey::new("pod", "default", "a"), "kind: \"pod\" must be a CamelCase word of ASCII letters and digits"),
            (ObjectKey::new("Pod", "default", ""), "metadata.name: required"),
            (ObjectKey::new("Pod", "default", "A_b"), "metadata.name: \"A_b\" may hold only lower-case letters, digits, '-' and '.'"),
            (ObjectKey::new("Pod", "x/y", "a"), "metadata.namespace: \"x/y\" may hold only lower-case letters, digits, '-' and '.'"),
            (ObjectKey::new("Pod", "default", "a".repeat(254)), "metadata.name: longer than 253 bytes"),
        ];
        for (key, want) in cases {
            assert_eq!(key.validate().unwrap_err().to_string(), want);
        }
        assert!(ObjectKey::new("ConfigMap", "kube-1", "x.y-z").validate().is_ok());
    }
}
