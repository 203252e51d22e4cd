//! Wire-accurate mock providers shared by tests, benchmarks and demos (feature `testkit`).

pub mod upstream;

pub use upstream::{Fault, MockUpstream, Recorded};
