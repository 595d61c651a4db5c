//! Linearizability of registers, one key at a time (a history of many
//! independent keys is linearizable if and only if each key's is).
//!
//! The search is Wing and Gong's, with Lowe's memoisation as Porcupine
//! does it: walk the invocations and completions in time order; any
//! operation invoked before the earliest pending completion may be the next
//! to take effect; try each, apply it to the register, and backtrack when a
//! completion is reached whose operation could not be placed. A set of
//! placed operations with the register's value, once explored, is never
//! explored again. An operation with an unknown outcome may take effect at
//! any time after its invocation, or never.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;
use serde_json::Value;

use crate::history::{Entry, Function, HistoryError, Operation, operations};

/// Search steps per key before the checker gives up and says `Unknown`.
pub const DEFAULT_STEP_BUDGET: u64 = 5_000_000;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Valid,
    Invalid,
    /// The search ran out of budget on some key.
    Unknown,
}

/// Why a key's history is not linearizable: after the longest order found
/// for the operations before it, this completed operation could not take
/// effect on the register as it then was.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CounterExample {
    pub key: String,
    /// Operations placed in that longest order.
    pub linearized: usize,
    /// The register then (null: no value).
    pub register: Value,
    pub process: u64,
    pub f: Function,
    pub value: Value,
    pub invoked_ns: u64,
    pub completed_ns: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckResult {
    pub valid: Verdict,
    pub keys: usize,
    pub operations: usize,
    /// Keys whose search ran out of budget.
    pub unknown_keys: Vec<String>,
    pub counter_example: Option<CounterExample>,
}

/// Checks every key of a history of reads, writes and compare-and-sets.
pub fn check_registers(entries: &[Entry], step_budget: u64) -> Result<CheckResult, HistoryError> {
    let mut by_key: BTreeMap<String, Vec<Operation>> = BTreeMap::new();
    for op in operations(entries)? {
        // A read whose answer never came changed nothing and showed nothing.
        if op.f == Function::Read && op.completed_ns.is_none() {
            continue;
        }
        by_key.entry(op.key.clone()).or_default().push(op);
    }
    for ops in by_key.values_mut() {
        drop_unobserved_unknowns(ops);
    }
    let mut result = CheckResult {
        valid: Verdict::Valid,
        keys: by_key.len(),
        operations: by_key.values().map(Vec::len).sum(),
        unknown_keys: Vec::new(),
        counter_example: None,
    };
    for (key, ops) in &by_key {
        match check_key(key, ops, step_budget) {
            KeyOutcome::Linearizable => {}
            KeyOutcome::OutOfBudget => {
                result.unknown_keys.push(key.clone());
                if result.valid == Verdict::Valid {
                    result.valid = Verdict::Unknown;
                }
            }
            KeyOutcome::NotLinearizable(example) => {
                result.valid = Verdict::Invalid;
                result.counter_example = Some(*example);
                return Ok(result);
            }
        }
    }
    Ok(result)
}

/// Leaves out operations of unknown outcome whose value nothing ever saw.
///
/// An unknown write (or compare-and-set) may have taken effect or not. If
/// no read returned its value and no successful compare-and-set expected
/// it, then until the next change nothing that succeeded could have been
/// ordered after it, so "it never happened" explains the history exactly
/// as well. Dropping such operations is sound and complete, and it keeps
/// the search from trying every subset of a fault's timed-out writes.
fn drop_unobserved_unknowns(ops: &mut Vec<Operation>) {
    let completed = || ops.iter().filter(|o| o.completed_ns.is_some());
    let mut observed: BTreeSet<Register> = completed().filter(|o| o.f == Function::Read).map(|o| text(&o.value)).collect();
    observed.extend(completed().filter(|o| o.f == Function::Cas).filter_map(|o| o.value.get(0)).map(text));
    ops.retain(|o| {
        let written = match o.f {
            Function::Read => return true,
            Function::Write => text(&o.value),
            Function::Cas => o.value.get(1).and_then(text),
        };
        o.completed_ns.is_some() || observed.contains(&written)
    });
}

enum KeyOutcome {
    Linearizable,
    NotLinearizable(Box<CounterExample>),
    OutOfBudget,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    // Invocations sort before completions at the same instant: the two
    // operations then count as concurrent.
    Call(usize),
    Return(usize),
}

/// The register: the JSON text of its value, or `None` when unset.
type Register = Option<String>;

fn text(value: &Value) -> Register {
    (!value.is_null()).then(|| value.to_string())
}

/// The register after `op`, if `op` can take effect on `register`.
fn step(register: &Register, op: &Operation) -> Option<Register> {
    match op.f {
        Function::Write => Some(text(&op.value)),
        Function::Read => (*register == text(&op.value)).then(|| register.clone()),
        Function::Cas => {
            let [expected, new] = op.value.as_array()?.as_slice() else { return None };
            (*register == text(expected)).then(|| text(new))
        }
    }
}

