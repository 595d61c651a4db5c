//! Flotilla's control plane as pure decisions over the replicated store.
//!
//! - [`round`]: one round of the leader, turning node lifecycle, the
//!   workload controllers and the scheduler into compare-and-set writes.
//! - [`view`]: the leader's decoded copy of the store, kept current event
//!   by event, that each round reads.
//! - [`apply`]: server-side apply, from a manifest to the one write that
//!   makes it so.
//! - [`delete`]: graceful deletion of Pods that may be running, and the
//!   ownership a cascading delete follows.
//! - [`reports`]: what a node's reports become: a Pod's status written,
//!   a stopped Pod removed.
//! - [`objects`]: typed reads of the store and the write helpers the
//!   others share (keys, events, uids).
//!
//! Nothing here reads a clock, touches a file or a socket, or draws its
//! own randomness: the time comes in with the view, randomness through
//! [`Entropy`], and the peer performs the writes.

pub mod apply;
pub mod delete;
pub mod objects;
pub mod reports;
pub mod round;
pub mod view;

#[cfg(test)]
mod testing;

/// Where new uids and generated names take their randomness: the peer
/// passes its own, which the simulator seeds so that one seed replays a
/// whole cluster.
pub trait Entropy {
    fn fill(&self, dest: &mut [u8]);
}
