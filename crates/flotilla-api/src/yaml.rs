//! Reads YAML (JSON is YAML too) into JSON values, remembering the line of
//! every field so that errors can name it.
//!
//! saphyr is used because it is maintained (serde_yaml is archived) and its
//! marked nodes keep positions; it resolves anchors with a bound on their
//! expansion and refuses duplicate keys, as YAML requires.

use std::collections::BTreeMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

/// Nesting deeper than this is refused: no manifest needs it, and it
/// bounds the recursion below.
const MAX_DEPTH: usize = 64;
/// Largest manifest text accepted, far above any real one.
pub const MAX_MANIFEST_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub value: Value,
    /// JSON pointer of each field and item → the 1-based line it is on.
    pub lines: BTreeMap<String, usize>,
    pub start_line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct YamlError {
    pub line: usize,
    pub message: String,
}

/// Every non-empty document in `text`, in order.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, YamlError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(YamlError { line: 1, message: format!("manifest is over {MAX_MANIFEST_BYTES} bytes") });
    }
    let docs = MarkedYaml::load_from_str(text)
        .map_err(|e| YamlError { line: e.marker().line(), message: e.info().to_string() })?;
    let mut out = Vec::new();
    for doc in docs {
        if matches!(doc.data, YamlData::Value(Scalar::Null)) {
            continue;
        }
        let mut lines = BTreeMap::new();
        let start_line = doc.span.start.line();
        let value = convert(&doc, String::new(), &mut lines, 0)?;
        out.push(Document { value, lines, start_line });
    }
    Ok(out)
}

fn convert(node: &MarkedYaml<'_>, pointer: String, lines: &mut BTreeMap<String, usize>, depth: usize) -> Result<Value, YamlError> {
    let line = node.span.start.line();
    if depth > MAX_DEPTH {
        return Err(YamlError { line, message: format!("nested deeper than {MAX_DEPTH} levels") });
    }
    lines.entry(pointer.clone()).or_insert(line);
    Ok(match &node.data {
        YamlData::Value(s) => scalar(s),
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        YamlData::Tagged(_, inner) => convert(inner, pointer, lines, depth + 1)?,
        YamlData::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(convert(item, format!("{pointer}/{i}"), lines, depth + 1)?);
            }
            Value::Array(out)
        }
        YamlData::Mapping(entries) => {
            let mut out = Map::new();
            for (k, v) in entries {
                let key = match &k.data {
                    YamlData::Value(Scalar::String(s)) => s.to_string(),
                    YamlData::Value(other) => match scalar(other) {
                        Value::String(s) => s,
                        v => v.to_string(),
                    },
                    YamlData::Representation(s, _, _) => s.to_string(),
                    _ => {
                        return Err(YamlError {
                            line: k.span.start.line(),
                            message: "mapping keys must be plain values".into(),
                        });
                    }
                };
                let child = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
                lines.insert(child.clone(), k.span.start.line());
                let value = convert(v, child, lines, depth + 1)?;
                if out.insert(key.clone(), value).is_some() {
                    return Err(YamlError { line: k.span.start.line(), message: format!("duplicate key {key:?}") });
                }
            }
            Value::Object(out)
        }
        YamlData::Alias(_) | YamlData::BadValue => {
            return Err(YamlError { line, message: "unresolvable value (an alias to an unknown anchor?)".into() });
        }
    })
}

fn scalar(s: &Scalar<'_>) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::from(*i),
        Scalar::FloatingPoint(f) => Number::from_f64(f.into_inner()).map_or(Value::Null, Value::Number),
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_lines() {
        let text = "a: 1\nb: '1'\nc: true\nd: ~\ne:\n- x: 1.5\n  y: |\n    two\n    lines\nf: &anchor\n  k: v\ng: *anchor\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 1);
        let v = &docs[0].value;
        assert_eq!(v["a"], 1);
        assert_eq!(v["b"], "1", "quoted scalars stay strings");
        assert_eq!(v["c"], true);
        assert_eq!(v["d"], Value::Null);
        assert_eq!(v["e"][0]["x"], 1.5);
        assert_eq!(v["e"][0]["y"], "two\nlines\n");
        assert_eq!(v["g"]["k"], "v", "aliases resolve");
        let l = &docs[0].lines;
        assert_eq!(l["/a"], 1);
        assert_eq!(l["/e"], 5);
        assert_eq!(l["/e/0"], 6);
        assert_eq!(l["/e/0/y"], 7);
    }

    #[test]
    fn documents_errors_and_limits() {
        let docs = parse_documents("---\nkind: A\n---\n# only a comment\n---\nkind: B\n").unwrap();
        assert_eq!(docs.iter().map(|d| (d.value["kind"].as_str().unwrap(), d.start_line)).collect::<Vec<_>>(), vec![("A", 2), ("B", 6)]);
        let e = parse_documents("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse_documents("a:\n  - [\n").unwrap_err();
        assert!(e.line >= 2, "{e}");
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse_documents(&deep).unwrap_err().message.contains("nested deeper"));
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
        assert!(parse_documents(bomb).is_err(), "alias expansion is bounded");
    }
}
