//! One datagram as the SIP transport receives it: the normaliser and parser, everything
//! read off a parsed message, the transaction layer, and the 400 built for one that
//! fails. Whatever parses must serialise to something that parses again (we forward it).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::sip_message(data));
