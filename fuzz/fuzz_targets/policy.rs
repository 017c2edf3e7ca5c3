//! libFuzzer entry point: see [`egress_fuzz::policy`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| egress_fuzz::policy::run(data));
