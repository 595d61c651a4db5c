//! Table-driven tests of every controller over plain data, driven through
//! the simulator in `crate::sim`.

mod daemonset;
mod deployment;
mod gc_and_limits;
mod job;
mod node;
mod replicaset;
mod statefulset;

use flotilla_api::pod::Pod;

use crate::common::{is_active, pod_ready};
use crate::sim::Sim;

pub(crate) fn active_of<'a>(sim: &'a Sim, prefix: &str) -> Vec<&'a Pod> {
    sim.pods_of(prefix)
        .into_iter()
        .filter(|p| is_active(p))
        .collect()
}

pub(crate) fn ready_of(sim: &Sim, prefix: &str) -> usize {
    active_of(sim, prefix)
        .into_iter()
        .filter(|p| pod_ready(p))
        .count()
}
