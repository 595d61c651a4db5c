//! Every label and annotation with a meaning to Flotilla, in one place:
//! the controllers write them, the scheduler, the store, the CLI and the
//! chaos suite read them.

/// A Node's hostname (its name where the Node does not say otherwise).
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// A Node's operating system.
pub const OS_LABEL: &str = "kubernetes.io/os";
/// The address of the peer that runs a Node, so any peer can forward
/// `logs` and `exec` there.
pub const PEER_ADDRESS_ANNOTATION: &str = "flotilla.dev/peer-address";

/// The label that ties a ReplicaSet and its Pods to one template.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The rollout revision of a ReplicaSet (and of its Deployment).
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// Labels every Job Pod carries, naming its Job (as Kubernetes does).
pub const JOB_NAME_LABEL: &str = "job-name";
pub const CONTROLLER_UID_LABEL: &str = "controller-uid";

/// The label naming each Pod of a StatefulSet, for per-Pod selection.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

/// The store revision a Pod was created at, written by the store with
/// the creation. A Pod that replaces another of the same name always holds
/// a larger token, so a resource that refuses writes carrying a token
/// smaller than one it has seen fences off an older instance that still
/// runs (a paused machine thawing after its Pod was replaced elsewhere).
pub const FENCING_TOKEN_ANNOTATION: &str = "flotilla.dev/fencing-token";
