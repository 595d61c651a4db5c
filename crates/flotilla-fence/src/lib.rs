//! Fencing: the rule that keeps at most one instance of a Pod alive (a
//! StatefulSet ordinal above all) when a node is cut off, crashes or
//! freezes, as three pure decisions the peer drives with what it observes.
//!
//! - [`lease`]: the leader answers a node's heartbeat only while it holds
//!   a lease it can prove, so a deposed leader never says "keep running".
//! - [`heartbeats`]: the leader's table of answered heartbeats, from which
//!   the node lifecycle declares a silent node lost (and its Pods
//!   replaced). A declaration and a heartbeat answer are ordered by an
//!   epoch: a node answered after the table was read is not declared lost
//!   on that reading, and no node is answered while a declaration is
//!   being appended.
//! - [`fence`]: each node's state machine. A node runs Pods only within
//!   `fence_after` of the *sending* of its last answered heartbeat, and
//!   after a fence only once it has caught up with the leader that
//!   answered, so it learns of any declaration before it starts again.
//!
//! Together: a node stops its Pods at `sent + fence_after`; the leader
//! declares it lost no earlier than `received + lost_after`, with
//! `received >= sent` and `lost_after > fence_after`.
//!
//! Times are `std::time::Instant` values handed in by the caller; nothing
//! here reads a clock.

pub mod fence;
pub mod heartbeats;
pub mod lease;

pub use fence::{Fence, FenceReason, Step};
pub use heartbeats::{Heartbeats, Reading, Refused};
pub use lease::{Lease, LeaderView, NoLease, failures_tolerated, lease};
