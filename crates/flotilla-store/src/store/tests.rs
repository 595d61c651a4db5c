use super::*;

/// Pods as the API defines them: bound to nodes and fenced.
#[derive(Debug)]
struct Pods;

impl KindRules for Pods {
    fn bound_to_nodes(&self, kind: &str) -> bool {
        kind == "Pod"
    }

    fn carries_fencing_token(&self, kind: &str) -> bool {
        kind == "Pod"
    }

    fn fencing_token_annotation(&self) -> &'static str {
        "flotilla.dev/fencing-token"
    }
}

fn pod_store() -> ObjectStore {
    ObjectStore::default().with_kinds(Arc::new(Pods))
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("ConfigMap", "default", name)
}

fn put(name: &str, data: &str, precondition: Precondition) -> Op {
    Op::Put {
        key: key(name),
        object: format!(r#"{{"data":{{"v":"{data}"}}}}"#),
        precondition,
        uid: format!("uid-{name}"),
    }
}

fn run(store: &mut ObjectStore, ops: Vec<Op>) -> CommandResult {
    store.apply(&Command { time_unix_ms: 1_795_474_389_000, ops }).0
}

fn field(json: &str, pointer: &str) -> Value {
    serde_json::from_str::<Value>(json).unwrap().pointer(pointer).cloned().unwrap_or(Value::Null)
}

#[test]
fn timestamps_format_like_kubernetes() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_795_474_389_999), "2026-11-23T22:53:09Z");
}

