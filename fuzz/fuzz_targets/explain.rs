//! libFuzzer entry point: see [`egress_fuzz::explain`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| egress_fuzz::explain::run(data));
