//! Flotilla's chaos suite: clients run workloads against a cluster while a
//! nemesis injects faults; every operation is recorded in a history, in
//! Jepsen's form, and checkers decide whether the history could have come
//! from a correct system.
//!
//! The checkers are pure: histories in, verdicts out, so that a checker
//! can be tested on hand-written histories, including ones it must reject.
//! The nemesis acts on containers from the host.

pub mod history;
pub mod invariants;
pub mod linearizable;
pub mod nemesis;
pub mod report;

pub use history::{Entry, EntryType, Function, HistoryError};
pub use linearizable::{CheckResult, Verdict, check_registers};
