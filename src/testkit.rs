//! Wire-accurate mock providers shared by tests, benchmarks and demos (feature `testkit`).

pub mod replay;
pub mod upstream;

pub use replay::{Replay, ReplayUpstream};
pub use upstream::{Chaos, Fault, MockUpstream, Recorded};