fn event_op(event: Event) -> usize {
    match event {
        Event::Call(i) | Event::Return(i) => i,
    }
}

/// Two independent 64-bit hashes of a configuration: a collision would
/// wrongly skip an unexplored one, so it must be vanishingly unlikely.
fn digest(placed: &[u64], register: &Register) -> (u64, u64) {
    use std::hash::{Hash, Hasher};
    let mut first = std::collections::hash_map::DefaultHasher::new();
    let mut second = std::collections::hash_map::DefaultHasher::new();
    0xf1u8.hash(&mut second);
    for h in [&mut first, &mut second] {
        placed.hash(h);
        register.hash(h);
    }
    (first.finish(), second.finish())
}

fn check_key(key: &str, ops: &[Operation], step_budget: u64) -> KeyOutcome {
    let mut events: Vec<(u64, Event)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoked_ns, Event::Call(i)));
        if let Some(done) = op.completed_ns {
            events.push((done, Event::Return(i)));
        }
    }
    events.sort();
    // Where each operation's invocation sits: unplacing it may move the
    // start of the scan back there.
    let mut call_at = vec![0usize; ops.len()];
    for (position, (_, event)) in events.iter().enumerate() {
        if let Event::Call(i) = event {
            call_at[*i] = position;
        }
    }
    // Every event before this one belongs to a placed operation, so the
    // scan for candidates starts here rather than at the beginning.
    let mut scan_from = 0usize;
    let must_place = ops.iter().filter(|o| o.completed_ns.is_some()).count();

    let words = ops.len().div_ceil(64);
    let mut placed = vec![0u64; words];
    let is_placed = |placed: &[u64], i: usize| placed[i / 64] & (1 << (i % 64)) != 0;
    let mut register: Register = None;
    let mut placed_completed = 0usize;
    // (operation, register before it, its position among the candidates)
    let mut stack: Vec<(usize, Register, usize)> = Vec::new();
    // Explored configurations, by a 128-bit digest of the placed set and
    // the register: full keys would take the placed set's size per step.
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut next_candidate = 0usize;
    let mut deepest: Option<(usize, Register, usize)> = None;
    let mut steps = 0u64;

    loop {
        if placed_completed == must_place {
            return KeyOutcome::Linearizable;
        }
        steps += 1;
        if steps > step_budget {
            return KeyOutcome::OutOfBudget;
        }
        // Operations that may take effect next, and the completion that
        // bounds them.
        let mut candidates = Vec::new();
        let mut blocking = None;
        while scan_from < events.len() && is_placed(&placed, event_op(events[scan_from].1)) {
            scan_from += 1;
        }
        for (_, event) in &events[scan_from..] {
            match *event {
                Event::Call(i) if !is_placed(&placed, i) => candidates.push(i),
                Event::Return(i) if !is_placed(&placed, i) => {
                    blocking = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let mut chosen = None;
        for (position, &i) in candidates.iter().enumerate().skip(next_candidate) {
            let Some(after) = step(&register, &ops[i]) else { continue };
            let mut with = placed.clone();
            with[i / 64] |= 1 << (i % 64);
            if seen.insert(digest(&with, &after)) {
                chosen = Some((position, i, after, with));
                break;
            }
        }
        match chosen {
            Some((position, i, after, with)) => {
                stack.push((i, std::mem::replace(&mut register, after), position));
                placed = with;
                if ops[i].completed_ns.is_some() {
                    placed_completed += 1;
                }
                next_candidate = 0;
            }
            None => {
                if deepest.as_ref().is_none_or(|(depth, _, _)| stack.len() > *depth)
                    && let Some(b) = blocking
                {
                    deepest = Some((stack.len(), register.clone(), b));
                }
                let Some((i, before, position)) = stack.pop() else {
                    let (linearized, register, b) = deepest.unwrap_or((0, None, 0));
                    let op = &ops[b];
                    return KeyOutcome::NotLinearizable(Box::new(CounterExample {
                        key: key.to_string(),
                        linearized,
                        register: register.map_or(Value::Null, |r| serde_json::from_str(&r).unwrap_or(Value::Null)),
                        process: op.process,
                        f: op.f,
                        value: op.value.clone(),
                        invoked_ns: op.invoked_ns,
                        completed_ns: op.completed_ns,
                    }));
                };
                placed[i / 64] &= !(1 << (i % 64));
                scan_from = scan_from.min(call_at[i]);
                if ops[i].completed_ns.is_some() {
                    placed_completed -= 1;
                }
                register = before;
                next_candidate = position + 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::history::EntryType;

    /// `(process, type, f, value, time)`, on key "k".
    type Row = (u64, EntryType, Function, Value, u64);

    fn history(rows: &[Row]) -> Vec<Entry> {
        rows.iter()
            .map(|(process, entry_type, f, value, time)| Entry {
                entry_type: *entry_type,
                process: *process,
                time: *time,
                f: *f,
                key: "k".into(),
                value: value.clone(),
                error: None,
            })
            .collect()
    }

    use EntryType::{Fail, Info, Invoke, Ok};
    use Function::{Cas, Read, Write};

    fn verdict(rows: &[Row]) -> CheckResult {
        check_registers(&history(rows), DEFAULT_STEP_BUDGET).unwrap()
    }

    #[test]
    fn histories_table() {
        let n = Value::Null;
        let cases: Vec<(&str, Vec<Row>, Verdict)> = vec![
            ("sequential write then read", vec![(1, Invoke, Write, json!(1), 1), (1, Ok, Write, json!(1), 2), (2, Invoke, Read, n.clone(), 3), (2, Ok, Read, json!(1), 4)], Verdict::Valid),
            ("a read of nothing before any write", vec![(1, Invoke, Read, n.clone(), 1), (1, Ok, Read, n.clone(), 2)], Verdict::Valid),
            ("a stale read after a write completed", vec![(1, Invoke, Write, json!(1), 1), (1, Ok, Write, json!(1), 2), (2, Invoke, Read, n.clone(), 3), (2, Ok, Read, n.clone(), 4)], Verdict::Invalid),
            ("a read concurrent with the write may see either", vec![(1, Invoke, Write, json!(1), 1), (2, Invoke, Read, n.clone(), 2), (2, Ok, Read, n.clone(), 3), (1, Ok, Write, json!(1), 4)], Verdict::Valid),
            ("a read of a value never written", vec![(1, Invoke, Write, json!(1), 1), (1, Ok, Write, json!(1), 2), (2, Invoke, Read, n.clone(), 3), (2, Ok, Read, json!(7), 4)], Verdict::Invalid),
            ("a failed write takes no effect", vec![(1, Invoke, Write, json!(1), 1), (1, Fail, Write, json!(1), 2), (2, Invoke, Read, n.clone(), 3), (2, Ok, Read, json!(1), 4)], Verdict::Invalid),
            ("an unknown write may take effect late", vec![(1, Invoke, Write, json!(1), 1), (1, Info, Write, json!(1), 2), (2, Invoke, Read, n.clone(), 3), (2, Ok, Read, n.clone(), 4), (2, Invoke, Read, n.clone(), 5), (2, Ok, Read, json!(1), 6)], Verdict::Valid),
            ("an unknown write may never take effect", vec![(1, Invoke, Write, json!(1), 1), (1, Info, Write, json!(1), 2), (2, Invoke, Read, n.clone(), 3), (2, Ok, Read, n.clone(), 4)], Verdict::Valid),
            ("an effect cannot be undone", vec![(1, Invoke, Write, json!(1), 1), (1, Info, Write, json!(1), 2), (2, Invoke, Read, n.clone(), 3), (2, Ok, Read, json!(1), 4), (2, Invoke, Read, n.clone(), 5), (2, Ok, Read, n.clone(), 6)], Verdict::Invalid),
            ("compare-and-set succeeds from the right value", vec![(1, Invoke, Write, json!(1), 1), (1, Ok, Write, json!(1), 2), (1, Invoke, Cas, json!([1, 2]), 3), (1, Ok, Cas, json!([1, 2]), 4), (2, Invoke, Read, n.clone(), 5), (2, Ok, Read, json!(2), 6)], Verdict::Valid),
            ("two compare-and-sets from one value cannot both succeed", vec![(1, Invoke, Write, json!(1), 1), (1, Ok, Write, json!(1), 2), (1, Invoke, Cas, json!([1, 2]), 3), (2, Invoke, Cas, json!([1, 3]), 3), (1, Ok, Cas, json!([1, 2]), 4), (2, Ok, Cas, json!([1, 3]), 4)], Verdict::Invalid),
        ];
        for (name, rows, want) in cases {
            let got = verdict(&rows);
            assert_eq!(got.valid, want, "{name}: {got:?}");
            assert_eq!(got.counter_example.is_some(), want == Verdict::Invalid, "{name}");
        }
    }

    #[test]
    fn the_counter_example_names_the_stale_read() {
        let got = verdict(&[
            (1, Invoke, Write, json!("a"), 1),
            (1, Ok, Write, json!("a"), 2),
            (1, Invoke, Write, json!("b"), 3),
            (1, Ok, Write, json!("b"), 4),
            (2, Invoke, Read, Value::Null, 5),
            (2, Ok, Read, json!("a"), 6),
        ]);
        let example = got.counter_example.expect("invalid");
        assert_eq!((example.process, example.f, example.value.clone()), (2, Read, json!("a")), "{example:?}");
        assert_eq!(example.register, json!("b"));
        assert_eq!(example.linearized, 2);
    }

    #[test]
    fn keys_are_independent_and_a_tiny_budget_says_unknown() {
        let mut entries = history(&[(1, Invoke, Write, json!(1), 1), (1, Ok, Write, json!(1), 2)]);
        let mut other = history(&[(2, Invoke, Read, Value::Null, 1), (2, Ok, Read, Value::Null, 2)]);
        other.iter_mut().for_each(|e| e.key = "j".into());
        entries.extend(other);
        let got = check_registers(&entries, DEFAULT_STEP_BUDGET).unwrap();
        assert_eq!((got.valid, got.keys, got.operations), (Verdict::Valid, 2, 2));
        // Many concurrent unknown writes: more orders than one step allows.
        let rows: Vec<_> = (0..8u64)
            .flat_map(|p| [(p, Invoke, Write, json!(p), 1), (p, Info, Write, json!(p), 2)])
            .chain([(9, Invoke, Read, Value::Null, 3), (9, Ok, Read, json!(3), 4)])
            .collect();
        let got = check_registers(&history(&rows), 1).unwrap();
        assert_eq!(got.valid, Verdict::Unknown);
        assert_eq!(got.unknown_keys, ["k"]);
    }

    #[test]
    fn a_long_valid_history_is_checked_quickly() {
        // 4 processes, 20,000 operations, writes overlapping reads.
        let mut rows = Vec::new();
        let mut t = 0;
        let mut last = Value::Null;
        for round in 0..5_000u64 {
            let v = json!(round);
            rows.push((1, Invoke, Write, v.clone(), t));
            rows.push((2, Invoke, Read, Value::Null, t + 1));
            rows.push((2, Ok, Read, last.clone(), t + 2));
            rows.push((3, Invoke, Read, Value::Null, t + 1));
            rows.push((1, Ok, Write, v.clone(), t + 3));
            rows.push((3, Ok, Read, v.clone(), t + 4));
            rows.push((4, Invoke, Cas, json!([round, round + 1000]), t + 5));
            rows.push((4, Fail, Cas, json!([round, round + 1000]), t + 6));
            last = v;
            t += 10;
        }
        let got = verdict(&rows);
        assert_eq!(got.valid, Verdict::Valid, "{got:?}");
    }

    #[test]
    fn unknown_writes_nobody_saw_cost_nothing_and_seen_ones_still_count() {
        // Forty timed-out writes during a fault, none of them ever read:
        // with them all in play the search would try their subsets.
        let mut rows = vec![(100, Invoke, Write, json!(0), 0), (100, Ok, Write, json!(0), 1)];
        for p in 0..40u64 {
            rows.push((p, Invoke, Write, json!(1_000 + p), 10 + p));
            rows.push((p, Info, Write, json!(1_000 + p), 100));
        }
        for t in 0..20 {
            rows.push((200, Invoke, Read, Value::Null, 200 + 2 * t));
            rows.push((200, Ok, Read, json!(0), 201 + 2 * t));
        }
        let entries = history(&rows);
        assert_eq!(check_registers(&entries, 10_000).unwrap().valid, Verdict::Valid);

        // One of them was seen: it took effect, and a later read of the
        // old value is then a violation.
        rows.push((201, Invoke, Read, Value::Null, 300));
        rows.push((201, Ok, Read, json!(1_007), 301));
        rows.push((202, Invoke, Read, Value::Null, 302));
        rows.push((202, Ok, Read, json!(0), 303));
        assert_eq!(check_registers(&history(&rows), 10_000).unwrap().valid, Verdict::Invalid);
    }

    #[test]
    fn history_lines_round_trip_and_bad_lines_are_named() {
        let entries = history(&[(1, Invoke, Cas, json!([1, 2]), 5), (1, Info, Cas, json!([1, 2]), 9)]);
        let mut out = Vec::new();
        crate::history::write_jsonl(&mut out, &entries).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(r#"{"type":"invoke","process":1,"time":5,"f":"cas","key":"k","value":[1,2]}"#), "{text}");
        assert_eq!(crate::history::read_jsonl(text.as_bytes()).unwrap(), entries);
        let bad = format!("{text}{{\"type\":\"nope\"}}\n");
        let err = crate::history::read_jsonl(bad.as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("history line 3:"), "{err}");
        let twice = history(&[(1, Invoke, Read, Value::Null, 1), (1, Invoke, Read, Value::Null, 2)]);
        assert!(check_registers(&twice, 10).unwrap_err().to_string().contains("before its last one ended"));
    }
}