#[test]
fn pods_carry_a_fencing_token_that_grows_with_each_new_pod_of_a_name() {
    let pod = |annotations: &str| Op::Put {
        key: ObjectKey::new("Pod", "default", "db-0"),
        object: format!(r#"{{"metadata":{{"annotations":{{{annotations}}}}},"spec":{{"containers":[]}}}}"#),
        precondition: Precondition::None,
        uid: "uid-db-0".into(),
    };
    let token = |r: &CommandResult| field(&r[0].as_ref().unwrap().object, "/metadata/annotations/flotilla.dev~1fencing-token");
    let mut s = pod_store();
    run(&mut s, vec![put("other", "1", Precondition::None)]);
    // A client cannot choose its token, on create or update.
    let created = run(&mut s, vec![pod(r#""flotilla.dev/fencing-token":"999""#)]);
    assert_eq!(token(&created), "2");
    let updated = run(&mut s, vec![pod(r#""flotilla.dev/fencing-token":"999","note":"x""#)]);
    assert_eq!(token(&updated), "2");
    let stripped = run(&mut s, vec![pod("")]);
    assert_eq!(token(&stripped), "2");
    run(&mut s, vec![Op::Delete { key: ObjectKey::new("Pod", "default", "db-0"), precondition: Precondition::None }]);
    let again = run(&mut s, vec![pod("")]);
    assert_eq!(token(&again), "6", "the replacement's token is larger");
    // Other kinds carry none, even when a client sends one.
    let map = run(&mut s, vec![Op::Put {
        key: key("m"),
        object: r#"{"metadata":{"annotations":{"flotilla.dev/fencing-token":"1"}}}"#.into(),
        precondition: Precondition::None,
        uid: "uid-m".into(),
    }]);
    assert_eq!(token(&map), Value::Null);
}

#[test]
fn create_stamps_metadata_and_bumps_the_revision() {
    let mut s = ObjectStore::default();
    let r = run(&mut s, vec![put("a", "1", Precondition::MustNotExist)]);
    let ok = r[0].as_ref().unwrap();
    assert_eq!(ok.revision, 1);
    assert_eq!(field(&ok.object, "/metadata/resourceVersion"), "1");
    assert_eq!(field(&ok.object, "/metadata/uid"), "uid-a");
    assert_eq!(field(&ok.object, "/metadata/name"), "a");
    assert_eq!(field(&ok.object, "/metadata/generation"), 1);
    assert_eq!(field(&ok.object, "/metadata/creationTimestamp"), "2026-11-23T22:53:09Z");
    assert_eq!(field(&ok.object, "/kind"), "ConfigMap");
    assert_eq!(s.revision(), 1);
}

#[test]
fn preconditions_table() {
    struct Case {
        existing: bool,
        precondition: Precondition,
        ok: bool,
        err: Option<&'static str>,
    }
    let cases = [
        Case { existing: false, precondition: Precondition::None, ok: true, err: None },
        Case { existing: true, precondition: Precondition::None, ok: true, err: None },
        Case { existing: false, precondition: Precondition::MustNotExist, ok: true, err: None },
        Case { existing: true, precondition: Precondition::MustNotExist, ok: false, err: Some("ConfigMap/default/a already exists") },
        Case { existing: false, precondition: Precondition::MustExist, ok: false, err: Some("ConfigMap/default/a not found") },
        Case { existing: true, precondition: Precondition::MustExist, ok: true, err: None },
        Case { existing: true, precondition: Precondition::Revision(1), ok: true, err: None },
        Case { existing: true, precondition: Precondition::Revision(7), ok: false, err: Some("ConfigMap/default/a: resourceVersion 7 does not match the stored 1: the object was changed, read it again") },
        Case { existing: false, precondition: Precondition::Revision(1), ok: false, err: Some("ConfigMap/default/a not found") },
    ];
    for (i, c) in cases.iter().enumerate() {
        let mut s = ObjectStore::default();
        if c.existing {
            run(&mut s, vec![put("a", "0", Precondition::None)]).remove(0).unwrap();
        }
        let before = s.revision();
        let r = run(&mut s, vec![put("a", "1", c.precondition)]).remove(0);
        assert_eq!(r.is_ok(), c.ok, "case {i}");
        if let Some(want) = c.err {
            assert_eq!(r.unwrap_err().to_string(), want, "case {i}");
            assert_eq!(s.revision(), before, "a refused write must not bump the revision (case {i})");
        }
    }
}

#[test]
fn update_keeps_uid_and_counts_spec_generations() {
    let mut s = ObjectStore::default();
    let spec = |n: u32| format!(r#"{{"metadata":{{"uid":"forged"}},"spec":{{"replicas":{n}}}}}"#);
    let op = |n: u32| Op::Put {
        key: ObjectKey::new("Deployment", "default", "web"),
        object: spec(n),
        precondition: Precondition::None,
        uid: "uid-1".into(),
    };
    let r1 = run(&mut s, vec![op(1)]).remove(0).unwrap();
    assert_eq!(field(&r1.object, "/metadata/uid"), "uid-1", "the uid is the system's, as in Kubernetes");
    let r2 = run(&mut s, vec![op(1)]).remove(0).unwrap();
    assert_eq!(field(&r2.object, "/metadata/generation"), 1, "same spec, same generation");
    let r3 = run(&mut s, vec![op(2)]).remove(0).unwrap();
    assert_eq!(field(&r3.object, "/metadata/generation"), 2);
    assert_eq!(field(&r3.object, "/metadata/uid"), "uid-1", "an update cannot change the uid");
    assert_eq!(s.get(&ObjectKey::new("Deployment", "default", "web")).unwrap().create_revision, 1);
}

#[test]
fn invalid_objects_are_refused_without_side_effects() {
    let mut s = ObjectStore::default();
    let bad = |object: &str| Op::Put { key: key("a"), object: object.into(), precondition: Precondition::None, uid: "u".into() };
    let cases = [
        ("[1,2]", "ConfigMap/default/a: object must be a JSON object"),
        ("{", "ConfigMap/default/a: object is not valid JSON: EOF while parsing an object at line 1 column 1"),
        (r#"{"kind":"Pod"}"#, r#"ConfigMap/default/a: kind: "Pod" does not match the key's kind ConfigMap"#),
        (r#"{"metadata":{"name":"b"}}"#, r#"ConfigMap/default/a: metadata.name: "b" does not match the key's "a""#),
        (r#"{"metadata":{"namespace":"x"}}"#, r#"ConfigMap/default/a: metadata.namespace: "x" does not match the key's "default""#),
        (r#"{"metadata":7}"#, "ConfigMap/default/a: metadata: must be an object"),
    ];
    for (object, want) in cases {
        let r = run(&mut s, vec![bad(object)]).remove(0);
        assert_eq!(r.unwrap_err().to_string(), want);
    }
    let huge = format!(r#"{{"data":"{}"}}"#, "x".repeat(MAX_OBJECT_BYTES));
    let err = run(&mut s, vec![bad(&huge)]).remove(0).unwrap_err().to_string();
    assert!(err.contains("over the limit of 1048576 bytes"), "{err}");
    assert_eq!(s.revision(), 0);
    assert!(s.is_empty());
}

#[test]
fn ops_in_one_command_are_independent_and_ordered() {
    let mut s = ObjectStore::default();
    let r = run(
        &mut s,
        vec![
            put("a", "1", Precondition::MustNotExist),
            put("a", "2", Precondition::MustNotExist),
            put("b", "1", Precondition::None),
            Op::Delete { key: key("a"), precondition: Precondition::Revision(1) },
        ],
    );
    assert_eq!(r[0].as_ref().unwrap().revision, 1);
    assert!(matches!(r[1], Err(WriteError::AlreadyExists { .. })));
    assert_eq!(r[2].as_ref().unwrap().revision, 2);
    assert_eq!(r[3].as_ref().unwrap().revision, 3);
    assert!(s.get(&key("a")).is_none());
    let events = s.events_after(0, 100).unwrap();
    let kinds: Vec<_> = events.iter().map(|e| (e.revision, e.event_type, e.key.name.as_str())).collect();
    assert_eq!(kinds, vec![(1, EventType::Added, "a"), (2, EventType::Added, "b"), (3, EventType::Deleted, "a")]);
}

#[test]
fn cluster_time_never_moves_back_and_survives_a_restore() {
    let mut s = ObjectStore::default();
    let created = |s: &ObjectStore, name: &str| -> String {
        let v: Value = serde_json::from_str(&s.get(&key(name)).unwrap().json).unwrap();
        v["metadata"]["creationTimestamp"].as_str().unwrap().to_string()
    };
    s.apply(&Command { time_unix_ms: 1_795_474_389_000, ops: vec![put("ahead", "1", Precondition::None)] });
    // A later leader whose clock is an hour behind.
    s.apply(&Command { time_unix_ms: 1_795_470_789_000, ops: vec![put("behind", "1", Precondition::None)] });
    assert_eq!(s.time_unix_ms(), 1_795_474_389_000);
    assert_eq!(created(&s, "behind"), created(&s, "ahead"));
    let mut restored = ObjectStore::restore(s.snapshot(), 10, Arc::new(PlainObjects));
    assert_eq!(restored.time_unix_ms(), 1_795_474_389_000);
    restored.apply(&Command { time_unix_ms: 1_795_474_390_000, ops: vec![put("later", "1", Precondition::None)] });
    assert!(created(&restored, "later") > created(&restored, "ahead"));
}

#[test]
fn events_report_what_to_persist() {
    let mut s = ObjectStore::default();
    let cmd = Command {
        time_unix_ms: 0,
        ops: vec![put("a", "1", Precondition::None), Op::Delete { key: key("zz"), precondition: Precondition::None }],
    };
    let (_, events) = s.apply(&cmd);
    assert_eq!(events.len(), 1, "a failed delete changes nothing");
    assert_eq!(events[0].stored.as_ref().unwrap().mod_revision, 1);
    let (_, events) = s.apply(&Command { time_unix_ms: 0, ops: vec![Op::Delete { key: key("a"), precondition: Precondition::None }] });
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].event_type, events[0].stored.as_ref()), (EventType::Deleted, None));
    assert_eq!(events[0].prev.as_ref().unwrap().mod_revision, 1);
}

#[test]
fn list_at_an_older_revision_undoes_later_events() {
    let mut s = ObjectStore::default();
    run(&mut s, vec![put("a", "1", Precondition::None)]); // rev 1
    run(&mut s, vec![put("b", "1", Precondition::None)]); // rev 2
    run(&mut s, vec![put("a", "2", Precondition::None)]); // rev 3
    run(&mut s, vec![Op::Delete { key: key("b"), precondition: Precondition::None }]); // rev 4
    run(&mut s, vec![Op::Put { key: ObjectKey::new("Pod", "default", "p"), object: "{}".into(), precondition: Precondition::None, uid: "u".into() }]); // rev 5
    let data = |l: &ListResult| -> Vec<(String, String)> {
        l.items.iter().map(|(k, v)| (k.name.clone(), field(&v.json, "/data/v").as_str().unwrap().to_string())).collect()
    };
    let pairs = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
    assert_eq!(data(&s.list("ConfigMap", Some("default"), 0).unwrap()), pairs(&[("a", "2")]));
    assert_eq!(data(&s.list("ConfigMap", None, 3).unwrap()), pairs(&[("a", "2"), ("b", "1")]));
    assert_eq!(data(&s.list("ConfigMap", None, 2).unwrap()), pairs(&[("a", "1"), ("b", "1")]));
    assert_eq!(data(&s.list("ConfigMap", None, 1).unwrap()), pairs(&[("a", "1")]));
    assert_eq!(s.list("ConfigMap", Some("other"), 0).unwrap().items.len(), 0);
    assert_eq!(s.list("Pod", None, 4).unwrap().items.len(), 0);
    assert_eq!(s.list("Pod", None, 0).unwrap().revision, 5);
    assert_eq!(s.list("Pod", None, 6), Err(ReadError::Future { requested: 6, current: 5 }));
}

#[test]
fn bounded_history_says_too_old() {
    let mut s = ObjectStore::new(3);
    for i in 0..5 {
        run(&mut s, vec![put("a", &i.to_string(), Precondition::None)]);
    }
    assert_eq!(s.compacted_revision(), 2);
    assert_eq!(s.events_after(2, 10).unwrap().iter().map(|e| e.revision).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert_eq!(s.events_after(4, 1).unwrap().len(), 1);
    assert_eq!(s.events_after(5, 10).unwrap().len(), 0);
    let err = s.events_after(1, 10).unwrap_err();
    assert_eq!(err, ReadError::TooOld { requested: 1, compacted: 2 });
    assert!(err.to_string().contains("list again"));
    assert!(s.list("ConfigMap", None, 1).is_err());
    assert!(s.list("ConfigMap", None, 2).is_ok());
}

#[test]
fn snapshot_restore_round_trips() {
    let mut s = ObjectStore::default();
    for i in 0..10 {
        run(&mut s, vec![put(&format!("k{i}"), "v", Precondition::None)]);
    }
    run(&mut s, vec![Op::Delete { key: key("k3"), precondition: Precondition::None }]);
    let snap = s.snapshot();
    let r = ObjectStore::restore(snap.clone(), 5, Arc::new(PlainObjects));
    assert_eq!(r.revision(), 11);
    assert_eq!(r.snapshot(), snap);
    assert_eq!(r.events_after(11, 10).unwrap().len(), 0);
    assert!(r.events_after(10, 10).is_err(), "no history survives a restore");
}

#[test]
fn pods_are_indexed_by_their_node_through_binds_moves_deletes_and_restores() {
    let pod = |name: &str, node: &str| Op::Put {
        key: ObjectKey::new("Pod", "default", name),
        object: format!(r#"{{"spec":{{"nodeName":"{node}"}}}}"#),
        precondition: Precondition::None,
        uid: format!("u-{name}"),
    };
    let on = |s: &ObjectStore, node: &str| s.pods_on_node(node).map(|(k, _)| k.name.clone()).collect::<Vec<_>>();
    let mut s = pod_store();
    run(&mut s, vec![pod("a", ""), pod("b", "n1"), pod("c", "n1"), pod("d", "n2")]);
    assert_eq!(on(&s, "n1"), ["b", "c"]);
    assert!(on(&s, "").is_empty(), "unbound Pods are not indexed");
    run(&mut s, vec![pod("a", "n2"), pod("c", "n2")]);
    assert_eq!(on(&s, "n1"), ["b"]);
    assert_eq!(on(&s, "n2"), ["a", "c", "d"]);
    run(&mut s, vec![Op::Delete { key: ObjectKey::new("Pod", "default", "a"), precondition: Precondition::None }]);
    assert_eq!(on(&s, "n2"), ["c", "d"]);
    let r = ObjectStore::restore(s.snapshot(), 5, Arc::new(Pods));
    assert_eq!(on(&r, "n1"), ["b"]);
    assert_eq!(on(&r, "n2"), ["c", "d"]);
    assert!(on(&r, "n3").is_empty());
}

/// The same commands give the same store, byte for byte, whatever the
/// peer: a model check over a pseudo-random command sequence.
#[test]
fn replicas_that_apply_the_same_log_agree() {
    let mut a = ObjectStore::new(50);
    let mut b = ObjectStore::new(50);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for step in 0..2_000 {
        let n = next();
        let name = format!("k{}", n % 17);
        let op = match n % 5 {
            0 => Op::Delete { key: key(&name), precondition: Precondition::None },
            1 => put(&name, &step.to_string(), Precondition::MustNotExist),
            2 => put(&name, &step.to_string(), Precondition::Revision(next() % (step + 1))),
            _ => put(&name, &step.to_string(), Precondition::None),
        };
        let cmd = Command { time_unix_ms: step, ops: vec![op] };
        assert_eq!(a.apply(&cmd), b.apply(&cmd));
    }
    assert_eq!(a.snapshot(), b.snapshot());
    // Every historic list agrees with a replay of the events from zero.
    let events = a.events_after(a.compacted_revision(), usize::MAX).unwrap();
    assert_eq!(events.len(), 50);
    for w in events.windows(2) {
        assert_eq!(w[1].revision, w[0].revision + 1);
    }
}
