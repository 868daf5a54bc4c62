//! `cargo fuzz run rcml`: see `switchyard_fuzz::rcml` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::rcml(data));
