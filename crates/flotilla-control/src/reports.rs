//! What a node's reports become in the store: a Pod's new status, and the
//! removal of a Pod its node stopped after a graceful delete.

use flotilla_api::Pod;
use flotilla_api::pod::PodStatus;
use flotilla_store::{ObjectKey, Op, Precondition, StoredObject};

/// What becomes of a status the node reported for the Pod `uid` at `key`,
/// given what the store holds there.
#[derive(Debug, PartialEq)]
pub enum StatusWrite {
    /// Write the Pod back with this status (compare-and-set on the
    /// revision read).
    Write(Op),
    /// Nothing to write, ever: the Pod is gone or is another one, already
    /// says this, was declared lost (its replacement may run elsewhere), or
    /// has ended and this status would take that back.
    Drop,
}

pub fn status_write(key: &ObjectKey, stored: Option<&StoredObject>, uid: &str, status: &PodStatus) -> StatusWrite {
    let Some(stored) = stored else { return StatusWrite::Drop };
    let Ok(mut pod) = serde_json::from_str::<Pod>(&stored.json) else { return StatusWrite::Drop };
    let current = pod.status.as_ref();
    let lost = current.is_some_and(|s| s.reason == flotilla_controllers::NODE_LOST);
    // Succeeded and Failed are final: Jobs have counted them. A status
    // from before the end (retried late) or from a rerun after a restart
    // must not take it back.
    let ended = current.is_some_and(|s| (s.phase == "Succeeded" || s.phase == "Failed") && s.phase != status.phase);
    if pod.metadata.uid != uid || current == Some(status) || lost || ended {
        return StatusWrite::Drop;
    }
    pod.status = Some(status.clone());
    StatusWrite::Write(Op::Put {
        key: key.clone(),
        object: serde_json::to_string(&pod).expect("API types serialize"),
        precondition: Precondition::Revision(stored.mod_revision),
        uid: String::new(),
    })
}

/// The removal of the Pod `uid` at `key` once its node has stopped it
/// after a graceful delete; `None` when the store no longer holds that
/// Pod being deleted.
pub fn stopped_removal(key: &ObjectKey, stored: Option<&StoredObject>, uid: &str) -> Option<Op> {
    let stored = stored?;
    let ours = serde_json::from_str::<Pod>(&stored.json)
        .is_ok_and(|p| p.metadata.uid == uid && p.metadata.deletion_timestamp.is_some());
    ours.then(|| Op::Delete { key: key.clone(), precondition: Precondition::Revision(stored.mod_revision) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{pod, put};
    use flotilla_store::ObjectStore;
    use serde_json::json;

    fn status(phase: &str) -> PodStatus {
        PodStatus { phase: phase.into(), ..PodStatus::default() }
    }

    #[test]
    fn a_status_is_written_only_onto_its_own_live_pod_and_never_undoes_an_end() {
        let mut store = ObjectStore::default();
        put(&mut store, pod("running", "n1", "Pending"));
        put(&mut store, pod("done", "n1", "Succeeded"));
        let mut lost = pod("lost", "n1", "Failed");
        lost["status"]["reason"] = json!("NodeLost");
        put(&mut store, lost);
        let key = |name: &str| ObjectKey::new("Pod", "default", name);
        let write = |name: &str, uid: &str, phase: &str| status_write(&key(name), store.get(&key(name)), uid, &status(phase));

        let StatusWrite::Write(Op::Put { object, precondition, .. }) = write("running", "uid-running", "Running") else {
            panic!("a write")
        };
        assert_eq!(precondition, Precondition::Revision(store.get(&key("running")).unwrap().mod_revision));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&object).unwrap()["status"]["phase"], "Running");
        assert_eq!(write("running", "uid-other", "Running"), StatusWrite::Drop, "another Pod of that name");
        assert_eq!(write("gone", "uid-gone", "Running"), StatusWrite::Drop);
        assert_eq!(write("done", "uid-done", "Running"), StatusWrite::Drop, "an end is final");
        assert_eq!(write("lost", "uid-lost", "Running"), StatusWrite::Drop, "a lost Pod may run elsewhere");
        let same = store.get(&key("running")).map(|o| serde_json::from_str::<Pod>(&o.json).unwrap().status.unwrap()).unwrap();
        assert_eq!(status_write(&key("running"), store.get(&key("running")), "uid-running", &same), StatusWrite::Drop);
    }

    #[test]
    fn a_stopped_pod_is_removed_only_while_it_is_being_deleted() {
        let mut store = ObjectStore::default();
        let mut deleting = pod("deleting", "n1", "Running");
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        put(&mut store, deleting);
        put(&mut store, pod("live", "n1", "Running"));
        let key = |name: &str| ObjectKey::new("Pod", "default", name);
        let removal = stopped_removal(&key("deleting"), store.get(&key("deleting")), "uid-deleting");
        let revision = store.get(&key("deleting")).unwrap().mod_revision;
        assert_eq!(removal, Some(Op::Delete { key: key("deleting"), precondition: Precondition::Revision(revision) }));
        assert_eq!(stopped_removal(&key("deleting"), store.get(&key("deleting")), "uid-other"), None);
        assert_eq!(stopped_removal(&key("live"), store.get(&key("live")), "uid-live"), None);
        assert_eq!(stopped_removal(&key("gone"), None, "uid-gone"), None);
    }
}
