#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::protocol_checks::distribution(data));
