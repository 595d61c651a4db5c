//! Manifests: multi-document Kubernetes YAML (or JSON) into defaulted,
//! validated objects, every problem named by file, line and field.

use std::fmt;

use serde_json::Value;

use crate::defaults::apply_defaults;
use crate::object::{FieldError, Object};
use crate::path::FieldPath;
use crate::validate::validate;
use crate::yaml::{self, Document};

/// What to do with fields Flotilla does not implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ValidateMode {
    /// Refuse the manifest, naming each field.
    #[default]
    Strict,
    /// Accept it and warn about each field, which is then dropped.
    Warn,
}

/// One problem in a manifest, located as precisely as the source allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub source: String,
    pub line: Option<usize>,
    pub path: FieldPath,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

/// An accepted object and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestObject {
    pub object: Object,
    pub source: String,
    pub line: usize,
}

#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<ManifestObject>,
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

/// Parses every document of `text`. `source` names the file in messages;
/// `namespace` is the default for objects that name none. Documents with
/// errors are left out of `objects`; the caller decides whether to apply
/// the rest (kubectl applies none when any fails validation, and so do we
/// in the CLI).
pub fn parse(text: &str, source: &str, namespace: &str, mode: ValidateMode) -> Parsed {
    let mut parsed = Parsed::default();
    let documents = match yaml::parse_documents(text) {
        Ok(d) => d,
        Err(e) => {
            parsed.errors.push(Problem { source: source.into(), line: Some(e.line), path: FieldPath::root(), message: e.message });
            return parsed;
        }
    };
    for doc in documents {
        let items = expand_list(doc);
        for (doc, prefix) in items {
            accept(&mut parsed, doc, &prefix, source, namespace, mode);
        }
    }
    parsed
}

/// A `kind: List` document holds its objects under `items`, as kubectl's
/// own output does.
fn expand_list(doc: Document) -> Vec<(Document, FieldPath)> {
    let is_list = doc.value.get("kind").and_then(Value::as_str) == Some("List");
    let Some(Value::Array(items)) = doc.value.get("items").filter(|_| is_list).cloned() else {
        return vec![(doc, FieldPath::root())];
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let prefix = FieldPath::root().key("items").index(i);
            (Document { value: item, lines: doc.lines.clone(), start_line: doc.start_line }, prefix)
        })
        .collect()
}

fn accept(parsed: &mut Parsed, doc: Document, prefix: &FieldPath, source: &str, namespace: &str, mode: ValidateMode) {
    let locate = |path: &FieldPath| -> Problem {
        let full = FieldPath(prefix.0.iter().chain(path.0.iter()).cloned().collect());
        let line = full.ancestors().find_map(|p| doc.lines.get(&p.pointer()).copied()).or(Some(doc.start_line));
        Problem { source: source.into(), line, path: path.clone(), message: String::new() }
    };
    let problem = |e: FieldError| Problem { message: e.message.clone(), ..locate(&e.path) };
    if !doc.value.is_object() {
        parsed.errors.push(Problem { message: "a manifest document must be a mapping".into(), ..locate(&FieldPath::root()) });
        return;
    }
    let decoded = match Object::from_value(doc.value.clone()) {
        Ok(d) => d,
        Err(e) => {
            parsed.errors.push(problem(e));
            return;
        }
    };
    let mut failed = false;
    for path in decoded.unknown_fields {
        let p = Problem { message: "field not supported by Flotilla".into(), ..locate(&path) };
        match mode {
            ValidateMode::Strict => {
                parsed.errors.push(Problem { message: format!("{} (--validate=warn drops it)", p.message), ..p });
                failed = true;
            }
            ValidateMode::Warn => parsed.warnings.push(Problem { message: format!("{}; ignored", p.message), ..p }),
        }
    }
    let mut object = decoded.object;
    apply_defaults(&mut object, namespace);
    for e in validate(&object) {
        parsed.errors.push(problem(e));
        failed = true;
    }
    if !failed {
        parsed.objects.push(ManifestObject { object, source: source.into(), line: doc.start_line });
    }
}
