//! A flow file as ops write it: the YAML loader and every check `switchboard check`
//! makes. A mistake must come back as a diagnostic, never as a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::flow_yaml(data));
