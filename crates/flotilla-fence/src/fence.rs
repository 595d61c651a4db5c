//! A node's fence: answers to its heartbeats in, "fence now", "check you
//! have caught up" and "Pods may run again" out, with the deadline at
//! which the caller must come back.
//!
//! The fence window counts from when an answered heartbeat was *sent*:
//! the leader received it no earlier, so the node always stops its Pods
//! before the leader's `lost_after` (counted from receipt) runs out.

use std::time::{Duration, Instant};

/// What the caller must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Kill every Pod of this node now and start none.
    Fence(FenceReason),
    /// Make sure this replica has applied everything the leader had
    /// appended when it answered the heartbeat sent at `sent`, and that
    /// this node is not declared lost; report with [`Fence::caught_up`].
    CatchUp { sent: Instant },
    /// Pods may run again, as the caught-up view says.
    Unfence,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceReason {
    /// No answered heartbeat sent within the fence window: the leader may
    /// declare this node lost and replace its Pods.
    Silent { since_sent: Duration },
}

/// The fence state machine of one node.
#[derive(Clone, Debug)]
pub struct Fence {
    fence_after: Duration,
    /// When the latest heartbeat a leader answered was sent.
    answered: Option<Instant>,
    fenced: bool,
    /// The answer whose catch-up is under way, at most one.
    catching_up: Option<Instant>,
}

impl Fence {
    /// A node starts fenced: until a leader answers, nothing says its Pods
    /// have not been replaced meanwhile.
    pub fn new(fence_after: Duration) -> Self {
        Self { fence_after, answered: None, fenced: true, catching_up: None }
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// Until when the last answer lets containers start (while unfenced).
    pub fn lease_until(&self) -> Option<Instant> {
        self.answered.map(|sent| sent + self.fence_after)
    }

    /// When [`Self::tick`] must run next: the end of the lease, while
    /// unfenced.
    pub fn deadline(&self) -> Option<Instant> {
        if self.fenced { None } else { self.lease_until() }
    }

    /// Whether a container may start at `now`.
    pub fn may_start(&self, now: Instant) -> bool {
        may_start(self.fenced, self.lease_until(), now)
    }

    /// Fences once the lease has run out.
    pub fn tick(&mut self, now: Instant) -> Option<Step> {
        if self.fenced {
            return None;
        }
        let sent = self.answered?;
        if now < sent + self.fence_after {
            return None;
        }
        self.fenced = true;
        Some(Step::Fence(FenceReason::Silent { since_sent: now.saturating_duration_since(sent) }))
    }

    /// A leader answered the heartbeat sent at `sent`; the answer arrived
    /// at `now`.
    ///
    /// An expired lease fences first, whatever this answer says: a frozen
    /// machine thawing, or a partition healing, finds its answer late, and
    /// the leader may have replaced its Pods meanwhile. An answer older
    /// than one already seen (out of order) or too old to give a lease
    /// changes nothing.
    pub fn answered(&mut self, sent: Instant, now: Instant) -> Vec<Step> {
        let mut steps: Vec<Step> = self.tick(now).into_iter().collect();
        if now >= sent + self.fence_after || self.answered.is_some_and(|a| a >= sent) {
            return steps;
        }
        self.answered = Some(sent);
        if self.fenced && self.catching_up.is_none() {
            self.catching_up = Some(sent);
            steps.push(Step::CatchUp { sent });
        }
        steps
    }

    /// The catch-up asked for by the answer sent at `sent` ended: `ok` when
    /// the replica caught up and the node is not declared lost.
    ///
    /// Pods run again only within the lease of *that* answer: a lost
    /// declaration can only follow it by `lost_after` of silence, but a
    /// later answer's lease is not covered by this catch-up.
    pub fn caught_up(&mut self, sent: Instant, ok: bool, now: Instant) -> Option<Step> {
        if self.catching_up != Some(sent) {
            return None;
        }
        self.catching_up = None;
        if !ok || !self.fenced || now >= sent + self.fence_after {
            return None;
        }
        self.fenced = false;
        Some(Step::Unfence)
    }
}

/// The start rule, for whoever holds the fence's state: unfenced and
/// within the lease (`None`: no lease limit).
pub fn may_start(fenced: bool, lease_until: Option<Instant>, now: Instant) -> bool {
    !fenced && lease_until.is_none_or(|until| now < until)
}

#[cfg(test)]
mod tests;
