//! The bare WebSocket forwarder used as the benchmark floor.
#![forbid(unsafe_code)]
fn main() {}
