//! Field paths, printed as users read them (`spec.containers[0].image`)
//! and as JSON pointers (`/spec/containers/0/image`) for finding lines.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// A path of dot-separated keys, e.g. `spec.template`.
    pub fn field(dotted: &str) -> Self {
        Self(dotted.split('.').map(|k| Segment::Key(k.to_string())).collect())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut s = self.0.clone();
        s.push(Segment::Key(key.to_string()));
        Self(s)
    }

    /// Appends dot-separated keys.
    pub fn keys(&self, dotted: &str) -> Self {
        let mut s = self.clone();
        for k in dotted.split('.') {
            s = s.key(k);
        }
        s
    }

    pub fn index(&self, i: usize) -> Self {
        let mut s = self.0.clone();
        s.push(Segment::Index(i));
        Self(s)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The JSON pointer of this path (RFC 6901).
    pub fn pointer(&self) -> String {
        let mut out = String::new();
        for s in &self.0 {
            out.push('/');
            match s {
                Segment::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
                Segment::Index(i) => out.push_str(&i.to_string()),
            }
        }
        out
    }

    /// This path and each of its ancestors, longest first: where a field has
    /// no line of its own (it is missing), its parent's line is the place.
    pub fn ancestors(&self) -> impl Iterator<Item = FieldPath> + '_ {
        (0..=self.0.len()).rev().map(|n| FieldPath(self.0[..n].to_vec()))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_for_people_and_for_pointers() {
        let p = FieldPath::field("spec.containers").index(0).key("image");
        assert_eq!(p.to_string(), "spec.containers[0].image");
        assert_eq!(p.pointer(), "/spec/containers/0/image");
        assert_eq!(FieldPath::field("metadata.labels").key("a/b").pointer(), "/metadata/labels/a~1b");
        let chain: Vec<String> = p.ancestors().map(|a| a.to_string()).collect();
        assert_eq!(chain, vec!["spec.containers[0].image", "spec.containers[0]", "spec.containers", "spec", ""]);
    }
}
