//! `cargo fuzz run refer_headers`: see `switchyard_fuzz::refer_headers` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::refer_headers(data));
