//! An SDP body from a peer: parsing, what the relay and the answer are built from, and
//! the body we would send back, which must itself parse.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::sdp(data));
