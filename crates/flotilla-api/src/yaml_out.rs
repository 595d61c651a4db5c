//! Prints JSON values as YAML the way kubectl does: block style, sequences
//! flush with their key, strings quoted only where YAML would misread them.

use serde_json::Value;

/// One YAML document for `value`, ending in a newline.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => mapping(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => sequence(&mut out, a, 0),
        scalar => {
            out.push_str(&inline(scalar, 0));
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn mapping(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    for (i, (k, v)) in m.iter().enumerate() {
        // The first key of a mapping inside a sequence item follows "- ".
        if i > 0 || !out.ends_with("- ") {
            pad(out, indent);
        }
        out.push_str(&string(k, indent));
        out.push(':');
        value_after_key(out, v, indent);
    }
}

fn value_after_key(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            mapping(out, m, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            sequence(out, a, indent);
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar, indent + 2));
            out.push('\n');
        }
    }
}

fn sequence(out: &mut String, a: &[Value], indent: usize) {
    for item in a {
        pad(out, indent);
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => mapping(out, m, indent + 2),
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                sequence(out, inner, indent + 2);
            }
            scalar => {
                out.push_str(&inline(scalar, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn inline(v: &Value, indent: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s, indent),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// Words YAML 1.1 readers (and so many tools) take for booleans or null.
const RESERVED: &[&str] = &["true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"];

fn needs_quotes(s: &str) -> bool {
    if s.is_empty() || s.trim() != s {
        return true;
    }
    // Numbers, and anything a YAML 1.1 reader could take for a number or a
    // timestamp (`2026-11-24T00:08:17Z`, `1_000`, `+1`), stay quoted.
    if RESERVED.contains(&s.to_ascii_lowercase().as_str()) || s.parse::<f64>().is_ok() || s.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '.') {
        return true;
    }
    let first = s.chars().next().expect("not empty");
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        // "-x" and "?x" are fine plain, but a lone indicator or "- " is not.
        let rest_ok = matches!(first, '-' | '?' | ':') && s.len() > 1 && !s[1..].starts_with(' ');
        if !rest_ok {
            return true;
        }
    }
    s.contains(": ") || s.contains(" #") || s.ends_with(':') || s.chars().any(|c| c.is_control())
}

fn string(s: &str, indent: usize) -> String {
    if !needs_quotes(s) {
        return s.to_string();
    }
    // Multi-line text reads best as a literal block, as kubectl prints it.
    let block_ok = s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && !s.chars().any(|c| c.is_control() && c != '\n')
        && s.lines().all(|l| l.trim_end() == l);
    if block_ok {
        let (chomp, body) = match s.strip_suffix('\n') {
            Some(b) if !b.ends_with('\n') => ("|", b),
            Some(_) => ("|+", s.trim_end_matches('\n')),
            None => ("|-", s),
        };
        let mut out = chomp.to_string();
        let trailing_newlines = if chomp == "|+" { s.len() - body.len() } else { 0 };
        for line in body.split('\n') {
            out.push('\n');
            if !line.is_empty() {
                out.extend(std::iter::repeat_n(' ', indent));
                out.push_str(line);
            }
        }
        for _ in 1..trailing_newlines {
            out.push('\n');
        }
        return out;
    }
    serde_json::to_string(s).expect("strings serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_kubectl() {
        let v: Value = serde_json::from_str(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{}},"spec":{"containers":[{"name":"c","command":["sh","-c","echo \"hi\": there"],"ports":[{"containerPort":80}]}],"enabled":"true","n":"007"}}"#,
        )
        .unwrap();
        let want = "apiVersion: v1
kind: Pod
metadata:
  labels: {}
  name: p
spec:
  containers:
  - command:
    - sh
    - -c
    - \"echo \\\"hi\\\": there\"
    name: c
    ports:
    - containerPort: 80
  enabled: \"true\"
  \"n\": \"007\"
";
        assert_eq!(to_yaml(&v), want);
    }

    #[test]
    fn multi_line_strings_become_blocks() {
        let v = serde_json::json!({"data": {"a": "x\ny\n", "b": "x\ny"}});
        assert_eq!(to_yaml(&v), "data:\n  a: |\n    x\n    y\n  b: |-\n    x\n    y\n");
    }
}
