//! `cargo fuzz run sip_message`: see `switchyard_fuzz::sip_message` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::sip_message(data));
