//! The server's configuration file: the YAML loader and its validator.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::config_yaml(data));
