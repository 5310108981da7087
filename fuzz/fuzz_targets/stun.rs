//! A STUN keep-alive on the SIP UDP port (RFC 5626 4.4.2): decoded, and a Binding
//! request answered.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::stun(data));
