//! The black-box tests' harness is Flotilla's test kit (`flotilla-testkit`),
//! shared with the benchmarks and the runtime's tests.

pub use flotilla_testkit::*;
