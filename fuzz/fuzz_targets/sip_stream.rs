//! A TCP byte stream cut into SIP messages by Content-Length, arriving in pieces: the
//! first byte says how long each piece is. Every frame cut off goes to the parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::sip_stream(data));
