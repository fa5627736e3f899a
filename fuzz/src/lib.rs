//! The checks behind sotto's fuzz targets.
//!
//! Each target in `fuzz_targets/` is one line that calls a function here. The same files are
//! compiled into the ordinary corpus-replay tests (`crates/protocol/tests/corpus.rs` and
//! `crates/wire/tests/corpus.rs` include them with `#[path]`), so CI runs exactly the checks the
//! fuzzer ran, on stable Rust, over every file in `fuzz/corpus/<target>/`.

pub mod protocol_checks;
pub mod wire_checks;
