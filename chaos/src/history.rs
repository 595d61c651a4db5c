//! Histories in Jepsen's form: one JSON object per line, each an `invoke`
//! when a client starts an operation and then exactly one of `ok` (it took
//! effect), `fail` (it certainly did not) or `info` (unknown: a timeout, a
//! lost connection) when it ends. A process runs one operation at a time.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// What an operation does to one register (a key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    /// `value` is what the read returned (null: no such key) on `ok`.
    Read,
    /// `value` is what is written.
    Write,
    /// `value` is `[expected, new]`.
    Cas,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    pub process: u64,
    /// Nanoseconds since the run started.
    pub time: u64,
    pub f: Function,
    pub key: String,
    #[serde(default)]
    pub value: Value,
    /// Why an operation failed or is unknown, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Writes entries as JSON lines.
pub fn write_jsonl(out: &mut impl Write, entries: &[Entry]) -> std::io::Result<()> {
    for e in entries {
        serde_json::to_writer(&mut *out, e)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads JSON lines, naming the line of the first bad one.
pub fn read_jsonl(input: impl BufRead) -> Result<Vec<Entry>, HistoryError> {
    let mut entries = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str(&line).map_err(|e| HistoryError::Line { line: i + 1, message: e.to_string() })?;
        entries.push(entry);
    }
    Ok(entries)
}

/// One operation from its invocation to its completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    pub process: u64,
    pub f: Function,
    pub key: String,
    /// The invocation's value (a write's or a cas's), or the read's result.
    pub value: Value,
    pub invoked_ns: u64,
    /// `None` when the outcome is unknown (`info`, or no completion at
    /// all): the operation may take effect at any time after its
    /// invocation, or never.
    pub completed_ns: Option<u64>,
}

/// Pairs every invocation with its process's next completion, leaving out
/// operations that failed (they took no effect).
pub fn operations(entries: &[Entry]) -> Result<Vec<Operation>, HistoryError> {
    let mut open: BTreeMap<u64, (usize, &Entry)> = BTreeMap::new();
    let mut ops: Vec<Option<Operation>> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let line = i + 1;
        match e.entry_type {
            EntryType::Invoke => {
                if open.contains_key(&e.process) {
                    return Err(HistoryError::Line {
                        line,
                        message: format!("process {} invoked an operation before its last one ended", e.process),
                    });
                }
                open.insert(e.process, (ops.len(), e));
                ops.push(Some(Operation {
                    process: e.process,
                    f: e.f,
                    key: e.key.clone(),
                    value: e.value.clone(),
                    invoked_ns: e.time,
                    completed_ns: None,
                }));
            }
            EntryType::Ok | EntryType::Fail | EntryType::Info => {
                let Some((index, invoked)) = open.remove(&e.process) else {
                    return Err(HistoryError::Line { line, message: format!("process {} completed an operation it never invoked", e.process) });
                };
                if invoked.f != e.f || invoked.key != e.key {
                    return Err(HistoryError::Line { line, message: format!("process {} completed another operation than it invoked", e.process) });
                }
                match e.entry_type {
                    EntryType::Fail => ops[index] = None,
                    EntryType::Info => {}
                    _ => {
                        let op = ops[index].as_mut().expect("an open operation");
                        op.completed_ns = Some(e.time.max(op.invoked_ns));
                        if e.f == Function::Read {
                            op.value = e.value.clone();
                        }
                    }
                }
            }
        }
    }
    Ok(ops.into_iter().flatten().collect())
}
